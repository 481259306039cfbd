#!/usr/bin/env bash
# wg_tools_mesh.sh: WireGuard's own tools against an agent that joined a mesh. The coordinator
# owns a member's peers, so `wg show` works and `wg set` is refused.
#
# Checks: with a coordinator and two members, `wg show` and `wg show dump` on alpha (the real
# /usr/bin/wg, through /var/run/wireguard/IFACE.sock) list beta with its key, mesh IPs as allowed
# IPs, endpoint and a handshake after a ping; `wg set ... remove` and `wg set ... allowed-ips`
# fail with "Operation not permitted", the agent logs that the coordinator owns its peers, and
# beta stays configured and reachable.
#
# Usage: wg_tools_mesh.sh [AGENT_PATH [OPERATOR_PATH]]   (needs root; exits 77 otherwise)

# shellcheck source=nat_lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/nat_lib.sh"
tm_mesh_init wg_tools_mesh 120 "$@"

tm_step "a coordinator and two members"
tm_net_public coord
tm_net_public a
tm_net_public b
tm_coord_setup coord
tm_coord_start
tm_member_new alpha a
tm_member_new beta b
# /var/run/wireguard is shared by every namespace on the host: a name no other run uses. The
# members' DNS addresses then come from here instead of the interface number.
TM_MEMBER_IF[alpha]="tw$$m1"
tm_member_dns() { if [[ "$1" == alpha ]]; then echo 127.0.0.98; else echo 127.0.0.99; fi; }
tm_member_start alpha
tm_member_start beta
tm_member_wait_peer 5 alpha beta
IF=${TM_MEMBER_IF[alpha]}
B4=$(tm_member_ip beta 4)
B6=$(tm_member_ip beta 6)
PUB_B=$(tm_member_pubkey beta)
SINCE=$(date +%s)
tm_wait_ping a "$B4" 10

tm_step "wg show lists the coordinator's peer"
SHOW=$(tm_in a wg show "$IF") || tm_fail "wg show $IF failed: $SHOW"
tm_log "wg show $IF:"$'\n'"$SHOW"
for want in "interface: $IF" "public key: $(tm_member_pubkey alpha)" "peer: $PUB_B" \
  "$B4/32" "$B6/128" "latest handshake: " "endpoint: "; do
  grep -qF -- "$want" <<<"$SHOW" || tm_fail "wg show $IF: '$want' not in:"$'\n'"$SHOW"
done
read -r key psk endpoint allowed handshake rest < <(tm_in a wg show "$IF" dump |
  awk -v k="$PUB_B" '$1 == k')
tm_expect_eq "dump: beta's key" "$key" "$PUB_B"
tm_expect_gt "dump: latest handshake (since the ping)" "$handshake" $((SINCE - 1))

tm_step "wg set is refused: the coordinator owns the peers"
OUT=$(tm_in a wg set "$IF" peer "$PUB_B" remove 2>&1) && tm_fail "wg set remove succeeded: $OUT"
grep -qF "Operation not permitted" <<<"$OUT" || tm_fail "wg set remove: unexpected error: $OUT"
OUT=$(tm_in a wg set "$IF" peer "$PUB_B" allowed-ips 10.77.0.0/24 2>&1) &&
  tm_fail "wg set allowed-ips succeeded: $OUT"
grep -qF "Operation not permitted" <<<"$OUT" || tm_fail "wg set allowed-ips: unexpected error: $OUT"
grep -qF "the coordinator owns its peers" "$(tm_member_log alpha)" ||
  tm_fail "alpha's log does not say why wg set was refused"
grep -qF "peer: $PUB_B" <<<"$(tm_in a wg show "$IF")" || tm_fail "beta is gone after a refused set"
[[ -z "$(tm_in a ip route show 10.77.0.0/24)" ]] || tm_fail "a refused set added a route"
tm_ping a "$B4" 3
tm_member_stop alpha
[[ ! -e "/var/run/wireguard/$IF.sock" ]] || tm_fail "alpha's WireGuard socket is still there"
