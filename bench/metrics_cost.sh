#!/usr/bin/env bash
# metrics_cost.sh: what scraping the agents' Prometheus metrics costs the data plane. Two members
# joined to a standalone coordinator (the mesh as users run it: discovery, the relay connection,
# the packet filter's rule set) on one segment, a direct path between them; one TCP stream
# (iperf3) from alpha to beta through the mesh, measured in pairs of runs, interleaved:
#   quiet     nobody scrapes;
#   scraped   both agents' /metrics are fetched every second during the run (curl, in each
#             member's namespace, as a Prometheus scraping at a 1 s interval would).
# Each pair gives a ratio scraped / quiet; the script prints every run, the median of the paired
# ratios and the ratio of the medians, the scrapes each agent counted
# (tunnelmesh_agent_metrics_requests_total), and a Markdown block for docs/benchmarks.md.
#
# Usage: bench/metrics_cost.sh [AGENT_PATH [OPERATOR_PATH]] [--runs N] [--time SECONDS]
# Needs root, iperf3, curl and nftables (nat_lib.sh). Not a test: it prints numbers and exits 0
# unless a run could not be measured.

set -Eeuo pipefail
BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

RUNS=5
TIME_S=5
PATHS=()
while (($#)); do
  case "$1" in
    --runs) RUNS=$2; shift 2 ;;
    --time) TIME_S=$2; shift 2 ;;
    -h | --help) awk 'NR > 1 && !/^#/ {exit} NR > 1 {sub(/^# ?/, ""); print}' "${BASH_SOURCE[0]}"; exit 0 ;;
    -*) echo "unknown option $1 (see --help)" >&2; exit 2 ;;
    *) PATHS+=("$1"); shift ;;
  esac
done
[[ "$RUNS" =~ ^[1-9][0-9]*$ && "$TIME_S" =~ ^[1-9][0-9]*$ ]] ||
  { echo "--runs and --time take positive integers" >&2; exit 2; }

# Daemons log at their quietest levels: logging must not be what is measured.
export TM_AGENT_LOG_LEVEL=${TM_AGENT_LOG_LEVEL:-error}
# The operator at info: the harness waits for its "coordinator ready" line.
export TM_OPERATOR_LOG_LEVEL=${TM_OPERATOR_LOG_LEVEL:-info}
# shellcheck source=../e2e/netns/nat_lib.sh
source "$BENCH_DIR/../e2e/netns/nat_lib.sh"
tm_mesh_init metrics_cost $(( RUNS * 2 * (TIME_S + 15) + 120 )) "${PATHS[@]}"
command -v curl >/dev/null || tm_fail "curl is not installed"

tm_step "setup: a coordinator and two members on one segment"
tm_net_public coord
tm_net_public a
tm_net_public b
tm_coord_setup coord
tm_coord_start
tm_members_join alpha:a beta:b
tm_member_wait_path 10 alpha beta direct
DST=$(tm_member_ip beta 4)
tm_wait_ping a "$DST" 10

# scraper_start: fetch both agents' /metrics every second in the background (SCRAPERS: pids).
scraper_start() {
  SCRAPERS=()
  local nsid
  for nsid in a b; do
    tm_bg_in "$nsid" bash -c 'while :; do
      curl -s --max-time 2 -o /dev/null http://127.0.0.1:7710/metrics; sleep 1; done' \
      >/dev/null 2>&1
    SCRAPERS+=("$TM_BG_PID")
  done
}
scraper_stop() {
  local pid
  for pid in "${SCRAPERS[@]}"; do
    kill "$pid" 2>/dev/null || true
    tm__wait_exit "$pid" 5 || true
  done
}
scrapes() { # NSID: the agent's count of answered scrapes
  tm_in "$1" curl -s http://127.0.0.1:7710/metrics |
    awk '$1 == "tunnelmesh_agent_metrics_requests_total{code=\"200\"}" {print $2}'
}

RESULTS="$TM_WORK/results.txt" # lines: leg run bits_per_second
: >"$RESULTS"
BEFORE_A=$(scrapes a)
for ((run = 1; run <= RUNS; run++)); do
  # Alternate which leg goes first, so that a trend over the run (a warming cache, a neighbour
  # starting work) does not favour one leg.
  if (( run % 2 )); then order=(quiet scraped); else order=(scraped quiet); fi
  for leg in "${order[@]}"; do
    [[ "$leg" == scraped ]] && scraper_start
    tm_iperf a b "$DST" "$TIME_S"
    [[ "$leg" == scraped ]] && scraper_stop
    echo "$leg $run $TM_IPERF_BPS" >>"$RESULTS"
    printf 'run %d  %-8s %7s Gbit/s\n' "$run" "$leg" "$(tm_gbps "$TM_IPERF_BPS")"
  done
done
SCRAPES_A=$(( $(scrapes a) - BEFORE_A - 1 ))  # Less the last read's own scrape.
tm_log "alpha answered $SCRAPES_A scrapes during the scraped runs"

CPU=$(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo)
IPERF_VERSION=$(iperf3 --version 2>/dev/null | awk 'NR == 1 {print $2}')
COMMIT=$(git -C "$TM_REPO_ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)
if ! git -C "$TM_REPO_ROOT" diff-index --quiet HEAD -- 2>/dev/null; then
  COMMIT="$COMMIT (with uncommitted changes)"
fi
LOAD=$(cut -d' ' -f1-3 /proc/loadavg)

"$TM_PY" - "$RESULTS" "$RUNS" "$TIME_S" "$SCRAPES_A" "$CPU" "$(nproc)" "$(uname -r)" \
  "$IPERF_VERSION" "$COMMIT" "$(date -u +%Y-%m-%d)" "$LOAD" <<'EOF'
import statistics
import sys

(path, runs, secs, scrapes, cpu, ncpu, kernel, iperf_version, commit, day, load) = sys.argv[1:]
legs = {"quiet": {}, "scraped": {}}
for line in open(path):
    leg, run, bps = line.split()
    legs[leg][int(run)] = int(bps) / 1e9
pairs = sorted(set(legs["quiet"]) & set(legs["scraped"]))
ratios = [legs["scraped"][r] / legs["quiet"][r] for r in pairs]
median = {leg: statistics.median(v.values()) for leg, v in legs.items()}
paired = statistics.median(ratios)

print()
print("Medians over %s pairs of %s s runs:" % (runs, secs))
for leg in ("quiet", "scraped"):
    print("  %-8s %7.2f Gbit/s" % (leg, median[leg]))
print("Paired ratios scraped / quiet: %s" % ", ".join("%.3f" % r for r in ratios))
print("Median of the paired ratios: %.3f; ratio of the medians: %.3f"
      % (paired, median["scraped"] / median["quiet"]))
print()
print("Markdown for docs/benchmarks.md:")
print()
print("### %s" % day)
print()
print("`bench/metrics_cost.sh --runs %s --time %s`: iperf3 %s, one TCP stream from alpha to beta, "
      "two members joined to a standalone coordinator, direct path; %s pairs of %s s runs, the "
      "order within a pair alternating; during the scraped runs both agents' /metrics fetched "
      "every second (alpha answered %s scrapes). CPU: %s, %s vCPUs; load average before the "
      "run %s; kernel %s; tunnelmesh commit %s."
      % (runs, secs, iperf_version, runs, secs, scrapes, cpu, ncpu, load, kernel, commit))
print()
print("| Leg | Median (Gbit/s) | Runs (Gbit/s) |")
print("|---|---:|---|")
for leg, name in (("quiet", "not scraped"), ("scraped", "scraped every second")):
    print("| %s | %.2f | %s |" % (name, median[leg],
                                  ", ".join("%.2f" % legs[leg][r] for r in sorted(legs[leg]))))
print()
print("Median of the paired ratios scraped / not scraped: **%.3f** (each pair: %s); ratio of the "
      "medians %.3f." % (paired, ", ".join("%.3f" % r for r in ratios),
                         median["scraped"] / median["quiet"]))
EOF
