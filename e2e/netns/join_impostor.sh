#!/usr/bin/env bash
# join_impostor.sh: an agent that has not pinned the coordinator's CA never hands its join token
# to an impostor, and pins the real CA only after registering.
#
# Topology: the real coordinator and an impostor (a second tunnelmesh-operator with its own CA
# and another mesh token) on one public segment, and member frank whose traffic to the
# coordinator's gRPC port an nftables DNAT in frank's namespace sends to the impostor (an on-path
# attacker). frank joins without --ca-hash (trust on first use).
#
# Checks: frank exits 1 naming the failed proof, writes no pin, and the impostor answered Hello
# but never received a Register (its registrations and rejected_tokens counters stay 0); without
# the DNAT frank joins the real coordinator, pins its CA and pings alpha; with the DNAT back, a
# restarted frank refuses the impostor's CA against its pin before any call reaches it.
#
# Usage: join_impostor.sh [AGENT_PATH [OPERATOR_PATH]]   (needs root; exits 77 otherwise)

# shellcheck source=nat_lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/nat_lib.sh"
tm_mesh_init join_impostor 90 "$@"

tm_step "topology: coordinator, impostor, alpha and frank on a public segment"
tm_net_public coord
tm_net_public imp
tm_net_public a
tm_net_public f
tm_coord_setup coord
tm_coord_start
tm_member_new alpha a
tm_member_start alpha
IMP=${TM_NET_ADDR[imp]}

tm_step "the impostor: another operator, another CA, another token"
mkdir -p "$TM_WORK/imp.manifests" "$TM_WORK/imp.state"
sed "s/token: \".*\"/token: \"$(head -c 24 /dev/urandom | sha256sum | cut -c1-32)\"/" \
  "$TM_WORK/coord.manifests/mesh.yaml" >"$TM_WORK/imp.manifests/mesh.yaml"
ip netns exec "$(tm_ns imp)" "$TM_OPERATOR" --standalone --manifests "$TM_WORK/imp.manifests" \
  --state-dir "$TM_WORK/imp.state" --grpc-port "$TM_GRPC_PORT" --stun-port "$TM_STUN_PORT" \
  --relay-port "$TM_RELAY_PORT" --no-dns --log-level debug >"$TM_WORK/imp.log" 2>&1 &
TM_BG_PIDS+=("$!")
tm_wait 10 "the impostor to listen" tm__listening imp "$TM_GRPC_PORT"
[[ "$(cat "$TM_WORK/imp.state/ca-hash")" != "$(tm_coord_ca_hash)" ]] ||
  tm_fail "the impostor has the coordinator's CA"

imp_counter() { # NAME: the impostor's coordinator counter NAME
  "$TM_PY" -c 'import json, sys; print(json.load(open(sys.argv[1]))["coordinator"][sys.argv[2]])' \
    "$TM_WORK/imp.state/counters.json" "$1"
}

divert_on() {
  ip netns exec "$(tm_ns f)" nft -f - <<NFT
table ip tm_divert {
  chain out {
    type nat hook output priority -100;
    ip daddr $TM_COORD_ADDR tcp dport $TM_GRPC_PORT dnat to $IMP:$TM_GRPC_PORT
  }
}
NFT
}
divert_off() { ip netns exec "$(tm_ns f)" nft delete table ip tm_divert; }

# frank's join without --ca-hash (the harness's members all pin it).
FRANK_STATE="$TM_WORK/frank.state"
mkdir -p "$FRANK_STATE"
frank_join() { # TIMEOUT: foreground join; exit code in RC, output in OUT
  RC=0
  OUT=$(timeout -k 2 "$1" ip netns exec "$(tm_ns f)" "$TM_AGENT" join \
    "$TM_COORD_ADDR:$TM_GRPC_PORT" --token-file "$(tm_token_file)" --name frank \
    --state-dir "$FRANK_STATE" --interface tmf1 --dns-listen 127.0.0.99 --log-level debug \
    2>&1) || RC=$?
  echo "$OUT" >>"$TM_WORK/frank.log"
}

tm_step "through the impostor: the token is not sent"
divert_on
frank_join 20
tm_log "frank via the impostor: exit $RC"
tm_expect_eq "frank's exit code against the impostor" "$RC" 1
grep -q "could not prove that it knows this join token" <<<"$OUT" ||
  tm_fail "frank did not say why it refused the impostor: $OUT"
[[ ! -e "$FRANK_STATE/coordinator-ca.pem" ]] || tm_fail "frank pinned the impostor's CA"
imp_said_hello() { (( $(imp_counter hellos) >= 1 )); }
tm_wait 5 "the impostor's counters to show frank's Hello" imp_said_hello
sleep 1.2  # One more counters write, after any Register would have arrived.
tm_expect_eq "Registers the impostor received (registrations)" "$(imp_counter registrations)" 0
tm_expect_eq "Registers the impostor received (rejected tokens)" "$(imp_counter rejected_tokens)" 0
grep -q "$(cut -c1-12 "$(tm_token_file)")" "$TM_WORK/imp.log" &&
  tm_fail "the join token appears in the impostor's log"

tm_step "the real coordinator: joined, pinned, traffic flows"
divert_off
ip netns exec "$(tm_ns f)" "$TM_AGENT" join "$TM_COORD_ADDR:$TM_GRPC_PORT" \
  --token-file "$(tm_token_file)" --name frank --state-dir "$FRANK_STATE" --interface tmf1 \
  --dns-listen 127.0.0.99 --log-level debug >>"$TM_WORK/frank.log" 2>&1 &
FRANK=$!
TM_BG_PIDS+=("$FRANK")
tm_wait 10 "frank to register with the real coordinator" tm_coord_registered frank
tm_wait 5 "frank to pin the coordinator's CA" test -s "$FRANK_STATE/coordinator-ca.pem"
grep -q "pinned the coordinator's CA $(tm_coord_ca_hash)" "$TM_WORK/frank.log" ||
  tm_fail "frank did not log the pin of $(tm_coord_ca_hash)"
tm_wait_ping f "$(tm_member_ip alpha 4)" 10
kill -TERM "$FRANK"
tm__wait_exit "$FRANK" 10 || tm_fail "frank did not exit within 10s of SIGTERM"
tm__bg_forget "$FRANK"

tm_step "with a pin, the impostor is refused before any call"
hellos=$(imp_counter hellos)
divert_on
frank_join 20
tm_expect_eq "frank's exit code against the impostor with a pin" "$RC" 1
grep -q "differs from the one pinned" <<<"$OUT" || tm_fail "frank did not name the pin: $OUT"
sleep 1.2
tm_expect_eq "Hellos the impostor received after the pin" "$(imp_counter hellos)" "$hellos"
divert_off

