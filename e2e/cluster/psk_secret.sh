#!/usr/bin/env bash
# psk_secret.sh: the meshes' preshared keys in the operator's keys Secret, on a real
# kube-apiserver and etcd (issue 11, "secrets apart"). The operator runs in Kubernetes mode with
# an admin kubeconfig (RBAC is operator_mesh.sh's subject) from a network namespace; two members
# join with the Mesh's join token from their own namespaces and ping each other all along.
#
# Checks:
#   - once Mesh demo exists, Secret tunnelmesh/tunnelmesh-coordinator holds psk.demo (generation
#     0, step stable) next to the coordinator's own keys;
#   - an operator restart (SIGTERM, then a new process with an empty --state-dir, as a new pod)
#     keeps the same key: the record is unchanged, members apply no key change, handshakes after
#     the restart succeed, no ping is lost;
#   - `kubectl patch` of spec.presharedKeyGeneration rolls the key over (--psk-rollover-step 3s):
#     the Secret's record goes through accept-new and use-new to stable at generation 1 with a new
#     key and no old one, counters.json counts three rollover steps and no failed save, handshakes
#     keep succeeding (none invalid) and no ping is lost; no key appears in any log.
#
# Usage: psk_secret.sh [AGENT_PATH [OPERATOR_PATH]]   (needs root; exits 77 otherwise)

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=../netns/nat_lib.sh
source "$HERE/../netns/nat_lib.sh"
tm_mesh_init psk_secret 300 "$@"
# kube.sh for its functions only; lib.sh's teardown ends etcd and kube-apiserver (by pid).
# shellcheck source=kube.sh
source "$HERE/kube.sh"
KUBE_TEST=psk_secret
KUBE_WORK=$TM_WORK/kube
mkdir -p "$KUBE_WORK"

# Test-only: members renew their sessions every 2 s (the protocol's REKEY_AFTER_TIME is 120 s), so
# that handshakes with the mesh's key happen throughout.
export TUNNELMESH_TEST_REKEY_AFTER_SECONDS=2

NS=tunnelmesh
SECRET=tunnelmesh-coordinator
API_ADDR=10.251.0.1 # the API server as the operator's namespace reaches it
OP_PID=""

eval "cluster__dump_netns() $(declare -f tm_net_dump_diagnostics | tail -n +2)"
tm_net_dump_diagnostics() {
  cluster__dump_netns
  echo "-------- operator log (last 80 lines)" >&2
  tail -n 80 "$(tm_coord_log)" >&2 || true
  kube_dump_diagnostics
}

k() { kube_kubectl "$@"; }

# psk_field FIELD: a field of mesh demo's record in the Secret, or "sha:KEY" for a short hash of
# a key (the keys themselves are never printed); "absent" when the Secret has no psk.demo.
psk_field() {
  local b64
  b64=$(k -n "$NS" get secret "$SECRET" -o 'jsonpath={.data.psk\.demo}' 2>/dev/null) || true
  if [[ -z "$b64" ]]; then
    echo absent
    return 0
  fi
  base64 -d <<<"$b64" | "$TM_PY" -c '
import hashlib, json, sys
record = json.load(sys.stdin)
field = sys.argv[1]
if field.startswith("sha:"):
    value = record.get(field[4:])
    print(hashlib.sha256(value.encode()).hexdigest()[:16] if value else "none")
else:
    print(record.get(field, "none"))' "$1"
}
psk__is() { # FIELD WANT
  local got
  got=$(psk_field "$1")
  echo "psk.demo $1: $got"
  [[ "$got" == "$2" ]]
}
# psk_key_b64 FIELD: a key of the record, only to grep the logs for it (never printed).
psk_key_b64() {
  k -n "$NS" get secret "$SECRET" -o 'jsonpath={.data.psk\.demo}' | base64 -d |
    "$TM_PY" -c 'import json, sys; print(json.load(sys.stdin).get(sys.argv[1], ""))' "$1"
}
counter() { # NAME: coordinator.NAME in counters.json
  "$TM_PY" -c 'import json, sys; print(json.load(open(sys.argv[1]))["coordinator"][sys.argv[2]])' \
    "$(tm_coord_state)/counters.json" "$1"
}
counter__is() { # NAME WANT
  local got
  got=$(counter "$1") || return 1
  echo "counters.json coordinator.$1: $got"
  [[ "$got" == "$2" ]]
}
invalid() { tm_mjson "$1" "s['drops']['handshake_invalid']"; }
key_changes() { grep -c 'mesh preshared keys changed' "$(tm_member_log "$1")" || true; }
# The operator's log since its last start.
op_log_since_start() {
  awk '/===== operator start/ {buf = ""} {buf = buf $0 "\n"} END {printf "%s", buf}' \
    "$(tm_coord_log)"
}
op__registered() { op_log_since_start | grep -q "member registered: name=$1 "; }

tm_step "topology: the operator's host and two members on a public segment"
tm_net_public coord
tm_net_public a
tm_net_public b
TM_COORD_NSID=coord
TM_COORD_ADDR=${TM_NET_ADDR[coord]}
# The operator's host reaches the API server (in this namespace) over a veth.
kube_link_namespace "$(tm_ns coord)" "tmkh$$" "tmkc$$" "$API_ADDR" 10.251.0.2

tm_step "a real API server, the CRDs, Mesh demo and its join-token Secret"
KUBE_APISERVER_EXTRA_ARGS="--bind-address 0.0.0.0 --advertise-address $API_ADDR"
kube_up
TM_BG_PIDS+=("$KUBE_ETCD_PID" "$KUBE_APISERVER_PID")
k apply -f "$KUBE_REPO_ROOT/crds" >/dev/null
kube_wait 30 "CRD meshes.tunnelmesh.io to be Established" \
  kube_kubectl wait --for=condition=Established --timeout=5s crd/meshes.tunnelmesh.io
kube_wait 30 "kubectl to know the kind Mesh" kube_kubectl get meshes
TOKEN=$(head -c 24 /dev/urandom | sha256sum | cut -c1-32)
(umask 077 && echo "$TOKEN" >"$(tm_token_file)")
k create namespace "$NS" >/dev/null
k apply -f - >/dev/null <<YAML
apiVersion: v1
kind: Secret
metadata: {namespace: $NS, name: demo-join}
stringData: {token: "$TOKEN"}
---
apiVersion: tunnelmesh.io/v1alpha1
kind: Mesh
metadata: {name: demo}
spec:
  ipv4CIDR: $TM_MESH_V4
  defaultAction: Allow
  joinTokenSecretRef: {namespace: $NS, name: demo-join, key: token}
YAML
# The operator's kubeconfig: the admin's, at the address its namespace reaches.
sed "s#https://127.0.0.1:$KUBE_PORT#https://$API_ADDR:$KUBE_PORT#" "$KUBECONFIG_FILE" \
  >"$TM_WORK/operator.kubeconfig"

# op_start: the operator in Kubernetes mode with a fresh (empty) state directory, as a new pod
# has; returns once it serves.
op_start() {
  rm -rf "$(tm_coord_state)"
  printf '\n===== operator start at %s =====\n' "$(date +%H:%M:%S.%3N)" >>"$(tm_coord_log)"
  ip netns exec "$(tm_ns coord)" "$TM_OPERATOR" --kubeconfig "$TM_WORK/operator.kubeconfig" \
    --namespace "$NS" --identity psk-secret-test --state-dir "$(tm_coord_state)" \
    --listen-address 0.0.0.0 --grpc-port "$TM_GRPC_PORT" --stun-port "$TM_STUN_PORT" \
    --relay-port "$TM_RELAY_PORT" --psk-rollover-step 3s --log-level debug \
    >>"$(tm_coord_log)" 2>&1 &
  OP_PID=$!
  TM_BG_PIDS+=("$OP_PID")
  tm_wait 30 "the operator to serve" op__ready
  tm_log "operator up (pid $OP_PID)"
}
op__ready() {
  if tm__wait_exit "$OP_PID" 0; then tm_fail "the operator exited with code $TM_EXIT_RC"; fi
  [[ -s "$(tm_coord_state)/ca-hash" ]] && tm__listening coord "$TM_GRPC_PORT" &&
    op_log_since_start | grep -q 'coordinator ready'
}
op_stop() { # SIGTERM, must exit 0
  kill -TERM "$OP_PID"
  tm__wait_exit "$OP_PID" 10 || tm_fail "the operator did not stop within 10s of SIGTERM"
  tm__bg_forget "$OP_PID"
  [[ "$TM_EXIT_RC" == 0 ]] || tm_fail "the operator exited with code $TM_EXIT_RC after SIGTERM"
  tm_log "operator stopped"
}

tm_step "the operator makes Mesh demo's preshared key and keeps it in its keys Secret"
op_start
tm_wait 10 "Secret $NS/$SECRET to hold psk.demo" psk__is generation 0
tm_expect_eq "psk.demo step" "$(psk_field step)" stable
tm_expect_eq "psk.demo old key" "$(psk_field sha:previous)" none
for key in ca.crt ca.key server.crt server.key relay.key; do
  [[ -n "$(k -n "$NS" get secret "$SECRET" -o "jsonpath={.data.${key//./\\.}}")" ]] ||
    tm_fail "Secret $NS/$SECRET lacks the coordinator's $key next to psk.demo"
done
KEY0=$(psk_field sha:key)
KEY0_B64=$(psk_key_b64 key)

tm_step "two members join and reach each other directly"
tm_members_join alpha:a beta:b
A4=$(tm_member_ip alpha 4)
B4=$(tm_member_ip beta 4)
tm_wait_ping a "$B4" 10
tm_member_wait_path 10 alpha beta direct
tm_member_wait_path 10 beta alpha direct
CHANGES_A=$(key_changes alpha)
CHANGES_B=$(key_changes beta)
INVALID_A0=$(invalid alpha)
INVALID_B0=$(invalid beta)

tm_step "an operator restart (a new pod) keeps the same preshared key"
tm_flow_ping_start restart a "$B4" 20 0.05
op_stop
op_start
RESTARTED_AT=$(date +%s)
tm_expect_eq "psk.demo key after the restart (hash)" "$(psk_field sha:key)" "$KEY0"
tm_expect_eq "psk.demo generation after the restart" "$(psk_field generation)" 0
tm_wait 15 "alpha to register again with the restarted operator" op__registered alpha
tm_wait 15 "beta to register again with the restarted operator" op__registered beta
tm_wait 15 "alpha to complete a handshake with beta after the restart" \
  tm__handshake_after alpha beta "$RESTARTED_AT"
tm_wait 15 "beta to complete a handshake with alpha after the restart" \
  tm__handshake_after beta alpha "$RESTARTED_AT"
tm_expect_eq "alpha: key changes applied across the restart" "$(key_changes alpha)" "$CHANGES_A"
tm_expect_eq "beta: key changes applied across the restart" "$(key_changes beta)" "$CHANGES_B"
tm_expect_eq "alpha: failed handshakes across the restart" "$(invalid alpha)" "$INVALID_A0"
tm_expect_eq "beta: failed handshakes across the restart" "$(invalid beta)" "$INVALID_B0"
tm_flow_ping_check restart 0

tm_step "kubectl patch of spec.presharedKeyGeneration rolls the key over"
tm_flow_ping_start roll a "$B4" 25 0.05
tm_flow_ping_start rollback b "$A4" 25 0.05
H_BEFORE=$(($(tm_handshakes alpha beta) + $(tm_handshakes beta alpha)))
ROLL_START=$(tm__now_ms)
k patch mesh demo --type merge -p '{"spec":{"presharedKeyGeneration":1}}' >/dev/null
tm_wait 5 "psk.demo to reach step accept-new" psk__is step accept-new
tm_expect_eq "psk.demo generation in step 1/3" "$(psk_field generation)" 1
tm_expect_eq "psk.demo previous key in step 1/3 (hash)" "$(psk_field sha:previous)" "$KEY0"
tm_log "step 1/3 in the Secret after $(tm_elapsed_since "$ROLL_START")s"
tm_wait 10 "psk.demo to reach step use-new" psk__is step use-new
tm_log "step 2/3 in the Secret after $(tm_elapsed_since "$ROLL_START")s"
tm_wait 10 "psk.demo to be stable again" psk__is step stable
DONE_AT=$(date +%s)
tm_log "rollover done in the Secret after $(tm_elapsed_since "$ROLL_START")s"
tm_expect_eq "psk.demo generation after the rollover" "$(psk_field generation)" 1
tm_expect_eq "psk.demo old key after the rollover" "$(psk_field sha:previous)" none
[[ "$(psk_field sha:key)" != "$KEY0" ]] || tm_fail "the key in the Secret did not change"
tm_wait 5 "counters.json to count three rollover steps" counter__is psk_rollover_steps 3
tm_expect_eq "counters.json: failed preshared-key saves" "$(counter psk_save_failures)" 0
tm_wait 15 "alpha to complete a handshake with beta after the rollover" \
  tm__handshake_after alpha beta $((DONE_AT + 1))
tm_wait 15 "beta to complete a handshake with alpha after the rollover" \
  tm__handshake_after beta alpha $((DONE_AT + 1))
H_AFTER=$(($(tm_handshakes alpha beta) + $(tm_handshakes beta alpha)))
tm_expect_gt "handshakes during and after the rollover" $((H_AFTER - H_BEFORE)) 2
tm_expect_eq "alpha: failed handshakes in the rollover" "$(invalid alpha)" "$INVALID_A0"
tm_expect_eq "beta: failed handshakes in the rollover" "$(invalid beta)" "$INVALID_B0"
tm_expect_eq "alpha: key changes applied in the rollover" "$(key_changes alpha)" \
  $((CHANGES_A + 3))
tm_expect_eq "beta: key changes applied in the rollover" "$(key_changes beta)" \
  $((CHANGES_B + 3))
tm_flow_ping_check roll 0
tm_flow_ping_check rollback 0

tm_step "no preshared key in any log"
KEY1_B64=$(psk_key_b64 key)
for log in "$(tm_coord_log)" "$(tm_member_log alpha)" "$(tm_member_log beta)"; do
  if grep -qF -e "$KEY0_B64" -e "$KEY1_B64" "$log"; then
    tm_fail "a preshared key appears in $log"
  fi
done

tm_member_alive alpha
tm_member_alive beta
op_stop
tm_checks_done
