#!/usr/bin/env bash
# coordinator_fd_exhaustion.sh: a standalone coordinator whose descriptors run out (finding 3 of
# the security review: gRPC 1.51 stops accepting for good after accept4 fails with EMFILE, and the
# manifest reload then read an empty directory and dropped every Mesh).
#
# The coordinator runs under `prlimit --nofile=256:256` (a stand-in for the real limit: the soft
# limit is raised to the hard one at start, and here both are 256). Two members join and ping each
# other. A helper namespace opens idle TCP connections to the coordinator's gRPC and relay ports
# and keeps them open (reopening those the coordinator closes) until the coordinator logs EMFILE
# on its gRPC listener; then it lets them all go.
#
# Checks: the coordinator really ran out (gRPC logged "Failed accept4: Too many open files");
# a third member joins within TM_REJOIN_MAX_S (default 20) seconds of the release; the first two
# never stopped pinging each other (at most TM_MAX_LOST_PINGS, default 3, of a steady ping lost:
# the data plane does not depend on the coordinator); the Mesh was never dropped (no "manifests
# reloaded: meshes=0"); counters.json shows the listener watchdog's failed checks and at least one
# restart; the first two members see the third.
#
# Usage: coordinator_fd_exhaustion.sh [AGENT_PATH [OPERATOR_PATH]]   (needs root; exits 77
# otherwise)

# shellcheck source=nat_lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/nat_lib.sh"
tm_mesh_init coordinator_fd_exhaustion 150 "$@"

NOFILE=${TM_COORD_NOFILE:-256}
REJOIN_MAX_S=${TM_REJOIN_MAX_S:-20}
MAX_LOST=${TM_MAX_LOST_PINGS:-3}
FLOW_S=45
command -v prlimit >/dev/null || tm_fail "required tool 'prlimit' is not installed (util-linux)"

# The coordinator under a low descriptor limit: tm_coord_start runs $TM_OPERATOR, so a wrapper
# that execs prlimit, which execs the operator (one pid throughout).
REAL_OPERATOR=$TM_OPERATOR
TM_OPERATOR=$TM_WORK/operator-nofile.sh
cat >"$TM_OPERATOR" <<EOF
#!/bin/sh
exec prlimit --nofile=$NOFILE:$NOFILE -- "$REAL_OPERATOR" "\$@"
EOF
chmod +x "$TM_OPERATOR"

tm_step "coordinator (RLIMIT_NOFILE $NOFILE) and two members"
tm_net_public coord
tm_net_public a
tm_net_public b
tm_net_public c
tm_net_public x
tm_coord_setup coord
tm_coord_start
limit=$(awk '/Max open files/ {print $4 ":" $5}' "/proc/$TM_COORD_PID/limits")
tm_expect_eq "the coordinator's descriptor limit (soft:hard)" "$limit" "$NOFILE:$NOFILE"
tm_members_join alpha:a beta:b
A4=$(tm_member_ip alpha 4)
B4=$(tm_member_ip beta 4)
tm_members_wait_ping 10 alpha beta

tm_step "steady pings alpha -> beta for ${FLOW_S}s while the coordinator runs out of descriptors"
tm_flow_ping_start ping a "$B4" "$FLOW_S" 0.2

# The helper: as many idle TCP connections as it can get to the gRPC and relay ports, kept open
# (the relay drops unauthenticated ones after 5 s, gRPC unfinished handshakes after 10 s: they are
# opened again) until SIGTERM; then it closes them all and exits.
cat >"$TM_WORK/exhaust.py" <<'PYEOF'
import signal, socket, sys, time
host, ports, want = sys.argv[1], [int(p) for p in sys.argv[2].split(",")], int(sys.argv[3])
stop = False
def on_term(*_):
    global stop
    stop = True
signal.signal(signal.SIGTERM, on_term)
conns, opened, i = [], 0, 0
while not stop:
    conns = [s for s in conns if s.fileno() >= 0]
    alive = []
    for s in conns:  # drop the ones the coordinator closed
        try:
            s.setblocking(False)
            if s.recv(1, socket.MSG_PEEK) == b"":
                s.close()
                continue
        except BlockingIOError:
            pass
        except OSError:
            s.close()
            continue
        alive.append(s)
    conns = alive
    while len(conns) < want and not stop:
        port = ports[i % len(ports)]
        i += 1
        try:
            s = socket.create_connection((host, port), timeout=0.5)
            conns.append(s)
            opened += 1
        except OSError:
            break
    print("open %d opened %d" % (len(conns), opened), flush=True)
    time.sleep(0.2)
for s in conns:
    s.close()
print("released %d" % len(conns), flush=True)
PYEOF
emfile_logged() { grep -q 'Failed accept4: Too many open files' "$(tm_coord_log)"; }
sleep_s=3
# Pings run a few seconds with the coordinator healthy first (part of the flow under test).
sleep "$sleep_s"
tm_bg_in x "$TM_PY" "$TM_WORK/exhaust.py" "$TM_COORD_ADDR" "$TM_GRPC_PORT,$TM_RELAY_PORT" \
  $((NOFILE + 100)) >"$TM_WORK/exhaust.log" 2>&1
EXHAUST_PID=$TM_BG_PID
tm_wait 30 "the coordinator to log EMFILE on its gRPC listener" emfile_logged
tm_log "exhausted: $(tail -n 1 "$TM_WORK/exhaust.log")"
# Some seconds with no descriptor to spare: the watchdog must wait, not rebuild into EMFILE.
sleep 4
kill -TERM "$EXHAUST_PID"
tm__wait_exit "$EXHAUST_PID" 10 || tm_fail "the connection helper did not exit"
tm__bg_forget "$EXHAUST_PID"
RELEASED=$(tm__now_ms)
tm_log "connections released: $(tail -n 1 "$TM_WORK/exhaust.log")"
tm_coord_alive

tm_step "a third member joins within ${REJOIN_MAX_S}s of the release"
tm_member_new gamma c
tm_member_launch gamma
tm_member_wait_ready gamma "$REJOIN_MAX_S"
joined_ms=$(( $(tm__now_ms) - RELEASED ))
tm_log "gamma registered $((joined_ms / 1000)).$(printf '%03d' $((joined_ms % 1000)))s after the release"
tm_member_wait_peer 10 alpha gamma
tm_member_wait_peer 10 beta gamma
C4=$(tm_member_ip gamma 4)
tm_wait_ping a "$C4" 10

tm_step "the first two never stopped pinging; the Mesh was never dropped; counters show the recovery"
tm_flow_ping_check ping "$MAX_LOST"
if grep -q 'manifests reloaded: meshes=0' "$(tm_coord_log)"; then
  tm_check_fail "the coordinator dropped its Mesh while descriptors were exhausted"
fi
grep 'stopped accepting connections\|gRPC server rebuilt' "$(tm_coord_log)" >&2 ||
  tm_check_fail "the coordinator did not log why it rebuilt its gRPC server"
counters() { "$TM_PY" -c 'import json, sys; d = json.load(open(sys.argv[1]))["grpc_watchdog"]; print(d["checks"], d["failed_checks"], d["restarts"])' "$(tm_coord_state)/counters.json"; }
restarted() { read -r _ _ r < <(counters) && (( r >= 1 )); }
tm_wait 5 "counters.json to show a gRPC restart" restarted
read -r checks failed restarts < <(counters)
tm_log "grpc_watchdog: checks=$checks failed_checks=$failed restarts=$restarts"
tm_expect_gt "failed listener checks" "$failed" 2
tm_expect_gt "gRPC server restarts" "$restarts" 0
tm_member_alive alpha
tm_member_alive beta
tm_coord_alive
tm_checks_done
