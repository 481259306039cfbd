#!/usr/bin/env bash
# wg_tools.sh: WireGuard's own tools against a tunnelmesh-agent run from a wg-quick file, next to
# a wireguard-go peer.
#
# Checks: `tunnelmesh-agent genpsk` makes a key that `wg` and both peers accept (it is the pair's
# PresharedKey); `wg show IFACE` and `wg show IFACE dump` (the real /usr/bin/wg, through
# /var/run/wireguard/IFACE.sock) show the agent's keys, port, the peer, its preshared key, endpoint,
# allowed IPs, a handshake since the start and traffic; `wg set ... allowed-ips` adds a route and a
# ping through the new prefix works; `wg set ... persistent-keepalive` shows; `wg set ... remove`
# removes the peer, its routes and its traffic; `wg set` adds it back (endpoint, preshared key)
# and traffic resumes; a listen-port change and malformed requests are refused with an errno
# while the agent runs on; the socket goes away on exit. Then `Table = off` installs no route for
# AllowedIPs (the peer is still configured), a stale socket left by a killed agent is replaced,
# and `Table = 1234` puts the routes into table 1234 and not the main table. A second agent with
# the same interface name in another namespace (the socket directory is shared by all) logs that
# `wg` will not reach it, runs on, and leaves the first agent's socket alone.
#
# Usage: wg_tools.sh [AGENT_PATH]   (needs root, exits 77 otherwise)

# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
tm_init wg_tools 150 "$@"
tm_require_agent

A=agent
W=wgpeer
tm_ns_new a
tm_ns_new w
tm_veth a veth0 w veth0 "10.0.0.1/24" "10.0.0.2/24"
tm_node_new "$A" agent a 51820 "10.44.0.1/24"
# /var/run/wireguard is shared by every namespace on the host: a name no other run uses.
TM_NODE_IF[$A]="tw$$x1"
tm_node_new "$W" wg w 51821 "10.44.0.2/24"
IF=$(tm_if "$A")
SOCK=/var/run/wireguard/$IF.sock
PUB_W=$(tm_pub "$W")

tm_step "genpsk makes a preshared key"
"$TM_AGENT" genpsk >"$TM_WORK/gp.psk"
[[ "$(cat "$TM_WORK/gp.psk")" =~ ^[A-Za-z0-9+/]{43}=$ ]] ||
  tm_fail "genpsk printed '$(cat "$TM_WORK/gp.psk")', not a base64 key"
wg pubkey <"$TM_WORK/gp.psk" >/dev/null || tm_fail "wg does not accept genpsk's output as a key"
[[ "$("$TM_AGENT" genpsk)" != "$(cat "$TM_WORK/gp.psk")" ]] || tm_fail "genpsk printed the same key twice"

tm_node_peer "$A" "$W" endpoint=10.0.0.2:51821 psk=gp
tm_node_peer "$W" "$A" psk=gp
SINCE=$(date +%s)
tm_node_start "$A"
tm_node_start "$W"
tm_wait_ping a 10.44.0.2 10
tm_ping a 10.44.0.2 3

# wg_dump_peer KEY: the agent's `wg show dump` line of peer KEY ("" when absent).
wg_dump_peer() { tm_in a wg show "$IF" dump | awk -v k="$1" '$1 == k'; }
expect_contains() { # DESCRIPTION TEXT WANT
  grep -qF -- "$3" <<<"$2" || tm_fail "$1: '$3' not in:"$'\n'"$2"
}

tm_step "wg show and wg show dump see the agent's real state"
[[ -S "$SOCK" ]] || tm_fail "$SOCK is not a socket"
tm_expect_eq "mode of $SOCK" "$(stat -c %a "$SOCK")" 600
tm_expect_eq "mode of /var/run/wireguard" "$(stat -c %a /var/run/wireguard)" 755
SHOW=$(tm_in a wg show "$IF") || tm_fail "wg show $IF failed: $SHOW"
tm_log "wg show $IF:"$'\n'"$SHOW"
for want in "interface: $IF" "public key: $(tm_pub "$A")" "listening port: 51820" \
  "peer: $PUB_W" "preshared key: (hidden)" "endpoint: 10.0.0.2:51821" \
  "allowed ips: 10.44.0.2/32" "latest handshake: " "transfer: "; do
  expect_contains "wg show $IF" "$SHOW" "$want"
done
read -r priv pub port fwmark < <(tm_in a wg show "$IF" dump | head -n1)
tm_expect_eq "dump: private key" "$priv" "$(cat "$TM_WORK/$A.key")"
tm_expect_eq "dump: public key" "$pub" "$(tm_pub "$A")"
tm_expect_eq "dump: listen port" "$port" 51820
tm_expect_eq "dump: fwmark" "$fwmark" off
read -r key psk endpoint allowed handshake rx tx keepalive < <(wg_dump_peer "$PUB_W")
tm_expect_eq "dump: peer key" "$key" "$PUB_W"
tm_expect_eq "dump: preshared key (genpsk's)" "$psk" "$(cat "$TM_WORK/gp.psk")"
tm_expect_eq "dump: endpoint" "$endpoint" 10.0.0.2:51821
tm_expect_eq "dump: allowed ips" "$allowed" 10.44.0.2/32
tm_expect_gt "dump: latest handshake (since the start)" "$handshake" $((SINCE - 1))
tm_expect_gt "dump: rx bytes" "$rx" 0
tm_expect_gt "dump: tx bytes" "$tx" 0
tm_expect_eq "dump: keepalive" "$keepalive" off

tm_step "wg set allowed-ips routes a new prefix to the peer"
tm_in w ip addr add 10.55.0.1/24 dev "$(tm_if "$W")"
! tm_ping_once a 10.55.0.1 >/dev/null 2>&1 || tm_fail "10.55.0.1 answered before it was allowed"
tm_in a wg set "$IF" peer "$PUB_W" allowed-ips 10.44.0.2/32,10.55.0.0/24 ||
  tm_fail "wg set allowed-ips failed"
tm_expect_eq "route to 10.55.0.1" \
  "$(tm_in a ip route get 10.55.0.1 | grep -o "dev [^ ]*" | head -n1)" "dev $IF"
tm_wait_ping a 10.55.0.1 5
read -r key psk endpoint allowed rest < <(wg_dump_peer "$PUB_W")
tm_expect_eq "dump: allowed ips after wg set" "$allowed" 10.44.0.2/32,10.55.0.0/24
tm_in a wg set "$IF" peer "$PUB_W" persistent-keepalive 7 || tm_fail "wg set keepalive failed"
read -r key psk endpoint allowed handshake rx tx keepalive < <(wg_dump_peer "$PUB_W")
tm_expect_eq "dump: keepalive after wg set" "$keepalive" 7

tm_step "wg set remove takes the peer, its routes and its traffic away"
tm_in a wg set "$IF" peer "$PUB_W" remove || tm_fail "wg set remove failed"
tm_expect_eq "dump line of the removed peer" "$(wg_dump_peer "$PUB_W")" ""
[[ -z "$(tm_in a ip route show 10.55.0.0/24 dev "$IF")" ]] ||
  tm_fail "route 10.55.0.0/24 is still there: $(tm_in a ip route show dev "$IF")"
! tm_ping_once a 10.44.0.2 >/dev/null 2>&1 || tm_fail "10.44.0.2 still answers after remove"

tm_step "wg set adds the peer back (endpoint, preshared key) and traffic resumes"
tm_in a wg set "$IF" peer "$PUB_W" allowed-ips 10.44.0.2/32 endpoint 10.0.0.2:51821 \
  preshared-key "$TM_WORK/gp.psk" || tm_fail "wg set (add) failed"
tm_wait_ping a 10.44.0.2 10
read -r key psk endpoint allowed rest < <(wg_dump_peer "$PUB_W")
tm_expect_eq "dump: preshared key of the re-added peer" "$psk" "$(cat "$TM_WORK/gp.psk")"

tm_step "refusals get an errno and the agent runs on"
OUT=$(tm_in a wg set "$IF" listen-port 4000 2>&1) && tm_fail "wg set listen-port succeeded: $OUT"
expect_contains "wg set listen-port" "$OUT" "Operation not supported"
expect_contains "agent log" "$(cat "$(tm_node_log "$A")")" \
  "the listen port cannot change while the agent runs"
REPLY=$(printf 'set=1\nbogus=1\n\n' | timeout 5 nc -U "$SOCK" -q 1 || true)
tm_expect_eq "reply to a malformed set" "$(head -n1 <<<"$REPLY")" "errno=-22"
REPLY=$(head -c 1000 /dev/zero | tr '\0' 'x' | timeout 5 nc -U "$SOCK" -q 1 || true)
tm_expect_eq "reply to an overlong line" "$(head -n1 <<<"$REPLY")" "errno=-22"
tm_ping a 10.44.0.2 3
tm_node_stop "$A"
[[ ! -e "$SOCK" ]] || tm_fail "$SOCK is still there after the agent exited"

# start_manual CONF: runs the agent on CONF in namespace a; sets PID once the socket answers.
start_manual() {
  ip netns exec "$(tm_ns a)" "$TM_AGENT" --config "$1" --interface "$IF" \
    --state-dir "$TM_WORK/$A.state" --log-level debug >>"$(tm_node_log "$A")" 2>&1 &
  PID=$!
  TM_BG_PIDS+=("$PID")
  tm_wait 10 "the agent on $1 to answer wg show" tm_in a wg show "$IF"
}
write_conf() { # FILE TABLE
  (umask 077 && cat >"$1" <<CONF
[Interface]
PrivateKey = $(cat "$TM_WORK/$A.key")
ListenPort = 51820
Address = 10.44.0.1/24
Table = $2

[Peer]
PublicKey = $PUB_W
PresharedKey = $(cat "$TM_WORK/gp.psk")
Endpoint = 10.0.0.2:51821
AllowedIPs = 10.44.0.2/32, 10.55.0.0/24
CONF
  )
}

tm_step "Table = off: no routes for AllowedIPs"
write_conf "$TM_WORK/off.conf" off
start_manual "$TM_WORK/off.conf"
tm_expect_eq "routes to 10.55.0.0/24 with Table = off" \
  "$(tm_in a ip route show 10.55.0.0/24; tm_in a ip route show table all 10.55.0.0/24)" ""
expect_contains "wg show allowed-ips with Table = off" "$(tm_in a wg show "$IF" allowed-ips)" \
  "10.55.0.0/24"
! grep -q "Table is ignored" "$(tm_node_log "$A")" || tm_fail "the agent still warns that Table is ignored"
# The peer is there: the administrator's own route makes the prefix reachable.
tm_in a ip route add 10.55.0.0/24 dev "$IF"
tm_wait_ping a 10.55.0.1 10

tm_step "a second agent with the same interface name in another namespace runs without the socket"
tm_ns_new c
wg genkey >"$TM_WORK/c.key"
(umask 077 && printf '[Interface]\nPrivateKey = %s\nAddress = 10.47.0.1/24\n' \
  "$(cat "$TM_WORK/c.key")" >"$TM_WORK/c.conf")
mkdir -p "$TM_WORK/c.state"
ip netns exec "$(tm_ns c)" "$TM_AGENT" --config "$TM_WORK/c.conf" --interface "$IF" \
  --state-dir "$TM_WORK/c.state" >"$TM_WORK/c.log" 2>&1 &
CPID=$!
TM_BG_PIDS+=("$CPID")
tm_wait 10 "the second agent to log that it runs without the WireGuard socket" \
  grep -qF "\`wg show $IF\` and \`wg set\` will not reach this agent" "$TM_WORK/c.log"
kill -0 "$CPID" 2>/dev/null || tm_fail "the second agent exited: $(cat "$TM_WORK/c.log")"
tm_expect_eq "wg show $IF public key (still the first agent)" \
  "$(tm_in a wg show "$IF" public-key)" "$(tm_pub "$A")"
kill -TERM "$CPID"
tm__wait_exit "$CPID" 10 || tm_fail "the second agent did not exit within 10 s of SIGTERM"
tm_expect_eq "the second agent's exit code after SIGTERM" "$TM_EXIT_RC" 0
[[ -S "$SOCK" ]] || tm_fail "the second agent removed the first one's socket on exit"

tm_step "a killed agent's stale socket is replaced; Table = 1234 routes into table 1234"
kill -KILL "$PID"
wait "$PID" 2>/dev/null || true
[[ -S "$SOCK" ]] || tm_fail "the killed agent left no socket behind (the stale case is not tested)"
tm_wait 5 "the killed agent's interface to go" tm__link_absent "$A"
write_conf "$TM_WORK/table.conf" 1234
start_manual "$TM_WORK/table.conf"
expect_contains "table 1234" "$(tm_in a ip route show table 1234)" "10.55.0.0/24 dev $IF"
tm_expect_eq "main-table route to 10.55.0.0/24 with Table = 1234" \
  "$(tm_in a ip route show table main 10.55.0.0/24)" ""
kill -TERM "$PID"
tm__wait_exit "$PID" 10 || tm_fail "the agent did not exit within 10 s of SIGTERM"
tm_expect_eq "exit code after SIGTERM" "$TM_EXIT_RC" 0
[[ -z "$(tm_in a ip route show table 1234 2>/dev/null)" ]] ||
  tm_fail "table 1234 still has routes after exit: $(tm_in a ip route show table 1234)"
[[ ! -e "$SOCK" ]] || tm_fail "$SOCK is still there after the agent exited"
