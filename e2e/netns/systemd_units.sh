#!/usr/bin/env bash
# systemd_units.sh: the systemd units of packaging/ start a working coordinator and member.
#
# The command lines are not written here: they are read from the units' ExecStart, with the
# environment files the units name (packaging/*.default, with this test's coordinator address and
# CA hash filled in) expanded as systemd does, and the installed paths (/usr/bin, /etc/tunnelmesh,
# /var/lib/...) replaced by this build's binaries and the work directory. They run as the units
# say: the coordinator as an unprivileged user (uid 65534 for the unit's User=) with the unit's
# CapabilityBoundingSet (none), the agent as root limited to its unit's bounding set.
#
# Checks: the coordinator becomes ready and writes its state directory without root; the member
# registers (the coordinator logs it, its status shows a mesh IP) and reaches a second member
# started by the harness; the join token appears on neither command line; both units restart on
# failure. `systemd-analyze verify` accepts both units (with this build's paths), printing no
# warning; that part is skipped, saying so, when systemd-analyze is not installed. The rest of the
# units' hardening (ProtectSystem=, SystemCallFilter= ...) needs systemd as PID 1: not checked here.
#
# Usage: systemd_units.sh [AGENT_PATH [OPERATOR_PATH]]   (needs root; exits 77 otherwise)

# shellcheck source=nat_lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/nat_lib.sh"
tm_mesh_init systemd_units 100 "$@"

PACKAGING=$TM_REPO_ROOT/packaging
UNITS_PY=$TM_REPO_ROOT/e2e/netns/systemd_units.py
COORD_UNIT=$PACKAGING/tunnelmesh-coordinator.service
AGENT_UNIT=$PACKAGING/tunnelmesh-agent.service
command -v setpriv >/dev/null || tm_fail "required tool 'setpriv' is not installed (util-linux)"
UNIT_UID=65534

unit_get() { "$TM_PY" "$UNITS_PY" get "$1" "$2"; }

# unit_exec UNIT [--env-file ORIG=PATH ...]: the unit's ExecStart for this test, in UNIT_CMD.
unit_exec() {
  local unit=$1
  shift
  mapfile -d '' UNIT_CMD < <("$TM_PY" "$UNITS_PY" exec "$unit" "$@" \
    --map /usr/bin/tunnelmesh-operator="$TM_OPERATOR" --map /usr/bin/tunnelmesh-agent="$TM_AGENT" \
    --map /etc/tunnelmesh/manifests="$TM_WORK/coord.manifests" \
    --map /etc/tunnelmesh/join-token="$(tm_token_file)" \
    --map /var/lib/tunnelmesh-coordinator="$(tm_coord_state)" \
    --map /var/lib/tunnelmesh="$TM_WORK/agent.state" ||
    echo "FAILED")
  [[ "${UNIT_CMD[*]}" != *FAILED* ]] || tm_fail "cannot read ExecStart of $unit (above)"
  tm_log "$(basename "$unit"): ${UNIT_CMD[*]}"
}

# bounding_set UNIT: the unit's CapabilityBoundingSet= as setpriv's --bounding-set argument.
bounding_set() {
  local caps out="-all" cap
  caps=$(unit_get "$1" CapabilityBoundingSet)
  for cap in $caps; do out+=",+$(tr '[:upper:]' '[:lower:]' <<<"${cap#CAP_}")"; done
  echo "$out"
}

tm_step "the units' settings"
for unit in "$COORD_UNIT" "$AGENT_UNIT"; do
  tm_expect_eq "Restart= of $(basename "$unit")" "$(unit_get "$unit" Restart)" on-failure
done
tm_expect_eq "User= of the coordinator's unit" "$(unit_get "$COORD_UNIT" User)" tunnelmesh
tm_expect_eq "StateDirectory= of the coordinator's unit" "$(unit_get "$COORD_UNIT" StateDirectory)" \
  tunnelmesh-coordinator
tm_expect_eq "CapabilityBoundingSet= of the agent's unit" \
  "$(unit_get "$AGENT_UNIT" CapabilityBoundingSet)" "CAP_NET_ADMIN CAP_NET_BIND_SERVICE"

if command -v systemd-analyze >/dev/null; then
  tm_step "systemd-analyze verify"
  mkdir -p "$TM_WORK/units"
  for unit in "$COORD_UNIT" "$AGENT_UNIT"; do
    # verify wants ExecStart's program to exist: this build's, under the unit's own file name.
    sed -e "s#/usr/bin/tunnelmesh-operator#$TM_OPERATOR#" -e "s#/usr/bin/tunnelmesh-agent#$TM_AGENT#" \
      "$unit" >"$TM_WORK/units/$(basename "$unit")"
  done
  out=$(cd "$TM_WORK/units" && systemd-analyze verify ./*.service 2>&1) ||
    tm_fail "systemd-analyze verify failed: $out"
  [[ -z "$out" ]] || tm_fail "systemd-analyze verify warns: $out"
  tm_log "systemd-analyze verify: no warning"
else
  tm_log "SKIPPED: systemd-analyze verify (systemd-analyze is not installed)"
fi

tm_step "the coordinator from its unit, as uid $UNIT_UID without capabilities"
tm_net_public coord
tm_net_public a
tm_net_public b
tm_coord_setup coord
# As the README installs them: the manifests readable by the service's group, nothing else; the
# state directory created by systemd (StateDirectory=, mode 0700) for the service's user.
chmod 711 "$TM_WORK"
chgrp -R "$UNIT_UID" "$TM_WORK/coord.manifests"
chmod 750 "$TM_WORK/coord.manifests"
chmod 640 "$TM_WORK/coord.manifests/mesh.yaml"
install -d -m 0700 -o "$UNIT_UID" -g "$UNIT_UID" "$(tm_coord_state)"
unit_exec "$COORD_UNIT" \
  --env-file /etc/default/tunnelmesh-coordinator="$PACKAGING/tunnelmesh-coordinator.default"
TOKEN=$(cat "$(tm_token_file)")
[[ "${UNIT_CMD[*]}" != *"$TOKEN"* ]] || tm_fail "the coordinator's command line holds the token"
COORD_LOG=$(tm_coord_log)
# Not through tm_in: the pid must be the operator's own (ip netns exec and setpriv exec it).
ip netns exec "$(tm_ns coord)" setpriv --reuid="$UNIT_UID" --regid="$UNIT_UID" --clear-groups \
  --bounding-set="$(bounding_set "$COORD_UNIT")" --inh-caps=-all -- "${UNIT_CMD[@]}" \
  >>"$COORD_LOG" 2>&1 &
COORD_PID=$!
TM_BG_PIDS+=("$COORD_PID")
# The harness's own helpers (tm_members_join below) use the coordinator address and CA hash.
TM_COORD_PID=$COORD_PID
coord_ready() { grep -q 'coordinator ready' "$COORD_LOG" && [[ -s "$(tm_coord_state)/ca-hash" ]]; }
if ! tm_poll 15 coord_ready; then
  tm__wait_exit "$COORD_PID" 0 && tm_fail "the coordinator exited with code $TM_EXIT_RC (log below)"
  tm_fail "the coordinator from the unit did not become ready within 15s"
fi
tm_expect_eq "owner of the coordinator's members and keys" \
  "$(stat -c %u "$(tm_coord_state)/ca-hash")" "$UNIT_UID"
tm_log "coordinator up as uid $UNIT_UID, CA $(cut -c1-20 "$(tm_coord_state)/ca-hash")..."

tm_step "a member from the agent's unit and its environment file"
# The shipped environment file with this test's values: every variable ExecStart uses must be in
# it (systemd_units.py fails otherwise), and no other line changes.
ENV_FILE=$TM_WORK/tunnelmesh-agent.env
"$TM_PY" - "$PACKAGING/tunnelmesh-agent.default" "$ENV_FILE" "$TM_COORD_ADDR:$TM_GRPC_PORT" \
  "--ca-hash $(tm_coord_ca_hash) --name unit --log-level debug" <<'PYEOF'
import sys
src, dst, coordinator, args = sys.argv[1:]
values = {"TUNNELMESH_COORDINATOR": coordinator, "TUNNELMESH_AGENT_ARGS": args}
out, seen = [], set()
for line in open(src):
    key = line.split("=", 1)[0].strip()
    if not line.lstrip().startswith("#") and key in values:
        line, _ = f"{key}={values[key]}\n", seen.add(key)
    out.append(line)
missing = set(values) - seen
if missing:
    sys.exit(f"{src} does not set {', '.join(sorted(missing))}")
open(dst, "w").write("".join(out))
PYEOF
unit_exec "$AGENT_UNIT" --env-file /etc/default/tunnelmesh-agent="$ENV_FILE"
[[ "${UNIT_CMD[*]}" != *"$TOKEN"* ]] || tm_fail "the agent's command line holds the token"
[[ "${UNIT_CMD[*]}" == *"--token-file $(tm_token_file)"* ]] ||
  tm_fail "the agent's command line does not read the token from TUNNELMESH_TOKEN_FILE"
AGENT_LOG=$TM_WORK/unit.log
ip netns exec "$(tm_ns a)" setpriv --bounding-set="$(bounding_set "$AGENT_UNIT")" -- "${UNIT_CMD[@]}" \
  >>"$AGENT_LOG" 2>&1 &
AGENT_PID=$!
TM_BG_PIDS+=("$AGENT_PID")
unit_status() {
  tm_in a timeout 5 "$TM_AGENT" status --json --state-dir "$TM_WORK/agent.state" |
    "$TM_PY" -c 'import json, sys; ips = json.load(sys.stdin)["self"]["mesh_ips"]; print(ips[0]); sys.exit(not ips)'
}
if ! tm_poll 15 unit_status; then
  tail -n 20 "$AGENT_LOG" >&2
  tm__wait_exit "$AGENT_PID" 0 && tm_fail "the agent exited with code $TM_EXIT_RC (log above)"
  tm_fail "the agent from the unit did not register within 15s (log above)"
fi
UNIT_IP=$(cat "$TM_WORK/poll.out")
tm_coord_registered unit >/dev/null || tm_fail "the coordinator did not log member unit"
tm_log "member unit registered with $UNIT_IP"

tm_step "it reaches a member started by the harness"
tm_member_new other b
tm_member_start other
tm_wait_ping b "$UNIT_IP" 15
tm_wait_ping a "$(tm_member_ip other 4)" 15

tm_step "SIGTERM, as systemctl stop sends it: both exit 0"
kill -TERM "$AGENT_PID"
tm__wait_exit "$AGENT_PID" 10 || tm_fail "the agent did not exit within 10s of SIGTERM"
tm__bg_forget "$AGENT_PID"
tm_expect_eq "the agent's exit code after SIGTERM" "$TM_EXIT_RC" 0
kill -TERM "$COORD_PID"
tm__wait_exit "$COORD_PID" 10 || tm_fail "the coordinator did not exit within 10s of SIGTERM"
tm__bg_forget "$COORD_PID"
TM_COORD_PID=""
tm_expect_eq "the coordinator's exit code after SIGTERM" "$TM_EXIT_RC" 0

tm_log "PASS"
