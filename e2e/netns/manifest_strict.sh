#!/usr/bin/env bash
# manifest_strict.sh: misspelt fields in the standalone coordinator's manifests are errors.
#
# Checks: at start, a manifest with a misspelt optional Mesh field (ipv6CIRD), a misspelt Secret
# field (stringdata) or a kind the coordinator does not read (MeshPeer) stops the operator with
# exit code 2 and a message naming the file, the object, the field and the closest known one
# (each case alone in a fresh manifest directory). With valid manifests it starts and a member
# joins; then a reload with a misspelt required field (ipv4CIRD) is not applied: the log says so
# with the unknown field, the coordinator keeps serving the mesh (a second member joins and reaches
# the first). A PeerPolicy with a misspelt field is rejected by name while the rest of the
# manifests apply (the reload is logged).
#
# Usage: manifest_strict.sh [AGENT_PATH [OPERATOR_PATH]]   (needs root; exits 77 otherwise)

# shellcheck source=nat_lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/nat_lib.sh"
tm_mesh_init manifest_strict 100 "$@"

tm_net_public coord
tm_net_public a
tm_net_public b
tm_coord_setup coord
MANIFESTS=$TM_WORK/coord.manifests
GOOD=$TM_WORK/mesh.yaml.good
cp "$MANIFESTS/mesh.yaml" "$GOOD"

# start_must_fail DESCRIPTION EXPECTED_MESSAGE: runs the operator on a copy of $MANIFESTS in the
# foreground; it must exit 2 and print EXPECTED_MESSAGE (the manifest path is that of the copy).
start_must_fail() {
  local dir=$TM_WORK/bad-manifests rc=0 out
  rm -rf "$dir"
  cp -r "$MANIFESTS" "$dir"
  out=$(tm_in coord timeout 10 "$TM_OPERATOR" --standalone --manifests "$dir" \
    --state-dir "$TM_WORK/bad.state" --listen-address 0.0.0.0 --grpc-port "$TM_GRPC_PORT" 2>&1) ||
    rc=$?
  printf '%s\n' "$out" >>"$(tm_coord_log)"
  tm_expect_eq "exit code of the operator with $1" "$rc" 2
  [[ "$out" == *"$dir/$2"* ]] || tm_fail "$1: the operator said '$out', want it to contain '$dir/$2'"
  tm_log "$1: exit code 2, '${out##*tunnelmesh-operator: }'"
}

tm_step "misspelt fields and foreign kinds stop the start with exit code 2"
sed 's/ipv6CIDR:/ipv6CIRD:/' "$GOOD" >"$MANIFESTS/mesh.yaml"
start_must_fail "spec.ipv6CIRD" \
  'mesh.yaml: Mesh "demo": unknown field spec.ipv6CIRD (did you mean spec.ipv6CIDR?)'
sed 's/^stringData:/stringdata:/' "$GOOD" >"$MANIFESTS/mesh.yaml"
start_must_fail "the Secret's stringdata" \
  'mesh.yaml: Secret "tunnelmesh/demo-join": unknown field stringdata (did you mean stringData?)'
cp "$GOOD" "$MANIFESTS/mesh.yaml"
cat >"$MANIFESTS/peer.yaml" <<'EOF'
apiVersion: tunnelmesh.io/v1alpha1
kind: MeshPeer
metadata: {name: laptop}
spec: {mesh: demo, kind: External}
EOF
start_must_fail "a MeshPeer" \
  'peer.yaml: kind MeshPeer ("laptop") is not read from manifests: they hold Mesh and PeerPolicy'
rm "$MANIFESTS/peer.yaml"
[[ ! -e "$TM_WORK/bad.state/ca-hash" ]] ||
  tm_fail "a refused start went on to write its state directory's ca-hash"

tm_step "valid manifests: the coordinator starts, alpha joins"
tm_coord_start
tm_members_join alpha:a

tm_step "a reload with spec.ipv4CIRD is not applied; the mesh keeps working"
sed 's/ipv4CIDR:/ipv4CIRD:/' "$GOOD" >"$MANIFESTS/mesh.yaml.tmp"
mv "$MANIFESTS/mesh.yaml.tmp" "$MANIFESTS/mesh.yaml"
not_applied() {
  grep -F 'manifests not applied, keeping the current Meshes: ' "$(tm_coord_log)" |
    grep -F 'mesh.yaml: Mesh "demo": unknown field spec.ipv4CIRD (did you mean spec.ipv4CIDR?)'
}
tm_wait 10 "the coordinator to refuse the misspelt reload" not_applied
tm_coord_alive
tm_member_new beta b
tm_member_start beta
tm_member_wait_peer 5 alpha beta
tm_wait_ping b "$(tm_member_ip alpha 4)" 10
tm_expect_eq "Meshes reloaded after the misspelt edit" \
  "$(grep -c 'manifests reloaded' "$(tm_coord_log)" || true)" 0

tm_step "a PeerPolicy with a misspelt field is rejected by name; the rest applies"
cp "$GOOD" "$MANIFESTS/mesh.yaml.tmp"
cat >>"$MANIFESTS/mesh.yaml.tmp" <<'EOF'
---
apiVersion: tunnelmesh.io/v1alpha1
kind: PeerPolicy
metadata: {name: typo}
spec: {mesh: demo, action: Deny, form: [{names: [beta]}]}
EOF
mv "$MANIFESTS/mesh.yaml.tmp" "$MANIFESTS/mesh.yaml"
rejected() {
  grep -F 'PeerPolicy rejected: ' "$(tm_coord_log)" |
    grep -F 'mesh.yaml: PeerPolicy "typo": unknown field spec.form (did you mean spec.from?)'
}
tm_wait 10 "the coordinator to reject PeerPolicy typo" rejected
tm_wait 10 "the reload with the other manifests" grep -q 'manifests reloaded: meshes=1 policies=0' \
  "$(tm_coord_log)"
tm_coord_alive
tm_wait_ping b "$(tm_member_ip alpha 4)" 10

tm_log "PASS"
