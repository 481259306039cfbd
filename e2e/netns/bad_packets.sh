#!/usr/bin/env bash
# bad_packets.sh: hostile and broken datagrams at an agent's UDP port while a tunnel is up. Each
# must be dropped and counted under its reason (asserted on status drop counters, not on logs),
# none may disturb the session, the peer's endpoint or the handshake count.
#
# Agent B initiates to agent A while a python3 AF_PACKET sniffer (wgpkt.py capture) on A's veth
# records B's handshake initiation and one of B's transport-data messages. Then, from B's
# namespace but another UDP port:
#   garbage       seeded invalid datagrams (wgpkt.py garbage): bad lengths, unknown types and
#                 non-zero reserved bytes count as malformed, random correctly sized handshake
#                 messages as mac1_invalid, data for an unallocated index as unknown_receiver;
#                 each count must match exactly what was sent;
#   replayed data the captured transport-data message again: replayed (its counter was seen);
#   forged data   the same message with its counter moved 2^20 ahead: decrypt_failed, and the
#                 replay window must not move (B's later packets still get through);
#   replayed init the captured initiation again: handshake_replayed, as its TAI64N timestamp is
#                 not newer than the last one from B (WireGuard paper section 5.1);
# and through the tunnel:
#   spoofed inner B sends from inner addresses outside A's AllowedIPs for B: source_not_allowed;
#   no route      A sends to a mesh address no peer owns: no_route.
# Afterwards the tunnel must carry pings and TCP both ways.
#
# Usage: bad_packets.sh [AGENT_PATH]   (or TM_AGENT=...; needs root, exits 77 otherwise)

# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
tm_init bad_packets 150 "$@"
tm_require_agent

WGPKT="$TM_LIB_DIR/wgpkt.py"
A_OUTER=10.0.0.1
PORT_A=51820
SEED=20240611
# Counters that grow on their own: the kernel sends IPv6 router solicitations and MLD reports into
# the TUN, for which there is no peer.
NOISE=(no_route)

# trace_garbage: send the garbage mix one datagram at a time and print each datagram that is not
# counted under its reason, or not only under it.
trace_garbage() {
  local total i snap info reason what grown bad=0
  total=$("$TM_PY" -c 'import json, sys; print(sum(json.loads(sys.argv[1]).values()))' "$SENT")
  for ((i = 0; i < total; i++)); do
    snap=$(tm_drops A)
    info=$(tm_in b "$TM_PY" "$WGPKT" garbage --dst "$A_OUTER" --port "$PORT_A" --seed "$SEED" \
      --index "$i")
    IFS=$'\t' read -r reason what < <("$TM_PY" -c '
import json, sys
d = json.loads(sys.argv[1])
print(d["reason"] + "\t" + d["what"])' "$info")
    tm_poll 2 tm__drop_delta_ge A "$snap" "$reason" 1 || true
    grown=$(tm_drops_grown A "$snap" "${NOISE[@]}")
    if [[ "$grown" != "{\"$reason\": 1}" ]]; then
      echo "  datagram #$i ($what): want {\"$reason\": 1}, counters grew by $grown" >&2
      bad=$((bad + 1))
    fi
  done
  echo "  $bad of $total datagrams miscounted" >&2
}

# expect_growth TIMEOUT WHAT SNAPSHOT WANT_JSON: wait until A's drop counters (other than NOISE)
# have grown by exactly WANT_JSON since SNAPSHOT; otherwise record a failed check (the scenario
# goes on, so one run shows every miscount) and return 1.
expect_growth() {
  local timeout=$1 what=$2 snap=$3 want grown
  want=$("$TM_PY" -c '
import json, sys
print(json.dumps(dict(sorted(json.loads(sys.argv[1]).items()))))' "$4")
  if tm_poll "$timeout" grown_is "$snap" "$want"; then
    tm_log "$what: drop counters grew by $want, as they should"
    return 0
  fi
  grown=$(tm_drops_grown A "$snap" "${NOISE[@]}")
  tm_check_fail "$what: drop counters grew by $grown, want $want"
  return 1
}
grown_is() { [[ "$(tm_drops_grown A "$1" "${NOISE[@]}")" == "$2" ]]; }

# expect_session_intact HANDSHAKES: the session with B is as it was (same endpoint, same count).
expect_session_intact() {
  tm_expect_eq "A: endpoint of B" "$(tm_peer_get A B endpoint)" 10.0.0.2:51821
  tm_expect_eq "A: handshakes with B" "$(tm_peer_get A B handshakes)" "$1"
  tm_node_alive A
}

tm_step "setup: agent A <- agent B, capturing B's datagrams on A's veth"
tm_ns_new a
tm_ns_new b
tm_veth a veth0 b veth0 "10.0.0.1/24 fd00::1/64" "10.0.0.2/24 fd00::2/64"
# One wire datagram per WireGuard message, even if B's agent sends with UDP GSO: the capture must
# hold exactly one message to be replayable.
ip -n "$(tm_ns b)" link set veth0 gso_max_segs 1
tm_node_new A agent a "$PORT_A" "10.44.0.1/24, fd44::1/64"
tm_node_new B agent b 51821 "10.44.0.2/24, fd44::2/64"
tm_node_peer A B endpoint=10.0.0.2:51821
tm_node_peer B A endpoint="$A_OUTER:$PORT_A"
tm_node_start A
tm_node_start B
CAP="$TM_WORK/capture"
tm_bg_in a "$TM_PY" "$WGPKT" capture --iface veth0 --port "$PORT_A" --types 1,4 --out "$CAP" \
  --timeout 20 >"$TM_WORK/capture.log" 2>&1
CAP_PID=$TM_BG_PID
tm_wait 5 "the sniffer to start" test -e "$CAP/ready"
tm_wait_ping b 10.44.0.1 10
tm__wait_exit "$CAP_PID" 20 || tm_fail "the sniffer did not finish"
(( TM_EXIT_RC == 0 )) || tm_fail "capture failed: $(cat "$TM_WORK/capture.log")"
tm_log "$(tr '\n' ' ' <"$TM_WORK/capture.log")"
tm_ping a 10.44.0.2 3
HS=$(tm_peer_get A B handshakes)
tm_expect_gt "A: handshakes with B" "$HS" 0
START=$(tm_drops A)

tm_step "garbage"
SNAP=$(tm_drops A)
SENT=$(tm_in b "$TM_PY" "$WGPKT" garbage --dst "$A_OUTER" --port "$PORT_A" --seed "$SEED") ||
  tm_fail "sending garbage failed"
tm_log "sent: $SENT"
if ! expect_growth 10 "garbage" "$SNAP" "$SENT"; then
  tm_log "sending the garbage again one datagram at a time:"
  trace_garbage
fi
expect_session_intact "$HS"
tm_ping b 10.44.0.1 3

tm_step "replayed transport-data message"
SNAP=$(tm_drops A)
tm_in b "$TM_PY" "$WGPKT" send --dst "$A_OUTER" --port "$PORT_A" --file "$CAP/type4.bin"
expect_growth 5 "replayed transport-data message" "$SNAP" '{"replayed": 1}' || true
expect_session_intact "$HS"

tm_step "forged transport-data message (counter 2^20 ahead)"
SNAP=$(tm_drops A)
tm_in b "$TM_PY" "$WGPKT" send --dst "$A_OUTER" --port "$PORT_A" --file "$CAP/type4.bin" \
  --counter-add $((1 << 20))
expect_growth 5 "forged transport-data message" "$SNAP" '{"decrypt_failed": 1}' || true
# Had the forged counter advanced the replay window, B's next packets would be dropped as replayed.
SNAP=$(tm_drops A)
tm_ping b 10.44.0.1 3
expect_growth 1 "B's packets after the forgery" "$SNAP" '{}' || true
expect_session_intact "$HS"

tm_step "replayed handshake initiation"
SNAP=$(tm_drops A)
tm_in b "$TM_PY" "$WGPKT" send --dst "$A_OUTER" --port "$PORT_A" --file "$CAP/type1.bin"
expect_growth 5 "replayed handshake initiation" "$SNAP" '{"handshake_replayed": 1}' || true
expect_session_intact "$HS"
tm_ping a 10.44.0.2 3

tm_step "inner source addresses outside AllowedIPs"
SNAP=$(tm_drops A)
tm_addr_add b "$(tm_if B)" 10.99.0.2/32 fd99::2/128
tm_in b ping -n -c 2 -i 0.2 -W 1 -I 10.99.0.2 10.44.0.1 >/dev/null 2>&1 &&
  tm_fail "a ping from 10.99.0.2, outside A's AllowedIPs for B, was answered"
tm_in b ping -n -c 2 -i 0.2 -W 1 -I fd99::2 fd44::1 >/dev/null 2>&1 &&
  tm_fail "a ping from fd99::2, outside A's AllowedIPs for B, was answered"
expect_growth 5 "2 IPv4 and 2 IPv6 pings from outside AllowedIPs" "$SNAP" \
  '{"source_not_allowed": 4}' || true

tm_step "destination no peer owns"
SNAP=$(tm_drops A)
tm_in a ping -n -c 2 -i 0.2 -W 1 10.44.0.77 >/dev/null 2>&1 &&
  tm_fail "a ping to 10.44.0.77, which no peer owns, was answered"
tm_poll 5 tm__drop_delta_ge A "$SNAP" no_route 2 ||
  tm_check_fail "2 pings to 10.44.0.77, which no peer owns: drop counters grew by" \
    "$(tm_drops_grown A "$SNAP"), want no_route >= 2"

tm_step "the tunnel still works"
tm_ping a 10.44.0.2 5
tm_ping b fd44::1 5
tm_tcp_transfer a b 10.44.0.2 4
tm_tcp_transfer b a 10.44.0.1 4
expect_session_intact "$HS"
tm_log "A's drops at start: $START"
tm_log "A's drops at end:   $(tm_drops A)"
tm_checks_done
