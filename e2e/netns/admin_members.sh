#!/usr/bin/env bash
# admin_members.sh: the standalone coordinator's admin surface (tunnelmesh-operator members,
# remove, readmit, refused over STATE_DIR/admin.sock).
#
# Checks: the admin socket is 0600 and goes away when the coordinator stops; `members` lists both
# members online with kind, mesh and IPs; a stopped agent shows offline with a last-seen time;
# `remove` of the stopped member makes the other member drop it within seconds and takes it out of
# members.json; it cannot rejoin (exit 1, the admin message naming `readmit`), also after a
# coordinator restart (removed-keys.json); `refused` lists that attempt and a wrong token's, with
# source, key and reason, and the coordinator logged both, never the token; `readmit` lets it join
# again; a stale socket left by kill -9 is replaced at the next start. Two agents with one copied
# state dir: the coordinator warns naming the member and both sources, the agents warn "another
# agent is using this node key"; `remove` of that key ends both agents. Usage errors exit 2, a
# state dir with no coordinator exits 1 saying so.
#
# Usage: admin_members.sh [AGENT_PATH [OPERATOR_PATH]]   (needs root; exits 77 otherwise)

# shellcheck source=nat_lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/nat_lib.sh"
tm_mesh_init admin_members 140 "$@"

admin() { "$TM_OPERATOR" "$1" --state-dir "$(tm_coord_state)" "${@:2}"; }
# admin_json COMMAND PYTHON_EXPR: evaluate PYTHON_EXPR with `d` bound to COMMAND's --json output
# and `member(n)` the member named n (None if absent).
admin_json() {
  local out
  out=$(admin "$1" --json) || { echo "tunnelmesh-operator $1 failed: $out"; return 1; }
  "$TM_PY" -c '
import json, sys
d = json.loads(sys.argv[1])
def member(n):
    return next((m for m in d.get("members", []) if m["name"] == n), None)
r = eval(sys.argv[2])
print(json.dumps(r) if isinstance(r, (list, dict, bool)) or r is None else r)' "$out" "$2"
}
member_is() { # NAME PYTHON_PREDICATE_ON_m
  local got
  got=$(admin_json members "(lambda m: m is not None and ($2))(member('$1'))") || return 1
  echo "members: $1 $2: $got"
  [[ "$got" == true ]]
}

tm_step "coordinator and two members"
tm_net_public coord
tm_net_public a
tm_net_public b
tm_net_public c
tm_coord_setup coord
tm_coord_start
SOCKET="$(tm_coord_state)/admin.sock"
[[ -S "$SOCKET" ]] || tm_fail "the coordinator serves no admin socket at $SOCKET"
[[ "$(stat -c %a "$SOCKET")" == 600 ]] || tm_fail "$SOCKET has mode $(stat -c %a "$SOCKET"), want 600"
tm_members_join alpha:a beta:b
A4=$(tm_member_ip alpha 4)
B4=$(tm_member_ip beta 4)
BETA_KEY=$(tm_mjson beta "s['self']['public_key']")

tm_step "members lists both online"
tm_wait 5 "alpha online" member_is alpha "m['online']"
tm_wait 5 "beta online" member_is beta "m['online']"
tm_expect_eq "alpha's entry" \
  "$(admin_json members "[member('alpha')[k] for k in ('mesh', 'kind', 'mesh_ips')][:2]")" \
  '["demo", "External"]'
tm_expect_eq "beta's IPv4" "$(admin_json members "member('beta')['mesh_ips'][0]")" "$B4"
tm_expect_eq "beta's key" "$(admin_json members "member('beta')['public_key']")" "$BETA_KEY"
TEXT=$(admin members) || tm_fail "tunnelmesh-operator members exited $?: $TEXT"
tm_log "members:"$'\n'"$TEXT"
grep -q '^NAME .*MESH .*KIND .*MESH IPS .*ONLINE .*LAST SEEN .*KEY' <<<"$TEXT" ||
  tm_fail "members prints no header line: $TEXT"
grep -E "^alpha +demo +External +$A4,.* yes " <<<"$TEXT" >/dev/null ||
  tm_fail "members does not show alpha online with its kind and addresses: $TEXT"
[[ "$(admin members --mesh other)" == 'Mesh "other" has no members' ]] ||
  tm_fail "members --mesh other: $(admin members --mesh other)"

tm_step "a stopped agent shows offline"
tm_member_stop beta
tm_wait 5 "beta offline with a last-seen time" member_is beta \
  "not m['online'] and m['last_seen'] is not None"
TEXT=$(admin members)
grep -E "^beta .* no +(now|[0-9]+s ago) " <<<"$TEXT" >/dev/null ||
  tm_fail "members does not show beta offline, seen moments ago: $TEXT"

tm_step "remove beta: alpha drops it"
OUT=$(admin remove beta) || tm_fail "tunnelmesh-operator remove beta exited $?: $OUT"
tm_log "remove: $OUT"
grep -qF "tunnelmesh-operator readmit $BETA_KEY" <<<"$OUT" ||
  tm_fail "remove does not say how to re-admit the key: $OUT"
tm_member_wait_no_peer 5 alpha beta
tm_wait 5 "beta to be gone from members" \
  bash -c "! grep -q '\"name\": \"beta\"' '$(tm_coord_state)/members.json'"
[[ "$(admin_json members "member('beta')")" == null ]] || tm_fail "members still lists beta"
REMOVED="$(tm_coord_state)/removed-keys.json"
[[ "$(stat -c %a "$REMOVED")" == 600 ]] || tm_fail "$REMOVED has mode $(stat -c %a "$REMOVED")"
grep -qF "$BETA_KEY" "$REMOVED" || tm_fail "$REMOVED lacks beta's key: $(cat "$REMOVED")"
grep -q "member removed by an admin: name=beta" "$(tm_coord_log)" ||
  tm_fail "the coordinator logged no 'member removed by an admin' line for beta"

tm_step "beta cannot rejoin"
tm_member_join_once beta "$(tm_token_file)" 20
tm_log "beta's join after its removal: exit $TM_JOIN_RC: $TM_JOIN_OUT"
tm_expect_eq "exit code of a removed member's join" "$TM_JOIN_RC" 1
grep -q "removed by an admin" <<<"$TM_JOIN_OUT" ||
  tm_fail "the refused join does not say an admin removed it: $TM_JOIN_OUT"
grep -qF "tunnelmesh-operator readmit $BETA_KEY" <<<"$TM_JOIN_OUT" ||
  tm_fail "the refused join does not name the readmit command: $TM_JOIN_OUT"

tm_step "a wrong token is refused, listed and logged without the token"
WRONG="this-is-not-the-right-token-7777"
echo "$WRONG" >"$TM_WORK/wrong-token"
tm_member_new gamma c
tm_member_join_once gamma "$TM_WORK/wrong-token" 20
tm_expect_eq "exit code of a join with a wrong token" "$TM_JOIN_RC" 1
refused_has() { # NAME REASON_TEXT
  local got
  got=$(admin_json refused \
    "any(r['name'] == '$1' and '$2' in r['reason'] for r in d['refused'])") || return 1
  [[ "$got" == true ]]
}
refused_has beta "removed by an admin" ||
  tm_fail "refused does not list beta's attempt: $(admin refused)"
refused_has gamma "join token" || tm_fail "refused does not list gamma's wrong token: $(admin refused)"
tm_expect_eq "source of gamma's attempt" \
  "$(admin_json refused "[r['source'].split(':')[0] for r in d['refused'] if r['name'] == 'gamma'][0]")" \
  "${TM_NET_ADDR[c]}"
TEXT=$(admin refused)
tm_log "refused:"$'\n'"$TEXT"
LINE=$(grep -F "${BETA_KEY:0:8}..." <<<"$TEXT" | head -n 1)
[[ "$LINE" == *" ${TM_NET_ADDR[b]}:"*" beta "*"PERMISSION_DENIED: "*"removed by an admin"* ]] ||
  tm_fail "refused does not show beta's attempt in its table: $TEXT"
grep -q "join refused: source=${TM_NET_ADDR[c]}:[0-9]* .*name=\"gamma\".*join token" \
  "$(tm_coord_log)" || tm_fail "the coordinator did not log gamma's refused join"
grep -q "join refused: source=${TM_NET_ADDR[b]}:[0-9]* .*name=\"beta\".*removed by an admin" \
  "$(tm_coord_log)" || tm_fail "the coordinator did not log beta's refused join"
if grep -q "$WRONG" "$(tm_coord_log)" || grep -q "$WRONG" <<<"$(admin refused --json)"; then
  tm_fail "the wrong token appears in the coordinator's log or in refused"
fi

tm_step "the removal survives a coordinator restart"
tm_coord_stop
[[ ! -e "$SOCKET" ]] || tm_fail "the admin socket $SOCKET is left behind after the coordinator exited"
OUT=$(admin members 2>&1) && tm_fail "members with no coordinator succeeded: $OUT"
RC=$?
tm_expect_eq "exit code of members with no coordinator" "$RC" 1
grep -q "no coordinator is serving --state-dir" <<<"$OUT" ||
  tm_fail "members with no coordinator does not say so: $OUT"
tm_coord_start
tm_member_join_once beta "$(tm_token_file)" 20
tm_expect_eq "exit code of a removed member's join after a restart" "$TM_JOIN_RC" 1
grep -q "removed by an admin" <<<"$TM_JOIN_OUT" || tm_fail "after a restart: $TM_JOIN_OUT"

tm_step "readmit: beta joins again"
OUT=$(admin readmit --list) || tm_fail "readmit --list exited $?: $OUT"
grep -qF "$BETA_KEY" <<<"$OUT" || tm_fail "readmit --list does not list beta's key: $OUT"
OUT=$(admin readmit "${BETA_KEY:0:8}...") || tm_fail "readmit exited $?: $OUT"
tm_log "readmit: $OUT"
tm_member_start beta
tm_member_wait_peer 10 alpha beta
tm_wait_ping a "$(tm_member_ip beta 4)" 10

tm_step "a stale admin socket after kill -9 is replaced"
tm_coord_kill
[[ -S "$SOCKET" ]] || tm_fail "no stale admin socket after kill -9 (the check below proves nothing)"
tm_coord_start
tm_wait 10 "beta online again after the coordinator's restart" member_is beta "m['online']"

tm_step "usage and runtime errors"
RC=0
OUT=$("$TM_OPERATOR" members 2>&1) || RC=$?
tm_expect_eq "exit code of members without --state-dir" "$RC" 2
RC=0
OUT=$(admin remove nobody 2>&1) || RC=$?
tm_expect_eq "exit code of remove of an unknown member" "$RC" 1
grep -q 'no member is named "nobody"' <<<"$OUT" || tm_fail "remove nobody: $OUT"
RC=0
OUT=$(admin readmit 2>&1) || RC=$?
tm_expect_eq "exit code of readmit without a key" "$RC" 2

tm_step "two agents with one copied state dir"
tm_member_stop alpha
tm_member_new alpha2 c
cp -a "$(tm_member_state alpha)" "$(tm_member_state alpha2)"
rm -f "$(tm_member_state alpha2)"/*.sock
tm_member_start alpha
tm_member_launch alpha2
coord_warned() { grep -q "is registered from two places at once" "$(tm_coord_log)"; }
tm_wait 20 "the coordinator's warning about one key in two places" coord_warned
LINE=$(grep "is registered from two places at once" "$(tm_coord_log)" | head -n 1)
tm_log "coordinator: $LINE"
[[ "$LINE" == *"${TM_NET_ADDR[a]}:"* && "$LINE" == *"${TM_NET_ADDR[c]}:"* ]] ||
  tm_fail "the coordinator's warning does not name both sources: $LINE"
agents_warned() {
  grep -q "another agent is using this node key (a copied state dir?)" "$(tm_member_log alpha)" &&
    grep -q "another agent is using this node key (a copied state dir?)" "$(tm_member_log alpha2)"
}
tm_wait 20 "both agents to warn about the shared node key" agents_warned
WARNINGS=$(grep -c "is registered from two places at once" "$(tm_coord_log)")
tm_log "the coordinator warned $WARNINGS time(s) in this episode"
(( WARNINGS <= 2 )) || tm_fail "the coordinator warned $WARNINGS times in one episode"

tm_step "remove the shared key: both agents stop"
OUT=$(admin remove "$(tm_mjson alpha "s['self']['public_key']")") || tm_fail "remove: $OUT"
for m in alpha alpha2; do
  tm__wait_exit "${TM_MEMBER_PID[$m]}" 10 || tm_fail "member $m still runs 10s after its removal"
  tm_log "member $m exited with code $TM_EXIT_RC after its removal"
  tm__member_reaped "$m"
  (( TM_EXIT_RC != 0 )) || tm_fail "member $m exited 0 after an admin removed it"
done
grep -q "removed by an admin" "$(tm_member_log alpha)" ||
  tm_fail "alpha's log does not say an admin removed it"
# The shared member had either name last (each agent registers with its own --name).
tm_member_wait_no_peer 5 beta alpha
tm_member_wait_no_peer 5 beta alpha2
tm_coord_alive
tm_member_alive beta
