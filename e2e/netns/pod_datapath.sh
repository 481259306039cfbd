#!/usr/bin/env bash
# pod_datapath.sh: the data path of a pod that its host carries in its own tunnel (tunnelmesh-cni,
# issue 14), without a coordinator: two agents from config files, A and B; B hosts a pod whose
# addresses A's configuration lists in B's AllowedIPs (as the coordinator lists a pod's addresses
# in its host's allowed IPs). The pod's interface is made as the plugin makes it (pod_lib.sh).
#
# Checks: A reaches the pod by its IPv4 and IPv6 mesh addresses (B's agent writes packets for an
# address that is not its own to its TUN, and the kernel forwards them to the pod's veth); the pod
# reaches A, and a TCP transfer from the pod to A completes (B's agent sends what the pod sends,
# from the pod's address); a second address in the pod that A does not list for B is refused by
# A's inner-source check (source_not_allowed grows).
#
# Usage: pod_datapath.sh [AGENT_PATH]   (or TM_AGENT=...; needs root, exits 77 otherwise)

# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
# shellcheck source=pod_lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/pod_lib.sh"
tm_init pod_datapath 120 "$@"
tm_require_agent

POD4=10.44.1.9
POD6=fd44::1:9
SPOOF4=10.44.1.77

tm_step "setup: agents A and B; B hosts a pod"
tm_ns_new a
tm_ns_new b
tm_veth a veth0 b veth0 "10.0.0.1/24" "10.0.0.2/24"
tm_node_new A agent a 51820 "10.44.0.1/16, fd44::1/48"
tm_node_new B agent b 51821 "10.44.0.2/16, fd44::2/48"
tm_node_peer A B endpoint=10.0.0.2:51821 allowed="10.44.0.2/32, fd44::2/128, $POD4/32, $POD6/128"
tm_node_peer B A endpoint=10.0.0.1:51820
tm_node_start A
tm_node_start B
tm_wait_ping a 10.44.0.2 10
tm_pod_plumb b pod tmpdatapath01 1420 "$POD4 $POD6 $SPOOF4" "10.44.0.0/16 fd44::/48"

tm_step "A and the pod reach each other"
tm_wait_ping a "$POD4" 10
tm_ping a "$POD4" 3
tm_wait 10 "the pod's IPv6 address to answer A" tm_ping_once a "$POD6"
tm_ping pod 10.44.0.1 3
tm_tcp_transfer pod a 10.44.0.1 2

tm_step "an address B does not host is refused by A"
before=$(tm_drops A)
tm_in pod ping -n -c 3 -W 1 -I "$SPOOF4" 10.44.0.1 >/dev/null 2>&1 || true
tm_wait 5 "A to count the pod's unlisted address as source_not_allowed" \
  tm__drop_delta_ge A "$before" source_not_allowed 3

tm_checks_done
