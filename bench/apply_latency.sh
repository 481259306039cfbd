#!/usr/bin/env bash
# apply_latency.sh: how long a change to a Mesh takes to reach every member.
#
# Starts a coordinator and `sim_agents --count N` (N simulated members, each with its own key, TLS
# channel and Watch stream; no data plane), waits for "ready N", then --runs times: changes the
# Mesh's spec.domain to a new value, taking the wall-clock time just before the change, and waits
# until sim_agents reports that all N members received the new settings. Per run it prints the
# latency to the first and to the last member; then the medians, and the ratio last / first (the
# first member is the baseline: noticing the change plus one delivery; the rest is fan-out).
#
#   --mode standalone   tunnelmesh-operator --standalone on loopback; the change is an atomic
#                       rewrite (write + rename) of the Mesh manifest in its --manifests directory.
#   --mode kubernetes   the operator in Kubernetes mode and `kubectl apply` of the Mesh: not
#                       available yet (see kubernetes_start_coordinator below).
#
# Usage: bench/apply_latency.sh [--mode standalone|kubernetes] [--count N] [--runs N]
#                               [--bin-dir DIR] [--keep]
#   --bin-dir   where tunnelmesh-operator and sim_agents are (default: build/bin of the repo)
#   --keep      keep the work directory (logs, manifests, sim_agents output) at exit
# Not a test: it prints what it measured and exits 0; 1 if a run did not reach every member within
# its deadline, 2 on bad usage, 3 if the mode is not available.

set -Eeuo pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

MODE=standalone
COUNT=50
RUNS=7
BIN_DIR="$REPO/build/bin"
KEEP=0
while (($#)); do
  case "$1" in
    --mode) MODE=${2:-}; shift 2 ;;
    --count) COUNT=${2:-}; shift 2 ;;
    --runs) RUNS=${2:-}; shift 2 ;;
    --bin-dir) BIN_DIR=${2:-}; shift 2 ;;
    --keep) KEEP=1; shift ;;
    -h | --help) awk 'NR > 1 && !/^#/ {exit} NR > 1 {sub(/^# ?/, ""); print}' "${BASH_SOURCE[0]}"; exit 0 ;;
    *) echo "apply_latency: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done
[[ "$COUNT" =~ ^[1-9][0-9]*$ && "$RUNS" =~ ^[1-9][0-9]*$ ]] ||
  { echo "apply_latency: --count and --runs take positive integers" >&2; exit 2; }
case "$MODE" in
  standalone | kubernetes) ;;
  *) echo "apply_latency: --mode is standalone or kubernetes, not \"$MODE\"" >&2; exit 2 ;;
esac
SIM="$BIN_DIR/sim_agents"
OPERATOR="$BIN_DIR/tunnelmesh-operator"
for bin in "$SIM" "$OPERATOR"; do
  [[ -x "$bin" ]] || { echo "apply_latency: $bin not found: build it or pass --bin-dir" >&2; exit 2; }
done

# Set by <mode>_start_coordinator, used by the rest:
COORD_ADDR=""  # HOST:PORT of the coordinator's gRPC port
CA_HASH=""     # sha256:... of its CA
TOKEN_FILE=""  # the Mesh's join token
MESH_NAME=bench
WORK=$(mktemp -d /tmp/apply-latency.XXXXXX)
PIDS=()

log() { echo "apply_latency: $*" >&2; }
now_ms() { date +%s%3N; }

cleanup() {
  local pid
  for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  if ((KEEP)); then log "work directory kept: $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT

# poll SECONDS COMMAND...: runs COMMAND every 20 ms until it succeeds; fails after SECONDS.
poll() {
  local deadline=$(($(now_ms) + $1 * 1000))
  shift
  until "$@"; do
    (($(now_ms) < deadline)) || return 1
    sleep 0.02
  done
}

# free_port tcp|udp: a port nothing on 127.0.0.1 listens on now.
free_port() {
  python3 -c 'import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_STREAM if sys.argv[1] == "tcp" else socket.SOCK_DGRAM)
s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])' "$1"
}

# ---- standalone mode: tunnelmesh-operator --standalone and a manifest directory -----------------

# standalone_mesh_yaml DOMAIN: the Mesh and its join token Secret.
standalone_mesh_yaml() {
  cat <<YAML
apiVersion: tunnelmesh.io/v1alpha1
kind: Mesh
metadata: {name: $MESH_NAME}
spec:
  ipv4CIDR: 10.77.0.0/16
  domain: $1
  joinTokenSecretRef: {namespace: tunnelmesh, name: $MESH_NAME-join, key: token}
---
apiVersion: v1
kind: Secret
metadata: {namespace: tunnelmesh, name: $MESH_NAME-join}
stringData: {token: "$(cat "$TOKEN_FILE")"}
YAML
}

standalone_start_coordinator() {
  mkdir -p "$WORK/manifests"
  TOKEN_FILE="$WORK/token"
  (umask 077 && head -c 24 /dev/urandom | base64 >"$TOKEN_FILE")
  standalone_mesh_yaml initial.bench >"$WORK/manifests/mesh.yaml"
  local grpc_port
  grpc_port=$(free_port tcp)
  "$OPERATOR" --standalone --manifests "$WORK/manifests" --state-dir "$WORK/coordinator" \
    --listen-address 127.0.0.1 --advertise-address 127.0.0.1 --grpc-port "$grpc_port" \
    --stun-port "$(free_port udp)" --relay-port "$(free_port tcp)" --log-level warn \
    >"$WORK/operator.log" 2>&1 &
  COORD_PID=$!
  PIDS+=("$COORD_PID")
  poll 30 test -s "$WORK/coordinator/ca-hash" ||
    { log "the coordinator wrote no ca-hash within 30 s:"; cat "$WORK/operator.log" >&2; exit 1; }
  CA_HASH=$(cat "$WORK/coordinator/ca-hash")
  COORD_ADDR="127.0.0.1:$grpc_port"
}

# standalone_diagnose: what may explain members that cannot reach the coordinator.
standalone_diagnose() {
  kill -0 "$COORD_PID" 2>/dev/null || log "the coordinator is not running any more"
  log "coordinator log:"
  tail -n 20 "$WORK/operator.log" >&2
  log "listening on ${COORD_ADDR##*:}:"
  ss -ltnp "( sport = :${COORD_ADDR##*:} )" >&2 || true
}

# standalone_apply_change DOMAIN: prints the wall-clock ms taken just before the change. The new
# file is renamed over the old one so the coordinator never reads half of it.
standalone_apply_change() {
  local start
  start=$(now_ms)
  standalone_mesh_yaml "$1" >"$WORK/manifests/.mesh.yaml.new"
  mv -f "$WORK/manifests/.mesh.yaml.new" "$WORK/manifests/mesh.yaml"
  echo "$start"
}

# ---- kubernetes mode: the operator against an API server, changes with kubectl apply -----------
# To be filled in once the operator's Kubernetes mode exists: start the operator (or find it in the
# cluster) and set COORD_ADDR, CA_HASH, TOKEN_FILE as standalone_start_coordinator does; apply a
# Mesh with a new spec.domain with `kubectl apply` and print the ms taken just before it.

kubernetes_start_coordinator() {
  log "--mode kubernetes is not available yet: the operator's Kubernetes mode is still being" \
    "written; use --mode standalone"
  exit 3
}

kubernetes_diagnose() { :; }

kubernetes_apply_change() {
  log "--mode kubernetes is not available yet"
  exit 3
}

# ---- the measurement, the same for every mode ---------------------------------------------------

"${MODE}_start_coordinator"
log "coordinator ($MODE) at $COORD_ADDR, CA $CA_HASH"

"$SIM" --coordinator "$COORD_ADDR" --token-file "$TOKEN_FILE" --ca-hash "$CA_HASH" \
  --count "$COUNT" --mesh "$MESH_NAME" --name-prefix sim >"$WORK/sim.out" 2>"$WORK/sim.err" &
SIM_PID=$!
PIDS=("$SIM_PID" "${PIDS[@]}")  # stopped before the coordinator
sim_ready() {
  kill -0 "$SIM_PID" 2>/dev/null || { log "sim_agents exited:"; cat "$WORK/sim.err" >&2; exit 1; }
  grep -qx "ready $COUNT" "$WORK/sim.err"
}
if ! poll 60 sim_ready; then
  log "sim_agents not ready within 60 s; the first of what it said:"
  head -n 20 "$WORK/sim.err" >&2
  "${MODE}_diagnose"
  exit 1
fi
log "$COUNT members ready"

RESULTS="$WORK/results.txt"  # lines: run first_ms last_ms (latencies)
: >"$RESULTS"
FAILED=0
for ((run = 1; run <= RUNS; run++)); do
  domain="run$run-$RANDOM.bench"
  start=$("${MODE}_apply_change" "$domain")
  if ! poll 30 grep -qF "\"domain\":\"$domain\"" "$WORK/sim.out"; then
    log "run $run: no report for domain $domain within 30 s"
    FAILED=1
    continue
  fi
  line=$(grep -F "\"domain\":\"$domain\"" "$WORK/sim.out")
  read -r seen first last < <(python3 -c 'import json, sys
d = json.loads(sys.argv[1]); s = int(sys.argv[2])
print(d["members_seen"], d["first_ms"] - s, d["last_ms"] - s)' "$line" "$start")
  if ((seen != COUNT)); then
    log "run $run: only $seen of $COUNT members saw domain $domain (settle timeout)"
    FAILED=1
    continue
  fi
  echo "$run $first $last" >>"$RESULTS"
  log "run $run: first member ${first} ms, last member ${last} ms"
  # A pause of random length, so that the changes do not keep one phase against any polling.
  sleep "0.$((RANDOM % 500 + 300))"
done

python3 - "$RESULTS" "$MODE" "$COUNT" "$RUNS" <<'PYEOF'
import statistics, sys
path, mode, count, runs = sys.argv[1:5]
rows = [tuple(int(x) for x in line.split()) for line in open(path)]
if not rows:
    print("no run completed")
    sys.exit(0)
first = [r[1] for r in rows]
last = [r[2] for r in rows]
print("mode %s, %s members, %d of %s runs completed" % (mode, count, len(rows), runs))
print("run  first_ms  last_ms")
for r in rows:
    print("%3d  %8d  %7d" % r)
mf, ml = statistics.median(first), statistics.median(last)
print("median first member: %.0f ms" % mf)
print("median last member:  %.0f ms (min %d, max %d)" % (ml, min(last), max(last)))
print("median spread last - first: %.0f ms" % statistics.median(b - a for a, b in zip(first, last)))
if mf > 0:
    print("last / first: %.2fx" % (ml / mf))
PYEOF
exit "$FAILED"
