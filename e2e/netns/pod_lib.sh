# shellcheck shell=bash
# pod_lib.sh: a pod's mesh interface made the way tunnelmesh-cni makes it, for the pod scenarios
# (pods_attach.sh, pod_datapath.sh). Needs lib.sh (tm_ns, tm_ns_new).

# tm_pod_plumb HOST_NSID POD_NSID HOST_IF MTU "ADDRESSES" "ROUTES": a new pod namespace POD_NSID
# and a veth pair: HOST_IF in HOST_NSID (forwarding on, proxy ARP without delay, fe80::1/64), the
# pod end mesh0 in POD_NSID with each address as /32 or /128 and a route for each of ROUTES (the
# mesh's ranges: IPv4 on the link, IPv6 via fe80::1), and in HOST_NSID a host route to each
# address over HOST_IF.
tm_pod_plumb() {
  local host_ns pod_ns host_if=$3 mtu=$4 addr route
  host_ns=$(tm_ns "$1")
  tm_ns_new "$2"
  pod_ns=$(tm_ns "$2")
  ip link add "$host_if" netns "$host_ns" mtu "$mtu" type veth peer name mesh0 mtu "$mtu" \
    netns "$pod_ns" || tm_fail "cannot create the pod's veth $host_if"
  ip netns exec "$host_ns" sysctl -qw net.ipv4.ip_forward=1 net.ipv6.conf.all.forwarding=1 \
    "net.ipv4.conf.$host_if.proxy_arp=1" "net.ipv4.neigh.$host_if.proxy_delay=0"
  ip -n "$host_ns" addr add fe80::1/64 dev "$host_if"
  ip -n "$host_ns" link set "$host_if" up
  ip -n "$pod_ns" link set mesh0 up
  for addr in $5; do
    if [[ "$addr" == *:* ]]; then
      ip -n "$pod_ns" addr add "$addr/128" dev mesh0 nodad
      ip -n "$host_ns" route add "$addr/128" dev "$host_if"
    else
      ip -n "$pod_ns" addr add "$addr/32" dev mesh0
      ip -n "$host_ns" route add "$addr/32" dev "$host_if"
    fi
  done
  for route in $6; do
    if [[ "$route" == *:* ]]; then
      ip -n "$pod_ns" route add "$route" via fe80::1 dev mesh0
    else
      ip -n "$pod_ns" route add "$route" dev mesh0 scope link
    fi
  done
}
