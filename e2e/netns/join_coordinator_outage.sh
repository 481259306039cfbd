#!/usr/bin/env bash
# join_coordinator_outage.sh: the coordinator is stopped for a minute (SIGTERM) and started again
# on the same state directory while two members run, logging at info level as a service would.
#
# Checks: during the outage each member logs at most TM_MAX_OUTAGE_LINES (default 30) lines, not
# one per reconnect attempt: the first failure in words ("it closed the connection"), then summaries
# ("still cannot reach the coordinator after N attempts over T: ... (connection refused)", the same
# for the relay), with no library text (gRPC's "failed to connect to all addresses" or "Cancelling
# all calls", cpprestsdk's "Underlying Transport Error" / "set_fail_handler"); both members register again within TM_REREGISTER_MAX_S (default 1.0)
# seconds of the coordinator's "coordinator ready" line (its log timestamps), each logs one
# recovery line, and they still reach each other.
#
# Usage: join_coordinator_outage.sh [AGENT_PATH [OPERATOR_PATH]]   (needs root; exits 77 otherwise)

# shellcheck source=nat_lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/nat_lib.sh"
tm_mesh_init join_coordinator_outage 160 "$@"

OUTAGE_S=${TM_OUTAGE_S:-60}
MAX_LINES=${TM_MAX_OUTAGE_LINES:-30}
REREGISTER_MAX_S=${TM_REREGISTER_MAX_S:-1.0}
# What a member logs at its default level, as under a service manager.
TM_AGENT_LOG_LEVEL=info

tm_step "coordinator and two members (agents log at info)"
tm_net_public coord
tm_net_public a
tm_net_public b
tm_coord_setup coord
tm_coord_start
tm_members_join alpha:a beta:b
tm_members_wait_ping 10 alpha beta
declare -A BEFORE
for m in alpha beta; do BEFORE[$m]=$(wc -l <"$(tm_member_log "$m")"); done

tm_step "the coordinator stops for ${OUTAGE_S}s"
tm_coord_stop
# The outage length is what is under test here, not a condition to wait for.
sleep "$OUTAGE_S"
tm_member_alive alpha
tm_member_alive beta
declare -A OUTAGE_LOG
for m in alpha beta; do
  OUTAGE_LOG[$m]="$TM_WORK/$m.outage.log"
  tail -n +"$(( BEFORE[$m] + 1 ))" "$(tm_member_log "$m")" >"${OUTAGE_LOG[$m]}"
done

tm_step "the coordinator comes back on the same state directory"
tm_coord_start
RESTART_LINE=$(grep -n '===== coordinator start' "$(tm_coord_log)" | tail -n 1 | cut -d: -f1)
both_registered() {
  local out
  out=$(tm_coord_reg_delays "$RESTART_LINE") || return 1
  grep -q '^alpha ' <<<"$out" && grep -q '^beta ' <<<"$out"
}
tm_wait 10 "alpha and beta to register with the restarted coordinator" both_registered
DELAYS=$(tm_coord_reg_delays "$RESTART_LINE")
tm_log "registrations after the restart (name, seconds after ready, mesh IPv4):"$'\n'"$DELAYS"
while read -r name delay _; do
  "$TM_PY" -c 'import sys; sys.exit(0 if float(sys.argv[1]) <= float(sys.argv[2]) else 1)' \
    "$delay" "$REREGISTER_MAX_S" ||
    tm_check_fail "$name registered again ${delay}s after the coordinator was ready" \
      "(want <= ${REREGISTER_MAX_S}s: the reconnect attempts must stay fast while the log is quiet)"
done <<<"$DELAYS"

tm_step "what each member logged during the outage"
for m in alpha beta; do
  log=${OUTAGE_LOG[$m]}
  lines=$(wc -l <"$log")
  tm_log "$m logged $lines lines during the ${OUTAGE_S}s outage:"$'\n'"$(cat "$log")"
  (( lines <= MAX_LINES )) ||
    tm_check_fail "$m logged $lines lines during the outage (want <= $MAX_LINES)"
  grep -q 'lost the coordinator at .* (it closed the connection); reconnecting' "$log" ||
    tm_check_fail "$m: no first line saying the coordinator closed the connection"
  grep -q 'still cannot reach the coordinator after [0-9]* attempts over .*(connection refused)' \
    "$log" || tm_check_fail "$m: no summary line saying the connection is refused"
  grep -q 'still cannot reach the relay after [0-9]* attempts over .*(connection refused)' \
    "$log" || tm_check_fail "$m: no relay summary line saying the connection is refused"
  summaries=$(grep -c 'still cannot reach the coordinator after' "$log" || true)
  (( summaries <= 10 )) || tm_check_fail "$m: $summaries coordinator summaries (want <= 10)"
  LIBRARY_TEXT='set_fail_handler|Underlying Transport Error|failed to connect to all addresses|Cancelling all calls'
  if grep -Eq "$LIBRARY_TEXT" "$log"; then
    tm_check_fail "$m: library text in the log: $(grep -E "$LIBRARY_TEXT" "$log" | head -n 2)"
  fi
done
back_in_touch() { grep -q 'back in touch with the coordinator' "$(tm_member_log "$1")"; }
for m in alpha beta; do
  tm_wait 5 "$m to log its recovery" back_in_touch "$m"
  tm_expect_eq "$m: recovery lines" \
    "$(tail -n +"$(( BEFORE[$m] + 1 ))" "$(tm_member_log "$m")" | grep -c 'back in touch with the coordinator')" 1
done

tm_step "the members still reach each other"
tm_member_wait_peer 5 alpha beta
tm_member_wait_peer 5 beta alpha
tm_ping a "$(tm_member_ip beta 4)" 3
tm_checks_done
