#!/usr/bin/env bash
# pod_first_packet.sh: how soon a new pod talks to a pod on another node (docs/benchmarks.md,
# "Pods as members"). A coordinator and two nodes with agents; a pod on node b attached once; then,
# --runs times, a new pod on node a: the runtime's ADD through the chain bridge + host-local +
# tunnelmesh-cni (e2e/netns/cni_runtime.py, as containerd calls it), then pings every 10 ms from
# the pod to the pod on node b until the first reply. The same run measures the baseline, the
# chain without tunnelmesh-cni (bridge + host-local), ADD to the first reply from the bridge's
# gateway: what every pod start costs already. Each pod is deleted (DEL) before the next.
#
#   add        ms for the runtime's ADD of the whole chain (tunnelmesh-cni included)
#   first      ms from the start of ADD to the first reply from the pod on node b
#   base_add   ms for ADD of bridge + host-local alone
#   base_first ms from the start of that ADD to the first reply from the gateway
# Prints every run, the medians and the ratio first/base_first.
#
# Usage: bench/pod_first_packet.sh [AGENT_PATH [OPERATOR_PATH]] [--runs N]
# Needs root and Debian's containernetworking-plugins. Not a test: exits 1 only when a run broke.
set -Eeuo pipefail
BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
RUNS=15
POSITIONAL=()
while (($#)); do
  case "$1" in
    --runs) RUNS=$2; shift 2 ;;
    -h | --help) awk 'NR > 1 && !/^#/ {exit} NR > 1 {sub(/^# ?/, ""); print}' "${BASH_SOURCE[0]}"; exit 0 ;;
    -*) echo "unknown option $1 (see --help)" >&2; exit 2 ;;
    *) POSITIONAL+=("$1"); shift ;;
  esac
done
[[ "$RUNS" =~ ^[1-9][0-9]*$ ]] || { echo "--runs takes a positive integer" >&2; exit 2; }

# shellcheck source=../e2e/netns/nat_lib.sh
source "$BENCH_DIR/../e2e/netns/nat_lib.sh"
# shellcheck source=../e2e/netns/cni_lib.sh
source "$BENCH_DIR/../e2e/netns/cni_lib.sh"
export TM_AGENT_LOG_LEVEL=${TM_AGENT_LOG_LEVEL:-error}
export TM_OPERATOR_LOG_LEVEL=${TM_OPERATOR_LOG_LEVEL:-info}
tm_mesh_init pod_first_packet $(( RUNS * 30 + 120 )) "${POSITIONAL[@]}"
cni_lib_init
mkdir -p "$TM_WORK/cache"

tm_step "setup: a coordinator, nodes a and b, a pod on b"
cni_two_nodes
tm_member_start alpha
tm_member_start beta
tm_members_wait_ping 10 alpha beta
# conflist FILE NODE SUBNET [SOCKET]: bridge + host-local, then tunnelmesh-cni when SOCKET is given.
conflist() {
  local mesh=""
  [[ -n ${4:-} ]] && mesh=", {\"type\": \"tunnelmesh-cni\", \"mesh\": \"demo\", \"agentSocket\": \"$4\"}"
  cat >"$1" <<EOF
{"cniVersion": "1.0.0", "name": "pods-$2", "plugins": [
  {"type": "bridge", "bridge": "cni0", "isGateway": true,
   "ipam": {"type": "host-local", "dataDir": "$TM_WORK/ipam-$2", "ranges": [[{"subnet": "$3"}]],
            "routes": [{"dst": "0.0.0.0/0"}]}}$mesh]}
EOF
}
conflist "$TM_WORK/a.conflist" a 10.22.1.0/24 "$(tm_member_state alpha)/${TM_MEMBER_IF[alpha]}.sock"
conflist "$TM_WORK/a-base.conflist" a 10.22.1.0/24
conflist "$TM_WORK/b.conflist" b 10.22.2.0/24 "$(tm_member_state beta)/${TM_MEMBER_IF[beta]}.sock"
runtime() { # NODE ARGS...
  local node=$1
  shift
  tm_in "$node" env CNI_PATH="$CNI_BIN" "$TM_PY" "$RUNTIME" "$@" 2>>"$TM_WORK/runtime.stderr"
}
tm_ns_new target
out=$(runtime b ADD "$TM_WORK/b.conflist" target0 "/run/netns/$(tm_ns target)" eth0 "$TM_WORK/cache" \
  "IgnoreUnknown=1;K8S_POD_NAMESPACE=bench;K8S_POD_NAME=target;K8S_POD_UID=t0") ||
  tm_fail "ADD of the pod on node b failed: $out"
TARGET=$("$TM_PY" -c 'import json, sys
r = json.loads(sys.argv[1]); names = [i["name"] for i in r["interfaces"]]
print([i["address"].split("/")[0] for i in r["ips"] if i.get("interface") == names.index("mesh0") and ":" not in i["address"]][0])' "$out")
tm_log "the pod on node b is $TARGET"

now_ms() { date +%s%3N; }
# first_reply NSID DST: ping every 10 ms until the first reply (20 s at most).
first_reply() {
  local deadline
  deadline=$(tm__deadline 20)
  until tm_in "$1" ping -n -c 1 -W 1 "$2" >/dev/null 2>&1; do
    tm__past "$deadline" && return 1
    sleep 0.01
  done
}
RESULTS=$TM_WORK/results.txt
: >"$RESULTS"
for ((run = 1; run <= RUNS; run++)); do
  for leg in mesh base; do
    tm_ns_new "p$leg$run"
    ns=$(tm_ns "p$leg$run")
    config=$TM_WORK/a.conflist
    dst=$TARGET
    [[ $leg == base ]] && { config=$TM_WORK/a-base.conflist; dst=10.22.1.1; }
    start=$(now_ms)
    out=$(runtime a ADD "$config" "c$leg$run" "/run/netns/$ns" eth0 "$TM_WORK/cache" \
      "IgnoreUnknown=1;K8S_POD_NAMESPACE=bench;K8S_POD_NAME=p$run;K8S_POD_UID=u$leg$run") ||
      tm_fail "run $run ($leg): ADD failed: $out"
    added=$(now_ms)
    first_reply "p$leg$run" "$dst" || tm_fail "run $run ($leg): no reply from $dst within 20 s"
    replied=$(now_ms)
    echo "$leg $run $((added - start)) $((replied - start))" >>"$RESULTS"
    runtime a DEL "$config" "c$leg$run" "/run/netns/$ns" eth0 "$TM_WORK/cache" >/dev/null ||
      tm_fail "run $run ($leg): DEL failed"
  done
  tm_log "run $run: $(grep " $run " "$RESULTS" | awk '{printf "%s add %s ms, first %s ms; ", $1, $3, $4}')"
done
"$TM_PY" - "$RESULTS" "$RUNS" <<'EOF'
import statistics, sys
rows = [line.split() for line in open(sys.argv[1])]
def med(leg, col):
    return statistics.median(int(r[col]) for r in rows if r[0] == leg)
add, first, base_add, base_first = med("mesh", 2), med("mesh", 3), med("base", 2), med("base", 3)
print(f"runs={sys.argv[2]} median: add {add} ms, first packet to the other node's pod {first} ms; "
      f"baseline (bridge + host-local) add {base_add} ms, first reply {base_first} ms; "
      f"first/base_first {first / base_first:.2f}")
EOF
