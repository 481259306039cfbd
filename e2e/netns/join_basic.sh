#!/usr/bin/env bash
# join_basic.sh: a coordinator and two members on one public segment (no NAT).
#
# Checks: both members join and get distinct mesh IPv4 and IPv6 addresses inside the Mesh CIDRs;
# each lists the other in `status --json` by name with its mesh IPs; ping over the mesh both ways
# (IPv4 and IPv6) and an 8 MB checksummed TCP transfer; under umask 000, the state directories the
# operator and the agents create (and the operator's tls/) are 0700 and the keys in them 0600; a
# third member with a wrong join token exits 1 naming the join token and is not admitted; the
# coordinator's state survives a restart: after it, the member that kept running registers again,
# a member restarted with its node key gets the same mesh IPs, traffic flows again, and a member
# new to the restarted coordinator gets addresses nobody holds.
#
# Usage: join_basic.sh [AGENT_PATH [OPERATOR_PATH]]   (needs root; exits 77 otherwise)

# shellcheck source=nat_lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/nat_lib.sh"
tm_mesh_init join_basic 110 "$@"
# The most permissive umask: whatever the daemons create must set its own mode (checked below).
# The work directory itself is mktemp's, 0700.
umask 000

tm_step "topology: coordinator and two members on a public segment"
tm_net_public coord
tm_net_public a
tm_net_public b
tm_net_public c
tm_coord_setup coord
tm_coord_start

tm_step "two members join and list each other"
tm_members_join alpha:a beta:b
A4=$(tm_member_ip alpha 4)
B4=$(tm_member_ip beta 4)
A6=$(tm_member_ip alpha 6)
B6=$(tm_member_ip beta 6)
[[ "$A4" != "$B4" && "$A6" != "$B6" ]] ||
  tm_fail "members got the same mesh IPs: alpha $A4 $A6, beta $B4 $B6"
for ip in "$A4" "$B4"; do
  [[ "$ip" == 10.99.* ]] || tm_fail "mesh IPv4 $ip is not in $TM_MESH_V4"
done
for ip in "$A6" "$B6"; do
  [[ "$ip" == fd99:99:* ]] || tm_fail "mesh IPv6 $ip is not in $TM_MESH_V6"
done
tm_log "alpha: $A4 $A6, beta: $B4 $B6"
tm_expect_eq "alpha: self.name" "$(tm_mjson alpha "s['self']['name']")" alpha
tm_expect_eq "alpha: self.public_key" "$(tm_mjson alpha "s['self']['public_key']")" \
  "$(tm_member_pubkey alpha)"
grep -q " $A4/16 " <<<" $(ip -n "$(tm_ns a)" -br addr show dev "${TM_MEMBER_IF[alpha]}") " ||
  tm_fail "alpha's interface ${TM_MEMBER_IF[alpha]} lacks $A4/16:" \
    "$(ip -n "$(tm_ns a)" -br addr show dev "${TM_MEMBER_IF[alpha]}" 2>&1)"

tm_step "each member sees the other's addresses and key"
tm_expect_eq "alpha: mesh_ips of peer beta" \
  "$(tm_mjson alpha "sorted(m.split('/')[0] for m in peer('beta')['mesh_ips'])")" \
  "$("$TM_PY" -c 'import json, sys; print(json.dumps(sorted(sys.argv[1:])))' "$B4" "$B6")"
tm_expect_eq "beta: mesh_ips of peer alpha" \
  "$(tm_mjson beta "sorted(m.split('/')[0] for m in peer('alpha')['mesh_ips'])")" \
  "$("$TM_PY" -c 'import json, sys; print(json.dumps(sorted(sys.argv[1:])))' "$A4" "$A6")"
tm_expect_eq "alpha: public_key of peer beta" "$(tm_mpeer_get alpha beta public_key)" \
  "$(tm_member_pubkey beta)"

tm_step "traffic over the mesh"
tm_wait_ping a "$B4" 10
tm_ping a "$B4" 5
tm_ping b "$A4" 5
tm_ping a "$B6" 3
tm_ping b "$A6" 3
tm_tcp_transfer a b "$B4" 8
tm_expect_eq "alpha: path to beta on a flat segment" "$(tm_mpeer_get alpha beta path)" direct
tm_expect_gt "alpha: rx_bytes from beta" "$(tm_mpeer_get alpha beta rx_bytes)" 0
tm_expect_gt "beta: latest_handshake with alpha" "$(tm_mpeer_get beta alpha latest_handshake)" 0

tm_step "the daemons' state directories are owner-only and their keys 0600, despite umask 000"
for dir in "$(tm_coord_state)" "$(tm_coord_state)/tls" "$(tm_member_state alpha)" \
  "$(tm_member_state beta)"; do
  tm_expect_eq "mode of $dir" "$(stat -c %a "$dir")" 700
done
for key in "$(tm_coord_state)/tls/ca.key" "$(tm_coord_state)/tls/server.key" \
  "$(tm_coord_state)/relay.key" "$(tm_coord_state)/preshared-keys.json" \
  "$(tm_member_state alpha)/node.key" "$(tm_member_state beta)/node.key"; do
  tm_expect_eq "mode of $key" "$(stat -c %a "$key")" 600
done

tm_step "a wrong join token is refused"
tm_member_new gamma c
echo "this-is-not-the-right-token-0000" >"$TM_WORK/wrong-token"
tm_member_join_once gamma "$TM_WORK/wrong-token" 20
tm_log "wrong-token join: exit $TM_JOIN_RC: $TM_JOIN_OUT"
tm_expect_eq "exit code of join with a wrong token" "$TM_JOIN_RC" 1
grep -qi "join token" <<<"$TM_JOIN_OUT" ||
  tm_fail "join with a wrong token did not name the join token in its message: $TM_JOIN_OUT"
if grep -q '"name": "gamma"' "$(tm_coord_state)/members.json"; then
  tm_fail "the coordinator recorded gamma despite its wrong token"
fi
tm_expect_eq "alpha's peers after the refused join" \
  "$(tm_mjson alpha "sorted(p['name'] for p in s['peers'])")" '["beta"]'

tm_step "coordinator restart keeps state"
tm_coord_stop
tm_coord_start
tm_member_stop beta
tm_member_start beta
tm_expect_eq "beta's mesh IPv4 after coordinator and member restart" "$(tm_member_ip beta 4)" "$B4"
tm_expect_eq "beta's mesh IPv6 after coordinator and member restart" "$(tm_member_ip beta 6)" "$B6"
tm_expect_eq "members.json for beta" "$(tm_coord_member_ips beta)" "$B4 $B6"
tm_member_wait_peer 5 beta alpha
tm_wait 5 "alpha (kept running) to register again with the restarted coordinator" \
  tm_coord_registered alpha
tm_wait_ping b "$A4" 10
tm_ping a "$B4" 3
# The allocator's state survived too: a member new to the restarted coordinator gets fresh IPs.
tm_member_start gamma
G4=$(tm_member_ip gamma 4)
[[ "$G4" != "$A4" && "$G4" != "$B4" ]] ||
  tm_fail "gamma, new after the restart, got $G4, already held by alpha ($A4) or beta ($B4)"
tm_member_wait_peer 5 alpha gamma
tm_wait_ping c "$A4" 10
tm_member_alive alpha
tm_coord_alive
