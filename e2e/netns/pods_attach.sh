#!/usr/bin/env bash
# pods_attach.sh: the agent's side of tunnelmesh-cni (docs/troubleshooting.md, "Pods"), with the
# plugin's requests sent over the control socket as the plugin sends them ("cni " + JSON), and
# the pod's interfaces made here the way the plugin makes them (a veth pair: the host end, named
# by the agent, in the member's namespace, the pod end "mesh0" in a pod namespace; the pod's
# addresses as /32 and /128, routes for the mesh's ranges only, a host route to each address,
# proxy ARP and fe80::1 on the host end).
#
# Checks: STATUS answers ok; a conflist of another mesh is refused naming both meshes (101); a
# request that is not JSON is a decode error (6); a pods file that does not parse stops the agent
# with exit code 1 and a message naming it; ADD on two members gives each pod its addresses,
# the mesh's routes, the MTU and the host interface name, and a repeated ADD answers the same;
# CHECK knows the attachment; the pods reach each other, and the other member, by mesh IP both
# ways, and by name through the member's mesh DNS server (<pod>.<namespace>.pod.mesh); `status
# --json` lists the attached pods and counts the pods in the map; the pods file is mode 0600; an
# agent restart keeps the pod (same addresses, still reachable, ADD answers the same); a pod
# whose namespace goes away is detached by the agent's collection and leaves the other member's
# map; DEL detaches; a CNI GC detaches what it does not list.
#
# Usage: pods_attach.sh [AGENT_PATH [OPERATOR_PATH]]   (needs root; exits 77 otherwise)

# shellcheck source=nat_lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/nat_lib.sh"
# shellcheck source=pod_lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/pod_lib.sh"
tm_mesh_init pods_attach 200 "$@"
command -v dig >/dev/null || tm_fail "required tool 'dig' is not installed (apt-get install bind9-dnsutils)"

# Collections every 2 s (and attachments that young), instead of every 30 s after 60 s.
export TUNNELMESH_TEST_POD_COLLECT_SECONDS=2

# pods_cni MEMBER JSON: one request to MEMBER's agent over its control socket; prints the answer.
pods_cni() {
  "$TM_PY" - "$(tm_member_state "$1")/${TM_MEMBER_IF[$1]}.sock" "$2" <<'PY'
import socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.settimeout(30)
s.connect(sys.argv[1])
s.sendall(b"cni " + sys.argv[2].encode() + b"\n")
data = b""
while True:
    chunk = s.recv(65536)
    if not chunk:
        break
    data += chunk
print(data.decode())
PY
}

# pods_req COMMAND CONTAINER [MESH [VALID...]]: the request JSON for a pod "runner-CONTAINER" in
# namespace "ci".
pods_req() {
  "$TM_PY" - "$@" <<'PY'
import json, sys
command, container = sys.argv[1], sys.argv[2]
mesh = sys.argv[3] if len(sys.argv) > 3 else "demo"
request = {"command": command, "mesh": mesh, "containerId": container, "ifName": "mesh0",
           "netns": "/var/run/netns/" + container, "podNamespace": "ci",
           "podName": "runner-" + container, "podUid": "uid-" + container}
if command == "GC":
    request["validAttachments"] = [{"containerId": c, "ifName": "mesh0"} for c in sys.argv[4:]]
print(json.dumps(request))
PY
}

# pods_get JSON EXPR: EXPR evaluated with `r` bound to the answer JSON.
pods_get() {
  "$TM_PY" -c '
import json, sys
r = json.loads(sys.argv[1])
v = eval(sys.argv[2])
print(json.dumps(v) if isinstance(v, (dict, list, bool)) or v is None else v)' "$1" "$2" ||
    tm_fail "cannot read '$2' from the agent's answer: $1"
}

# pods_add MEMBER CONTAINER: ADD, which must attach; the answer is left in POD_ANSWER.
pods_add() {
  POD_ANSWER=$(pods_cni "$1" "$(pods_req ADD "$2")")
  [[ "$(pods_get "$POD_ANSWER" "r.get('attached')")" == true ]] ||
    tm_fail "ADD of $2 on $1 did not attach: $POD_ANSWER"
}

# pods_plumb MEMBER PODNSID ANSWER: what tunnelmesh-cni does after the agent's ADD answer.
pods_plumb() {
  tm_pod_plumb "${TM_MEMBER_NSID[$1]}" "$2" "$(pods_get "$3" "r['hostInterface']")" \
    "$(pods_get "$3" "r['mtu']")" "$(pods_get "$3" "' '.join(r['addresses'])")" \
    "$(pods_get "$3" "' '.join(r['routes'])")"
}

pods_attached_names() { # MEMBER: the names in its status's attached_pods
  tm_mjson "$1" "' '.join(sorted(p['name'] for p in s.get('attached_pods', []) if not p['detaching']))"
}
pods__peers_is() { # MEMBER COUNT
  local got
  got=$(tm__mjson "$1" "s.get('pod_peers')") || return 1
  echo "$1 counts $got pods in the map (want $2)"
  [[ "$got" == "$2" ]]
}
pods__attached_is() { # MEMBER NAMES
  local got
  got=$(pods_attached_names "$1")
  echo "$1 attached: '$got' (want '$2')"
  [[ "$got" == "$2" ]]
}

tm_step "coordinator and two members"
tm_net_public coord
tm_net_public a
tm_net_public b
tm_coord_setup coord
tm_coord_start
tm_members_join alpha:a beta:b
tm_members_wait_ping 10 alpha beta

tm_step "STATUS, a conflist of another mesh, a request that is not JSON"
answer=$(pods_cni alpha "$(pods_req STATUS "")")
[[ "$(pods_get "$answer" "'error' not in r")" == true ]] || tm_fail "STATUS failed: $answer"
answer=$(pods_cni alpha "$(pods_req ADD c-other prod)")
tm_expect_eq "another mesh's error code" "$(pods_get "$answer" "r['error']['code']")" 101
msg=$(pods_get "$answer" "r['error']['msg']")
[[ "$msg" == *'"prod"'* && "$msg" == *'"demo"'* ]] ||
  tm_check_fail "the mesh error names neither or one of the meshes: $msg"
answer=$(pods_cni alpha "{not json")
tm_expect_eq "a request that is not JSON" "$(pods_get "$answer" "r['error']['code']")" 6

tm_step "a pods file that does not parse stops the agent, naming it"
tm_member_stop alpha
PODS_FILE="$(tm_member_state alpha)/${TM_MEMBER_IF[alpha]}.pods.json"
echo '{"version": 1, "pods": [' >"$PODS_FILE"
tm_member_join_once alpha "$(tm_token_file)" 20
tm_expect_eq "join's exit code with a bad pods file" "$TM_JOIN_RC" 1
[[ "$TM_JOIN_OUT" == *"$PODS_FILE is not a valid pod attachment file"* ]] ||
  tm_check_fail "the error does not name the pods file: $TM_JOIN_OUT"
rm "$PODS_FILE"
tm_member_start alpha
tm_member_wait_peer 5 alpha beta

tm_step "ADD a pod on each member"
pods_add alpha ca1
ANSWER_A=$POD_ANSWER
pods_add beta cb1
ANSWER_B=$POD_ANSWER
tm_log "alpha's pod: $ANSWER_A"
tm_log "beta's pod: $ANSWER_B"
tm_expect_eq "alpha's pod's name" "$(pods_get "$ANSWER_A" "r['name']")" runner-ca1.ci.pod
tm_expect_eq "the routes" "$(pods_get "$ANSWER_A" "' '.join(r['routes'])")" \
  "$TM_MESH_V4 $TM_MESH_V6"
tm_expect_eq "the MTU" "$(pods_get "$ANSWER_A" "r['mtu']")" \
  "$(ip -n "$(tm_ns a)" -o link show "${TM_MEMBER_IF[alpha]}" | sed -n 's/.* mtu \([0-9]*\) .*/\1/p')"
POD_A4=$(pods_get "$ANSWER_A" "[a for a in r['addresses'] if ':' not in a][0]")
POD_A6=$(pods_get "$ANSWER_A" "[a for a in r['addresses'] if ':' in a][0]")
POD_B4=$(pods_get "$ANSWER_B" "[a for a in r['addresses'] if ':' not in a][0]")
pods_add alpha ca1
tm_expect_eq "a repeated ADD" "$POD_ANSWER" "$ANSWER_A"
answer=$(pods_cni alpha "$(pods_req CHECK ca1)")
tm_expect_eq "CHECK of an attachment" "$(pods_get "$answer" "r['attached']")" true
answer=$(pods_cni alpha "$(pods_req CHECK c-unknown)")
tm_expect_eq "CHECK of an unknown one" "$(pods_get "$answer" "r['attached']")" false
[[ "$(stat -c %a "$(tm_member_state alpha)/${TM_MEMBER_IF[alpha]}.pods.json")" == 600 ]] ||
  tm_check_fail "the pods file is not mode 0600"

tm_step "pods reach each other and the other member"
pods_plumb alpha pa "$ANSWER_A"
pods_plumb beta pb "$ANSWER_B"
tm_wait_ping pa "$POD_B4" 10
tm_ping pa "$POD_B4" 3
tm_ping pb "$POD_A4" 3
tm_ping b "$POD_A4" 3
tm_ping pa "$(tm_member_ip beta 4)" 3
tm_wait 10 "alpha's pod's IPv6 address to answer beta" tm_ping_once b "$POD_A6"
tm_wait 5 "beta to count both pods in its map" pods__peers_is beta 2
tm_expect_eq "alpha's attached pods" "$(pods_attached_names alpha)" runner-ca1.ci.pod
got=$(tm_in b dig +short "@$(tm_member_dns beta)" runner-ca1.ci.pod.mesh A)
tm_expect_eq "beta's DNS for alpha's pod" "$got" "$POD_A4"
got=$(tm_in b dig +noall +comments "@$(tm_member_dns beta)" ci.pod.mesh A | grep -o 'status: [A-Z]*')
tm_expect_eq "the name above the pods" "$got" "status: NOERROR"

tm_step "alpha restarts: its pod keeps its addresses"
tm_member_stop alpha
tm_member_start alpha
tm_expect_eq "alpha's attached pods after the restart" "$(pods_attached_names alpha)" \
  runner-ca1.ci.pod
pods_add alpha ca1
tm_expect_eq "ADD after the restart" "$POD_ANSWER" "$ANSWER_A"
grep -q "1 pods attached before this start" "$(tm_member_log alpha)" ||
  tm_check_fail "alpha did not log the pods it found at start"
# The restarted side sends first: beta still holds the old session until its handshake timers
# run out (15 s), as after any peer restart.
tm_wait_ping pa "$POD_B4" 20
tm_ping pb "$POD_A4" 3

tm_step "a pod whose namespace goes away is collected"
pods_add alpha ca2
ANSWER_A2=$POD_ANSWER
pods_plumb alpha pa2 "$ANSWER_A2"
tm_wait 5 "beta to count three pods" pods__peers_is beta 3
ip netns del "$(tm_ns pa2)"
tm_wait 15 "alpha to detach the pod without an interface" pods__attached_is alpha runner-ca1.ci.pod
tm_wait 5 "beta to count two pods again" pods__peers_is beta 2
grep -q "is gone (the pod's network namespace went away)" "$(tm_member_log alpha)" ||
  tm_check_fail "alpha did not log why it detached the pod"

tm_step "DEL and GC"
answer=$(pods_cni beta "$(pods_req DEL cb1)")
[[ "$(pods_get "$answer" "'error' not in r")" == true ]] || tm_fail "DEL failed: $answer"
tm_wait 5 "beta to detach its pod" pods__attached_is beta ""
answer=$(pods_cni beta "$(pods_req DEL cb1)")
[[ "$(pods_get "$answer" "'error' not in r")" == true ]] || tm_fail "a second DEL failed: $answer"
pods_add alpha ca3
tm_wait 5 "alpha to list two pods" pods__attached_is alpha "runner-ca1.ci.pod runner-ca3.ci.pod"
answer=$(pods_cni alpha "$(pods_req GC "" demo ca1)")
[[ "$(pods_get "$answer" "'error' not in r")" == true ]] || tm_fail "GC failed: $answer"
tm_wait 5 "alpha to keep only the pod GC listed" pods__attached_is alpha runner-ca1.ci.pod
tm_wait 5 "beta to count one pod" pods__peers_is beta 1

tm_checks_done
