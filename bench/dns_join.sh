#!/usr/bin/env bash
# dns_join.sh: how soon a member that joins resolves by name, and one that leaves stops resolving,
# asked directly of another member's agent and through a caching resolver in front of it.
#
# A standalone mesh of alice and bob; dnsmasq in alice's namespace (127.0.0.53) sends the mesh
# domain to alice's agent and caches what it answers (5 s, the agent's TTL; negative answers for
# the SOA minimum, also 5 s). Each of --runs runs (default 5) is a join and a leave of newbie:
#   join   dnsmasq's cache is emptied (SIGHUP) and newbie.mesh A asked through it, so the cache
#          holds the NXDOMAIN for its whole negative TTL; then `tunnelmesh-agent join` starts for
#          newbie (a fresh key every run). From that start: newbie.mesh A first answers on alice's
#          agent (direct), and through dnsmasq (cached).
#   leave  the cache is emptied and newbie.mesh A asked through it (the answer cached for its whole
#          TTL); then `tunnelmesh-agent leave`. From that command: newbie's agent has exited, and
#          newbie.mesh is first NXDOMAIN on alice's agent and through dnsmasq.
# Newbie's own readiness is not timed: polling its status every 50 ms costs a process start and a
# Python run each time, enough on two cores to make "ready" come after its name resolved.
# A prober in alice's namespace asks both servers every 10 ms over UDP (one Python process with a
# socket per server, rather than a dig process per probe, so that probing costs less than the
# resolution it measures). Prints every run, the medians, and a Markdown block for
# docs/benchmarks.md.
#
# Usage: bench/dns_join.sh [AGENT_PATH [OPERATOR_PATH]] [--runs N]
# Needs root (exits 77 otherwise), dnsmasq and dig. Not a test: it prints what it measured and
# exits 0, unless a run broke (a name never resolved or never went away within 20 s).

set -Eeuo pipefail
BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

RUNS=5
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
# Daemons log at their quietest levels: logging must not be what is measured.
export TM_AGENT_LOG_LEVEL=${TM_AGENT_LOG_LEVEL:-error}
export TM_OPERATOR_LOG_LEVEL=${TM_OPERATOR_LOG_LEVEL:-info}
for tool in dnsmasq dig; do
  command -v "$tool" >/dev/null || { echo "dns_join: $tool is missing: scripts/install-deps.sh" \
    "installs it, or DEBIAN_FRONTEND=noninteractive apt-get install -y" \
    "--no-install-recommends dnsmasq-base bind9-dnsutils" >&2; exit 1; }
done
tm_mesh_init dns_join $(( RUNS * 60 + 120 )) "${POSITIONAL[@]}"
LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)

tm_step "setup: coordinator, alice and bob, dnsmasq in front of alice's agent"
tm_net_public coord
tm_net_public a
tm_net_public b
tm_net_public n # newbie, who joins and leaves in every run
tm_coord_setup coord
# shellcheck disable=SC2119 # the operator needs no extra flags here
tm_coord_start
tm_member_new alice a
tm_member_new bob b
tm_member_new newbie n
tm_member_start alice
tm_member_start bob
tm_member_wait_peer 10 alice bob
AGENT_DNS=$(tm_member_dns alice)
CACHE=127.0.0.53
tm_bg_in a dnsmasq --no-daemon --no-resolv --no-hosts --bind-interfaces --listen-address=$CACHE \
  --port=53 --server=/mesh/"$AGENT_DNS" --cache-size=1000 --pid-file= --log-facility=- \
  >"$TM_WORK/dnsmasq.log" 2>&1
DNSMASQ_PID=$TM_BG_PID
cache_up() { [[ -n "$(tm_in a dig +time=1 +tries=1 +short @"$CACHE" bob.mesh A)" ]]; }
tm_wait 5 "dnsmasq to answer bob.mesh" cache_up

PROBE="$TM_WORK/probe.py"
cat >"$PROBE" <<'PYEOF'
# probe.py WANT NAME TIMEOUT LABEL=ADDRESS...: ask every server for NAME A over UDP every 10 ms
# until each gives WANT (present: NOERROR with an answer; absent: NXDOMAIN). The first round's
# replies are printed as "first EPOCH_MS LABEL=STATE ..." (the caller starts the change after it);
# then one line "LABEL EPOCH_MS" per server as it first gives WANT, or "LABEL timeout STATE".
import random, socket, struct, sys, time

want, name, timeout = sys.argv[1], sys.argv[2], float(sys.argv[3])
servers = dict(a.split("=", 1) for a in sys.argv[4:])
socks = {}
for label, address in servers.items():
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.connect((address, 53))
    s.settimeout(0.5)
    socks[label] = s
question = b"".join(bytes([len(l)]) + l.encode() for l in name.split(".")) + b"\0"
question += struct.pack(">HH", 1, 1)  # A, IN

def ask(sock):
    qid = random.getrandbits(16)
    sock.send(struct.pack(">HHHHHH", qid, 0x0100, 1, 0, 0, 0) + question)  # RD, as a stub sends
    deadline = time.monotonic() + 0.5
    while time.monotonic() < deadline:
        try:
            r = sock.recv(512)
        except socket.timeout:
            break
        if len(r) >= 12 and struct.unpack(">H", r[:2])[0] == qid:
            rcode, answers = r[3] & 0x0F, struct.unpack(">H", r[6:8])[0]
            return {0: "NOERROR", 3: "NXDOMAIN"}.get(rcode, "RCODE%d" % rcode) + "/%d" % answers
    return "no-reply"

def wanted(state):
    return state.startswith("NOERROR/") and state != "NOERROR/0" if want == "present" \
        else state.startswith("NXDOMAIN/")

last = {label: ask(s) for label, s in socks.items()}
print("first %d %s" % (time.time() * 1000,
                       " ".join("%s=%s" % kv for kv in last.items())), flush=True)
pending = dict(socks)
end = time.monotonic() + timeout
while pending and time.monotonic() < end:
    time.sleep(0.01)
    for label, s in list(pending.items()):
        last[label] = ask(s)
        if wanted(last[label]):
            print("%s %d" % (label, time.time() * 1000), flush=True)
            del pending[label]
for label in pending:
    print("%s timeout %s" % (label, last[label]), flush=True)
PYEOF

RESULTS="$TM_WORK/results.txt" # lines: run join_direct_ms join_cache_ms join_gap_ms exited_ms
                               #       leave_direct_ms leave_cache_ms leave_gap_ms
: >"$RESULTS"

# probe_start WANT: empty dnsmasq's cache and start the prober in alice's namespace; returns once
# its first round has cached the current answer in dnsmasq. Fails if that answer already is WANT.
probe_start() {
  PROBE_OUT="$TM_WORK/probe-$1-$run.txt"
  kill -HUP "$DNSMASQ_PID" # dnsmasq empties its cache on SIGHUP
  tm_bg_in a "$TM_PY" "$PROBE" "$1" newbie.mesh 20 direct="$AGENT_DNS" cache="$CACHE" \
    >"$PROBE_OUT" 2>&1
  PROBE_PID=$TM_BG_PID
  tm_wait 5 "the prober's first round" grep -q '^first ' "$PROBE_OUT"
  local first
  first=$(grep '^first ' "$PROBE_OUT")
  local -A not_yet=([present]=NXDOMAIN/0 [absent]=NOERROR/1)
  [[ "$first" == *"direct=${not_yet[$1]} cache=${not_yet[$1]}" ]] ||
    tm_fail "run $run, before the $( [[ $1 == present ]] && echo join || echo leave ):" \
      "newbie.mesh A should still be ${not_yet[$1]} on both servers: $first"
  PROBE_CACHED_AT=$(awk '{print $2}' <<<"$first")
}

# probe_result CHANGE LABEL START_MS: sets MS[CHANGE_LABEL] to the ms from START_MS until the
# prober saw the wanted answer from LABEL; fails the run if it never did.
declare -A MS=()
probe_result() {
  local at
  at=$(awk -v l="$2" '$1 == l {print $2}' "$PROBE_OUT")
  [[ "$at" =~ ^[0-9]+$ ]] ||
    tm_fail "run $run, $1: $2 never gave the wanted answer within 20 s: $(cat "$PROBE_OUT")"
  MS[$1_$2]=$(( at - $3 ))
}

probe_wait() {
  tm__wait_exit "$PROBE_PID" 30 || tm_fail "the prober did not finish within 30 s"
  tm__bg_forget "$PROBE_PID"
}

tm_step "$RUNS runs: newbie joins, then leaves"
for ((run = 1; run <= RUNS; run++)); do
  rm -rf "$(tm_member_state newbie)"
  mkdir -p "$(tm_member_state newbie)"
  probe_start present
  start=$(tm__now_ms)
  join_gap=$(( start - PROBE_CACHED_AT ))
  tm_member_launch newbie
  probe_wait
  tm_member_wait_ready newbie 10
  probe_result join direct "$start"
  probe_result join cache "$start"
  tm_log "run $run join: on alice's agent ${MS[join_direct]} ms, through dnsmasq" \
    "${MS[join_cache]} ms (NXDOMAIN cached ${join_gap} ms before the join started)"

  probe_start absent
  start=$(tm__now_ms)
  leave_gap=$(( start - PROBE_CACHED_AT ))
  tm_member_leave newbie
  exited=$(( $(tm__now_ms) - start ))
  probe_wait
  probe_result leave direct "$start"
  probe_result leave cache "$start"
  tm_log "run $run leave: agent exited ${exited} ms, NXDOMAIN on alice's agent" \
    "${MS[leave_direct]} ms, through dnsmasq ${MS[leave_cache]} ms (answer cached ${leave_gap} ms" \
    "before the leave)"
  echo "$run ${MS[join_direct]} ${MS[join_cache]} $join_gap $exited ${MS[leave_direct]}" \
    "${MS[leave_cache]} $leave_gap" >>"$RESULTS"
done
tm_member_alive alice
tm_member_alive bob

tm_step "results"
"$TM_PY" - "$RESULTS" "$RUNS" "$(nproc)" "$(uname -r)" \
  "$(git -C "$TM_REPO_ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)" \
  "$(dnsmasq --version | sed -n '1s/^Dnsmasq version \([^ ]*\).*/\1/p')" \
  "$LOAD_BEFORE" "$(cut -d' ' -f1-3 /proc/loadavg)" "$(nice)" <<'PYEOF'
import statistics, sys
path, runs, cpus, kernel, commit, dnsmasq, load0, load1, niceness = sys.argv[1:10]
cols = ["join_direct", "join_cache", "join_gap", "exited", "leave_direct", "leave_cache",
        "leave_gap"]
rows = [[int(x) for x in l.split()] for l in open(path)]
vals = {c: [r[i + 1] for r in rows] for i, c in enumerate(cols)}
med = {c: statistics.median(v) for c, v in vals.items()}
for c in cols:
    print("%-12s ms: %s (median %.0f)" % (c, " ".join(map(str, vals[c])), med[c]),
          file=sys.stderr)
print("### Mesh DNS: a member joining and leaving, directly and through a cache\n")
print("Setup: `bench/dns_join.sh`, %s runs (medians), each a join and a leave of a third member "
      "(fresh key) in a standalone mesh of two; probes of `newbie.mesh A` every 10 ms from the "
      "first member's namespace, to its agent (direct) and to dnsmasq %s in front of it "
      "(cached). Before each change dnsmasq's cache was emptied and the old answer cached "
      "afresh (NXDOMAIN before a join, the address before a leave: TTL 5 s either way), median "
      "%.0f ms (join) and %.0f ms (leave) before the change started. Times from starting `join` "
      "or `leave`. %s vCPU, kernel %s, commit %s; agents at log level error; every process of "
      "the benchmark at niceness %s; load average %s before, %s after."
      % (runs, dnsmasq, med["join_gap"], med["leave_gap"], cpus, kernel, commit, niceness, load0,
         load1))
print()
print("| Run | Join: resolves, direct | Join: resolves, cached "
      "| Leave: agent exited | Leave: NXDOMAIN, direct | Leave: NXDOMAIN, cached |")
print("|---:|---:|---:|---:|---:|---:|")
show = ["join_direct", "join_cache", "exited", "leave_direct", "leave_cache"]
for r in rows:
    print("| %d | %s |" % (r[0], " | ".join("%d ms" % r[cols.index(c) + 1] for c in show)))
print("| **Median** | %s |" % " | ".join("**%.0f ms**" % med[c] for c in show))
PYEOF
