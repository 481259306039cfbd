#!/usr/bin/env bash
# dns_mesh.sh: the agents' mesh DNS servers, asked with dig, in a standalone mesh (default Allow).
# The Mesh sets its DNS TTLs (4 s, negative 3 s); alice joins with an alias (git), bob without;
# then:
#   - on alice's loopback server: A and AAAA of bob (its mesh IPs, TTL 4), alice's alias, NODATA
#     for bob's TXT and NXDOMAIN for an unknown name (both with the SOA, TTL 3), PTR of bob's
#     IPv4 and IPv6 mesh
#     IPs, SOA and NS at the apex, REFUSED outside the zone, case-insensitive names, the same over
#     TCP, and EDNS0 (the OPT record comes back);
#   - from bob, alice's server on alice's mesh IP, through the tunnel;
#   - a join that claims alice's alias is refused, naming alice;
#   - carol joins: alice's agent answers carol.mesh within a bound, and dnsmasq (a caching resolver
#     in front of it, which had cached carol's NXDOMAIN) within the TTL plus a second plus that
#     bound; carol leaves: NXDOMAIN within the same bounds (all measured and printed);
#   - the coordinator stops: bob.mesh still resolves on alice (the agent answers from its map).
#
# Usage: dns_mesh.sh [AGENT_PATH [OPERATOR_PATH]]   (needs root; exits 77 otherwise)

# shellcheck source=nat_lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/nat_lib.sh"
for tool in dig dnsmasq; do
  command -v $tool >/dev/null ||
    { echo "dns_mesh: $tool is missing (scripts/install-deps.sh installs it)" >&2; exit 1; }
done
tm_mesh_init dns_mesh 120 "$@"
# From the coordinator's map change to an answer on another member: the map reaches the agent
# within a few hundred ms; each probe is a dig process in a namespace.
BOUND_MS=${TM_DNS_BOUND_MS:-3000}
# Through a cache: the answers' TTL (at most 5 s) plus a second, plus the direct bound's slack for
# CI load.
CACHE_BOUND_MS=${TM_DNS_CACHE_BOUND_MS:-$(( 6000 + BOUND_MS ))}

tm_step "topology: coordinator and three members on a public segment"
tm_net_public coord
tm_net_public a
tm_net_public b
tm_net_public c
tm_coord_setup coord
sed -i 's/^  joinTokenSecretRef:/  dns: {ttlSeconds: 4, negativeTTLSeconds: 3}\n&/' \
  "$TM_WORK/coord.manifests/mesh.yaml"
tm_coord_start
tm_member_new alice a
tm_member_new bob b
tm_member_new carol c
tm_member_start alice --alias git
tm_member_start bob
tm_member_wait_peer 10 alice bob
A_DNS=$(tm_member_dns alice)
B4=$(tm_member_ip bob 4)
B6=$(tm_member_ip bob 6)
A4=$(tm_member_ip alice 4)

# dig_a NSID SERVER ARGS...: dig's short output.
dig_in() { local ns=$1 server=$2; shift 2; tm_in "$ns" dig +time=1 +tries=2 @"$server" "$@"; }
# status_of NSID SERVER ARGS...: the answer's RCODE as dig prints it (NOERROR, NXDOMAIN, ...).
status_of() { dig_in "$@" | sed -n 's/.*status: \([A-Z]*\),.*/\1/p'; }

tm_step "alice's loopback server: positive answers"
tm_expect_eq "bob.mesh A" "$(dig_in a "$A_DNS" +short bob.mesh A)" "$B4"
tm_expect_eq "bob.mesh AAAA" "$(dig_in a "$A_DNS" +short bob.mesh AAAA)" "$B6"
tm_expect_eq "BoB.MeSh A (any case)" "$(dig_in a "$A_DNS" +short BoB.MeSh A)" "$B4"
tm_expect_eq "git.mesh A (alice's alias)" "$(dig_in a "$A_DNS" +short git.mesh A)" "$A4"
tm_expect_eq "git.mesh A on bob's server" "$(dig_in b "$(tm_member_dns bob)" +short git.mesh A)" \
  "$A4"
tm_expect_eq "PTR of bob's IPv4" "$(dig_in a "$A_DNS" +short -x "$B4")" "bob.mesh."
tm_expect_eq "PTR of bob's IPv6" "$(dig_in a "$A_DNS" +short -x "$B6")" "bob.mesh."
soa=$(dig_in a "$A_DNS" +short mesh SOA)
[[ "$soa" == "alice.mesh. hostmaster.mesh. "* ]] || tm_fail "apex SOA: '$soa'"
tm_expect_eq "apex NS" "$(dig_in a "$A_DNS" +short mesh NS)" "alice.mesh."
full=$(dig_in a "$A_DNS" +norecurse bob.mesh A)
grep -q "flags: qr aa" <<<"$full" || tm_fail "the answer is not authoritative:"$'\n'"$full"
grep -qE "^bob\.mesh\.\s+4\s+IN\s+A\s+$B4" <<<"$full" ||
  tm_fail "TTL 4 (the Mesh's spec.dns.ttlSeconds) expected:"$'\n'"$full"
grep -q "EDNS: version: 0" <<<"$full" || tm_fail "no OPT record in the answer to an EDNS0 query"

tm_step "negative answers carry the SOA; outside the zone is refused"
out=$(dig_in a "$A_DNS" bob.mesh TXT)
grep -q "status: NOERROR" <<<"$out" && grep -q "ANSWER: 0" <<<"$out" ||
  tm_fail "bob.mesh TXT should be NODATA:"$'\n'"$out"
grep -qE "^mesh\.\s+3\s+IN\s+SOA" <<<"$out" ||
  tm_fail "NODATA without the SOA (TTL 3, spec.dns.negativeTTLSeconds):"$'\n'"$out"
out=$(dig_in a "$A_DNS" nobody.mesh A)
grep -q "status: NXDOMAIN" <<<"$out" || tm_fail "nobody.mesh should be NXDOMAIN:"$'\n'"$out"
grep -qE "^mesh\.\s+3\s+IN\s+SOA.* 3$" <<<"$out" ||
  tm_fail "NXDOMAIN without the SOA (TTL and minimum 3):"$'\n'"$out"

tm_step "an alias another member answers to is refused, naming it"
tm_member_join_once carol "$(tm_token_file)" 20 --alias git
(( TM_JOIN_RC != 0 && TM_JOIN_RC != 124 )) || tm_fail "a join claiming git exited $TM_JOIN_RC"
grep -q 'alias "git" is taken by member "alice"' <<<"$TM_JOIN_OUT" ||
  tm_fail "the refusal does not name alice:"$'\n'"$TM_JOIN_OUT"
tm_expect_eq "example.com (no upstream)" "$(status_of a "$A_DNS" example.com A)" "REFUSED"

tm_step "TCP, and the server on alice's mesh IP asked from bob through the tunnel"
tm_expect_eq "bob.mesh A over TCP" "$(dig_in a "$A_DNS" +tcp +short bob.mesh A)" "$B4"
tm_expect_eq "bob.mesh A from bob via $A4" "$(dig_in b "$A4" +short bob.mesh A)" "$B4"
tm_expect_eq "... over TCP" "$(dig_in b "$A4" +tcp +short alice.mesh A)" "$A4"

tm_step "through a caching resolver (dnsmasq) in front: a join and a leave show within TTL + 1 s"
# dnsmasq on 127.0.0.53 in alice's namespace sends the mesh domain to alice's agent and caches
# what it answers, negative answers for the SOA minimum: the case where the Go TunnelMesh's 300 s
# TTLs and wrong NXDOMAINs kept members invisible.
CACHE=127.0.0.53
tm_bg_in a dnsmasq --no-daemon --no-resolv --no-hosts --bind-interfaces --listen-address=$CACHE \
  --port=53 --server=/mesh/$A_DNS --cache-size=1000 --pid-file= --log-facility=- \
  >"$TM_WORK/dnsmasq.log" 2>&1
cache_up() { [[ "$(status_of a "$CACHE" bob.mesh A)" == NOERROR ]]; }
tm_wait 5 "dnsmasq to answer" cache_up
# Cached NXDOMAIN for carol before she exists (5 s, the SOA minimum).
tm_expect_eq "carol.mesh before she joins (via cache)" "$(status_of a "$CACHE" carol.mesh A)" \
  "NXDOMAIN"
carol_direct() { [[ -n "$(dig_in a "$A_DNS" +short carol.mesh A)" ]]; }
carol_cached() { [[ -n "$(dig_in a "$CACHE" +short carol.mesh A)" ]]; }
gone_direct() { [[ "$(status_of a "$A_DNS" carol.mesh A)" == NXDOMAIN ]]; }
gone_cached() { [[ "$(status_of a "$CACHE" carol.mesh A)" == NXDOMAIN ]]; }
tm_member_start carol
start=$(tm__now_ms)
tm_wait $((BOUND_MS / 1000 + 5)) "carol.mesh to resolve on alice's agent" carol_direct
took=$(( $(tm__now_ms) - start ))
tm_log "carol.mesh resolved on alice's agent ${took} ms after carol's agent reported ready"
(( took <= BOUND_MS )) || tm_fail "carol.mesh took ${took} ms to resolve (bound ${BOUND_MS} ms)"
tm_wait $((CACHE_BOUND_MS / 1000 + 5)) "carol.mesh to resolve through the cache" carol_cached
took=$(( $(tm__now_ms) - start ))
tm_log "carol.mesh resolved through dnsmasq ${took} ms after carol's agent reported ready"
(( took <= CACHE_BOUND_MS )) ||
  tm_fail "carol.mesh took ${took} ms through the cache (bound TTL + 1 s = ${CACHE_BOUND_MS} ms)"
tm_expect_eq "carol.mesh A" "$(dig_in a "$CACHE" +short carol.mesh A)" "$(tm_member_ip carol 4)"
tm_member_leave carol
start=$(tm__now_ms)
tm_wait $((BOUND_MS / 1000 + 5)) "carol.mesh to stop resolving on alice's agent" gone_direct
took=$(( $(tm__now_ms) - start ))
tm_log "carol.mesh was NXDOMAIN on alice's agent ${took} ms after carol left"
(( took <= BOUND_MS )) || tm_fail "carol.mesh still resolved ${took} ms after leaving"
tm_wait $((CACHE_BOUND_MS / 1000 + 5)) "carol.mesh to stop resolving through the cache" gone_cached
took=$(( $(tm__now_ms) - start ))
tm_log "carol.mesh was NXDOMAIN through dnsmasq ${took} ms after carol left"
(( took <= CACHE_BOUND_MS )) ||
  tm_fail "carol.mesh resolved through the cache ${took} ms after leaving (bound ${CACHE_BOUND_MS} ms)"

tm_step "the coordinator stops: names still resolve from the agents' maps"
tm_coord_stop
tm_expect_eq "bob.mesh A without a coordinator" "$(dig_in a "$A_DNS" +short bob.mesh A)" "$B4"
tm_expect_eq "alice.mesh A on bob's server" \
  "$(dig_in b "$(tm_member_dns bob)" +short alice.mesh A)" "$A4"

tm_checks_done
for m in alice bob; do tm_member_alive "$m"; done
