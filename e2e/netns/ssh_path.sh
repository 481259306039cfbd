#!/usr/bin/env bash
# ssh_path.sh: the SSH path (docs/protocol.md, "SSH path"). Two public hosts whose UDP to each
# other is dropped by nftables in alpha's namespace (both directions, counted) while TCP between
# them is open; the coordinator (gRPC, STUN, relay) stays reachable for both.
#
# Checks: both members report path "ssh" (not "relay") to each other within TM_SSH_WAIT_S (default
# 20) seconds; ping both ways and a checksummed TCP transfer work over it; the UDP block dropped
# packets (so UDP really was tried and failed); beta's agent is replaced by an OpenSSH server with
# another host key on beta's SSH port: alpha refuses it (status ssh.host_key_mismatches grows) and
# its path to beta is never "ssh" meanwhile; beta back, the path is "ssh" again; unblocking UDP
# upgrades the path to "direct" (probe rounds back off to 30 s while nothing answers, hence up to
# TM_SSH_UPGRADE_S, default 45, seconds).
#
# Usage: ssh_path.sh [AGENT_PATH [OPERATOR_PATH]]   (needs root; exits 77 otherwise)

# shellcheck source=nat_lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/nat_lib.sh"
tm_mesh_init ssh_path 200 "$@"

SSH_WAIT_S=${TM_SSH_WAIT_S:-20}
UPGRADE_S=${TM_SSH_UPGRADE_S:-45}
SSH_PORT=7722

tm_step "topology: two public hosts, UDP between them blocked, TCP open"
tm_net_public coord
tm_net_public a
tm_net_public b
B=${TM_NET_ADDR[b]}
cat >"$TM_WORK/block-udp.nft" <<NFT
table inet tm_ssh_path_block {
  chain input {
    type filter hook input priority filter; policy accept;
    ip saddr $B meta l4proto udp counter drop comment "UDP from beta"
  }
  chain output {
    type filter hook output priority filter; policy accept;
    ip daddr $B meta l4proto udp counter drop comment "UDP to beta"
  }
}
NFT
tm_in a nft -f "$TM_WORK/block-udp.nft" || tm_fail "nft rules in a do not load ($TM_WORK/block-udp.nft)"
tm_coord_setup coord
tm_coord_start

udp_dropped() {
  tm_in a nft list table inet tm_ssh_path_block | grep -o 'packets [0-9]*' |
    awk '{ n += $2 } END { print n + 0 }'
}

tm_step "members join"
tm_members_join alpha:a beta:b
A4=$(tm_member_ip alpha 4)
B4=$(tm_member_ip beta 4)
tm_expect_eq "alpha: its SSH server's port" "$(tm_mjson alpha "s['ssh']['port']")" "$SSH_PORT"

tm_step "the path is ssh, not relay"
START=$(tm__now_ms)
if ! tm_poll "$SSH_WAIT_S" tm__path_is alpha beta ssh; then
  tm_fail "alpha does not reach beta over SSH within ${SSH_WAIT_S}s although TCP between them is" \
    "open: alpha reports path '$(tm__mjson alpha "(peer('beta') or {}).get('path')" || true)'," \
    "SSH counters $(tm__mjson alpha "s.get('ssh')" || true)"
fi
tm_log "alpha -> beta: path ssh after $(tm_elapsed_since "$START")s"
tm_member_wait_path 10 beta alpha ssh

tm_step "traffic over SSH"
tm_wait_ping a "$B4" 10
tm_ping a "$B4" 5
tm_ping b "$A4" 5
tm_tcp_transfer a b "$B4" 4
tm_tcp_transfer b a "$A4" 4
tm_expect_eq "alpha: path to beta after the transfers" "$(tm_mpeer_get alpha beta path)" ssh
tm_expect_eq "beta: path to alpha after the transfers" "$(tm_mpeer_get beta alpha path)" ssh
tm_expect_gt "UDP packets between alpha and beta dropped (UDP was tried)" "$(udp_dropped)" 0

tm_step "a wrong host key is refused"
BETA_KEY=$(tm_mjson beta "s['ssh']['public_key']")
MISMATCH_BEFORE=$(tm_mjson alpha "s['ssh']['host_key_mismatches']")
tm_member_kill beta
ssh-keygen -q -t ed25519 -N '' -f "$TM_WORK/impostor_host_key" ||
  tm_fail "ssh-keygen could not make the impostor's host key"
mkdir -p /run/sshd  # OpenSSH's privilege separation directory.
tm_bg_in b /usr/sbin/sshd -D -e -f /dev/null -p "$SSH_PORT" -h "$TM_WORK/impostor_host_key" \
  -o PidFile=none >"$TM_WORK/impostor-sshd.log" 2>&1
SSHD_PID=$TM_BG_PID
tm_wait 5 "the impostor sshd to listen on $SSH_PORT in b" tm__listening b "$SSH_PORT"
mismatches_grew() {
  local n
  n=$(tm__mjson alpha "s['ssh']['host_key_mismatches']") || return 1
  echo "alpha: host_key_mismatches $n (was $MISMATCH_BEFORE)"
  (( n > MISMATCH_BEFORE ))
}
tm_wait 40 "alpha to refuse the impostor's host key" mismatches_grew
PATH_NOW=$(tm_mpeer_get alpha beta path)
[[ "$PATH_NOW" != ssh ]] || tm_fail "alpha reports path ssh to beta while only the impostor answers"
grep -q "is not the key the network map publishes for it ($BETA_KEY)" "$(tm_member_log alpha)" ||
  tm_fail "alpha's log does not say which host key it expected for beta ($BETA_KEY)"
kill -TERM "$SSHD_PID"
tm__wait_exit "$SSHD_PID" 10 || tm_fail "the impostor sshd did not stop"

tm_step "beta back: ssh again"
tm_member_start beta
tm_member_wait_path 40 alpha beta ssh
tm_member_wait_path 20 beta alpha ssh
# The restarted side sends first: alpha still holds the old session, which it would only give up
# after WireGuard's silence timeout (as over UDP; see peer_restart.sh).
tm_wait_ping b "$A4" 10
tm_ping a "$B4" 3

tm_step "UDP unblocked: the path upgrades to direct"
tm_in a nft delete table inet tm_ssh_path_block
tm_member_wait_path "$UPGRADE_S" alpha beta direct
tm_member_wait_path "$UPGRADE_S" beta alpha direct
tm_ping a "$B4" 3
tm_member_alive alpha
tm_member_alive beta
tm_coord_alive
