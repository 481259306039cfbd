#!/usr/bin/env bash
# real_pods.sh: the chart installed for real on a three-node cluster (nodes.sh: kubelet,
# containerd, kube-proxy per node, one node behind a NAT), with the image built by
# scripts/build-image.sh. Nothing stands in for the kubelet or the container runtime: the operator
# and the agents run as containers in pods. Steps:
#   1. `helm install --wait`: the operator Deployment (2 replicas, on the main site) and the agent
#      DaemonSet (3 nodes) Ready; three MeshPeers of kind Node, each with a mesh IP, Ready.
#   2. Agents reach each other through the mesh (ping between every pair of nodes, the NATed tm-c
#      included) under a PeerPolicy that allows ICMP.
#   3. A hostNetwork busybox pod on tm-a fetches a page from a busybox httpd pod on tm-c at tm-c's
#      mesh IP (allowed by a PeerPolicy from tm-a only); the same fetch from tm-b is dropped by
#      tm-c's filter.
#   4. Deleting tm-c's agent pod: the DaemonSet starts a new one, tm-c keeps its mesh IP and is
#      reached again.
#   5. Deleting the operator pod that leads: the other replica takes the Lease, a new pod starts,
#      no mesh IP changes, the mesh keeps working (pings) and a restarted agent registers again.
#   6. `helm upgrade` with a changed value (agent.logLevel): every agent pod is replaced and runs
#      with the new flag; the mesh heals with the same IPs.
#   7. `helm uninstall --wait` returns (its pre-delete hook deletes the Mesh while the operator
#      still runs); no Mesh or MeshPeer is left, and no TUN device, route through it or agent
#      process on any node.
set -Eeuo pipefail
shopt -s inherit_errexit

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=e2e/cluster/kube.sh
source "$HERE/kube.sh"
# shellcheck source=e2e/cluster/nodes.sh
source "$HERE/nodes.sh"

kube_init real_pods "${TM_REAL_PODS_BUDGET:-1380}"
for tool in helm python3; do
  command -v "$tool" >/dev/null || kube_fail "required tool '$tool' is not installed (run scripts/install-deps.sh)"
done
agent=${TM_AGENT:-$KUBE_REPO_ROOT/build/bin/tunnelmesh-agent}
build_dir=$(dirname "$(dirname "$agent")")
[[ -x $agent && -x $build_dir/bin/tunnelmesh-operator ]] ||
  kube_fail "$agent or the operator beside it is missing: build them (ninja -C $build_dir tunnelmesh-agent tunnelmesh-operator)"

NS=tunnelmesh
RELEASE=tm
SVC_IP=10.96.0.77
k() { kube_kubectl "$@"; }
jp() { k get "${@:2}" -o "jsonpath=$1" 2>/dev/null; }
elapsed() { echo "$(( ($(kube__now_ms) - $1) / 1000 ))s"; }

nodes_init
kube_up
nodes_up

kube_step "building the TunnelMesh image and importing it into every node"
t=$(kube__now_ms)
bash "$KUBE_REPO_ROOT/scripts/build-image.sh" "$KUBE_WORK/images/tunnelmesh.tar" "$build_dir" >&2
IMAGE=$(python3 -c 'import json, sys; print(json.load(sys.stdin)[0]["RepoTags"][0])' \
  < <(tar -xOf "$KUBE_WORK/images/tunnelmesh.tar" manifest.json))
nodes_import "$KUBE_WORK/images/tunnelmesh.tar"
kube_log "image $IMAGE on ${#NODES[@]} nodes in $(elapsed "$t")"

# ---------------------------------------------------------------------------------------------
kube_step "1. helm install --wait"
# The cluster has no DNS for Services (Debian ships no CoreDNS): the Service gets a fixed
# ClusterIP and the agents dial it. The coordinator runs on the main site, whose pod network the
# NATed node reaches (its own pods are not reachable from there).
HELM_ARGS=(
  --namespace "$NS"
  --set "image.repository=${IMAGE%:*}" --set "image.tag=${IMAGE##*:}" --set image.pullPolicy=Never
  --set operator.replicas=2
  --set "operator.nodeSelector.tunnelmesh\.test/site=main"
  --set "service.clusterIP=$SVC_IP" --set "agent.coordinator=$SVC_IP:7700"
  --set mesh.name=cluster
)
t=$(kube__now_ms)
helm install "$RELEASE" "$KUBE_REPO_ROOT/charts/tunnelmesh" --create-namespace "${HELM_ARGS[@]}" \
  --wait --timeout 240s >"$KUBE_WORK/helm-install.log" 2>&1 ||
  { cat "$KUBE_WORK/helm-install.log" >&2; kube_fail "helm install --wait failed"; }
kube_log "helm install --wait returned after $(elapsed "$t")"
k -n "$NS" get pods -o wide >&2

[[ $(jp '{.status.readyReplicas}' -n "$NS" deployment/$RELEASE-tunnelmesh-operator) == 2 ]] ||
  kube_fail "the operator Deployment is not 2/2 Ready"
[[ $(jp '{.status.numberReady}' -n "$NS" daemonset/$RELEASE-tunnelmesh-agent) == "${#NODES[@]}" ]] ||
  kube_fail "the agent DaemonSet is not Ready on all ${#NODES[@]} nodes"

meshpeer_ready() { # NODE
  local got
  got=$(jp '{.spec.kind} {.status.meshIPs[0]} {.status.conditions[?(@.type=="Ready")].status}' "meshpeer/$1")
  echo "meshpeer $1: $got"
  [[ $got =~ ^Node\ [0-9.]+\ True$ ]]
}
declare -A IP=()
for n in "${NODES[@]}"; do
  kube_wait 60 "MeshPeer $n to have a mesh IP and be Ready" meshpeer_ready "$n"
  IP[$n]=$(jp '{.status.meshIPs[0]}' "meshpeer/$n")
done
kube_log "mesh IPs: tm-a ${IP[tm-a]}, tm-b ${IP[tm-b]}, tm-c ${IP[tm-c]} (tm-c behind NAT)"

# ---------------------------------------------------------------------------------------------
kube_step "2. the nodes reach each other through the mesh"
k apply -f - >/dev/null <<EOF
apiVersion: tunnelmesh.io/v1alpha1
kind: PeerPolicy
metadata: {name: nodes-ping}
spec:
  mesh: cluster
  action: Allow
  from: [{kinds: [Node]}]
  to: [{kinds: [Node]}]
  ports: [{protocol: ICMP}]
---
apiVersion: tunnelmesh.io/v1alpha1
kind: PeerPolicy
metadata: {name: a-to-c-web}
spec:
  mesh: cluster
  action: Allow
  from: [{names: [tm-a]}]
  to: [{names: [tm-c]}]
  ports: [{protocol: TCP, port: 18080}]
EOF
ping_once() { nodes_exec "$1" ping -c 1 -W 1 "$2" >/dev/null; }
ping_all() {
  local from to
  for from in "${NODES[@]}"; do
    for to in "${NODES[@]}"; do
      [[ $from == "$to" ]] && continue
      kube_wait "$1" "$from to ping $to at ${IP[$to]} through the mesh" ping_once "$from" "${IP[$to]}"
    done
  done
}
t=$(kube__now_ms)
ping_all 60
kube_log "every pair of nodes pings through the mesh ($(elapsed "$t") after the policy)"

# ---------------------------------------------------------------------------------------------
kube_step "3. a hostNetwork pod on tm-a reaches a web server on tm-c's mesh IP; tm-b is denied"
# (busybox 1.35's wget -T crashes: the timeout applet bounds it instead; "|| exit 1" keeps sh
# from exec'ing it as PID 1, which would ignore timeout's SIGTERM.)
pod_yaml() { # NAME NODE COMMAND (sh -c)
  cat <<EOF
apiVersion: v1
kind: Pod
metadata: {name: $1, namespace: default}
spec:
  nodeName: $2
  hostNetwork: true
  restartPolicy: Never
  automountServiceAccountToken: false
  containers:
  - name: main
    image: $NODES_BUSYBOX_IMAGE
    imagePullPolicy: Never
    command: [/bin/sh, -c, "$3"]
EOF
}
pod_yaml web tm-c "mkdir -p /tmp/www && echo hello from tm-c >/tmp/www/index.html && exec httpd -f -p 18080 -h /tmp/www" |
  k apply -f - >/dev/null
pod_phase_is() { [[ $(jp '{.status.phase}' -n default "pod/$1") == "$2" ]]; }
kube_wait 60 "the web pod on tm-c to run" pod_phase_is web Running
kube_wait 20 "the web server to listen on tm-c" nodes_exec tm-c busybox wget -q -O /dev/null http://127.0.0.1:18080/
pod_yaml fetch-a tm-a "timeout 8 wget -q -O - http://${IP[tm-c]}:18080/ || exit 1" | k apply -f - >/dev/null
pod_yaml fetch-b tm-b "timeout 8 wget -q -O - http://${IP[tm-c]}:18080/ || exit 1" | k apply -f - >/dev/null
pod_done() { local p; p=$(jp '{.status.phase}' -n default "pod/$1"); [[ $p == Succeeded || $p == Failed ]]; }
kube_wait 60 "the fetch pods to finish" pod_done fetch-a
kube_wait 60 "the fetch pods to finish" pod_done fetch-b
[[ $(jp '{.status.phase}' -n default pod/fetch-a) == Succeeded ]] ||
  kube_fail "the pod on tm-a could not fetch http://${IP[tm-c]}:18080/ (log: $(k logs -n default fetch-a 2>&1 | tail -n 3))"
body=$(k logs -n default fetch-a)
[[ $body == "hello from tm-c" ]] || kube_fail "the pod on tm-a got '$body' from tm-c"
[[ $(jp '{.status.phase}' -n default pod/fetch-b) == Failed ]] ||
  kube_fail "the pod on tm-b fetched from tm-c although no PeerPolicy allows it"
kube_log "tm-a's pod got '$body' from ${IP[tm-c]}:18080; tm-b's pod was refused ($(k logs -n default fetch-b 2>&1 | tail -n 1))"
k delete pod -n default fetch-a fetch-b --wait=false >/dev/null

kube_step "3b. helm test: the chart's own check of a node's agent"
helm test "$RELEASE" --namespace "$NS" --timeout 120s >"$KUBE_WORK/helm-test.log" 2>&1 ||
  { cat "$KUBE_WORK/helm-test.log" >&2; kube_fail "helm test failed"; }
kube_log "helm test: $(grep -E 'TEST SUITE|Phase' "$KUBE_WORK/helm-test.log" | tr -s ' ' | tr '\n' ' ')"
# What the pods use, as the kubelet measures it (for the chart's requests and limits).
for n in tm-a tm-b; do
  k get --raw "/api/v1/nodes/$n/proxy/stats/summary" | python3 -c '
import json, sys
for pod in json.load(sys.stdin)["pods"]:
    if pod["podRef"]["namespace"] != "tunnelmesh":
        continue
    for c in pod.get("containers", []):
        mem = c.get("memory", {}).get("workingSetBytes", 0) / 2**20
        cpu = c.get("cpu", {}).get("usageNanoCores", 0) / 1e6
        print("%s/%s: %.1f MiB working set, %.1f mCPU" % (pod["podRef"]["name"], c["name"], mem, cpu))
' >&2 || kube_log "(no stats summary from $n)"
done

# ---------------------------------------------------------------------------------------------
kube_step "4. deleting tm-c's agent pod: a new one, the same mesh IP"
agent_pod() { # NODE: the name of the agent pod on NODE
  k -n "$NS" get pods -l app.kubernetes.io/component=agent --field-selector "spec.nodeName=$1" \
    -o jsonpath='{.items[0].metadata.name}'
}
old=$(agent_pod tm-c)
t=$(kube__now_ms)
k -n "$NS" delete pod "$old" --wait=true --timeout 60s >/dev/null
agent_pod_ready() { # NODE OLD_POD
  local p
  p=$(agent_pod "$1") && [[ -n $p && $p != "$2" ]] &&
    [[ $(jp '{.status.conditions[?(@.type=="Ready")].status}' -n "$NS" "pod/$p") == True ]]
}
kube_wait 90 "a new agent pod on tm-c to be Ready" agent_pod_ready tm-c "$old"
kube_wait 60 "tm-a to ping tm-c again" ping_once tm-a "${IP[tm-c]}"
[[ $(jp '{.status.meshIPs[0]}' meshpeer/tm-c) == "${IP[tm-c]}" ]] ||
  kube_fail "tm-c's mesh IP changed after its agent pod was replaced"
kube_log "agent pod $old replaced by $(agent_pod tm-c); tm-c reached again at ${IP[tm-c]} after $(elapsed "$t")"

# ---------------------------------------------------------------------------------------------
kube_step "5. deleting the leading operator pod: the standby takes over"
lease=$RELEASE-tunnelmesh-operator
leader=$(jp '{.spec.holderIdentity}' -n "$NS" "lease/$lease")
[[ -n $leader ]] || kube_fail "no operator holds the Lease $lease"
t=$(kube__now_ms)
k -n "$NS" delete pod "$leader" --wait=false >/dev/null
new_leader() { local h; h=$(jp '{.spec.holderIdentity}' -n "$NS" "lease/$lease"); [[ -n $h && $h != "$1" ]]; }
kube_wait 90 "another operator pod to take the Lease from $leader" new_leader "$leader"
kube_log "Lease $lease: $leader -> $(jp '{.spec.holderIdentity}' -n "$NS" "lease/$lease") after $(elapsed "$t")"
deploy_ready() { [[ $(jp '{.status.readyReplicas}' -n "$NS" deployment/$RELEASE-tunnelmesh-operator) == 2 ]]; }
kube_wait 90 "the operator Deployment to be 2/2 Ready again" deploy_ready
for n in "${NODES[@]}"; do
  kube_wait 60 "MeshPeer $n to be Ready under the new leader" meshpeer_ready "$n"
  [[ $(jp '{.status.meshIPs[0]}' "meshpeer/$n") == "${IP[$n]}" ]] ||
    kube_fail "$n's mesh IP changed with the operator failover"
done
ping_all 60
old=$(agent_pod tm-b)
k -n "$NS" delete pod "$old" --wait=true --timeout 60s >/dev/null
kube_wait 90 "a new agent pod on tm-b to be Ready (registering with the new leader)" agent_pod_ready tm-b "$old"
kube_wait 60 "tm-c to ping tm-b again" ping_once tm-c "${IP[tm-b]}"
kube_log "failover done: no mesh IP changed, a restarted agent registered with the new leader"

# ---------------------------------------------------------------------------------------------
kube_step "6. helm upgrade with a changed value rolls the agent pods"
declare -A before=()
for n in "${NODES[@]}"; do before[$n]=$(agent_pod "$n"); done
t=$(kube__now_ms)
helm upgrade "$RELEASE" "$KUBE_REPO_ROOT/charts/tunnelmesh" "${HELM_ARGS[@]}" --set agent.logLevel=debug \
  --wait --timeout 240s >"$KUBE_WORK/helm-upgrade.log" 2>&1 ||
  { cat "$KUBE_WORK/helm-upgrade.log" >&2; kube_fail "helm upgrade --wait failed"; }
rolled() { # every agent pod new, Ready, with --log-level debug
  local n p
  for n in "${NODES[@]}"; do
    p=$(agent_pod "$n") && [[ $p != "${before[$n]}" ]] || return 1
    [[ $(jp '{.status.conditions[?(@.type=="Ready")].status}' -n "$NS" "pod/$p") == True ]] || return 1
    [[ " $(jp '{.spec.containers[0].command[*]}' -n "$NS" "pod/$p") " == *" --log-level debug "* ]] || return 1
  done
}
kube_wait 120 "every agent pod to be replaced by one with --log-level debug" rolled
ping_all 60
for n in "${NODES[@]}"; do
  [[ $(jp '{.status.meshIPs[0]}' "meshpeer/$n") == "${IP[$n]}" ]] || kube_fail "$n's mesh IP changed with the upgrade"
done
kube_log "helm upgrade rolled all ${#NODES[@]} agent pods in $(elapsed "$t"); same mesh IPs, pings pass"

# ---------------------------------------------------------------------------------------------
kube_step "7. helm uninstall leaves nothing on the nodes"
k delete pod -n default web --wait=false >/dev/null
t=$(kube__now_ms)
helm uninstall "$RELEASE" --namespace "$NS" --wait --timeout 120s >"$KUBE_WORK/helm-uninstall.log" 2>&1 ||
  { cat "$KUBE_WORK/helm-uninstall.log" >&2; kube_fail "helm uninstall failed"; }
no_agent_pods() { [[ -z $(k -n "$NS" get pods -o name) ]]; }
kube_wait 90 "the release's pods to be gone" no_agent_pods
# The pre-delete hook deleted the Mesh while the operator ran: no Mesh left Terminating, and the
# operator removed its members.
[[ -z $(k get meshes -o name) ]] || kube_fail "the Mesh is still there after helm uninstall: $(k get meshes -o wide 2>&1)"
[[ -z $(k get meshpeers -o name) ]] || kube_fail "MeshPeers are still there after helm uninstall: $(k get meshpeers 2>&1)"
node_clean() { # NODE: no tm0, no route through it, no agent process in the node's namespace
  local n=$1 pid
  nodes_exec "$n" ip link show tm0 >/dev/null 2>&1 && { echo "$n: tm0 is still there"; return 1; }
  [[ -z $(nodes_exec "$n" ip route show dev tm0 2>/dev/null) ]] || { echo "$n: routes via tm0"; return 1; }
  # (the kernel keeps 15 characters of a process name)
  for pid in $(pgrep -x tunnelmesh-agen || true); do
    [[ $(stat -L -c %i "/proc/$pid/ns/net") == $(stat -L -c %i "/run/netns/$(nodes__netns "$n")") ]] &&
      { echo "$n: agent pid $pid still runs"; return 1; }
  done
  return 0
}
for n in "${NODES[@]}"; do kube_wait 30 "$n to be clean" node_clean "$n"; done
for n in "${NODES[@]}"; do
  rules=$(nodes_exec "$n" nft list ruleset | grep -ci tunnelmesh || true)
  [[ $rules == 0 ]] || kube_fail "$n: $rules nftables lines mention tunnelmesh after the uninstall"
done
kube_log "uninstalled in $(elapsed "$t"): no tm0, route, nftables rule or agent process on any node"
