#!/usr/bin/env bash
# The local mesh demo, no cluster needed: installs what is needed, builds, then runs a coordinator
# (tunnelmesh-operator --standalone, with an embedded Mesh) and two members that join it with
# `tunnelmesh-agent join`, each in its own network namespace on a shared virtual link. The members
# get mesh IPs, find a direct path to each other, ping over IPv4 and IPv6, move data over TCP, and
# print their status. A PeerPolicy allows alice (role=dev) to reach bob (app=web) on TCP 5201 and
# ICMP only: the Mesh denies everything else by default, so a connection to bob's port 8080 is
# refused, and `tunnelmesh-agent explain` says why. Everything it creates is removed on exit.
set -euo pipefail
cd "$(dirname "$0")/.."
# Root is needed for network namespaces and TUN devices: a normal user goes through sudo.
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null; then exec sudo -E bash "$PWD/scripts/demo.sh" "$@"; fi
  echo "demo: needs root for network namespaces and TUN devices: run it as root" >&2
  exit 1
fi
bash scripts/install-deps.sh
bash scripts/build.sh
agent="$PWD/build/bin/tunnelmesh-agent"
operator="$PWD/build/bin/tunnelmesh-operator"

work=$(mktemp -d /tmp/tunnelmesh-demo.XXXXXX)
ns_c="tmdemo-coord-$$"
ns_a="tmdemo-alice-$$"
ns_b="tmdemo-bob-$$"
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  sleep 0.5
  for ns in "$ns_a" "$ns_b" "$ns_c"; do ip netns del "$ns" 2>/dev/null || true; done
  rm -rf "$work" "/etc/netns/$ns_a"
}
trap cleanup EXIT

echo "==> three hosts (network namespaces) on one link: a coordinator, alice and bob"
for ns in "$ns_c" "$ns_a" "$ns_b"; do
  ip netns add "$ns"
  ip -n "$ns" link set lo up
done
# The coordinator's namespace routes between two links, one per member.
ip link add tmd-ca netns "$ns_c" type veth peer name tmd-a netns "$ns_a"
ip link add tmd-cb netns "$ns_c" type veth peer name tmd-b netns "$ns_b"
ip -n "$ns_c" addr add 192.0.2.1/25 dev tmd-ca
ip -n "$ns_c" addr add 192.0.2.129/25 dev tmd-cb
ip -n "$ns_a" addr add 192.0.2.10/25 dev tmd-a
ip -n "$ns_b" addr add 192.0.2.140/25 dev tmd-b
for pair in "$ns_c tmd-ca" "$ns_c tmd-cb" "$ns_a tmd-a" "$ns_b tmd-b"; do
  set -- $pair
  ip -n "$1" link set "$2" up
done
ip -n "$ns_a" route add default via 192.0.2.1
ip -n "$ns_b" route add default via 192.0.2.129
ip netns exec "$ns_c" sysctl -qw net.ipv4.ip_forward=1

echo "==> the embedded default Mesh: 10.99.0.0/16 and fd99:99::/48, join token in a Secret"
mkdir -p "$work/manifests"
umask 077
token=$(head -c 24 /dev/urandom | base64)
cat > "$work/manifests/mesh.yaml" <<YAML
apiVersion: tunnelmesh.io/v1alpha1
kind: Mesh
metadata: {name: demo}
spec:
  ipv4CIDR: 10.99.0.0/16
  ipv6CIDR: fd99:99::/48
  joinTokenSecretRef: {namespace: tunnelmesh, name: demo-join, key: token}
---
apiVersion: v1
kind: Secret
metadata: {namespace: tunnelmesh, name: demo-join}
stringData: {token: "$token"}
YAML
echo "$token" > "$work/token"
echo "==> a PeerPolicy: role=dev may reach app=web on TCP 5201 and ping it; the rest is denied"
cat > "$work/manifests/policy.yaml" <<YAML
apiVersion: tunnelmesh.io/v1alpha1
kind: PeerPolicy
metadata: {name: dev-to-web}
spec:
  mesh: demo
  action: Allow
  from: [{peerSelector: {matchLabels: {role: dev}}}]
  to: [{peerSelector: {matchLabels: {app: web}}}]
  ports: [{protocol: TCP, port: 5201}, {protocol: ICMP}]
YAML

echo "==> starting the coordinator (gRPC 7700, STUN 3478, relay 7701)"
ip netns exec "$ns_c" "$operator" --standalone --manifests "$work/manifests" \
  --state-dir "$work/coordinator" >"$work/coordinator.log" 2>&1 &
pids+=($!)
for i in $(seq 100); do [ -s "$work/coordinator/ca-hash" ] && break; sleep 0.1; done
ca_hash=$(cat "$work/coordinator/ca-hash")
echo "    CA hash: $ca_hash"

echo "==> alice and bob join; alice's resolver is her agent's mesh DNS server (127.0.0.100)"
# `ip netns exec` shows /etc/netns/NS/resolv.conf as the namespace's /etc/resolv.conf: on a real
# host this is where /etc/resolv.conf (or systemd-resolved, see docs/dns.md) points at the agent.
mkdir -p "/etc/netns/$ns_a"
echo "nameserver 127.0.0.100" >"/etc/netns/$ns_a/resolv.conf"
ip netns exec "$ns_a" "$agent" join 192.0.2.1 --token-file "$work/token" --name alice \
  --ca-hash "$ca_hash" --state-dir "$work/alice" --interface tm-alice --label role=dev >"$work/alice.log" 2>&1 &
pids+=($!)
ip netns exec "$ns_b" "$agent" join 192.0.2.1 --token-file "$work/token" --name bob \
  --ca-hash "$ca_hash" --state-dir "$work/bob" --interface tm-bob --label app=web >"$work/bob.log" 2>&1 &
pids+=($!)
for i in $(seq 100); do
  grep -q "path to bob: direct" "$work/alice.log" 2>/dev/null && break
  sleep 0.1
done
grep -h "registered as\|path to" "$work/alice.log" "$work/bob.log" | sed 's/^/    /'
bob_ip=$("$agent" status --json --interface tm-bob --state-dir "$work/bob" |
  python3 -c 'import json,sys; print(json.load(sys.stdin)["self"]["mesh_ips"][0])')
bob_ip6=$("$agent" status --json --interface tm-bob --state-dir "$work/bob" |
  python3 -c 'import json,sys; print(json.load(sys.stdin)["self"]["mesh_ips"][1])')

echo "==> alice pings bob at $bob_ip and $bob_ip6 through the tunnel"
ip netns exec "$ns_a" ping -c 3 -i 0.2 -W 2 "$bob_ip"
ip netns exec "$ns_a" ping -c 3 -i 0.2 -W 2 "$bob_ip6"

echo "==> alice reaches bob by name: bob.mesh is answered by alice's own agent, from its map"
ip netns exec "$ns_a" getent ahosts bob.mesh | awk '{print "    " $1}' | sort -u
ip netns exec "$ns_a" ping -c 2 -i 0.2 -W 2 bob.mesh

echo "==> 3 seconds of TCP from alice to bob (iperf3)"
ip netns exec "$ns_b" iperf3 -s -1 -p 5201 >/dev/null 2>&1 &
sleep 0.3
ip netns exec "$ns_a" iperf3 -c "$bob_ip" -p 5201 -t 3 | grep -E "sender|receiver"

echo "==> bob also listens on TCP 8080, which no PeerPolicy allows: alice's connection is dropped"
ip netns exec "$ns_b" python3 -m http.server 8080 --bind "$bob_ip" >/dev/null 2>&1 &
pids+=($!)
sleep 0.5
if ip netns exec "$ns_a" nc -z -w 2 "$bob_ip" 8080; then
  echo "    alice -> bob:8080 connected (unexpected: the filter should have dropped it)"
else
  echo "    alice -> bob:8080: no answer within 2 s (dropped by bob's packet filter)"
fi
echo "==> why? tunnelmesh-agent explain alice bob:8080/tcp (exit code 1: deny)"
"$agent" explain alice bob:8080/tcp --interface tm-alice --state-dir "$work/alice" || true
echo "==> and the allowed one: tunnelmesh-agent explain alice bob:5201/tcp"
"$agent" explain alice bob:5201/tcp --interface tm-alice --state-dir "$work/alice" || true

echo "==> status of bob (the filter line counts the dropped packets)"
"$agent" status --interface tm-bob --state-dir "$work/bob"
echo
echo "==> status of alice"
"$agent" status --interface tm-alice --state-dir "$work/alice"
echo
echo "demo finished: the coordinator, members and namespaces are removed now"
