#!/usr/bin/env bash
# two_agents_one_host.sh: two tunnelmesh-agents in one network namespace (one host), with different
# interface names and the same configured ListenPort, each carrying its own tunnel to a peer host.
# The second agent must find the port busy, warn naming ListenPort, take a free port, and still
# work: its peer learns the new port from the authenticated handshake. Neither agent may disturb
# the other's control socket, UDP socket or routes.
#
# Usage: two_agents_one_host.sh [AGENT_PATH]   (or TM_AGENT=...; needs root, exits 77 otherwise)

# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
tm_init two_agents_one_host 90 "$@"
tm_require_agent

tm_step "one host with two agents, one peer host"
tm_ns_new h
tm_ns_new p
tm_veth h veth0 p veth0 "10.0.0.1/24" "10.0.0.2/24"
tm_node_new A1 agent h 51820 "10.50.0.1/24"
tm_node_new A2 agent h 51820 "10.51.0.1/24"
tm_node_new B1 agent p 51821 "10.50.0.2/24"
tm_node_new B2 agent p 51822 "10.51.0.2/24"
tm_node_peer A1 B1 endpoint=10.0.0.2:51821
tm_node_peer B1 A1 endpoint=10.0.0.1:51820
# B2 does not know A2's port: A2 initiates, and B2 answers wherever A2 turned out to listen.
tm_node_peer A2 B2 endpoint=10.0.0.2:51822
tm_node_peer B2 A2
tm_node_start A1
tm_node_start A2
tm_node_start B1
tm_node_start B2

tm_step "the second agent took another port and said so"
a1_port=$(tm_json A1 "s['self']['listen_port']")
a2_port=$(tm_json A2 "s['self']['listen_port']")
tm_expect_eq "A1 listen port" "$a1_port" 51820
if [[ "$a2_port" == 51820 || "$a2_port" == 0 ]]; then
  tm_check_fail "A2 should have fallen back to a free port, status says $a2_port"
fi
if grep -q "ListenPort 51820 is in use" "$(tm_node_log A2)"; then
  tm_log "A2 warned: $(grep -o 'ListenPort 51820 is in use[^(]*' "$(tm_node_log A2)" | head -1)"
else
  tm_check_fail "A2's log does not warn that ListenPort 51820 is in use"
fi

tm_step "both tunnels carry traffic"
tm_wait_ping h 10.50.0.2 10
tm_wait_ping h 10.51.0.2 10
tm_ping p 10.50.0.1 3
tm_ping p 10.51.0.1 3
tm_expect_eq "B2 learned A2's endpoint" "$(tm_peer_get B2 A2 endpoint)" "10.0.0.1:$a2_port"
tm_expect_handshake A1 B1
tm_expect_handshake A2 B2

tm_step "stopping one agent leaves the other working"
tm_node_stop A2
tm_ping h 10.50.0.2 3
tm_expect_eq "A1 still answers status" "$(tm_json A1 "s['self']['listen_port']")" 51820
tm_checks_done
