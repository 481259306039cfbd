#!/usr/bin/env bash
# cni_plugin.sh: tunnelmesh-cni called the way a container runtime calls it (cni_runtime.py: CNI_*
# environment variables, each plugin's entry of a conflist on stdin with the previous plugin's
# result as prevResult), chained after Debian's `bridge` + `host-local` (containernetworking-plugins,
# /usr/lib/cni); pods are network namespaces.
#
# Checks, with no agent: VERSION; `tunnelmesh-cni install` appends the plugin to the first
# conflist of a folder and copies the binary there, and takes both out on SIGTERM; bad
# configurations (code 7 naming the field, code 6 for non-JSON, code 4 naming a missing variable);
# an unsupported cniVersion (code 1); ADD through the chain with no agent on the socket fails with
# code 100 naming the socket and asking whether tunnelmesh-agent runs, and the runtime's DEL still
# succeeds (and removes the bridge's veth); STATUS is code 50.
# Then the full path: a coordinator and two member nodes, a pod on each, ADD through the chain
# gives each pod mesh0 with its mesh IPs (and keeps the bridge's eth0 and default route), pods ping
# each other by mesh IP (IPv4 and IPv6) across the tunnel, tunnelmesh-cni's CHECK passes (and fails
# naming a removed address), a repeated ADD keeps the addresses, DEL leaves no veth, route or
# address behind and the agent forgets the pod, and GC removes a pod the runtime no longer lists
# (host veth and the agent's attachment).
#
# Usage: cni_plugin.sh [AGENT_PATH [OPERATOR_PATH]]   (needs root; exits 77 otherwise)
# The plugin is $TM_CNI, else tunnelmesh-cni beside the agent.

# shellcheck source=nat_lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/nat_lib.sh"
# shellcheck source=cni_lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/cni_lib.sh"
tm_mesh_init cni_plugin 150 "$@"
cni_lib_init
mkdir -p "$TM_WORK/cni-cache"
export CNI_PATH=$CNI_BIN

# cni_conflist FILE VERSION NODE SUBNET SOCKET: bridge + host-local, then tunnelmesh-cni.
cni_conflist() {
  cat >"$1" <<EOF
{"cniVersion": "$2", "name": "pods-$3",
 "plugins": [
  {"type": "bridge", "bridge": "cni0", "isGateway": true, "ipMasq": false,
   "ipam": {"type": "host-local", "dataDir": "$TM_WORK/ipam-$3",
            "ranges": [[{"subnet": "$4"}]], "routes": [{"dst": "0.0.0.0/0"}]}},
  {"type": "tunnelmesh-cni", "mesh": "demo", "agentSocket": "$5"}
 ]}
EOF
}

# cni_plugin_call COMMAND CONFIG [VAR=VALUE...]: the plugin alone, in this namespace, with a
# container's variables; output in CNI_OUT, exit code in CNI_RC.
cni_plugin_call() {
  local command=$1 config=$2
  shift 2
  CNI_RC=0
  CNI_OUT=$(env CNI_COMMAND="$command" CNI_CONTAINERID=e2e0c0ffee CNI_NETNS=/run/netns/none \
    CNI_IFNAME=eth0 "$@" "$TM_CNI" <<<"$config" 2>"$TM_WORK/plugin.stderr") || CNI_RC=$?
}

# cni_field JSON EXPR: EXPR evaluated with r = the parsed JSON.
cni_field() { "$TM_PY" -c 'import json, sys; r = json.loads(sys.argv[1]); print(eval(sys.argv[2]))' "$1" "$2"; }

# cni_expect_error DESCRIPTION CODE TEXT: CNI_OUT is a CNI error with CODE whose msg holds TEXT.
cni_expect_error() {
  tm_expect_eq "$1: exit code" "$CNI_RC" 1
  tm_expect_eq "$1: error code" "$(cni_field "$CNI_OUT" "r['code']")" "$2"
  grep -qF -- "$3" <<<"$(cni_field "$CNI_OUT" "r['msg']")" ||
    tm_check_fail "$1: the message does not say '$3': $CNI_OUT"
  tm_expect_eq "$1: cniVersion in the error" \
    "$(cni_field "$CNI_OUT" "r['cniVersion'] in ('0.4.0', '1.0.0', '1.1.0')")" True
}

# cni_runtime NODE_NSID ARGS...: cni_runtime.py inside the node; output in CNI_OUT, rc in CNI_RC.
cni_runtime() {
  local node=$1
  shift
  CNI_RC=0
  CNI_OUT=$(tm_in "$node" env CNI_PATH="$CNI_PATH" "$TM_PY" "$RUNTIME" "$@" \
    2>>"$TM_WORK/runtime.stderr") || CNI_RC=$?
}

# cni_mesh_ips RESULT: the addresses of interface mesh0 in an ADD result, one per line.
cni_mesh_ips() {
  "$TM_PY" - "$1" <<'EOF'
import json, sys
r = json.loads(sys.argv[1])
names = [i["name"] for i in r.get("interfaces", [])]
for ip in r.get("ips", []):
    if "mesh0" in names and ip.get("interface") == names.index("mesh0"):
        print(ip["address"].split("/")[0])
EOF
}

# cni_agent_records NAME CONTAINER_ID: whether member NAME's attachment file lists the container.
cni_agent_records() { grep -qF "\"$2\"" "$(tm_member_state "$1")/${TM_MEMBER_IF[$1]}.pods.json" 2>/dev/null; }
cni_agent_forgot() { ! cni_agent_records "$@"; }

# The host end of a container's pod veth: "tmp" + 12 hex digits of BLAKE2s-256(container ID).
cni_host_if() {
  "$TM_PY" -c 'import hashlib, sys; print("tmp" + hashlib.blake2s(sys.argv[1].encode()).hexdigest()[:12])' "$1"
}

BASE='"name": "pods", "type": "tunnelmesh-cni"'

tm_step "VERSION"
cni_plugin_call VERSION '{"cniVersion": "1.0.0"}'
tm_expect_eq "VERSION exit code" "$CNI_RC" 0
tm_expect_eq "supportedVersions" "$(cni_field "$CNI_OUT" "r['supportedVersions']")" \
  "['0.4.0', '1.0.0', '1.1.0']"
tm_expect_eq "VERSION answers in the asked version" "$(cni_field "$CNI_OUT" "r['cniVersion']")" 1.0.0

tm_step "bad configurations name the field"
cni_plugin_call ADD '{"cniVersion": "1.0.0", "type": "tunnelmesh-cni"}'
cni_expect_error "no name" 7 '"name" is missing'
cni_plugin_call ADD '{"cniVersion": "1.0.0", "name": "pods", "type": "tunnelmesh"}'
cni_expect_error "wrong type" 7 '"type" must be "tunnelmesh-cni"'
cni_plugin_call ADD "{\"cniVersion\": \"1.0.0\", $BASE, \"agentSocket\": \"tm0.sock\"}"
cni_expect_error "relative agentSocket" 7 '"agentSocket" must be an absolute path'
cni_plugin_call ADD "{\"cniVersion\": \"1.0.0\", $BASE, \"podInterface\": \"much-too-long-name\"}"
cni_expect_error "podInterface too long" 7 '"podInterface"'
cni_plugin_call ADD "{\"cniVersion\": \"1.0.0\", $BASE, \"mesh\": [\"demo\"]}"
cni_expect_error "mesh not a string" 7 '"mesh" must be a string'
cni_plugin_call ADD "{\"cniVersion\": \"1.0.0\", $BASE, \"prevResult\": {\"ips\": [{\"address\": \"10.1.1.1\"}]}}"
cni_expect_error "prevResult address without a length" 7 '"prevResult.ips[0].address"'
cni_plugin_call ADD 'cniVersion=1.0.0'
cni_expect_error "not JSON" 6 "not a JSON object"
cni_plugin_call ADD "{\"cniVersion\": \"1.0.0\", $BASE}" CNI_CONTAINERID=
cni_expect_error "no container ID" 4 "CNI_CONTAINERID is not set"
cni_plugin_call ADD "{\"cniVersion\": \"1.0.0\", $BASE}" CNI_NETNS=
cni_expect_error "no netns for ADD" 4 "CNI_NETNS is not set"

tm_step "an unsupported cniVersion is code 1"
cni_plugin_call ADD "{\"cniVersion\": \"0.3.1\", $BASE}"
cni_expect_error "cniVersion 0.3.1" 1 'cniVersion "0.3.1" is not supported by tunnelmesh-cni'
cni_plugin_call STATUS "{\"cniVersion\": \"1.0.0\", $BASE}"
cni_expect_error "STATUS with 1.0.0" 1 "STATUS needs cniVersion 1.1.0"

tm_step "tunnelmesh-cni install adds itself to the first conflist and leaves on SIGTERM"
mkdir -p "$TM_WORK/net.d" "$TM_WORK/opt-cni-bin"
# The primary plugin alone, as a cluster's CNI writes its file.
cat >"$TM_WORK/net.d/10-pods.conflist" <<EOF
{"cniVersion": "1.0.0", "name": "pods",
 "plugins": [{"type": "bridge", "bridge": "cni9", "ipam": {"type": "host-local",
              "dataDir": "$TM_WORK/ipam-inst", "ranges": [[{"subnet": "10.22.9.0/24"}]]}}]}
EOF
"$TM_CNI" install --conf-dir "$TM_WORK/net.d" --bin-dir "$TM_WORK/opt-cni-bin" --mesh demo \
  --agent-socket /var/lib/tunnelmesh/tm0.sock >"$TM_WORK/installer.log" 2>&1 &
INSTALLER=$!
TM_BG_PIDS+=("$INSTALLER")
# cni_chain: the plugin types of the installer's conflist, then the last entry's mesh and socket.
cni_chain() {
  "$TM_PY" -c 'import json, sys
c = json.load(open(sys.argv[1]))
print([p["type"] for p in c["plugins"]], c["plugins"][-1].get("mesh"), c["plugins"][-1].get("agentSocket"))' \
    "$TM_WORK/net.d/10-pods.conflist"
}
cni_installed() {
  [[ -x "$TM_WORK/opt-cni-bin/tunnelmesh-cni" ]] &&
    [[ "$(cni_chain)" == "['bridge', 'tunnelmesh-cni'] demo /var/lib/tunnelmesh/tm0.sock" ]]
}
tm_wait 5 "the installer to add tunnelmesh-cni (chain: $(cni_chain))" cni_installed
CNI_RC=0
CNI_OUT=$(CNI_COMMAND=VERSION "$TM_WORK/opt-cni-bin/tunnelmesh-cni" <<<'{}') || CNI_RC=$?
tm_expect_eq "the installed binary answers VERSION" "$CNI_RC" 0
kill -TERM "$INSTALLER"
INSTALLER_RC=0
wait "$INSTALLER" || INSTALLER_RC=$?
tm__bg_forget "$INSTALLER"
tm_expect_eq "installer exit code on SIGTERM ($(cat "$TM_WORK/installer.log"))" "$INSTALLER_RC" 0
tm_expect_eq "binary removed" "$(find "$TM_WORK/opt-cni-bin" -type f | wc -l)" 0
tm_expect_eq "chain after uninstall" "$(cni_chain | cut -d']' -f1)]" "['bridge']"

tm_step "topology: a coordinator and two nodes"
cni_two_nodes
SOCK_A=$(tm_member_state alpha)/${TM_MEMBER_IF[alpha]}.sock
SOCK_B=$(tm_member_state beta)/${TM_MEMBER_IF[beta]}.sock
cni_conflist "$TM_WORK/a.conflist" 1.0.0 a 10.22.1.0/24 "$SOCK_A"
cni_conflist "$TM_WORK/b.conflist" 0.4.0 b 10.22.2.0/24 "$SOCK_B"
# GC and STATUS are CNI 1.1.0, which Debian's bridge does not speak: tunnelmesh-cni alone.
cat >"$TM_WORK/a-gc.conflist" <<EOF
{"cniVersion": "1.1.0", "name": "pods-a",
 "plugins": [{"type": "tunnelmesh-cni", "mesh": "demo", "agentSocket": "$SOCK_A"}]}
EOF
tm_ns_new pod1
tm_ns_new pod2
tm_ns_new pod3

tm_step "no agent on the socket: ADD fails naming the socket, DEL still succeeds"
cni_runtime a ADD "$TM_WORK/a.conflist" pod1c0ffee "/run/netns/$(tm_ns pod1)" eth0 \
  "$TM_WORK/cni-cache" "K8S_POD_NAMESPACE=ci;K8S_POD_NAME=runner-1;K8S_POD_UID=u1"
cni_expect_error "ADD without agent" 100 "cannot reach the tunnelmesh agent at $SOCK_A"
grep -qF "is tunnelmesh-agent running on this node?" <<<"$CNI_OUT" ||
  tm_check_fail "the error does not ask whether the agent runs: $CNI_OUT"
tm_in pod1 ip link show eth0 >/dev/null 2>&1 ||
  tm_check_fail "the bridge plugin before tunnelmesh-cni made no eth0 in the pod"
cni_runtime a DEL "$TM_WORK/a.conflist" pod1c0ffee "/run/netns/$(tm_ns pod1)" eth0 "$TM_WORK/cni-cache"
tm_expect_eq "DEL without agent: exit code" "$CNI_RC" 0
grep -qF "removed the pod's interfaces, but cannot reach the tunnelmesh agent at $SOCK_A" \
  "$TM_WORK/runtime.stderr" || tm_check_fail "DEL without agent said nothing on stderr"
tm_expect_eq "DEL without agent removed the pod's eth0" \
  "$(tm_in pod1 ip -o link show eth0 2>/dev/null | wc -l)" 0
cni_runtime a STATUS "$TM_WORK/a-gc.conflist"
cni_expect_error "STATUS without agent" 50 "cannot reach the tunnelmesh agent at $SOCK_A"

tm_step "two nodes join; STATUS through the agent"
tm_member_start alpha
tm_member_start beta
tm_member_wait_peer 5 alpha beta
tm_member_wait_peer 5 beta alpha
tm_members_wait_ping 10 alpha beta
cni_runtime a STATUS "$TM_WORK/a-gc.conflist"
tm_expect_eq "STATUS with the agent up: exit code ($CNI_OUT)" "$CNI_RC" 0

tm_step "ADD a pod on each node through the chain"
cni_runtime a ADD "$TM_WORK/a.conflist" pod1c0ffee "/run/netns/$(tm_ns pod1)" eth0 \
  "$TM_WORK/cni-cache" "K8S_POD_NAMESPACE=ci;K8S_POD_NAME=runner-1;K8S_POD_UID=u1"
tm_expect_eq "ADD pod1: exit code ($CNI_OUT)" "$CNI_RC" 0
RESULT1=$CNI_OUT
cni_runtime b ADD "$TM_WORK/b.conflist" pod2c0ffee "/run/netns/$(tm_ns pod2)" eth0 \
  "$TM_WORK/cni-cache" "K8S_POD_NAMESPACE=ci;K8S_POD_NAME=git-1;K8S_POD_UID=u2"
tm_expect_eq "ADD pod2: exit code ($CNI_OUT)" "$CNI_RC" 0
RESULT2=$CNI_OUT
mapfile -t IPS1 < <(cni_mesh_ips "$RESULT1")
mapfile -t IPS2 < <(cni_mesh_ips "$RESULT2")
tm_log "pod1 ${IPS1[*]}, pod2 ${IPS2[*]}"
P1_4=$(printf '%s\n' "${IPS1[@]}" | grep -v : | head -n1 || true)
P2_4=$(printf '%s\n' "${IPS2[@]}" | grep -v : | head -n1 || true)
P1_6=$(printf '%s\n' "${IPS1[@]}" | grep : | head -n1 || true)
P2_6=$(printf '%s\n' "${IPS2[@]}" | grep : | head -n1 || true)
[[ "$P1_6" == fd99:99:* && "$P2_6" == fd99:99:* ]] ||
  tm_check_fail "pods did not get mesh IPv6 addresses in $TM_MESH_V6: pod1 '${IPS1[*]}', pod2 '${IPS2[*]}'"
[[ "$P1_4" == 10.99.* && "$P2_4" == 10.99.* && "$P1_4" != "$P2_4" ]] ||
  tm_fail "pods did not get distinct mesh IPv4 addresses: pod1 '${IPS1[*]}', pod2 '${IPS2[*]}'"
tm_expect_eq "pod1's result keeps the bridge's address first" \
  "$(cni_field "$RESULT1" "r['ips'][0]['address'].startswith('10.22.1.')")" True
tm_expect_eq "pod2's 0.4.0 result carries ip versions" \
  "$(cni_field "$RESULT2" "sorted(set(i['version'] for i in r['ips']))")" "['4', '6']"
tm_expect_eq "pod1's mesh0 sandbox" \
  "$(cni_field "$RESULT1" "[i['sandbox'] for i in r['interfaces'] if i['name'] == 'mesh0'][0]")" \
  "/run/netns/$(tm_ns pod1)"
cni_agent_records alpha pod1c0ffee || tm_check_fail "alpha's attachment file does not list pod1"
grep -q " $P1_4/32 " <<<" $(tm_in pod1 ip -br addr show dev mesh0) " ||
  tm_check_fail "pod1's mesh0 lacks $P1_4/32: $(tm_in pod1 ip -br addr show dev mesh0 2>&1)"
tm_expect_eq "pod1's default route stays the bridge's" \
  "$(tm_in pod1 ip route show default | grep -c 'dev eth0')" 1
grep -q "dev mesh0" <<<"$(tm_in pod1 ip route show "$TM_MESH_V4")" ||
  tm_check_fail "pod1 has no route for $TM_MESH_V4 over mesh0"
HOST1=$(cni_host_if pod1c0ffee)
tm_in a ip link show "$HOST1" >/dev/null 2>&1 ||
  tm_check_fail "node a has no host end $HOST1: $(tm_in a ip -br link 2>&1)"

tm_step "pods reach each other by mesh IP across the tunnel"
tm_wait_ping pod1 "$P2_4" 10
tm_ping pod1 "$P2_4" 3
tm_ping pod2 "$P1_4" 3
if [[ -n "$P1_6" && -n "$P2_6" ]]; then
  tm_wait_ping pod1 "$P2_6" 10
  tm_ping pod2 "$P1_6" 3
fi
tm_ping pod1 "$(tm_member_ip beta 4)" 2

tm_step "CHECK, and a repeated ADD keeps the addresses"
# tunnelmesh-cni's CHECK with the chain's cached result as prevResult, as the runtime passes it.
# (Not the whole chain: Debian's bridge 1.1 checks every address of the result on its own eth0,
# ours included, and fails.)
CHECK_CONFIG=$("$TM_PY" -c 'import json, sys
c = {"cniVersion": "1.0.0", "name": "pods-a", "type": "tunnelmesh-cni", "mesh": "demo",
     "agentSocket": sys.argv[1], "prevResult": json.load(open(sys.argv[2]))}
print(json.dumps(c))' "$SOCK_A" "$TM_WORK/cni-cache/pods-a-pod1c0ffee-eth0.json")
cni_check_pod1() {
  CNI_RC=0
  CNI_OUT=$(tm_in a env CNI_COMMAND=CHECK CNI_CONTAINERID=pod1c0ffee \
    CNI_NETNS="/run/netns/$(tm_ns pod1)" CNI_IFNAME=eth0 "$TM_CNI" <<<"$CHECK_CONFIG") || CNI_RC=$?
}
cni_check_pod1
tm_expect_eq "CHECK pod1: exit code ($CNI_OUT)" "$CNI_RC" 0
tm_in pod1 ip addr del "$P1_4/32" dev mesh0
cni_check_pod1
cni_expect_error "CHECK pod1 without its address" 103 "lacks its mesh address $P1_4"
tm_in pod1 ip addr add "$P1_4/32" dev mesh0
CNI_RC=0
CNI_OUT=$(tm_in a env CNI_PATH="$CNI_PATH" CNI_COMMAND=ADD CNI_CONTAINERID=pod1c0ffee \
  CNI_NETNS="/run/netns/$(tm_ns pod1)" CNI_IFNAME=eth0 \
  CNI_ARGS="K8S_POD_NAMESPACE=ci;K8S_POD_NAME=runner-1;K8S_POD_UID=u1" "$TM_CNI" \
  <<<"{\"cniVersion\": \"1.0.0\", \"name\": \"pods-a\", \"type\": \"tunnelmesh-cni\", \"mesh\": \"demo\", \"agentSocket\": \"$SOCK_A\"}") ||
  CNI_RC=$?
tm_expect_eq "repeated ADD: exit code ($CNI_OUT)" "$CNI_RC" 0
tm_expect_eq "repeated ADD: same addresses" "$(cni_mesh_ips "$CNI_OUT" | paste -sd' ')" "${IPS1[*]}"
tm_ping pod1 "$P2_4" 2

tm_step "DEL leaves no veth, route or address behind"
cni_runtime a DEL "$TM_WORK/a.conflist" pod1c0ffee "/run/netns/$(tm_ns pod1)" eth0 "$TM_WORK/cni-cache"
tm_expect_eq "DEL pod1: exit code ($CNI_OUT)" "$CNI_RC" 0
tm_expect_eq "node a: host end $HOST1 gone" "$(tm_in a ip -o link show "$HOST1" 2>/dev/null | wc -l)" 0
tm_expect_eq "node a: no tmp* veth left" "$(tm_in a ip -o link show | grep -c ': tmp' || true)" 0
tm_expect_eq "node a: no route to $P1_4" "$(tm_in a ip route show "$P1_4/32" | wc -l)" 0
tm_expect_eq "pod1: mesh0 gone" "$(tm_in pod1 ip -o link show mesh0 2>/dev/null | wc -l)" 0
tm_expect_eq "pod1: no mesh address" "$(tm_in pod1 ip -o addr show | grep -c "$P1_4" || true)" 0
tm_wait 5 "alpha to forget pod1 after DEL" cni_agent_forgot alpha pod1c0ffee
tm_wait 5 "pod1's mesh IP unreachable from pod2" \
  bash -c "! ip netns exec $(tm_ns pod2) ping -n -c1 -W1 $P1_4 >/dev/null 2>&1"

tm_step "GC removes a pod the runtime no longer lists"
cni_runtime a ADD "$TM_WORK/a.conflist" pod3c0ffee "/run/netns/$(tm_ns pod3)" eth0 \
  "$TM_WORK/cni-cache" "K8S_POD_NAMESPACE=ci;K8S_POD_NAME=runner-3;K8S_POD_UID=u3"
tm_expect_eq "ADD pod3: exit code ($CNI_OUT)" "$CNI_RC" 0
HOST3=$(cni_host_if pod3c0ffee)
tm_in a ip link show "$HOST3" >/dev/null 2>&1 || tm_check_fail "node a has no host end $HOST3"
cni_agent_records alpha pod3c0ffee || tm_check_fail "alpha's attachment file does not list pod3"
cni_runtime a GC "$TM_WORK/a-gc.conflist" "$TM_WORK/cni-cache" otherc0ffee:eth0
tm_expect_eq "GC: exit code ($CNI_OUT)" "$CNI_RC" 0
tm_expect_eq "GC removed $HOST3" "$(tm_in a ip -o link show "$HOST3" 2>/dev/null | wc -l)" 0
tm_wait 5 "alpha to forget pod3 after GC" cni_agent_forgot alpha pod3c0ffee
cni_runtime b DEL "$TM_WORK/b.conflist" pod2c0ffee "/run/netns/$(tm_ns pod2)" eth0 "$TM_WORK/cni-cache"
tm_expect_eq "DEL pod2: exit code ($CNI_OUT)" "$CNI_RC" 0
tm_expect_eq "node b: no tmp* veth left" "$(tm_in b ip -o link show | grep -c ': tmp' || true)" 0

tm_checks_done
