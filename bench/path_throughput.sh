#!/usr/bin/env bash
# path_throughput.sh: single-stream TCP throughput (iperf3) between two joined agents over each of
# their paths, in one run with the legs interleaved (direct, ssh, relay, direct, ...):
#   direct   WireGuard over UDP straight to the peer,
#   ssh      UDP between the two hosts dropped (nftables in alpha's namespace), TCP open: the
#            SSH path (docs/protocol.md, "SSH path"),
#   relay    UDP and the SSH port between them dropped: the coordinator's WebSocket relay.
# Each leg waits until both agents report that path before measuring. Prints every run, the
# medians in Gbit/s, the ratios to direct, and a Markdown block for docs/benchmarks.md.
#
# Usage: bench/path_throughput.sh [AGENT_PATH [OPERATOR_PATH]] [--runs N] [--time SECONDS]
#   AGENT_PATH defaults to $TM_AGENT, then build/bin/tunnelmesh-agent; OPERATOR_PATH to the
#   tunnelmesh-operator beside it.
# Needs root, iperf3 and nft. Not a test: it prints numbers and exits 0 unless a leg could not be
# measured.

set -Eeuo pipefail
BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

RUNS=3
TIME_S=5
ARGS=()
while (($#)); do
  case "$1" in
    --runs) RUNS=$2; shift 2 ;;
    --time) TIME_S=$2; shift 2 ;;
    -h | --help) awk 'NR > 1 && !/^#/ {exit} NR > 1 {sub(/^# ?/, ""); print}' "${BASH_SOURCE[0]}"; exit 0 ;;
    -*) echo "unknown option $1 (see --help)" >&2; exit 2 ;;
    *) ARGS+=("$1"); shift ;;
  esac
done
[[ "$RUNS" =~ ^[1-9][0-9]*$ && "$TIME_S" =~ ^[1-9][0-9]*$ ]] ||
  { echo "--runs and --time take positive integers" >&2; exit 2; }
LEGS=(direct ssh relay)
# Switching back to direct waits for a probe round, which backs off to 30 s while nothing answers.
SWITCH_S=45

# Daemons log at their quietest levels: logging must not be what is measured.
export TM_AGENT_LOG_LEVEL=${TM_AGENT_LOG_LEVEL:-error}
# The coordinator must log at info at least: its "coordinator ready" line is what is awaited.
export TM_OPERATOR_LOG_LEVEL=${TM_OPERATOR_LOG_LEVEL:-info}
# shellcheck source=../e2e/netns/nat_lib.sh
source "$BENCH_DIR/../e2e/netns/nat_lib.sh"
tm_mesh_init path_throughput $(( RUNS * ${#LEGS[@]} * (TIME_S + SWITCH_S + 10) + 120 )) "${ARGS[@]}"

tm_step "setup: coordinator and two public hosts"
tm_net_public coord
tm_net_public a
tm_net_public b
B=${TM_NET_ADDR[b]}
tm_coord_setup coord
tm_coord_start
tm_members_join alpha:a beta:b
B4=$(tm_member_ip beta 4)
SSH_PORT=$(tm_mjson beta "s['ssh']['port']")
[[ "$(tm_mjson alpha "s['ssh']['port']")" == "$SSH_PORT" ]] ||
  tm_fail "alpha and beta run their SSH servers on different ports; the relay leg blocks one"

# block LEG: the nftables table in a that forces LEG's path (none for direct). Both agents run
# an SSH server on the same port; for the relay leg TCP to and from it is dropped both ways.
block() {
  tm_in a nft delete table inet tm_path_bench 2>/dev/null || true
  [[ "$1" != direct ]] || return 0
  local in_ssh="" out_ssh=""
  if [[ "$1" == relay ]]; then
    in_ssh="ip saddr $B tcp sport $SSH_PORT drop; ip saddr $B tcp dport $SSH_PORT drop"
    out_ssh="ip daddr $B tcp dport $SSH_PORT drop; ip daddr $B tcp sport $SSH_PORT drop"
  fi
  tm_in a nft -f - <<NFT
table inet tm_path_bench {
  chain input {
    type filter hook input priority filter; policy accept;
    ip saddr $B meta l4proto udp drop; $in_ssh
  }
  chain output {
    type filter hook output priority filter; policy accept;
    ip daddr $B meta l4proto udp drop; $out_ssh
  }
}
NFT
}

RESULTS="$TM_WORK/results.txt" # lines: leg run bits_per_second
: >"$RESULTS"
for ((run = 1; run <= RUNS; run++)); do
  for leg in "${LEGS[@]}"; do
    block "$leg"
    tm_member_wait_path "$SWITCH_S" alpha beta "$leg"
    tm_member_wait_path "$SWITCH_S" beta alpha "$leg"
    tm_wait_ping a "$B4" 20
    tm_iperf a b "$B4" "$TIME_S"
    echo "$leg $run $TM_IPERF_BPS" >>"$RESULTS"
    printf 'run %d  %-7s %7s Gbit/s\n' "$run" "$leg" "$(tm_gbps "$TM_IPERF_BPS")"
  done
done
block direct

CPU=$(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo)
IPERF_VERSION=$(iperf3 --version 2>/dev/null | awk 'NR == 1 {print $2}')
LIBSSH_VERSION=$(dpkg-query -W -f '${Version}' libssh-4 2>/dev/null || echo unknown)
COMMIT=$(git -C "$TM_REPO_ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)
if ! git -C "$TM_REPO_ROOT" diff-index --quiet HEAD -- 2>/dev/null; then
  COMMIT="$COMMIT (with uncommitted changes)"
fi

"$TM_PY" - "$RESULTS" "$RUNS" "$TIME_S" "$CPU" "$(nproc)" "$(uname -r)" "$IPERF_VERSION" \
  "$LIBSSH_VERSION" "$COMMIT" "$(date -u +%Y-%m-%d)" <<'PYEOF'
import statistics
import sys

(path, runs, secs, cpu, ncpu, kernel, iperf_version, libssh_version, commit, day) = sys.argv[1:]
legs = {}
for line in open(path):
    leg, _, bps = line.split()
    legs.setdefault(leg, []).append(int(bps) / 1e9)
median = {leg: statistics.median(v) for leg, v in legs.items()}
names = {
    "direct": "direct (UDP)",
    "ssh": "ssh (UDP blocked, TCP open)",
    "relay": "relay (UDP and the SSH port blocked)",
}
print()
print("Medians over %s interleaved runs of %s s:" % (runs, secs))
for leg, m in median.items():
    print("  %-7s %7.2f Gbit/s  (/ direct %.3f)" % (leg, m, m / median["direct"]))
print()
print("Markdown for docs/benchmarks.md:")
print()
print("### Direct, SSH and relay paths, %s" % day)
print()
print("`bench/path_throughput.sh --runs %s --time %s`: iperf3 %s, one TCP stream between two "
      "joined agents in network namespaces on one bridge, with the coordinator on a third; the "
      "legs interleaved, %s runs of %s s each; medians. CPU: %s, %s vCPUs; kernel %s; libssh %s; "
      "tunnelmesh commit %s."
      % (runs, secs, iperf_version, runs, secs, cpu, ncpu, kernel, libssh_version, commit))
print()
print("| Path | Median (Gbit/s) | Runs (Gbit/s) | / direct |")
print("|---|---:|---|---:|")
for leg in legs:
    print("| %s | %.2f | %s | %.3f |" % (
        names[leg], median[leg], ", ".join("%.2f" % v for v in legs[leg]),
        median[leg] / median["direct"]))
PYEOF
