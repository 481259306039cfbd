#!/usr/bin/env bash
# relay_wrong_ca.sh: an on-path impostor relay. Two members with only a relay path between them
# (one behind a symmetric NAT, one on a site that lets only TCP out, as in join_nat_relay.sh) ping
# each other through the coordinator's relay (wss://). Then alpha's relay connections are DNATed
# (nftables in alpha's own namespace) to a TLS server on another public host that presents a
# certificate for the right name (tunnelmesh-coordinator) from another CA, and alpha is restarted
# so that its relay client dials the impostor.
#
# Checks: the impostor is reached (the DNAT rule's counter moves); alpha logs the refusal of the
# certificate (more than once: it retries with backoff, it does not stop); alpha never reports
# path "relay" to beta while only the impostor answers; once the DNAT is removed alpha finds the
# real relay again by itself (no restart), reports path "relay" and pings flow both ways.
#
# Usage: relay_wrong_ca.sh [AGENT_PATH [OPERATOR_PATH]]   (needs root; exits 77 otherwise)

# shellcheck source=nat_lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/nat_lib.sh"
tm_mesh_init relay_wrong_ca 150 "$@"

RELAY_WAIT_S=${TM_RELAY_WAIT_S:-20}
# How long the impostor alone answers; the client's backoff after a refused relay doubles from
# about 1 s, so it is at most about 16 s when the impostor goes away.
HIJACK_S=12
# The untrusted backoff caps at 30 s; the real relay must be found again within that and a margin.
RECOVER_S=45
REFUSAL="presents a TLS certificate that the pinned coordinator CA did not issue"

command -v openssl >/dev/null || tm_fail "openssl is needed for the impostor's certificate"

tm_step "topology: a symmetric NAT, a UDP-blocking site, and a public host for the impostor"
tm_net_public coord
tm_net_site s1 symmetric
tm_net_site_host s1 a
tm_net_site s2 udp_blocked
tm_net_site_host s2 b
tm_net_public x
tm_coord_setup coord
tm_coord_start

tm_step "members join and reach each other through the real relay"
tm_members_join alpha:a beta:b
B4=$(tm_member_ip beta 4)
A4=$(tm_member_ip alpha 4)
tm_wait_ping a "$B4" "$RELAY_WAIT_S"
tm_member_wait_path 10 alpha beta relay
tm_ping a "$B4" 3

tm_step "the impostor: a TLS server with another CA's certificate for tunnelmesh-coordinator"
IMP=$TM_WORK/impostor
mkdir -p "$IMP"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 1 \
  -subj /CN=impostor-ca -keyout "$IMP/ca.key" -out "$IMP/ca.pem" 2>>"$IMP/openssl.log"
openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
  -subj /CN=tunnelmesh-coordinator -keyout "$IMP/server.key" -out "$IMP/server.csr" \
  2>>"$IMP/openssl.log"
printf 'subjectAltName=DNS:tunnelmesh-coordinator\n' >"$IMP/ext"
openssl x509 -req -in "$IMP/server.csr" -CA "$IMP/ca.pem" -CAkey "$IMP/ca.key" \
  -CAcreateserial -days 1 -extfile "$IMP/ext" -out "$IMP/server.pem" 2>>"$IMP/openssl.log"
# -www answers each connection on its own and keeps listening; it only has to accept TLS.
tm_bg_in x openssl s_server -accept "$TM_RELAY_PORT" -cert "$IMP/server.pem" \
  -key "$IMP/server.key" -cert_chain "$IMP/ca.pem" -www >"$IMP/s_server.log" 2>&1
tm_wait 5 "the impostor to listen on $TM_RELAY_PORT" tm__listening x "$TM_RELAY_PORT"

tm_step "alpha's relay connections go to the impostor; alpha restarts and dials it"
tm_in a nft -f - <<EOF
table ip tm_hijack {
  chain output {
    type nat hook output priority -100; policy accept;
    ip daddr $TM_COORD_ADDR tcp dport $TM_RELAY_PORT counter dnat to ${TM_NET_ADDR[x]}:$TM_RELAY_PORT
  }
}
EOF
tm_member_stop alpha
LOG_FROM=$(( $(wc -l <"$(tm_member_log alpha)") + 1 ))
tm_member_start alpha
alpha_new_log() { tail -n +"$LOG_FROM" "$(tm_member_log alpha)"; }
refusals() { alpha_new_log | grep -c "$REFUSAL" || true; }
refused_logged() { alpha_new_log | grep -q "$REFUSAL"; }
tm_wait 10 "alpha to log the refusal of the impostor's certificate" refused_logged
tm_log "alpha: $(alpha_new_log | grep -m1 "$REFUSAL")"

tm_step "while only the impostor answers, alpha never uses it"
DEADLINE=$(tm__deadline "$HIJACK_S")
SAMPLES=0
while ! tm__past "$DEADLINE"; do
  PATH_NOW=$(tm__mjson alpha "(peer('beta') or {}).get('path')" || true)
  [[ "$PATH_NOW" != relay ]] || tm_fail "alpha reports path 'relay' to beta through the impostor"
  SAMPLES=$(( SAMPLES + 1 ))
  sleep 0.5
done
tm_log "alpha's path to beta during the hijack ($SAMPLES samples): never relay"
HITS=$(tm_in a nft list chain ip tm_hijack output | grep -oE 'packets [0-9]+' | grep -oE '[0-9]+')
tm_expect_gt "packets alpha sent towards the relay port that went to the impostor" "${HITS:-0}" 0
tm_expect_gt "refusals alpha logged (it keeps retrying with backoff)" "$(refusals)" 1
if alpha_new_log | grep -q "relay connected"; then
  tm_fail "alpha logged 'relay connected' while only the impostor answered"
fi
if tm_ping_once a "$B4" >/dev/null; then
  tm_fail "alpha reached beta at $B4 with no relay and no direct path: the test setup is wrong"
fi

tm_step "the impostor goes away: alpha finds the real relay again by itself"
tm_in a nft delete table ip tm_hijack
START=$(tm__now_ms)
tm_member_wait_path "$RECOVER_S" alpha beta relay
tm_log "alpha back on the real relay after $(tm_elapsed_since "$START")s"
tm_wait_ping a "$B4" 10
tm_ping a "$B4" 5
tm_ping b "$A4" 5
tm_expect_eq "beta: path to alpha" "$(tm_mpeer_get beta alpha path)" relay

tm_member_alive alpha
tm_member_alive beta
tm_coord_alive
tm_checks_done
