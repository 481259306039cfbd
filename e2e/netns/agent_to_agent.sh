#!/usr/bin/env bash
# agent_to_agent.sh: two tunnelmesh-agents in two namespaces joined by a veth.
#
# Run twice on fresh namespaces: once with IPv4 outer endpoints configured on both sides, once with
# an IPv6 outer endpoint known only to A (B learns A's endpoint from the authenticated handshake),
# a preshared key and a persistent keepalive on B. Each run checks: the agents' TUN configuration,
# ping over inner IPv4 and IPv6 both ways, an 8 MB TCP transfer each way with checksums, iperf3 for
# 2 s, status JSON (self, endpoint, handshake, rx/tx counters, no drops that a clean run cannot
# have), the text status, the keepalive, and a clean SIGTERM shutdown.
#
# Usage: agent_to_agent.sh [AGENT_PATH]   (or TM_AGENT=...; needs root, exits 77 otherwise)

# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
tm_init agent_to_agent 170 "$@"
tm_require_agent

# Drop reasons a clean tunnel between two correct peers never produces.
CLEAN_DROPS=(malformed mac1_invalid handshake_invalid handshake_replayed decrypt_failed
  source_not_allowed inner_malformed)

run_pair() { # TAG OUTER_FAMILY
  local t=$1 fam=$2 a=$1A b=$1B outer_a outer_b rx0
  outer_a=10.0.0.1 outer_b=10.0.0.2
  if [[ "$fam" == 6 ]]; then outer_a=fd00::1 outer_b=fd00::2; fi
  tm_step "pair $t: outer IPv$fam"
  tm_ns_new "${t}a"
  tm_ns_new "${t}b"
  tm_veth "${t}a" veth0 "${t}b" veth0 "10.0.0.1/24 fd00::1/64" "10.0.0.2/24 fd00::2/64"
  tm_node_new "$a" agent "${t}a" 51820 "10.44.0.1/24, fd44::1/64"
  tm_node_new "$b" agent "${t}b" 51821 "10.44.0.2/24, fd44::2/64"
  if [[ "$fam" == 4 ]]; then
    tm_node_peer "$a" "$b" endpoint="$(tm_endpoint "$outer_b" 51821)"
    tm_node_peer "$b" "$a" endpoint="$(tm_endpoint "$outer_a" 51820)"
  else
    tm_psk_new "$t"
    tm_node_peer "$a" "$b" endpoint="$(tm_endpoint "$outer_b" 51821)" psk="$t"
    tm_node_peer "$b" "$a" psk="$t" keepalive=1
  fi
  tm_node_start "$a"
  tm_node_start "$b"
  tm_expect_netconfig "$a"
  tm_expect_netconfig "$b"
  tm_expect_self "$a"
  tm_expect_self "$b"

  tm_wait_ping "${t}a" 10.44.0.2 10
  tm_ping "${t}a" 10.44.0.2 5
  tm_ping "${t}b" 10.44.0.1 5
  tm_ping "${t}a" fd44::2 5
  tm_ping "${t}b" fd44::1 5
  tm_tcp_transfer "${t}a" "${t}b" 10.44.0.2 8
  tm_tcp_transfer "${t}b" "${t}a" fd44::1 8
  tm_iperf "${t}a" "${t}b" 10.44.0.2 2
  tm_log "iperf3 A -> B over the tunnel: $(tm_gbps "$TM_IPERF_BPS") Gbit/s"

  tm_expect_traffic "$a" "$b"
  tm_expect_traffic "$b" "$a"
  tm_expect_eq "$a: endpoint of $b" "$(tm_peer_get "$a" "$b" endpoint)" \
    "$(tm_endpoint "$outer_b" 51821)"
  tm_expect_eq "$b: endpoint of $a (learned when unconfigured)" \
    "$(tm_peer_get "$b" "$a" endpoint)" "$(tm_endpoint "$outer_a" 51820)"
  tm_expect_eq "$a: path to $b" "$(tm_peer_get "$a" "$b" path)" direct
  tm_expect_eq "$a: allowed_ips of $b" "$(tm_json "$a" \
    "sorted([p for p in s['peers'] if p['public_key'] == pub('$b')][0]['allowed_ips'])")" \
    '["10.44.0.2/32", "fd44::2/128"]'
  tm_expect_no_drops "$a" "${CLEAN_DROPS[@]}"
  tm_expect_no_drops "$b" "${CLEAN_DROPS[@]}"
  tm_expect_status_text "$a"
  tm_expect_status_text "$b"
  tm_log "status of $a: $(tm_status_json "$a")"

  if [[ "$fam" == 6 ]]; then
    # B has PersistentKeepalive = 1: A keeps receiving while nobody sends data.
    rx0=$(tm_peer_get "$a" "$b" rx_packets)
    tm_wait 5 "keepalives from $b to raise $a's rx_packets above $rx0" \
      tm__rx_packets_above "$a" "$b" "$rx0"
  fi

  tm_node_stop "$b"
  tm_node_stop "$a"
}

tm__rx_packets_above() { (( $(tm_peer_get "$1" "$2" rx_packets) > $3 )); }

run_pair p4 4
run_pair p6 6
