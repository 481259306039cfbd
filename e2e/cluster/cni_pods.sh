#!/usr/bin/env bash
# cni_pods.sh: pods as mesh members on a real three-node cluster (nodes.sh: kubelet and containerd
# call the CNI plugin chain of each node; tm-c is behind a NAT). Steps:
#   1. `helm install --set cni.enabled=true`: each node's cni-installer puts tunnelmesh-cni into
#      its /opt/cni/bin and appends it to its conflist (after bridge and portmap).
#   2. Namespace shop opts in (annotation tunnelmesh.io/mesh). A web pod on tm-c (behind the NAT)
#      and two pods on tm-a: "client" (role=client) and "intruder" (role=other). A PeerPolicy
#      allows role=client to app=web on TCP 8080. Each pod has its own MeshPeer
#      (<pod>.shop.pod, kind Pod) with a mesh IP and its pod's labels, and an interface mesh0.
#   3. The client resolves web.shop.pod.mesh through the operator's DNS and fetches the page; the
#      intruder, on the same node, resolves the name too but tm-c's filter drops its packets. A pod
#      outside the opted-in namespace gets no mesh interface and no MeshPeer.
#   4. Deleting tm-c's agent pod: the new agent takes its attachments from disk; the web pod keeps
#      its mesh IP and the client reaches it again.
#   5. Deleting the web pod: its MeshPeer goes and no host-side veth is left on tm-c.
#   6. `helm uninstall`: the plugin leaves every node's conflist and /opt/cni/bin.
set -Eeuo pipefail
shopt -s inherit_errexit

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=e2e/cluster/kube.sh
source "$HERE/kube.sh"
# shellcheck source=e2e/cluster/nodes.sh
source "$HERE/nodes.sh"

kube_init cni_pods "${TM_CNI_PODS_BUDGET:-1200}"
for tool in helm python3; do
  command -v "$tool" >/dev/null || kube_fail "required tool '$tool' is not installed (run scripts/install-deps.sh)"
done
agent=${TM_AGENT:-$KUBE_REPO_ROOT/build/bin/tunnelmesh-agent}
build_dir=$(dirname "$(dirname "$agent")")
for b in tunnelmesh-agent tunnelmesh-operator tunnelmesh-cni; do
  [[ -x $build_dir/bin/$b ]] || kube_fail "$build_dir/bin/$b is missing: build it (ninja -C $build_dir $b)"
done

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
bash "$KUBE_REPO_ROOT/scripts/build-image.sh" "$KUBE_WORK/images/tunnelmesh.tar" "$build_dir" >&2
IMAGE=$(python3 -c 'import json, sys; print(json.load(sys.stdin)[0]["RepoTags"][0])' \
  < <(tar -xOf "$KUBE_WORK/images/tunnelmesh.tar" manifest.json))
nodes_import "$KUBE_WORK/images/tunnelmesh.tar"

# ---------------------------------------------------------------------------------------------
kube_step "1. helm install with cni.enabled: the plugin joins every node's chain"
HELM_ARGS=(
  --namespace "$NS"
  --set "image.repository=${IMAGE%:*}" --set "image.tag=${IMAGE##*:}" --set image.pullPolicy=Never
  --set "operator.nodeSelector.tunnelmesh\.test/site=main"
  --set "service.clusterIP=$SVC_IP" --set "agent.coordinator=$SVC_IP:7700"
  --set mesh.name=cluster --set cni.enabled=true
)
t=$(kube__now_ms)
helm install "$RELEASE" "$KUBE_REPO_ROOT/charts/tunnelmesh" --create-namespace "${HELM_ARGS[@]}" \
  --wait --timeout 240s >"$KUBE_WORK/helm-install.log" 2>&1 ||
  { cat "$KUBE_WORK/helm-install.log" >&2; kube_fail "helm install --wait failed"; }
kube_log "helm install --wait returned after $(elapsed "$t")"
chained() { # NODE: the plugin is the last of the chain and in the node's bin folder
  python3 - "$NODES_DIR/$1/net.d/10-tmk8s.conflist" <<'EOF' && [[ -x $NODES_DIR/$1/cni-bin/tunnelmesh-cni ]]
import json, sys
plugins = json.load(open(sys.argv[1]))["plugins"]
sys.exit(0 if [p["type"] for p in plugins] == ["bridge", "portmap", "tunnelmesh-cni"] else 1)
EOF
}
for n in "${NODES[@]}"; do kube_wait 30 "tunnelmesh-cni in $n's plugin chain" chained "$n"; done
kube_log "chain on tm-a: $(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["plugins"][-1])' "$NODES_DIR/tm-a/net.d/10-tmk8s.conflist")"

# ---------------------------------------------------------------------------------------------
kube_step "2. opted-in pods on two nodes become members of their own"
# (busybox: its nslookup asks the operator's DNS Service directly, since this cluster has no
# CoreDNS; "|| exit 1" keeps sh from exec'ing the last command as PID 1.)
FETCH='for i in $(seq 40); do
  ip=$(nslookup web.shop.pod.mesh '$SVC_IP' 2>/dev/null | awk "/^Address/ && !/#|:53/ {a=\$NF} END {print a}")
  if [ -n "$ip" ] && timeout 4 wget -q -O - http://$ip:8080/; then exit 0; fi
  sleep 1
done
echo "resolved web.shop.pod.mesh to [$ip]; no page"; exit 1'
k apply -f - >/dev/null <<EOF
apiVersion: v1
kind: Namespace
metadata:
  name: shop
  labels: {team: shop}
  annotations: {tunnelmesh.io/mesh: cluster}
---
apiVersion: tunnelmesh.io/v1alpha1
kind: PeerPolicy
metadata: {name: clients-to-web}
spec:
  mesh: cluster
  action: Allow
  from: [{namespaceSelector: {matchLabels: {team: shop}}, podSelector: {matchLabels: {role: client}}}]
  to: [{podSelector: {matchLabels: {app: web}}}]
  ports: [{protocol: TCP, port: 8080}]
EOF
pod_yaml() { # NAME NAMESPACE NODE LABELS(json) RESTART COMMAND
  cat <<EOF
apiVersion: v1
kind: Pod
metadata: {name: $1, namespace: $2, labels: $4}
spec:
  nodeName: $3
  restartPolicy: $5
  automountServiceAccountToken: false
  terminationGracePeriodSeconds: 1
  containers:
  - name: main
    image: $NODES_BUSYBOX_IMAGE
    imagePullPolicy: Never
    command: [/bin/sh, -c, $(python3 -c 'import json,sys; print(json.dumps(sys.argv[1]))' "$6")]
EOF
}
pod_yaml web shop tm-c '{app: web}' Always \
  'mkdir -p /tmp/www && echo hello from web >/tmp/www/index.html && exec httpd -f -p 8080 -h /tmp/www' |
  k apply -f - >/dev/null
pod_yaml plain default tm-a '{app: plain}' Never 'ip -o link; ip route' | k apply -f - >/dev/null
pod_phase_is() { [[ $(jp '{.status.phase}' -n "$1" "pod/$2") == "$3" ]]; }
kube_wait 60 "the web pod on tm-c to run" pod_phase_is shop web Running
member_ready() { # MESHPEER: kind Pod, a mesh IP, Ready
  local got
  got=$(jp '{.spec.kind} {.status.meshIPs[0]} {.status.conditions[?(@.type=="Ready")].status}' "meshpeer/$1")
  echo "meshpeer $1: $got"
  [[ $got =~ ^Pod\ [0-9.]+\ True$ ]]
}
kube_wait 30 "MeshPeer web.shop.pod" member_ready web.shop.pod
WEB_IP=$(jp '{.status.meshIPs[0]}' meshpeer/web.shop.pod)
[[ $(jp '{.metadata.labels.app}' meshpeer/web.shop.pod) == web ]] || kube_fail "MeshPeer web.shop.pod lacks the pod's label app=web"
[[ $(jp '{.spec.pod.namespaceLabels.team}' meshpeer/web.shop.pod) == shop ]] || kube_fail "MeshPeer web.shop.pod lacks its namespace's labels"
# (The API server cannot reach tm-c's kubelet behind the NAT, so no `kubectl logs` from there: the
# node's routing table shows the pod's address routed into its veth.)
route=$(nodes_exec tm-c ip -o route get "$WEB_IP")
[[ $route =~ dev\ tmp[0-9a-f]{12} ]] || kube_fail "tm-c does not route $WEB_IP into a pod veth: $route"
kube_log "web.shop.pod (tm-c, behind the NAT) has mesh IP $WEB_IP, routed on tm-c as: $route"

t=$(kube__now_ms)
pod_yaml client shop tm-a '{role: client}' Never "$FETCH" | k apply -f - >/dev/null
pod_done() { local p; p=$(jp '{.status.phase}' -n "$1" "pod/$2"); [[ $p == Succeeded || $p == Failed ]]; }
kube_wait 90 "the client pod to finish" pod_done shop client
[[ $(jp '{.status.phase}' -n shop pod/client) == Succeeded ]] ||
  kube_fail "the client pod on tm-a could not fetch from web.shop.pod.mesh: $(k logs -n shop client 2>&1 | tail -n 3)"
[[ $(k logs -n shop client) == "hello from web" ]] || kube_fail "the client got '$(k logs -n shop client)'"
kube_log "client.shop.pod on tm-a fetched 'hello from web' by name from tm-c in $(elapsed "$t") (pod created to page)"
# Its sandbox stopped when it finished: the runtime's DEL detached it.
member_gone() { [[ -z $(k get meshpeer "$1" -o name 2>/dev/null) ]]; }
kube_wait 60 "MeshPeer client.shop.pod to go after the pod finished" member_gone client.shop.pod

pod_yaml intruder shop tm-a '{role: other}' Never \
  "$(sed 's/seq 40/seq 3/' <<<"$FETCH")" | k apply -f - >/dev/null
kube_wait 90 "the intruder pod to finish" pod_done shop intruder
[[ $(jp '{.status.phase}' -n shop pod/intruder) == Failed ]] ||
  kube_fail "the intruder pod (role=other) fetched from web although no PeerPolicy allows it"
k logs -n shop intruder | grep -q "resolved web.shop.pod.mesh to \[$WEB_IP\]" ||
  kube_fail "the intruder did not resolve the name (so the denial proves nothing): $(k logs -n shop intruder 2>&1 | tail -n 2)"
kube_log "intruder.shop.pod on the same node resolved web.shop.pod.mesh to $WEB_IP and was dropped by tm-c's filter"

kube_wait 60 "the plain pod to finish" pod_done default plain
if k logs -n default plain | grep -q mesh0; then kube_fail "a pod outside the opted-in namespace got a mesh interface"; fi
[[ -z $(k get meshpeer plain.default.pod -o name 2>/dev/null) ]] || kube_fail "a pod that did not opt in became a member"
kube_log "the pod in namespace default (no annotation) has no mesh0 and no MeshPeer"

# ---------------------------------------------------------------------------------------------
kube_step "4. tm-c's agent restarts: the web pod keeps its address and stays reachable"
agent_pod() {
  k -n "$NS" get pods -l app.kubernetes.io/component=agent --field-selector "spec.nodeName=$1" \
    -o jsonpath='{.items[0].metadata.name}'
}
old=$(agent_pod tm-c)
k -n "$NS" delete pod "$old" --wait=true --timeout 60s >/dev/null
agent_pod_ready() {
  local p
  p=$(agent_pod "$1") && [[ -n $p && $p != "$2" ]] &&
    [[ $(jp '{.status.conditions[?(@.type=="Ready")].status}' -n "$NS" "pod/$p") == True ]]
}
kube_wait 90 "a new agent pod on tm-c to be Ready" agent_pod_ready tm-c "$old"
k delete pod -n shop client --wait=true >/dev/null
pod_yaml client shop tm-a '{role: client}' Never "$FETCH" | k apply -f - >/dev/null
kube_wait 90 "the client pod to finish again" pod_done shop client
[[ $(jp '{.status.phase}' -n shop pod/client) == Succeeded ]] ||
  kube_fail "after tm-c's agent restarted the client could not fetch: $(k logs -n shop client 2>&1 | tail -n 3)"
[[ $(jp '{.status.meshIPs[0]}' meshpeer/web.shop.pod) == "$WEB_IP" ]] || kube_fail "the web pod's mesh IP changed with its agent's restart"
kube_log "after tm-c's agent restarted, web.shop.pod kept $WEB_IP and the client fetched again"

# ---------------------------------------------------------------------------------------------
kube_step "5. deleting the web pod removes its member and its veth"
k delete pod -n shop web --wait=true --timeout 60s >/dev/null
kube_wait 30 "MeshPeer web.shop.pod to go" member_gone web.shop.pod
no_veth() { [[ -z $(nodes_exec tm-c ip -o link show | grep -E ': tmp[0-9a-f]{12}' || true) ]]; }
kube_wait 30 "tm-c to have no pod veth left" no_veth
kube_log "web pod deleted: no MeshPeer, no veth on tm-c"

# ---------------------------------------------------------------------------------------------
kube_step "6. helm uninstall takes the plugin out of every node"
k delete pod -n shop --all --wait=false >/dev/null
helm uninstall "$RELEASE" --namespace "$NS" --wait --timeout 120s >"$KUBE_WORK/helm-uninstall.log" 2>&1 ||
  { cat "$KUBE_WORK/helm-uninstall.log" >&2; kube_fail "helm uninstall failed"; }
unchained() {
  ! grep -q tunnelmesh-cni "$NODES_DIR/$1/net.d/10-tmk8s.conflist" && [[ ! -e $NODES_DIR/$1/cni-bin/tunnelmesh-cni ]]
}
for n in "${NODES[@]}"; do kube_wait 60 "$n's CNI folders to be as before" unchained "$n"; done
kube_log "uninstalled: no node's chain or bin folder holds tunnelmesh-cni"
