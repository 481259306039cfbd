#!/usr/bin/env bash
# agent_wireguard_go.sh: tunnelmesh-agent against wireguard-go, the reference userspace peer.
#
# Two phases on fresh namespaces. In each only the initiator is configured with the responder's
# endpoint, so the responder cannot start the handshake and must learn the initiator's endpoint
# from it:
#   1. the agent initiates (it pings first), outer IPv4;
#   2. wireguard-go initiates, outer IPv6, with a preshared key.
# Each phase pings inner IPv4 and IPv6 both ways, moves 8 MB over TCP each way with checksums,
# and checks the agent's status (handshake, counters, learned endpoint, no drops) and `wg show` on
# the wireguard-go side (a latest handshake, the learned endpoint).
#
# Usage: agent_wireguard_go.sh [AGENT_PATH]   (or TM_AGENT=...; needs root, exits 77 otherwise)

# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
tm_init agent_wireguard_go 150 "$@"
tm_require_agent

CLEAN_DROPS=(malformed mac1_invalid handshake_invalid handshake_replayed decrypt_failed
  source_not_allowed inner_malformed)

run_phase() { # TAG INITIATOR(agent|wg) OUTER_FAMILY
  local t=$1 initiator=$2 fam=$3 a=$1A w=$1W outer_a outer_w psk_opt=() first_ns first_dst
  outer_a=10.0.0.1 outer_w=10.0.0.2
  if [[ "$fam" == 6 ]]; then outer_a=fd00::1 outer_w=fd00::2; fi
  tm_step "phase $t: $initiator initiates, outer IPv$fam"
  tm_ns_new "${t}a"
  tm_ns_new "${t}w"
  tm_veth "${t}a" veth0 "${t}w" veth0 "10.0.0.1/24 fd00::1/64" "10.0.0.2/24 fd00::2/64"
  tm_node_new "$a" agent "${t}a" 51820 "10.44.0.1/24, fd44::1/64"
  tm_node_new "$w" wg "${t}w" 51821 "10.44.0.2/24, fd44::2/64"
  if [[ "$fam" == 6 ]]; then
    tm_psk_new "$t"
    psk_opt=(psk="$t")
  fi
  if [[ "$initiator" == agent ]]; then
    tm_node_peer "$a" "$w" endpoint="$(tm_endpoint "$outer_w" 51821)" "${psk_opt[@]}"
    tm_node_peer "$w" "$a" "${psk_opt[@]}"
    first_ns="${t}a" first_dst=10.44.0.2
  else
    tm_node_peer "$a" "$w" "${psk_opt[@]}"
    tm_node_peer "$w" "$a" endpoint="$(tm_endpoint "$outer_a" 51820)" "${psk_opt[@]}"
    first_ns="${t}w" first_dst=10.44.0.1
  fi
  tm_node_start "$a"
  tm_node_start "$w"
  tm_expect_netconfig "$a"

  tm_wait_ping "$first_ns" "$first_dst" 10
  tm_expect_handshake "$w" "$a"
  tm_expect_handshake "$a" "$w"
  tm_ping "${t}a" 10.44.0.2 5
  tm_ping "${t}w" 10.44.0.1 5
  tm_ping "${t}a" fd44::2 5
  tm_ping "${t}w" fd44::1 5
  tm_tcp_transfer "${t}a" "${t}w" 10.44.0.2 8
  tm_tcp_transfer "${t}w" "${t}a" fd44::1 8

  tm_expect_traffic "$a" "$w"
  tm_expect_eq "$a: endpoint of wireguard-go" "$(tm_peer_get "$a" "$w" endpoint)" \
    "$(tm_endpoint "$outer_w" 51821)"
  tm_expect_eq "wireguard-go: endpoint of the agent" "$(tm_peer_get "$w" "$a" endpoint)" \
    "$(tm_endpoint "$outer_a" 51820)"
  tm_expect_gt "wireguard-go: rx_bytes from the agent" "$(tm_peer_get "$w" "$a" rx_bytes)" 0
  tm_expect_gt "wireguard-go: tx_bytes to the agent" "$(tm_peer_get "$w" "$a" tx_bytes)" 0
  tm_expect_no_drops "$a" "${CLEAN_DROPS[@]}"
  tm_log "wg show on the wireguard-go side:"$'\n'"$(tm_in "${t}w" wg show "$(tm_if "$w")")"

  tm_node_stop "$a"
  tm_node_stop "$w"
}

run_phase i1 agent 4
run_phase i2 wg 6
