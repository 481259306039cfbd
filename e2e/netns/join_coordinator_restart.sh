#!/usr/bin/env bash
# join_coordinator_restart.sh: the coordinator crashes (SIGKILL) while two members carry traffic,
# stays away for a few seconds and comes back from its state directory.
#
# Checks: a steady ping (10 a second) and a rate-limited iperf3 TCP flow between the members,
# both running across the outage, finish with at most TM_MAX_LOST_PINGS (default 2) pings lost,
# iperf3 without error and no 1-second interval without data (established tunnels never wait for
# the coordinator); both members register again within TM_REREGISTER_MAX_S (default 1.0) seconds
# of the coordinator's "coordinator ready" line (its log timestamps), with the same mesh IPs
# (registration lines, members.json and each member's status); both still list each other.
#
# Usage: join_coordinator_restart.sh [AGENT_PATH [OPERATOR_PATH]]   (needs root; exits 77 otherwise)

# shellcheck source=nat_lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/nat_lib.sh"
tm_mesh_init join_coordinator_restart 110 "$@"

FLOW_S=15
OUTAGE_S=2.5
MAX_LOST=${TM_MAX_LOST_PINGS:-2}
REREGISTER_MAX_S=${TM_REREGISTER_MAX_S:-1.0}

tm_step "coordinator and two members"
tm_net_public coord
tm_net_public a
tm_net_public b
tm_coord_setup coord
tm_coord_start
tm_members_join alpha:a beta:b
A4=$(tm_member_ip alpha 4)
B4=$(tm_member_ip beta 4)
A6=$(tm_member_ip alpha 6)
B6=$(tm_member_ip beta 6)
tm_members_wait_ping 10 alpha beta

tm_step "continuous traffic for ${FLOW_S}s; the coordinator is killed after 4s"
tm_flow_ping_start ping a "$B4" "$FLOW_S" 0.1
tm_flow_iperf_start tcp b a "$A4" "$FLOW_S" 20M

replies_at_least() { (( $(grep -c 'bytes from' "$TM_WORK/flow-ping.ping" || true) >= $1 )); }
tm_wait 10 "40 answered pings before the crash" replies_at_least 40
tm_coord_kill
# The outage length is what is under test here, not a condition to wait for.
sleep "$OUTAGE_S"
tm_member_alive alpha
tm_member_alive beta
tm_coord_start
RESTART_LINE=$(grep -n '===== coordinator start' "$(tm_coord_log)" | tail -n 1 | cut -d: -f1)

reg_delays() { tm_coord_reg_delays "$RESTART_LINE"; }
both_registered() {
  local out
  out=$(reg_delays) || return 1
  echo "$out"
  grep -q '^alpha ' <<<"$out" && grep -q '^beta ' <<<"$out"
}
tm_wait 10 "alpha and beta to register with the restarted coordinator" both_registered
DELAYS=$(reg_delays) || tm_fail "cannot read registration times from $(tm_coord_log)"
tm_log "registrations after the restart (name, seconds after ready, mesh IPv4):"$'\n'"$DELAYS"
while read -r name delay ip; do
  case "$name" in
    alpha) want=$A4 ;;
    beta) want=$B4 ;;
    *) continue ;;
  esac
  tm_expect_eq "$name: mesh IP in its registration after the restart" "$ip" "$want"
  "$TM_PY" -c 'import sys; sys.exit(0 if float(sys.argv[1]) <= float(sys.argv[2]) else 1)' \
    "$delay" "$REREGISTER_MAX_S" ||
    tm_check_fail "$name registered again ${delay}s after the coordinator was ready" \
      "(want <= ${REREGISTER_MAX_S}s: reconnect backoff must stay within 100 ms..1 s)"
done <<<"$DELAYS"

tm_step "traffic across the outage"
tm_flow_ping_check ping "$MAX_LOST"
tm_flow_iperf_check tcp

tm_step "state after the restart"
tm_expect_eq "members.json: alpha" "$(tm_coord_member_ips alpha)" "$A4 $A6"
tm_expect_eq "members.json: beta" "$(tm_coord_member_ips beta)" "$B4 $B6"
tm_expect_eq "alpha: own mesh IPv4" "$(tm_member_ip alpha 4)" "$A4"
tm_expect_eq "beta: own mesh IPv4" "$(tm_member_ip beta 4)" "$B4"
tm_member_wait_peer 5 alpha beta
tm_member_wait_peer 5 beta alpha
tm_ping a "$B4" 3
tm_ping b "$A6" 3
tm_checks_done
