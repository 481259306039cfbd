#!/usr/bin/env bash
# exit_full_tunnel.sh: issue 15 item 4, a wg-quick style config with `AllowedIPs = 0.0.0.0/0`. A
# "laptop" behind an endpoint-independent NAT runs the agent from a config file whose one peer,
# on a public host, forwards and masquerades (as its owner would set up with PostUp); an
# "internet" host answers HTTP with the address it sees.
#
# Checks: the laptop's internet traffic goes into the tunnel by policy routing (the route to the
# web host is the interface, the encrypted packets to the peer's endpoint are not: the handshake
# completes through the NAT), and the web host sees the peer's address; no default route is added
# to the main table; when the agent stops, its rules and table are gone and traffic goes out
# directly again; a rule a killed agent left is removed by the next start.
#
# Usage: exit_full_tunnel.sh [AGENT_PATH [OPERATOR_PATH]]   (needs root; exits 77 otherwise)

# shellcheck source=nat_lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/nat_lib.sh"
tm_mesh_init exit_full_tunnel 120 "$@"
command -v curl >/dev/null || tm_fail "required tool 'curl' is not installed"
WEB_PORT=8080

tm_step "topology: web and the exit public; the laptop behind a NAT"
tm_net_public web
tm_net_public ex
tm_net_site s1 eim
tm_net_site_host s1 lap
WEB=${TM_NET_ADDR[web]}
EX=${TM_NET_ADDR[ex]}
S1=${TM_NET_ADDR[s1]}
ip netns exec "$(tm_ns web)" "$TM_PY" "$TM_LIB_DIR/echo_http.py" "$WEB" "$WEB_PORT" \
  >"$TM_WORK/web.log" 2>&1 &
TM_BG_PIDS+=("$!")
seen_by_web() { ip netns exec "$(tm_ns "$1")" curl -s -m 3 "http://$WEB:$WEB_PORT/" || true; }
web_sees() { [[ "$(seen_by_web "$1")" == "$2" ]]; }
tm_wait 10 "web to see the laptop's NAT" web_sees lap "$S1"

tm_step "the exit forwards and masquerades the tunnel (its owner's PostUp)"
tm_node_new gw agent ex 51820 "10.44.0.1/24"
tm_node_new laptop agent lap 51820 "10.44.0.2/24"
tm_node_peer gw laptop
tm_node_peer laptop gw endpoint="$EX:51820" allowed="0.0.0.0/0" keepalive=5
tm_node_start gw
tm_in ex sysctl -qw net.ipv4.ip_forward=1
tm_in ex nft -f - <<NFT
table ip gwnat {
  chain postrouting {
    type nat hook postrouting priority srcnat; policy accept;
    ip saddr 10.44.0.0/24 oifname "pub0" masquerade
  }
}
NFT

tm_step "the laptop's agent with AllowedIPs = 0.0.0.0/0"
LAP_IF=$(tm_if laptop)
tm_node_start laptop
tm_wait 15 "web to see the exit's address ($EX)" web_sees lap "$EX"
tm_expect_eq "route to the internet" \
  "$(tm_in lap ip -4 route get "$WEB" | grep -o "dev [a-z0-9]*" | head -n1)" "dev $LAP_IF"
tm_expect_eq "default routes in the main table via $LAP_IF" \
  "$(tm_in lap ip -4 route show table main default | grep -c "dev $LAP_IF" || true)" 0
tm_expect_eq "route to the peer's endpoint (kept out of the tunnel)" \
  "$(tm_in lap ip -4 route get "$EX" | grep -o "dev [a-z0-9]*" | head -n1)" "dev eth0"
RULES=$(tm_in lap ip -4 rule show)
tm_log "rules: $(tr '\n' ';' <<<"$RULES")"
PRIO=$(grep -oE '^[0-9]+:[[:space:]]*not from all fwmark' <<<"$RULES" | cut -d: -f1)
[[ -n "$PRIO" ]] || tm_fail "no 'not fwmark' rule on the laptop: $RULES"

tm_step "a killed agent's rules are removed by the next start"
tm_node_kill laptop
RULES=$(tm_in lap ip -4 rule show)
grep -q "^$PRIO:" <<<"$RULES" || tm_fail "a killed agent should leave its rule: $RULES"
tm_in lap ip -4 rule add to 192.0.2.77 lookup main priority $((PRIO - 3))
tm_node_start laptop
tm_wait 15 "web to see the exit's address again" web_sees lap "$EX"
tm_expect_eq "rules to 192.0.2.77 (the stale one) after the restart" \
  "$(tm_in lap ip -4 rule show | grep -c '192.0.2.77' || true)" 0

tm_step "the agent stops: everything restored"
tm_node_stop laptop
tm_expect_eq "rules at the agent's priorities" \
  "$(tm_in lap ip -4 rule show | grep -cE "^($((PRIO - 3))|$((PRIO - 2))|$((PRIO - 1))|$PRIO):" || true)" 0
tm_wait 5 "web to see the laptop's NAT again" web_sees lap "$S1"

tm_checks_done
