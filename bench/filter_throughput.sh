#!/usr/bin/env bash
# filter_throughput.sh: single-stream TCP throughput (iperf3) through the tunnel with the packet
# filter holding about 1,000 rules, against the same agents' data plane with no filter, measured
# in one run with the legs interleaved (nofilter, filter, nofilter, ...):
#   nofilter  two tunnelmesh-agents run from wg-quick config files (config mode installs no rule
#             set: the filter is off and every packet passes untouched);
#   filter    two tunnelmesh-agents joined to a standalone coordinator whose manifests hold
#             RULES PeerPolicies (default 1,000) from the client to the server, each allowing one
#             TCP port; the last one allows iperf3's port. The server's filter checks every
#             packet arriving, tracks the connection, and the client's tracks what it sends.
# Both pairs run in the same two namespaces over one veth segment, MTU 1420 tunnels. Prints every
# run, the medians, the ratio filter/nofilter, the rule count the server reports, and a Markdown
# block for docs/benchmarks.md.
#
# Usage: bench/filter_throughput.sh [AGENT_PATH [OPERATOR_PATH]] [--runs N] [--time SECONDS]
#                                   [--rules N]
# Needs root and iperf3. Not a test: it prints numbers and exits 0 unless a leg could not be
# measured.

set -Eeuo pipefail
BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

RUNS=5
TIME_S=5
RULES=1000
ARGS=()
while (($#)); do
  case "$1" in
    --runs) RUNS=$2; shift 2 ;;
    --time) TIME_S=$2; shift 2 ;;
    --rules) RULES=$2; shift 2 ;;
    -h | --help) awk 'NR > 1 && !/^#/ {exit} NR > 1 {sub(/^# ?/, ""); print}' "${BASH_SOURCE[0]}"; exit 0 ;;
    -*) echo "unknown option $1 (see --help)" >&2; exit 2 ;;
    *) ARGS+=("$1"); shift ;;
  esac
done
[[ "$RUNS" =~ ^[1-9][0-9]*$ && "$TIME_S" =~ ^[1-9][0-9]*$ && "$RULES" =~ ^[1-9][0-9]*$ ]] ||
  { echo "--runs, --time and --rules take positive integers" >&2; exit 2; }

export TM_AGENT_LOG_LEVEL=${TM_AGENT_LOG_LEVEL:-error}
export TM_OPERATOR_LOG_LEVEL=${TM_OPERATOR_LOG_LEVEL:-info}
# shellcheck source=../e2e/netns/nat_lib.sh
source "$BENCH_DIR/../e2e/netns/nat_lib.sh"
tm_mesh_init filter_throughput $(( RUNS * 2 * (TIME_S + 15) + 150 )) "${ARGS[@]}"
IPERF_PORT=5202

tm_step "setup: coordinator with $RULES PeerPolicies, two members, two config-mode agents"
tm_net_public coord
tm_net_public a
tm_net_public b
TM_MESH_DEFAULT_ACTION=Deny
tm_coord_setup coord
"$TM_PY" - "$TM_WORK/coord.manifests/policies.yaml" "$RULES" "$IPERF_PORT" <<'PYEOF'
import sys
path, n, iperf_port = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
with open(path, "w") as f:
    for i in range(n):
        port = iperf_port if i == n - 1 else 20000 + i
        f.write("""---
apiVersion: tunnelmesh.io/v1alpha1
kind: PeerPolicy
metadata: {name: bench-%d}
spec:
  mesh: demo
  action: Allow
  from: [{peerSelector: {matchLabels: {role: client}}}]
  to: [{peerSelector: {matchLabels: {role: server}}}]
  ports: [{protocol: TCP, port: %d}]
""" % (i, port))
PYEOF
tm_coord_start
tm_member_new client a
tm_member_new server b
tm_member_start client --label role=client
tm_member_start server --label role=server
S4=$(tm_member_ip server 4)
tm__rules_at_least() {
  local got
  got=$(tm__mjson server "s.get('filter', {}).get('rules', 0)") || return 1
  echo "server rules: $got"
  (( got >= RULES ))
}
tm_wait 20 "the server to install at least $RULES rules" tm__rules_at_least
SERVER_RULES=$(tm_mjson server "s['filter']['rules']")
tm_node_new CA agent a 51830 "10.44.0.1/24"
tm_node_new CB agent b 51831 "10.44.0.2/24"
tm_node_peer CA CB "endpoint=${TM_NET_ADDR[b]}:51831"
tm_node_peer CB CA "endpoint=${TM_NET_ADDR[a]}:51830"
tm_node_start CA
tm_node_start CB
tm_wait_ping a 10.44.0.2 10
declare -A DST=([nofilter]=10.44.0.2 [filter]=$S4)

RESULTS="$TM_WORK/results.txt"
: >"$RESULTS"
for ((run = 1; run <= RUNS; run++)); do
  for leg in nofilter filter; do
    tm_iperf a b "${DST[$leg]}" "$TIME_S" "$IPERF_PORT"
    echo "$leg $run $TM_IPERF_BPS" >>"$RESULTS"
    printf 'run %d  %-9s %7s Gbit/s\n' "$run" "$leg" "$(tm_gbps "$TM_IPERF_BPS")"
  done
done
tm_log "server filter: $(tm_mjson server "{k: s['filter'][k] for k in ('rules', 'policy_count', 'tracked_flows', 'drops')}")"
DROPS=$(tm_mjson server "sum(s['filter']['drops'].values())")

CPU=$(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo)
IPERF_VERSION=$(iperf3 --version 2>/dev/null | awk 'NR == 1 {print $2}')
COMMIT=$(git -C "$TM_REPO_ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)
"$TM_PY" - "$RESULTS" "$RUNS" "$TIME_S" "$RULES" "$SERVER_RULES" "$DROPS" "$CPU" "$(nproc)" \
  "$(uname -r)" "$IPERF_VERSION" "$COMMIT" "$(date -u +%Y-%m-%d)" <<'PYEOF'
import statistics
import sys

(path, runs, secs, policies, rules, drops, cpu, ncpu, kernel, iperf_version, commit,
 day) = sys.argv[1:]
legs = {}
for line in open(path):
    leg, _, bps = line.split()
    legs.setdefault(leg, []).append(int(bps) / 1e9)
median = {leg: statistics.median(v) for leg, v in legs.items()}
ratio = median["filter"] / median["nofilter"]
print()
print("Medians over %s interleaved runs of %s s:" % (runs, secs))
for leg, m in median.items():
    print("  %-9s %7.2f Gbit/s" % (leg, m))
print("Ratio filter / nofilter = %.3f (server rules: %s, filter drops: %s)" % (ratio, rules, drops))
print()
print("Markdown for docs/benchmarks.md:")
print()
print("### %s, %s PeerPolicies (%s rules at the server)" % (day, policies, rules))
print()
print("`bench/filter_throughput.sh --runs %s --time %s --rules %s`: iperf3 %s, one TCP stream; "
      "legs interleaved, %s runs of %s s each; medians. CPU: %s, %s vCPUs; kernel %s; "
      "tunnelmesh commit %s." % (runs, secs, policies, iperf_version, runs, secs, cpu, ncpu,
                                  kernel, commit))
print()
print("| Leg | Median (Gbit/s) | Runs (Gbit/s) |")
print("|---|---:|---|")
names = {"nofilter": "agents, no filter (config mode)",
         "filter": "agents, filter with %s rules" % rules}
for leg in ("nofilter", "filter"):
    print("| %s | %.2f | %s |" % (names[leg], median[leg],
                                  ", ".join("%.2f" % v for v in legs[leg])))
print()
print("Ratio filter / no filter: **%.3f**." % ratio)
PYEOF
