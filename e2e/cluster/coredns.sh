#!/usr/bin/env bash
# coredns.sh: the chart's dns.configureCoreDNS against a real kube-apiserver. A kubeadm-like
# ConfigMap kube-system/coredns exists; `helm install --set dns.configureCoreDNS=true` and the
# operator, run with exactly the command line, environment and ServiceAccount of the chart's
# Deployment (pod_launcher.py plays the kubelet, in a network namespace of its own), must:
#   - append the marked server block forwarding "mesh" and 99.10.in-addr.arpa to the Service's
#     ClusterIP port 53 (the Corefile compared byte for byte), with the keys NOTES.txt prints;
#   - add a second block for a Mesh with another domain, and follow a change of that domain;
#   - keep hand edits made outside the markers, byte for byte;
#   - at `helm uninstall`, the pre-delete hook Job (run here by pod_launcher.py, since there is no
#     kubelet; the test then marks the Job Complete through its status subresource, which is what
#     helm v4 waits for) removes the block, leaving the hand edits.
# Then with dns.configureCoreDNS=false: no Role in kube-system, no hook, the ConfigMap untouched by
# a running operator, and NOTES.txt prints the stanza (with the ClusterIP once the Service exists).
#
# Usage: coredns.sh [OPERATOR_PATH]   (default $TM_OPERATOR, else next to $TM_AGENT, else build/)
# shellcheck source=kube.sh
source "$(dirname "${BASH_SOURCE[0]}")/kube.sh"
kube_init coredns 600

HERE=$KUBE_LIB_DIR
CHART=$KUBE_REPO_ROOT/charts/tunnelmesh
NS=tunnelmesh
REL=tunnelmesh
OPERATOR=${1:-${TM_OPERATOR:-${TM_AGENT:+$(dirname "$TM_AGENT")/tunnelmesh-operator}}}
OPERATOR=${OPERATOR:-$KUBE_REPO_ROOT/build/bin/tunnelmesh-operator}
[[ -x "$OPERATOR" ]] || kube_fail "operator binary '$OPERATOR' does not exist (build it, or set TM_OPERATOR)"
[[ "$(helm version --short 2>/dev/null)" == v4.* ]] ||
  kube_fail "helm v4 is not installed (run scripts/install-deps.sh or scripts/get-kube-tools.sh)"
command -v ip >/dev/null || kube_fail "iproute2 is not installed"

# The operator's "pod": a network namespace reaching the API server over a veth, as a pod reaches
# the kubernetes Service, so that its listeners cannot collide with anything on the host.
PODNS=tmcdns$$
API_ADDR=10.252.0.1
OP_PID=""
OP_LOG=""
coredns__cleanup() {
  if [[ -n "$OP_PID" ]]; then kube__stop "$OP_PID"; fi
  ip netns del "$PODNS" 2>/dev/null # its veth end goes with it, and the pair with that
  ip link del "tmcdh$$" 2>/dev/null
  if [[ -f "$OP_LOG" && "${1:-0}" != 0 ]]; then
    echo "-------- $(basename "$OP_LOG") (last 60 lines)" >&2
    tail -n 60 "$OP_LOG" >&2
  fi
  return 0
}
# kube.sh's EXIT trap stops the API server; the pod goes first, with its log on failure. Errexit
# is off in here, so that a failed cleanup step cannot end the trap before kube__on_exit, which
# reads the exit status from $?.
trap 'rc=$?; set +eE; trap - ERR; coredns__cleanup "$rc"; (exit "$rc"); kube__on_exit' EXIT
ip netns add "$PODNS"
kube_link_namespace "$PODNS" "tmcdh$$" "tmcdc$$" "$API_ADDR" 10.252.0.2
ip -n "$PODNS" link set lo up

k() { kube_kubectl "$@"; }
helm_quiet() { helm "$@" 2> >(grep -v 'found symbolic link in path' >&2 || true); }

# region CLUSTER_IP KEYS...: the marked region the operator writes, one block per KEYS line.
region() {
  local ip=$1 keys
  shift
  printf '# BEGIN tunnelmesh release %s: managed by tunnelmesh-operator (dns.configureCoreDNS), edits between these lines are replaced\n' "$NS/$REL"
  for keys in "$@"; do
    printf '%s {\n    errors\n    cache 5\n    forward . %s:53\n}\n' "$keys" "$ip"
  done
  printf '# END tunnelmesh release %s\n' "$NS/$REL"
}

# corefile_is FILE: the ConfigMap's Corefile is FILE's content, byte for byte.
corefile_is() {
  k -n kube-system get configmap coredns -o json >"$KUBE_WORK/coredns.json" || return 1
  python3 - "$KUBE_WORK/coredns.json" "$1" <<'EOF'
import json, sys
got = json.load(open(sys.argv[1]))["data"].get("Corefile")
want = open(sys.argv[2]).read()
if got != want:
    print("Corefile is:\n" + repr(got) + "\nwant:\n" + repr(want))
    sys.exit(1)
EOF
}

# pod_run KIND/NAME CONTAINER ID: the script pod_launcher.py makes of that workload's container.
SA_DIR=$KUBE_WORK/sa
pod_script() {
  k -n "$NS" get "$1" -o json |
    python3 "$HERE/pod_launcher.py" --container "$2" \
      --field "metadata.namespace=$NS" --field "metadata.name=$REL-$3" \
      --field "status.podIP=10.252.0.2" \
      --env "KUBERNETES_SERVICE_HOST=$API_ADDR" --env "KUBERNETES_SERVICE_PORT=$KUBE_PORT" \
      --serviceaccount "$SA_DIR" --binary "/usr/bin/tunnelmesh-operator=$OPERATOR" \
      >"$KUBE_WORK/$3.sh"
}

# operator_start ID: the Deployment's pod, in the background, once its ServiceAccount exists; its
# log is operator-ID.log.
operator_start() {
  kube_placeholder_pod "$NS" "$REL-operator" "$REL-operator"
  mkdir -p "$SA_DIR"
  k -n "$NS" create token "$REL-operator" --duration 1h >"$SA_DIR/token"
  cp "$KUBE_WORK/certs/apiserver.crt" "$SA_DIR/ca.crt"
  echo "$NS" >"$SA_DIR/namespace"
  pod_script deployment/$REL-operator operator operator
  OP_LOG=$KUBE_WORK/operator-$1.log
  ip netns exec "$PODNS" sh "$KUBE_WORK/operator.sh" >"$OP_LOG" 2>&1 &
  OP_PID=$!
  kube_log "operator started (pid $OP_PID): $(tail -n 1 "$KUBE_WORK/operator.sh" | cut -c1-500)"
  kube_wait 30 "the operator to serve" grep -q 'coordinator ready' "$OP_LOG"
}
operator_stop() { # SIGTERM, as the kubelet does when helm deletes the Deployment: exits 0
  kill -TERM "$OP_PID"
  local rc=0
  wait "$OP_PID" || rc=$?
  OP_PID=""
  (( rc == 0 )) || kube_fail "the operator exited with $rc on SIGTERM"
}

# job_complete JOB: what the Job controller would write; helm v4 waits for condition Complete=True.
job_complete() {
  local now
  now=$(date -u +%Y-%m-%dT%H:%M:%SZ)
  k -n "$NS" patch job "$1" --subresource=status --type=merge -p "{\"status\":{\"startTime\":\"$now\",\"completionTime\":\"$now\",\"succeeded\":1,\"conditions\":[{\"type\":\"Complete\",\"status\":\"True\",\"lastProbeTime\":\"$now\",\"lastTransitionTime\":\"$now\"}]}}" >/dev/null
}
# mesh_hook_run: the chart's other pre-delete hook, mesh-cleanup (`delete-mesh default`), run as
# the kubelet would while the operator still runs; the operator removes the Mesh's finalizer.
mesh_hook_run() {
  local job=$REL-mesh-cleanup
  kube_wait 30 "helm to create the hook Job $job" k -n "$NS" get job "$job"
  pod_script "job/$job" mesh-cleanup mesh-cleanup
  ip netns exec "$PODNS" sh "$KUBE_WORK/mesh-cleanup.sh" >"$KUBE_WORK/mesh-cleanup.log" 2>&1 ||
    kube_fail "the mesh-cleanup hook's container failed:"$'\n'"$(cat "$KUBE_WORK/mesh-cleanup.log")"
  kube_log "mesh-cleanup hook: $(tr '\n' ' ' <"$KUBE_WORK/mesh-cleanup.log" | cut -c1-300)"
  job_complete "$job"
}

kube_step "NOTES.txt and the operator write the same server block keys"
notes=$(helm_quiet install "$REL" "$CHART" -n "$NS" --dry-run=client 2>&1) ||
  kube_fail "helm install --dry-run failed:"$'\n'"$notes"
grep -qx '    mesh:53 99.10.in-addr.arpa:53 {' <<<"$notes" ||
  kube_fail "NOTES.txt does not print the stanza for mesh and 99.10.in-addr.arpa:"$'\n'"$notes"

# shellcheck disable=SC2034 # read by kube_up
KUBE_APISERVER_EXTRA_ARGS="--bind-address 0.0.0.0 --advertise-address $API_ADDR"
kube_up

kube_step "a kubeadm-like ConfigMap kube-system/coredns"
kube_wait 30 "namespace kube-system" k get namespace kube-system
cat >"$KUBE_WORK/Corefile" <<'EOF'
.:53 {
    errors
    health {
       lameduck 5s
    }
    ready
    kubernetes cluster.local in-addr.arpa ip6.arpa {
       pods insecure
       fallthrough in-addr.arpa ip6.arpa
       ttl 30
    }
    prometheus :9153
    forward . /etc/resolv.conf {
       max_concurrent 1000
    }
    cache 30
    loop
    reload
    loadbalance
}
EOF
k -n kube-system create configmap coredns --from-file=Corefile="$KUBE_WORK/Corefile" >/dev/null

kube_step "helm install --set dns.configureCoreDNS=true"
out=$(helm_quiet install "$REL" "$CHART" -n "$NS" --create-namespace --set dns.configureCoreDNS=true \
  --timeout 120s 2>&1) || kube_fail "helm install failed:"$'\n'"$out"
grep -q '# BEGIN tunnelmesh release tunnelmesh/tunnelmesh' <<<"$out" ||
  kube_fail "NOTES.txt does not name the marker lines:"$'\n'"$out"
role=$REL-operator-$NS-coredns
k -n kube-system get role "$role" >/dev/null || kube_fail "no Role $role in kube-system"
got=$(k -n "$NS" get service "$REL" -o jsonpath='{range .spec.ports[*]}{.name}/{.port}/{.protocol}/{.targetPort} {end}')
[[ "$got" == *"dns-udp/53/UDP/dns-udp dns-tcp/53/TCP/dns-tcp "* ]] ||
  kube_fail "Service $REL has no DNS ports: $got"
CLUSTER_IP=$(k -n "$NS" get service "$REL" -o jsonpath='{.spec.clusterIP}')
[[ -n "$CLUSTER_IP" ]] || kube_fail "Service $REL has no ClusterIP"

kube_step "the operator appends the marked block forwarding to $CLUSTER_IP:53"
start=$(kube__now_ms)
operator_start 1
{ cat "$KUBE_WORK/Corefile"; region "$CLUSTER_IP" "mesh:53 99.10.in-addr.arpa:53"; } >"$KUBE_WORK/want1"
kube_wait 20 "the block for mesh in the Corefile" corefile_is "$KUBE_WORK/want1"
kube_log "the block was there $(( $(kube__now_ms) - start )) ms after the operator started"

kube_step "a Mesh with another domain gets a second block"
start=$(kube__now_ms)
k apply -f - >/dev/null <<EOF
apiVersion: tunnelmesh.io/v1alpha1
kind: Mesh
metadata: {name: corp}
spec:
  ipv4CIDR: 10.98.0.0/16
  domain: corp.example
  joinTokenSecretRef: {namespace: $NS, name: $REL-join-token, key: token}
EOF
{ cat "$KUBE_WORK/Corefile"
  region "$CLUSTER_IP" "corp.example:53 98.10.in-addr.arpa:53" "mesh:53 99.10.in-addr.arpa:53"
} >"$KUBE_WORK/want2"
kube_wait 10 "a second block for corp.example" corefile_is "$KUBE_WORK/want2"
kube_log "the second block was there $(( $(kube__now_ms) - start )) ms after kubectl apply"

kube_step "hand edits outside the markers are kept byte for byte"
# A comment on top and a block of one's own after ours, saved with kubectl replace (which carries
# the resourceVersion it read).
k -n kube-system get configmap coredns -o json | python3 -c '
import json, sys
cm = json.load(sys.stdin)
cm["data"]["Corefile"] = "# edited by hand\n" + cm["data"]["Corefile"] + "example.org:53 {\n    whoami\n}\n"
json.dump(cm, sys.stdout)' | k replace -f - >/dev/null
k patch mesh corp --type merge -p '{"spec":{"domain":"corp2.example"}}' >/dev/null
{ echo "# edited by hand"; cat "$KUBE_WORK/Corefile"
  region "$CLUSTER_IP" "corp2.example:53 98.10.in-addr.arpa:53" "mesh:53 99.10.in-addr.arpa:53"
  printf 'example.org:53 {\n    whoami\n}\n'
} >"$KUBE_WORK/want3"
kube_wait 10 "the block to follow corp's new domain, the hand edits kept" corefile_is "$KUBE_WORK/want3"

kube_step "helm uninstall: the pre-delete hook Job removes the block"
helm_quiet uninstall "$REL" -n "$NS" --timeout 120s >"$KUBE_WORK/uninstall.out" 2>&1 &
uninstall_pid=$!
JOB=$REL-coredns-cleanup
kube_wait 30 "helm to create the hook Job $JOB" k -n "$NS" get job "$JOB"
# Everything of the release is still there while the hook runs.
k -n "$NS" get deployment "$REL-operator" >/dev/null || kube_fail "the Deployment went before the hook ran"
pod_script "job/$JOB" coredns-cleanup cleanup
grep -q -- ' coredns --remove ' "$KUBE_WORK/cleanup.sh" ||
  kube_fail "the hook Job does not run 'coredns --remove': $(tail -n 1 "$KUBE_WORK/cleanup.sh")"
ip netns exec "$PODNS" sh "$KUBE_WORK/cleanup.sh" >"$KUBE_WORK/cleanup.log" 2>&1 ||
  kube_fail "the hook's container failed:"$'\n'"$(cat "$KUBE_WORK/cleanup.log")"
kube_log "hook container: $(tr '\n' ' ' <"$KUBE_WORK/cleanup.log" | cut -c1-400)"
{ echo "# edited by hand"; cat "$KUBE_WORK/Corefile"; printf 'example.org:53 {\n    whoami\n}\n'; } \
  >"$KUBE_WORK/want4"
corefile_is "$KUBE_WORK/want4" || kube_fail "the hook did not remove exactly the marked block"
got=$(k -n "$NS" get service "$REL" -o "jsonpath={.metadata.annotations.tunnelmesh\.io/coredns-removal}")
[[ -n "$got" ]] || kube_fail "the hook did not annotate Service $REL with tunnelmesh.io/coredns-removal"
# The operator runs until helm deletes the Deployment: at its next look (every 10 s) it sees the
# annotation and keeps the block out.
kube_wait 15 "the operator to see the removal request" \
  grep -q 'CoreDNSRemovalRequested' "$OP_LOG"
corefile_is "$KUBE_WORK/want4" || kube_fail "the operator put the block back during the uninstall"
job_complete "$JOB"
mesh_hook_run
wait "$uninstall_pid" || kube_fail "helm uninstall failed:"$'\n'"$(cat "$KUBE_WORK/uninstall.out")"
k -n "$NS" get job "$JOB" >/dev/null 2>&1 && kube_fail "the hook Job was not deleted after it succeeded (hook-delete-policy)"
k -n kube-system get role "$role" >/dev/null 2>&1 && kube_fail "Role $role outlived the release"
# Helm deleted the Deployment: a kubelet would stop the pod now.
operator_stop
corefile_is "$KUBE_WORK/want4" || kube_fail "the block came back after the hook"
k get mesh default >/dev/null 2>&1 && kube_fail "Mesh default outlived the uninstall (the mesh-cleanup hook deletes it)"

kube_step "dns.configureCoreDNS=false: NOTES print the stanza, the ConfigMap is left alone"
rv=$(k -n kube-system get configmap coredns -o jsonpath='{.metadata.resourceVersion}')
kube_wait 30 "Mesh default to be gone" bash -c "! kubectl --kubeconfig $KUBECONFIG_FILE get mesh default"
out=$(helm_quiet install "$REL" "$CHART" -n "$NS" --timeout 120s 2>&1) ||
  kube_fail "helm install (configureCoreDNS=false) failed:"$'\n'"$out"
if ! grep -q 'forward . CLUSTER_IP:53' <<<"$out" ||
  ! grep -q "get service $REL -o jsonpath='{.spec.clusterIP}'" <<<"$out"; then
  kube_fail "NOTES.txt of a first install does not say how to find the ClusterIP:"$'\n'"$out"
fi
left=$(k get roles,rolebindings -n kube-system -l app.kubernetes.io/instance=$REL -o name)
[[ -z "$left" ]] || kube_fail "with dns.configureCoreDNS=false the chart created in kube-system: $left"
k -n "$NS" get job "$JOB" >/dev/null 2>&1 && kube_fail "a hook Job exists with dns.configureCoreDNS=false"
CLUSTER_IP=$(k -n "$NS" get service "$REL" -o jsonpath='{.spec.clusterIP}')
out=$(helm_quiet upgrade "$REL" "$CHART" -n "$NS" --reuse-values --timeout 120s 2>&1) ||
  kube_fail "helm upgrade failed:"$'\n'"$out"
grep -qx "        forward . $CLUSTER_IP:53" <<<"$out" ||
  kube_fail "NOTES.txt after an upgrade does not print the Service's ClusterIP $CLUSTER_IP:"$'\n'"$out"
operator_start 2
# With --configure-coredns the first write comes before the operator serves; give it a margin.
sleep 2
[[ "$(k -n kube-system get configmap coredns -o jsonpath='{.metadata.resourceVersion}')" == "$rv" ]] ||
  kube_fail "the operator changed ConfigMap kube-system/coredns with dns.configureCoreDNS=false"
grep -q 'CoreDNS' "$OP_LOG" &&
  kube_fail "the operator mentions CoreDNS with dns.configureCoreDNS=false: $(grep CoreDNS "$OP_LOG")"
helm_quiet uninstall "$REL" -n "$NS" --timeout 60s >"$KUBE_WORK/uninstall2.out" 2>&1 &
uninstall_pid=$!
mesh_hook_run
wait "$uninstall_pid" || kube_fail "helm uninstall failed:"$'\n'"$(cat "$KUBE_WORK/uninstall2.out")"
operator_stop
corefile_is "$KUBE_WORK/want4" || kube_fail "ConfigMap kube-system/coredns changed"
