#!/usr/bin/env bash
# The local mesh demo, no cluster needed: installs what is needed, builds, then starts two
# tunnelmesh-agent members ("alice" and "bob") in their own network namespaces joined by a virtual
# cable, lets them handshake, pings across the encrypted tunnel over IPv4 and IPv6, moves data over
# TCP, and prints `tunnelmesh-agent status` for both. Everything it creates is removed on exit.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" -ne 0 ]; then
  echo "demo: needs root for network namespaces and TUN devices: sudo $0" >&2
  exit 1
fi
bash scripts/install-deps.sh
bash scripts/build.sh
agent="$PWD/build/bin/tunnelmesh-agent"

work=$(mktemp -d /tmp/tunnelmesh-demo.XXXXXX)
ns_a="tmdemo-alice-$$"
ns_b="tmdemo-bob-$$"
cleanup() {
  for pidfile in "$work"/*.pid; do
    [ -f "$pidfile" ] && kill "$(cat "$pidfile")" 2>/dev/null || true
  done
  sleep 0.3
  ip netns del "$ns_a" 2>/dev/null || true
  ip netns del "$ns_b" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

echo "==> creating two hosts (network namespaces) on a shared link 192.0.2.0/24"
ip netns add "$ns_a"
ip netns add "$ns_b"
ip link add tmdemo-a netns "$ns_a" type veth peer name tmdemo-b netns "$ns_b"
ip -n "$ns_a" addr add 192.0.2.1/24 dev tmdemo-a
ip -n "$ns_b" addr add 192.0.2.2/24 dev tmdemo-b
for ns in "$ns_a" "$ns_b"; do
  ip -n "$ns" link set lo up
done
ip -n "$ns_a" link set tmdemo-a up
ip -n "$ns_b" link set tmdemo-b up

echo "==> generating keys"
key_a=$("$agent" genkey); pub_a=$(echo "$key_a" | "$agent" pubkey)
key_b=$("$agent" genkey); pub_b=$(echo "$key_b" | "$agent" pubkey)
umask 077
cat > "$work/alice.conf" <<CONF
[Interface]
PrivateKey = $key_a
ListenPort = 51820
Address = 10.99.0.1/24, fd99:99::1/64

[Peer]
# bob
PublicKey = $pub_b
Endpoint = 192.0.2.2:51820
AllowedIPs = 10.99.0.2/32, fd99:99::2/128
CONF
cat > "$work/bob.conf" <<CONF
[Interface]
PrivateKey = $key_b
ListenPort = 51820
Address = 10.99.0.2/24, fd99:99::2/64

[Peer]
# alice
PublicKey = $pub_a
Endpoint = 192.0.2.1:51820
AllowedIPs = 10.99.0.1/32, fd99:99::1/128
CONF

echo "==> starting tunnelmesh-agent for alice and bob"
ip netns exec "$ns_a" "$agent" --config "$work/alice.conf" --interface tm-alice \
  --state-dir "$work" >"$work/alice.log" 2>&1 &
echo $! >"$work/alice.pid"
ip netns exec "$ns_b" "$agent" --config "$work/bob.conf" --interface tm-bob \
  --state-dir "$work" >"$work/bob.log" 2>&1 &
echo $! >"$work/bob.pid"
for i in $(seq 50); do
  [ -S "$work/tm-alice.sock" ] && [ -S "$work/tm-bob.sock" ] && break
  sleep 0.1
done

echo "==> alice pings bob through the tunnel (IPv4, then IPv6)"
ip netns exec "$ns_a" ping -c 3 -i 0.2 -W 2 10.99.0.2
ip netns exec "$ns_a" ping -c 3 -i 0.2 -W 2 fd99:99::2

echo "==> 3 seconds of TCP from alice to bob (iperf3)"
ip netns exec "$ns_b" iperf3 -s -1 -p 5201 >/dev/null 2>&1 &
sleep 0.3
ip netns exec "$ns_a" iperf3 -c 10.99.0.2 -p 5201 -t 3 | grep -E "sender|receiver"

echo "==> status of alice"
"$agent" status --interface tm-alice --state-dir "$work"
echo
echo "==> status of bob"
"$agent" status --interface tm-bob --state-dir "$work"
echo
echo "demo finished: the namespaces and agents are removed now"
