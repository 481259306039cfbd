#!/usr/bin/env bash
# endpoint_roaming.sh: peer B changes its outer address while sending; agent A must follow the new
# authenticated source address (WireGuard paper section 2.1, "built-in roaming") with no change to
# its own configuration.
#
# Namespaces a and b are joined by two veth links. B is configured with A's link-1 address and A
# with B's link-1 address. Per outer address family (4, then 6, each on fresh namespaces):
#   phase 1  renumbering: B's link-1 address is deleted and a new one added on the same link;
#   phase 2  moving: B's link-1 address is deleted, the link goes down, and B reaches A's link-1
#            address through link 2.
# After each move B keeps pinging A; A's status must show B's new endpoint, and A must reach B (the
# old address no longer exists), by ping and by a TCP transfer.
#
# Usage: endpoint_roaming.sh [AGENT_PATH]   (or TM_AGENT=...; needs root, exits 77 otherwise)

# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
tm_init endpoint_roaming 170 "$@"
tm_require_agent

# How long B may take to get through after it moved. A sender that pins the old source address
# recovers, at the latest, when its handshake retry after Keepalive-Timeout + Rekey-Timeout = 15 s
# drops the pinned source (wireguard-go 0.0.20220316 does exactly this when the address vanishes;
# the Linux module retries without the cached source at once).
ROAM_S=25

# after_move TAG A B NEW_B_OUTER: B keeps sending until answered, then A must use the new endpoint.
after_move() {
  local t=$1 a=$2 b=$3 new=$4 ep
  tm_wait_ping "${t}b" 10.44.0.1 "$ROAM_S"
  tm_wait_peer_field 10 "$a" "$b" endpoint "$(tm_endpoint "$new" 51821)"
  tm_ping "${t}a" 10.44.0.2 5
  tm_ping "${t}a" fd44::2 3
  tm_tcp_transfer "${t}a" "${t}b" 10.44.0.2 4
  tm_tcp_transfer "${t}b" "${t}a" fd44::1 4
  # B may follow A too: A's replies over link 2 may come from A's link-2 address unless A sends
  # from the address B targeted (Linux does; the protocol does not require it). Either is A.
  ep=$(tm_peer_get "$b" "$a" endpoint)
  case "$ep" in
    "$(tm_endpoint "$A_OUTER" 51820)" | "$(tm_endpoint "$A_OUTER2" 51820)") ;;
    *) tm_fail "$b: endpoint of $a is '$ep', which is not one of A's addresses" ;;
  esac
  tm_log "$b sees $a at $ep"
  tm_node_alive "$a"
}

run_family() { # TAG FAMILY
  local t=$1 fam=$2 a=$1A b=$1B b1 b1new b2 via plen
  if [[ "$fam" == 4 ]]; then
    A_OUTER=10.0.0.1 A_OUTER2=10.1.0.1 b1=10.0.0.2 b1new=10.0.0.3 b2=10.1.0.2 via=10.1.0.1 plen=24
  else
    A_OUTER=fd00::1 A_OUTER2=fd01::1 b1=fd00::2 b1new=fd00::3 b2=fd01::2 via=fd01::1 plen=64
  fi
  tm_step "outer IPv$fam: setup"
  tm_ns_new "${t}a"
  tm_ns_new "${t}b"
  tm_veth "${t}a" veth1 "${t}b" veth1 "10.0.0.1/24 fd00::1/64" "10.0.0.2/24 fd00::2/64"
  tm_veth "${t}a" veth2 "${t}b" veth2 "10.1.0.1/24 fd01::1/64" "10.1.0.2/24 fd01::2/64"
  tm_node_new "$a" agent "${t}a" 51820 "10.44.0.1/24, fd44::1/64"
  tm_node_new "$b" agent "${t}b" 51821 "10.44.0.2/24, fd44::2/64"
  tm_node_peer "$a" "$b" endpoint="$(tm_endpoint "$b1" 51821)"
  tm_node_peer "$b" "$a" endpoint="$(tm_endpoint "$A_OUTER" 51820)"
  tm_node_start "$a"
  tm_node_start "$b"
  tm_wait_ping "${t}b" 10.44.0.1 10
  tm_ping "${t}a" 10.44.0.2 3
  tm_expect_eq "$a: endpoint of $b before roaming" "$(tm_peer_get "$a" "$b" endpoint)" \
    "$(tm_endpoint "$b1" 51821)"

  tm_step "outer IPv$fam phase 1: B renumbers $b1 -> $b1new on the same link"
  tm_addr_del "${t}b" veth1 "$b1/$plen"
  tm_addr_add "${t}b" veth1 "$b1new/$plen"
  after_move "$t" "$a" "$b" "$b1new"

  tm_step "outer IPv$fam phase 2: B's link 1 goes away; B reaches A over link 2 from $b2"
  # Delete the address too: a source that still exists could legitimately stay pinned.
  tm_addr_del "${t}b" veth1 "$b1new/$plen"
  ip -n "$(tm_ns "${t}b")" link set veth1 down
  ip -n "$(tm_ns "${t}b")" route add "$A_OUTER" via "$via" dev veth2
  after_move "$t" "$a" "$b" "$b2"

  tm_node_stop "$b"
  tm_node_stop "$a"
}

run_family r4 4
run_family r6 6
