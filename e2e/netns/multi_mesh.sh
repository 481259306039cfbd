#!/usr/bin/env bash
# multi_mesh.sh: a second Mesh added to a running coordinator disturbs no member that joined
# without --mesh, and a join token picks its own mesh.
#
# Two members of Mesh "demo" joined the way the docs show (no --mesh); one pings the other every
# 50 ms while a second Mesh, "lab", with its own join token, is added to the manifests directory.
# Checks: no ping is lost; a member restarted with the same command registers again into demo with
# its mesh IPs; after a coordinator restart (two meshes) both members register again within 5 s and
# none logs "name one"; the coordinator's "join with:" line then names --mesh; a newcomer holding
# lab's token joins lab (its status says mesh lab, its address is in lab's range) without --mesh; a
# newcomer with a token of neither mesh is refused (exit 1, "not valid for any Mesh"); one naming
# --mesh nope is told to check --mesh (exit 1).
#
# Usage: multi_mesh.sh [AGENT_PATH [OPERATOR_PATH]]   (needs root; exits 77 otherwise)

# shellcheck source=nat_lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/nat_lib.sh"
tm_mesh_init multi_mesh 150 "$@"

tm__registrations() { grep -c "member registered: name=$1 " "$(tm_coord_log)" || true; }
tm__coord_reloaded_after() { # LINE: "manifests reloaded: meshes=2" logged after line LINE
  tail -n +"$(( $1 + 1 ))" "$(tm_coord_log)" | grep -q 'manifests reloaded: meshes=2'
}

tm_step "topology: coordinator and four hosts on a public segment"
tm_net_public coord
tm_net_public a
tm_net_public b
tm_net_public c
tm_net_public d
tm_coord_setup coord
tm_coord_start

tm_step "two members join Mesh demo without --mesh"
tm_members_join alpha:a beta:b
A4=$(tm_member_ip alpha 4)
B4=$(tm_member_ip beta 4)
tm_members_wait_ping 10 alpha beta
tm_flow_ping_start ab a "$B4" 6 0.05

tm_step "a second Mesh, lab, with its own token"
LAB_TOKEN=$(head -c 24 /dev/urandom | sha256sum | cut -c1-32)
LOG_LINES=$(wc -l <"$(tm_coord_log)")
cat >"$TM_WORK/lab.yaml.new" <<EOF
apiVersion: tunnelmesh.io/v1alpha1
kind: Mesh
metadata:
  name: lab
spec:
  ipv4CIDR: 10.77.0.0/24
  joinTokenSecretRef: {namespace: tunnelmesh, name: lab-join, key: token}
---
apiVersion: v1
kind: Secret
metadata: {namespace: tunnelmesh, name: lab-join}
stringData:
  token: "$LAB_TOKEN"
EOF
mv "$TM_WORK/lab.yaml.new" "$TM_WORK/coord.manifests/lab.yaml"
tm_wait 5 "the coordinator to load the second Mesh" tm__coord_reloaded_after "$LOG_LINES"
tm_flow_ping_check ab 0

tm_step "beta restarted with the same command: back in demo with its addresses"
tm_member_stop beta
tm_member_start beta
tm_expect_eq "beta's mesh IPv4 after its restart" "$(tm_member_ip beta 4)" "$B4"
tm_expect_eq "beta's mesh after its restart" "$(tm_mjson beta "s['self']['mesh']")" demo
tm_member_wait_peer 5 alpha beta
tm_wait_ping b "$A4" 10

tm_step "the coordinator restarts with two meshes: both members register again"
REG_ALPHA=$(tm__registrations alpha)
REG_BETA=$(tm__registrations beta)
tm_coord_stop
tm_coord_start
registered_again() {
  (( $(tm__registrations alpha) > REG_ALPHA && $(tm__registrations beta) > REG_BETA ))
}
tm_wait 5 "alpha and beta to register again" registered_again
for m in alpha beta; do
  if grep -q 'name one' "$(tm_member_log "$m")"; then
    tm_check_fail "$m was asked to name a mesh: $(grep 'name one' "$(tm_member_log "$m")" | tail -n1)"
  fi
done
tm_expect_eq "alpha's mesh IPv4 after the coordinator restart" "$(tm_member_ip alpha 4)" "$A4"
JOIN_HINT=$(grep 'join with:' "$(tm_coord_log)" | tail -n 1)
tm_log "coordinator: $JOIN_HINT"
grep -q -- '--mesh NAME' <<<"$JOIN_HINT" ||
  tm_check_fail "the coordinator's join hint does not name --mesh with two meshes: $JOIN_HINT"

tm_step "a newcomer's token picks its mesh: gamma joins lab without --mesh"
cp "$(tm_token_file)" "$TM_WORK/token.demo"
(umask 077 && echo "$LAB_TOKEN" >"$(tm_token_file)")
tm_member_new gamma c
tm_member_start gamma
cp "$TM_WORK/token.demo" "$(tm_token_file)"
tm_expect_eq "gamma's mesh" "$(tm_mjson gamma "s['self']['mesh']")" lab
G4=$(tm_member_ip gamma 4)
[[ "$G4" == 10.77.0.* ]] || tm_check_fail "gamma's address $G4 is not in lab's range 10.77.0.0/24"
# Meshes do not see each other.
tm_expect_eq "gamma's peers" "$(tm_mjson gamma "len(s['peers'])")" 0

tm_step "refusals name what to fix"
head -c 24 /dev/urandom | sha256sum | cut -c1-32 >"$TM_WORK/token.wrong"
tm_member_new delta d
tm_member_join_once delta "$TM_WORK/token.wrong" 20
tm_log "join with a token of no mesh: exit $TM_JOIN_RC: $TM_JOIN_OUT"
tm_expect_eq "exit code of join with a token of no mesh" "$TM_JOIN_RC" 1
grep -q 'not valid for any Mesh' <<<"$TM_JOIN_OUT" ||
  tm_check_fail "join with a token of no mesh did not say so: $TM_JOIN_OUT"
tm_member_join_once delta "$(tm_token_file)" 20 --mesh nope
tm_log "join --mesh nope: exit $TM_JOIN_RC: $TM_JOIN_OUT"
tm_expect_eq "exit code of join --mesh nope" "$TM_JOIN_RC" 1
grep -q 'no Mesh named "nope".*check --mesh' <<<"$TM_JOIN_OUT" ||
  tm_check_fail "join --mesh nope did not name the flag: $TM_JOIN_OUT"

tm_step "everyone is still running"
tm_member_alive alpha
tm_member_alive beta
tm_coord_alive
tm_checks_done
