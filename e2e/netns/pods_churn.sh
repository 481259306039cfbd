#!/usr/bin/env bash
# pods_churn.sh: 200 pods created and deleted on one node leave nothing behind. A coordinator and
# two nodes; on node a, 200 pods (network namespaces) are added through the chain bridge +
# host-local + tunnelmesh-cni (e2e/netns/cni_runtime.py, as a runtime calls it) in batches of 20
# that are deleted again, the first pod of every batch pinging node b's mesh IP. Afterwards: no host
# veth, no route through one, no pod in the agent's attachment file or `status`, no pod member in
# the coordinator's members.json or in node b's map; the agent and coordinator still serve (a new
# pod attaches and reaches node b).
#
# Usage: pods_churn.sh [AGENT_PATH [OPERATOR_PATH]]   (needs root; exits 77 otherwise)

# shellcheck source=nat_lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/nat_lib.sh"
# shellcheck source=cni_lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/cni_lib.sh"
tm_mesh_init pods_churn 300 "$@"
cni_lib_init
mkdir -p "$TM_WORK/cache"
PODS=200
BATCH=20

tm_step "topology: a coordinator and two nodes"
cni_two_nodes
tm_member_start alpha
tm_member_start beta
tm_members_wait_ping 10 alpha beta
B4=$(tm_member_ip beta 4)
SOCK=$(tm_member_state alpha)/${TM_MEMBER_IF[alpha]}.sock
cat >"$TM_WORK/a.conflist" <<EOF
{"cniVersion": "1.0.0", "name": "pods-a", "plugins": [
  {"type": "bridge", "bridge": "cni0", "isGateway": true,
   "ipam": {"type": "host-local", "dataDir": "$TM_WORK/ipam", "ranges": [[{"subnet": "10.22.0.0/16"}]],
            "routes": [{"dst": "0.0.0.0/0"}]}},
  {"type": "tunnelmesh-cni", "mesh": "demo", "agentSocket": "$SOCK"}]}
EOF
runtime() { # COMMAND POD
  local ns
  ns=$(tm_ns "$2")
  tm_in a env CNI_PATH="$CNI_BIN" "$TM_PY" "$RUNTIME" "$1" "$TM_WORK/a.conflist" "c-$2" \
    "/run/netns/$ns" eth0 "$TM_WORK/cache" \
    "IgnoreUnknown=1;K8S_POD_NAMESPACE=churn;K8S_POD_NAME=$2;K8S_POD_UID=u-$2" \
    2>>"$TM_WORK/runtime.stderr" >"$TM_WORK/runtime.out"
}

tm_step "$PODS pods added and deleted in batches of $BATCH"
start=$(date +%s%3N)
for ((first = 1; first <= PODS; first += BATCH)); do
  for ((i = first; i < first + BATCH; i++)); do
    tm_ns_new "pod$i"
    runtime ADD "pod$i" || tm_fail "ADD of pod$i failed: $(cat "$TM_WORK/runtime.out")"
  done
  tm_wait_ping "pod$first" "$B4" 10
  for ((i = first; i < first + BATCH; i++)); do
    runtime DEL "pod$i" || tm_fail "DEL of pod$i failed: $(cat "$TM_WORK/runtime.out")"
    ip netns del "$(tm_ns "pod$i")"
  done
done
tm_log "$PODS pods added and deleted in $(( ($(date +%s%3N) - start) / 1000 ))s"

tm_step "nothing is left behind"
tm_expect_eq "node a: host veths left" "$(tm_in a ip -o link show | grep -c ': tmp' || true)" 0
tm_expect_eq "node a: routes into pod veths left" \
  "$(tm_in a ip route show table all | grep -c 'dev tmp' || true)" 0
attached() { "$TM_PY" -c 'import json, sys; print(len(json.load(open(sys.argv[1])).get("pods", [])))' "$1"; }
tm_expect_eq "attachments in the agent's file" \
  "$(attached "$(tm_member_state alpha)/${TM_MEMBER_IF[alpha]}.pods.json")" 0
tm_expect_eq "pods in the agent's status" "$(tm_mjson alpha "len(s.get('attached_pods', []))")" 0
no_pod_members() { ! grep -q '"kind": "Pod"' "$(tm_coord_state)/members.json"; }
tm_wait 10 "the coordinator's members.json to hold no pod" no_pod_members
pods_gone_at_b() { [[ $(tm__mjson beta "s.get('pod_peers', 0)") == 0 ]]; }
tm_wait 10 "node b's map to hold no pod" pods_gone_at_b
tm_expect_eq "node a's allowed IPs at node b" "$(tm_mjson beta "len(peer('alpha')['allowed_ips'])")" 2

tm_step "the node still attaches pods"
tm_ns_new last
runtime ADD last || tm_fail "ADD after the churn failed: $(cat "$TM_WORK/runtime.out")"
tm_wait_ping last "$B4" 10
runtime DEL last || tm_fail "DEL after the churn failed"
tm_checks_done
