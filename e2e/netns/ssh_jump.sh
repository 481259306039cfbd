#!/usr/bin/env bash
# ssh_jump.sh: the SSH path through a standard OpenSSH jump host. Nothing passes between alpha and
# beta (nftables in alpha's namespace drops all their UDP and TCP); a third host runs Debian's sshd
# (public key login only, TCP forwarding on), which alpha reaches and which reaches beta. Alpha
# joins with --ssh-proxy-command 'ssh -W [%h]:%p ... root@JUMP' (OpenSSH's direct-tcpip).
#
# Checks: both members report path "ssh" (not "relay") to each other; ping and a checksummed TCP
# transfer work; sshd logged alpha's login; beta's host key is still checked end to end (alpha's
# host_key_mismatches stays 0, and the connection beta accepted came from the jump host).
#
# Usage: ssh_jump.sh [AGENT_PATH [OPERATOR_PATH]]   (needs root; exits 77 otherwise)

# shellcheck source=nat_lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/nat_lib.sh"
tm_mesh_init ssh_jump 150 "$@"
if ! command -v ssh >/dev/null || [[ ! -x /usr/sbin/sshd ]]; then
  tm_fail "ssh_jump needs OpenSSH's client and server (apt-get install openssh-client openssh-server)"
fi

tm_step "topology: alpha and beta cut off from each other, a jump host between"
tm_net_public coord
tm_net_public a
tm_net_public b
tm_net_public j
B=${TM_NET_ADDR[b]}
J=${TM_NET_ADDR[j]}
tm_in a nft -f - <<NFT || tm_fail "nft rules in a do not load"
table inet tm_ssh_jump_block {
  chain input {
    type filter hook input priority filter; policy accept;
    ip saddr $B counter drop comment "anything from beta"
  }
  chain output {
    type filter hook output priority filter; policy accept;
    ip daddr $B counter drop comment "anything to beta"
  }
}
NFT

tm_step "the jump host: OpenSSH sshd, public key login only"
ssh-keygen -q -t ed25519 -N '' -f "$TM_WORK/jump_host_key" || tm_fail "ssh-keygen (host key)"
ssh-keygen -q -t ed25519 -N '' -f "$TM_WORK/jump_user_key" || tm_fail "ssh-keygen (user key)"
cp "$TM_WORK/jump_user_key.pub" "$TM_WORK/jump_authorized_keys"
echo "$J $(cut -d' ' -f1,2 "$TM_WORK/jump_host_key.pub")" >"$TM_WORK/jump_known_hosts"
cat >"$TM_WORK/sshd_config" <<CONF
ListenAddress $J
Port 22
HostKey $TM_WORK/jump_host_key
AuthorizedKeysFile $TM_WORK/jump_authorized_keys
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
AllowTcpForwarding yes
StrictModes no
PidFile none
LogLevel VERBOSE
CONF
mkdir -p /run/sshd  # OpenSSH's privilege separation directory.
tm_bg_in j /usr/sbin/sshd -D -e -f "$TM_WORK/sshd_config" >"$TM_WORK/jump-sshd.log" 2>&1
tm_wait 5 "sshd to listen on port 22 in j" tm__listening j 22

tm_coord_setup coord
tm_coord_start

tm_step "members join; alpha dials peers through the jump host"
PROXY="ssh -F /dev/null -i $TM_WORK/jump_user_key -o BatchMode=yes -o StrictHostKeyChecking=yes"
PROXY+=" -o UserKnownHostsFile=$TM_WORK/jump_known_hosts -W [%h]:%p root@$J"
tm_member_new alpha a
tm_member_new beta b
tm_member_start alpha --ssh-proxy-command "$PROXY"
tm_member_start beta
A4=$(tm_member_ip alpha 4)
B4=$(tm_member_ip beta 4)

tm_step "the path is ssh, through the jump host"
tm_member_wait_path 30 alpha beta ssh
tm_member_wait_path 10 beta alpha ssh
tm_wait_ping a "$B4" 10
tm_ping a "$B4" 5
tm_ping b "$A4" 5
tm_tcp_transfer a b "$B4" 2
tm_tcp_transfer b a "$A4" 2
tm_expect_eq "alpha: path to beta after the transfers" "$(tm_mpeer_get alpha beta path)" ssh
grep -q "Accepted publickey for root from ${TM_NET_ADDR[a]}" "$TM_WORK/jump-sshd.log" ||
  tm_fail "the jump host's sshd did not log alpha's login ($TM_WORK/jump-sshd.log)"
tm_expect_eq "alpha: wrong host keys refused" "$(tm_mjson alpha "s['ssh']['host_key_mismatches']")" 0
SSH_PORT=$(tm_mjson beta "s['ssh']['port']")
CONNS=$(tm_in b ss -Htn state established "sport = :$SSH_PORT")
# Addresses show as 203.0.113.13:PORT or, on the dual-stack socket, [::ffff:203.0.113.13]:PORT.
grep -qE "[[ :]${J//./\\.}]?:[0-9]+" <<<"$CONNS" ||
  tm_fail "beta's SSH server has no connection from the jump host $J: $CONNS"
A=${TM_NET_ADDR[a]}
grep -qE "[[ :]${A//./\\.}]?:[0-9]+" <<<"$CONNS" &&
  tm_fail "beta's SSH server has a connection straight from alpha despite the block: $CONNS"
BLOCKED=$(tm_in a nft list table inet tm_ssh_jump_block | grep -o 'packets [0-9]*' |
  awk '{ n += $2 } END { print n + 0 }')
tm_log "alpha dropped $BLOCKED packets to or from beta"
tm_member_alive alpha
tm_member_alive beta
tm_coord_alive
