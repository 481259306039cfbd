#!/usr/bin/env bash
# dns_qps.sh: queries per second of the agent's mesh DNS server, against NSD serving the same zone.
#
# A standalone mesh of five members (alice, bob, carol, dave, erin: one agent and one network
# namespace each) comes up; alice's agent answers on its loopback address. NSD runs in alice's
# namespace on another loopback address (127.0.0.60) with zones built from what alice's agent
# answers: the SOA and NS of the mesh zone and of its two reverse zones, and every member's A,
# AAAA and PTR records. A query file with a fixed mix (A and AAAA of members, PTR of their IPv4
# and IPv6 addresses, NXDOMAIN, NODATA, the apex) is written and printed. Before anything is
# measured every distinct query in it is asked of both servers with dig: the run fails unless both
# give the same RCODE and answer count (other differences, and a few edge queries that are not in
# the mix, are printed as notes). Then dnsperf, in the same namespace, runs against the agent and
# NSD alternately (agent, NSD, agent, ...: --pairs pairs, the same file and settings each time),
# so drift on a shared machine hits both alike. Prints every run, the medians, agent/NSD pair by
# pair and the median of those ratios, and a Markdown block for docs/benchmarks.md.
#
# Usage: bench/dns_qps.sh [AGENT_PATH [OPERATOR_PATH]] [--pairs N] [--time SECONDS]
#                         [--clients N]
#   N pairs default 9; dnsperf runs with -l SECONDS (default 5) -c N (default 8) -T 1 -q 100 and
#   no -Q: as fast as 100 outstanding queries allow. Its queries carry no EDNS (dnsperf's default),
#   as from a stub.
# Needs root (exits 77 otherwise), dnsperf, nsd and dig. Not a test: it prints what it measured
# and exits 0, unless a run broke or the two servers answer a query of the mix differently.

set -Eeuo pipefail
BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

# Short legs, many pairs: on a shared machine the two legs of a pair are then close in time, and
# the median of the pair ratios has enough pairs to stand on.
PAIRS=9
TIME_S=5
CLIENTS=8
POSITIONAL=()
while (($#)); do
  case "$1" in
    --pairs) PAIRS=$2; shift 2 ;;
    --time) TIME_S=$2; shift 2 ;;
    --clients) CLIENTS=$2; shift 2 ;;
    -h | --help) awk 'NR > 1 && !/^#/ {exit} NR > 1 {sub(/^# ?/, ""); print}' "${BASH_SOURCE[0]}"; exit 0 ;;
    -*) echo "unknown option $1 (see --help)" >&2; exit 2 ;;
    *) POSITIONAL+=("$1"); shift ;;
  esac
done
[[ "$PAIRS" =~ ^[1-9][0-9]*$ && "$TIME_S" =~ ^[1-9][0-9]*$ && "$CLIENTS" =~ ^[1-9][0-9]*$ ]] ||
  { echo "--pairs, --time and --clients take positive integers" >&2; exit 2; }
# Not in scripts/install-deps.sh on purpose: on a real system the nsd package starts a daemon on
# port 53 (this machine's policy-rc.d stops that; check with `pgrep -x nsd` after installing).
for tool in dnsperf nsd nsd-checkzone dig; do
  command -v "$tool" >/dev/null || {
    echo "dns_qps: $tool is missing; install the tools with" >&2
    echo "  DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends" \
      "dnsperf nsd bind9-dnsutils" >&2
    echo "and stop any nsd the package started (it must not hold port 53)." >&2
    exit 1
  }
done

# shellcheck source=../e2e/netns/nat_lib.sh
source "$BENCH_DIR/../e2e/netns/nat_lib.sh"
# Daemons log at their quietest levels: logging must not be what is measured.
export TM_AGENT_LOG_LEVEL=${TM_AGENT_LOG_LEVEL:-error}
export TM_OPERATOR_LOG_LEVEL=${TM_OPERATOR_LOG_LEVEL:-info}
tm_mesh_init dns_qps $(( PAIRS * 2 * (TIME_S + 10) + 180 )) "${POSITIONAL[@]}"
LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)

MEMBERS=(alice bob carol dave erin)
tm_step "setup: coordinator and ${#MEMBERS[@]} members on a public segment"
tm_net_public coord
tm_coord_setup coord
# shellcheck disable=SC2119 # the operator needs no extra flags here
tm_coord_start
for m in "${MEMBERS[@]}"; do
  tm_net_public "${m:0:1}"
  tm_member_new "$m" "${m:0:1}"
  tm_member_start "$m"
done
for m in "${MEMBERS[@]:1}"; do tm_member_wait_peer 10 alice "$m"; done
AGENT_DNS=$(tm_member_dns alice)
NSD_DNS=127.0.0.60 # another loopback address in alice's namespace

# dig_agent ARGS...: dig's answer section from alice's agent (no EDNS, as dnsperf asks).
dig_agent() { tm_in a dig +time=1 +tries=2 +noedns +noall +answer @"$AGENT_DNS" "$@"; }
all_names_resolve() {
  local m
  for m in "${MEMBERS[@]}"; do
    [[ -n "$(dig_agent "$m.mesh" A)" ]] || { echo "$m.mesh: no answer"; return 1; }
  done
}
tm_wait 10 "alice's agent to answer every member's A record" all_names_resolve

tm_step "NSD with the zones alice's agent serves"
NSD_DIR="$TM_WORK/nsd"
mkdir -p "$NSD_DIR"
RECORDS="$NSD_DIR/records.txt"
V4S=() V6S=()
{
  dig_agent mesh SOA
  dig_agent mesh NS
  for m in "${MEMBERS[@]}"; do
    V4S+=("$(tm_member_ip "$m" 4)")
    V6S+=("$(tm_member_ip "$m" 6)")
    dig_agent "$m.mesh" A
    dig_agent "$m.mesh" AAAA
    dig_agent -x "${V4S[-1]}"
    dig_agent -x "${V6S[-1]}"
  done
  # The reverse zones' apexes, as the agent names them: the owner of the SOA in a NODATA answer.
  for ip in "${V4S[0]}" "${V6S[0]}"; do
    apex=$(tm_in a dig +time=1 +tries=2 +noedns +noall +authority @"$AGENT_DNS" -x "$ip" SOA |
      awk '$4 == "SOA" {print $1}')
    [[ -n "$apex" ]] || tm_fail "alice's agent gives no SOA for the reverse zone of $ip"
    dig_agent "$apex" SOA
    dig_agent "$apex" NS
  done
} >"$RECORDS"
# One zone file per apex (the owner of each SOA); each record goes to the longest apex it is under.
"$TM_PY" - "$RECORDS" "$NSD_DIR" >"$NSD_DIR/zones.txt" <<'PYEOF'
import sys
records_path, out_dir = sys.argv[1:3]
lines = sorted({l.strip() for l in open(records_path) if l.strip() and not l.startswith(";")})
apexes = [l.split()[0].lower() for l in lines if l.split()[3] == "SOA"]
zones = {a: [] for a in apexes}
for l in lines:
    owner = l.split()[0].lower()
    under = [a for a in apexes if owner == a or owner.endswith("." + a)]
    if not under:
        sys.exit("record outside every zone: " + l)
    zones[max(under, key=len)].append(l)
for apex, rrs in zones.items():
    name = apex.rstrip(".")
    # The SOA first, as a master file expects.
    rrs.sort(key=lambda l: l.split()[3] != "SOA")
    with open("%s/%s.zone" % (out_dir, name), "w") as f:
        f.write("\n".join(rrs) + "\n")
    print(name, len(rrs))
PYEOF
cat >"$NSD_DIR/nsd.conf" <<EOF
# NSD for bench/dns_qps.sh: every file in this directory, no database, no privilege drop, response
# rate limiting off (with it on, NSD answers about 8k qps from one source), and minimal responses:
# like the agent, no NS records and glue beside a positive answer, so both send the same records.
server:
  minimal-responses: yes
  ip-address: $NSD_DNS
  port: 53
  do-ip6: no
  server-count: 1
  username: ""
  chroot: ""
  zonesdir: "$NSD_DIR"
  database: ""
  zonelistfile: "$NSD_DIR/zone.list"
  xfrdfile: "$NSD_DIR/xfrd.state"
  xfrdir: "$NSD_DIR"
  pidfile: "$NSD_DIR/nsd.pid"
  logfile: "$NSD_DIR/nsd.log"
  cookie-secret-file: "$NSD_DIR/cookiesecrets.txt"
  rrl-ratelimit: 0
  rrl-whitelist-ratelimit: 0
remote-control:
  control-enable: no
EOF
while read -r zone count; do
  nsd-checkzone "$zone" "$NSD_DIR/$zone.zone" >&2 ||
    tm_fail "the zone built from the agent's answers does not load: $NSD_DIR/$zone.zone"
  printf 'zone:\n  name: "%s"\n  zonefile: "%s.zone"\n' "$zone" "$zone" >>"$NSD_DIR/nsd.conf"
  tm_log "zone $zone: $count records"
done <"$NSD_DIR/zones.txt"
nsd-checkconf "$NSD_DIR/nsd.conf" || tm_fail "nsd-checkconf rejects $NSD_DIR/nsd.conf"
# -d: NSD stays in the foreground, so its pid is ours to stop (its server and xfrd children end
# with it; teardown kills whatever is left in the namespace).
tm_bg_in a nsd -d -c "$NSD_DIR/nsd.conf" >"$NSD_DIR/nsd.out" 2>&1
NSD_PID=$TM_BG_PID
nsd_up() { [[ -n "$(tm_in a dig +time=1 +tries=1 +short @"$NSD_DNS" mesh SOA)" ]]; }
tm_wait 10 "NSD to answer on $NSD_DNS" nsd_up

tm_step "the query file"
QUERIES="$TM_WORK/queries.txt"
"$TM_PY" - "$QUERIES" "${MEMBERS[*]}" "${V4S[*]}" "${V6S[*]}" >"$TM_WORK/mix.txt" <<'PYEOF'
import ipaddress, random, sys
path, members, v4s, v6s = sys.argv[1], *(a.split() for a in sys.argv[2:5])
ptr = lambda ip: ipaddress.ip_address(ip).reverse_pointer
# A stub's traffic to its mesh resolver: mostly A and AAAA of members (asked together), browsers'
# HTTPS queries and other types the members do not have (NODATA), reverse lookups of mesh IPs,
# and misses: unknown members and search-path suffixes (NXDOMAIN).
unused_v4 = str(ipaddress.ip_address(v4s[0]) + 200)
mix = [  # category, lines of 200, candidate queries
    ("A of a member", 70, ["%s.mesh A" % m for m in members]),
    ("AAAA of a member", 60, ["%s.mesh AAAA" % m for m in members]),
    ("PTR of a member's IPv4", 14, ["%s PTR" % ptr(ip) for ip in v4s]),
    ("PTR of a member's IPv6", 6, ["%s PTR" % ptr(ip) for ip in v6s]),
    ("NXDOMAIN: unknown names, search-path suffixes, unused mesh IP", 30,
     ["nobody.mesh A", "printer.mesh AAAA", "www.example.com.mesh A", "github.com.mesh AAAA",
      "%s PTR" % ptr(unused_v4)]),
    ("NODATA: HTTPS, TXT and MX of members", 16,
     ["%s.mesh %s" % (m, t) for m in members[:3] for t in ("HTTPS", "TXT", "MX")]),
    ("SOA and NS at the apex", 4, ["mesh SOA", "mesh NS"]),
]
rng = random.Random(10)
lines = []
for _, count, candidates in mix:
    lines += [candidates[i % len(candidates)] for i in range(count)]
rng.shuffle(lines)
with open(path, "w") as f:
    f.write("\n".join(lines) + "\n")
for category, count, candidates in mix:
    print("%d%%\t%s\t%s" % (count * 100 // len(lines), category, ", ".join(candidates)))
PYEOF
tm_log "query file $QUERIES: $(wc -l <"$QUERIES") lines," \
  "$(sort -u "$QUERIES" | wc -l) distinct; mix:"
column -t -s $'\t' "$TM_WORK/mix.txt" >&2

tm_step "both servers answer every query of the file alike (RCODE and answer count)"
# summary SERVER DIG_ARGS...: one line from dig's header,
# "NOERROR ANSWER: 1, AUTHORITY: 0, ADDITIONAL: 0; flags qr aa rd".
summary() {
  local server=$1 out status
  shift
  out=$(tm_in a dig +time=2 +tries=2 @"$server" "$@" 2>&1) || { echo "NO-ANSWER"; return 0; }
  status=$(sed -n 's/^;; ->>HEADER<<- .* status: \([A-Z0-9]*\),.*/\1/p' <<<"$out")
  out=$(sed -n 's/^;; flags: \([a-z ]*\); QUERY: [0-9]*, \(.*\)$/\2; flags \1/p' <<<"$out")
  echo "$status $out"
}
NOTES=()
# compare STRICT DIG_ARGS...: ask both; with STRICT=1 a different RCODE or answer count fails the
# run; every other difference becomes a note.
compare() {
  local strict=$1 a n
  shift
  a=$(summary "$AGENT_DNS" "$@")
  n=$(summary "$NSD_DNS" "$@")
  if [[ "$strict" == 1 && ("$a" == NO-ANSWER || "$n" == NO-ANSWER) ]]; then
    tm_fail "'dig $*': no answer (agent: '$a', NSD: '$n')"
  fi
  [[ "$a" == "$n" ]] && return 0
  if [[ "$strict" == 1 && "${a%%, AUTHORITY*}" != "${n%%, AUTHORITY*}" ]]; then
    tm_fail "'dig $*': the agent answers '$a', NSD '$n'"
  fi
  NOTES+=("dig $*: agent '$a', NSD '$n'")
}
while read -r name type; do compare 1 +noedns "$name" "$type"; done < <(sort -u "$QUERIES")
tm_log "all $(sort -u "$QUERIES" | wc -l) distinct queries: same RCODE and answer count"
# Not in the mix, not fatal: what else a client may send (EDNS, DO, TCP, ANY, case, out of zone).
# The name between bob's PTR and the reverse apex (an empty non-terminal: NODATA).
ent=$(awk -F. '{print $3 "." $2 "." $1 ".in-addr.arpa"}' <<<"${V4S[1]}")
for q in "+edns=0 +nocookie bob.mesh A" "+edns=0 +nocookie +dnssec bob.mesh A" \
  "+tcp bob.mesh A" "+noedns bob.mesh ANY" "+noedns BoB.MeSh AAAA" "+noedns x.bob.mesh A" \
  "+edns=0 +nocookie mesh NS" "+noedns $ent PTR" "+noedns mesh DS" \
  "+edns=1 +noednsneg +nocookie mesh SOA" "+noedns example.com A"; do
  # shellcheck disable=SC2086 # dig options and a question, split on spaces
  compare 0 $q
done
if (( ${#NOTES[@]} > 0 )); then
  tm_log "differences besides RCODE and answer count (notes, not failures):"
  printf '  %s\n' "${NOTES[@]}" >&2
fi

tm_step "dnsperf: agent and NSD alternately, $PAIRS pairs of ${TIME_S}s"
DNSPERF_ARGS=(-d "$QUERIES" -l "$TIME_S" -c "$CLIENTS" -T 1 -q 100)
RESULTS="$TM_WORK/results.txt" # lines: server pair qps lost avg_latency_s response_codes...
: >"$RESULTS"
declare -A SERVER=([agent]=$AGENT_DNS [nsd]=$NSD_DNS)
for ((pair = 1; pair <= PAIRS; pair++)); do
  for leg in agent nsd; do
    out="$TM_WORK/dnsperf-$leg-$pair.txt"
    tm_in a dnsperf -s "${SERVER[$leg]}" "${DNSPERF_ARGS[@]}" >"$out" 2>&1 ||
      tm_fail "dnsperf against $leg failed in pair $pair: $(tail -n 5 "$out")"
    qps=$(sed -n 's/^ *Queries per second: *\([0-9.]*\).*/\1/p' "$out")
    lost=$(sed -n 's/^ *Queries lost: *\([0-9]*\).*/\1/p' "$out")
    lat=$(sed -n 's/^ *Average Latency (s): *\([0-9.]*\).*/\1/p' "$out")
    codes=$(sed -n 's/^ *Response codes: *//p' "$out")
    [[ -n "$qps" && -n "$lost" ]] || tm_fail "no statistics in dnsperf's output: $(cat "$out")"
    echo "$leg $pair $qps $lost ${lat:-0} $codes" >>"$RESULTS"
    tm_log "$leg pair $pair: $qps qps, $lost lost, average latency ${lat:-?} s; $codes"
  done
done
for m in "${MEMBERS[@]}"; do tm_member_alive "$m"; done
kill -TERM "$NSD_PID"
tm__wait_exit "$NSD_PID" 10 || tm_fail "NSD (pid $NSD_PID) did not exit within 10s of SIGTERM"
tm__bg_forget "$NSD_PID"

tm_step "results"
"$TM_PY" - "$RESULTS" "$TM_WORK/mix.txt" "$PAIRS" "$TIME_S" "$CLIENTS" "${#MEMBERS[@]}" \
  "$(nproc)" "$(uname -r)" \
  "$(git -C "$TM_REPO_ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)" \
  "$(dnsperf -h 2>&1 | sed -n 's/^Version //p')" "$(nsd -v 2>&1 | sed -n '1s/^NSD version //p')" \
  "$LOAD_BEFORE" "$(cut -d' ' -f1-3 /proc/loadavg)" "$(wc -l <"$QUERIES")" "$(nice)" <<'PYEOF'
import statistics, sys
(path, mix_path, pairs, secs, clients, members, cpus, kernel, commit, dnsperf, nsd, load0, load1,
 lines, niceness) = sys.argv[1:16]
runs = {"agent": {}, "nsd": {}}
lost = {"agent": 0, "nsd": 0}
for line in open(path):
    f = line.split()
    runs[f[0]][int(f[1])] = float(f[2])
    lost[f[0]] += int(f[3])
pairs_done = sorted(set(runs["agent"]) & set(runs["nsd"]))
ratios = [runs["agent"][p] / runs["nsd"][p] for p in pairs_done]
med = {k: statistics.median(v.values()) for k, v in runs.items()}
for p, r in zip(pairs_done, ratios):
    print("pair %d: agent %.0f qps, NSD %.0f qps, agent/NSD %.3f"
          % (p, runs["agent"][p], runs["nsd"][p], r), file=sys.stderr)
print("medians: agent %.0f qps, NSD %.0f qps; agent/NSD median of pairs %.3f, of medians %.3f"
      % (med["agent"], med["nsd"], statistics.median(ratios), med["agent"] / med["nsd"]),
      file=sys.stderr)
print("### Mesh DNS queries per second, agent against NSD\n")
print("Setup: `bench/dns_qps.sh`, %s members (one agent each, network namespaces, standalone "
      "coordinator); dnsperf %s in the first member's namespace over loopback UDP, `-l %s -c %s "
      "-T 1 -q 100`, no `-Q` (as fast as 100 outstanding queries allow), no EDNS; NSD %s "
      "(`server-count: 1`, `rrl-ratelimit: 0`, `minimal-responses: yes`, no database) on another "
      "loopback address, serving zones built from the agent's answers; %s pairs, agent then NSD; "
      "query file of %s lines; %s vCPU, kernel %s, commit %s; every process of the benchmark at "
      "niceness %s; load average %s before, %s after."
      % (members, dnsperf, secs, clients, nsd, pairs, lines, cpus, kernel, commit, niceness,
         load0, load1))
print()
print("| Pair | Agent (qps) | NSD (qps) | Agent / NSD |")
print("|---:|---:|---:|---:|")
for p, r in zip(pairs_done, ratios):
    print("| %d | %.0f | %.0f | %.3f |" % (p, runs["agent"][p], runs["nsd"][p], r))
print("| **Median** | **%.0f** | **%.0f** | **%.3f** |"
      % (med["agent"], med["nsd"], statistics.median(ratios)))
print()
print("Median of the pair ratios %.3f (ratio of the medians %.3f; target at least 1.0). Queries "
      "lost: agent %d, NSD %d. Query mix (share of lines, distinct queries):"
      % (statistics.median(ratios), med["agent"] / med["nsd"], lost["agent"], lost["nsd"]))
print()
for l in open(mix_path):
    share, category, queries = l.rstrip("\n").split("\t")
    queries = queries.split(", ")
    print("- %s: %s (%d distinct, e.g. `%s`)" % (share, category, len(queries), queries[0]))
PYEOF
