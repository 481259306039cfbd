#!/usr/bin/env bash
# status_liveness.sh: `status` says which peers are online, and whether the coordinator and the
# relay are connected.
#
# Three members join and reach each other. Checks:
# - alpha's status: mesh demo, coordinator connected, relay connected, no warning, both peers
#   online (JSON and text);
# - beta stopped (SIGTERM) and gamma killed (SIGKILL): each shows offline in alpha's status within
#   10 s (the issue asks for 30; it takes a fraction of a second), with a last-seen time, and the
#   text says "status: offline, last seen";
# - the coordinator stopped: within 10 s alpha's status says the coordinator is not connected, with
#   a warning in JSON and text; after it is back, connected again within 5 s and no warning;
# - `status` without --interface finds alpha's agent through its state directory; `status --json`
#   where no agent runs prints a JSON error and exits 1.
#
# Usage: status_liveness.sh [AGENT_PATH [OPERATOR_PATH]]   (needs root; exits 77 otherwise)

# shellcheck source=nat_lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/nat_lib.sh"
tm_mesh_init status_liveness 150 "$@"

tm_step "topology: coordinator and three members"
tm_net_public coord
tm_net_public a
tm_net_public b
tm_net_public c
tm_coord_setup coord
tm_coord_start
tm_members_join alpha:a beta:b gamma:c
tm_members_wait_ping 10 alpha beta gamma

tm_step "everything up: alpha's status says so"
tm__healthy() {
  local got
  got=$(tm__mjson alpha "[s['self']['mesh'], s['self']['coordinator']['connected'],
    s['self']['relay'], len(s['self']['warnings']), peer('beta')['online'],
    peer('gamma')['online']]") || return 1
  echo "mesh, coordinator, relay, warnings, beta online, gamma online: $got"
  [[ "$got" == '["demo", true, "connected", 0, true, true]' ]]
}
tm_wait 10 "alpha's status to show the mesh, both connections and both peers online" tm__healthy
TEXT=$(tm_in a "$TM_AGENT" status --interface "${TM_MEMBER_IF[alpha]}" \
  --state-dir "$(tm_member_state alpha)")
for want in "  mesh: demo" "  coordinator: $TM_COORD_ADDR:$TM_GRPC_PORT, connected" \
  "  relay: connected" "  status: online"; do
  grep -qF -- "$want" <<<"$TEXT" || tm_check_fail "alpha's status text lacks '$want':"$'\n'"$TEXT"
done

tm_step "a stopped and a killed peer show offline within 10 s"
tm__offline() { # PEER
  local got
  got=$(tm__mjson alpha "[peer('$1')['online'], peer('$1')['last_seen'] > 0]") || return 1
  echo "$1 online, last seen known: $got"
  [[ "$got" == '[false, true]' ]]
}
STOPPED_AT=$(tm__now_ms)
tm_member_stop beta
tm_wait 10 "alpha to show beta offline" tm__offline beta
tm_log "beta offline in alpha's status $(tm_elapsed_since "$STOPPED_AT")s after SIGTERM"
KILLED_AT=$(tm__now_ms)
tm_member_kill gamma
tm_wait 10 "alpha to show gamma offline" tm__offline gamma
tm_log "gamma offline in alpha's status $(tm_elapsed_since "$KILLED_AT")s after SIGKILL"
TEXT=$(tm_in a "$TM_AGENT" status --interface "${TM_MEMBER_IF[alpha]}" \
  --state-dir "$(tm_member_state alpha)")
grep -q "  status: offline, last seen .* ago" <<<"$TEXT" ||
  tm_check_fail "alpha's status text does not show beta offline:"$'\n'"$TEXT"

tm_step "a coordinator outage shows in status"
tm_coord_stop
tm__coordinator_down() {
  local got
  got=$(tm__mjson alpha "[s['self']['coordinator']['connected'], s['self']['warnings']]") ||
    return 1
  echo "coordinator connected, warnings: $got"
  [[ "$got" == '[false, '*'not connected to the coordinator'* ]]
}
tm_wait 10 "alpha's status to show the coordinator down" tm__coordinator_down
TEXT=$(tm_in a "$TM_AGENT" status --interface "${TM_MEMBER_IF[alpha]}" \
  --state-dir "$(tm_member_state alpha)")
grep -q "^  coordinator: .*, not connected" <<<"$TEXT" && grep -q "^warning: not connected to the coordinator" <<<"$TEXT" ||
  tm_check_fail "alpha's status text does not show the outage:"$'\n'"$TEXT"
tm_coord_start
tm__coordinator_up() {
  local got
  got=$(tm__mjson alpha "[s['self']['coordinator']['connected'], s['self']['relay'],
    len(s['self']['warnings'])]") || return 1
  echo "coordinator connected, relay, warnings: $got"
  [[ "$got" == '[true, "connected", 0]' ]]
}
tm_wait 5 "alpha's status to show the coordinator back" tm__coordinator_up

tm_step "status finds the agents of a state directory; errors in JSON with --json"
OUT=$(tm_in a "$TM_AGENT" status --state-dir "$(tm_member_state alpha)") ||
  tm_check_fail "status without --interface failed: $OUT"
grep -q "^interface: ${TM_MEMBER_IF[alpha]}$" <<<"$OUT" ||
  tm_check_fail "status without --interface does not show alpha's agent:"$'\n'"$OUT"
RC=0
OUT=$(tm_in a "$TM_AGENT" status --json --state-dir "$TM_WORK/no-agent-here" 2>/dev/null) || RC=$?
tm_expect_eq "exit code of status --json with no agent" "$RC" 1
"$TM_PY" -c 'import json, sys; e = json.loads(sys.argv[1])["error"]; sys.exit(0 if "no agent is running" in e else 1)' "$OUT" ||
  tm_check_fail "status --json with no agent did not print a JSON error: $OUT"

tm_member_alive alpha
tm_coord_alive
tm_checks_done
