# shellcheck shell=bash
# nodes.sh: real Kubernetes nodes for a kube.sh control plane: kube-controller-manager and
# kube-scheduler, and per node its own network namespace with containerd (Debian's, with runc and
# the standard CNI plugins), a kubelet and a kube-proxy. Pods run for real: containerd pulls
# nothing (there is no registry); images are imported from docker-archive tarballs.
#
# A test script sources kube.sh and then this file, and calls:
#   kube_init NAME BUDGET; nodes_init; kube_up; nodes_up
# then works with kube_kubectl, nodes_import IMAGE.tar (into every node's containerd) and
# nodes_exec NODE CMD... (a command in a node's network namespace). The EXIT trap of kube.sh stops
# the nodes (kube_before_down) before the control plane and prints their logs on failure.
#
# Topology (all addresses private to the test; one cluster test runs at a time):
#   host: bridge tmk8s0 10.250.0.1/24; etcd on 127.0.0.1, kube-apiserver on 10.250.0.1, the
#         controller manager and the scheduler.
#   tm-a  10.250.0.11 on the bridge, pods 10.244.1.0/24
#   tm-b  10.250.0.12 on the bridge, pods 10.244.2.0/24
#   tm-c  192.168.77.2 behind a NAT router (namespace tmk8s-nat: 10.250.0.13 on the bridge,
#         masquerade with nftables), pods 10.244.3.0/24: a node in another cloud. Nothing reaches
#         it from outside unless it spoke first (its pods are not routable from the others, and the
#         API server cannot reach its kubelet: `kubectl logs` does not work there, its logs are in
#         the node's folder).
# Nodes tm-a and tm-b carry the label tunnelmesh.test/site=main, tm-c carries site=remote.
#
# Each node's containerd and kubelet run in a mount namespace of their own (unshare) in which the
# node's folder is bind-mounted over /var/lib/tunnelmesh (the agent's default hostPath state
# folder: three nodes on one host must not share a node key), /var/log/pods and
# /var/log/containers. Pod network namespaces live under containerd's state folder. cgroups: the
# cgroupfs driver, each kubelet under its own cgroup root (/tmk8s-NODE).
#
# The kubelet sets kernel.panic, kernel.panic_on_oops and vm.overcommit_memory on the host: they
# are put back on exit. TM_NODES_KEEP=SECONDS keeps the cluster up that long before the teardown
# (to look around after a failure).

NODES_BRIDGE=tmk8s0
NODES_API_ADDR=10.250.0.1
NODES_NAT_NS=tmk8s-nat
NODES=(tm-a tm-b tm-c)
declare -A NODE_IP=([tm-a]=10.250.0.11 [tm-b]=10.250.0.12 [tm-c]=192.168.77.2)
declare -A NODE_POD_CIDR=([tm-a]=10.244.1.0/24 [tm-b]=10.244.2.0/24 [tm-c]=10.244.3.0/24)
declare -A NODE_SITE=([tm-a]=main [tm-b]=main [tm-c]=remote)
declare -A NODE_RUNNER_PID=() NODE_PROXY_PID=()
NODES_DIR=""
NODES_PKI=""
NODES_CM_PID=""
NODES_SCHED_PID=""
NODES_SYSCTLS=(kernel.panic kernel.panic_on_oops vm.overcommit_memory)
declare -A NODES_SYSCTL_SAVED=()
NODES_MADE_DIRS=()
NODES_PAUSE_IMAGE=k8s.local/pause:1
NODES_BUSYBOX_IMAGE=k8s.local/busybox:1

nodes__netns() { echo "tmk8s-$1"; }

# nodes_init: after kube_init, before kube_up. Checks the tools, builds the host side of the
# network and the cluster's PKI, and points kube_up at them.
nodes_init() {
  local tool p
  for tool in containerd containerd-shim-runc-v2 runc ctr nsenter unshare iptables conntrack nft \
    busybox gcc python3 ip; do
    command -v "$tool" >/dev/null ||
      kube_fail "required tool '$tool' is not installed (run scripts/install-deps.sh)"
  done
  for p in bridge host-local loopback portmap; do
    [[ -x /usr/lib/cni/$p ]] ||
      kube_fail "the CNI plugin /usr/lib/cni/$p is missing (containernetworking-plugins; run scripts/install-deps.sh)"
  done
  [[ -c /dev/net/tun ]] || kube_fail "/dev/net/tun is missing: the agent pods need it"
  ip link show "$NODES_BRIDGE" >/dev/null 2>&1 &&
    kube_fail "$NODES_BRIDGE exists already: another cluster test is running, or one died (ip link del $NODES_BRIDGE)"
  NODES_DIR=$KUBE_WORK/nodes
  NODES_PKI=$KUBE_WORK/pki
  mkdir -p "$NODES_DIR" "$NODES_PKI"
  for p in "${NODES_SYSCTLS[@]}"; do NODES_SYSCTL_SAVED[$p]=$(sysctl -n "$p"); done

  ip link add "$NODES_BRIDGE" type bridge
  ip addr add "$NODES_API_ADDR/24" dev "$NODES_BRIDGE"
  ip link set "$NODES_BRIDGE" up

  # A CA and the API server's serving certificate for every name and address pods use: the
  # kubernetes Service's ClusterIP (10.96.0.1) and names, and the bridge address.
  openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=tmk8s-ca \
    -keyout "$NODES_PKI/ca.key" -out "$NODES_PKI/ca.crt" 2>/dev/null
  openssl req -newkey rsa:2048 -nodes -subj /CN=kube-apiserver \
    -keyout "$NODES_PKI/apiserver.key" -out "$NODES_PKI/apiserver.csr" 2>/dev/null
  printf 'subjectAltName=%s\n' "IP:$NODES_API_ADDR,IP:10.96.0.1,IP:127.0.0.1,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local" \
    >"$NODES_PKI/san.ext"
  openssl x509 -req -in "$NODES_PKI/apiserver.csr" -CA "$NODES_PKI/ca.crt" -CAkey "$NODES_PKI/ca.key" \
    -CAcreateserial -days 2 -extfile "$NODES_PKI/san.ext" -out "$NODES_PKI/apiserver.crt" 2>/dev/null

  local n tokens=""
  for n in "${NODES[@]}"; do
    tokens+="$(nodes__token),system:node:$n,node-$n,\"system:nodes\""$'\n'
  done
  tokens+="$(nodes__token),system:kube-proxy,kube-proxy"
  KUBE_EXTRA_TOKENS=${KUBE_EXTRA_TOKENS:+$KUBE_EXTRA_TOKENS$'\n'}$tokens
  KUBE_BIND_ADDRESS=$NODES_API_ADDR
  KUBE_APISERVER_EXTRA_ARGS="${KUBE_APISERVER_EXTRA_ARGS:-} --tls-cert-file $NODES_PKI/apiserver.crt --tls-private-key-file $NODES_PKI/apiserver.key --client-ca-file $NODES_PKI/ca.crt --kubelet-preferred-address-types InternalIP"
  KUBE_AUTHORIZATION_MODE=Node,RBAC
  kube_binaries
}

nodes__token() { head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n'; }

# nodes__kubeconfig FILE USER: a kubeconfig for the static token of USER, verifying the API server.
nodes__kubeconfig() {
  local file=$1 user=$2 token
  token=$(awk -F, -v u="$user" '$2 == u {print $1; exit}' "$KUBE_WORK/tokens.csv")
  [[ -n $token ]] || kube_fail "no token for $user in $KUBE_WORK/tokens.csv"
  cat >"$file" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: tmk8s
  cluster: {server: "$KUBE_SERVER", certificate-authority: "$NODES_PKI/ca.crt"}
users:
- name: u
  user: {token: "$token"}
contexts:
- name: c
  context: {cluster: tmk8s, user: u}
current-context: c
EOF
  chmod 600 "$file"
}

# nodes_up: after kube_up. The controller manager, the scheduler, the images every node needs
# (pause, busybox), and the nodes, Ready.
nodes_up() {
  local w=$KUBE_WORK n start
  start=$(kube__now_ms)
  nodes__kubeconfig "$w/admin.kubeconfig" admin
  kube_step "starting kube-controller-manager and kube-scheduler"
  "$KUBE_BIN/kube-controller-manager" --kubeconfig "$w/admin.kubeconfig" \
    --authentication-kubeconfig "$w/admin.kubeconfig" --authorization-kubeconfig "$w/admin.kubeconfig" \
    --service-account-private-key-file "$w/sa.key" --root-ca-file "$NODES_PKI/ca.crt" \
    --leader-elect=false --port 0 --secure-port 0 --controllers '*,-nodeipam' \
    --node-monitor-grace-period 20s --pod-eviction-timeout 30s \
    >"$w/controller-manager.log" 2>&1 &
  NODES_CM_PID=$!
  "$KUBE_BIN/kube-scheduler" --kubeconfig "$w/admin.kubeconfig" \
    --authentication-kubeconfig "$w/admin.kubeconfig" --authorization-kubeconfig "$w/admin.kubeconfig" \
    --leader-elect=false --port 0 --secure-port 0 >"$w/scheduler.log" 2>&1 &
  NODES_SCHED_PID=$!

  nodes__build_images
  nodes__nat_router
  for n in "${NODES[@]}"; do nodes__start_node "$n"; done
  for n in "${NODES[@]}"; do
    kube_wait 90 "node $n to be Ready" nodes__node_ready "$n"
    kube_kubectl label node "$n" "tunnelmesh.test/site=${NODE_SITE[$n]}" --overwrite >/dev/null
  done
  kube_log "${#NODES[@]} nodes Ready after $(( ($(kube__now_ms) - start) / 1000 ))s"
}

nodes__node_ready() {
  local n
  kill -0 "$NODES_CM_PID" 2>/dev/null || kube_fail "kube-controller-manager exited (log: $KUBE_WORK/controller-manager.log)"
  kill -0 "$NODES_SCHED_PID" 2>/dev/null || kube_fail "kube-scheduler exited (log: $KUBE_WORK/scheduler.log)"
  for n in "${NODES[@]}"; do
    kill -0 "${NODE_RUNNER_PID[$n]}" 2>/dev/null ||
      kube_fail "node $n's containerd or kubelet exited (logs: $NODES_DIR/$n/*.log)"
    kill -0 "${NODE_PROXY_PID[$n]}" 2>/dev/null || kube_fail "node $n's kube-proxy exited (log: $NODES_DIR/$n/kube-proxy.log)"
  done
  [[ $(kube_kubectl get node "$1" -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}') == True ]]
}

# The pause image (a static program that sleeps until a signal) and a busybox image for test pods
# (busybox-static: sh, wget, httpd, nc, ip), built like the TunnelMesh image.
nodes__build_images() {
  local root=$KUBE_WORK/images
  mkdir -p "$root/pause/usr/bin" "$root/busybox/bin" "$root/busybox/tmp"
  cat >"$root/pause.c" <<'EOF'
#include <signal.h>
#include <unistd.h>
static void quit(int sig) { (void)sig; _exit(0); }
int main(void) {
  signal(SIGINT, quit);
  signal(SIGTERM, quit);
  for (;;) pause();
}
EOF
  gcc -static -O2 -o "$root/pause/usr/bin/pause" "$root/pause.c"
  python3 "$KUBE_REPO_ROOT/scripts/docker-archive.py" "$root/pause" "$root/pause.tar" \
    "$NODES_PAUSE_IMAGE" amd64 0 '{"Cmd": ["/usr/bin/pause"]}' e2e/cluster/nodes.sh >/dev/null
  cp "$(command -v busybox)" "$root/busybox/bin/busybox"
  ln -s busybox "$root/busybox/bin/sh"
  python3 "$KUBE_REPO_ROOT/scripts/docker-archive.py" "$root/busybox" "$root/busybox.tar" \
    "$NODES_BUSYBOX_IMAGE" amd64 0 '{"Cmd": ["/bin/sh"]}' e2e/cluster/nodes.sh >/dev/null
}

# The NAT router of tm-c: one leg on the bridge, one on tm-c's own link, masquerading out of the
# bridge leg, routing to the main site's pod ranges over the bridge.
nodes__nat_router() {
  local nat=$NODES_NAT_NS
  ip netns add "$nat"
  ip link add tmk8s-natup type veth peer name up0 netns "$nat"
  ip link set tmk8s-natup master "$NODES_BRIDGE" up
  ip -n "$nat" addr add 10.250.0.13/24 dev up0
  ip -n "$nat" link set up0 up
  ip -n "$nat" link set lo up
  ip -n "$nat" route add default via "$NODES_API_ADDR"
  ip -n "$nat" route add "${NODE_POD_CIDR[tm-a]}" via "${NODE_IP[tm-a]}"
  ip -n "$nat" route add "${NODE_POD_CIDR[tm-b]}" via "${NODE_IP[tm-b]}"
  ip netns exec "$nat" sysctl -qw net.ipv4.ip_forward=1
  ip netns exec "$nat" nft -f - <<'EOF'
table ip nat {
  chain postrouting {
    type nat hook postrouting priority srcnat; policy accept;
    oifname "up0" masquerade
  }
}
EOF
}

# nodes__start_node NODE: its network namespace and links, containerd, kubelet, kube-proxy.
nodes__start_node() {
  local n=$1 ns dir ip peer
  ns=$(nodes__netns "$n")
  dir=$NODES_DIR/$n
  ip=${NODE_IP[$n]}
  mkdir -p "$dir"/{containerd,run,opt,net.d,cni-bin,kubelet,state,pod-logs,container-logs,cni-data}
  # The node's own CNI folders (seen at /opt/cni/bin and /etc/cni/net.d in its mount namespace, as
  # on a real node, where the chart's CNI installer writes): Debian's plugins linked in.
  local plugin
  for plugin in /usr/lib/cni/*; do ln -sf "$plugin" "$dir/cni-bin/"; done
  chmod 700 "$dir/state"
  ip netns add "$ns"
  ip -n "$ns" link set lo up
  # A test before this one may have left the host end while its namespace was being freed.
  local _
  for _ in $(seq 1 50); do
    ip link show "tmk8s-$n" >/dev/null 2>&1 || break
    ip link del "tmk8s-$n" 2>/dev/null || true
    sleep 0.1
  done
  if [[ ${NODE_SITE[$n]} == remote ]]; then
    ip link add "tmk8s-$n" type veth peer name eth0 netns "$ns"
    ip link set "tmk8s-$n" netns "$NODES_NAT_NS"
    ip -n "$NODES_NAT_NS" addr add 192.168.77.1/24 dev "tmk8s-$n"
    ip -n "$NODES_NAT_NS" link set "tmk8s-$n" up
    ip -n "$ns" addr add "$ip/24" dev eth0
    ip -n "$ns" link set eth0 up
    ip -n "$ns" route add default via 192.168.77.1
  else
    ip link add "tmk8s-$n" type veth peer name eth0 netns "$ns"
    ip link set "tmk8s-$n" master "$NODES_BRIDGE" up
    ip -n "$ns" addr add "$ip/24" dev eth0
    ip -n "$ns" link set eth0 up
    # The API server and the NAT router's public side are on the bridge; the default route points
    # at the host (nothing behind it is used).
    ip -n "$ns" route add default via "$NODES_API_ADDR"
    for peer in "${NODES[@]}"; do
      [[ $peer != "$n" && ${NODE_SITE[$peer]} == main ]] &&
        ip -n "$ns" route add "${NODE_POD_CIDR[$peer]}" via "${NODE_IP[$peer]}"
    done
  fi
  ip netns exec "$ns" sysctl -qw net.ipv4.ip_forward=1

  # The primary CNI network: a bridge with host-local addresses from the node's pod range.
  cat >"$dir/net.d/10-tmk8s.conflist" <<EOF
{"cniVersion": "0.4.0", "name": "tmk8s", "plugins": [
  {"type": "bridge", "bridge": "cni0", "isGateway": true, "ipMasq": true, "hairpinMode": true,
   "ipam": {"type": "host-local", "dataDir": "$dir/cni-data",
            "ranges": [[{"subnet": "${NODE_POD_CIDR[$n]}"}]], "routes": [{"dst": "0.0.0.0/0"}]}},
  {"type": "portmap", "capabilities": {"portMappings": true}}
]}
EOF
  cat >"$dir/containerd.toml" <<EOF
version = 2
root = "$dir/containerd/root"
state = "$dir/containerd/state"
[grpc]
  address = "$dir/run/containerd.sock"
[ttrpc]
  address = "$dir/run/containerd.sock.ttrpc"
[debug]
  address = ""
[metrics]
  address = ""
[plugins."io.containerd.internal.v1.opt"]
  path = "$dir/opt"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "$NODES_PAUSE_IMAGE"
  # This machine lacks CAP_SYS_RESOURCE: without this every pod fails to start.
  restrict_oom_score_adj = true
  disable_apparmor = true
  netns_mounts_under_state_dir = true
  stream_server_address = "127.0.0.1"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/opt/cni/bin"
    conf_dir = "/etc/cni/net.d"
  [plugins."io.containerd.grpc.v1.cri".containerd]
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
EOF
  nodes__kubeconfig "$dir/kubelet.kubeconfig" "system:node:$n"
  nodes__kubeconfig "$dir/proxy.kubeconfig" system:kube-proxy
  cat >"$dir/kubelet.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: "$ip"
port: 10250
readOnlyPort: 0
healthzPort: 0
authentication:
  anonymous: {enabled: true}
  webhook: {enabled: false}
authorization: {mode: AlwaysAllow}
cgroupDriver: cgroupfs
cgroupRoot: /tmk8s-$n
cgroupsPerQOS: true
enforceNodeAllocatable: []
failSwapOn: false
resolvConf: /etc/resolv.conf
evictionHard: {memory.available: "50Mi", nodefs.available: "1%", imagefs.available: "1%"}
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
nodeStatusUpdateFrequency: 4s
syncFrequency: 10s
fileCheckFrequency: 5s
volumePluginDir: "$dir/volume-plugins"
EOF
  nodes__cgroup_root "$n" create

  # The runner: a mount namespace of the node's own, in the node's network namespace; containerd,
  # then the kubelet, both waited for (the runner's exit means one of them died).
  cat >"$dir/run.sh" <<EOF
set -u
mount --bind "$dir/state" /var/lib/tunnelmesh
mount --bind "$dir/cni-bin" /opt/cni/bin
mount --bind "$dir/net.d" /etc/cni/net.d
mount --bind "$dir/pod-logs" /var/log/pods
mount --bind "$dir/container-logs" /var/log/containers
containerd --config "$dir/containerd.toml" >"$dir/containerd.log" 2>&1 &
echo \$! >"$dir/containerd.pid"
for i in \$(seq 100); do [ -S "$dir/run/containerd.sock" ] && break; sleep 0.1; done
ctr -a "$dir/run/containerd.sock" -n k8s.io images import "$KUBE_WORK/images/pause.tar" >"$dir/import.log" 2>&1
ctr -a "$dir/run/containerd.sock" -n k8s.io images import "$KUBE_WORK/images/busybox.tar" >>"$dir/import.log" 2>&1
"$KUBE_BIN/kubelet" --config "$dir/kubelet.yaml" --kubeconfig "$dir/kubelet.kubeconfig" \\
  --container-runtime remote --container-runtime-endpoint "unix://$dir/run/containerd.sock" \\
  --root-dir "$dir/kubelet" --cert-dir "$dir/kubelet/pki" --hostname-override "$n" --node-ip "$ip" \\
  --node-labels "tunnelmesh.test/site=${NODE_SITE[$n]}" --v 1 >"$dir/kubelet.log" 2>&1 &
echo \$! >"$dir/kubelet.pid"
wait -n
EOF
  nodes__host_dir /var/lib/tunnelmesh
  nodes__host_dir /opt/cni/bin
  nodes__host_dir /etc/cni/net.d
  nodes__host_dir /var/log/pods
  nodes__host_dir /var/log/containers
  unshare --mount --propagation slave -- nsenter --net="/run/netns/$ns" -- \
    bash "$dir/run.sh" >"$dir/runner.log" 2>&1 &
  NODE_RUNNER_PID[$n]=$!
  nsenter --net="/run/netns/$ns" -- "$KUBE_BIN/kube-proxy" --kubeconfig "$dir/proxy.kubeconfig" --hostname-override "$n" \
    --bind-address "$ip" --cluster-cidr 10.244.0.0/16 --proxy-mode iptables --masquerade-all \
    --conntrack-max-per-core 0 --v 1 >"$dir/kube-proxy.log" 2>&1 </dev/null &
  # Started in the node's namespace through nsenter's exec: the pid is kube-proxy's own.
  NODE_PROXY_PID[$n]=$!
}

# nodes__host_dir DIR: DIR on the host as a mount point for the nodes' bind mounts; created (and
# removed again on exit) if missing.
nodes__host_dir() {
  local d=$1 made=()
  while [[ ! -d $d ]]; do
    made=("$d" "${made[@]}")
    d=$(dirname "$d")
  done
  ((${#made[@]})) || return 0
  mkdir -p "$1"
  # Deepest first, so that the removal on exit goes bottom-up.
  local i
  for ((i = ${#made[@]} - 1; i >= 0; i--)); do NODES_MADE_DIRS+=("${made[i]}"); done
}

# nodes__cgroup_root NODE create|remove: the kubelet's cgroup root in every v1 hierarchy (or the
# unified one); removal goes deepest first and skips what still has tasks.
nodes__cgroup_root() {
  local n=$1 what=$2 h d
  for h in /sys/fs/cgroup/*/; do
    [[ -d $h && ! -L ${h%/} ]] || continue
    case $what in
      create) mkdir -p "$h/tmk8s-$n" 2>/dev/null || true ;;
      remove)
        [[ -d $h/tmk8s-$n ]] || continue
        while read -r d; do rmdir "$d" 2>/dev/null || true; done < <(find "$h/tmk8s-$n" -depth -type d)
        ;;
    esac
  done
}

# nodes_exec NODE CMD...: CMD in NODE's network namespace (the host's mounts).
nodes_exec() {
  local n=$1
  shift
  nsenter --net="/run/netns/$(nodes__netns "$n")" -- "$@"
}

# nodes_import TARBALL: a docker-archive image into every node's containerd (namespace k8s.io).
nodes_import() {
  local n
  for n in "${NODES[@]}"; do
    timeout 120 ctr -a "$NODES_DIR/$n/run/containerd.sock" -n k8s.io images import "$1" >/dev/null ||
      kube_fail "importing $1 into $n's containerd failed"
  done
}

# nodes_ctr NODE ARGS...: ctr against NODE's containerd, namespace k8s.io.
nodes_ctr() {
  local n=$1
  shift
  timeout 30 ctr -a "$NODES_DIR/$n/run/containerd.sock" -n k8s.io "$@"
}

kube_more_diagnostics() {
  local lines=${TM_LOG_LINES:-200} n f
  [[ -n $NODES_DIR ]] || return 0
  for f in controller-manager scheduler; do
    [[ -f $KUBE_WORK/$f.log ]] || continue
    echo "-------- $f log (last 40 lines)" >&2
    tail -n 40 "$KUBE_WORK/$f.log" >&2
  done
  if [[ -n "$KUBE_APISERVER_PID" ]] && kill -0 "$KUBE_APISERVER_PID" 2>/dev/null; then
    echo "-------- kubectl get nodes,pods -A -o wide" >&2
    kube_kubectl get nodes,pods -A -o wide >&2 2>&1
    echo "-------- events" >&2
    kube_kubectl get events -A --sort-by=.lastTimestamp >&2 2>&1 | tail -n 60 >&2
  fi
  for n in "${NODES[@]}"; do
    [[ -d $NODES_DIR/$n ]] || continue
    for f in runner kubelet containerd kube-proxy; do
      [[ -f $NODES_DIR/$n/$f.log ]] || continue
      echo "-------- $n: $f log (last 40 lines)" >&2
      tail -n 40 "$NODES_DIR/$n/$f.log" >&2
    done
    while read -r f; do
      echo "-------- $n: container log ${f#"$NODES_DIR/$n/pod-logs/"} (last $lines lines)" >&2
      tail -n "$lines" "$f" >&2
    done < <(find "$NODES_DIR/$n/pod-logs" -name '*.log' -type f 2>/dev/null | sort)
  done
}

kube_before_down() {
  local n p pid id
  [[ -n $NODES_DIR ]] || return 0 # nodes_init did not get as far as making anything
  if [[ ${TM_NODES_KEEP:-0} =~ ^[1-9][0-9]*$ ]]; then
    kube_log "TM_NODES_KEEP=$TM_NODES_KEEP: the cluster stays up that many seconds (KUBECONFIG=$KUBECONFIG_FILE)"
    sleep "$TM_NODES_KEEP"
  fi
  for n in "${NODES[@]}"; do
    kube__stop "${NODE_PROXY_PID[$n]:-}"
    [[ -f $NODES_DIR/$n/kubelet.pid ]] && kube__stop "$(cat "$NODES_DIR/$n/kubelet.pid")"
  done
  for n in "${NODES[@]}"; do
    [[ -S $NODES_DIR/$n/run/containerd.sock ]] || continue
    for id in $(nodes_ctr "$n" tasks ls -q 2>/dev/null); do
      nodes_ctr "$n" tasks kill -a -s SIGKILL "$id" >/dev/null 2>&1 || true
    done
    for id in $(nodes_ctr "$n" tasks ls -q 2>/dev/null); do
      nodes_ctr "$n" tasks delete -f "$id" >/dev/null 2>&1 || true
    done
    [[ -f $NODES_DIR/$n/containerd.pid ]] && kube__stop "$(cat "$NODES_DIR/$n/containerd.pid")"
    # Shims of this node's containerd that outlived it.
    for pid in $(pgrep -f -- "containerd-shim-runc-v2 .*-address $NODES_DIR/$n/run/containerd.sock" || true); do
      kill -KILL "$pid" 2>/dev/null || true
    done
    kube__stop "${NODE_RUNNER_PID[$n]:-}"
  done
  for n in "${NODES[@]}"; do
    nodes__cgroup_root "$n" remove
    # Deleting a namespace frees its devices later, in the kernel's own time: the host end of the
    # node's veth is deleted here, so the next cluster test can create it again at once.
    ip link del "tmk8s-$n" 2>/dev/null || true
    ip netns del "$(nodes__netns "$n")" 2>/dev/null || true
  done
  ip netns del "$NODES_NAT_NS" 2>/dev/null || true
  ip link del "$NODES_BRIDGE" 2>/dev/null || true
  kube__stop "$NODES_CM_PID"
  kube__stop "$NODES_SCHED_PID"
  for p in "${!NODES_SYSCTL_SAVED[@]}"; do sysctl -qw "$p=${NODES_SYSCTL_SAVED[$p]}" || true; done
  for p in "${NODES_MADE_DIRS[@]}"; do rmdir "$p" 2>/dev/null || true; done
  # Folders the shims or the kubelet left mounted below the work folder.
  while read -r p; do umount -l "$p" 2>/dev/null || true; done < <(
    awk -v w="$KUBE_WORK" 'index($2, w) == 1 {print $2}' /proc/self/mounts | sort -r)
  NODES_DIR=""
}
