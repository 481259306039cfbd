#!/usr/bin/env bash
# join_bad_input.sh: hostile bytes at every port of the coordinator, then members still join.
#
# From a public "attacker" namespace, with a fixed seed (TM_SEED, default 1): thousands of garbage
# UDP datagrams and malformed STUN messages (lying lengths, truncated and oversized attributes,
# responses instead of requests, 0 and 65507 bytes) at the STUN port; connections sending random
# bytes, a fake TLS record, a cleartext HTTP/2 preface and garbage at the gRPC port; random bytes,
# broken HTTP, a 64 KiB header line and a WebSocket upgrade followed by garbage and absurd frame
# lengths at the relay port; and idle, half-sent connections held open on both TCP ports while a
# new member joins.
#
# Checks: the coordinator keeps running; it still answers a valid STUN Binding request with the
# attacker's address; the member that joined before the attack still lists its peers; a member
# joins during the held connections and another after the attack from a site that blocks UDP, so
# that its traffic goes through the relay; all reach each other.
#
# Then mistakes at the command line, each with its message and exit code (2 usage, 1 runtime):
# --version on both binaries; no subcommand (lists every one); COORDINATOR as a URL, a path or
# empty; a token file that is missing (a token pasted as the path is not echoed), empty or
# unreadable; a missing token flag, a bad --kind and a missing --config while alpha serves the same
# socket (their own messages, not "another agent already serves"); join --timeout (bad value; 2 s
# against a closed port); as nobody, a state dir and a manifest dir it may not use (Permission
# denied); the operator without --standalone or a kubeconfig; join without --name (the host name)
# and a second such member (suffix and warning); leave on a config-file agent; a normal leave that
# logs no warning; leave while the coordinator is down.
#
# Usage: join_bad_input.sh [AGENT_PATH [OPERATOR_PATH]]   (needs root; exits 77 otherwise)

# shellcheck source=nat_lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/nat_lib.sh"
tm_mesh_init join_bad_input 160 "$@"

SEED=${TM_SEED:-1}
GARBAGE_PY="$TM_WORK/garbage.py"
cat >"$GARBAGE_PY" <<'PYEOF'
"""Hostile input for the coordinator's ports. Usage:
  garbage.py blast HOST STUN_PORT GRPC_PORT RELAY_PORT SEED   one pass over every port
  garbage.py hold HOST GRPC_PORT RELAY_PORT SECONDS           idle and half-sent connections
  garbage.py stun HOST STUN_PORT                              one valid Binding request
Prints a JSON summary; exits 3 when the STUN check gets no valid answer."""
import json, os, random, socket, struct, sys, time

COOKIE = 0x2112A442

def stun_header(msg_type, length, txid):
    return struct.pack("!HHI", msg_type, length, COOKIE) + txid

def udp_blast(host, port, rng):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sent = {"random": 0, "stun_malformed": 0, "oversized": 0, "empty": 0}
    def send(data, kind):
        try:
            s.sendto(data, (host, port))
            sent[kind] += 1
        except OSError:
            pass
    for _ in range(3000):
        send(rng.randbytes(rng.randrange(1, 1500)), "random")
    for i in range(1500):
        txid = rng.randbytes(12)
        kind = i % 6
        if kind == 0:    # header claims more than is there
            data = stun_header(0x0001, rng.choice([4, 64, 1000, 0xFFFC]), txid) + rng.randbytes(8)
        elif kind == 1:  # length not a multiple of 4
            data = stun_header(0x0001, 7, txid) + rng.randbytes(7)
        elif kind == 2:  # attribute length runs past the end
            attr = struct.pack("!HH", 0x0020, 0xFFF0) + rng.randbytes(8)
            data = stun_header(0x0001, len(attr), txid) + attr
        elif kind == 3:  # XOR-MAPPED-ADDRESS with a bad family and a short body
            attr = struct.pack("!HHBB", 0x0020, 2, 0, rng.randrange(256))
            data = stun_header(0x0001, len(attr), txid) + attr + b"\0\0"
        elif kind == 4:  # a success response or error sent to the server
            data = stun_header(rng.choice([0x0101, 0x0111, 0x0017]), 0, txid)
        else:            # truncated header
            data = stun_header(0x0001, 0, txid)[: rng.randrange(1, 20)]
        send(data, "stun_malformed")
    for _ in range(5):
        send(rng.randbytes(65507), "oversized")
    for _ in range(5):
        send(b"", "empty")
    s.close()
    return sent

def tcp_send(host, port, payload, read=True):
    try:
        c = socket.create_connection((host, port), timeout=2)
    except OSError as e:
        return "refused" if isinstance(e, ConnectionRefusedError) else "connect_error"
    try:
        c.sendall(payload)
        if read:
            c.settimeout(1)
            try:
                c.recv(65536)
            except OSError:
                pass
        return "sent"
    except OSError:
        return "reset"
    finally:
        c.close()

def tcp_blast(host, port, rng, relay):
    out = {}
    def note(r):
        out[r] = out.get(r, 0) + 1
    for _ in range(30):
        note(tcp_send(host, port, rng.randbytes(rng.randrange(1, 65536)), read=False))
    for _ in range(5):  # a TLS handshake record with a lying length, then garbage
        note(tcp_send(host, port, b"\x16\x03\x01\xff\xff" + rng.randbytes(300)))
    for _ in range(5):  # cleartext HTTP/2 at a TLS port
        note(tcp_send(host, port, b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + rng.randbytes(100)))
    if relay:
        note(tcp_send(host, port, b"GET /relay HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n\r\n"))
        note(tcp_send(host, port, b"GET /relay HTTP/1.1\r\nX: " + b"a" * 65536 + b"\r\n\r\n"))
        note(tcp_send(host, port, b"\r\n" * 1000 + b"BREW / HTCPCP/1.0\r\n\r\n"))
        upgrade = (b"GET /relay HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
                   b"Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
                   b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n")
        for frame in (rng.randbytes(200),
                      b"\x82\xff" + struct.pack("!Q", 2**63 - 1) + rng.randbytes(16),
                      b"\x82\xfe\xff\xff" + rng.randbytes(4) + rng.randbytes(100),
                      b"\x88\x80" + rng.randbytes(4),
                      b"\x81\x85" + rng.randbytes(4) + b"\xff\xfe\xfd\xfc\xfb"):
            note(tcp_send(host, port, upgrade + frame))
    return out

def hold(host, ports, seconds):
    held = []
    for port in ports:
        for i in range(20):
            try:
                c = socket.create_connection((host, port), timeout=2)
                if i % 2:
                    c.sendall(b"\x16\x03\x01\x02\x00\x01")  # half a TLS record, then silence
                held.append(c)
            except OSError:
                pass
    time.sleep(seconds)
    for c in held:
        c.close()
    return {"held": len(held)}

def stun_check(host, port):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("0.0.0.0", 0))
    s.settimeout(1)
    for _ in range(3):
        txid = os.urandom(12)
        s.sendto(stun_header(0x0001, 0, txid), (host, port))
        try:
            data, _ = s.recvfrom(2048)
        except socket.timeout:
            continue
        if len(data) < 20 or data[8:20] != txid:
            continue
        msg_type, length = struct.unpack("!HH", data[:4])
        pos, end = 20, 20 + length
        while pos + 4 <= end and pos + 4 <= len(data):
            at, al = struct.unpack("!HH", data[pos:pos + 4])
            body = data[pos + 4:pos + 4 + al]
            if at == 0x0020 and al >= 8 and body[1] == 1:
                xport = struct.unpack("!H", body[2:4])[0] ^ (COOKIE >> 16)
                xip = struct.unpack("!I", body[4:8])[0] ^ COOKIE
                return {"stun": "ok", "type": hex(msg_type),
                        "mapped": "%s:%d" % (socket.inet_ntoa(struct.pack("!I", xip)), xport),
                        "local_port": s.getsockname()[1]}
            pos += 4 + ((al + 3) & ~3)
        return {"stun": "answer without XOR-MAPPED-ADDRESS", "type": hex(msg_type)}
    return {"stun": "no answer"}

mode = sys.argv[1]
if mode == "blast":
    host, stun_port, grpc_port, relay_port, seed = sys.argv[2], *map(int, sys.argv[3:7])
    rng = random.Random(seed)
    print(json.dumps({"udp_stun": udp_blast(host, stun_port, rng),
                      "tcp_grpc": tcp_blast(host, grpc_port, rng, relay=False),
                      "tcp_relay": tcp_blast(host, relay_port, rng, relay=True)}))
elif mode == "hold":
    print(json.dumps(hold(sys.argv[2], [int(sys.argv[3]), int(sys.argv[4])], float(sys.argv[5]))))
elif mode == "stun":
    r = stun_check(sys.argv[2], int(sys.argv[3]))
    print(json.dumps(r))
    sys.exit(0 if r["stun"] == "ok" else 3)
PYEOF

tm_step "topology: coordinator, a member and an attacker on a public segment"
tm_net_public coord
tm_net_public a
tm_net_public b
tm_net_site s1 udp_blocked
tm_net_site_host s1 c
tm_net_public x
tm_coord_setup coord
tm_coord_start
tm_member_new alpha a
tm_member_start alpha

tm_step "a valid STUN request is answered before the attack"
STUN_BEFORE=$(tm_in x "$TM_PY" "$GARBAGE_PY" stun "$TM_COORD_ADDR" "$TM_STUN_PORT") ||
  tm_fail "the coordinator does not answer STUN at $TM_COORD_ADDR:$TM_STUN_PORT even before the" \
    "attack: $STUN_BEFORE"
tm_log "STUN before: $STUN_BEFORE"

tm_step "garbage at the STUN, gRPC and relay ports (seed $SEED)"
SUMMARY=$(tm_in x timeout 60 "$TM_PY" "$GARBAGE_PY" blast "$TM_COORD_ADDR" "$TM_STUN_PORT" \
  "$TM_GRPC_PORT" "$TM_RELAY_PORT" "$SEED") || tm_fail "the garbage sender failed: $SUMMARY"
tm_log "sent: $SUMMARY"
tm_coord_alive
if grep -q '"refused"' <<<"$SUMMARY"; then
  tm_log "note: a port refused connections (the relay may not be built in)"
fi

tm_step "the coordinator still serves"
STUN_AFTER=$(tm_in x "$TM_PY" "$GARBAGE_PY" stun "$TM_COORD_ADDR" "$TM_STUN_PORT") ||
  tm_fail "the coordinator no longer answers a valid STUN Binding request: $STUN_AFTER"
tm_expect_eq "STUN mapped address" \
  "$("$TM_PY" -c 'import json, sys; print(json.loads(sys.argv[1])["mapped"].split(":")[0])' \
    "$STUN_AFTER")" "${TM_NET_ADDR[x]}"
tm_mjson alpha "s['self']['name']" >/dev/null

tm_step "a member joins while idle and half-sent connections are held open"
tm_bg_in x "$TM_PY" "$GARBAGE_PY" hold "$TM_COORD_ADDR" "$TM_GRPC_PORT" "$TM_RELAY_PORT" 15 \
  >"$TM_WORK/hold.out" 2>&1
HOLD_PID=$TM_BG_PID
holding() { (( $(tm_in coord ss -Htn state established "( sport = :$TM_GRPC_PORT )" | wc -l) >= 20 )); }
tm_wait 10 "the attacker to hold 20 connections to the gRPC port" holding
tm_member_new beta b
tm_member_start beta
tm_member_wait_peer 5 alpha beta
tm_member_wait_peer 5 beta alpha
tm_wait_ping a "$(tm_member_ip beta 4)" 10

tm_step "a member joins after the attack, from a site that blocks UDP (so through the relay)"
kill -TERM "$HOLD_PID" 2>/dev/null || true
tm__wait_exit "$HOLD_PID" 5 || true
tm__bg_forget "$HOLD_PID"
tm_coord_alive
tm_member_new gamma c
# --no-ssh: behind the UDP-blocking site gamma would otherwise reach alpha over the SSH path (TCP
# out is open); this checks the relay.
tm_member_start gamma --no-ssh
for m in alpha beta; do tm_member_wait_peer 5 "$m" gamma; done
tm_wait_ping c "$(tm_member_ip alpha 4)" 15
tm_ping c "$(tm_member_ip beta 4)" 3
tm_ping a "$(tm_member_ip gamma 4)" 3
tm_expect_eq "gamma: path to alpha" "$(tm_mpeer_get gamma alpha path)" relay
tm_mjson gamma "s['self']['mesh_ips']" >/dev/null
tm_coord_alive

tm_step "every rejection was counted (STATE_DIR/counters.json, rewritten each second)"
counter() { # SECTION NAME
  "$TM_PY" -c 'import json, sys; print(json.load(open(sys.argv[1]))[sys.argv[2]][sys.argv[3]])' \
    "$(tm_coord_state)/counters.json" "$1" "$2"
}
counted() { (( $(counter stun malformed) > 0 && $(counter relay bad_upgrades) + $(counter relay malformed) > 0 )); }
tm_wait 5 "counters.json to show the garbage sent at the STUN and relay ports" counted
tm_log "counted: stun.malformed=$(counter stun malformed) relay.bad_upgrades=$(counter relay bad_upgrades)" \
  "relay.malformed=$(counter relay malformed) coordinator.members=$(counter coordinator members)"
tm_expect_eq "members after the attack" "$(counter coordinator members)" 3

# ---------------------------------------------------------------------------------------------
# Mistakes at the command line: each refusal's message and exit code (2 usage: flags, config,
# files; 1 runtime).

# expect_refusal DESCRIPTION CODE PATTERN COMMAND...: COMMAND exits CODE and prints PATTERN
# (grep -E); the output is left in REFUSAL_OUT.
expect_refusal() {
  local what=$1 want=$2 pattern=$3 rc=0 run=()
  shift 3
  # `timeout` runs programs, not shell functions: tm_in NSID becomes ip netns exec NS.
  if [[ "$1" == tm_in ]]; then
    run=(ip netns exec "$(tm_ns "$2")")
    shift 2
  fi
  REFUSAL_OUT=$(timeout -k 2 20 "${run[@]}" "$@" 2>&1) || rc=$?
  tm_log "$what: exit $rc: $REFUSAL_OUT"
  [[ "$rc" == "$want" ]] || tm_check_fail "$what: exit code $rc, want $want ($REFUSAL_OUT)"
  grep -Eq -- "$pattern" <<<"$REFUSAL_OUT" ||
    tm_check_fail "$what: the output lacks /$pattern/: $REFUSAL_OUT"
}
COORD="$TM_COORD_ADDR:$TM_GRPC_PORT"
TOKEN=$(tm_token_file)
ALPHA_SLOT=(--interface "${TM_MEMBER_IF[alpha]}" --state-dir "$(tm_member_state alpha)")

tm_step "--version, and no subcommand"
expect_refusal "agent --version" 0 '^tunnelmesh-agent [0-9]+\.[0-9]+\.[0-9]+' "$TM_AGENT" --version
expect_refusal "operator --version" 0 '^tunnelmesh-operator [0-9]+\.[0-9]+\.[0-9]+' \
  "$TM_OPERATOR" --version
expect_refusal "agent without arguments" 2 \
  'nothing to do: give --config FILE, or a subcommand \(genkey, genpsk, pubkey, status, join, leave' \
  "$TM_AGENT"

tm_step "COORDINATOR: a URL, a path and an empty string are refused with the accepted forms"
FORMS='give HOST, HOST:PORT, \[IPv6\]:PORT or an IPv6 address'
expect_refusal "join https://..." 2 "is not an address: $FORMS.*no https://" \
  tm_in a "$TM_AGENT" join "https://$COORD" --token-file "$TOKEN"
expect_refusal "join HOST/PATH" 2 "$FORMS.*without a path" \
  tm_in a "$TM_AGENT" join "$TM_COORD_ADDR/mesh" --token-file "$TOKEN"
expect_refusal "join ''" 2 "COORDINATOR \"\" is not an address: $FORMS" \
  tm_in a "$TM_AGENT" join "" --token-file "$TOKEN"

tm_step "token files: missing (a pasted token is not echoed), empty, unreadable"
PASTED=$(cat "$TOKEN")
expect_refusal "--token-file TOKEN_ITSELF" 2 '--token-file: cannot read the file: No such file' \
  tm_in a "$TM_AGENT" join "$COORD" --token-file "$PASTED"
if grep -qF -- "$PASTED" <<<"$REFUSAL_OUT"; then
  tm_check_fail "the token given as --token-file was echoed: $REFUSAL_OUT"
fi
: >"$TM_WORK/empty-token"
expect_refusal "empty token file" 2 '--token-file: the file is empty' \
  tm_in a "$TM_AGENT" join "$COORD" --token-file "$TM_WORK/empty-token"
NOBODY=(setpriv --reuid=65534 --regid=65534 --clear-groups)
expect_refusal "token file this user may not read" 2 \
  '--token-file: cannot read the file: Permission denied' \
  tm_in a "${NOBODY[@]}" "$TM_AGENT" join "$COORD" --token-file "$TOKEN"

tm_step "flag and file mistakes show before a running agent's socket check"
expect_refusal "no token flag, on alpha's socket" 2 'give exactly one of --token-file' \
  tm_in a "$TM_AGENT" join "$COORD" "${ALPHA_SLOT[@]}"
expect_refusal "--kind node, on alpha's socket" 2 '--kind "node" is not one of' \
  tm_in a "$TM_AGENT" join "$COORD" --token-file "$TOKEN" --kind node "${ALPHA_SLOT[@]}"
expect_refusal "--config of a missing file, on alpha's socket" 2 '/nope\.conf' \
  tm_in a "$TM_AGENT" --config /nope.conf "${ALPHA_SLOT[@]}"
if grep -q 'another agent already serves' <<<"$REFUSAL_OUT"; then
  tm_check_fail "the socket check hid the config error: $REFUSAL_OUT"
fi
expect_refusal "valid flags on alpha's socket" 1 'another agent already serves .*: pick another' \
  tm_in a "$TM_AGENT" join "$COORD" --token-file "$TOKEN" "${ALPHA_SLOT[@]}"

tm_step "join --timeout"
expect_refusal "--timeout soon" 2 '--timeout "soon" is not a duration' \
  tm_in a "$TM_AGENT" join "$COORD" --token-file "$TOKEN" --timeout soon
START_MS=$(tm__now_ms)
expect_refusal "--timeout 2s against a port where nothing listens" 1 \
  'gave up after 2s \(--timeout\): could not fetch the CA certificate of the coordinator at .*connection refused' \
  tm_in a "$TM_AGENT" join "$TM_COORD_ADDR:1" --token-file "$TOKEN" --timeout 2s \
  --state-dir "$TM_WORK/timeout.state" --interface tmto --no-dns --listen-port 0
TOOK_MS=$(( $(tm__now_ms) - START_MS ))
(( TOOK_MS >= 1900 && TOOK_MS <= 6000 )) ||
  tm_check_fail "join --timeout 2s took ${TOOK_MS} ms (want about 2 s)"

tm_step "errno in the words: a state dir and a manifest dir this user may not use"
NOBODY_DIR=$(mktemp -d /tmp/tm-nobody.XXXXXX)
chmod 755 "$NOBODY_DIR"
install -m 644 "$TOKEN" "$NOBODY_DIR/token"
# Directories only root may use, under one this user may traverse (as /var/lib and /etc are).
mkdir -m 700 "$NOBODY_DIR/root-only" "$NOBODY_DIR/manifests"
cp "$TM_WORK/coord.manifests/mesh.yaml" "$NOBODY_DIR/manifests/"
expect_refusal "join as a user who may not write --state-dir" 1 \
  'the node key .*Permission denied.*join runs as root' \
  tm_in a "${NOBODY[@]}" "$TM_AGENT" join "$COORD" --token-file "$NOBODY_DIR/token" \
  --state-dir "$NOBODY_DIR/root-only/agent" --interface tmnb --no-dns
expect_refusal "coordinator as a user who may not read --manifests" 2 \
  'cannot read the manifest directory \(--manifests\) .*: Permission denied' \
  "${NOBODY[@]}" "$TM_OPERATOR" --standalone --manifests "$NOBODY_DIR/manifests" \
  --state-dir "$NOBODY_DIR/coord"
expect_refusal "operator without --standalone or a kubeconfig" 2 \
  'no Kubernetes API server configured.*pass --standalone --manifests DIR --state-dir DIR' \
  env -u KUBECONFIG -u KUBERNETES_SERVICE_HOST -u KUBERNETES_SERVICE_PORT "$TM_OPERATOR" \
  --state-dir "$NOBODY_DIR/kube"
rm -rf "$NOBODY_DIR"

tm_step "without --name a member is named after the host; a second one with that name is warned"
HOST_LABEL=$(hostname | cut -d. -f1 | tr 'A-Z' 'a-z' | sed -E 's/[^a-z0-9]+/-/g; s/^-+//; s/-+$//' |
  cut -c1-63)
named_join() { # NAME: a join without --name for 4 s in namespace b, output in $TM_WORK/NAME.out
  timeout -k 3 4 ip netns exec "$(tm_ns b)" "$TM_AGENT" join "$COORD" --token-file "$TOKEN" \
    --ca-hash "$(tm_coord_ca_hash)" --state-dir "$TM_WORK/$1.state" --interface "$1" --no-dns \
    --listen-port 0 --log-level info >"$TM_WORK/$1.out" 2>&1 || true
  tm_log "join without --name ($1):"$'\n'"$(cat "$TM_WORK/$1.out")"
}
if [[ -n "$HOST_LABEL" ]]; then
  named_join tmh1
  grep -q "registered as $HOST_LABEL with" "$TM_WORK/tmh1.out" ||
    tm_check_fail "join without --name did not register as \"$HOST_LABEL\" (the host name)"
  named_join tmh2
  grep -Eq "registered as \"$HOST_LABEL-[a-z0-9]+\", not \"$HOST_LABEL\": another member \(another node key\) already holds that name" \
    "$TM_WORK/tmh2.out" ||
    tm_check_fail "a second member named after the host was not warned about the renaming"
  grep -Eq " W .*already holds that name" "$TM_WORK/tmh2.out" ||
    tm_check_fail "the renaming is not logged at warning level"
else
  tm_log "the host name gives no DNS label; the coordinator names such members itself"
fi

tm_step "leave: an agent from a config file; a normal leave; the coordinator down"
tm_node_new cfg agent b 51990 "10.77.0.1/24"
tm_node_start cfg
expect_refusal "leave on a config-file agent" 1 \
  'runs from a config file and has no coordinator; stop it instead' \
  tm_in b "$TM_AGENT" leave --interface "$(tm_if cfg)" --state-dir "$TM_WORK/cfg.state"
if grep -q '{' <<<"$REFUSAL_OUT"; then tm_check_fail "leave printed JSON: $REFUSAL_OUT"; fi
tm_node_stop cfg
BETA_LINES=$(wc -l <"$(tm_member_log beta)")
tm_member_leave beta 5
tail -n +"$(( BETA_LINES + 1 ))" "$(tm_member_log beta)" >"$TM_WORK/beta.leave.log"
if grep -E ' (W|E) ' "$TM_WORK/beta.leave.log"; then
  tm_check_fail "a normal leave logged a warning or error (above)"
fi
tm_coord_stop
expect_refusal "leave while the coordinator is down" 1 \
  "leave: cannot reach the coordinator at $TM_COORD_ADDR:$TM_GRPC_PORT \(connection refused\): the member stays registered; try again when it is up" \
  tm_in c "$TM_AGENT" leave --interface "${TM_MEMBER_IF[gamma]}" \
  --state-dir "$(tm_member_state gamma)"
if grep -Eq '\{|failed to connect to all addresses' <<<"$REFUSAL_OUT"; then
  tm_check_fail "leave printed JSON or gRPC text: $REFUSAL_OUT"
fi
tm_member_alive gamma
tm_checks_done
