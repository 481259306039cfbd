#!/usr/bin/env bash
# harness_selftest.sh: the harness itself, with wireguard-go at both ends and no tunnelmesh code.
#
# When this passes and an agent scenario fails, the failure is the agent's; when this fails, the
# machine or the harness is at fault (missing tools, namespaces, TUN, a broken lib.sh). It uses
# every building block the scenarios use: namespaces, veth with IPv4 and IPv6, wireguard-go nodes
# with a preshared key and an IPv6 endpoint, ping, the checksummed TCP transfer, iperf3, the
# AF_PACKET capture and replay of an initiation (wireguard-go's log must report the replay), a
# crash and restart, a clean stop, and `wg show` readings.
#
# Usage: harness_selftest.sh   (needs root, exits 77 otherwise)

# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
tm_init harness_selftest 60 "$@"

tm_ns_new a
tm_ns_new b
tm_veth a veth0 b veth0 "10.0.0.1/24 fd00::1/64" "10.0.0.2/24 fd00::2/64"
tm_node_new X wg a 51820 "10.44.0.1/24, fd44::1/64"
tm_node_new Y wg b 51821 "10.44.0.2/24, fd44::2/64"
tm_psk_new xy
tm_node_peer X Y endpoint="$(tm_endpoint fd00::2 51821)" psk=xy
tm_node_peer Y X endpoint=10.0.0.1:51820 psk=xy
tm_node_start X
tm_node_start Y

tm_bg_in a "$TM_PY" "$TM_LIB_DIR/wgpkt.py" capture --iface veth0 --port 51820 --types 1,4 \
  --out "$TM_WORK/capture" --timeout 10 >"$TM_WORK/capture.log" 2>&1
CAP_PID=$TM_BG_PID
tm_wait 5 "the sniffer to start" test -e "$TM_WORK/capture/ready"
tm_wait_ping b 10.44.0.1 10
tm__wait_exit "$CAP_PID" 15 || tm_fail "the sniffer did not finish"
(( TM_EXIT_RC == 0 )) || tm_fail "capture failed: $(cat "$TM_WORK/capture.log")"

tm_ping a fd44::2 3
tm_tcp_transfer a b 10.44.0.2 4
tm_tcp_transfer b a fd44::1 4
tm_iperf a b 10.44.0.2 1
tm_log "iperf3 through wireguard-go: $(tm_gbps "$TM_IPERF_BPS") Gbit/s"
tm_expect_handshake X Y
# X was configured with Y's IPv6 address but Y talks from its IPv4 one: X follows (roaming).
tm_expect_eq "X: endpoint of Y" "$(tm_peer_get X Y endpoint)" 10.0.0.2:51821
tm_expect_eq "Y: endpoint of X" "$(tm_peer_get Y X endpoint)" 10.0.0.1:51820
tm_expect_gt "X: rx_bytes from Y" "$(tm_peer_get X Y rx_bytes)" 0

tm_in b "$TM_PY" "$TM_LIB_DIR/wgpkt.py" send --dst 10.0.0.1 --port 51820 \
  --file "$TM_WORK/capture/type1.bin"
tm_wait 5 "wireguard-go to log the replayed initiation" \
  grep -q "handshake replay" "$(tm_node_log X)"
tm_in b "$TM_PY" "$TM_LIB_DIR/wgpkt.py" garbage --dst 10.0.0.1 --port 51820 --gap 0 >/dev/null
tm_wait 5 "wireguard-go to log an invalid mac1" grep -q "invalid mac1" "$(tm_node_log X)"

since=$(date +%s)
tm_node_kill Y
tm_node_start Y
tm_wait_ping b 10.44.0.1 10
tm_expect_handshake X Y "$since"
tm_node_stop Y
tm_node_stop X
