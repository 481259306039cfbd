#!/usr/bin/env bash
# throughput.sh: single-stream TCP throughput (iperf3) between two network namespaces over
#   veth          the bare veth pair (the ceiling),
#   wireguard-go  wireguard-go to wireguard-go (the userspace baseline),
#   agent         tunnelmesh-agent to tunnelmesh-agent,
# measured in one run, the legs interleaved (veth, wireguard-go, agent, veth, ...) so drift on a
# shared machine hits all of them alike. Prints every run, the medians in Gbit/s, the ratios
# agent/wireguard-go, agent/veth and wireguard-go/veth, and a Markdown block with the setup for
# docs/benchmarks.md. Both tunnels use MTU 1420 over a veth of MTU 1500.
#
# Usage: bench/throughput.sh [AGENT_PATH] [--runs N] [--time SECONDS] [--legs LEG,...]
#   LEG is veth, wireguard-go or agent (default: all three).
#   AGENT_PATH defaults to $TM_AGENT, then build/bin/tunnelmesh-agent under the repository root.
# Needs root, iperf3, wireguard-go and wg. Not a test: it prints numbers and exits 0 unless a leg
# could not be measured.

set -Eeuo pipefail
BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=../e2e/netns/lib.sh
source "$BENCH_DIR/../e2e/netns/lib.sh"

RUNS=3
TIME_S=5
LEGS=veth,wireguard-go,agent
AGENT_ARG=()
while (($#)); do
  case "$1" in
    --runs) RUNS=$2; shift 2 ;;
    --time) TIME_S=$2; shift 2 ;;
    --legs) LEGS=$2; shift 2 ;;
    -h | --help) awk 'NR > 1 && !/^#/ {exit} NR > 1 {sub(/^# ?/, ""); print}' "${BASH_SOURCE[0]}"; exit 0 ;;
    -*) echo "unknown option $1 (see --help)" >&2; exit 2 ;;
    *) AGENT_ARG=("$1"); shift ;;
  esac
done
[[ "$RUNS" =~ ^[1-9][0-9]*$ && "$TIME_S" =~ ^[1-9][0-9]*$ ]] ||
  { echo "--runs and --time take positive integers" >&2; exit 2; }
IFS=, read -r -a LEG_LIST <<<"$LEGS"
for leg in "${LEG_LIST[@]}"; do
  [[ "$leg" == veth || "$leg" == wireguard-go || "$leg" == agent ]] ||
    { echo "unknown leg '$leg' (veth, wireguard-go, agent)" >&2; exit 2; }
done
has_leg() { [[ ",$LEGS," == *",$1,"* ]]; }

# Daemons log at their quietest levels: logging must not be what is measured.
export TM_AGENT_LOG_LEVEL=${TM_AGENT_LOG_LEVEL:-error}
export TM_WG_LOG_LEVEL=${TM_WG_LOG_LEVEL:-error}
tm_init throughput $(( RUNS * ${#LEG_LIST[@]} * (TIME_S + 15) + 120 )) "${AGENT_ARG[@]}"
has_leg agent && tm_require_agent

tm_step "setup"
tm_ns_new a
tm_ns_new b
tm_veth a veth0 b veth0 "10.0.0.1/24" "10.0.0.2/24"
declare -A DST=([veth]=10.0.0.2)
if has_leg wireguard-go; then
  tm_node_new WA wg a 51830 "10.45.0.1/24"
  tm_node_new WB wg b 51831 "10.45.0.2/24"
  tm_node_peer WA WB endpoint=10.0.0.2:51831
  tm_node_peer WB WA endpoint=10.0.0.1:51830
  tm_node_start WA
  tm_node_start WB
  DST[wireguard-go]=10.45.0.2
fi
if has_leg agent; then
  tm_node_new AA agent a 51820 "10.44.0.1/24"
  tm_node_new AB agent b 51821 "10.44.0.2/24"
  tm_node_peer AA AB endpoint=10.0.0.2:51821
  tm_node_peer AB AA endpoint=10.0.0.1:51820
  tm_node_start AA
  tm_node_start AB
  DST[agent]=10.44.0.2
fi
for leg in "${LEG_LIST[@]}"; do tm_wait_ping a "${DST[$leg]}" 10; done

RESULTS="$TM_WORK/results.txt" # lines: leg run bits_per_second
: >"$RESULTS"
for ((run = 1; run <= RUNS; run++)); do
  for leg in "${LEG_LIST[@]}"; do
    tm_iperf a b "${DST[$leg]}" "$TIME_S"
    echo "$leg $run $TM_IPERF_BPS" >>"$RESULTS"
    printf 'run %d  %-13s %7s Gbit/s\n' "$run" "$leg" "$(tm_gbps "$TM_IPERF_BPS")"
  done
done

CPU=$(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo)
WG_VERSION=$(wireguard-go --version 2>/dev/null | awk 'NR == 1 {print $2}')
IPERF_VERSION=$(iperf3 --version 2>/dev/null | awk 'NR == 1 {print $2}')
COMMIT=$(git -C "$TM_REPO_ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)
if ! git -C "$TM_REPO_ROOT" diff-index --quiet HEAD -- 2>/dev/null; then
  COMMIT="$COMMIT (with uncommitted changes)"
fi

"$TM_PY" - "$RESULTS" "$RUNS" "$TIME_S" "$TM_MTU" "$CPU" "$(nproc)" "$(uname -r)" "$WG_VERSION" \
  "$IPERF_VERSION" "$COMMIT" "$(date -u +%Y-%m-%d)" <<'EOF'
import statistics
import sys

(path, runs, secs, mtu, cpu, ncpu, kernel, wg_version, iperf_version, commit, day) = sys.argv[1:]
legs = {}
for line in open(path):
    leg, _, bps = line.split()
    legs.setdefault(leg, []).append(int(bps) / 1e9)
median = {leg: statistics.median(v) for leg, v in legs.items()}
names = {
    "veth": "veth, no tunnel",
    "wireguard-go": "wireguard-go to wireguard-go",
    "agent": "tunnelmesh-agent to tunnelmesh-agent",
}

print()
print("Medians over %s interleaved runs of %s s:" % (runs, secs))
for leg, m in median.items():
    print("  %-13s %7.2f Gbit/s" % (leg, m))
ratios = [("agent", "wireguard-go"), ("agent", "veth"), ("wireguard-go", "veth")]
print("Ratios of medians:")
for num, den in ratios:
    if num in median and den in median:
        print("  %s / %s = %.3f" % (num, den, median[num] / median[den]))

def ratio(num, den):
    return "%.3f" % (median[num] / median[den]) if num in median and den in median else ""

print()
print("Markdown for docs/benchmarks.md:")
print()
print("### Single-stream TCP throughput, %s" % day)
print()
print("`bench/throughput.sh --runs %s --time %s`: iperf3 %s, one TCP stream between two network "
      "namespaces; the legs interleaved, %s runs of %s s each; medians. Tunnel MTU %s over a veth "
      "of MTU 1500. CPU: %s, %s vCPUs; kernel %s; wireguard-go %s; tunnelmesh commit %s."
      % (runs, secs, iperf_version, runs, secs, mtu, cpu, ncpu, kernel, wg_version, commit))
print()
print("| Path | Median (Gbit/s) | Runs (Gbit/s) | / veth | / wireguard-go |")
print("|---|---:|---|---:|---:|")
for leg in legs:
    print("| %s | %.2f | %s | %s | %s |" % (
        names[leg], median[leg], ", ".join("%.2f" % v for v in legs[leg]),
        ratio(leg, "veth"), ratio(leg, "wireguard-go")))
EOF
