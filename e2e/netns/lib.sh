# shellcheck shell=bash
# lib.sh: building blocks for TunnelMesh end-to-end tests in network namespaces.
#
# A scenario script sources this file and calls `tm_init NAME BUDGET_SECONDS "$@"` first. From then
# on every namespace, daemon and helper process the script creates through these functions is
# recorded, and an EXIT trap tears all of it down, on success, on failure and on a time-budget
# overrun alike. On failure the trap first prints each daemon's log tail, each agent's status (text
# and JSON), `wg show` for wireguard-go peers and the addresses and routes of every namespace.
#
# Vocabulary:
#   namespace id  a short name (a, b, r1) local to the test; the real namespace is
#                 tme2e-<test>-<pid>-<id>, so parallel and leftover runs never collide.
#   node          one WireGuard endpoint process in a namespace: KIND `agent` (tunnelmesh-agent)
#                 or `wg` (wireguard-go configured with `wg`). Its keys, inner addresses, listen
#                 port and peers are kept here; tm_node_start writes its config and starts it.
#
# Why some choices:
#   - wireguard-go's UAPI socket lives in /var/run/wireguard/<ifname>.sock, which every namespace
#     shares, so its interface names carry the test's pid. Agents get their own --state-dir for the
#     same reason (their control socket is <state-dir>/<ifname>.sock).
#   - Everything waits by polling a condition with a deadline (tm_wait); fixed sleeps only pace
#     probes.
#   - Stale namespaces of earlier runs whose script pid is gone (a run killed by a CTest timeout
#     cannot clean up) are removed at tm_init.
#
# Environment:
#   TM_AGENT        path of tunnelmesh-agent (or pass it as the first script argument).
#   TM_LOG_LINES    log lines per daemon printed on failure (default 200).
#   TM_KEEP_WORK=1  keep the work directory (configs, logs, captures) even on success.
#   TM_AGENT_LOG_LEVEL, TM_WG_LOG_LEVEL
#                   daemon log levels (default debug and verbose; the benchmark lowers them).

set -Eeuo pipefail
shopt -s inherit_errexit

TM_LIB_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
TM_REPO_ROOT=$(cd "$TM_LIB_DIR/../.." && pwd)
TM_MTU=1420
# Debian's interpreter directly: a version manager's shim in PATH can cost 60 ms a call, and the
# status helpers run python for every reading.
if [[ -z "${TM_PY:-}" ]]; then
  if [[ -x /usr/bin/python3 ]]; then TM_PY=/usr/bin/python3; else TM_PY=python3; fi
fi
TM_NS_PREFIX=tme2e

declare -gA TM_NS=()          # namespace id -> namespace name
declare -ga TM_NS_ORDER=()    # namespace ids in creation order
declare -gA TM_NODE_KIND=() TM_NODE_NSID=() TM_NODE_IF=() TM_NODE_PORT=() TM_NODE_ADDRS=()
declare -gA TM_NODE_PID=() TM_NODE_STARTS=()
declare -ga TM_NODE_ORDER=()
declare -ga TM_BG_PIDS=()     # helper processes (iperf3 servers, nc, sniffers)
TM_WATCHDOG_PID=""
TM_TEST=""
TM_WORK=""
TM_IF_SEQ=0

# ---------------------------------------------------------------------------------------------
# Messages and assertions

tm_log() { printf '[%s %s] %s\n' "$(date +%H:%M:%S.%3N)" "${TM_TEST:-e2e}" "$*" >&2; }

# tm_fail MESSAGE...: print MESSAGE and exit 1 (the EXIT trap prints diagnostics and cleans up).
tm_fail() {
  printf '\n[%s %s] FAIL: %s\n' "$(date +%H:%M:%S.%3N)" "${TM_TEST:-e2e}" "$*" >&2
  exit 1
}

# tm_step TITLE: a visible marker between phases of a scenario.
tm_step() { printf '\n[%s %s] ==== %s\n' "$(date +%H:%M:%S.%3N)" "${TM_TEST:-e2e}" "$*" >&2; }

tm_expect_eq() { # DESCRIPTION GOT WANT
  [[ "$2" == "$3" ]] || tm_fail "$1: got '$2', want '$3'"
}

tm_expect_gt() { # DESCRIPTION GOT MIN  (integers)
  [[ "$2" =~ ^-?[0-9]+$ ]] || tm_fail "$1: got non-integer '$2'"
  (( $2 > $3 )) || tm_fail "$1: got $2, want > $3"
}

# tm_check_fail MESSAGE...: record a failed check and go on; tm_checks_done fails the scenario
# if any were recorded. For independent checks (counters) where one run should report them all.
declare -ga TM_CHECK_FAILURES=()
tm_check_fail() {
  TM_CHECK_FAILURES+=("$*")
  printf '[%s %s] CHECK FAILED: %s\n' "$(date +%H:%M:%S.%3N)" "${TM_TEST:-e2e}" "$*" >&2
}

tm_checks_done() {
  (( ${#TM_CHECK_FAILURES[@]} == 0 )) ||
    tm_fail "${#TM_CHECK_FAILURES[@]} check(s) failed (listed at the end, after the diagnostics)"
}

# ---------------------------------------------------------------------------------------------
# Setup and teardown

# tm_init NAME BUDGET_SECONDS [AGENT_PATH]: must be the first call of a scenario. Exits 77 (CTest
# skip) when not root; a missing or non-executable agent binary is a failure.
tm_init() {
  TM_TEST=$1
  local budget=$2
  shift 2
  if [[ $EUID -ne 0 ]]; then
    echo "SKIP: $TM_TEST needs root (network namespaces, TUN devices)" >&2
    exit 77
  fi
  TM_AGENT=${1:-${TM_AGENT:-$TM_REPO_ROOT/build/bin/tunnelmesh-agent}}
  [[ "$TM_AGENT" == /* ]] || TM_AGENT="$PWD/$TM_AGENT"
  local tool
  for tool in ip wg wireguard-go "$TM_PY" ping nc iperf3 ss timeout sha256sum; do
    command -v "$tool" >/dev/null || tm_fail "required tool '$tool' is not installed"
  done
  tm__reap_stale
  TM_WORK=$(mktemp -d "/tmp/$TM_NS_PREFIX-$TM_TEST-$$.XXXXXX")
  trap tm__on_exit EXIT
  trap 'tm_fail "interrupted by SIGINT"' INT
  trap 'tm_fail "terminated by SIGTERM"' TERM
  # shellcheck disable=SC2064 # the budget is fixed now
  trap "tm_fail \"time budget of ${budget}s exceeded\"" USR1
  trap 'tm__on_err "$LINENO" "$BASH_COMMAND" "$?"' ERR
  # The watchdog's stdio goes to /dev/null so a lingering sleep never holds CTest's output pipe.
  ( trap 'kill "$s" 2>/dev/null; exit 0' TERM
    sleep "$budget" & s=$!
    wait "$s" && kill -USR1 "$$" ) >/dev/null 2>&1 &
  TM_WATCHDOG_PID=$!
  tm_log "work directory $TM_WORK, agent $TM_AGENT"
}

# tm_require_agent: fail unless the agent binary exists (scenarios call it after tm_init).
tm_require_agent() {
  [[ -x "$TM_AGENT" ]] || tm_fail "agent binary '$TM_AGENT' does not exist or is not executable" \
    "(build it with 'cmake -S . -B build -G Ninja && ninja -C build', or set TM_AGENT)"
}

tm__on_err() { # LINE COMMAND STATUS
  printf '[%s %s] command failed (status %s) at %s line %s: %s\n' "$(date +%H:%M:%S.%3N)" \
    "${TM_TEST:-e2e}" "$3" "${BASH_SOURCE[1]##*/}" "$1" "$2" >&2
}

tm__on_exit() {
  local rc=$?
  trap - EXIT ERR INT TERM USR1
  set +eE
  if [[ -n "$TM_WATCHDOG_PID" ]]; then kill "$TM_WATCHDOG_PID" 2>/dev/null; fi
  if (( rc != 0 )); then
    tm_dump_diagnostics
    if (( ${#TM_CHECK_FAILURES[@]} > 0 )); then
      printf '\nfailed checks:\n' >&2
      printf '  - %s\n' "${TM_CHECK_FAILURES[@]}" >&2
    fi
  fi
  tm__teardown
  if (( rc == 0 )); then
    [[ "${TM_KEEP_WORK:-0}" == 1 ]] || rm -rf "$TM_WORK"
    printf '\n[%s] PASS\n' "$TM_TEST" >&2
  else
    printf '\n[%s] FAILED (exit %s); configs, logs and captures kept in %s\n' "$TM_TEST" "$rc" \
      "$TM_WORK" >&2
  fi
  exit "$rc"
}

tm__teardown() {
  local node pid nsid ns
  for node in "${TM_NODE_ORDER[@]}"; do
    pid=${TM_NODE_PID[$node]:-}
    [[ -n "$pid" ]] && kill -TERM "$pid" 2>/dev/null
  done
  for pid in "${TM_BG_PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null; done
  for node in "${TM_NODE_ORDER[@]}"; do
    pid=${TM_NODE_PID[$node]:-}
    if [[ -n "$pid" ]] && ! tm__wait_exit "$pid" 5; then
      kill -KILL "$pid" 2>/dev/null
      wait "$pid" 2>/dev/null
    fi
  done
  for pid in "${TM_BG_PIDS[@]}"; do
    kill -KILL "$pid" 2>/dev/null
    wait "$pid" 2>/dev/null
  done
  for nsid in "${TM_NS_ORDER[@]}"; do
    ns=${TM_NS[$nsid]}
    tm__kill_ns_pids "$ns"
    ip netns del "$ns" 2>/dev/null
  done
}

# Processes still inside a namespace of ours were started by this harness; end them by pid.
tm__kill_ns_pids() {
  local ns=$1 pid
  for pid in $(ip netns pids "$ns" 2>/dev/null); do kill -KILL "$pid" 2>/dev/null; done
}

# Remove namespaces left behind by runs whose script process no longer exists.
tm__reap_stale() {
  local ns pid
  for ns in $(ip netns list 2>/dev/null | awk '{print $1}'); do
    [[ "$ns" =~ ^${TM_NS_PREFIX}-.*-([0-9]+)-[^-]+$ ]] || continue
    pid=${BASH_REMATCH[1]}
    if [[ ! -d /proc/$pid ]]; then
      echo "removing stale namespace $ns of finished run $pid" >&2
      tm__kill_ns_pids "$ns"
      ip netns del "$ns" 2>/dev/null || true
    fi
  done
}

# tm__wait_exit PID TIMEOUT: wait up to TIMEOUT seconds for a child of this shell to exit; on exit
# returns 0 with its exit code in TM_EXIT_RC, else returns 1. Must run in the main shell (not in
# $(...)), since only the parent can reap a child. A zombie still answers `kill -0`, so the state
# is read from /proc; bash may already have reaped it, in which case `wait` returns the saved code.
tm__wait_exit() {
  local pid=$1 deadline state
  deadline=$(tm__deadline "$2")
  while :; do
    state=$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null || true)
    if [[ -z "$state" || "$state" == Z ]]; then
      TM_EXIT_RC=0
      wait "$pid" 2>/dev/null || TM_EXIT_RC=$?
      return 0
    fi
    tm__past "$deadline" && return 1
    sleep 0.05
  done
}

# ---------------------------------------------------------------------------------------------
# Time and polling

tm__deadline() { echo $(( ${EPOCHREALTIME/./} / 1000 + $1 * 1000 )); } # ms since epoch
tm__now_ms() { echo $(( ${EPOCHREALTIME/./} / 1000 )); }
tm__past() { (( $(tm__now_ms) > $1 )); }

# tm_poll TIMEOUT COMMAND...: poll COMMAND every 0.1 s until it succeeds (return 0) or TIMEOUT
# seconds pass (return 1). The output of the last attempt is left in $TM_WORK/poll.out.
tm_poll() {
  local deadline
  deadline=$(tm__deadline "$1")
  shift
  while :; do
    if "${@}" >"$TM_WORK/poll.out" 2>&1; then return 0; fi
    tm__past "$deadline" && return 1
    sleep 0.1
  done
}

# tm_wait TIMEOUT DESCRIPTION COMMAND...: tm_poll, failing after TIMEOUT seconds with the output
# of the last attempt.
tm_wait() {
  local timeout=$1 desc=$2
  shift 2
  if ! tm_poll "$timeout" "$@"; then
    echo "--- last attempt of: $*" >&2
    tail -n 20 "$TM_WORK/poll.out" >&2
    tm_fail "timed out after ${timeout}s waiting for $desc"
  fi
}

# tm_elapsed_since START_MS: seconds (with one decimal) since START_MS from tm__now_ms.
tm_elapsed_since() {
  local d=$(( $(tm__now_ms) - $1 ))
  printf '%d.%d' $(( d / 1000 )) $(( d % 1000 / 100 ))
}

# ---------------------------------------------------------------------------------------------
# Namespaces and links

# tm_ns_new ID: create namespace tme2e-<test>-<pid>-ID with loopback up and reverse-path
# filtering off (a host reached over a second link must answer).
tm_ns_new() {
  local id=$1 ns
  ns="$TM_NS_PREFIX-$TM_TEST-$$-$id"
  [[ -z "${TM_NS[$id]:-}" ]] || tm_fail "namespace id '$id' already exists"
  ip netns add "$ns" || tm_fail "cannot create namespace $ns"
  TM_NS[$id]=$ns
  TM_NS_ORDER+=("$id")
  ip -n "$ns" link set lo up
  ip netns exec "$ns" sysctl -qw net.ipv4.conf.all.rp_filter=0 net.ipv4.conf.default.rp_filter=0
}

tm_ns() { echo "${TM_NS[$1]:?unknown namespace id $1}"; }

# tm_in ID COMMAND...: run COMMAND inside namespace ID.
tm_in() {
  local ns
  ns=$(tm_ns "$1")
  shift
  ip netns exec "$ns" "$@"
}

# tm_veth ID_A IF_A ID_B IF_B "ADDRS_A" "ADDRS_B": a veth pair between two namespaces, both ends up,
# each end given the space-separated CIDRs (IPv6 ones with nodad so they are usable at once).
tm_veth() {
  local ida=$1 ifa=$2 idb=$3 ifb=$4 addrs_a=$5 addrs_b=$6
  ip link add "$ifa" netns "$(tm_ns "$ida")" type veth peer name "$ifb" netns "$(tm_ns "$idb")" ||
    tm_fail "cannot create veth $ifa/$ifb"
  # shellcheck disable=SC2086 # a space-separated list of CIDRs
  tm_addr_add "$ida" "$ifa" $addrs_a
  # shellcheck disable=SC2086
  tm_addr_add "$idb" "$ifb" $addrs_b
  ip -n "$(tm_ns "$ida")" link set "$ifa" up
  ip -n "$(tm_ns "$idb")" link set "$ifb" up
}

# tm_addr_add ID IF CIDR...: add addresses (IPv6 without duplicate address detection).
tm_addr_add() {
  local id=$1 dev=$2 cidr
  shift 2
  for cidr in "$@"; do
    if [[ "$cidr" == *:* ]]; then
      ip -n "$(tm_ns "$id")" addr add "$cidr" dev "$dev" nodad
    else
      ip -n "$(tm_ns "$id")" addr add "$cidr" dev "$dev"
    fi
  done
}

tm_addr_del() { # ID IF CIDR...
  local id=$1 dev=$2 cidr
  shift 2
  for cidr in "$@"; do ip -n "$(tm_ns "$id")" addr del "$cidr" dev "$dev"; done
}

# ---------------------------------------------------------------------------------------------
# Nodes: an agent or a wireguard-go peer

# tm_node_new NODE KIND NSID PORT "INNER_CIDRS": KIND is agent or wg; INNER_CIDRS is the
# wg-quick Address value (e.g. "10.44.0.1/24, fd44::1/64"). Generates the node's key pair.
tm_node_new() {
  local node=$1 kind=$2 nsid=$3 port=$4 addrs=$5
  [[ "$kind" == agent || "$kind" == wg ]] || tm_fail "node kind must be agent or wg, not '$kind'"
  [[ -z "${TM_NODE_KIND[$node]:-}" ]] || tm_fail "node '$node' already exists"
  tm_ns "$nsid" >/dev/null
  TM_NODE_KIND[$node]=$kind
  TM_NODE_NSID[$node]=$nsid
  TM_NODE_PORT[$node]=$port
  TM_NODE_ADDRS[$node]=$addrs
  TM_NODE_STARTS[$node]=0
  TM_IF_SEQ=$((TM_IF_SEQ + 1))
  if [[ "$kind" == agent ]]; then
    TM_NODE_IF[$node]="tm$TM_IF_SEQ"
  else
    TM_NODE_IF[$node]="wg$$x$TM_IF_SEQ" # globally unique: see the header
  fi
  TM_NODE_ORDER+=("$node")
  (umask 077 && wg genkey >"$TM_WORK/$node.key")
  wg pubkey <"$TM_WORK/$node.key" >"$TM_WORK/$node.pub"
  : >"$TM_WORK/$node.peers"
  mkdir -p "$TM_WORK/$node.state"
}

tm_pub() { cat "$TM_WORK/$1.pub"; }
tm_if() { echo "${TM_NODE_IF[$1]:?unknown node $1}"; }
tm_port() { echo "${TM_NODE_PORT[$1]:?unknown node $1}"; }
tm_node_ns() { tm_ns "${TM_NODE_NSID[$1]:?unknown node $1}"; }
tm_node_log() { echo "$TM_WORK/$1.log"; }

# tm_host_routes NODE: the node's inner addresses as host prefixes, for a peer's AllowedIPs.
tm_host_routes() {
  local a out=()
  for a in ${TM_NODE_ADDRS[$1]//,/ }; do
    a=${a%/*}
    if [[ "$a" == *:* ]]; then out+=("$a/128"); else out+=("$a/32"); fi
  done
  local IFS=,
  local joined="${out[*]}"
  echo "${joined//,/, }"
}

# tm_psk_new NAME: a preshared key file shared by the two ends of a pair.
tm_psk_new() { (umask 077 && wg genpsk >"$TM_WORK/$1.psk"); }

# tm_node_peer NODE PEER [endpoint=HOST:PORT] [allowed=CIDRS] [keepalive=SECONDS] [psk=NAME]:
# add PEER to NODE's configuration. allowed defaults to PEER's inner host addresses.
tm_node_peer() {
  local node=$1 peer=$2 endpoint="" allowed="" keepalive="" psk="" kv
  shift 2
  for kv in "$@"; do
    case "$kv" in
      endpoint=*) endpoint=${kv#endpoint=} ;;
      allowed=*) allowed=${kv#allowed=} ;;
      keepalive=*) keepalive=${kv#keepalive=} ;;
      psk=*) psk=${kv#psk=} ;;
      *) tm_fail "tm_node_peer: unknown option '$kv'" ;;
    esac
  done
  [[ -n "$allowed" ]] || allowed=$(tm_host_routes "$peer")
  printf '%s|%s|%s|%s|%s\n' "$peer" "$endpoint" "$allowed" "$keepalive" "$psk" \
    >>"$TM_WORK/$node.peers"
}

# Writes the wg-quick style config the agent reads ($1.conf) and the `wg setconf` subset for
# wireguard-go ($1.wg.conf).
tm__write_configs() {
  local node=$1 conf="$TM_WORK/$1.conf" wgconf="$TM_WORK/$1.wg.conf"
  local peer endpoint allowed keepalive psk
  : >"$conf"
  : >"$wgconf"
  chmod 600 "$conf" "$wgconf" # they hold the private key
  {
    echo "[Interface]"
    echo "PrivateKey = $(cat "$TM_WORK/$node.key")"
    echo "ListenPort = ${TM_NODE_PORT[$node]}"
    echo "Address = ${TM_NODE_ADDRS[$node]}"
    echo "MTU = $TM_MTU"
  } >"$conf"
  {
    echo "[Interface]"
    echo "PrivateKey = $(cat "$TM_WORK/$node.key")"
    echo "ListenPort = ${TM_NODE_PORT[$node]}"
  } >"$wgconf"
  while IFS='|' read -r peer endpoint allowed keepalive psk; do
    {
      echo
      echo "[Peer]"
      echo "PublicKey = $(tm_pub "$peer")"
      [[ -z "$psk" ]] || echo "PresharedKey = $(cat "$TM_WORK/$psk.psk")"
      [[ -z "$endpoint" ]] || echo "Endpoint = $endpoint"
      echo "AllowedIPs = $allowed"
      [[ -z "$keepalive" ]] || echo "PersistentKeepalive = $keepalive"
    } | tee -a "$wgconf" >>"$conf"
  done <"$TM_WORK/$node.peers"
}

# tm_node_start NODE: write the node's config and start it; returns once the interface is up
# and (for an agent) its control socket answers `status --json`.
tm_node_start() {
  local node=$1 ns ifname log pid n
  ns=$(tm_node_ns "$node")
  ifname=$(tm_if "$node")
  log=$(tm_node_log "$node")
  [[ -z "${TM_NODE_PID[$node]:-}" ]] || tm_fail "node $node is already running"
  tm__write_configs "$node"
  n=$(( TM_NODE_STARTS[$node] + 1 ))
  TM_NODE_STARTS[$node]=$n
  printf '\n===== start #%s of %s (%s) in %s at %s =====\n' "$n" "$node" "${TM_NODE_KIND[$node]}" \
    "$ns" "$(date +%H:%M:%S.%3N)" >>"$log"
  if [[ "${TM_NODE_KIND[$node]}" == agent ]]; then
    tm_require_agent
    ip netns exec "$ns" "$TM_AGENT" --config "$TM_WORK/$node.conf" --interface "$ifname" \
      --state-dir "$TM_WORK/$node.state" --log-level "${TM_AGENT_LOG_LEVEL:-debug}" >>"$log" 2>&1 &
    pid=$!
    TM_NODE_PID[$node]=$pid
    tm__wait_ready "$node" 10 tm__agent_ready "$node"
  else
    # A killed wireguard-go leaves its socket behind; the name is ours alone (it holds our pid).
    rm -f "/var/run/wireguard/$ifname.sock"
    WG_PROCESS_FOREGROUND=1 LOG_LEVEL="${TM_WG_LOG_LEVEL:-verbose}" \
      ip netns exec "$ns" wireguard-go "$ifname" >>"$log" 2>&1 &
    pid=$!
    TM_NODE_PID[$node]=$pid
    tm__wait_ready "$node" 10 test -S "/var/run/wireguard/$ifname.sock"
    tm__wg_configure "$node"
  fi
  tm_log "started $node (${TM_NODE_KIND[$node]}, pid $pid, interface $ifname, port" \
    "${TM_NODE_PORT[$node]}, key $(tm_pub "$node" | cut -c1-8)...)"
}

# Polls READY... for node startup; fails at once, with the log, if the process dies meanwhile.
tm__wait_ready() {
  local node=$1 timeout=$2 deadline pid
  shift 2
  pid=${TM_NODE_PID[$node]}
  deadline=$(tm__deadline "$timeout")
  while ! "$@" >/dev/null 2>&1; do
    if tm__wait_exit "$pid" 0; then
      TM_NODE_PID[$node]=""
      tm_fail "$node (${TM_NODE_KIND[$node]}) exited with code $TM_EXIT_RC during startup" \
        "(its log is in the diagnostics below)"
    fi
    tm__past "$deadline" && tm_fail "$node did not become ready within ${timeout}s"
    sleep 0.1
  done
}

tm__agent_ready() {
  local node=$1
  local link
  link=$(ip -n "$(tm_node_ns "$node")" link show "$(tm_if "$node")" 2>/dev/null) || return 1
  [[ "$link" == *,UP* ]] && tm_status_json "$node" >/dev/null
}

tm__wg_configure() {
  local node=$1 ns ifname a peer endpoint allowed keepalive psk
  ns=$(tm_node_ns "$node")
  ifname=$(tm_if "$node")
  ip netns exec "$ns" wg setconf "$ifname" "$TM_WORK/$node.wg.conf" ||
    tm_fail "wg setconf failed for $node"
  for a in ${TM_NODE_ADDRS[$node]//,/ }; do
    tm_addr_add "${TM_NODE_NSID[$node]}" "$ifname" "$a"
  done
  ip -n "$ns" link set "$ifname" mtu "$TM_MTU" up
  # As wg-quick does: a route for each allowed prefix (replace, as the subnet route may exist).
  while IFS='|' read -r peer endpoint allowed keepalive psk; do
    for a in ${allowed//,/ }; do ip -n "$ns" route replace "$a" dev "$ifname"; done
  done <"$TM_WORK/$node.peers"
}

# tm_node_stop NODE: SIGTERM, then require exit within 10 s. An agent must exit with code 0 and
# remove its interface; wireguard-go's exit code is not checked.
tm_node_stop() {
  local node=$1 pid rc
  pid=${TM_NODE_PID[$node]:-}
  [[ -n "$pid" ]] || tm_fail "tm_node_stop: $node is not running"
  kill -TERM "$pid" 2>/dev/null || true
  tm__wait_exit "$pid" 10 || tm_fail "$node (pid $pid) did not exit within 10s of SIGTERM"
  rc=$TM_EXIT_RC
  TM_NODE_PID[$node]=""
  echo "===== $node exited with code $rc after SIGTERM at $(date +%H:%M:%S.%3N) =====" \
    >>"$(tm_node_log "$node")"
  if [[ "${TM_NODE_KIND[$node]}" == agent ]]; then
    [[ "$rc" == 0 ]] || tm_fail "agent $node exited with code $rc after SIGTERM (want 0)"
    tm_wait 5 "agent $node to remove interface $(tm_if "$node")" tm__link_absent "$node"
  fi
  tm_log "stopped $node (exit code $rc)"
}

# tm_node_kill NODE: SIGKILL (a crash); waits until the process is gone and its TUN with it.
tm_node_kill() {
  local node=$1 pid
  pid=${TM_NODE_PID[$node]:-}
  [[ -n "$pid" ]] || tm_fail "tm_node_kill: $node is not running"
  kill -KILL "$pid"
  tm__wait_exit "$pid" 10 || tm_fail "$node (pid $pid) survived SIGKILL for 10s"
  TM_NODE_PID[$node]=""
  echo "===== $node killed with SIGKILL at $(date +%H:%M:%S.%3N) =====" >>"$(tm_node_log "$node")"
  tm_wait 5 "interface $(tm_if "$node") of killed $node to disappear" tm__link_absent "$node"
  tm_log "killed $node"
}

tm__link_absent() { ! ip -n "$(tm_node_ns "$1")" link show "$(tm_if "$1")" >/dev/null 2>&1; }

# tm_node_alive NODE: fail with the log if the node's process has exited.
tm_node_alive() {
  local node=$1 pid
  pid=${TM_NODE_PID[$node]:-}
  [[ -n "$pid" ]] || tm_fail "$node is not running"
  if tm__wait_exit "$pid" 0; then
    TM_NODE_PID[$node]=""
    tm_fail "$node (${TM_NODE_KIND[$node]}, pid $pid) exited unexpectedly with code $TM_EXIT_RC"
  fi
}

# ---------------------------------------------------------------------------------------------
# Status

# tm_status_json NODE: the agent's `status --json` output.
tm_status_json() {
  local node=$1
  [[ "${TM_NODE_KIND[$node]}" == agent ]] || tm_fail "tm_status_json: $node is not an agent"
  ip netns exec "$(tm_node_ns "$node")" timeout 5 "$TM_AGENT" status --json \
    --interface "$(tm_if "$node")" --state-dir "$TM_WORK/$node.state"
}

# tm_json NODE PYTHON_EXPR: evaluate PYTHON_EXPR with `s` bound to the agent's status JSON and
# `pub(n)` returning node n's public key; prints the result (JSON for lists and dicts).
tm_json() {
  local node=$1 expr=$2 json
  json=$(tm_status_json "$node") || tm_fail "'status --json' failed for $node"
  TM_KEYS_DIR=$TM_WORK "$TM_PY" -c '
import json, os, sys
def pub(n):
    return open(os.path.join(os.environ["TM_KEYS_DIR"], n + ".pub")).read().strip()
try:
    s = json.loads(sys.stdin.read())
except ValueError as e:
    sys.exit("status output is not JSON: %s" % e)
try:
    v = eval(sys.argv[1])
except Exception as e:
    sys.exit("status JSON: %s fails: %r" % (sys.argv[1], e))
print(json.dumps(v) if isinstance(v, (dict, list, bool)) or v is None else v)
' "$expr" <<<"$json" || tm_fail "cannot read '$expr' from the status of $node: $json"
}

# tm_drop NODE REASON: one drop counter of an agent.
tm_drop() { tm_json "$1" "int(s['drops']['$2'])"; }

# tm_drops NODE: all drop counters of an agent as JSON.
tm_drops() { tm_json "$1" "s['drops']"; }

# tm_peer_get NODE PEER FIELD: FIELD of PEER as NODE sees it. For an agent any field of the status
# JSON peer object; for wireguard-go (`wg show dump`) endpoint, latest_handshake, rx_bytes,
# tx_bytes, allowed_ips. An unset endpoint reads as "".
tm_peer_get() {
  local node=$1 peer=$2 field=$3 line
  if [[ "${TM_NODE_KIND[$node]}" == agent ]]; then
    tm_json "$node" "[p for p in s['peers'] if p['public_key'] == pub('$peer')][0]['$field']"
    return
  fi
  line=$(ip netns exec "$(tm_node_ns "$node")" wg show "$(tm_if "$node")" dump |
    awk -v k="$(tm_pub "$peer")" '$1 == k') || tm_fail "wg show failed for $node"
  [[ -n "$line" ]] || tm_fail "$node has no peer $peer in wg show"
  # shellcheck disable=SC2086 # split the dump line into its tab-separated fields
  set -- $line
  case "$field" in
    endpoint) [[ "$3" == "(none)" ]] && echo "" || echo "$3" ;;
    allowed_ips) echo "$4" ;;
    latest_handshake) echo "$5" ;;
    rx_bytes) echo "$6" ;;
    tx_bytes) echo "$7" ;;
    *) tm_fail "tm_peer_get: field '$field' is not available from wireguard-go" ;;
  esac
}

# tm_wait_peer_field TIMEOUT NODE PEER FIELD WANT: poll until FIELD equals WANT.
tm_wait_peer_field() {
  local timeout=$1 node=$2 peer=$3 field=$4 want=$5
  tm_wait "$timeout" "$node to report $field of $peer = '$want'" \
    tm__peer_field_is "$node" "$peer" "$field" "$want"
}
tm__peer_field_is() {
  local got
  got=$(tm_peer_get "$1" "$2" "$3") || return 1
  echo "$3 of $2 on $1 is '$got'"
  [[ "$got" == "$4" ]]
}

# tm_expect_handshake NODE PEER [SINCE_UNIX]: NODE reports a handshake with PEER (at or after
# SINCE_UNIX when given).
tm_expect_handshake() {
  local node=$1 peer=$2 since=${3:-1} hs
  hs=$(tm_peer_get "$node" "$peer" latest_handshake)
  [[ "$hs" =~ ^[0-9]+$ ]] || tm_fail "$node: latest_handshake of $peer is '$hs', not a number"
  (( hs >= since )) || tm_fail "$node: latest_handshake of $peer is $hs, want >= $since"
}

# tm_expect_traffic NODE PEER: an agent shows a handshake and non-zero rx/tx bytes and packets.
tm_expect_traffic() {
  local node=$1 peer=$2 f v
  tm_expect_handshake "$node" "$peer"
  for f in rx_bytes tx_bytes rx_packets tx_packets handshakes; do
    v=$(tm_peer_get "$node" "$peer" "$f")
    tm_expect_gt "$node: $f of peer $peer" "$v" 0
  done
}

# tm_endpoint ADDR PORT: HOST:PORT as WireGuard writes it (IPv6 in brackets).
tm_endpoint() { if [[ "$1" == *:* ]]; then echo "[$1]:$2"; else echo "$1:$2"; fi; }

# tm_expect_self NODE: the agent's status names its own key, listen port and inner addresses.
tm_expect_self() {
  local node=$1 a
  tm_expect_eq "$node: self.public_key" "$(tm_json "$node" "s['self']['public_key']")" \
    "$(tm_pub "$node")"
  tm_expect_eq "$node: self.listen_port" "$(tm_json "$node" "s['self']['listen_port']")" \
    "$(tm_port "$node")"
  for a in ${TM_NODE_ADDRS[$node]//,/ }; do
    tm_expect_eq "$node: self.mesh_ips has ${a%/*}" \
      "$(tm_json "$node" "any(m.split('/')[0] == '${a%/*}' for m in s['self']['mesh_ips'])")" true
  done
}

# tm_expect_netconfig NODE: within 5 s, the agent's TUN has the configured MTU, addresses and
# link state, and every AllowedIPs prefix of every peer is routed into it.
tm_expect_netconfig() {
  tm_wait 5 "$1 to configure $(tm_if "$1") as its config says" tm__netconfig_ok "$1"
}
tm__netconfig_ok() {
  local node=$1 ns ifname a peer endpoint allowed keepalive psk dev link addrs
  ns=$(tm_node_ns "$node")
  ifname=$(tm_if "$node")
  link=$(ip -n "$ns" link show "$ifname") || { echo "no interface $ifname"; return 1; }
  [[ "$link" == *" mtu $TM_MTU "* ]] ||
    { echo "$ifname does not have MTU $TM_MTU: $link"; return 1; }
  [[ "$link" == *,UP* ]] || { echo "$ifname is not up: $link"; return 1; }
  addrs=" $(ip -n "$ns" -br addr show dev "$ifname") "
  for a in ${TM_NODE_ADDRS[$node]//,/ }; do
    [[ "$addrs" == *" $a "* ]] || { echo "$ifname lacks address $a: $addrs"; return 1; }
  done
  while IFS='|' read -r peer endpoint allowed keepalive psk; do
    for a in ${allowed//,/ }; do
      dev=$(ip -n "$ns" route get "${a%/*}" 2>&1 | grep -o 'dev [^ ]*' | head -n1 || true)
      [[ "$dev" == "dev $ifname" ]] ||
        { echo "allowed IP $a of peer $peer is not routed into $ifname ($dev)"; return 1; }
    done
  done <"$TM_WORK/$node.peers"
}

# tm_expect_status_text NODE: the human-readable `status` succeeds and names every peer's key.
tm_expect_status_text() {
  local node=$1 out peer rest
  out=$(ip netns exec "$(tm_node_ns "$node")" timeout 5 "$TM_AGENT" status \
    --interface "$(tm_if "$node")" --state-dir "$TM_WORK/$node.state" 2>&1) ||
    tm_fail "$node: 'status' failed: $out"
  while IFS='|' read -r peer rest; do
    grep -qF "$(tm_pub "$peer")" <<<"$out" ||
      tm_fail "$node: 'status' does not show peer $peer ($(tm_pub "$peer")):"$'\n'"$out"
  done <"$TM_WORK/$node.peers"
}

# tm_expect_no_drops NODE REASON...: those drop counters are all zero.
tm_expect_no_drops() {
  local node=$1 r v
  shift
  for r in "$@"; do
    v=$(tm_drop "$node" "$r")
    [[ "$v" == 0 ]] || tm_fail "$node: drops.$r is $v, want 0 (drops: $(tm_drops "$node"))"
  done
}

# tm_drop_delta NODE SNAPSHOT REASON: how much drops.REASON grew since SNAPSHOT (a tm_drops
# output).
tm_drop_delta() {
  local now
  now=$(tm_drop "$1" "$3")
  "$TM_PY" -c '
import json, sys
print(int(sys.argv[2]) - int(json.loads(sys.argv[1])[sys.argv[3]]))' "$2" "$now" "$3" ||
    tm_fail "snapshot has no drops.$3: $2"
}

# tm_drops_grown NODE SNAPSHOT [IGNORED_REASON...]: the drop counters that changed since
# SNAPSHOT, as JSON with sorted keys, leaving out IGNORED_REASONs.
tm_drops_grown() {
  local now
  now=$(tm_drops "$1")
  "$TM_PY" -c '
import json, sys
old, new, ignored = json.loads(sys.argv[1]), json.loads(sys.argv[2]), sys.argv[3:]
print(json.dumps({k: v - old.get(k, 0) for k, v in sorted(new.items())
                  if v != old.get(k, 0) and k not in ignored}))
' "$2" "$now" "${@:3}" || tm_fail "cannot compare drop counters: $2 / $now"
}

tm__drop_delta_ge() {
  local d
  d=$(tm_drop_delta "$1" "$2" "$3") || return 1
  echo "drops.$3 of $1 grew by $d, want >= $4 (now: $(tm_drops "$1"))"
  (( d >= $4 ))
}

# ---------------------------------------------------------------------------------------------
# Traffic

# tm_ping_once NSID DST: one echo request with a one-second reply deadline.
tm_ping_once() { tm_in "$1" ping -n -c 1 -W 1 "$2"; }

# tm_wait_ping NSID DST TIMEOUT: ping until one reply (the first packets start the handshake).
tm_wait_ping() {
  local nsid=$1 dst=$2 timeout=$3 start
  start=$(tm__now_ms)
  tm_wait "$timeout" "ping $dst from $nsid to succeed" tm_ping_once "$nsid" "$dst"
  tm_log "ping $nsid -> $dst answered after $(tm_elapsed_since "$start")s"
}

# tm_ping NSID DST [COUNT]: COUNT pings, all of which must be answered.
tm_ping() {
  local nsid=$1 dst=$2 count=${3:-5} out
  out=$(tm_in "$nsid" ping -n -c "$count" -i 0.2 -W 2 "$dst" 2>&1) || true
  if ! grep -q " $count received" <<<"$out"; then
    echo "$out" >&2
    tm_fail "ping $dst from $nsid: not all of $count replies received"
  fi
  tm_log "ping $nsid -> $dst: $count/$count ($(grep -o 'rtt.*' <<<"$out" || true))"
}

# tm_bg_in NSID COMMAND...: start a helper process inside a namespace in the background, recorded
# for teardown; its pid is left in TM_BG_PID. Redirect its output at the call site. `ip netns exec`
# execs COMMAND, so the pid is COMMAND's own.
tm_bg_in() {
  local ns
  ns=$(tm_ns "$1")
  shift
  ip netns exec "$ns" "$@" &
  TM_BG_PID=$!
  TM_BG_PIDS+=("$TM_BG_PID")
}

tm__listening() { # NSID PORT
  local out
  out=$(tm_in "$1" ss -Hltn "sport = :$2") && [[ "$out" == *LISTEN* ]]
}

# tm_tcp_transfer FROM_NSID TO_NSID TO_ADDR MEGABYTES: send MEGABYTES of random data over TCP with
# nc and compare SHA-256 digests on both ends.
tm_tcp_transfer() {
  local from=$1 to=$2 addr=$3 mb=$4 port=5201 src dst rc rpid start sum_src sum_dst
  src="$TM_WORK/tcp-src.bin"
  dst="$TM_WORK/tcp-dst.bin"
  head -c "$((mb * 1048576))" /dev/urandom >"$src"
  rm -f "$dst"
  tm_bg_in "$to" timeout 60 nc -l -n "$addr" "$port" >"$dst" </dev/null
  rpid=$TM_BG_PID
  tm_wait 5 "nc to listen on [$addr]:$port in $to" tm__listening "$to" "$port"
  start=$(tm__now_ms)
  rc=0
  tm_in "$from" timeout 60 nc -n -N "$addr" "$port" <"$src" || rc=$?
  (( rc == 0 )) || tm_fail "TCP send of ${mb} MB from $from to [$addr]:$port failed (nc exit $rc)"
  tm__wait_exit "$rpid" 30 || tm_fail "TCP receiver in $to did not finish within 30s"
  sum_src=$(sha256sum <"$src" | cut -d' ' -f1)
  sum_dst=$(sha256sum <"$dst" | cut -d' ' -f1)
  [[ "$sum_src" == "$sum_dst" ]] || tm_fail "TCP transfer $from -> [$addr]:$port corrupted:" \
    "sent $(stat -c %s "$src") bytes sha256 $sum_src, received $(stat -c %s "$dst") bytes" \
    "sha256 $sum_dst (receiver exit code $TM_EXIT_RC)"
  tm_log "TCP $from -> [$addr]:$port: ${mb} MB intact in $(tm_elapsed_since "$start")s"
}

# tm_iperf CLIENT_NSID SERVER_NSID SERVER_ADDR SECONDS [PORT]: one single-stream iperf3 TCP test;
# leaves the receiver's throughput in bit/s in TM_IPERF_BPS (the JSON report stays in the work
# directory).
tm_iperf() {
  local client=$1 server=$2 addr=$3 secs=$4 port=${5:-5202} json rc spid
  json="$TM_WORK/iperf-$client-$server-$(tm__now_ms).json"
  tm_bg_in "$server" timeout $((secs + 30)) iperf3 -s -1 -B "$addr" -p "$port" \
    >"$json.server" 2>&1
  spid=$TM_BG_PID
  tm_wait 5 "iperf3 server on [$addr]:$port in $server" tm__listening "$server" "$port"
  rc=0
  tm_in "$client" timeout $((secs + 20)) iperf3 -c "$addr" -p "$port" -t "$secs" -J >"$json" ||
    rc=$?
  if ! tm__wait_exit "$spid" 10; then
    kill -KILL "$spid" 2>/dev/null || true
    tm__wait_exit "$spid" 5 || true
  fi
  # shellcheck disable=SC2034 # the result, read by callers
  TM_IPERF_BPS=$("$TM_PY" - "$json" <<'PYEOF'
import json, sys
try:
    with open(sys.argv[1]) as f:
        r = json.load(f)
except ValueError as e:
    sys.exit("iperf3 report is not JSON: %s" % e)
if r.get("error"):
    sys.exit("iperf3 error: " + r["error"])
bps = r["end"]["sum_received"]["bits_per_second"]
if not bps > 0:
    sys.exit("iperf3 received nothing")
print(int(bps))
PYEOF
) || tm_fail "iperf3 to [$addr]:$port from $client failed (client exit $rc); report in $json"
}

# tm_gbps BITS_PER_SECOND: format as Gbit/s with two decimals.
tm_gbps() { "$TM_PY" -c 'import sys; print("%.2f" % (int(sys.argv[1]) / 1e9))' "$1"; }

# ---------------------------------------------------------------------------------------------
# Diagnostics

tm_dump_diagnostics() {
  local node nsid ns lines=${TM_LOG_LINES:-200}
  echo >&2
  echo "################ diagnostics for $TM_TEST ################" >&2
  for node in "${TM_NODE_ORDER[@]}"; do
    ns=$(tm_node_ns "$node")
    echo "======== $node: ${TM_NODE_KIND[$node]}, namespace $ns, interface $(tm_if "$node")," \
      "pid ${TM_NODE_PID[$node]:-none}, public key $(tm_pub "$node")" >&2
    echo "-------- $node config" >&2
    sed 's/^\(PrivateKey\|PresharedKey\) = .*/\1 = (secret)/' "$TM_WORK/$node.conf" >&2 2>/dev/null
    echo "-------- $node log (last $lines lines of $(tm_node_log "$node"))" >&2
    tail -n "$lines" "$(tm_node_log "$node")" >&2 2>/dev/null
    if [[ -n "${TM_NODE_PID[$node]:-}" ]]; then
      if [[ "${TM_NODE_KIND[$node]}" == agent ]]; then
        echo "-------- $node status" >&2
        ip netns exec "$ns" timeout 5 "$TM_AGENT" status --interface "$(tm_if "$node")" \
          --state-dir "$TM_WORK/$node.state" >&2 2>&1
        echo "-------- $node status --json" >&2
        tm_status_json "$node" >&2 2>&1
        echo >&2
      else
        echo "-------- $node wg show" >&2
        ip netns exec "$ns" wg show "$(tm_if "$node")" >&2 2>&1
      fi
    fi
  done
  for nsid in "${TM_NS_ORDER[@]}"; do
    ns=${TM_NS[$nsid]}
    echo "======== namespace $nsid ($ns)" >&2
    ip -n "$ns" -br link >&2 2>&1
    ip -n "$ns" -br addr >&2 2>&1
    ip -n "$ns" route >&2 2>&1
    ip -n "$ns" -6 route >&2 2>&1
    ip netns exec "$ns" ss -uanp >&2 2>&1
  done
  echo "################ end of diagnostics ################" >&2
}
