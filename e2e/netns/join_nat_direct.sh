#!/usr/bin/env bash
# join_nat_direct.sh: two members, each on a private LAN behind its own endpoint-independent
# (`masquerade`) NAT; the coordinator is public.
#
# Requires hole punching (STUN-learned endpoints, discovery ping/pong and call-me-maybe): the
# members must end on a direct UDP path between the two NATs' public addresses, not the relay.
# Checks: both join through their NATs and list each other; ping over the mesh both ways; each
# reports path "direct" to the other within TM_DIRECT_WAIT_S (default 20) seconds, with the
# other's NAT public address as the endpoint; a TCP transfer and a short iperf3 run over it; the
# traffic really crossed both NATs directly (conntrack on each router holds a UDP flow between the
# two public addresses). If traffic flows but the path never becomes direct, the failure says that
# hole punching is missing: that is a requirement, not a flake.
#
# Usage: join_nat_direct.sh [AGENT_PATH [OPERATOR_PATH]]   (needs root; exits 77 otherwise)

# shellcheck source=nat_lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/nat_lib.sh"
tm_mesh_init join_nat_direct 170 "$@"

DIRECT_WAIT_S=${TM_DIRECT_WAIT_S:-20}

tm_step "topology: two sites behind endpoint-independent NAT"
tm_net_public coord
tm_net_site s1 eim
tm_net_site_host s1 a
tm_net_site s2 eim
tm_net_site_host s2 b
tm_coord_setup coord
tm_coord_start

tm_step "members join through their NATs"
tm_members_join alpha:a beta:b
A4=$(tm_member_ip alpha 4)
B4=$(tm_member_ip beta 4)

tm_step "reachability"
START=$(tm__now_ms)
if ! tm_poll 20 tm_ping_once a "$B4"; then
  tm_fail "alpha cannot reach beta ($B4) at all within 20s through two EIM NATs (neither direct" \
    "nor relayed); path is '$(tm__mjson alpha "(peer('beta') or {}).get('path')")'," \
    "endpoint '$(tm__mjson alpha "(peer('beta') or {}).get('endpoint')")'"
fi
tm_log "first ping alpha -> beta answered after $(tm_elapsed_since "$START")s"
tm_wait_ping b "$A4" 10

tm_step "direct path through both NATs (hole punching)"
direct_both() { tm__path_is alpha beta direct && tm__path_is beta alpha direct; }
if ! tm_poll "$DIRECT_WAIT_S" direct_both; then
  PA=$(tm__mjson alpha "(peer('beta') or {}).get('path')" || true)
  PB=$(tm__mjson beta "(peer('alpha') or {}).get('path')" || true)
  if tm_ping_once a "$B4" >/dev/null 2>&1; then
    tm_fail "traffic flows but the path never became direct within ${DIRECT_WAIT_S}s (alpha->beta" \
      "'$PA', beta->alpha '$PB'): a direct path through endpoint-independent NATs needs hole" \
      "punching (discovery ping/pong + call-me-maybe); this is a requirement, not a flake"
  fi
  tm_fail "path never became direct (alpha->beta '$PA', beta->alpha '$PB') and ping fails now"
fi
tm_log "direct both ways $(tm_elapsed_since "$START")s after the first ping attempt"

# "direct" must mean what it says: each member sends to the other's NAT public address.
endpoint_host() { tm_mjson "$1" "peer('$2')['endpoint'].rsplit(':', 1)[0].strip('[]')"; }
tm_expect_eq "alpha: endpoint host of beta (s2's public address)" "$(endpoint_host alpha beta)" \
  "${TM_NET_ADDR[s2]}"
tm_expect_eq "beta: endpoint host of alpha (s1's public address)" "$(endpoint_host beta alpha)" \
  "${TM_NET_ADDR[s1]}"

tm_step "traffic on the direct path"
tm_ping a "$B4" 5
tm_ping b "$A4" 5
tm_tcp_transfer a b "$B4" 4
tm_iperf a b "$B4" 2
tm_log "iperf3 alpha -> beta through two NATs: $(tm_gbps "$TM_IPERF_BPS") Gbit/s"
tm_expect_eq "alpha: path to beta after the transfer" "$(tm_mpeer_get alpha beta path)" direct

# conntrack on each router: a UDP flow from the site's member to the other NAT's public address.
udp_flow_to() { # SITE HOST_NSID OTHER_PUBLIC_ADDR
  tm_in "$1" cat /proc/net/nf_conntrack | grep -E "udp .* src=${TM_NET_ADDR[$2]} dst=$3 "
}
if tm_in s1 test -r /proc/net/nf_conntrack; then
  udp_flow_to s1 a "${TM_NET_ADDR[s2]}" >/dev/null ||
    tm_fail "s1's conntrack has no UDP flow from alpha to s2's public address ${TM_NET_ADDR[s2]}"
  udp_flow_to s2 b "${TM_NET_ADDR[s1]}" >/dev/null ||
    tm_fail "s2's conntrack has no UDP flow from beta to s1's public address ${TM_NET_ADDR[s1]}"
  tm_log "s1 conntrack: $(udp_flow_to s1 a "${TM_NET_ADDR[s2]}" | head -n1 | tr -s ' ')"
fi
tm_member_alive alpha
tm_member_alive beta

tm_step "the direct path stops answering: traffic falls back to the relay, then upgrades again"
# Drop UDP between the two NATs' public addresses at s1's router, ahead of its NAT rules.
tm_in s1 nft -f - <<NFT
table ip tm_cut {
  chain forward {
    type filter hook forward priority -10; policy accept;
    ip daddr ${TM_NET_ADDR[s2]} udp dport != 3478 drop
    ip saddr ${TM_NET_ADDR[s2]} meta l4proto udp drop
  }
  chain output {
    type filter hook output priority -10; policy accept;
    ip daddr ${TM_NET_ADDR[s2]} meta l4proto udp drop
  }
}
NFT
CUT=$(tm__now_ms)
on_relay() { tm__path_is alpha beta relay; }
tm_poll 5 on_relay ||
  tm_fail "alpha still reports path '$(tm_mpeer_get alpha beta path)' to beta 5 s after the direct" \
    "path was cut; it must fall back to the relay within about a second"
FALLBACK_S=$(tm_elapsed_since "$CUT")
tm_log "alpha fell back to the relay ${FALLBACK_S}s after the cut"
(( $(tm__now_ms) - CUT <= 2500 )) ||
  tm_check_fail "fallback took ${FALLBACK_S}s; the requirement is about a second"
tm_wait_ping a "$B4" 5
tm_ping a "$B4" 3
tm_in s1 nft delete table ip tm_cut
HEAL=$(tm__now_ms)
tm_poll 45 direct_both ||
  tm_fail "the path did not become direct again within 45 s after the cut was lifted"
tm_log "direct again $(tm_elapsed_since "$HEAL")s after the cut was lifted"
tm_ping a "$B4" 3
tm_member_alive alpha
tm_member_alive beta
tm_checks_done
