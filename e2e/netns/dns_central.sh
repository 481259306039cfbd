#!/usr/bin/env bash
# dns_central.sh: the operator's central mesh DNS server (UDP and TCP port 7753), asked with dig
# from another host, in a standalone mesh. A coordinator (advertising its address) and members
# alice and bob; then, at COORD:7753:
#   - A and AAAA of both members (their mesh IPs), PTR of their IPv4 and IPv6 mesh IPs, SOA at
#     the apexes of the domain and of both reverse zones, NS at the domain's apex (NS ns.mesh, with the coordinator's address as glue), NODATA for a member's
#     TXT and NXDOMAIN for an unknown name (both with the SOA, TTL 5), REFUSED outside the zone,
#     all of it over UDP and over TCP;
#   - carol joins and resolves; bob leaves and stops resolving within the TTL plus a second (both
#     measured and printed);
#   - the operator's counters file counts the queries by outcome;
#   - restarted with --no-dns, the coordinator leaves port 7753 closed (UDP and TCP) and still
#     serves members.
#
# Usage: dns_central.sh [AGENT_PATH [OPERATOR_PATH]]   (needs root; exits 77 otherwise)

# shellcheck source=nat_lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/nat_lib.sh"
command -v dig >/dev/null ||
  { echo "dns_central: dig is missing (scripts/install-deps.sh installs it)" >&2; exit 1; }
tm_mesh_init dns_central 120 "$@"
DNS_PORT=7753
TTL_MS=5000  # The Mesh's default TTL: tm_coord_setup sets no spec.dns.

tm_step "topology: coordinator and three members on a public segment"
tm_net_public coord
tm_net_public a
tm_net_public b
tm_net_public c
tm_coord_setup coord
C=$TM_COORD_ADDR
# The advertised address is the NS record's glue.
tm_coord_start --advertise-address "$C"
tm_member_new alice a
tm_member_new bob b
tm_member_new carol c
tm_member_start alice
tm_member_start bob
A4=$(tm_member_ip alice 4)
A6=$(tm_member_ip alice 6)
B4=$(tm_member_ip bob 4)
B6=$(tm_member_ip bob 6)

# ask ARGS...: dig at the central server from host a (outside the coordinator's namespace).
ask() { tm_in a dig +time=1 +tries=2 -p "$DNS_PORT" @"$C" "$@"; }
# status_of ARGS...: the answer's RCODE as dig prints it (NOERROR, NXDOMAIN, ...).
status_of() { ask "$@" | sed -n 's/.*status: \([A-Z]*\),.*/\1/p'; }

tm_step "the server listens on UDP and TCP $DNS_PORT"
tm__listening coord "$DNS_PORT" || tm_fail "nothing listens on TCP $DNS_PORT in the coordinator"
[[ -n "$(tm_in coord ss -Hlun "sport = :$DNS_PORT")" ]] ||
  tm_fail "nothing listens on UDP $DNS_PORT in the coordinator"
# alice and bob registered before the first query; give the rebuild a bound anyway.
bob_known() { [[ "$(ask +short bob.mesh A)" == "$B4" ]]; }
tm_wait 5 "bob.mesh to resolve at the central server" bob_known

for transport in +notcp +tcp; do
  tm_step "answers over ${transport#+}"
  tm_expect_eq "alice.mesh A" "$(ask "$transport" +short alice.mesh A)" "$A4"
  tm_expect_eq "alice.mesh AAAA" "$(ask "$transport" +short alice.mesh AAAA)" "$A6"
  tm_expect_eq "bob.mesh A" "$(ask "$transport" +short bob.mesh A)" "$B4"
  tm_expect_eq "BOB.Mesh AAAA (any case)" "$(ask "$transport" +short BOB.Mesh AAAA)" "$B6"
  tm_expect_eq "PTR of alice's IPv4" "$(ask "$transport" +short -x "$A4")" "alice.mesh."
  tm_expect_eq "PTR of bob's IPv6" "$(ask "$transport" +short -x "$B6")" "bob.mesh."
  # The apexes docs/dns.md gives CoreDNS for this Mesh's domain and ranges.
  for apex in mesh 99.10.in-addr.arpa 0.0.0.0.9.9.0.0.9.9.d.f.ip6.arpa; do
    soa=$(ask "$transport" +short "$apex" SOA)
    [[ "$soa" == "ns.mesh. hostmaster.mesh. "* ]] || tm_fail "SOA of $apex: '$soa'"
  done
  out=$(ask "$transport" mesh NS)
  grep -qE "^mesh\.\s+5\s+IN\s+NS\s+ns\.mesh\.$" <<<"$out" || tm_fail "apex NS:"$'\n'"$out"
  grep -qE "^ns\.mesh\.\s+5\s+IN\s+A\s+$C$" <<<"$out" ||
    tm_fail "no glue for ns.mesh (the advertised address $C):"$'\n'"$out"
  out=$(ask "$transport" +norecurse alice.mesh A)
  grep -q "flags: qr aa" <<<"$out" || tm_fail "the answer is not authoritative:"$'\n'"$out"
  grep -qE "^alice\.mesh\.\s+5\s+IN\s+A\s+$A4$" <<<"$out" || tm_fail "TTL 5 expected:"$'\n'"$out"
  out=$(ask "$transport" bob.mesh TXT)
  if ! grep -q "status: NOERROR" <<<"$out" || ! grep -q "ANSWER: 0" <<<"$out"; then
    tm_fail "bob.mesh TXT should be NODATA:"$'\n'"$out"
  fi
  grep -qE "^mesh\.\s+5\s+IN\s+SOA" <<<"$out" || tm_fail "NODATA without the SOA:"$'\n'"$out"
  out=$(ask "$transport" nobody.mesh A)
  grep -q "status: NXDOMAIN" <<<"$out" || tm_fail "nobody.mesh should be NXDOMAIN:"$'\n'"$out"
  grep -qE "^mesh\.\s+5\s+IN\s+SOA" <<<"$out" || tm_fail "NXDOMAIN without the SOA:"$'\n'"$out"
  tm_expect_eq "example.com (no upstream)" "$(status_of "$transport" example.com A)" "REFUSED"
  tm_expect_eq "PTR outside the mesh ranges" "$(status_of "$transport" -x 192.0.2.1)" "REFUSED"
done

tm_step "a member that joins resolves; one that leaves stops resolving within TTL + 1 s"
carol_known() { [[ -n "$(ask +short carol.mesh A)" ]]; }
bob_gone() { [[ "$(status_of bob.mesh A)" == NXDOMAIN ]]; }
tm_expect_eq "carol.mesh before she joins" "$(status_of carol.mesh A)" "NXDOMAIN"
tm_member_start carol
start=$(tm__now_ms)
tm_wait 5 "carol.mesh to resolve at the central server" carol_known
tm_log "carol.mesh resolved $(( $(tm__now_ms) - start )) ms after carol's agent reported ready"
tm_expect_eq "carol.mesh A" "$(ask +short carol.mesh A)" "$(tm_member_ip carol 4)"
tm_member_leave bob
start=$(tm__now_ms)
tm_wait $(( TTL_MS / 1000 + 3 )) "bob.mesh to stop resolving" bob_gone
took=$(( $(tm__now_ms) - start ))
tm_log "bob.mesh was NXDOMAIN at the central server ${took} ms after bob left"
(( took <= TTL_MS + 1000 )) ||
  tm_fail "bob.mesh still resolved ${took} ms after bob left (bound TTL + 1 s = $(( TTL_MS + 1000 )) ms)"
tm_expect_eq "PTR of bob's former IPv4" "$(status_of -x "$B4")" "NXDOMAIN"

tm_step "the counters file counts the queries by outcome"
counters=$(tm_coord_state)/counters.json
counted() { # OUTCOME MIN
  "$TM_PY" -c 'import json, sys
d = json.load(open(sys.argv[1]))["dns"]["queries"]
print(d[sys.argv[2]]); sys.exit(0 if d[sys.argv[2]] >= int(sys.argv[3]) else 1)' \
    "$counters" "$1" "$2"
}
# Written about once a second: poll. 4 refused, 2 NODATA and at least 4 NXDOMAIN above.
tm_wait 5 "counters.json to count 4 refused queries" counted refused 4
tm_wait 5 "counters.json to count 2 NODATA answers" counted nodata 2
tm_wait 5 "counters.json to count NXDOMAIN answers" counted nxdomain 4
tm_wait 5 "counters.json to count answers" counted answered 20

tm_step "restarted with --no-dns: port $DNS_PORT is closed, members still served"
tm_coord_stop
tm_coord_start --advertise-address "$C" --no-dns
! tm__listening coord "$DNS_PORT" || tm_fail "TCP $DNS_PORT listens despite --no-dns"
[[ -z "$(tm_in coord ss -Hlun "sport = :$DNS_PORT")" ]] ||
  tm_fail "UDP $DNS_PORT is bound despite --no-dns"
if out=$(tm_in a dig +time=1 +tries=1 -p "$DNS_PORT" @"$C" alice.mesh A 2>&1); then
  tm_fail "dig got an answer from $C:$DNS_PORT despite --no-dns:"$'\n'"$out"
fi
grep -q "dns_port=off" "$(tm_coord_log)" || tm_fail "the operator did not log dns_port=off"
tm_wait 15 "alice to register again with the restarted coordinator" tm_coord_registered alice

tm_checks_done
for m in alice carol; do tm_member_alive "$m"; done
tm_coord_alive
