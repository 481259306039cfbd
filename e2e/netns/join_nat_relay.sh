#!/usr/bin/env bash
# join_nat_relay.sh: one member behind a symmetric NAT (`masquerade fully-random`: a new public
# port per destination), the other on a site whose router lets only TCP out (outbound UDP
# dropped); the coordinator is public. No direct UDP path can exist between them.
#
# Requires the coordinator's WebSocket relay. Checks: both join (gRPC is TCP) and list each other;
# ping over the mesh both ways within TM_RELAY_WAIT_S (default 20) seconds; each reports path
# "relay" to the other; a checksummed TCP transfer over the relay; the blocked site's router did
# drop outbound UDP (the member tried UDP first) and so no UDP flow crossed it.
#
# Usage: join_nat_relay.sh [AGENT_PATH [OPERATOR_PATH]]   (needs root; exits 77 otherwise)

# shellcheck source=nat_lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/nat_lib.sh"
tm_mesh_init join_nat_relay 100 "$@"

RELAY_WAIT_S=${TM_RELAY_WAIT_S:-20}

tm_step "topology: a symmetric NAT and a UDP-blocking site"
tm_net_public coord
tm_net_site s1 symmetric
tm_net_site_host s1 a
tm_net_site s2 udp_blocked
tm_net_site_host s2 b
tm_coord_setup coord
tm_coord_start

tm_step "members join"
tm_members_join alpha:a beta:b
A4=$(tm_member_ip alpha 4)
B4=$(tm_member_ip beta 4)
A6=$(tm_member_ip alpha 6)

tm_step "reachability through the relay"
START=$(tm__now_ms)
if ! tm_poll "$RELAY_WAIT_S" tm_ping_once a "$B4"; then
  tm_fail "alpha (symmetric NAT) cannot reach beta (UDP blocked) at $B4 within ${RELAY_WAIT_S}s:" \
    "no direct path can exist here, so this needs the WebSocket relay; alpha reports path" \
    "'$(tm__mjson alpha "(peer('beta') or {}).get('path')" || true)'," \
    "beta reports '$(tm__mjson beta "(peer('alpha') or {}).get('path')" || true)'"
fi
tm_log "first ping alpha -> beta answered after $(tm_elapsed_since "$START")s"
tm_wait_ping b "$A4" 10
tm_member_wait_path 10 alpha beta relay
tm_member_wait_path 10 beta alpha relay

tm_step "traffic over the relay"
tm_ping a "$B4" 5
tm_ping b "$A4" 5
tm_ping b "$A6" 3
tm_tcp_transfer a b "$B4" 2
tm_tcp_transfer b a "$A4" 2
tm_expect_eq "alpha: path to beta after the transfers" "$(tm_mpeer_get alpha beta path)" relay
tm_expect_eq "beta: path to alpha after the transfers" "$(tm_mpeer_get beta alpha path)" relay

tm_step "the blocked site really blocked UDP"
DROPPED=$(tm_nat_counter s2 "outbound UDP")
tm_log "s2 dropped $DROPPED outbound UDP packets"
tm_expect_gt "s2: outbound UDP packets dropped (the member tried UDP: STUN, handshakes)" \
  "${DROPPED:-0}" 0
if tm_in s2 cat /proc/net/nf_conntrack 2>/dev/null | grep -qE "^ipv4 +2 udp .* src=${TM_NET_ADDR[b]} "; then
  tm_fail "a UDP flow from beta crossed the UDP-blocking router s2:" \
    "$(tm_in s2 cat /proc/net/nf_conntrack | grep udp)"
fi
tm_member_alive alpha
tm_member_alive beta
tm_coord_alive
