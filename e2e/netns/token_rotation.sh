#!/usr/bin/env bash
# token_rotation.sh: rotating the join token refuses the old token within seconds and disturbs no
# running member.
#
# Two members ping each other every 50 ms for the whole run. The token in the manifest's Secret is
# replaced (the standalone coordinator reloads manifests within a second).
#
# Checks: a third member joining with the old token is refused (exit 1, naming the join token)
# within a few seconds of the change and is not recorded; a fourth with the new token joins and
# reaches the others; with the Mesh's spec.joinTokenMaxMembers set to 3 (the mesh's size), a fifth
# member with the new token is refused (exit 1, naming the field), is not recorded and is counted
# in refused_token_cap; the first two lose no ping (0%), keep their mesh IPs, do not have to
# register again, and their preshared key does not change (the coordinator's preshared-keys.json
# is byte-for-byte the same, and no agent logged a key change after joining).
#
# Usage: token_rotation.sh [AGENT_PATH [OPERATOR_PATH]]   (needs root; exits 77 otherwise)

# shellcheck source=nat_lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/nat_lib.sh"
tm_mesh_init token_rotation 130 "$@"

tm__registrations() { grep -c "member registered: name=$1 " "$(tm_coord_log)" || true; }
tm__coord_reloaded_after() { # LINE: "manifests reloaded" logged after line LINE of the log
  tail -n +"$(( $1 + 1 ))" "$(tm_coord_log)" | grep -q 'manifests reloaded'
}

tm_step "topology: coordinator and five hosts on a public segment"
tm_net_public coord
tm_net_public a
tm_net_public b
tm_net_public c
tm_net_public d
tm_net_public e
tm_coord_setup coord
tm_coord_start

tm_step "two members join"
tm_members_join alpha:a beta:b
A4=$(tm_member_ip alpha 4)
B4=$(tm_member_ip beta 4)
tm_members_wait_ping 10 alpha beta
tm_flow_ping_start ab a "$B4" 40 0.05
tm_flow_ping_start ba b "$A4" 40 0.05
sleep 2
PSK_SUM=$(sha256sum <"$(tm_coord_state)/preshared-keys.json")
REG_ALPHA=$(tm__registrations alpha)
REG_BETA=$(tm__registrations beta)
KEYLOG_ALPHA=$(grep -c 'mesh preshared keys changed' "$(tm_member_log alpha)" || true)
KEYLOG_BETA=$(grep -c 'mesh preshared keys changed' "$(tm_member_log beta)" || true)

tm_step "rotate the join token in the manifest's Secret"
cp "$(tm_token_file)" "$TM_WORK/token.old"
NEW_TOKEN=$(head -c 24 /dev/urandom | sha256sum | cut -c1-32)
OLD_TOKEN=$(cat "$TM_WORK/token.old")
LOG_LINES=$(wc -l <"$(tm_coord_log)")
sed "s/$OLD_TOKEN/$NEW_TOKEN/" "$TM_WORK/coord.manifests/mesh.yaml" >"$TM_WORK/mesh.yaml.new"
grep -q "$NEW_TOKEN" "$TM_WORK/mesh.yaml.new" || tm_fail "could not put the new token in the manifest"
ROTATED_AT=$(tm__now_ms)
mv "$TM_WORK/mesh.yaml.new" "$TM_WORK/coord.manifests/mesh.yaml"
tm_wait 5 "the coordinator to reload the manifests" tm__coord_reloaded_after "$LOG_LINES"
tm_log "manifests reloaded $(tm_elapsed_since "$ROTATED_AT")s after the change"

tm_step "a member with the old token is refused"
tm_member_new gamma c
tm_member_join_once gamma "$TM_WORK/token.old" 20
REFUSED_AFTER=$(tm_elapsed_since "$ROTATED_AT")
tm_log "old-token join: exit $TM_JOIN_RC after ${REFUSED_AFTER}s since the rotation: $TM_JOIN_OUT"
tm_expect_eq "exit code of join with the old token" "$TM_JOIN_RC" 1
grep -qi "join token" <<<"$TM_JOIN_OUT" ||
  tm_fail "join with the old token did not name the join token in its message: $TM_JOIN_OUT"
"$TM_PY" -c 'import sys; sys.exit(0 if float(sys.argv[1]) <= 10 else 1)' "$REFUSED_AFTER" ||
  tm_fail "the old token was refused only ${REFUSED_AFTER}s after the rotation (want <= 10 s)"
if grep -q '"name": "gamma"' "$(tm_coord_state)/members.json"; then
  tm_fail "the coordinator recorded gamma despite its old token"
fi

tm_step "a member with the new token joins"
(umask 077 && echo "$NEW_TOKEN" >"$(tm_token_file)")
tm_member_new delta d
tm_member_start delta
D4=$(tm_member_ip delta 4)
tm_member_wait_peer 5 alpha delta
tm_member_wait_peer 5 delta beta
tm_wait_ping d "$A4" 10
tm_ping a "$D4" 3

tm_step "a cap on what the token admits: spec.joinTokenMaxMembers 3 refuses a fourth member"
LOG_LINES=$(wc -l <"$(tm_coord_log)")
sed 's/^  joinTokenSecretRef:/  joinTokenMaxMembers: 3\n  joinTokenSecretRef:/' \
  "$TM_WORK/coord.manifests/mesh.yaml" >"$TM_WORK/mesh.yaml.new"
grep -q 'joinTokenMaxMembers: 3' "$TM_WORK/mesh.yaml.new" ||
  tm_fail "could not add joinTokenMaxMembers to the manifest"
mv "$TM_WORK/mesh.yaml.new" "$TM_WORK/coord.manifests/mesh.yaml"
tm_wait 5 "the coordinator to reload the manifests" tm__coord_reloaded_after "$LOG_LINES"
tm_member_new epsilon e
tm_member_join_once epsilon "$(tm_token_file)" 20
tm_log "join over the cap: exit $TM_JOIN_RC: $TM_JOIN_OUT"
tm_expect_eq "exit code of join over the cap" "$TM_JOIN_RC" 1
grep -q 'spec.joinTokenMaxMembers (3)' <<<"$TM_JOIN_OUT" ||
  tm_fail "join over the cap did not name spec.joinTokenMaxMembers: $TM_JOIN_OUT"
if grep -q '"name": "epsilon"' "$(tm_coord_state)/members.json"; then
  tm_fail "the coordinator recorded epsilon over the cap"
fi
tm__refused_by_cap() {
  "$TM_PY" -c 'import json, sys; sys.exit(0 if json.load(open(sys.argv[1]))["coordinator"]["refused_token_cap"] == 1 else 1)' \
    "$(tm_coord_state)/counters.json" 2>/dev/null
}
tm_wait 5 "counters.json to count the refusal in refused_token_cap" tm__refused_by_cap

tm_step "the running members were not disturbed"
tm_flow_ping_check ab 0
tm_flow_ping_check ba 0
tm_expect_eq "alpha's mesh IPv4 after the rotation" "$(tm_member_ip alpha 4)" "$A4"
tm_expect_eq "beta's mesh IPv4 after the rotation" "$(tm_member_ip beta 4)" "$B4"
tm_expect_eq "alpha's registrations after the rotation" "$(tm__registrations alpha)" "$REG_ALPHA"
tm_expect_eq "beta's registrations after the rotation" "$(tm__registrations beta)" "$REG_BETA"
tm_expect_eq "preshared-keys.json after the rotation" \
  "$(sha256sum <"$(tm_coord_state)/preshared-keys.json")" "$PSK_SUM"
tm_expect_eq "alpha: key changes after joining" \
  "$(grep -c 'mesh preshared keys changed' "$(tm_member_log alpha)" || true)" "$KEYLOG_ALPHA"
tm_expect_eq "beta: key changes after joining" \
  "$(grep -c 'mesh preshared keys changed' "$(tm_member_log beta)" || true)" "$KEYLOG_BETA"
tm_member_alive alpha
tm_member_alive beta
tm_coord_alive
