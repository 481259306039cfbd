# shellcheck shell=bash
# nat_lib.sh: an "internet" with NAT'd sites, a coordinator and joined members, for the join_*
# scenarios and bench/join_latency.sh. Builds on lib.sh (sourced here): its namespaces, waits,
# pings and teardown are used as they are.
#
# A scenario calls `tm_mesh_init NAME BUDGET_SECONDS "$@"` instead of tm_init. Arguments:
# [AGENT_PATH [OPERATOR_PATH]]; else $TM_AGENT / $TM_OPERATOR; else build/bin/... The operator
# defaults to the tunnelmesh-operator beside the agent (CTest passes only TM_AGENT).
#
# Topology (all IPv4 outside the tunnel):
#
#   namespace "inet": bridge br0, 203.0.113.254/24, no forwarding. The public segment: every
#   public interface below is a port of br0 and has its default route via .254, so a packet for a
#   private (192.168.x) address that leaves a site is dropped here, as on the internet.
#
#   tm_net_public ID          a host with one public address (203.0.113.x): the coordinator, or a
#                             member with no NAT (kind `none`).
#   tm_net_site SITE KIND     a router namespace: pub0 (public address) and bridge lan0
#                             (192.168.N.1/24), forwarding on, nftables per KIND:
#       eim          `masquerade`: Linux keeps the source port when it is free, so one private
#                    endpoint maps to one public endpoint for every destination (endpoint-
#                    independent mapping; filtering is per remote endpoint, by conntrack). Hole
#                    punching works through it.
#       symmetric    `masquerade fully-random`: every new destination gets a new random public
#                    port (per-destination mapping); STUN's answer is useless to peers.
#       udp_blocked  `masquerade`, and the forward chain passes only TCP from the LAN: outbound
#                    UDP (and ICMP) is dropped and counted. Only TCP (gRPC, the relay) gets out.
#     All NAT kinds drop unsolicited inbound (forward policy drop, established/related accepted),
#     also to the router itself, silently and before conntrack keeps it (see tm_net_site).
#   tm_net_site_host SITE ID  a host namespace on the site's LAN (192.168.N.x, default via .1).
#
# Coordinator: tm_coord_setup NSID writes the manifests (Mesh "demo" with 10.99.0.0/16 and
# fd99:99::/48, a random join token, also in $TM_WORK/token); tm_coord_start / _stop / _kill
# run tunnelmesh-operator there with its state under $TM_WORK/coord.state (the operator creates
# it) and its log in $TM_WORK/coord.log.
#
# Members: tm_member_new NAME NSID [PORT] then tm_member_start NAME (or, for the usual start,
# tm_members_join NAME:NSID... and tm_members_wait_ping); each has its state dir
# $TM_WORK/NAME.state (the agent creates it; node.key there: same key, same mesh IPs),
# interface tmN and log $TM_WORK/NAME.log. Status: tm_mjson NAME EXPR (s = status JSON,
# peer('n') = peer named n or None), tm_member_ip NAME [4|6], tm_mpeer_get NAME PEER FIELD,
# tm_member_wait_peer, tm_member_wait_no_peer, tm_member_wait_path. Daemon log times:
# tm_log_time_ms.
#
# Continuous traffic: tm_flow_ping_start / tm_flow_ping_check (steady pings, counts losses) and
# tm_flow_iperf_start / tm_flow_iperf_check (a rate-limited iperf3 run, checks it completed and
# never stalled for a whole second).
#
# On failure, before lib.sh's namespace dump and teardown: each member's log tail and status
# JSON, the coordinator's log tail and members.json, and each router's nftables ruleset (with
# counters) and conntrack table.
#
# Environment (besides lib.sh's): TM_OPERATOR; TM_OPERATOR_LOG_LEVEL (default debug);
#   TM_MEMBER_WRAP  a command prefix for every member, for debugging a crash, e.g.
#                   "gdb -q -batch -ex run -ex bt --args" (the backtrace lands in the member's log).

# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

TM_NET_PREFIX=203.0.113
TM_NET_GW=$TM_NET_PREFIX.254
TM_NET_NEXT_PUBLIC=10      # next host number on the public segment
TM_NET_NEXT_SITE=1         # next site number (LAN 192.168.N.0/24)
TM_MESH_V4=10.99.0.0/16
TM_MESH_V6=fd99:99::/48
TM_GRPC_PORT=7700
TM_STUN_PORT=3478
TM_RELAY_PORT=7701

declare -gA TM_NET_ADDR=()      # namespace id -> its (public or LAN) IPv4 address
declare -gA TM_NET_KIND=()      # namespace id -> public | router | host
declare -gA TM_SITE_NAT=()      # site id -> eim | symmetric | udp_blocked
declare -gA TM_SITE_NUM=() TM_SITE_HOSTS=()
declare -ga TM_SITE_ORDER=()
declare -gA TM_MEMBER_NSID=() TM_MEMBER_IF=() TM_MEMBER_PORT=() TM_MEMBER_PID=()
declare -gA TM_MEMBER_STARTS=()
declare -ga TM_MEMBER_ORDER=()
TM_COORD_NSID=""
TM_COORD_PID=""
TM_COORD_ADDR=""

# tm_mesh_init NAME BUDGET_SECONDS [AGENT_PATH [OPERATOR_PATH]]: tm_init, plus the operator binary,
# nftables, and this file's failure diagnostics.
tm_mesh_init() {
  local name=$1 budget=$2
  shift 2
  tm_init "$name" "$budget" "${1:-}"
  TM_OPERATOR=${2:-${TM_OPERATOR:-$(dirname "$TM_AGENT")/tunnelmesh-operator}}
  [[ "$TM_OPERATOR" == /* ]] || TM_OPERATOR="$PWD/$TM_OPERATOR"
  command -v nft >/dev/null || tm_fail "required tool 'nft' is not installed (apt-get install nftables)"
  trap tm_net__on_exit EXIT
  tm_require_agent
  [[ -x "$TM_OPERATOR" ]] || tm_fail "operator binary '$TM_OPERATOR' does not exist or is not" \
    "executable (build it, or set TM_OPERATOR)"
  tm_log "operator $TM_OPERATOR"
}

tm_net__on_exit() {
  local rc=$?
  trap - EXIT ERR INT TERM USR1
  set +eE
  # The time budget is over either way: stop the watchdog before the diagnostics take their time.
  if [[ -n "$TM_WATCHDOG_PID" ]]; then kill "$TM_WATCHDOG_PID" 2>/dev/null; fi
  TM_WATCHDOG_PID=""
  (( rc == 0 )) || tm_net_dump_diagnostics
  (exit "$rc")
  tm__on_exit
}

# tm__bg_forget PID: drop a reaped pid from lib.sh's teardown list (it may be reused).
tm__bg_forget() {
  local p out=()
  for p in "${TM_BG_PIDS[@]}"; do [[ "$p" == "$1" ]] || out+=("$p"); done
  TM_BG_PIDS=("${out[@]}")
}

# ---------------------------------------------------------------------------------------------
# Topology

# tm_net_internet: the public segment (namespace "inet", bridge br0). Called by the functions
# below when needed.
tm_net_internet() {
  [[ -z "${TM_NS[inet]:-}" ]] || return 0
  tm_ns_new inet
  ip -n "$(tm_ns inet)" link add br0 type bridge
  ip -n "$(tm_ns inet)" addr add "$TM_NET_GW/24" dev br0
  ip -n "$(tm_ns inet)" link set br0 up
  TM_NET_KIND[inet]=internet
}

# tm__net_attach ID IFNAME: a veth from namespace ID (named IFNAME there) into br0, with the next
# public address; leaves the address in TM_NET_ADDR[ID].
tm__net_attach() {
  local id=$1 ifname=$2 addr
  tm_net_internet
  addr=$TM_NET_PREFIX.$TM_NET_NEXT_PUBLIC
  TM_NET_NEXT_PUBLIC=$((TM_NET_NEXT_PUBLIC + 1))
  (( TM_NET_NEXT_PUBLIC < 254 )) || tm_fail "public segment is full"
  ip link add "$ifname" netns "$(tm_ns "$id")" type veth peer name "p-$id" netns "$(tm_ns inet)" ||
    tm_fail "cannot create veth $ifname/p-$id"
  ip -n "$(tm_ns inet)" link set "p-$id" master br0 up
  ip -n "$(tm_ns "$id")" addr add "$addr/24" dev "$ifname"
  ip -n "$(tm_ns "$id")" link set "$ifname" up
  ip -n "$(tm_ns "$id")" route add default via "$TM_NET_GW"
  TM_NET_ADDR[$id]=$addr
}

# tm_net_public ID: a host on the public segment (no NAT).
tm_net_public() {
  local id=$1
  tm_ns_new "$id"
  tm__net_attach "$id" pub0
  TM_NET_KIND[$id]=public
  tm_log "public host $id at ${TM_NET_ADDR[$id]}"
}

# tm_net_site SITE KIND: a NAT router namespace SITE with a LAN bridge; KIND eim, symmetric or
# udp_blocked (see the header).
tm_net_site() {
  local site=$1 kind=$2 n rules ns
  case "$kind" in
    eim | symmetric | udp_blocked) ;;
    *) tm_fail "tm_net_site: NAT kind must be eim, symmetric or udp_blocked, not '$kind'" \
      "(a host without NAT is tm_net_public)" ;;
  esac
  n=$TM_NET_NEXT_SITE
  TM_NET_NEXT_SITE=$((n + 1))
  tm_ns_new "$site"
  ns=$(tm_ns "$site")
  tm__net_attach "$site" pub0
  ip -n "$ns" link add lan0 type bridge
  ip -n "$ns" addr add "192.168.$n.1/24" dev lan0
  ip -n "$ns" link set lan0 up
  ip netns exec "$ns" sysctl -qw net.ipv4.ip_forward=1
  TM_NET_KIND[$site]=router
  TM_SITE_NAT[$site]=$kind
  TM_SITE_NUM[$site]=$n
  TM_SITE_HOSTS[$site]=0
  TM_SITE_ORDER+=("$site")
  rules="$TM_WORK/nft-$site.nft"
  {
    echo "# $site: $kind NAT between lan0 (192.168.$n.0/24) and pub0 (${TM_NET_ADDR[$site]})"
    echo "table ip nat {"
    echo "  chain postrouting {"
    echo "    type nat hook postrouting priority srcnat; policy accept;"
    if [[ "$kind" == symmetric ]]; then
      echo "    oifname \"pub0\" counter masquerade fully-random"
    else
      echo "    oifname \"pub0\" counter masquerade"
    fi
    echo "  }"
    echo "}"
    echo "table ip filter {"
    echo "  chain forward {"
    echo "    type filter hook forward priority filter; policy drop;"
    echo "    ct state established,related counter accept"
    if [[ "$kind" == udp_blocked ]]; then
      echo "    iifname \"lan0\" oifname \"pub0\" meta l4proto udp counter drop comment \"outbound UDP\""
      echo "    iifname \"lan0\" oifname \"pub0\" meta l4proto tcp counter accept"
    else
      echo "    iifname \"lan0\" oifname \"pub0\" counter accept"
    fi
    echo "    counter comment \"dropped: unsolicited inbound or not allowed out\""
    echo "  }"
    # Unsolicited inbound to the router itself is dropped before conntrack confirms an entry for
    # it. Otherwise the entry (peer's public endpoint -> this router's port) would clash with the
    # mapping a LAN host creates a moment later to that same peer, and masquerade would pick
    # another port: a hole-punching race would turn this NAT endpoint-dependent.
    echo "  chain input {"
    echo "    type filter hook input priority filter; policy accept;"
    echo "    iifname \"pub0\" ct state new counter drop comment \"unsolicited inbound to the router\""
    echo "  }"
    echo "}"
  } >"$rules"
  ip netns exec "$ns" nft -f "$rules" || tm_fail "nft rules for site $site do not load ($rules)"
  tm_log "site $site: $kind NAT at ${TM_NET_ADDR[$site]}, LAN 192.168.$n.0/24"
}

# tm_net_site_host SITE ID: a host namespace ID on SITE's LAN.
tm_net_site_host() {
  local site=$1 id=$2 n k addr
  [[ "${TM_NET_KIND[$site]:-}" == router ]] || tm_fail "tm_net_site_host: $site is not a site"
  n=${TM_SITE_NUM[$site]}
  k=$(( ${TM_SITE_HOSTS[$site]} + 10 ))
  TM_SITE_HOSTS[$site]=$((k - 9))
  addr=192.168.$n.$k
  tm_ns_new "$id"
  ip link add eth0 netns "$(tm_ns "$id")" type veth peer name "h-$id" netns "$(tm_ns "$site")" ||
    tm_fail "cannot create veth eth0/h-$id"
  ip -n "$(tm_ns "$site")" link set "h-$id" master lan0 up
  ip -n "$(tm_ns "$id")" addr add "$addr/24" dev eth0
  ip -n "$(tm_ns "$id")" link set eth0 up
  ip -n "$(tm_ns "$id")" route add default via "192.168.$n.1"
  TM_NET_ADDR[$id]=$addr
  TM_NET_KIND[$id]=host
  tm_log "host $id at $addr behind $site (${TM_SITE_NAT[$site]})"
}

# tm_net_host ID KIND: a host with the given NAT kind on its own site (site id "r-ID"); KIND none
# makes it public.
tm_net_host() {
  local id=$1 kind=$2
  if [[ "$kind" == none ]]; then
    tm_net_public "$id"
  else
    tm_net_site "r$id" "$kind"
    tm_net_site_host "r$id" "$id"
  fi
}

# tm_nat_counter SITE COMMENT_OR_VERB: packets counted by the site's rule (e.g. "outbound UDP").
tm_nat_counter() {
  local out
  out=$(ip netns exec "$(tm_ns "$1")" nft list chain ip filter forward) || return 1
  grep -F "$2" <<<"$out" | grep -o 'packets [0-9]*' | head -n1 | awk '{print $2}'
}

# ---------------------------------------------------------------------------------------------
# Coordinator

tm_coord_log() { echo "$TM_WORK/coord.log"; }
tm_coord_state() { echo "$TM_WORK/coord.state"; }
tm_token_file() { echo "$TM_WORK/token"; }

# tm_coord_setup NSID: the coordinator will run in NSID (a public host); writes its manifests
# and the join token. The Mesh's spec.defaultAction is $TM_MESH_DEFAULT_ACTION, Allow unless set:
# scenarios about connectivity run without policies (every member's packet filter then allows
# everything); policy scenarios set Deny and write PeerPolicy files next to mesh.yaml.
tm_coord_setup() {
  local nsid=$1 token
  TM_COORD_NSID=$nsid
  TM_COORD_ADDR=${TM_NET_ADDR[$nsid]:?coordinator namespace $nsid has no address}
  # The state directory is the operator's to create, as on a real host (join_basic checks its
  # mode).
  mkdir -p "$TM_WORK/coord.manifests"
  token=$(head -c 24 /dev/urandom | sha256sum | cut -c1-32)
  (umask 077 && echo "$token" >"$(tm_token_file)")
  cat >"$TM_WORK/coord.manifests/mesh.yaml" <<EOF
apiVersion: tunnelmesh.io/v1alpha1
kind: Mesh
metadata:
  name: demo
spec:
  ipv4CIDR: $TM_MESH_V4
  ipv6CIDR: $TM_MESH_V6
  defaultAction: ${TM_MESH_DEFAULT_ACTION:-Allow}
  joinTokenSecretRef:
    namespace: tunnelmesh
    name: demo-join
    key: token
---
apiVersion: v1
kind: Secret
metadata:
  namespace: tunnelmesh
  name: demo-join
stringData:
  token: "$token"
EOF
}

# tm_coord_allow_internet ROLE: a PeerPolicy "laptops-internet" in the coordinator's manifests that
# lets members labelled role=ROLE use every exit peer (docs/remote-access.md). Call between
# tm_coord_setup and tm_coord_start.
tm_coord_allow_internet() {
  cat >"$TM_WORK/coord.manifests/laptops-internet.yaml" <<YAML
apiVersion: tunnelmesh.io/v1alpha1
kind: PeerPolicy
metadata:
  name: laptops-internet
spec:
  mesh: demo
  action: Allow
  from: [{peerSelector: {matchLabels: {role: $1}}}]
  to: [{internet: {}}]
YAML
}

tm__coord_ready_count() { grep -c 'coordinator ready' "$(tm_coord_log)" 2>/dev/null || true; }

# tm_coord_start [EXTRA_ARGS...]: start the operator; returns when it logged "coordinator ready"
# (again) and its gRPC port listens.
tm_coord_start() {
  local ns log before
  [[ -n "$TM_COORD_NSID" ]] || tm_fail "tm_coord_start: call tm_coord_setup first"
  [[ -z "$TM_COORD_PID" ]] || tm_fail "the coordinator is already running"
  ns=$(tm_ns "$TM_COORD_NSID")
  log=$(tm_coord_log)
  before=$(tm__coord_ready_count)
  printf '\n===== coordinator start at %s =====\n' "$(date +%H:%M:%S.%3N)" >>"$log"
  ip netns exec "$ns" "$TM_OPERATOR" --standalone --manifests "$TM_WORK/coord.manifests" \
    --state-dir "$(tm_coord_state)" --listen-address 0.0.0.0 --grpc-port "$TM_GRPC_PORT" \
    --stun-port "$TM_STUN_PORT" --relay-port "$TM_RELAY_PORT" \
    --log-level "${TM_OPERATOR_LOG_LEVEL:-debug}" "$@" >>"$log" 2>&1 &
  TM_COORD_PID=$!
  TM_BG_PIDS+=("$TM_COORD_PID")
  local deadline
  deadline=$(tm__deadline 10)
  until (( $(tm__coord_ready_count) > before )) && tm__listening "$TM_COORD_NSID" "$TM_GRPC_PORT"
  do
    if tm__wait_exit "$TM_COORD_PID" 0; then
      tm__bg_forget "$TM_COORD_PID"
      TM_COORD_PID=""
      tm_fail "the coordinator exited with code $TM_EXIT_RC during startup (log below)"
    fi
    tm__past "$deadline" && tm_fail "the coordinator did not become ready within 10s"
    sleep 0.05
  done
  tm_log "coordinator up (pid $TM_COORD_PID) at $TM_COORD_ADDR:$TM_GRPC_PORT," \
    "CA $(cut -c1-20 "$(tm_coord_state)/ca-hash")..."
}

# tm_coord_stop: SIGTERM; the operator must exit 0 within 10 s.
tm_coord_stop() {
  local pid=$TM_COORD_PID
  [[ -n "$pid" ]] || tm_fail "tm_coord_stop: the coordinator is not running"
  kill -TERM "$pid" 2>/dev/null || true
  tm__wait_exit "$pid" 10 || tm_fail "the coordinator (pid $pid) did not exit within 10s of SIGTERM"
  tm__bg_forget "$pid"
  TM_COORD_PID=""
  echo "===== coordinator exited with code $TM_EXIT_RC after SIGTERM at $(date +%H:%M:%S.%3N) =====" \
    >>"$(tm_coord_log)"
  [[ "$TM_EXIT_RC" == 0 ]] || tm_fail "the coordinator exited with code $TM_EXIT_RC after SIGTERM"
  tm_log "coordinator stopped"
}

# tm_coord_kill: SIGKILL (a crash).
tm_coord_kill() {
  local pid=$TM_COORD_PID
  [[ -n "$pid" ]] || tm_fail "tm_coord_kill: the coordinator is not running"
  kill -KILL "$pid"
  tm__wait_exit "$pid" 10 || tm_fail "the coordinator (pid $pid) survived SIGKILL for 10s"
  tm__bg_forget "$pid"
  TM_COORD_PID=""
  echo "===== coordinator killed with SIGKILL at $(date +%H:%M:%S.%3N) =====" >>"$(tm_coord_log)"
  tm_log "coordinator killed"
}

# tm_coord_alive: fail if the coordinator has exited.
tm_coord_alive() {
  [[ -n "$TM_COORD_PID" ]] || tm_fail "the coordinator is not running"
  if tm__wait_exit "$TM_COORD_PID" 0; then
    tm__bg_forget "$TM_COORD_PID"
    TM_COORD_PID=""
    tm_fail "the coordinator exited unexpectedly with code $TM_EXIT_RC"
  fi
}

tm_coord_ca_hash() { cat "$(tm_coord_state)/ca-hash"; }

# tm_coord_registered NAME: the coordinator logged "member registered: name=NAME" since its last
# start.
tm_coord_registered() {
  local log line
  log=$(tm_coord_log)
  line=$(grep -n '===== coordinator start' "$log" | tail -n 1 | cut -d: -f1)
  tail -n +"${line:-1}" "$log" | grep "member registered: name=$1 "
}

# tm_log_time_ms FILE TEXT: when a daemon logged its last line containing TEXT in its log FILE,
# in ms since the epoch (like tm__now_ms), from the line's own timestamp; fails if there is none.
# A step timed between daemons' log lines leaves out what the harness itself costs (each status
# poll starts several processes), which grows with the machine's load.
tm_log_time_ms() {
  "$TM_PY" - "$1" "$2" <<'PYEOF' || tm_fail "no line with '$2' (and a timestamp) in $1"
import datetime, re, sys
last = None
for line in open(sys.argv[1], errors="replace"):
    if sys.argv[2] in line:
        m = re.match(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d+) ", line)
        last = m.group(1) if m else last
if last is None:
    sys.exit(1)
print(round(datetime.datetime.fromisoformat(last).timestamp() * 1000))
PYEOF
}

# tm_coord_reg_delays LINE: "NAME SECONDS MESH_IPV4" for each member's first "member registered"
# line in the coordinator's log from LINE on (a "===== coordinator start" line), SECONDS counted
# from that start's "coordinator ready" line (negative if before it).
tm_coord_reg_delays() {
  tail -n +"$1" "$(tm_coord_log)" | "$TM_PY" -c '
import datetime, re, sys
ready, first = None, {}
for line in sys.stdin:
    m = re.match(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d+) \S+ (.*)", line)
    if not m:
        continue
    t = datetime.datetime.fromisoformat(m.group(1))
    if "coordinator ready" in m.group(2) and ready is None:
        ready = t
    r = re.search(r"member registered: name=(\S+) .*mesh_ips=(\S+)", m.group(2))
    if r and r.group(1) not in first:
        first[r.group(1)] = (t, r.group(2))
if ready is None:
    sys.exit("no coordinator ready line after the restart")
for name, (t, ip) in sorted(first.items()):
    print("%s %.3f %s" % (name, (t - ready).total_seconds(), ip))
'
}

# tm_coord_member_ips NAME: the mesh IPs members.json records for member NAME (space-separated).
tm_coord_member_ips() {
  "$TM_PY" - "$(tm_coord_state)/members.json" "$1" <<'PYEOF'
import json, sys
doc = json.load(open(sys.argv[1]))
print(" ".join(ip for m in doc["members"] if m.get("name") == sys.argv[2] for ip in m["mesh_ips"]))
PYEOF
}

# ---------------------------------------------------------------------------------------------
# Members

# tm_member_new NAME NSID [PORT]: a member to run in namespace NSID (UDP port default 51820).
tm_member_new() {
  local name=$1 nsid=$2 port=${3:-51820}
  [[ -z "${TM_MEMBER_NSID[$name]:-}" ]] || tm_fail "member '$name' already exists"
  tm_ns "$nsid" >/dev/null
  TM_IF_SEQ=$((TM_IF_SEQ + 1))
  TM_MEMBER_NSID[$name]=$nsid
  TM_MEMBER_IF[$name]="tm$TM_IF_SEQ"
  TM_MEMBER_PORT[$name]=$port
  TM_MEMBER_PID[$name]=""
  TM_MEMBER_STARTS[$name]=0
  TM_MEMBER_ORDER+=("$name")
  # The state directory is left to the agent to create, as on a real host (join_basic checks its
  # mode).
}

tm_member_state() { echo "$TM_WORK/$1.state"; }
# The loopback address member NAME's DNS server answers on (distinct per member, so that members
# sharing a namespace do not collide on port 53).
tm_member_dns() { echo "127.0.0.$(( 100 + ${TM_MEMBER_IF[$1]#tm} ))"; }
tm_member_log() { echo "$TM_WORK/$1.log"; }
tm_member_pid() { echo "${TM_MEMBER_PID[$1]:-}"; }

# tm__member_cmd NAME TOKEN_FILE: the join command line of member NAME, in TM_JOIN_CMD.
tm__member_cmd() {
  local name=$1
  [[ -n "${TM_MEMBER_NSID[$name]:-}" ]] || tm_fail "unknown member '$name'"
  local wrap=()
  # shellcheck disable=SC2206 # a command prefix, split on spaces
  [[ -z "${TM_MEMBER_WRAP:-}" ]] || wrap=($TM_MEMBER_WRAP)
  TM_JOIN_CMD=(ip netns exec "$(tm_ns "${TM_MEMBER_NSID[$name]}")" "${wrap[@]}" "$TM_AGENT" join
    "$TM_COORD_ADDR:$TM_GRPC_PORT" --token-file "$2" --name "$name"
    --state-dir "$(tm_member_state "$name")" --interface "${TM_MEMBER_IF[$name]}"
    --ca-hash "$(tm_coord_ca_hash)" --listen-port "${TM_MEMBER_PORT[$name]}"
    --dns-listen "$(tm_member_dns "$name")" --log-level "${TM_AGENT_LOG_LEVEL:-debug}")
}

tm__member_log_start() { # NAME WHAT
  local n
  n=$(( TM_MEMBER_STARTS[$1] + 1 ))
  TM_MEMBER_STARTS[$1]=$n
  printf '\n===== %s #%s of member %s in %s at %s =====\n' "$2" "$n" "$1" \
    "$(tm_ns "${TM_MEMBER_NSID[$1]}")" "$(date +%H:%M:%S.%3N)" >>"$(tm_member_log "$1")"
}

# tm_member_launch NAME [EXTRA_ARGS...]: start `tunnelmesh-agent join` in the background and
# return at once (TM_MEMBER_PID[NAME] is its pid). EXTRA_ARGS go to join (options not set here,
# such as --label).
tm_member_launch() {
  local name=$1
  shift
  tm__member_cmd "$name" "$(tm_token_file)"
  [[ -z "${TM_MEMBER_PID[$name]}" ]] || tm_fail "member $name is already running"
  tm__member_log_start "$name" start
  "${TM_JOIN_CMD[@]}" "$@" >>"$(tm_member_log "$name")" 2>&1 &
  TM_MEMBER_PID[$name]=$!
  TM_BG_PIDS+=("$!")
}

# tm_member_join_once NAME TOKEN_FILE TIMEOUT [EXTRA_ARGS...]: run join in the foreground with
# that token file, for a join that must fail; the exit code is left in TM_JOIN_RC (124: still
# running after TIMEOUT seconds) and the output in TM_JOIN_OUT (it is also appended to the
# member's log).
# shellcheck disable=SC2034 # TM_JOIN_RC and TM_JOIN_OUT are results, read by callers
tm_member_join_once() {
  local name=$1 out="$TM_WORK/$1.join-once.out" limit=$3
  tm__member_cmd "$name" "$2"
  shift 3
  tm__member_log_start "$name" "foreground join"
  TM_JOIN_RC=0
  timeout -k 2 "$limit" "${TM_JOIN_CMD[@]}" "$@" >"$out" 2>&1 || TM_JOIN_RC=$?
  TM_JOIN_OUT=$(cat "$out")
  cat "$out" >>"$(tm_member_log "$name")"
}

# tm_member_start NAME [EXTRA_ARGS...]: launch and wait (10 s) until its status answers with its
# mesh IPs; fails at once if the process exits meanwhile.
tm_member_start() {
  local name=$1
  tm_member_launch "$@"
  tm_member_wait_ready "$name" 10
  tm_log "member $name up (pid ${TM_MEMBER_PID[$name]}, ${TM_MEMBER_IF[$name]}," \
    "mesh IPs $(tm_mjson "$name" "' '.join(s['self']['mesh_ips'])"))"
}

tm_member_wait_ready() { # NAME TIMEOUT
  local name=$1 deadline pid
  pid=${TM_MEMBER_PID[$name]}
  deadline=$(tm__deadline "$2")
  while ! tm__member_ready "$name" >/dev/null 2>&1; do
    if tm__wait_exit "$pid" 0; then
      tm__member_reaped "$name"
      tm_fail "member $name exited with code $TM_EXIT_RC while joining (its log is below)"
    fi
    tm__past "$deadline" && tm_fail "member $name did not join within ${2}s"
    sleep 0.05
  done
}

tm__member_reaped() {
  tm__bg_forget "${TM_MEMBER_PID[$1]}"
  TM_MEMBER_PID[$1]=""
}

tm__member_ready() {
  local out
  out=$(tm_mstatus "$1") || return 1
  "$TM_PY" -c 'import json, sys; sys.exit(0 if json.loads(sys.argv[1])["self"]["mesh_ips"] else 1)' \
    "$out"
}

# tm_member_stop NAME: SIGTERM; must exit 0 within 10 s and remove its interface.
tm_member_stop() {
  local name=$1 pid
  pid=${TM_MEMBER_PID[$name]:-}
  [[ -n "$pid" ]] || tm_fail "tm_member_stop: $name is not running"
  kill -TERM "$pid" 2>/dev/null || true
  tm__wait_exit "$pid" 10 || tm_fail "member $name (pid $pid) did not exit within 10s of SIGTERM"
  tm__member_reaped "$name"
  echo "===== $name exited with code $TM_EXIT_RC after SIGTERM at $(date +%H:%M:%S.%3N) =====" \
    >>"$(tm_member_log "$name")"
  [[ "$TM_EXIT_RC" == 0 ]] || tm_fail "member $name exited with code $TM_EXIT_RC after SIGTERM"
  tm_wait 5 "member $name to remove its interface" tm__member_link_absent "$name"
  tm_log "member $name stopped"
}

# tm_member_kill NAME: SIGKILL.
tm_member_kill() {
  local name=$1 pid
  pid=${TM_MEMBER_PID[$name]:-}
  [[ -n "$pid" ]] || tm_fail "tm_member_kill: $name is not running"
  kill -KILL "$pid"
  tm__wait_exit "$pid" 10 || tm_fail "member $name (pid $pid) survived SIGKILL for 10s"
  tm__member_reaped "$name"
  echo "===== $name killed with SIGKILL at $(date +%H:%M:%S.%3N) =====" >>"$(tm_member_log "$name")"
  tm_wait 5 "interface of killed member $name to disappear" tm__member_link_absent "$name"
}

tm__member_link_absent() {
  ! ip -n "$(tm_ns "${TM_MEMBER_NSID[$1]}")" link show "${TM_MEMBER_IF[$1]}" >/dev/null 2>&1
}

# tm_member_alive NAME: fail if the member's process has exited.
tm_member_alive() {
  local name=$1 pid
  pid=${TM_MEMBER_PID[$name]:-}
  [[ -n "$pid" ]] || tm_fail "member $name is not running"
  if tm__wait_exit "$pid" 0; then
    tm__member_reaped "$name"
    tm_fail "member $name (pid $pid) exited unexpectedly with code $TM_EXIT_RC"
  fi
}

# tm_member_leave NAME [TIMEOUT]: `tunnelmesh-agent leave`; it must succeed and the running agent
# must exit 0 within TIMEOUT (default 5) seconds.
tm_member_leave() {
  local name=$1 timeout=${2:-5} pid out rc=0
  pid=${TM_MEMBER_PID[$name]:-}
  [[ -n "$pid" ]] || tm_fail "tm_member_leave: $name is not running"
  out=$(tm_in "${TM_MEMBER_NSID[$name]}" timeout 10 "$TM_AGENT" leave \
    --interface "${TM_MEMBER_IF[$name]}" --state-dir "$(tm_member_state "$name")" 2>&1) || rc=$?
  (( rc == 0 )) || tm_fail "'tunnelmesh-agent leave' for $name exited $rc: $out"
  tm__wait_exit "$pid" "$timeout" ||
    tm_fail "member $name (pid $pid) still runs ${timeout}s after 'leave' ($out)"
  tm__member_reaped "$name"
  echo "===== $name exited with code $TM_EXIT_RC after leave at $(date +%H:%M:%S.%3N) =====" \
    >>"$(tm_member_log "$name")"
  [[ "$TM_EXIT_RC" == 0 ]] || tm_fail "member $name exited with code $TM_EXIT_RC after leave"
  tm_log "member $name left: '$out', exit code 0"
}

# tm_mstatus NAME: the member's `status --json`.
tm_mstatus() {
  tm_in "${TM_MEMBER_NSID[$1]:?unknown member $1}" timeout 5 "$TM_AGENT" status --json \
    --interface "${TM_MEMBER_IF[$1]}" --state-dir "$(tm_member_state "$1")"
}

# tm_mjson NAME PYTHON_EXPR: evaluate PYTHON_EXPR with `s` bound to the member's status JSON and
# `peer(n)` returning the peer entry named n (None if absent); prints the result (JSON for lists,
# dicts, booleans and None). tm__mjson returns non-zero instead of failing the test.
tm_mjson() {
  tm__mjson "$@" || tm_fail "cannot read '$2' from the status of member $1"
}
tm__mjson() {
  local json
  json=$(tm_mstatus "$1") || { echo "'status --json' failed for member $1: $json"; return 1; }
  "$TM_PY" -c '
import json, sys
try:
    s = json.loads(sys.stdin.read())
except ValueError as e:
    sys.exit("status output is not JSON: %s" % e)
def peer(n):
    for p in s.get("peers", []):
        if p.get("name") == n:
            return p
    return None
try:
    v = eval(sys.argv[1])
except Exception as e:
    sys.exit("status JSON: %s fails: %r in %s" % (sys.argv[1], e, json.dumps(s)))
print(json.dumps(v) if isinstance(v, (dict, list, bool)) or v is None else v)
' "$2" <<<"$json"
}

# tm_member_ip NAME [4|6]: the member's own mesh IP of that family (default 4), without length.
tm_member_ip() {
  local fam=${2:-4} test="':' not in m"
  [[ "$fam" == 6 ]] && test="':' in m"
  tm_mjson "$1" "[m.split('/')[0] for m in s['self']['mesh_ips'] if $test][0]"
}

# tm_mpeer_get NAME PEER FIELD: FIELD of the peer named PEER in NAME's status.
tm_mpeer_get() {
  tm_mjson "$1" "peer('$2')['$3']"
}

tm__has_peer() { # NAME PEER
  local got
  got=$(tm__mjson "$1" "peer('$2') is not None") || return 1
  echo "$1 lists $2: $got"
  [[ "$got" == true ]]
}
tm__lacks_peer() {
  local got
  got=$(tm__mjson "$1" "peer('$2') is None") || return 1
  echo "$1 no longer lists $2: $got; peers: $(tm__mjson "$1" "[p['name'] for p in s['peers']]")"
  [[ "$got" == true ]]
}

# tm_member_wait_peer TIMEOUT NAME PEER / tm_member_wait_no_peer TIMEOUT NAME PEER
tm_member_wait_peer() {
  tm_wait "$1" "member $2 to list peer $3" tm__has_peer "$2" "$3"
}
tm_member_wait_no_peer() {
  tm_wait "$1" "member $2 to drop peer $3 from its peers" tm__lacks_peer "$2" "$3"
}

# tm_members_join NAME:NSID...: the start most scenarios share. Each member is created in its
# namespace (tm_member_new, default port) and started (tm_member_start, in the order given, each
# ready before the next starts); then every member must list every other one within 5 s. Members
# that need join options (--label, --alias) are started one by one instead.
tm_members_join() {
  local spec name peer names=()
  for spec in "$@"; do
    [[ "$spec" == ?*:?* ]] || tm_fail "tm_members_join: '$spec' is not NAME:NSID"
    tm_member_new "${spec%%:*}" "${spec#*:}"
    names+=("${spec%%:*}")
  done
  for name in "${names[@]}"; do tm_member_start "$name"; done
  for name in "${names[@]}"; do
    for peer in "${names[@]}"; do
      [[ "$name" == "$peer" ]] || tm_member_wait_peer 5 "$name" "$peer"
    done
  done
}

# tm_members_wait_ping TIMEOUT NAME...: from each named member's namespace, ping every other
# one's mesh IPv4 until one answers (tm_wait_ping), so that the tunnels are up before a scenario
# starts measuring.
tm_members_wait_ping() {
  local timeout=$1 name peer
  shift
  for name in "$@"; do
    for peer in "$@"; do
      [[ "$name" == "$peer" ]] ||
        tm_wait_ping "${TM_MEMBER_NSID[$name]:?unknown member $name}" "$(tm_member_ip "$peer" 4)" \
          "$timeout"
    done
  done
}

# tm_handshakes NAME PEER: the handshakes member NAME completed with PEER (status --json).
tm_handshakes() {
  tm_mjson "$1" "peer('$2')['handshakes']"
}
# tm__handshake_after NAME PEER UNIX_SECONDS: poll predicate, true once NAME's latest handshake
# with PEER is later than UNIX_SECONDS.
tm__handshake_after() {
  local t
  t=$(tm__mjson "$1" "peer('$2')['latest_handshake']") || return 1
  echo "$1 -> $2: latest handshake at $t (want > $3)"
  (( t > $3 ))
}

tm__path_is() { # NAME PEER PATH
  local got
  got=$(tm__mjson "$1" "(peer('$2') or {}).get('path')") || return 1
  echo "path of $2 on $1 is '$got', want '$3'"
  [[ "$got" == "$3" ]]
}

# tm_member_wait_path TIMEOUT NAME PEER PATH: poll until NAME reports PATH ("direct", "relay") for
# its peer PEER.
tm_member_wait_path() {
  local start
  start=$(tm__now_ms)
  tm_wait "$1" "member $2 to report path '$4' to $3" tm__path_is "$2" "$3" "$4"
  tm_log "$2 -> $3: path $4 after $(tm_elapsed_since "$start")s"
}

# tm_member_pubkey NAME: the member's public key, from its node key.
tm_member_pubkey() {
  "$TM_AGENT" pubkey <"$(tm_member_state "$1")/node.key"
}

# ---------------------------------------------------------------------------------------------
# Continuous traffic

declare -gA TM_FLOW_PID=() TM_FLOW_OUT=() TM_FLOW_SECS=() TM_FLOW_SPID=()

# tm_flow_ping_start FLOW NSID DST SECONDS [INTERVAL]: steady pings (default 10 a second) in the
# background for SECONDS.
tm_flow_ping_start() {
  local flow=$1 nsid=$2 dst=$3 secs=$4 interval=${5:-0.1} count
  count=$("$TM_PY" -c 'import sys; print(int(round(float(sys.argv[1]) / float(sys.argv[2]))))' \
    "$secs" "$interval")
  TM_FLOW_OUT[$flow]="$TM_WORK/flow-$flow.ping"
  TM_FLOW_SECS[$flow]=$secs
  tm_bg_in "$nsid" ping -n -O -D -i "$interval" -c "$count" -W 1 "$dst" >"${TM_FLOW_OUT[$flow]}" 2>&1
  TM_FLOW_PID[$flow]=$TM_BG_PID
  tm_log "flow $flow: $count pings $nsid -> $dst every ${interval}s"
}

# tm_flow_ping_check FLOW MAX_LOST: wait for the pings to finish; fail if more than MAX_LOST went
# unanswered. Leaves the loss in TM_FLOW_LOST.
tm_flow_ping_check() {
  local flow=$1 max=$2 pid out sent got
  pid=${TM_FLOW_PID[$flow]}
  tm__wait_exit "$pid" $(( ${TM_FLOW_SECS[$flow]%.*} + 15 )) ||
    tm_fail "flow $flow: ping did not finish in time"
  tm__bg_forget "$pid"
  out=${TM_FLOW_OUT[$flow]}
  sent=$(grep -o '[0-9]* packets transmitted' "$out" | awk '{print $1}')
  got=$(grep -o '[0-9]* received' "$out" | awk '{print $1}')
  [[ -n "$sent" && -n "$got" ]] || tm_fail "flow $flow: no ping summary in $out: $(tail -n 5 "$out")"
  TM_FLOW_LOST=$((sent - got))
  if (( TM_FLOW_LOST > max )); then
    grep -E 'no answer|Unreachable|error' "$out" | head -n 40 >&2 || true
    tm_fail "flow $flow: $TM_FLOW_LOST of $sent pings lost (at most $max allowed); see $out"
  fi
  tm_log "flow $flow: $got/$sent pings answered ($(grep -o 'rtt.*' "$out" || true))"
}

# tm_flow_iperf_start FLOW CLIENT_NSID SERVER_NSID SERVER_ADDR SECONDS [RATE [PORT]]: an iperf3
# TCP run at RATE (iperf3 -b, default 20M: a steady flow, not a saturation test) in the background.
tm_flow_iperf_start() {
  local flow=$1 client=$2 server=$3 addr=$4 secs=$5 rate=${6:-20M} port=${7:-5203}
  TM_FLOW_OUT[$flow]="$TM_WORK/flow-$flow.iperf.json"
  TM_FLOW_SECS[$flow]=$secs
  tm_bg_in "$server" timeout $((secs + 40)) iperf3 -s -1 -B "$addr" -p "$port" \
    >"${TM_FLOW_OUT[$flow]}.server" 2>&1
  TM_FLOW_SPID[$flow]=$TM_BG_PID
  tm_wait 5 "iperf3 server on [$addr]:$port in $server" tm__listening "$server" "$port"
  tm_bg_in "$client" timeout $((secs + 30)) iperf3 -c "$addr" -p "$port" -t "$secs" -b "$rate" \
    -i 1 -J >"${TM_FLOW_OUT[$flow]}" 2>&1
  TM_FLOW_PID[$flow]=$TM_BG_PID
  tm_log "flow $flow: iperf3 $client -> [$addr]:$port at $rate for ${secs}s"
}

# tm_flow_iperf_check FLOW: the run ended without error, and no 1-second interval carried nothing.
# Leaves the receiver's mean rate in TM_IPERF_BPS.
tm_flow_iperf_check() {
  local flow=$1 pid json summary
  pid=${TM_FLOW_PID[$flow]}
  json=${TM_FLOW_OUT[$flow]}
  tm__wait_exit "$pid" $(( TM_FLOW_SECS[$flow] + 35 )) ||
    tm_fail "flow $flow: iperf3 client did not finish in time"
  local rc=$TM_EXIT_RC
  tm__bg_forget "$pid"
  if ! tm__wait_exit "${TM_FLOW_SPID[$flow]}" 10; then
    kill -KILL "${TM_FLOW_SPID[$flow]}" 2>/dev/null || true
    tm__wait_exit "${TM_FLOW_SPID[$flow]}" 5 || true
  fi
  tm__bg_forget "${TM_FLOW_SPID[$flow]}"
  summary=$("$TM_PY" - "$json" <<'PYEOF'
import json, sys
try:
    r = json.load(open(sys.argv[1]))
except ValueError as e:
    sys.exit("iperf3 report is not JSON: %s" % e)
if r.get("error"):
    sys.exit("iperf3 error: " + r["error"])
ivs = [i["sum"] for i in r.get("intervals", [])]
stalls = [round(i["start"]) for i in ivs if i["bytes"] == 0 and i["seconds"] > 0.5]
rates = [i["bits_per_second"] for i in ivs if i["seconds"] > 0.5]
bps = r["end"]["sum_received"]["bits_per_second"]
rtx = r["end"].get("sum_sent", {}).get("retransmits", "?")
if stalls:
    sys.exit("iperf3 carried nothing in the 1-second intervals starting at %s s" % stalls)
if not bps > 0:
    sys.exit("iperf3 received nothing")
print("%d %.1f %.1f %s" % (bps, min(rates) / 1e6 if rates else 0, bps / 1e6, rtx))
PYEOF
) || tm_fail "flow $flow: $summary (client exit $rc); report in $json"
  local min mean rtx
  # shellcheck disable=SC2034 # TM_IPERF_BPS is the result, read by callers
  read -r TM_IPERF_BPS min mean rtx <<<"$summary"
  tm_log "flow $flow: iperf3 ok, mean ${mean} Mbit/s, slowest second ${min} Mbit/s," \
    "$rtx retransmits"
}

# ---------------------------------------------------------------------------------------------
# Diagnostics

tm_net_dump_diagnostics() {
  local name ns nsid lines=${TM_LOG_LINES:-200}
  echo >&2
  echo "################ mesh diagnostics for $TM_TEST ################" >&2
  for name in "${TM_MEMBER_ORDER[@]}"; do
    ns=$(tm_ns "${TM_MEMBER_NSID[$name]}")
    local state="not running"
    if [[ -n "${TM_MEMBER_PID[$name]:-}" ]]; then
      state="running as pid ${TM_MEMBER_PID[$name]}"
      if tm__wait_exit "${TM_MEMBER_PID[$name]}" 0; then
        state="EXITED unexpectedly with code $TM_EXIT_RC$( ((TM_EXIT_RC > 128)) &&
          echo " (signal $((TM_EXIT_RC - 128)))")"
        tm__member_reaped "$name"
      fi
    fi
    echo "======== member $name: namespace $ns, interface ${TM_MEMBER_IF[$name]}, $state," \
      "address ${TM_NET_ADDR[${TM_MEMBER_NSID[$name]}]:-?}" >&2
    echo "-------- $name log (last $lines lines of $(tm_member_log "$name"))" >&2
    tail -n "$lines" "$(tm_member_log "$name")" >&2 2>/dev/null
    if [[ -n "${TM_MEMBER_PID[$name]:-}" ]]; then
      echo "-------- $name status --json" >&2
      ip netns exec "$ns" timeout 5 "$TM_AGENT" status --json --interface "${TM_MEMBER_IF[$name]}" \
        --state-dir "$(tm_member_state "$name")" 2>&1 | "$TM_PY" -m json.tool >&2 2>&1
    fi
  done
  if [[ -n "$TM_COORD_NSID" ]]; then
    local cstate="not running"
    if [[ -n "$TM_COORD_PID" ]]; then
      cstate="running as pid $TM_COORD_PID"
      if tm__wait_exit "$TM_COORD_PID" 0; then
        cstate="EXITED unexpectedly with code $TM_EXIT_RC"
        tm__bg_forget "$TM_COORD_PID"
        TM_COORD_PID=""
      fi
    fi
    echo "======== coordinator: namespace $(tm_ns "$TM_COORD_NSID"), $TM_COORD_ADDR, $cstate" >&2
    echo "-------- coordinator log (last $lines lines of $(tm_coord_log))" >&2
    tail -n "$lines" "$(tm_coord_log)" >&2 2>/dev/null
    echo "-------- $(tm_coord_state)/members.json" >&2
    cat "$(tm_coord_state)/members.json" >&2 2>/dev/null
    echo "-------- coordinator sockets" >&2
    ip netns exec "$(tm_ns "$TM_COORD_NSID")" ss -tuanp >&2 2>&1
  fi
  for nsid in "${TM_SITE_ORDER[@]}"; do
    ns=$(tm_ns "$nsid")
    echo "======== site $nsid (${TM_SITE_NAT[$nsid]} NAT, ${TM_NET_ADDR[$nsid]}): nft ruleset" >&2
    ip netns exec "$ns" nft list ruleset >&2 2>&1
    echo "-------- $nsid conntrack (UDP and TCP)" >&2
    if command -v conntrack >/dev/null; then
      ip netns exec "$ns" conntrack -L 2>&1 | head -n 100 >&2
    else
      ip netns exec "$ns" cat /proc/net/nf_conntrack 2>&1 | head -n 100 >&2
    fi
  done
  echo "################ end of mesh diagnostics ################" >&2
}
