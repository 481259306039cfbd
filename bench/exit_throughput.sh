#!/usr/bin/env bash
# exit_throughput.sh: what routing a member's internet traffic through an exit peer costs, against
# the direct mesh path to that same peer, in one run.
#
#   mesh    iperf3 TCP from the laptop (behind an endpoint-independent NAT) to the exit's mesh IP:
#           the encrypted direct path, nothing forwarded (the baseline).
#   exit    iperf3 TCP from the laptop to an "internet" host's public address: the same tunnel,
#           then the exit's kernel forwards and masquerades it (`join --advertise-exit`, a
#           PeerPolicy with `to: [{internet: {}}]`, the laptop's `--exit-peer`).
#   plain   iperf3 TCP from the exit host to the internet host, outside any tunnel: what the
#           exit's own uplink carries (context for the exit leg, not a baseline).
# The legs are interleaved (mesh, exit, plain, mesh, ...) so drift hits them alike. Prints every
# run, the medians, exit / mesh, and a Markdown block for docs/benchmarks.md.
#
# Usage: bench/exit_throughput.sh [AGENT_PATH [OPERATOR_PATH]] [--runs N] [--time SECONDS]
# Needs root, iperf3, nft. Not a test: it prints what it measured and exits 0, unless a run broke.

set -Eeuo pipefail
BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

RUNS=5
TIME_S=5
POSITIONAL=()
while (($#)); do
  case "$1" in
    --runs) RUNS=$2; shift 2 ;;
    --time) TIME_S=$2; shift 2 ;;
    -h | --help) awk 'NR > 1 && !/^#/ {exit} NR > 1 {sub(/^# ?/, ""); print}' "${BASH_SOURCE[0]}"; exit 0 ;;
    -*) echo "unknown option $1 (see --help)" >&2; exit 2 ;;
    *) POSITIONAL+=("$1"); shift ;;
  esac
done
[[ "$RUNS" =~ ^[1-9][0-9]*$ && "$TIME_S" =~ ^[1-9][0-9]*$ ]] ||
  { echo "--runs and --time take positive integers" >&2; exit 2; }

# shellcheck source=../e2e/netns/nat_lib.sh
source "$BENCH_DIR/../e2e/netns/nat_lib.sh"
export TM_AGENT_LOG_LEVEL=${TM_AGENT_LOG_LEVEL:-error}
export TM_OPERATOR_LOG_LEVEL=${TM_OPERATOR_LOG_LEVEL:-info}
tm_mesh_init exit_throughput $(( RUNS * 3 * (TIME_S + 15) + 120 )) "${POSITIONAL[@]}"

tm_step "setup: coordinator, internet host, exit, laptop behind NAT"
tm_net_public coord
tm_net_public web
tm_net_public ex
tm_net_site s1 eim
tm_net_site_host s1 lap
tm_coord_setup coord
tm_coord_allow_internet laptop
tm_coord_start
tm_member_new exit ex
tm_member_start exit --advertise-exit
tm_member_new laptop lap
tm_member_start laptop --label role=laptop --exit-peer exit
EXIT4=$(tm_member_ip exit 4)
WEB=${TM_NET_ADDR[web]}
tm_wait_ping lap "$EXIT4" 10
using_exit() { [[ "$(tm__mjson laptop "(s.get('exit') or {}).get('using')")" == exit ]]; }
tm_wait 15 "the laptop to use the exit" using_exit
tm_wait 10 "the laptop to reach the internet host" tm_ping_once lap "$WEB"
tm_member_wait_path 20 laptop exit direct

RESULTS="$TM_WORK/results.txt"
: >"$RESULTS"
declare -A CLIENT=([mesh]=lap [exit]=lap [plain]=ex) SERVER=([mesh]=ex [exit]=web [plain]=web)
declare -A ADDR=([mesh]=$EXIT4 [exit]=$WEB [plain]=$WEB)
tm_step "throughput: mesh, exit and plain legs, $RUNS runs of ${TIME_S}s"
for ((run = 1; run <= RUNS; run++)); do
  for leg in mesh exit plain; do
    tm_iperf "${CLIENT[$leg]}" "${SERVER[$leg]}" "${ADDR[$leg]}" "$TIME_S"
    echo "$leg $run $TM_IPERF_BPS" >>"$RESULTS"
    tm_log "$leg run $run: $(tm_gbps "$TM_IPERF_BPS") Gbit/s"
  done
done
tm_expect_eq "the laptop still uses" "$(tm_mjson laptop "s['exit']['using']")" exit

tm_step "results"
"$TM_PY" - "$RESULTS" "$RUNS" "$TIME_S" "$(nproc)" "$(uname -r)" \
  "$(git -C "$TM_REPO_ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)" <<'PYEOF'
import statistics, sys
path, runs, secs, cpus, kernel, commit = sys.argv[1:7]
vals = {}
for line in open(path):
    leg, _, v = line.split()
    vals.setdefault(leg, []).append(float(v))
med = {k: statistics.median(v) for k, v in vals.items()}
names = {"mesh": "iperf3 TCP, laptop -> exit's mesh IP (direct path)",
         "exit": "iperf3 TCP, laptop -> internet host through the exit",
         "plain": "iperf3 TCP, exit host -> internet host, no tunnel"}
print("### Exit peer throughput\n")
print("Setup: bench/exit_throughput.sh, %s runs (medians), iperf3 %s s single stream, %s vCPU, "
      "kernel %s, commit %s. Namespaces on one host: coordinator, exit, internet host and the "
      "laptop's NAT router (nftables) on a bridged 203.0.113.0/24 segment; agents at log level "
      "error.\n" % (runs, secs, cpus, kernel, commit))
print("| Measurement | Median | Runs | Ratio |")
print("|---|---:|---|---:|")
for leg in ("mesh", "exit", "plain"):
    runs_text = ", ".join("%.2f" % (x / 1e9) for x in vals[leg])
    ratio = "baseline" if leg == "mesh" else "%.2fx the mesh path" % (med[leg] / med["mesh"])
    print("| %s | %.3f Gbit/s | %s | %s |" % (names[leg], med[leg] / 1e9, runs_text, ratio))
PYEOF
