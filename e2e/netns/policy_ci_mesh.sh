#!/usr/bin/env bash
# policy_ci_mesh.sh: PeerPolicy enforced by real agents, in a CI mesh run by a standalone
# coordinator. Members: runner (role=ci-runner), git (app=git), db (app=db), each on the public
# segment. The manifests allow runner -> git on TCP 22 and 443 and UDP 5353; the Mesh default is
# Deny.
#
# Checks: every member installs a rule set (status --json "filter"); runner reaches git:22 and
# git:443 and gets the answer to a UDP request to git:5353, but not git:8080 and not db:5432; db
# reaches nothing (git:22, runner); ping runner -> git is denied; `explain` names the deciding
# PeerPolicy for an allowed flow and the Mesh default for a denied one (exit codes 0 and 1), asked
# on the enforcing member and on the runner (which asks the coordinator); a policy added to the
# manifest directory (runner -> db TCP 5432) applies within a bound (measured and printed); an
# established connection that policy allowed is cut at its next packet once the file is removed;
# the drops show in status --json on the members that dropped.
#
# Usage: policy_ci_mesh.sh [AGENT_PATH [OPERATOR_PATH]]   (needs root; exits 77 otherwise)

# shellcheck source=nat_lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/nat_lib.sh"
tm_mesh_init policy_ci_mesh 150 "$@"
NET_PY="$TM_LIB_DIR/policy_net.py"
# A bound for "a policy change applies on all members" generous enough for a loaded CI machine,
# measured until a new connection succeeds (each probe is a process in a namespace, with a 0.3 s
# connect timeout): 0.6 to 1.6 s on a loaded 2-vCPU machine.
APPLY_BOUND_MS=${TM_POLICY_APPLY_BOUND_MS:-4000}
# The rule set itself (db's status polled every 0.1 s, each poll a status call): the coordinator
# polls the manifest directory every 250 ms. Measured 1.0 s on a loaded 2-vCPU machine (each poll
# of the status is a process start); the bound leaves room for CI load.
RULES_BOUND_MS=${TM_POLICY_RULES_BOUND_MS:-2000}

tm_step "topology: coordinator and three members on a public segment"
tm_net_public coord
tm_net_public r
tm_net_public g
tm_net_public d
TM_MESH_DEFAULT_ACTION=Deny
tm_coord_setup coord
cat >"$TM_WORK/coord.manifests/policy-runners-to-git.yaml" <<'YAML'
apiVersion: tunnelmesh.io/v1alpha1
kind: PeerPolicy
metadata:
  name: runners-to-git
spec:
  mesh: demo
  action: Allow
  from: [{peerSelector: {matchLabels: {role: ci-runner}}}]
  to: [{peerSelector: {matchLabels: {app: git}}}]
  ports:
    - {protocol: TCP, port: 22}
    - {protocol: TCP, port: 443}
    - {protocol: UDP, port: 5353}
YAML
tm_coord_start

tm_step "members join with their labels"
tm_member_new runner r
tm_member_new git g
tm_member_new db d
tm_member_start runner --label role=ci-runner
tm_member_start git --label app=git
tm_member_start db --label app=db
R4=$(tm_member_ip runner 4)
G4=$(tm_member_ip git 4)
D4=$(tm_member_ip db 4)
tm_log "runner $R4, git $G4, db $D4"
for m in runner git db; do
  tm_member_wait_peer 5 "$m" "$([[ $m == runner ]] && echo git || echo runner)"
done

tm__filter_on() { # NAME
  local got
  got=$(tm__mjson "$1" "s.get('filter', {}).get('enabled')") || return 1
  echo "filter of $1 enabled: $got"
  [[ "$got" == true ]]
}
for m in runner git db; do
  tm_wait 5 "member $m to install a rule set" tm__filter_on "$m"
done
tm_expect_eq "git: default action" "$(tm_mjson git "s['filter']['default_action']")" deny
tm_expect_gt "git: rules for its inbound traffic" "$(tm_mjson git "s['filter']['rules']")" 0

tm_step "servers: git on TCP 22, 443, 8080 and UDP 5353; db on TCP 5432; runner on TCP 22"
tm_bg_in g "$TM_PY" "$NET_PY" serve "$G4" --tcp 22,443,8080 --udp 5353
tm_bg_in d "$TM_PY" "$NET_PY" serve "$D4" --tcp 5432
tm_bg_in r "$TM_PY" "$NET_PY" serve "$R4" --tcp 22
for p in 22 443 8080; do tm_wait 5 "git to listen on $p" tm__listening g "$p"; done
tm_wait 5 "db to listen on 5432" tm__listening d 5432
tm_wait 5 "runner to listen on 22" tm__listening r 22

reach() { tm_in "$1" "$TM_PY" "$NET_PY" tcp "$2" "$3" "${4:-1.5}"; }
expect_reach() { # NSID ADDR PORT WHAT
  reach "$1" "$2" "$3" 3 || tm_check_fail "$4: TCP $2:$3 from $1 should connect"
}
expect_no_reach() {
  if reach "$1" "$2" "$3" 1.5; then tm_check_fail "$4: TCP $2:$3 from $1 should be denied"; fi
}

tm_step "what the policy allows, and what the default denies"
# The first packets may wait for a handshake: retry the first allowed connection.
tm_wait 10 "runner to reach git:22" reach r "$G4" 22 2
expect_reach r "$G4" 22 "runner -> git ssh"
expect_reach r "$G4" 443 "runner -> git https"
tm_in r "$TM_PY" "$NET_PY" udp "$G4" 5353 3 ||
  tm_check_fail "runner -> git UDP 5353: the reply did not come back"
expect_no_reach r "$G4" 8080 "runner -> git:8080 (port not in the policy)"
expect_no_reach r "$D4" 5432 "runner -> db (no policy)"
expect_no_reach d "$G4" 22 "db -> git (db reaches nothing)"
expect_no_reach d "$R4" 22 "db -> runner (db reaches nothing)"
if tm_in r ping -n -c 2 -W 1 "$G4" >/dev/null 2>&1; then
  tm_check_fail "ping runner -> git answered under default deny"
fi
tm_checks_done

tm_step "status --json counts the drops"
tm_expect_gt "git: default_denied drops" "$(tm_mjson git "s['filter']['drops']['default_denied']")" 0
tm_expect_gt "db: default_denied drops" "$(tm_mjson db "s['filter']['drops']['default_denied']")" 0
tm_expect_gt "runner: default_denied drops" \
  "$(tm_mjson runner "s['filter']['drops']['default_denied']")" 0
tm_expect_gt "git: packets allowed by runners-to-git" \
  "$(tm_mjson git "[p['allowed'] for p in s['filter']['policies'] if p['name'] == 'runners-to-git'][0]")" 0
tm_mstatus git >/dev/null
tm_in g timeout 5 "$TM_AGENT" status --interface "${TM_MEMBER_IF[git]}" \
  --state-dir "$(tm_member_state git)" | grep -q '^filter: on, default deny' ||
  tm_fail "git's human status lacks the 'filter: on, default deny' line"

tm_step "explain"
explain() { # NAME SRC DST  (sets EXPLAIN_OUT and EXPLAIN_RC)
  EXPLAIN_RC=0
  EXPLAIN_OUT=$(tm_in "${TM_MEMBER_NSID[$1]}" timeout 10 "$TM_AGENT" explain "$2" "$3" \
    --interface "${TM_MEMBER_IF[$1]}" --state-dir "$(tm_member_state "$1")" 2>&1) || EXPLAIN_RC=$?
  tm_log "explain on $1: $2 $3 -> exit $EXPLAIN_RC: $EXPLAIN_OUT"
}
explain git runner git:22/tcp
tm_expect_eq "explain runner git:22/tcp on git: exit code" "$EXPLAIN_RC" 0
[[ "$EXPLAIN_OUT" == allow*"by PeerPolicy runners-to-git"* ]] ||
  tm_fail "explain on git did not name runners-to-git: $EXPLAIN_OUT"
explain db runner "db:5432/TCP"
tm_expect_eq "explain runner db:5432/TCP on db: exit code" "$EXPLAIN_RC" 1
[[ "$EXPLAIN_OUT" == deny*"by the Mesh default (Deny)"* ]] ||
  tm_fail "explain on db did not name the Mesh default: $EXPLAIN_OUT"
explain runner runner "$G4:443/tcp"
tm_expect_eq "explain on runner (asks the coordinator): exit code" "$EXPLAIN_RC" 0
[[ "$EXPLAIN_OUT" == allow*"by PeerPolicy runners-to-git"*"enforced by git"* ]] ||
  tm_fail "explain on runner did not answer through the coordinator: $EXPLAIN_OUT"
explain runner runner git/icmp
tm_expect_eq "explain runner git/icmp: exit code" "$EXPLAIN_RC" 1
explain runner runner git:22/sctp
tm_expect_eq "explain with a bad protocol: exit code" "$EXPLAIN_RC" 2
[[ "$EXPLAIN_OUT" == *"tcp, udp or icmp"* ]] || tm_fail "bad protocol message: $EXPLAIN_OUT"
explain runner runner nosuchmember:22/tcp
tm_expect_eq "explain with an unknown member: exit code" "$EXPLAIN_RC" 3

tm_step "a policy added to the manifests applies on all members"
applied_before=$(tm_mjson db "s['filter']['rule_sets_applied']")
start=$(tm__now_ms)
cat >"$TM_WORK/coord.manifests/policy-runners-to-db.yaml" <<'YAML'
apiVersion: tunnelmesh.io/v1alpha1
kind: PeerPolicy
metadata:
  name: runners-to-db
spec:
  mesh: demo
  action: Allow
  from: [{peerSelector: {matchLabels: {role: ci-runner}}}]
  to: [{peerSelector: {matchLabels: {app: db}}}]
  ports: [{protocol: TCP, port: 5432}]
YAML
db_rules_changed() { (( $(tm__mjson db "s['filter']['rule_sets_applied']") > applied_before )); }
tm_wait 10 "db to install the rule set of the added policy" db_rules_changed
rules_ms=$(( $(tm__now_ms) - start ))
tm_log "measured: db installed the new rule set ${rules_ms} ms after the manifest was written" \
  "(bound ${RULES_BOUND_MS} ms)"
(( rules_ms <= RULES_BOUND_MS )) ||
  tm_fail "db installed the new rule set ${rules_ms} ms after the manifest was written," \
    "more than ${RULES_BOUND_MS} ms"
tm_wait 10 "runner to reach db:5432 after the policy was added" reach r "$D4" 5432 0.3
apply_ms=$(( $(tm__now_ms) - start ))
tm_log "measured: the new policy applied (runner -> db:5432 connects) ${apply_ms} ms after the" \
  "manifest was written (bound ${APPLY_BOUND_MS} ms)"
(( apply_ms <= APPLY_BOUND_MS )) ||
  tm_fail "the new policy took ${apply_ms} ms to apply, more than ${APPLY_BOUND_MS} ms"
tm_expect_gt "db: rule sets applied since" \
  "$(( $(tm_mjson db "s['filter']['rule_sets_applied']") - applied_before ))" 0
explain db runner db:5432/tcp
[[ "$EXPLAIN_RC" == 0 && "$EXPLAIN_OUT" == *"by PeerPolicy runners-to-db"* ]] ||
  tm_fail "explain after the new policy: exit $EXPLAIN_RC: $EXPLAIN_OUT"

tm_step "removing the policy cuts an established connection"
trigger="$TM_WORK/hold.trigger"
result="$TM_WORK/hold.result"
tm_bg_in r "$TM_PY" "$NET_PY" hold "$D4" 5432 "$trigger" "$result"
tm_wait 5 "the held connection runner -> db:5432 to open" grep -qx open "$result"
denied_before=$(tm_mjson db "s['filter']['drops']['default_denied']")
rm "$TM_WORK/coord.manifests/policy-runners-to-db.yaml"
no_reach() { ! reach "$@"; }
tm_wait 10 "runner -> db:5432 to be denied again" no_reach r "$D4" 5432 0.3
touch "$trigger"
tm_wait 6 "the held connection's verdict" grep -qxE 'alive|cut' "$result"
tm_expect_eq "the established connection after its policy was removed" "$(cat "$result")" cut
tm_expect_gt "db: drops of the cut flow" \
  "$(( $(tm_mjson db "s['filter']['drops']['default_denied']") - denied_before ))" 0
expect_reach r "$G4" 22 "runner -> git ssh, still allowed"
tm_checks_done

for m in runner git db; do tm_member_alive "$m"; done
tm_coord_alive
