#!/usr/bin/env bash
# dns_resolved.sh: the agent registers the mesh domain with a real systemd-resolved (split DNS),
# registers again when resolved restarts, and reverts it on exit. A standalone mesh with three
# members on a public segment:
#   - alice's namespace runs its own D-Bus system bus and systemd-resolved, in a private mount
#     namespace (tmpfs on /run, copies of /etc/passwd and /etc/group with the systemd-resolve user,
#     its own /etc/resolv.conf), so nothing of the host's resolver is touched. resolved's global
#     DNS server is a dnsmasq on 127.0.0.2 standing for "the host's usual resolver": it answers
#     www.outside.example, and also answers *.mesh with a decoy address (192.0.2.99).
#   - alice joins: `resolvectl status` shows her link with her mesh IPs as DNS servers, ~mesh and
#     the reverse zones of the mesh ranges as routing domains, default route and LLMNR off; bob.mesh
#     (A, AAAA, the PTR of his IPv4) resolves through resolved (resolvectl query, and resolved's
#     stub 127.0.0.53 with dig) to his mesh IPs, never the decoy; www.outside.example goes to the
#     global server, and resolved's log shows it never asked alice's link for it.
#   - bob runs in his own network namespace but sees alice's /run: he finds resolved there and does
#     not register (another network namespace); carol (the host's /run) finds no resolved, or one
#     in another namespace: both log how to point the host's resolver at them.
#   - alice stops (SIGTERM): she reverts the link (resolved logs the request before the link's
#     removal), and bob.mesh gets the global server's decoy through the stub.
#   - alice again, then resolved restarts with DNSSEC=yes: alice registers again (its pid changed)
#     and bob.mesh still resolves (the link's DNSSEC is off: the mesh zone is unsigned).
#   - alice leaves (`tunnelmesh-agent leave`): reverted the same way.
#   - alice joins again with --no-resolved: nothing registered.
#
# Needs root, dbus-daemon, and systemd-resolved with resolvectl: installed, or unpacked from the
# package without installing it (the package rewires the host's /etc/resolv.conf when installed):
#   apt-get download systemd-resolved=$(dpkg-query -W -f '${Version}' systemd)
#   dpkg-deb -x systemd-resolved_*.deb DIR        and run with TM_RESOLVED_ROOT=DIR
# (resolvectl and systemd-resolved then use the host's libsystemd-shared, hence the same version
# as the installed systemd). Without them it exits 77 (skipped): CI machines have neither.
#
# Usage: dns_resolved.sh [AGENT_PATH [OPERATOR_PATH]]

# The tools first: a machine without resolved skips before anything is set up.
TM_RESOLVED_ROOT=${TM_RESOLVED_ROOT:-}
RESOLVED_BIN=$TM_RESOLVED_ROOT/lib/systemd/systemd-resolved
RESOLVECTL=$TM_RESOLVED_ROOT/usr/bin/resolvectl
skip() { echo "SKIP: dns_resolved: $*" >&2; exit 77; }
[[ $EUID -eq 0 ]] || skip "needs root (network and mount namespaces, TUN devices)"
command -v dbus-daemon >/dev/null || skip "dbus-daemon is not installed"
[[ -x "$RESOLVED_BIN" && -x "$RESOLVECTL" ]] ||
  skip "systemd-resolved is not installed (no $RESOLVED_BIN or $RESOLVECTL); unpack its" \
    "package and set TM_RESOLVED_ROOT (see the header of this script)"
"$RESOLVECTL" --version >/dev/null 2>&1 ||
  skip "$RESOLVECTL does not run: $("$RESOLVECTL" --version 2>&1 | head -n 1)"
for tool in unshare nsenter dig dnsmasq; do
  command -v $tool >/dev/null || skip "$tool is not installed"
done

# shellcheck source=nat_lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/nat_lib.sh"
tm_mesh_init dns_resolved 150 "$@"

tm_step "topology: coordinator and three members on a public segment"
for id in coord a b c; do tm_net_public "$id"; done
tm_coord_setup coord
tm_coord_start
for member in alice:a bob:b carol:c; do tm_member_new "${member%:*}" "${member#*:}"; done

tm_step "alice's namespace: a private /run with a D-Bus system bus and systemd-resolved"
RW=$TM_WORK/resolved
mkdir -p "$RW"
cp /etc/passwd "$RW/passwd"
cp /etc/group "$RW/group"
if ! grep -q '^systemd-resolve:' "$RW/passwd"; then
  # A free uid and gid below 1000, for this mount namespace only.
  taken=$(cut -d: -f3 "$RW/passwd" "$RW/group")
  id=999
  while grep -qx "$id" <<<"$taken"; do id=$((id - 1)); done
  echo "systemd-resolve:x:$id:$id:systemd Resolver:/:/usr/sbin/nologin" >>"$RW/passwd"
  echo "systemd-resolve:x:$id:" >>"$RW/group"
fi
echo "nameserver 127.0.0.2" >"$RW/resolv.conf"
{
  echo '<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"'
  echo ' "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">'
  echo '<busconfig>'
  echo '  <include>/usr/share/dbus-1/system.conf</include>'
  [[ -z "$TM_RESOLVED_ROOT" ]] ||
    echo "  <includedir>$TM_RESOLVED_ROOT/usr/share/dbus-1/system.d</includedir>"
  echo '</busconfig>'
} >"$RW/dbus.conf"
# The holder keeps the mount namespace; alice's resolver world enters it with nsenter. It lives in
# namespace a, so the teardown ends it with the namespace's other processes.
# shellcheck disable=SC2016 # the inner script expands its own $1
tm_bg_in a unshare --mount --propagation private -- bash -c '
  set -e
  mount -t tmpfs tmpfs /run
  mkdir -p /run/dbus /run/systemd
  mount --bind "$1/passwd" /etc/passwd
  mount --bind "$1/group" /etc/group
  mount --bind "$1/resolv.conf" /etc/resolv.conf
  touch "$1/holder.ready"
  exec sleep 100000' holder "$RW"
HOLDER=$TM_BG_PID
holder_ready() { [[ -e "$RW/holder.ready" ]]; }
tm_wait 5 "the mount namespace holder" holder_ready
RPATH=$PATH
[[ -z "$TM_RESOLVED_ROOT" ]] || RPATH=$TM_RESOLVED_ROOT/usr/bin:$PATH
# in_a COMMAND...: COMMAND in alice's network namespace and private mount namespace.
in_a() { nsenter -t "$HOLDER" -m -n -- env PATH="$RPATH" "$@"; }
IN_A_MOUNTS="nsenter -t $HOLDER -m -- env PATH=$RPATH"
# The host's usual resolver, for resolved's global scope.
tm_bg_in a dnsmasq --no-daemon --no-resolv --no-hosts --bind-interfaces --listen-address=127.0.0.2 \
  --port=53 --address=/outside.example/192.0.2.7 --address=/mesh/192.0.2.99 --log-queries \
  --pid-file= --log-facility=- >"$RW/dnsmasq.log" 2>&1
# Started directly (not through in_a, a function, which would add a subshell): $! is the daemon.
nsenter -t "$HOLDER" -m -n -- dbus-daemon --config-file="$RW/dbus.conf" --nofork --nopidfile \
  --nosyslog >"$RW/dbus.log" 2>&1 &
TM_BG_PIDS+=("$!")
bus_up() { in_a test -S /run/dbus/system_bus_socket; }
tm_wait 5 "the D-Bus system bus" bus_up
RESOLVED_STARTS=0
# start_resolved: systemd-resolved (debug log in $RW/resolved.N.log); its pid in RESOLVED_PID.
start_resolved() {
  RESOLVED_STARTS=$((RESOLVED_STARTS + 1))
  RESOLVED_LOG=$RW/resolved.$RESOLVED_STARTS.log
  nsenter -t "$HOLDER" -m -n -- env SYSTEMD_LOG_LEVEL=debug SYSTEMD_LOG_TARGET=console \
    "$RESOLVED_BIN" >"$RESOLVED_LOG" 2>&1 &
  RESOLVED_PID=$!
  TM_BG_PIDS+=("$RESOLVED_PID")
  tm_wait 10 "systemd-resolved on D-Bus" in_a resolvectl status
  tm_log "systemd-resolved $(in_a resolvectl --version | head -n 1) up (pid $RESOLVED_PID)"
}
start_resolved

# registrations NAME: how many times member NAME logged a registration with resolved.
registrations() { grep -c "systemd-resolved: mesh names go to this agent through link" \
  "$(tm_member_log "$1")" || true; }
registered_times() { (( $(registrations alice) >= $1 )); }
# check_link: alice's link as resolvectl shows it.
check_link() {
  local status
  status=$(in_a resolvectl status "$IF")
  tm_log "resolvectl status $IF:"$'\n'"$status"
  grep -qE "DNS Servers: $A4 $A6\$" <<<"$status" ||
    tm_fail "the link's DNS servers are not alice's mesh IPs ($A4 $A6)"
  grep -qE "DNS Domain: .*~mesh" <<<"$status" || tm_fail "~mesh is not a routing domain of $IF"
  grep -qE "DNS Domain: .*~99\.10\.in-addr\.arpa" <<<"$status" ||
    tm_fail "the reverse zone of 10.99.0.0/16 is not a routing domain of $IF"
  grep -qE "DNS Domain: .*~0\.0\.0\.0\.9\.9\.0\.0\.9\.9\.d\.f\.ip6\.arpa" <<<"$status" ||
    tm_fail "the reverse zone of fd99:99::/48 is not a routing domain of $IF"
  grep -qE "Protocols: .*-DefaultRoute" <<<"$status" || tm_fail "$IF is a default route for DNS"
  grep -qE "Protocols: .*-LLMNR" <<<"$status" || tm_fail "LLMNR is on for $IF"
  grep -qE "Protocols: .*DNSSEC=no" <<<"$status" || tm_fail "DNSSEC is not off for $IF"
}
# stub ARGS...: dig's short answer from resolved's stub resolver in alice's namespace.
stub() { tm_in a dig +time=2 +tries=1 +short @127.0.0.53 "$@"; }

tm_step "alice joins: her link is registered with resolved"
TM_MEMBER_WRAP=$IN_A_MOUNTS tm_member_start alice
# bob sees alice's /run (and resolved's socket) from his own network namespace.
TM_MEMBER_WRAP="nsenter -t $HOLDER -m --" tm_member_start bob
tm_member_wait_peer 10 alice bob
IF=${TM_MEMBER_IF[alice]}
A4=$(tm_member_ip alice 4)
A6=$(tm_member_ip alice 6)
B4=$(tm_member_ip bob 4)
B6=$(tm_member_ip bob 6)
tm_wait 10 "alice to register with resolved" registered_times 1
check_link

tm_step "mesh names resolve through resolved; other names do not go to the agent"
out=$(in_a resolvectl query bob.mesh)
tm_log "resolvectl query bob.mesh:"$'\n'"$out"
# One line per address, in the order the answers came: "bob.mesh: ADDRESS -- link: IF" first.
grep -qE "^(bob\.mesh:)? +$B4 +-- link: $IF\$" <<<"$out" || tm_fail "bob.mesh A did not come from $IF"
grep -qE "^(bob\.mesh:)? +$B6 +-- link: $IF\$" <<<"$out" ||
  tm_fail "bob.mesh AAAA did not come from $IF"
out=$(in_a resolvectl query "$B4")
tm_log "resolvectl query $B4:"$'\n'"$out"
grep -qE "$B4: bob\.mesh +-- link: $IF" <<<"$out" || tm_fail "the PTR of $B4 did not come from $IF"
tm_expect_eq "bob.mesh A via the stub 127.0.0.53" "$(stub bob.mesh A)" "$B4"
tm_expect_eq "bob.mesh AAAA via the stub" "$(stub bob.mesh AAAA)" "$B6"
tm_expect_eq "PTR of $B4 via the stub" "$(stub -x "$B4")" "bob.mesh."
tm_expect_eq "www.outside.example via the stub (the global server)" \
  "$(stub www.outside.example A)" "192.0.2.7"
tm_log "via the stub: bob.mesh A $(stub bob.mesh A), AAAA $(stub bob.mesh AAAA), PTR of $B4" \
  "$(stub -x "$B4"), www.outside.example A $(stub www.outside.example A)"
tm_log "the global server (dnsmasq) was asked:"$'\n'"$(grep -E "query\[" "$RW/dnsmasq.log")"
grep -q "query\[A\] www.outside.example" "$RW/dnsmasq.log" ||
  tm_fail "www.outside.example did not reach the global server"
if grep -q "bob\.mesh" "$RW/dnsmasq.log"; then
  tm_fail "a mesh name reached the global server:"$'\n'"$(cat "$RW/dnsmasq.log")"
fi
# resolved logs each transaction with the scope it runs on: the global one is "dns on */*".
grep -qE "<www\.outside\.example IN A> scope dns on \*" "$RESOLVED_LOG" ||
  tm_fail "resolved's log does not show www.outside.example on its global scope"
if grep -qE "<www\.outside\.example IN [A-Z]+> scope dns on $IF" "$RESOLVED_LOG"; then
  tm_fail "resolved asked alice's link for www.outside.example:"$'\n'"$(
    grep -E "outside\.example" "$RESOLVED_LOG")"
fi
grep -qE "<bob\.mesh IN A> scope dns on $IF/" "$RESOLVED_LOG" ||
  tm_fail "resolved's log does not show bob.mesh on alice's link"

tm_step "bob (another network namespace, alice's /run) and carol (the host's /run) do not register"
tm_member_start carol
other_ns() { grep "systemd-resolved runs in another network namespace (pid $RESOLVED_PID" \
  "$(tm_member_log bob)"; }
tm_wait 5 "bob to find resolved in another network namespace" other_ns
advice() { grep -F "point this host's resolver at the mesh DNS server ($(tm_member_dns "$1"))" \
  "$(tm_member_log "$1")"; }
tm_wait 5 "bob's advice" advice bob
tm_wait 5 "carol's advice" advice carol
grep -q "/etc/netns/NAME/resolv.conf" "$(tm_member_log carol)" ||
  tm_fail "carol's advice lacks the network namespace way"
tm_expect_eq "links with ~mesh in alice's resolved" "$(in_a resolvectl status | grep -c "~mesh")" 1
(( $(registrations bob) == 0 && $(registrations carol) == 0 )) ||
  tm_fail "bob or carol registered with a resolved"

# reverted_before_removal: resolved's log has the revert request, before the link's removal.
reverted_before_removal() {
  local revert removal
  revert=$(grep -n "D-Bus revert request from client PID [0-9]* (resolvectl)" "$RESOLVED_LOG" |
    tail -n 1 | cut -d: -f1)
  removal=$(grep -n "Removing link [0-9]*/$IF\$" "$RESOLVED_LOG" | tail -n 1 | cut -d: -f1)
  echo "revert request at line ${revert:-none}, link removed at line ${removal:-none}"
  [[ -n "$revert" && -n "$removal" ]] && (( revert < removal ))
}

tm_step "alice stops (SIGTERM): the link is reverted before it goes, and resolved forgets it"
tm_member_stop alice
grep -q "systemd-resolved: reverted link $IF" "$(tm_member_log alice)" ||
  tm_fail "alice did not log the revert"
tm_wait 5 "resolved to log the revert, then the link's removal" reverted_before_removal
tm_log "resolved's log: $(grep -E "D-Bus revert request|Removing link [0-9]*/$IF\$" \
  "$RESOLVED_LOG" | tr '\n' ';')"
tm_expect_eq "links with ~mesh once alice is gone" \
  "$(in_a resolvectl status | grep -c "~mesh" || true)" 0
decoy() { [[ "$(stub bob.mesh A)" == 192.0.2.99 ]]; }
tm_wait 10 "bob.mesh to go to the global server (its decoy) once alice is gone" decoy
tm_log "bob.mesh A via the stub once alice is gone: $(stub bob.mesh A) (the global server's decoy)"

tm_step "resolved restarts (now with DNSSEC=yes): alice registers again"
TM_MEMBER_WRAP=$IN_A_MOUNTS tm_member_start alice
tm_wait 10 "alice to register with resolved again" registered_times 2
tm_expect_eq "bob.mesh A via the stub, alice back" "$(stub bob.mesh A)" "$B4"
old_pid=$RESOLVED_PID
kill -TERM "$old_pid"
tm__wait_exit "$old_pid" 10 || tm_fail "systemd-resolved did not exit on SIGTERM"
tm__bg_forget "$old_pid"
in_a mkdir -p /run/systemd/resolved.conf.d
in_a sh -c 'printf "[Resolve]\nDNSSEC=yes\n" >/run/systemd/resolved.conf.d/tm-e2e.conf'
start_resolved
restart=$(tm__now_ms)
tm_wait 15 "alice to notice the restart and register again" registered_times 3
tm_log "alice registered again $(( $(tm__now_ms) - restart )) ms after resolved was back"
grep -q "systemd-resolved runs as pid $RESOLVED_PID now" \
  "$(tm_member_log alice)" || tm_fail "alice did not log resolved's new pid"
status=$(in_a resolvectl status)
grep -qE "^ +Protocols: .*DNSSEC=yes" <<<"$status" ||
  tm_fail "resolved does not run with DNSSEC=yes globally:"$'\n'"$status"
check_link
tm_expect_eq "bob.mesh A via the stub, resolved validating" "$(stub bob.mesh A)" "$B4"

tm_step "alice leaves (tunnelmesh-agent leave): reverted again"
tm_member_leave alice
(( $(grep -c "systemd-resolved: reverted link $IF" "$(tm_member_log alice)") == 2 )) ||
  tm_fail "alice did not log the revert on leave"
tm_wait 5 "resolved to log the revert, then the link's removal" reverted_before_removal

tm_step "alice with --no-resolved registers nothing"
TM_MEMBER_WRAP=$IN_A_MOUNTS tm_member_start alice --no-resolved
tm_member_wait_peer 10 alice bob
status=$(in_a resolvectl status "$IF")
if grep -q "~mesh" <<<"$status"; then tm_fail "--no-resolved, yet $IF has ~mesh:"$'\n'"$status"; fi
log=$(sed -n '/start #3 of member alice/,$p' "$(tm_member_log alice)")
if grep -q "systemd-resolved" <<<"$log"; then
  tm_fail "alice mentions systemd-resolved with --no-resolved:"$'\n'"$(grep systemd-resolved <<<"$log")"
fi

tm_checks_done
for m in alice bob carol; do tm_member_alive "$m"; done
