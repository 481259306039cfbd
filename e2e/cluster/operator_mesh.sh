#!/usr/bin/env bash
# operator_mesh.sh: the operator in Kubernetes mode against a real kube-apiserver and etcd, with
# the chart installed by a real `helm install`, and one agent per simulated node in network
# namespaces. The operator and the agents run with exactly the command lines, environment and
# volume layout of the chart's Deployment and DaemonSet as the API server holds them
# (pod_launcher.py plays the kubelet): the operator uses its in-cluster configuration with a
# token of its own ServiceAccount (so RBAC is the chart's), the agents authenticate to the
# coordinator with a projected ServiceAccount token for audience tunnelmesh bound to their pod
# (TokenReview, then the pod's node) and read the CA from the ConfigMap the operator publishes.
#
# Checks:
#   - nodes join and reach each other; their MeshPeers carry their mesh IPs, kind Node and
#     Ready=True (Connected); `kubectl get meshpeers` shows the columns;
#   - MeshPeer status.peerPaths lists the path to each peer; with UDP between n1 and n2 dropped
#     the path goes to ssh, with TCP dropped too to the relay, and back to direct when nothing is:
#     each change is a PathChanged Event on n1's MeshPeer (Warning when worse, Normal when better);
#   - a ServiceAccount token for the API server's audience is refused, and so is a node's
#     pod-bound token presented under another Node's name (finding 10 of the security review);
#   - `kubectl patch` of the Mesh (its domain) reaches every agent;
#   - malformed objects are rejected by the API server (schema) or reported in Ready=False
#     conditions and Warning Events (`kubectl describe`): a Mesh whose Secret is missing, a
#     MeshPeer without a key, a PeerPolicy that does not compile; a valid PeerPolicy is Accepted;
#   - PeerPolicy enforced: with the Mesh's defaultAction patched to Deny, a TCP connection n1 ->
#     n2 is dropped; a PeerPolicy applied with kubectl (every member to every member on that
#     port) allows it (the delay is measured); `kubectl get peerpolicies` shows its columns
#     (Action, From, To, Rules, Ready) and status.compiledRules; the default goes back to Allow
#     (the chart is installed with Allow so that the other steps test connectivity, not policy);
#   - a MeshPeer pre-created by an admin with a public key and an endpoint admits a plain
#     WireGuard peer (wireguard-go): it gets a mesh IP, appears in the agents' maps, and it and an
#     agent ping each other;
#   - leader election: a second operator replica waits; when the first stops, it takes over and
#     no mesh IP changes (agents and MeshPeers), traffic flows;
#   - the operator survives the API server restarting and acts on changes made after it;
#   - deleting a MeshPeer evicts the member from the others' maps within a second (and its agent
#     stops); deleting a Node removes its MeshPeer and member; a deleted Mesh goes once the
#     operator has removed its finalizer.
#
# Usage: operator_mesh.sh [AGENT_PATH [OPERATOR_PATH]]   (needs root; exits 77 otherwise)

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=../netns/nat_lib.sh
source "$HERE/../netns/nat_lib.sh"
tm_mesh_init operator_mesh 420 "$@"
# kube.sh for its functions only; lib.sh's teardown ends etcd and kube-apiserver (by pid).
# shellcheck source=kube.sh
source "$HERE/kube.sh"
KUBE_TEST=operator_mesh
KUBE_WORK=$TM_WORK/kube
mkdir -p "$KUBE_WORK"
command -v helm >/dev/null || tm_fail "helm is not installed (run scripts/install-deps.sh)"

NS=tunnelmesh
API_ADDR=10.251.0.1   # the API server as the operator's namespace reaches it
declare -A OP_PID=()

eval "cluster__dump_netns() $(declare -f tm_net_dump_diagnostics | tail -n +2)"
tm_net_dump_diagnostics() {
  cluster__dump_netns
  local f
  for f in "$TM_WORK"/operator-*.log; do
    [[ -f "$f" ]] || continue
    echo "-------- $(basename "$f") (last 80 lines)" >&2
    tail -n 80 "$f" >&2
  done
  kube_dump_diagnostics
}

k() { kube_kubectl "$@"; }
# jp JSONPATH OBJECT...: a field of an object, empty when it does not exist.
jp() { k get "${@:2}" -o "jsonpath=$1" 2>/dev/null; }

tm_step "topology: the operator's host and three nodes on a public segment"
tm_net_public coord
tm_net_public n1
tm_net_public n2
tm_net_public n3
COORD=${TM_NET_ADDR[coord]}
# The operator's host reaches the API server (in this namespace) over a veth, as a pod reaches
# the kubernetes Service.
kube_link_namespace "$(tm_ns coord)" "tmkh$$" "tmkc$$" "$API_ADDR" 10.251.0.2

tm_step "a real API server; helm install of the chart"
KUBE_APISERVER_EXTRA_ARGS="--bind-address 0.0.0.0 --advertise-address $API_ADDR"
kube_up
TM_BG_PIDS+=("$KUBE_ETCD_PID" "$KUBE_APISERVER_PID")
helm install tunnelmesh "$KUBE_REPO_ROOT/charts/tunnelmesh" --namespace "$NS" \
  --create-namespace --kubeconfig "$KUBECONFIG_FILE" --set mesh.defaultAction=Allow \
  >"$TM_WORK/helm.out" 2>&1 ||
  tm_fail "helm install failed: $(cat "$TM_WORK/helm.out")"
for node in n1 n2 n3; do
  k create -f - >/dev/null <<EOF
apiVersion: v1
kind: Node
metadata: {name: $node, labels: {kubernetes.io/hostname: $node}}
EOF
done

# ServiceAccount volumes as the kubelet mounts them: token, the API server's CA, the namespace.
sa_dir() { # SERVICEACCOUNT
  local dir=$TM_WORK/sa-$1
  mkdir -p "$dir"
  k -n "$NS" create token "$1" --duration 2h >"$dir/token"
  cp "$KUBE_WORK/certs/apiserver.crt" "$dir/ca.crt"
  echo "$NS" >"$dir/namespace"
  echo "$dir"
}
SA_OPERATOR=$(sa_dir tunnelmesh-operator)

# The agent's projected token as the kubelet makes it for the DaemonSet's pod on NODE: a Pod
# object on that Node (no kubelet runs it), and a token for audience tunnelmesh bound to it
# (TokenRequest, as the chart's projected volume asks). Prints the volume's folder.
agent_pod_token_dir() { # NODE
  local node=$1 dir=$TM_WORK/agent-token-$1
  mkdir -p "$dir"
  k -n "$NS" create -f - >/dev/null <<EOF
apiVersion: v1
kind: Pod
metadata: {name: tunnelmesh-agent-$node}
spec:
  nodeName: $node
  serviceAccountName: tunnelmesh-agent
  automountServiceAccountToken: false
  containers: [{name: agent, image: tunnelmesh/tunnelmesh}]
EOF
  k -n "$NS" create token tunnelmesh-agent --audience tunnelmesh --duration 1h \
    --bound-object-kind Pod --bound-object-name "tunnelmesh-agent-$node" >"$dir/token"
  echo "$dir"
}

# op_pod_ip ID: the replica's pod IP, where it binds its metrics port. Real pods each have their
# own; here the replicas share the operator's namespace, so each gets a loopback address of its
# own (127.0.1.N, N the ID's first character code).
op_pod_ip() { printf '127.0.1.%d' "'$1"; }

# op_start ID: a replica of the operator Deployment, as pod tunnelmesh-operator-ID.
op_start() {
  local id=$1 script=$TM_WORK/operator-$1.sh
  kube_placeholder_pod "$NS" "tunnelmesh-operator-$id" tunnelmesh-operator
  k -n "$NS" get deployment tunnelmesh-operator -o json |
    "$TM_PY" "$HERE/pod_launcher.py" --container operator \
      --field "metadata.namespace=$NS" --field "metadata.name=tunnelmesh-operator-$id" \
      --field "status.podIP=$(op_pod_ip "$id")" \
      --env "KUBERNETES_SERVICE_HOST=$API_ADDR" --env "KUBERNETES_SERVICE_PORT=$KUBE_PORT" \
      --serviceaccount "$SA_OPERATOR" \
      --binary "/usr/bin/tunnelmesh-operator=$TM_OPERATOR" >"$script"
  ip netns exec "$(tm_ns coord)" sh "$script" >>"$TM_WORK/operator-$id.log" 2>&1 &
  OP_PID[$id]=$!
  TM_BG_PIDS+=("$!")
  tm_log "operator replica $id started (pid $!): $(tail -n 1 "$script" | cut -c1-400)"
}
op__ready() { grep -q 'coordinator ready' "$TM_WORK/operator-$1.log" && tm__listening coord 7700; }
op_wait_ready() { # ID TIMEOUT
  tm_wait "$2" "operator replica $1 to serve" op__ready "$1"
}
op_alive() { # ID
  tm__wait_exit "${OP_PID[$1]}" 0 && tm_fail "operator replica $1 exited with code $TM_EXIT_RC"
  return 0
}
op_stop() { # ID: SIGTERM, must exit 0
  kill -TERM "${OP_PID[$1]}"
  tm__wait_exit "${OP_PID[$1]}" 10 || tm_fail "operator replica $1 did not stop within 10s"
  tm__bg_forget "${OP_PID[$1]}"
  [[ "$TM_EXIT_RC" == 0 ]] || tm_fail "operator replica $1 exited with code $TM_EXIT_RC"
}

tm_step "the operator starts from the chart's Deployment"
op_start a
op_wait_ready a 30
tm_wait 10 "Mesh default to be Ready" \
  bash -c "[[ \"\$(kubectl --kubeconfig $KUBECONFIG_FILE get mesh default -o \
    jsonpath='{.status.conditions[?(@.type==\"Ready\")].status}')\" == True ]]"
CA_HASH=$(jp '{.data.ca-hash}' -n "$NS" configmap/tunnelmesh-ca)
[[ "$CA_HASH" == sha256:* ]] || tm_fail "ConfigMap tunnelmesh-ca has no ca-hash: '$CA_HASH'"
mkdir -p "$TM_WORK/ca"
k -n "$NS" get configmap tunnelmesh-ca -o "jsonpath={.data.ca\.crt}" >"$TM_WORK/ca/ca.crt"
k -n "$NS" get secret tunnelmesh-coordinator >/dev/null ||
  tm_fail "the operator did not keep its keys in Secret $NS/tunnelmesh-coordinator"
tm_log "CA $CA_HASH published; Mesh default Ready"

# node_start NODE: the DaemonSet's pod on NODE.
node_start() {
  local node=$1 script=$TM_WORK/agent-$1.sh
  tm_member_new "$node" "$node"
  TM_MEMBER_IF[$node]=tm0
  # The chart's hostPath volume is DirectoryOrCreate: the kubelet makes it before the pod starts.
  mkdir -p "$(tm_member_state "$node")"
  k -n "$NS" get daemonset tunnelmesh-agent -o json |
    "$TM_PY" "$HERE/pod_launcher.py" --container agent \
      --field "spec.nodeName=$node" --field "status.podIP=${TM_NET_ADDR[$node]}" \
      --env "TUNNELMESH_COORDINATOR=$COORD:7700" \
      --volume "state=$(tm_member_state "$node")" --volume "ca=$TM_WORK/ca" \
      --volume "coordinator-token=$(agent_pod_token_dir "$node")" \
      --binary "/usr/bin/tunnelmesh-agent=$TM_AGENT" >"$script"
  tm__member_log_start "$node" start
  ip netns exec "$(tm_ns "$node")" sh "$script" >>"$(tm_member_log "$node")" 2>&1 &
  TM_MEMBER_PID[$node]=$!
  TM_BG_PIDS+=("$!")
}

tm_step "one agent per node joins with its ServiceAccount token"
for node in n1 n2 n3; do node_start "$node"; done
for node in n1 n2 n3; do tm_member_wait_ready "$node" 20; done
tm_member_wait_peer 5 n1 n2
tm_member_wait_peer 5 n1 n3
tm_member_wait_peer 5 n2 n1
declare -A IP4=()
for node in n1 n2 n3; do IP4[$node]=$(tm_member_ip "$node"); done
tm_log "mesh IPs: n1 ${IP4[n1]}, n2 ${IP4[n2]}, n3 ${IP4[n3]}"
tm_in n1 ping -c 3 -i 0.2 -W 2 "${IP4[n2]}" >/dev/null || tm_fail "n1 cannot ping n2 at ${IP4[n2]}"
tm_in n2 ping -c 3 -i 0.2 -W 2 "${IP4[n3]}" >/dev/null || tm_fail "n2 cannot ping n3 at ${IP4[n3]}"
meshpeer__ready() { # NAME
  local got
  got=$(jp '{.status.meshIPs[0]} {.spec.kind} {.status.conditions[?(@.type=="Ready")].reason}' "meshpeer/$1")
  echo "meshpeer $1: $got"
  [[ "$got" == "${IP4[$1]} Node Connected" ]]
}
for node in n1 n2 n3; do tm_wait 5 "MeshPeer $node to show its IP and Ready" meshpeer__ready "$node"; done
paths__direct() { # NODE: its MeshPeer says it reaches both other nodes directly
  local got
  got=$(jp '{.status.pathSummary}' "meshpeer/$1")
  echo "meshpeer $1 pathSummary: $got"
  [[ "$got" == "2 direct, 0 relay" ]]
}
for node in n1 n2 n3; do tm_wait 10 "MeshPeer $node to report direct paths" paths__direct "$node"; done
k get meshpeers >"$TM_WORK/meshpeers.txt"
tm_log "kubectl get meshpeers:"$'\n'"$(cat "$TM_WORK/meshpeers.txt")"
grep -q "MESH IP" "$TM_WORK/meshpeers.txt" || tm_fail "kubectl get meshpeers lacks the MESH IP column"

tm_step "per-peer paths in MeshPeer status, and PathChanged Events when one changes"
peer_path() { # NODE PEER: the path NODE's MeshPeer lists to PEER
  jp "{.status.peerPaths[?(@.peer==\"$2\")].path}" "meshpeer/$1"
}
path__is() { # NODE PEER PATH
  local got
  got=$(peer_path "$1" "$2")
  echo "meshpeer $1 path to $2: $got"
  [[ "$got" == "$3" ]]
}
event__has() { # OBJECT TYPE MESSAGE_REGEX: a PathChanged Event about OBJECT of TYPE
  k get events -A --field-selector "involvedObject.name=$1,reason=PathChanged" \
    -o 'jsonpath={range .items[*]}{.type}: {.message}{"\n"}{end}' | grep -qxE "$2: $3"
}
tm_wait 5 "n1's MeshPeer to list n2 as direct" path__is n1 n2 direct
tm_wait 5 "n1's MeshPeer to list n3 as direct" path__is n1 n3 direct
# UDP between n1 and n2 dropped in n1's namespace: the SSH path takes over (after the relay for a
# moment, while the SSH connection is dialed); then TCP too: the relay; then nothing: direct
# again. Each change is an Event on n1's MeshPeer.
N2=${TM_NET_ADDR[n2]}
block_n2() { # RULES...: replaces the rules of n1's table for traffic with n2
  local rules=$1
  tm_in n1 nft delete table inet tm_path_block 2>/dev/null || true
  tm_in n1 nft -f - <<NFT || tm_fail "nft rules in n1 do not load"
table inet tm_path_block {
  chain input { type filter hook input priority filter; policy accept; ip saddr $N2 $rules drop; }
  chain output { type filter hook output priority filter; policy accept; ip daddr $N2 $rules drop; }
}
NFT
}
changed_at=$(date +%s%N)
block_n2 "meta l4proto udp"
tm_wait 15 "n1's path to n2 to go over SSH" path__is n1 n2 ssh
tm_wait 5 "a Warning PathChanged Event on meshpeer n1 (direct to relay or ssh)" \
  event__has n1 Warning "The path to n2 changed from direct to (relay|ssh)\."
tm_log "n1 -> n2 on the SSH path (status) with a PathChanged Event after $(( ($(date +%s%N) - changed_at) / 1000000 )) ms"
block_n2 "meta l4proto { udp, tcp }"
tm_wait 15 "n1's path to n2 to go through the relay" path__is n1 n2 relay
tm_wait 5 "a Warning PathChanged Event on meshpeer n1 (ssh to relay)" \
  event__has n1 Warning "The path to n2 changed from ssh to relay\."
tm_in n1 nft delete table inet tm_path_block
tm_wait 15 "n1's path to n2 to be direct again" path__is n1 n2 direct
tm_wait 5 "a Normal PathChanged Event on meshpeer n1 (to direct)" \
  event__has n1 Normal "The path to n2 changed from (relay|ssh) to direct\."
path__is n1 n3 direct || tm_fail "n1's path to n3 changed while only n2 was blocked"
k describe meshpeer n1 >"$TM_WORK/describe-n1.txt"
grep -q "PathChanged" "$TM_WORK/describe-n1.txt" || tm_fail "kubectl describe meshpeer n1 shows no PathChanged Event"

tm_step "ServiceAccount tokens: the wrong audience and another Node's name are refused"
# join_with_token ID TOKEN_FILE: a foreground join as kind Node "n1" from n1's namespace (a fresh
# key, its own state dir and interface) with that ServiceAccount token; rc in TM_JOIN_RC (124:
# still retrying after 6 s), output in TM_JOIN_OUT.
join_with_token() {
  local out=$TM_WORK/join-$1.out
  mkdir -p "$TM_WORK/join-$1.state"
  TM_JOIN_RC=0
  timeout -k 2 6 ip netns exec "$(tm_ns n1)" "$TM_AGENT" join "$COORD:7700" --kind Node \
    --mesh default --name n1 --kubernetes-token-file "$2" --ca-file "$TM_WORK/ca/ca.crt" \
    --state-dir "$TM_WORK/join-$1.state" --interface tmx --listen-port 51999 --no-dns \
    --log-level debug >"$out" 2>&1 || TM_JOIN_RC=$?
  TM_JOIN_OUT=$(cat "$out")
}
# The pod's API token (default audience): the API server refuses it for audience tunnelmesh.
mkdir -p "$TM_WORK/api-token"
k -n "$NS" create token tunnelmesh-agent --duration 1h >"$TM_WORK/api-token/token"
join_with_token api-audience "$TM_WORK/api-token/token"
[[ "$TM_JOIN_RC" != 0 && "$TM_JOIN_OUT" == *"did not accept the ServiceAccount token"* ]] ||
  tm_fail "a token for the API server's audience was not refused (rc $TM_JOIN_RC): $TM_JOIN_OUT"
tm_log "API-audience token refused: $(grep -m1 -o 'did not accept.*' <<<"$TM_JOIN_OUT" | cut -c1-200)"
# n2's pod-bound token, presented as Node n1.
join_with_token other-node "$TM_WORK/agent-token-n2/token"
[[ "$TM_JOIN_RC" != 0 && "$TM_JOIN_OUT" == *'belongs to a pod on Node "n2"'* ]] ||
  tm_fail "n2's token registered as another Node (rc $TM_JOIN_RC): $TM_JOIN_OUT"
tm_log "another Node's token refused: $(grep -m1 -o 'the ServiceAccount token belongs.*' <<<"$TM_JOIN_OUT" | cut -c1-200)"
[[ "$(jp '{.status.meshIPs[0]}' meshpeer/n1)" == "${IP4[n1]}" ]] ||
  tm_fail "MeshPeer n1 changed after the refused joins"

tm_step "kubectl patch of the Mesh reaches every agent"
dns__is() { # NODE PEER WANT
  local got
  got=$(tm__mjson "$1" "(peer('$2') or {}).get('dns_name')") || return 1
  echo "$1 sees $2 as $got"
  [[ "$got" == "$3" ]]
}
start=$(tm__now_ms)
k patch mesh default --type merge -p '{"spec":{"domain":"corp.example"}}' >/dev/null
tm_wait 5 "n1 to learn the new domain" dns__is n1 n2 n2.corp.example
tm_wait 5 "n2 to learn the new domain" dns__is n2 n3 n3.corp.example
tm_wait 5 "n3 to learn the new domain" dns__is n3 n1 n1.corp.example
tm_log "Mesh change reached all agents $(tm_elapsed_since "$start")s after kubectl patch"

tm_step "malformed objects: rejected by the API server, or reported in conditions and Events"
out=$(k apply -f - 2>&1 <<EOF || true
apiVersion: tunnelmesh.io/v1alpha1
kind: Mesh
metadata: {name: badcidr}
spec: {ipv4CIDR: 10.0.0.300/16, joinTokenSecretRef: {namespace: $NS, name: x}}
EOF
)
[[ "$out" == *spec.ipv4CIDR* ]] || tm_fail "a Mesh with a bad CIDR was not rejected naming spec.ipv4CIDR: $out"
k apply -f - >/dev/null <<EOF
apiVersion: tunnelmesh.io/v1alpha1
kind: Mesh
metadata: {name: nosecret}
spec: {ipv4CIDR: 10.77.0.0/16, joinTokenSecretRef: {namespace: $NS, name: missing-secret}}
---
apiVersion: tunnelmesh.io/v1alpha1
kind: MeshPeer
metadata: {name: nokey}
spec: {mesh: default, kind: External}
---
apiVersion: tunnelmesh.io/v1alpha1
kind: PeerPolicy
metadata: {name: ci-to-db}
spec:
  mesh: default
  action: Allow
  from: [{peerSelector: {matchLabels: {role: ci}}}]
  to: [{peerSelector: {matchLabels: {role: db}}}]
  ports: [{protocol: TCP, port: 5432}]
---
apiVersion: tunnelmesh.io/v1alpha1
kind: PeerPolicy
metadata: {name: contradictory}
spec:
  mesh: default
  action: Deny
  from: [{peerSelector: {matchExpressions: [{key: role, operator: Exists, values: [x]}]}}]
  to: [{peerSelector: {}}]
EOF
cond__is() { # KIND/NAME STATUS REASON
  local got
  got=$(jp '{.status.conditions[?(@.type=="Ready")].status} {.status.conditions[?(@.type=="Ready")].reason}' "$1")
  echo "$1 Ready: $got"
  [[ "$got" == "$2 $3" ]]
}
# The chart's Role lets the operator read only the join-token Secrets it names: another one is
# forbidden (whether it exists or not), and the condition says how to fix that.
tm_wait 5 "Mesh nosecret to say its Secret cannot be read" cond__is mesh/nosecret False SecretForbidden
tm_wait 5 "MeshPeer nokey to say its key is missing" cond__is meshpeer/nokey False InvalidSpec
tm_wait 5 "PeerPolicy ci-to-db to be accepted" cond__is peerpolicy/ci-to-db True Accepted
tm_wait 5 "PeerPolicy contradictory to be rejected" cond__is peerpolicy/contradictory False InvalidSpec
describe__has() { k describe "$1" | grep -q "$2"; }
tm_wait 5 "kubectl describe mesh nosecret to show the Warning Event" \
  describe__has mesh/nosecret "SecretForbidden.*missing-secret"
tm_wait 5 "kubectl describe meshpeer nokey to show the Warning Event" \
  describe__has meshpeer/nokey "InvalidSpec.*spec.publicKey"
tm_wait 5 "kubectl describe peerpolicy contradictory to show the Warning Event" \
  describe__has peerpolicy/contradictory "InvalidSpec.*operator Exists takes no values"
tm_log "PeerPolicy contradictory: $(jp '{.status.conditions[0].message}' peerpolicy/contradictory)"

tm_step "PeerPolicy: default Deny drops n1 -> n2, kubectl apply of a policy allows it"
NET_PY="$HERE/../netns/policy_net.py"
tm_bg_in n2 "$TM_PY" "$NET_PY" serve "${IP4[n2]}" --tcp 8443
tm_wait 5 "n2 to listen on 8443" tm__listening n2 8443
reach() { tm_in "$1" "$TM_PY" "$NET_PY" tcp "$2" "$3" 0.5; }
no_reach() { ! reach "$@"; }
tm_wait 10 "n1 to reach n2:8443 under defaultAction Allow" reach n1 "${IP4[n2]}" 8443
k patch mesh default --type merge -p '{"spec":{"defaultAction":"Deny"}}' >/dev/null
tm_wait 10 "n1 -> n2:8443 to be dropped under defaultAction Deny" no_reach n1 "${IP4[n2]}" 8443
start=$(tm__now_ms)
k apply -f - >/dev/null <<EOF
apiVersion: tunnelmesh.io/v1alpha1
kind: PeerPolicy
metadata: {name: n1-to-n2-https}
spec:
  mesh: default
  action: Allow
  from: [{peerSelector: {}}]
  to: [{peerSelector: {}}]
  ports: [{protocol: TCP, port: 8443}]
EOF
tm_wait 10 "n1 to reach n2:8443 after kubectl apply of the PeerPolicy" reach n1 "${IP4[n2]}" 8443
tm_log "measured: the PeerPolicy applied $(tm_elapsed_since "$start")s after kubectl apply"
tm_expect_gt "n2: packets dropped by its filter" \
  "$(tm_mjson n2 "s['filter']['drops']['default_denied']")" 0
tm_wait 5 "PeerPolicy n1-to-n2-https to be accepted" cond__is peerpolicy/n1-to-n2-https True Accepted
k get peerpolicies >"$TM_WORK/peerpolicies.txt"
tm_log "kubectl get peerpolicies:"$'\n'"$(cat "$TM_WORK/peerpolicies.txt")"
for column in ACTION FROM TO RULES READY; do
  head -n 1 "$TM_WORK/peerpolicies.txt" | grep -qw "$column" ||
    tm_fail "kubectl get peerpolicies lacks the $column column"
done
rules=$(jp '{.status.compiledRules}' peerpolicy/n1-to-n2-https)
tm_expect_gt "PeerPolicy n1-to-n2-https: status.compiledRules" "${rules:-0}" 0
k delete peerpolicy n1-to-n2-https >/dev/null
k patch mesh default --type merge -p '{"spec":{"defaultAction":"Allow"}}' >/dev/null
tm_wait 10 "n1 to ping n2 again under defaultAction Allow" tm_ping_once n1 "${IP4[n2]}"

tm_step "a MeshPeer pre-created by an admin admits a plain WireGuard peer (wireguard-go)"
tm_net_public ext
tm_node_new laptop wg ext 51820 ""
k apply -f - >/dev/null <<EOF
apiVersion: tunnelmesh.io/v1alpha1
kind: MeshPeer
metadata: {name: laptop, labels: {role: ci}}
spec: {mesh: default, kind: External, publicKey: "$(tm_pub laptop)", endpoints: ["${TM_NET_ADDR[ext]}:51820"]}
EOF
tm_wait 5 "MeshPeer laptop to be admitted" cond__is meshpeer/laptop True Admitted
EXT_IP=$(jp '{.status.meshIPs[0]}' meshpeer/laptop)
tm_member_wait_peer 5 n1 laptop
tm_expect_eq "n1: mesh IP of laptop" "$(tm_mjson n1 "peer('laptop')['mesh_ips'][0].split('/')[0]")" "$EXT_IP"
# The admin configures wireguard-go with the address the MeshPeer got and n1 as its peer (n1's
# key from n1's MeshPeer); n1 reaches it at the endpoint the MeshPeer names.
TM_NODE_ADDRS[laptop]="$EXT_IP/16"
jp '{.spec.publicKey}' meshpeer/n1 >"$TM_WORK/n1.pub"
tm_node_peer laptop n1 allowed="${IP4[n1]}/32"
tm_node_start laptop
tm_in n1 ping -c 3 -i 0.3 -W 2 "$EXT_IP" >/dev/null ||
  tm_fail "n1 cannot ping the wireguard-go member at $EXT_IP"
tm_in ext ping -c 2 -i 0.3 -W 2 "${IP4[n1]}" >/dev/null ||
  tm_fail "the wireguard-go member cannot ping n1 at ${IP4[n1]}"
tm_log "n1 and the wireguard-go member laptop ($EXT_IP) reach each other"

tm_step "leader election: a second replica waits, then takes over; no mesh IP changes"
op_start b
sleep 2
grep -q 'waiting to lead' "$TM_WORK/operator-b.log" ||
  tm_fail "operator replica b did not report waiting for the Lease"
grep -q 'coordinator ready' "$TM_WORK/operator-b.log" &&
  tm_fail "operator replica b serves while replica a leads"
op_alive b
tm_flow_ping_start restart n1 "${IP4[n2]}" 8
start=$(tm__now_ms)
op_stop a
op_wait_ready b 20
tm_log "replica b took over $(tm_elapsed_since "$start")s after replica a got SIGTERM"
for node in n1 n2 n3; do
  tm_wait 10 "MeshPeer $node to be Connected to replica b" meshpeer__ready "$node"
  tm_expect_eq "$node: mesh IP after the operator restart" "$(tm_member_ip "$node")" "${IP4[$node]}"
done
tm_expect_eq "laptop: mesh IP after the operator restart" "$(jp '{.status.meshIPs[0]}' meshpeer/laptop)" "$EXT_IP"
tm_flow_ping_check restart 0

tm_step "the API server restarts; the operator survives and acts on later changes"
cmdline=()
mapfile -d '' -t cmdline <"/proc/$KUBE_APISERVER_PID/cmdline"
# SIGKILL: a crash, and no graceful drain of the operator's watches (which takes minutes).
kill -KILL "$KUBE_APISERVER_PID"
tm__wait_exit "$KUBE_APISERVER_PID" 10 || tm_fail "kube-apiserver did not stop"
tm__bg_forget "$KUBE_APISERVER_PID"
tm_in n1 ping -c 3 -i 0.2 -W 2 "${IP4[n3]}" >/dev/null ||
  tm_fail "n1 cannot ping n3 while the API server is down"
sleep 3
"${cmdline[@]}" >>"$KUBE_WORK/apiserver.log" 2>&1 &
KUBE_APISERVER_PID=$!
TM_BG_PIDS+=("$KUBE_APISERVER_PID")
kube_wait 60 "kube-apiserver to serve again" kube_kubectl get --raw /readyz
op_alive b
k patch mesh default --type merge -p '{"spec":{"domain":"mesh"}}' >/dev/null
tm_wait 20 "n1 to learn the domain set after the API server restart" dns__is n1 n2 n2.mesh
# MeshPeers too: one created now is admitted (the eviction timing below is a steady-state one).
k apply -f - >/dev/null <<EOF
apiVersion: tunnelmesh.io/v1alpha1
kind: MeshPeer
metadata: {name: probe}
spec: {mesh: default, kind: External, publicKey: "$("$TM_AGENT" genkey | "$TM_AGENT" pubkey)"}
EOF
tm_wait 20 "MeshPeer probe, created after the API server restart, to be admitted" \
  cond__is meshpeer/probe True Admitted

tm_step "deleting a MeshPeer evicts its member within a second; deleting a Node removes its member"
k delete meshpeer n2 --wait=false >/dev/null
start=$(tm__now_ms)
tm_member_wait_no_peer 1 n1 n2
tm_log "n1 dropped n2 $(tm_elapsed_since "$start")s after kubectl delete meshpeer"
tm_member_wait_no_peer 2 n3 n2
tm__wait_exit "${TM_MEMBER_PID[n2]}" 5 || tm_fail "the agent of evicted n2 did not stop"
tm__bg_forget "${TM_MEMBER_PID[n2]}"
TM_MEMBER_PID[n2]=""
grep -q "removed from the mesh" "$(tm_member_log n2)" ||
  tm_fail "n2's agent did not say it was removed from the mesh"
k delete node n3 >/dev/null
tm_member_wait_no_peer 3 n1 n3
tm_wait 5 "MeshPeer n3 to be deleted" bash -c "! kubectl --kubeconfig $KUBECONFIG_FILE get meshpeer n3 >/dev/null 2>&1"
# A deleted Mesh goes once the operator has removed its members and its finalizer.
k get mesh nosecret -o jsonpath='{.metadata.finalizers}' | grep -q tunnelmesh.io/members ||
  tm_fail "Mesh nosecret has no tunnelmesh.io/members finalizer"
k delete mesh nosecret --timeout=10s >/dev/null || tm_fail "Mesh nosecret was not deleted within 10s"
op_alive b
op_stop b
tm_checks_done
