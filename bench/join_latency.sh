#!/usr/bin/env bash
# join_latency.sh: how fast a new member is usable, and what the relay costs in throughput.
#
#   join      time from starting `tunnelmesh-agent join` (fresh node key every run) to the first
#             ping answered through the tunnel by an already-joined member; the member then
#             leaves, so every run is a first join. Median of --runs (default 5).
#   static    the same measurement for a `tunnelmesh-agent --config` peer with everything known
#             in advance (no coordinator): the data-plane floor that join is compared against.
#   direct    iperf3 TCP between two public members (direct UDP path).
#   relay     iperf3 TCP from the same client to a member whose site drops outbound UDP, so its
#             traffic goes through the coordinator's WebSocket relay; reported as "not available"
#             if that member never reaches path "relay" (the relay is not built in yet).
# The iperf3 legs are interleaved (direct, relay, direct, ...) so drift hits both alike. Prints
# every run, medians, the ratios join/static and relay/direct, and a Markdown block for
# docs/benchmarks.md.
#
# Usage: bench/join_latency.sh [AGENT_PATH [OPERATOR_PATH]] [--runs N] [--time SECONDS]
#                              [--legs join,direct,relay]
# Needs root, iperf3, nft. Not a test: it prints what it measured and exits 0, unless a leg failed
# (a run broke, as opposed to the relay being not available yet): then it prints the results it
# has, the failure, the diagnostics, and exits 1.

set -Eeuo pipefail
BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

RUNS=5
TIME_S=5
LEGS=join,direct,relay
POSITIONAL=()
while (($#)); do
  case "$1" in
    --runs) RUNS=$2; shift 2 ;;
    --time) TIME_S=$2; shift 2 ;;
    --legs) LEGS=$2; shift 2 ;;
    -h | --help) awk 'NR > 1 && !/^#/ {exit} NR > 1 {sub(/^# ?/, ""); print}' "${BASH_SOURCE[0]}"; exit 0 ;;
    -*) echo "unknown option $1 (see --help)" >&2; exit 2 ;;
    *) POSITIONAL+=("$1"); shift ;;
  esac
done
[[ "$RUNS" =~ ^[1-9][0-9]*$ && "$TIME_S" =~ ^[1-9][0-9]*$ ]] ||
  { echo "--runs and --time take positive integers" >&2; exit 2; }
has_leg() { [[ ",$LEGS," == *",$1,"* ]]; }

# shellcheck source=../e2e/netns/nat_lib.sh
source "$BENCH_DIR/../e2e/netns/nat_lib.sh"
# Daemons log at their quietest levels: logging must not be what is measured.
export TM_AGENT_LOG_LEVEL=${TM_AGENT_LOG_LEVEL:-error}
export TM_OPERATOR_LOG_LEVEL=${TM_OPERATOR_LOG_LEVEL:-info}
tm_mesh_init join_latency $(( RUNS * 40 + RUNS * 2 * (TIME_S + 15) + 120 )) "${POSITIONAL[@]}"

tm_step "setup: coordinator, anchor member, a direct peer, a UDP-blocked peer"
tm_net_public coord
tm_net_public a     # the anchor: already joined, answers the pings, iperf3 client
tm_net_public n     # the new member of each join run
tm_net_public d     # direct peer
tm_net_site s1 udp_blocked
tm_net_site_host s1 r  # relay peer
tm_coord_setup coord
tm_coord_start
tm_member_new anchor a
tm_member_start anchor
ANCHOR4=$(tm_member_ip anchor 4)
RESULTS="$TM_WORK/results.txt" # lines: leg run value
: >"$RESULTS"
declare -A LEG_FAILED=() # leg -> what went wrong (the leg's numbers are still printed)

# first_ping_ms NSID DST START_MS: ping DST every 10 ms until the first reply (within 20 s);
# prints the ms from START_MS to that reply's receive timestamp (ping -D). Until the member's
# interface and route exist ping exits at once ("Network is unreachable") and is started again.
first_ping_ms() {
  local deadline out stamp
  deadline=$(tm__deadline 20)
  while :; do
    out=$(tm_in "$1" ping -n -D -i 0.01 -c 1 -w 20 "$2" 2>&1) || true
    stamp=$(grep -m1 -o '^\[[0-9.]*\] [0-9]* bytes from' <<<"$out" | grep -o '^\[[0-9.]*' | tr -d '[')
    if [[ -n "$stamp" ]]; then
      "$TM_PY" -c 'import sys; print(int(round(float(sys.argv[1]) * 1000)) - int(sys.argv[2]))' \
        "$stamp" "$3"
      return 0
    fi
    tm__past "$deadline" && { echo "$out" >&2; return 1; }
    sleep 0.01
  done
}

# leave_newbie RUN: `leave`, then the agent must exit within 5 s; if it does not, that is recorded
# as a failure of the join leg (reported at the end) and the agent is killed so the runs go on.
leave_newbie() {
  local pid=${TM_MEMBER_PID[newbie]} out
  out=$(tm_in n timeout 10 "$TM_AGENT" leave --interface "${TM_MEMBER_IF[newbie]}" \
    --state-dir "$(tm_member_state newbie)" 2>&1) || true
  local why
  if tm__wait_exit "$pid" 5; then
    tm__member_reaped newbie
    [[ "$TM_EXIT_RC" != 0 ]] || return 0
    why="the agent exited with code $TM_EXIT_RC after 'leave'"
  else
    why="the agent still ran 5s after 'leave' (killed)"
    tm_member_kill newbie
  fi
  LEG_FAILED[join]="${LEG_FAILED[join]:-}run $1: $why, leave said '$out'; "
  tm_log "join run $1: $why"
}

if has_leg join; then
  tm_step "join latency against the static-config baseline, $RUNS runs each, interleaved"
  tm_member_new newbie n
  tm_net_public p
  tm_net_public q
  tm_node_new SP agent p 51830 "10.46.0.1/24"
  tm_node_new SQ agent q 51831 "10.46.0.2/24"
  tm_node_peer SP SQ endpoint="${TM_NET_ADDR[q]}:51831"
  tm_node_peer SQ SP endpoint="${TM_NET_ADDR[p]}:51830"
  tm_node_start SQ
  tm__write_configs SP
  for ((run = 1; run <= RUNS; run++)); do
    rm -rf "$(tm_member_state newbie)"
    mkdir -p "$(tm_member_state newbie)"
    start=$(tm__now_ms)
    tm_member_launch newbie
    ms=$(first_ping_ms n "$ANCHOR4" "$start") ||
      tm_fail "join run $run: no ping answered by the anchor within 20s of starting join"
    echo "join $run $ms" >>"$RESULTS"
    tm_log "join run $run: first ping answered after $ms ms"
    leave_newbie "$run"

    # Started by hand rather than with tm_node_start, whose readiness polling would be measured.
    start=$(tm__now_ms)
    ip netns exec "$(tm_ns p)" "$TM_AGENT" --config "$TM_WORK/SP.conf" --interface "$(tm_if SP)" \
      --state-dir "$TM_WORK/SP.state" --log-level "$TM_AGENT_LOG_LEVEL" >>"$(tm_node_log SP)" 2>&1 &
    # shellcheck disable=SC2034 # lib.sh's record of the node's process, for tm_node_stop
    TM_NODE_PID[SP]=$!
    ms=$(first_ping_ms p 10.46.0.2 "$start") || tm_fail "static run $run: no ping within 20s"
    echo "static $run $ms" >>"$RESULTS"
    tm_log "static run $run: first ping answered after $ms ms"
    tm_node_stop SP
  done
  tm_node_stop SQ
fi

RELAY_STATE="not measured"
if has_leg direct || has_leg relay; then
  tm_step "throughput: direct and relay paths, $RUNS runs of ${TIME_S}s"
  declare -A DST=() SRV_NS=([direct]=d [relay]=r) MEMBER_OF=([direct]=direct [relay]=relayed)
  tm_member_new direct d
  tm_member_start direct
  DST[direct]=$(tm_member_ip direct 4)
  tm_wait_ping a "${DST[direct]}" 10
  if has_leg relay; then
    tm_member_new relayed r
    # Without SSH: behind its UDP-blocking router it would otherwise reach the anchor over the SSH
    # path (TCP out is open), which bench/path_throughput.sh measures.
    tm_member_start relayed --no-ssh
    DST[relay]=$(tm_member_ip relayed 4)
    if tm_poll 15 tm_ping_once a "${DST[relay]}" && tm_poll 10 tm__path_is anchor relayed relay
    then
      RELAY_STATE=available
    else
      RELAY_STATE="not available (member behind a UDP-blocking site: no ping or path not relay)"
      tm_log "relay leg: $RELAY_STATE"
    fi
  fi
  for ((run = 1; run <= RUNS; run++)); do
    for leg in direct relay; do
      has_leg "$leg" || continue
      [[ "$leg" == relay && "$RELAY_STATE" != available ]] && continue
      [[ -z "${LEG_FAILED[$leg]:-}" ]] || continue
      # In a subshell: a failed run (tm_fail) ends only it, and the other legs still report.
      if bps=$(tm_iperf a "${SRV_NS[$leg]}" "${DST[$leg]}" "$TIME_S" && echo "$TM_IPERF_BPS"); then
        echo "$leg $run $bps" >>"$RESULTS"
        tm_log "$leg run $run: $(tm_gbps "$bps") Gbit/s"
      else
        member=${MEMBER_OF[$leg]}
        why="iperf3 failed"
        if [[ -n "${TM_MEMBER_PID[$member]}" ]] && tm__wait_exit "${TM_MEMBER_PID[$member]}" 0; then
          why="member $member exited with code $TM_EXIT_RC during iperf3"
          tm__member_reaped "$member"
        fi
        LEG_FAILED[$leg]="FAILED in run $run: $why (logs in $TM_WORK)"
        tm_log "$leg leg: ${LEG_FAILED[$leg]}"
        [[ "$leg" == relay ]] && RELAY_STATE=${LEG_FAILED[$leg]}
      fi
    done
  done
fi

tm_step "results"
"$TM_PY" - "$RESULTS" "$RUNS" "$TIME_S" "$RELAY_STATE" "$(nproc)" "$(uname -r)" \
  "$(git -C "$TM_REPO_ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)" <<'PYEOF'
import statistics, sys
path, runs, secs, relay_state, cpus, kernel, commit = sys.argv[1:8]
vals = {}
for line in open(path):
    leg, _, v = line.split()
    vals.setdefault(leg, []).append(float(v))
med = {k: statistics.median(v) for k, v in vals.items()}
for leg, v in vals.items():
    unit = "ms" if leg in ("join", "static") else "Gbit/s"
    shown = [("%.0f" % x) if unit == "ms" else ("%.3f" % (x / 1e9)) for x in v]
    print("%-7s %s: %s" % (leg, unit, " ".join(shown)), file=sys.stderr)

def ms(leg):
    return "%.0f ms" % med[leg] if leg in med else "not measured"
def gbps(leg):
    return "%.3f Gbit/s" % (med[leg] / 1e9) if leg in med else None

rows = []
if "join" in med:
    rows.append(("Join to first answered ping (fresh key)", ms("join"),
                 "min %.0f, max %.0f ms" % (min(vals["join"]), max(vals["join"]))))
if "static" in med:
    rows.append(("Static config start to first answered ping", ms("static"), "baseline"))
    rows.append(("join / static", "%.2fx" % (med["join"] / med["static"]), ""))
if "direct" in med:
    rows.append(("iperf3 TCP, direct path", gbps("direct"), "baseline"))
if "relay" in med:
    rows.append(("iperf3 TCP, relay path", gbps("relay"), ""))
    rows.append(("relay / direct", "%.2fx" % (med["relay"] / med["direct"]), ""))
elif relay_state != "not measured":
    rows.append(("iperf3 TCP, relay path", relay_state, ""))
print("### Join latency and relay throughput\n")
print("Setup: bench/join_latency.sh, %s runs (medians), iperf3 %s s single stream, "
      "%s vCPU, kernel %s, commit %s. Namespaces on one host: coordinator, members and a "
      "UDP-blocking NAT router (nftables) on a bridged 203.0.113.0/24 segment; agents at log "
      "level error." % (runs, secs, cpus, kernel, commit))
print()
print("| Measurement | Median | Notes |")
print("|---|---|---|")
for r in rows:
    print("| %s | %s | %s |" % r)
PYEOF
if (( ${#LEG_FAILED[@]} > 0 )); then
  tm_fail "leg(s) failed: $(for l in "${!LEG_FAILED[@]}"; do echo -n "$l: ${LEG_FAILED[$l]}; "; done)"
fi
