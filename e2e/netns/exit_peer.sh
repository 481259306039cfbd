#!/usr/bin/env bash
# exit_peer.sh: exit peers (docs/remote-access.md). A standalone coordinator, an "internet" host
# (web: an HTTP server that answers with the address it sees, and dnsmasq), two exit peers on the
# public segment (exit1, exit2: `join --advertise-exit`), a laptop behind an endpoint-independent
# NAT (`--label role=laptop --exit-peer exit1 --exit-peer exit2`) and a stranger behind another NAT
# (`--exit-peer exit1`, no label). One PeerPolicy lets role=laptop use the internet; the Mesh's
# default (Allow) lets the members reach each other but never the internet.
#
# Checks: the laptop uses exit1 (status), fetches a page from web and web sees exit1's public
# address, over IPv4 and over IPv6 (the laptop's only IPv6 is its mesh address); mesh traffic still reaches the other members; a DNS query to web's resolver goes
# through the tunnel (dnsmasq sees exit1's address, the laptop's NAT router forwards no DNS);
# the stranger is refused (status names exit1 and why) and, fail-closed, fetches nothing (with
# --exit-fail-open it goes out directly, through its own NAT); exit1
# killed (SIGKILL): the laptop's traffic moves to exit2 within EXIT_FAILOVER_S (measured); exit1
# restarted removes its own stale table and the laptop moves back to it (preferred); exit1's host
# vanishing without closing anything (its link down) moves the traffic to exit2 within
# EXIT_FAILOVER_S too (measured; the data plane's evidence or the coordinator's, whichever comes
# first); exit1 stopped
# cleanly removes its nftables table and leaves forwarding as it found it; the laptop restarted with
# `--exit-dns` answers a query to an address that serves no DNS from web's resolver, and with
# `--exit-allow-lan` reaches a host on its LAN that it could not reach before; the laptop
# stopped removes its rules and table, and its traffic goes out directly again.
#
# Usage: exit_peer.sh [AGENT_PATH [OPERATOR_PATH]]   (needs root; exits 77 otherwise)

# shellcheck source=nat_lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/nat_lib.sh"
tm_mesh_init exit_peer 230 "$@"
command -v curl >/dev/null || tm_fail "required tool 'curl' is not installed"
command -v dig >/dev/null || tm_fail "required tool 'dig' is not installed (apt-get install bind9-dnsutils)"
command -v dnsmasq >/dev/null || tm_fail "required tool 'dnsmasq' is not installed"
EXIT_FAILOVER_S=${TM_EXIT_FAILOVER_S:-10}
WEB_PORT=8080

tm_step "topology: coordinator, web and two exits public; laptop and stranger behind NATs"
tm_net_public coord
tm_net_public web
tm_net_public ex1
tm_net_public ex2
tm_net_site s1 eim
tm_net_site_host s1 lap
tm_net_site_host s1 prn   # a "printer" on the laptop's LAN
tm_net_site s2 eim
tm_net_site_host s2 str
WEB=${TM_NET_ADDR[web]}
EX1=${TM_NET_ADDR[ex1]}
EX2=${TM_NET_ADDR[ex2]}
S1=${TM_NET_ADDR[s1]}
# IPv6 on the public segment for web and the exits only (the laptop's LAN has none): the
# laptop's IPv6 internet traffic can only leave through the tunnel, from its mesh address.
V6NET=2001:db8:99
ip -n "$(tm_ns inet)" addr add "$V6NET::254/64" dev br0 nodad
for id in web:80 ex1:12 ex2:13; do
  ip -n "$(tm_ns "${id%%:*}")" addr add "$V6NET::${id#*:}/64" dev pub0 nodad
done
WEB6=$V6NET::80
EX1_6=$V6NET::12
tm_coord_setup coord
tm_coord_allow_internet laptop
tm_coord_start

tm_step "the internet: an HTTP server that says who asked, and dnsmasq"
ip netns exec "$(tm_ns web)" "$TM_PY" "$TM_LIB_DIR/echo_http.py" "$WEB" "$WEB_PORT" \
  >"$TM_WORK/web.log" 2>&1 &
TM_BG_PIDS+=("$!")
ip netns exec "$(tm_ns prn)" "$TM_PY" "$TM_LIB_DIR/echo_http.py" "${TM_NET_ADDR[prn]}" \
  "$WEB_PORT" >"$TM_WORK/prn.log" 2>&1 &
TM_BG_PIDS+=("$!")
ip netns exec "$(tm_ns web)" dnsmasq --keep-in-foreground --no-resolv --no-hosts \
  --listen-address="$WEB" --bind-interfaces --address=/example.test/198.51.100.80 \
  --log-queries --log-facility="$TM_WORK/dnsmasq.log" --pid-file="$TM_WORK/dnsmasq.pid" \
  --user=root &
TM_BG_PIDS+=("$!")
ip netns exec "$(tm_ns web)" "$TM_PY" "$TM_LIB_DIR/echo_http.py" "$WEB6" "$WEB_PORT" \
  >"$TM_WORK/web6.log" 2>&1 &
TM_BG_PIDS+=("$!")
web_up() { tm_in web curl -s -m 1 "http://$WEB:$WEB_PORT/" >/dev/null; }
tm_wait 10 "the web server to answer" web_up
# Who web sees when NSID fetches a page ("" when the fetch fails).
seen_by_web() { ip netns exec "$(tm_ns "$1")" curl -s -m 3 "http://$WEB:$WEB_PORT/" || true; }
seen_by_printer() {
  ip netns exec "$(tm_ns lap)" curl -s -m 2 "http://${TM_NET_ADDR[prn]}:$WEB_PORT/" || true
}
tm_expect_eq "web sees the laptop's NAT before any exit" "$(seen_by_web lap)" "$S1"
# LAN hosts talk to each other across the router's bridge (where the host's br_netfilter makes
# bridged packets pass the forward chain, the NAT's drop policy would stop them).
tm_in s1 nft insert rule ip filter forward iifname lan0 oifname lan0 accept
tm_expect_eq "the printer sees the laptop before any exit" "$(seen_by_printer)" "${TM_NET_ADDR[lap]}"

tm_step "exits and members join"
FWD4_BEFORE=$(tm_in ex1 cat /proc/sys/net/ipv4/ip_forward)
FWD6_BEFORE=$(tm_in ex1 cat /proc/sys/net/ipv6/conf/all/forwarding)
tm_member_new exit1 ex1
tm_member_start exit1 --advertise-exit
tm_member_new exit2 ex2
tm_member_start exit2 --advertise-exit
tm_member_new laptop lap
tm_member_start laptop --label role=laptop --exit-peer exit1 --exit-peer exit2
tm_member_new stranger str
tm_member_start stranger --exit-peer exit1
tm_members_wait_ping 20 laptop exit1 exit2
LAP_IF=${TM_MEMBER_IF[laptop]}
EX1_IF=${TM_MEMBER_IF[exit1]}

tm_step "the laptop routes its internet traffic through exit1"
mjson_true() { [[ "$(tm__mjson "$1" "$2")" == True || "$(tm__mjson "$1" "$2")" == true ]]; }
using_is() { [[ "$(tm__mjson "$1" "(s.get('exit') or {}).get('using')")" == "$2" ]]; }
tm_wait 15 "the laptop to use exit1 (status exit.using)" using_is laptop exit1
serves() { mjson_true "$1" "'$2/32' in (s.get('exit') or {}).get('serving', [])"; }
tm_wait 10 "exit1 to serve the laptop's mesh IP" serves exit1 "$(tm_member_ip laptop 4)"
web_sees() { [[ "$(seen_by_web "$1")" == "$2" ]]; }
tm_wait 15 "web to see exit1's address ($EX1) when the laptop fetches" web_sees lap "$EX1"
tm_log "web sees $EX1 (exit1), not the laptop's NAT $S1"
seen_by_web6() { ip netns exec "$(tm_ns "$1")" curl -s -g -m 3 "http://[$WEB6]:$WEB_PORT/" || true; }
tm_wait 10 "web to see exit1's IPv6 address ($EX1_6) over IPv6" \
  eval '[[ "$(seen_by_web6 lap)" == "$EX1_6" ]]'
tm_log "IPv6 too: web sees $EX1_6 (exit1)"
tm_expect_eq "the laptop's interface is the route to the internet" \
  "$(tm_in lap ip -4 route get "$WEB" | grep -o "dev [a-z0-9]*" | head -n1)" "dev $LAP_IF"
tm_wait_ping lap "$(tm_member_ip exit2 4)" 5
tm_log "mesh traffic still reaches exit2 by its mesh IP"
tm_expect_eq "the printer on the laptop's LAN, without --exit-allow-lan (not reachable)" \
  "$(seen_by_printer)" ""

tm_step "DNS goes through the tunnel"
tm_in s1 nft insert rule ip filter forward udp dport 53 counter comment '"dns from the LAN"'
tm_in s1 nft insert rule ip filter forward tcp dport 53 counter comment '"dns over tcp from the LAN"'
ANSWER=$(tm_in lap dig +short +time=2 +tries=2 "@$WEB" example.test A)
tm_expect_eq "web's resolver answers the laptop" "$ANSWER" "198.51.100.80"
grep -q "query\[A\] example.test from $EX1" "$TM_WORK/dnsmasq.log" ||
  tm_fail "dnsmasq did not see the laptop's query from exit1 ($EX1): $(tail -n 5 "$TM_WORK/dnsmasq.log")"
tm_expect_eq "DNS packets the laptop's NAT forwarded" "$(tm_nat_counter s1 "dns from the LAN")" 0
tm_expect_eq "DNS/TCP packets the laptop's NAT forwarded" \
  "$(tm_nat_counter s1 "dns over tcp from the LAN")" 0

tm_step "explain names the exit that decides a flow to the internet"
explain() { # NAME SRC DST  (sets EXPLAIN_OUT and EXPLAIN_RC)
  EXPLAIN_RC=0
  EXPLAIN_OUT=$(tm_in "${TM_MEMBER_NSID[$1]}" timeout 10 "$TM_AGENT" explain "$2" "$3" \
    --interface "${TM_MEMBER_IF[$1]}" --state-dir "$(tm_member_state "$1")" 2>&1) || EXPLAIN_RC=$?
  tm_log "explain on $1: $2 $3 -> exit $EXPLAIN_RC: $EXPLAIN_OUT"
}
explain laptop laptop "$WEB:$WEB_PORT/tcp"
tm_expect_eq "explain laptop web:$WEB_PORT/tcp: exit code" "$EXPLAIN_RC" 0
[[ "$EXPLAIN_OUT" == allow*"by PeerPolicy laptops-internet"*"enforced by exit1"* ]] ||
  tm_fail "explain did not name laptops-internet and exit1: $EXPLAIN_OUT"
explain stranger stranger "$WEB:$WEB_PORT/tcp"
[[ $EXPLAIN_RC == 3 && "$EXPLAIN_OUT" == *"uses no exit peer"* ]] ||
  tm_fail "explain for the stranger did not say it uses no exit: $EXPLAIN_OUT"

tm_step "a member no PeerPolicy lets use exit1 cannot"
tm_wait 10 "the stranger to list exit1 as refused" mjson_true stranger \
  "any(r['name'] == 'exit1' for r in (s.get('exit') or {}).get('refused', []))"
tm_log "refused: $(tm_mjson stranger "s['exit']['refused']")"
tm_expect_eq "the stranger's exit state" "$(tm_mjson stranger "s['exit']['state']")" \
  "no healthy exit: internet traffic is dropped (fail-closed)"
tm_expect_eq "what web sees from the stranger (nothing: fail-closed)" "$(seen_by_web str)" ""
tm_expect_eq "exit1 serves the stranger" \
  "$(tm_mjson exit1 "'$(tm_member_ip stranger 4)/32' in s['exit']['serving']")" false
tm_member_stop stranger
tm_member_start stranger --exit-peer exit1 --exit-fail-open
state_is() { [[ "$(tm__mjson "$1" "(s.get('exit') or {}).get('state')")" == "$2" ]]; }
tm_wait 10 "the stranger to fail open" state_is stranger \
  "no healthy exit: internet traffic goes out directly (fail-open)"
tm_expect_eq "what web sees from the stranger with --exit-fail-open (its own NAT)" \
  "$(seen_by_web str)" "${TM_NET_ADDR[s2]}"

tm_step "exit1 dies: the laptop's traffic moves to exit2"
START=$(tm__now_ms)
tm_member_kill exit1
if ! tm_poll "$EXIT_FAILOVER_S" web_sees lap "$EX2"; then
  tm_fail "the laptop's traffic did not move to exit2 within ${EXIT_FAILOVER_S}s of exit1's death" \
    "(web sees '$(seen_by_web lap)'; exit state: $(tm__mjson laptop "s.get('exit')" || true))"
fi
tm_log "failover to exit2 after $(tm_elapsed_since "$START")s (web sees $EX2)"
tm_expect_eq "the laptop uses" "$(tm_mjson laptop "s['exit']['using']")" exit2
tm_in ex1 nft list table inet "tunnelmesh_exit_$EX1_IF" >/dev/null ||
  tm_fail "a killed exit1 should have left its table (the restart must remove it)"

tm_step "exit1 restarts: it replaces its stale table and the laptop moves back"
tm_member_start exit1 --advertise-exit
tm_wait 20 "the laptop to use exit1 again" using_is laptop exit1
tm_wait 10 "web to see exit1's address again" web_sees lap "$EX1"
tm_expect_eq "exit1's tables (one)" \
  "$(tm_in ex1 nft list tables | grep -c "tunnelmesh_exit_$EX1_IF")" 1

tm_step "exit1's host vanishes (link cut, no connection closed): traffic moves"
tm_in ex1 ip link set pub0 down
START=$(tm__now_ms)
if ! tm_poll "$EXIT_FAILOVER_S" web_sees lap "$EX2"; then
  tm_fail "the laptop's traffic did not move to exit2 within ${EXIT_FAILOVER_S}s of exit1's host" \
    "vanishing (web sees '$(seen_by_web lap)'; exit state: $(tm__mjson laptop "s.get('exit')" || true))"
fi
tm_log "failover to exit2 after $(tm_elapsed_since "$START")s; exit1: $(tm_mjson laptop \
  "[p['reason'] for p in s['exit']['peers'] if p['name'] == 'exit1'][0]")"
tm_in ex1 ip link set pub0 up
tm_in ex1 ip route replace default via "$TM_NET_GW"

tm_step "exit1 stops cleanly: its table and forwarding are gone"
tm_member_stop exit1
tm_in ex1 nft list table inet "tunnelmesh_exit_$EX1_IF" >/dev/null 2>&1 &&
  tm_fail "exit1 left its nftables table after SIGTERM"
tm_expect_eq "exit1's net.ipv4.ip_forward (as before the agent)" \
  "$(tm_in ex1 cat /proc/sys/net/ipv4/ip_forward)" "$FWD4_BEFORE"
tm_expect_eq "exit1's net.ipv6.conf.all.forwarding (as before the agent)" \
  "$(tm_in ex1 cat /proc/sys/net/ipv6/conf/all/forwarding)" "$FWD6_BEFORE"
tm_wait 10 "web to see exit2's address" web_sees lap "$EX2"

tm_step "--exit-dns and --exit-allow-lan: DNS to the chosen resolver through the tunnel, LAN direct"
tm_member_stop laptop
tm_member_start laptop --label role=laptop --exit-peer exit1 --exit-peer exit2 --exit-dns "$WEB" \
  --exit-allow-lan
tm_wait 15 "the laptop to use exit2" using_is laptop exit2
# 192.0.2.53 serves no DNS anywhere: the redirect answers.
ANSWER=$(tm_in lap dig +short +time=2 +tries=2 @192.0.2.53 example.test A)
tm_expect_eq "a query to 192.0.2.53 answered by web's resolver" "$ANSWER" "198.51.100.80"
grep -q "query\[A\] example.test from $EX2" "$TM_WORK/dnsmasq.log" ||
  tm_fail "dnsmasq did not see the redirected query from exit2 ($EX2)"
tm_expect_eq "DNS packets the laptop's NAT forwarded" "$(tm_nat_counter s1 "dns from the LAN")" 0
tm_expect_eq "the printer sees the laptop's LAN address (--exit-allow-lan)" "$(seen_by_printer)" \
  "${TM_NET_ADDR[lap]}"
tm_expect_eq "web still sees exit2" "$(seen_by_web lap)" "$EX2"

tm_step "the laptop stops: rules and table gone, traffic direct again"
tm_member_stop laptop
RULES=$(tm_in lap ip rule show)
tm_expect_eq "ip rules left on the laptop" "$(grep -vc -E '^(0|32766|32767):' <<<"$RULES" || true)" 0
TABLES=$(tm_in lap nft list tables)
grep -q tunnelmesh_exitdns <<<"$TABLES" && tm_fail "the DNS redirect table is left: $TABLES"
tm_expect_eq "web sees the laptop's NAT again" "$(seen_by_web lap)" "$S1"

tm_checks_done
