#!/usr/bin/env bash
# metrics.sh: Prometheus metrics of the operator and the agents, with default flags, on one host.
#
# The coordinator (standalone) and two agents, alpha and gamma, share one network namespace (one
# host); beta runs on another. Every daemon logs with --log-format json.
# Checks:
#   - no collision: the operator serves 127.0.0.1:7702 and alpha 127.0.0.1:7710, both by default;
#     gamma, the second agent on the host, finds 7710 taken, takes a free port, says so in its log
#     and in `status` (self.metrics), and serves there;
#   - every line of the three scrapes parses with the Prometheus project's text parser
#     (python3-prometheus-client), every family has HELP and TYPE, counters end in _total, and the
#     family names are exactly the ones docs/metrics.md lists (less the Kubernetes-only ones);
#   - values move: pings from alpha to beta raise alpha's packet and byte counters for beta by at
#     least what was sent; the path is direct with an RTT; malformed datagrams at alpha's UDP port
#     raise tunnelmesh_agent_drops_total{reason="malformed"} by their number; the operator counts
#     3 members and 3 watch streams, and a join with a wrong token raises its wrong_token refusals;
#   - every family the chart's Grafana dashboard queries is one the binaries export (the
#     Kubernetes-only reconcile metrics: as docs/metrics.md lists them);
#   - the endpoint answers 404 off /metrics and 405 to POST; an agent given the operator's metrics
#     address with --metrics-address exits 1 naming the flag;
#   - `status` shows the path with its RTT and the metrics address; `status --watch` repeats;
#   - json logs: every line the daemons wrote is a JSON object with time, level and msg, and no log
#     holds the join token, a node key, the relay key or a preshared key.
#
# Usage: metrics.sh [AGENT_PATH [OPERATOR_PATH]]   (needs root; exits 77 otherwise)

# shellcheck source=nat_lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/nat_lib.sh"
tm_mesh_init metrics 150 "$@"
PROM="$TM_LIB_DIR/prom.py"
DOCS="$TM_LIB_DIR/../../docs/metrics.md"
"$TM_PY" -c 'import prometheus_client' 2>/dev/null ||
  tm_fail "python3-prometheus-client is not installed (scripts/install-deps.sh installs it)"
command -v curl >/dev/null || tm_fail "curl is not installed (apt-get install curl)"

# scrape NSID ADDRESS NAME: GET /metrics into $TM_WORK/NAME.prom; fails the test on an HTTP error.
scrape() {
  tm_in "$1" curl -sS --fail --max-time 5 "http://$2/metrics" -o "$TM_WORK/$3.prom" ||
    tm_fail "scraping http://$2/metrics ($3) failed"
}
# prom_value NAME METRIC [LABEL=VALUE ...]: a value from the last scrape NAME.
prom_value() {
  local file=$TM_WORK/$1.prom
  shift
  "$TM_PY" "$PROM" value "$file" "$@" || tm_fail "no sample $* in $file"
}
# agent_drop_grown NAME REASON BEFORE N: scrape agent NAME; true once the drop counter grew by N.
agent_drop_grown() {
  scrape "${TM_MEMBER_NSID[$1]}" "${METRICS[$1]}" "$1"
  local now
  now=$(prom_value "$1" tunnelmesh_agent_drops_total "reason=$2")
  echo "$1 drops_total{reason=$2} = $now"
  (( now >= $3 + $4 ))
}

tm_step "topology: the coordinator and agents alpha and gamma on one host, beta on another"
tm_net_public coord
tm_net_public b
tm_coord_setup coord
tm_coord_start --log-format json
tm_member_new alpha coord
tm_member_new beta b
tm_member_new gamma coord 51830
for m in alpha beta gamma; do tm_member_start "$m" --log-format json; done
tm_member_wait_peer 5 alpha beta
tm_member_wait_peer 5 alpha gamma
declare -A METRICS=([alpha]=127.0.0.1:7710 [beta]=127.0.0.1:7710)

tm_step "default addresses: operator 127.0.0.1:7702 and alpha 127.0.0.1:7710 side by side"
tm_expect_eq "alpha: self.metrics" "$(tm_mjson alpha "s['self']['metrics']")" 127.0.0.1:7710
tm_expect_eq "beta: self.metrics" "$(tm_mjson beta "s['self']['metrics']")" 127.0.0.1:7710
GAMMA=$(tm_mjson gamma "s['self']['metrics']")
[[ "$GAMMA" == 127.0.0.1:* && "$GAMMA" != 127.0.0.1:7710 ]] ||
  tm_fail "gamma, the second agent on the host, reports metrics at '$GAMMA' (want 127.0.0.1, another port than 7710)"
METRICS[gamma]=$GAMMA
grep -q "metrics: TCP port 7710 is in use.*serving /metrics on $GAMMA instead" \
  "$(tm_member_log gamma)" || tm_fail "gamma did not log that it took $GAMMA instead of 7710"
scrape coord 127.0.0.1:7702 operator
for m in alpha beta gamma; do scrape "${TM_MEMBER_NSID[$m]}" "${METRICS[$m]}" "$m"; done
tm_expect_eq "operator: leader" "$(prom_value operator tunnelmesh_operator_leader)" 1
tm_expect_eq "alpha: info" "$(prom_value alpha tunnelmesh_agent_info interface="${TM_MEMBER_IF[alpha]}" \
  name=alpha mesh=demo version="$("$TM_AGENT" --version | cut -d' ' -f2-)")" 1
tm_expect_eq "gamma: its own info" "$(prom_value gamma tunnelmesh_agent_info \
  interface="${TM_MEMBER_IF[gamma]}" name=gamma mesh=demo \
  version="$("$TM_AGENT" --version | cut -d' ' -f2-)")" 1

tm_step "traffic: pings from alpha to beta move alpha's counters for beta"
tm_member_wait_path 10 alpha beta direct
tm_member_wait_path 10 alpha gamma direct
tm_wait_ping coord "$(tm_member_ip beta 4)" 10
scrape coord "${METRICS[alpha]}" alpha
TX0=$(prom_value alpha tunnelmesh_agent_peer_transmit_packets_total peer=beta)
RX0=$(prom_value alpha tunnelmesh_agent_peer_receive_bytes_total peer=beta)
tm_ping coord "$(tm_member_ip beta 4)" 10
scrape coord "${METRICS[alpha]}" alpha
TX1=$(prom_value alpha tunnelmesh_agent_peer_transmit_packets_total peer=beta)
RX1=$(prom_value alpha tunnelmesh_agent_peer_receive_bytes_total peer=beta)
tm_log "alpha -> beta: transmit packets $TX0 -> $TX1, receive bytes $RX0 -> $RX1"
tm_expect_gt "alpha: packets sent to beta during 10 pings" "$((TX1 - TX0))" 9
tm_expect_gt "alpha: bytes from beta during 10 pings (10 replies of 84 bytes)" "$((RX1 - RX0))" 839
tm_expect_eq "alpha: path to beta" "$(prom_value alpha tunnelmesh_agent_peer_path peer=beta path=direct)" 1
RTT=$(prom_value alpha tunnelmesh_agent_peer_rtt_seconds peer=beta)
"$TM_PY" -c 'import sys; v = float(sys.argv[1]); sys.exit(0 if 0 < v < 1 else 1)' "$RTT" ||
  tm_fail "alpha: RTT to beta is $RTT s, want between 0 and 1"
tm_expect_gt "alpha: handshakes with beta" "$(prom_value alpha tunnelmesh_agent_peer_handshakes_total peer=beta)" 0
tm_expect_eq "alpha: peers on a direct path" "$(prom_value alpha tunnelmesh_agent_peers path=direct)" 2
tm_expect_eq "alpha: coordinator connected" "$(prom_value alpha tunnelmesh_agent_coordinator_connected)" 1

tm_step "drops: malformed datagrams at alpha's UDP port are counted"
scrape coord "${METRICS[alpha]}" alpha
MAL0=$(prom_value alpha tunnelmesh_agent_drops_total reason=malformed)
# Type 1 (a handshake initiation) with the wrong length: malformed, from beta's host.
tm_in b "$TM_PY" -c '
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
for _ in range(7):
    s.sendto(b"\x01\x00\x00\x00" + b"x" * 20, (sys.argv[1], 51820))
' "$TM_COORD_ADDR"
tm_wait 5 "alpha's malformed drops to grow by 7" agent_drop_grown alpha malformed "$MAL0" 7

tm_step "operator: members, watch streams, refusals and fan-out"
tm_expect_eq "operator: members" \
  "$(prom_value operator tunnelmesh_operator_members mesh=demo kind=External)" 3
tm_expect_eq "operator: watch streams" \
  "$(prom_value operator tunnelmesh_operator_watch_streams mesh=demo kind=External)" 3
tm_expect_gt "operator: registrations" "$(prom_value operator tunnelmesh_operator_registrations_total)" 2
tm_expect_gt "operator: deltas timed in the fan-out histogram" \
  "$(prom_value operator tunnelmesh_operator_fanout_seconds_count)" 0
tm_expect_gt "operator: relay sessions" "$(prom_value operator tunnelmesh_operator_relay_sessions)" 0
WRONG0=$(prom_value operator tunnelmesh_operator_registration_refusals_total reason=wrong_token)
echo "not the token" >"$TM_WORK/wrong-token"
tm_member_new mallory b 51840
tm_member_join_once mallory "$TM_WORK/wrong-token" 10
tm_expect_eq "a join with a wrong token: exit code" "$TM_JOIN_RC" 1
scrape coord 127.0.0.1:7702 operator
tm_expect_gt "operator: wrong_token refusals after a wrong join token" \
  "$(prom_value operator tunnelmesh_operator_registration_refusals_total reason=wrong_token)" "$WRONG0"

tm_step "every line parses with the Prometheus text parser; the families are the documented ones"
for m in operator alpha beta gamma; do
  "$TM_PY" "$PROM" check "$TM_WORK/$m.prom" >"$TM_WORK/$m.families" ||
    tm_fail "$m's scrape does not parse (saved as $TM_WORK/$m.prom)"
  tm_log "$m: $(wc -l <"$TM_WORK/$m.families") families, $(grep -vc '^#' "$TM_WORK/$m.prom") samples"
done
for kind in agent operator; do
  "$TM_PY" "$PROM" docs "$DOCS" "tunnelmesh_${kind}_" >"$TM_WORK/$kind.documented"
  want=$(grep -v ' k8s$' "$TM_WORK/$kind.documented" | sort)
  from=alpha
  [[ $kind == operator ]] && from=operator
  got=$(sort "$TM_WORK/$from.families")
  [[ "$got" == "$want" ]] ||
    tm_fail "$from exports other families than docs/metrics.md lists:" \
      "$(diff <(echo "$want") <(echo "$got"))"
done

tm_step "the Grafana dashboard queries only exported families"
DASHBOARD="$TM_LIB_DIR/../../charts/tunnelmesh/dashboards/tunnelmesh.json"
K8S_ONLY=$(grep ' k8s$' "$TM_WORK/operator.documented" | cut -d' ' -f1)
USED=$("$TM_PY" "$PROM" dashboard "$DASHBOARD")
tm_expect_gt "families the dashboard uses" "$(wc -l <<<"$USED")" 20
while read -r name; do
  grep -qx "$name" "$TM_WORK/alpha.families" "$TM_WORK/operator.families" ||
    grep -qx "$name" <<<"$K8S_ONLY" ||
    tm_fail "the dashboard queries $name, which neither binary exports"
done <<<"$USED"

tm_step "HTTP: 404 off /metrics, 405 for POST"
tm_expect_eq "GET /" "$(tm_in coord curl -s -o /dev/null -w '%{http_code}' http://127.0.0.1:7710/)" 404
tm_expect_eq "POST /metrics" \
  "$(tm_in coord curl -s -o /dev/null -w '%{http_code}' -X POST http://127.0.0.1:7702/metrics)" 405

tm_step "a busy --metrics-address stops the agent with 1, naming the flag"
tm_member_new delta coord 51850
tm_member_join_once delta "$(tm_token_file)" 15 --metrics-address 127.0.0.1:7702
tm_expect_eq "delta with the operator's metrics port: exit code" "$TM_JOIN_RC" 1
grep -q "127.0.0.1:7702 is already in use.*--metrics-address" <<<"$TM_JOIN_OUT" ||
  tm_fail "delta's error does not name the busy address and --metrics-address: $TM_JOIN_OUT"

tm_step "status shows the path with its RTT and the metrics address; --watch repeats"
TEXT=$(tm_in coord "$TM_AGENT" status --interface "${TM_MEMBER_IF[alpha]}" \
  --state-dir "$(tm_member_state alpha)")
grep -qE "path: direct, rtt [0-9]+\.[0-9] ms" <<<"$TEXT" || tm_fail "status lacks the RTT: $TEXT"
grep -q "metrics: 127.0.0.1:7710" <<<"$TEXT" || tm_fail "status lacks the metrics address: $TEXT"
WATCH=$(tm_in coord timeout 2 "$TM_AGENT" status --watch --interval 300ms --json \
  --interface "${TM_MEMBER_IF[alpha]}" --state-dir "$(tm_member_state alpha)") || true
REPORTS=$(grep -c '"self"' <<<"$WATCH" || true)
tm_expect_gt "status --watch reports in 2 s at 300 ms" "$REPORTS" 2

tm_step "json logs: objects with time, level and msg; no secrets"
SECRETS=("$(cat "$(tm_token_file)")")
for m in alpha beta gamma; do SECRETS+=("$(cat "$(tm_member_state "$m")/node.key")"); done
SECRETS+=("$(cat "$(tm_coord_state)/relay.key")")
mapfile -t -O "${#SECRETS[@]}" SECRETS < <("$TM_PY" -c '
import json, re, sys
text = open(sys.argv[1]).read()
for key in set(re.findall(r"[A-Za-z0-9+/]{43}=", text)):
    print(key)
' "$(tm_coord_state)/preshared-keys.json")
tm_log "checking ${#SECRETS[@]} secrets against the logs"
for log in "$(tm_coord_log)" "$(tm_member_log alpha)" "$(tm_member_log beta)" \
  "$(tm_member_log gamma)"; do
  "$TM_PY" -c '
import json, sys
n = 0
for number, line in enumerate(open(sys.argv[1]), 1):
    line = line.rstrip("\n")
    if not line or line.startswith("====="):
        continue  # The harness marks starts and stops.
    try:
        o = json.loads(line)
    except ValueError:
        sys.exit("%s:%d is not JSON: %s" % (sys.argv[1], number, line))
    if not isinstance(o, dict) or not all(isinstance(o.get(k), str) for k in ("time", "level", "msg")):
        sys.exit("%s:%d lacks time, level or msg: %s" % (sys.argv[1], number, line))
    n += 1
if n < 3:
    sys.exit("%s: only %d log lines" % (sys.argv[1], n))
' "$log" || tm_fail "a log line is not a JSON object with time, level and msg"
  for secret in "${SECRETS[@]}"; do
    [[ ${#secret} -ge 20 ]] || tm_fail "a secret to look for is too short (${#secret} characters)"
    grep -qF -- "$secret" "$log" && tm_fail "a secret (${secret:0:4}...) appears in $log"
  done
done
tm_member_alive alpha
tm_coord_alive
