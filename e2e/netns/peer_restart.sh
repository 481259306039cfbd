#!/usr/bin/env bash
# peer_restart.sh: one side of a working tunnel dies and comes back with the same keys; traffic
# must resume through a new handshake without touching the other side.
#
# Cases (RESUME_S bounds the wait: a survivor that still holds the old session notices the silence
# after Keepalive-Timeout + Rekey-Timeout = 15 s, WireGuard paper section 6.5, and re-handshakes):
#   agent-agent  B crashes (SIGKILL, leaving its control socket behind) and restarts; A, the
#                survivor, sends first.
#   agent-agent  A stops cleanly (SIGTERM) and restarts; the restarted A sends first.
#   agent-wg     wireguard-go crashes and restarts; the agent, the survivor, sends first.
#   agent-wg     the agent crashes and restarts; wireguard-go, the survivor, sends first.
# After each: ping both ways, and the side that stayed up reports a handshake newer than the
# restart (and, for an agent, a higher handshake count).
#
# Usage: peer_restart.sh [AGENT_PATH]   (or TM_AGENT=...; needs root, exits 77 otherwise)

# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
tm_init peer_restart 170 "$@"
tm_require_agent

RESUME_S=30

# restart_case TITLE VICTIM HOW(kill|stop) SURVIVOR FIRST_NSID FIRST_DST
restart_case() {
  local title=$1 victim=$2 how=$3 survivor=$4 first_ns=$5 first_dst=$6 since hs_before=""
  tm_step "$title"
  if [[ "${TM_NODE_KIND[$survivor]}" == agent ]]; then
    hs_before=$(tm_peer_get "$survivor" "$victim" handshakes)
  fi
  if [[ "$how" == kill ]]; then tm_node_kill "$victim"; else tm_node_stop "$victim"; fi
  since=$(date +%s)
  tm_node_start "$victim"
  tm_wait_ping "$first_ns" "$first_dst" "$RESUME_S"
  tm_expect_handshake "$survivor" "$victim" "$since"
  tm_expect_handshake "$victim" "$survivor" "$since"
  if [[ -n "$hs_before" ]]; then
    tm_expect_gt "$survivor: handshakes with $victim after its restart" \
      "$(tm_peer_get "$survivor" "$victim" handshakes)" "$hs_before"
  fi
}

tm_step "setup: agent A <-> agent B, agent C <-> wireguard-go W"
tm_ns_new a
tm_ns_new b
tm_ns_new c
tm_ns_new w
tm_veth a veth0 b veth0 "10.0.0.1/24 fd00::1/64" "10.0.0.2/24 fd00::2/64"
tm_veth c veth0 w veth0 "10.1.0.1/24 fd01::1/64" "10.1.0.2/24 fd01::2/64"
tm_node_new A agent a 51820 "10.44.0.1/24, fd44::1/64"
tm_node_new B agent b 51821 "10.44.0.2/24, fd44::2/64"
tm_node_new C agent c 51820 "10.45.0.1/24, fd45::1/64"
tm_node_new W wg w 51821 "10.45.0.2/24, fd45::2/64"
tm_node_peer A B endpoint=10.0.0.2:51821
tm_node_peer B A endpoint=10.0.0.1:51820
tm_node_peer C W endpoint=10.1.0.2:51821
tm_node_peer W C endpoint=10.1.0.1:51820
for n in A B C W; do tm_node_start "$n"; done
tm_wait_ping a 10.44.0.2 10
tm_wait_ping c 10.45.0.2 10
tm_ping b 10.44.0.1 3
tm_ping w 10.45.0.1 3

restart_case "agent B crashes and restarts; surviving agent A sends first" B kill A a 10.44.0.2
tm_ping b fd44::1 3
restart_case "agent A stops cleanly and restarts; restarted A sends first" A stop B a 10.44.0.2
tm_ping b 10.44.0.1 3
tm_tcp_transfer b a 10.44.0.1 4

restart_case "wireguard-go crashes and restarts; surviving agent C sends first" W kill C c 10.45.0.2
tm_ping w fd45::1 3
restart_case "agent C crashes and restarts; surviving wireguard-go sends first" C kill W w 10.45.0.1
tm_ping c 10.45.0.2 3
tm_tcp_transfer c w 10.45.0.2 4

for n in A B C; do tm_node_alive "$n"; done
