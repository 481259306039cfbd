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
#   --mode kubernetes   a real etcd and kube-apiserver (e2e/cluster/kube.sh, needs root), `helm
#                       install` of charts/tunnelmesh, tunnelmesh-operator in Kubernetes mode on the
#                       host with the admin kubeconfig; the change is `kubectl patch` of Mesh
#                       default. Also measured in the same run: a no-op kubectl call (kubectl's own
#                       start-up, the baseline for the patch), and from the API server's audit log
#                       when the PATCH arrived, so the part after kubectl can be told apart; from
#                       the operator's log ("meshes applied"), when it had queued the change to
#                       every member's stream.
#
# Usage: bench/apply_latency.sh [--mode standalone|kubernetes] [--count N] [--runs N]
#                               [--bin-dir DIR] [--keep]
#   --bin-dir   where tunnelmesh-operator and sim_agents are (default: build/bin of the repo)
#   --keep      keep the work directory (logs, manifests, sim_agents output) at exit
# Besides the latencies it prints the time the members took to register and get their first map,
# and the coordinator's RSS and thread count before, with and after the members (from /proc).
# Not a test: it prints what it measured and exits 0; 1 if a run did not reach every member within
# its deadline or the setup failed, 2 on bad usage, 3 if the mode is not available (kubernetes mode
# when not root).

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

# stop_pids PID...: SIGTERM to all, up to 10 s for them to exit, then SIGKILL. Only our children.
stop_pids() {
  local pid deadline=$(($(now_ms) + 10000))
  for pid in "$@"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "$@"; do
    while kill -0 "$pid" 2>/dev/null && (($(now_ms) < deadline)); do sleep 0.05; done
    kill -KILL "$pid" 2>/dev/null && log "pid $pid ignored SIGTERM for 10 s: killed"
    wait "$pid" 2>/dev/null || true
  done
}

# Members first, then the coordinator, then (kubernetes mode) kube-apiserver and etcd: the
# operator releases its Lease through the API server when it stops. Signals are ignored meanwhile:
# an exit from kube.sh's INT/TERM traps inside this function would skip the rest (it takes at most
# a few seconds per process).
cleanup() {
  set +eE
  trap - ERR
  trap '' INT TERM USR1
  ((${#PIDS[@]} == 0)) || stop_pids "${PIDS[@]}"
  if [[ "$MODE" == kubernetes && -n "${KUBE_WORK:-}" ]]; then
    [[ -z "${KUBE_WATCHDOG_PID:-}" ]] || kill "$KUBE_WATCHDOG_PID" 2>/dev/null
    kube_down
    if ((KEEP)); then log "kube work directory kept: $KUBE_WORK"; else rm -rf "$KUBE_WORK"; fi
  fi
  if ((KEEP)); then log "work directory kept: $WORK"; else rm -rf "$WORK"; fi
}

trap cleanup EXIT
if [[ "$MODE" == kubernetes ]]; then
  if ((EUID != 0)); then
    log "--mode kubernetes needs root (e2e/cluster/kube.sh builds and caches kube-apiserver)"
    exit 3
  fi
  # kube.sh's own EXIT trap (kube__on_exit) would stop only etcd and kube-apiserver and report
  # PASS/FAILED as a test; ours below replaces it and also stops the operator and sim_agents. Its
  # INT, TERM and time-budget (USR1) traps stay: they exit, which runs ours.
  # shellcheck source-path=SCRIPTDIR source=../e2e/cluster/kube.sh
  source "$REPO/e2e/cluster/kube.sh"
  kube_init apply_latency $((900 + RUNS * 60))
  trap cleanup EXIT
fi

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
    --stun-port "$(free_port udp)" --relay-port "$(free_port tcp)" --no-dns --log-level warn \
    --register-rate 100000 >"$WORK/operator.log" 2>&1 &
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

# ---- kubernetes mode: the operator against a real API server, changes with kubectl patch -------
# etcd and kube-apiserver come from e2e/cluster/kube.sh (sourced above), the Mesh and its join
# token from `helm install` of the chart; the operator runs on the host (not in a pod: there is no
# kubelet) with the admin kubeconfig. The API server writes an audit log of kubectl's requests on
# Meshes, which says when a patch arrived (microseconds) without asking kubectl.

NAMESPACE=tunnelmesh

kubernetes_start_coordinator() {
  MESH_NAME=default
  cat >"$WORK/audit-policy.yaml" <<'YAML'
apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: [RequestReceived]
rules:
- level: Metadata
  verbs: [get, patch]
  resources: [{group: tunnelmesh.io, resources: [meshes]}]
- level: None
YAML
  # The log backend writes each event before the response goes out; one small line per kubectl
  # call here.
  KUBE_APISERVER_EXTRA_ARGS="--audit-policy-file $WORK/audit-policy.yaml"
  KUBE_APISERVER_EXTRA_ARGS+=" --audit-log-path $WORK/audit.log"
  kube_up
  log "helm install of charts/tunnelmesh"
  helm install tunnelmesh "$REPO/charts/tunnelmesh" --namespace "$NAMESPACE" --create-namespace \
    --kubeconfig "$KUBECONFIG_FILE" >"$WORK/helm.out" 2>&1 ||
    { log "helm install failed:"; cat "$WORK/helm.out" >&2; exit 1; }
  local grpc_port
  grpc_port=$(free_port tcp)
  "$OPERATOR" --kubeconfig "$KUBECONFIG_FILE" --namespace "$NAMESPACE" --identity apply-latency \
    --state-dir "$WORK/operator" --listen-address 127.0.0.1 --advertise-address 127.0.0.1 \
    --grpc-port "$grpc_port" --stun-port "$(free_port udp)" --relay-port "$(free_port tcp)" \
    --no-dns --log-level info --register-rate 100000 >"$WORK/operator.log" 2>&1 &
  COORD_PID=$!
  PIDS+=("$COORD_PID")
  COORD_ADDR="127.0.0.1:$grpc_port"
  operator_ready() {
    if ! kill -0 "$COORD_PID" 2>/dev/null; then
      log "the operator exited:"
      cat "$WORK/operator.log" >&2
      exit 1
    fi
    grep -qs 'coordinator ready' "$WORK/operator.log"
  }
  if ! poll 60 operator_ready; then
    log "the operator did not say \"coordinator ready\" within 60 s"
    kubernetes_diagnose
    exit 1
  fi
  TOKEN_FILE="$WORK/token"
  (umask 077 && kube_kubectl -n "$NAMESPACE" get secret tunnelmesh-join-token \
    -o 'jsonpath={.data.token}' | base64 -d >"$TOKEN_FILE")
  [[ -s "$TOKEN_FILE" ]] ||
    { log "Secret $NAMESPACE/tunnelmesh-join-token has no key token"; exit 1; }
  ca_hash_published() {
    CA_HASH=$(kube_kubectl -n "$NAMESPACE" get configmap tunnelmesh-ca \
      -o 'jsonpath={.data.ca-hash}' 2>/dev/null) && [[ "$CA_HASH" == sha256:* ]]
  }
  if ! poll 30 ca_hash_published; then
    log "ConfigMap $NAMESPACE/tunnelmesh-ca has no ca-hash after 30 s"
    kubernetes_diagnose
    exit 1
  fi
}

kubernetes_diagnose() {
  kill -0 "$COORD_PID" 2>/dev/null || log "the operator is not running any more"
  log "operator log:"
  tail -n 30 "$WORK/operator.log" >&2
  kube_kubectl get mesh "$MESH_NAME" -o yaml >&2 || true
}

# kubernetes_apply_change DOMAIN: prints the wall-clock ms taken just before `kubectl patch`. Just
# before that, times a no-op kubectl call (the same binary, kubeconfig and TLS connection set-up)
# as the baseline for kubectl's own share; both kubectl wall times go to files for the report.
kubernetes_apply_change() {
  local t start
  t=$(now_ms)
  kube_kubectl get mesh "$MESH_NAME" -o name >/dev/null
  echo "$(($(now_ms) - t))" >>"$WORK/kubectl-noop.txt"
  start=$(now_ms)
  kube_kubectl patch mesh "$MESH_NAME" --type merge -p "{\"spec\":{\"domain\":\"$1\"}}" \
    >/dev/null
  echo "$(($(now_ms) - start))" >>"$WORK/kubectl-patch.txt"
  echo "$start"
}

# kubernetes_report: the kubectl baseline, and each run split at the moment the API server received
# the PATCH (audit log; kubectl GETs the object first, so that is within kubectl's share) and the
# operator's "meshes applied" log line (milliseconds, local time). The operator logs that line once
# Coordinator::SetMeshes has queued the update to every member's stream, so it falls between the
# first and the last member: it marks the end of the queuing, not when the operator noticed. A run
# whose PATCH or log line cannot be matched is left out of the split, not guessed.
kubernetes_report() {
  python3 - "$RESULTS" "$WORK/kubectl-noop.txt" "$WORK/kubectl-patch.txt" "$WORK/audit.log" \
    "$WORK/operator.log" "$MESH_NAME" <<'PYEOF'
import datetime, json, re, statistics, sys
results, noop_path, patch_path, audit_path, operator_path, mesh = sys.argv[1:7]
rows = [[int(x) for x in line.split()] for line in open(results)]  # run first last start
noop = [int(x) for x in open(noop_path)]
patch = [int(x) for x in open(patch_path)]

def med(xs):
    return "%.0f" % statistics.median(xs) if xs else "-"

def audit_ms(text):  # RFC 3339 in UTC with microseconds
    t = datetime.datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ")
    return t.replace(tzinfo=datetime.timezone.utc).timestamp() * 1000

received = []
for line in open(audit_path):
    e = json.loads(line)
    ref = e.get("objectRef", {})
    if (e.get("verb") == "patch" and ref.get("resource") == "meshes"
            and ref.get("name") == mesh and not ref.get("subresource")
            and e.get("userAgent", "").startswith("kubectl")):
        received.append(audit_ms(e["requestReceivedTimestamp"]))
applied = []
for line in open(operator_path):
    m = re.match(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}) .*meshes applied", line)
    if m:  # local time, as the operator's logger writes it
        t = datetime.datetime.strptime(m.group(1), "%Y-%m-%dT%H:%M:%S.%f")
        applied.append(t.timestamp() * 1000)

def runs(xs):
    return ", ".join(map(str, xs))

print("kubectl no-op (get mesh %s -o name): median %s ms, runs %s" % (mesh, med(noop), runs(noop)))
print("kubectl patch, start to exit:        median %s ms, runs %s" % (med(patch), runs(patch)))
starts = [r[3] for r in rows] + [float("inf")]
split = []
for i, (run, first, last, start) in enumerate(rows):
    recv = [t for t in received if start <= t < starts[i + 1]]
    appl = [t for t in applied if start <= t < starts[i + 1]]
    if len(recv) != 1 or len(appl) != 1:
        print("run %d: %d PATCHes and %d \"meshes applied\" lines in its window: not split"
              % (run, len(recv), len(appl)))
        continue
    r, a = recv[0], appl[0]
    split.append((run, r - start, a - r, start + first - r, start + last - r))
if split:
    print("split at the API server's receipt of the PATCH (audit log) and the operator's"
          " \"meshes applied\" (queued to all members):")
    print("run  kubectl_to_api_ms  api_to_queued_ms  api_to_first_ms  api_to_last_ms")
    for s in split:
        print("%3d  %17.0f  %16.0f  %15.0f  %14.0f" % s)
    for name, k in (("kubectl start to API server", 1), ("API server to queued to all members", 2),
                    ("API server to first member", 3), ("API server to last member", 4)):
        print("median %s: %s ms" % (name, med([s[k] for s in split])))
PYEOF
}

# ---- the measurement, the same for every mode ---------------------------------------------------

# coordinator_stats: "rss_kb hwm_kb threads" of the coordinator process, from /proc.
coordinator_stats() {
  awk '/^VmRSS:/ {rss = $2} /^VmHWM:/ {hwm = $2} /^Threads:/ {threads = $2}
       END {print rss, hwm, threads}' "/proc/$COORD_PID/status"
}

"${MODE}_start_coordinator"
log "coordinator ($MODE) at $COORD_ADDR, CA $CA_HASH"

read -r idle_rss _ idle_threads < <(coordinator_stats)
SIM_START=$(now_ms)
"$SIM" --coordinator "$COORD_ADDR" --token-file "$TOKEN_FILE" --ca-hash "$CA_HASH" \
  --count "$COUNT" --mesh "$MESH_NAME" --name-prefix sim >"$WORK/sim.out" 2>"$WORK/sim.err" &
SIM_PID=$!
PIDS=("$SIM_PID" "${PIDS[@]}")  # stopped before the coordinator
sim_ready() {
  kill -0 "$SIM_PID" 2>/dev/null || { log "sim_agents exited:"; cat "$WORK/sim.err" >&2; exit 1; }
  grep -qx "ready $COUNT" "$WORK/sim.err"
}
# Members start one after another (each once the one before has its map): allow 60 s plus 100 ms
# per member.
READY_TIMEOUT=$((60 + COUNT / 10))
if ! poll "$READY_TIMEOUT" sim_ready; then
  log "sim_agents not ready within $READY_TIMEOUT s; the first of what it said:"
  head -n 20 "$WORK/sim.err" >&2
  "${MODE}_diagnose"
  exit 1
fi
REGISTER_MS=$(($(now_ms) - SIM_START))
read -r ready_rss _ ready_threads < <(coordinator_stats)
log "$COUNT members ready"

RESULTS="$WORK/results.txt"  # lines: run first_ms last_ms (latencies) start_ms (wall clock)
: >"$RESULTS"
FAILED=0
for ((run = 1; run <= RUNS; run++)); do
  domain="d$run.example"
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
  echo "$run $first $last $start" >>"$RESULTS"
  log "run $run: first member ${first} ms, last member ${last} ms"
  # A pause of random length, so that the changes do not keep one phase against any polling.
  sleep "0.$((RANDOM % 500 + 300))"
done

read -r end_rss end_hwm end_threads < <(coordinator_stats)
echo "registration: $COUNT members registered and holding their first map in $REGISTER_MS ms" \
  "($((REGISTER_MS * 1000 / COUNT)) us per member, one after another)"
echo "coordinator RSS: ${idle_rss} kB before the members, ${ready_rss} kB with them," \
  "${end_rss} kB after the runs (peak ${end_hwm} kB); threads: ${idle_threads} before," \
  "${ready_threads} with the members, ${end_threads} after"
python3 - "$RESULTS" "$MODE" "$COUNT" "$RUNS" <<'PYEOF'
import statistics, sys
path, mode, count, runs = sys.argv[1:5]
rows = [tuple(int(x) for x in line.split()[:3]) for line in open(path)]
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
if [[ "$MODE" == kubernetes && -s "$RESULTS" ]]; then kubernetes_report; fi
exit "$FAILED"
