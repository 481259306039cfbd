#!/usr/bin/env bash
# psk_rollover.sh: the mesh's preshared key rolls over under live traffic without losing a packet.
#
# Two members on a public segment reach each other directly; both ping the other every 50 ms for
# the whole run. Sessions are renewed every few seconds (TUNNELMESH_TEST_REKEY_AFTER_SECONDS, the
# agent's test-only hook; a handshake at most every REKEY_TIMEOUT, 5 s), so handshakes happen
# before, during and after every step. Raising the Mesh's spec.presharedKeyGeneration in the
# manifest starts the rollover; the coordinator logs its three steps (accept the new key, use it,
# drop the old one), 15 s apart.
#
# Checks: the coordinator takes the three steps and records generation 1 with a new key (and no
# old one) in preshared-keys.json (mode 0600); each agent applied three key
# changes; handshakes completed during the rollover and again after its last step, when only the
# new key is accepted anywhere (so they used the new key); no handshake failed
# (drops.handshake_invalid unchanged); no ping was lost in either direction (0%); neither the old
# nor the new key appears in any log; afterwards a restarted member (which knows only the new key)
# handshakes with the member that kept its peer through the rollover.
#
# Usage: psk_rollover.sh [AGENT_PATH [OPERATOR_PATH]]   (needs root; exits 77 otherwise)

# shellcheck source=nat_lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/nat_lib.sh"
tm_mesh_init psk_rollover 170 "$@"

# Test-only: renew sessions every 2 s (the protocol's REKEY_AFTER_TIME is 120 s).
export TUNNELMESH_TEST_REKEY_AFTER_SECONDS=2

# tm_psk_field FIELD: a field of mesh demo's record in the coordinator's preshared-keys.json, or
# "sha:KEY" for a hash of a key (the keys themselves are never printed).
tm_psk_field() {
  "$TM_PY" - "$(tm_coord_state)/preshared-keys.json" "$1" <<'PYEOF'
import hashlib, json, sys
record = json.load(open(sys.argv[1]))["meshes"]["demo"]
field = sys.argv[2]
if field.startswith("sha:"):
    value = record.get(field[4:])
    print(hashlib.sha256(value.encode()).hexdigest()[:16] if value else "none")
else:
    print(record.get(field, "none"))
PYEOF
}

# tm_psk_key_b64: the current key, only to grep the logs for it (never printed).
tm_psk_key_b64() {
  "$TM_PY" -c 'import json, sys; print(json.load(open(sys.argv[1]))["meshes"]["demo"]["key"])' \
    "$(tm_coord_state)/preshared-keys.json"
}

tm__coord_logged() { grep -q -- "$1" "$(tm_coord_log)"; }

# tm_mode PATH: the octal mode of PATH.
tm_mode() { stat -c %a "$1"; }

tm_step "topology: coordinator and two members on a public segment"
tm_net_public coord
tm_net_public a
tm_net_public b
tm_coord_setup coord
tm_coord_start
PSK_FILE="$(tm_coord_state)/preshared-keys.json"
[[ -f "$PSK_FILE" ]] || tm_fail "the coordinator did not create $PSK_FILE"
tm_expect_eq "mode of preshared-keys.json" "$(tm_mode "$PSK_FILE")" 600
tm_expect_eq "generation before the rollover" "$(tm_psk_field generation)" 0
OLD_KEY_HASH=$(tm_psk_field sha:key)
OLD_KEY_B64=$(tm_psk_key_b64)

tm_step "two members join and reach each other directly"
tm_members_join alpha:a beta:b
A4=$(tm_member_ip alpha 4)
B4=$(tm_member_ip beta 4)
tm_wait_ping a "$B4" 10
tm_member_wait_path 10 alpha beta direct
tm_member_wait_path 10 beta alpha direct

# Sessions renew while traffic flows: wait for one renewal before the rollover starts.
tm__handshakes_above() { # NAME PEER MIN
  local n
  n=$(tm__mjson "$1" "peer('$2')['handshakes']") || return 1
  echo "$1 -> $2: $n handshakes (want > $3)"
  (( n > $3 ))
}
tm_flow_ping_start ab a "$B4" 60 0.05
tm_flow_ping_start ba b "$A4" 60 0.05
H0=$(tm_handshakes alpha beta)
tm_wait 12 "a session renewal while the pings run" tm__handshakes_above alpha beta "$H0"
INVALID_B0=$(tm_mjson beta "s['drops']['handshake_invalid']")
INVALID_A0=$(tm_mjson alpha "s['drops']['handshake_invalid']")
H_BEFORE=$(( $(tm_handshakes alpha beta) + $(tm_handshakes beta alpha) ))

tm_step "raise spec.presharedKeyGeneration in the manifest"
ROLL_START=$(tm__now_ms)
sed 's/^  joinTokenSecretRef:/  presharedKeyGeneration: 1\n  joinTokenSecretRef:/' \
  "$TM_WORK/coord.manifests/mesh.yaml" >"$TM_WORK/mesh.yaml.new"
grep -q 'presharedKeyGeneration: 1' "$TM_WORK/mesh.yaml.new" ||
  tm_fail "could not add presharedKeyGeneration to the manifest"
mv "$TM_WORK/mesh.yaml.new" "$TM_WORK/coord.manifests/mesh.yaml"
tm_wait 5 "the coordinator to start the rollover (step 1/3)" \
  tm__coord_logged "preshared key rollover to generation 1, step 1/3"
tm_log "step 1/3 after $(tm_elapsed_since "$ROLL_START")s"
tm_wait 25 "step 2/3 (members use the new key)" \
  tm__coord_logged "preshared key rollover to generation 1, step 2/3"
tm_log "step 2/3 after $(tm_elapsed_since "$ROLL_START")s"
H_MID=$(( $(tm_handshakes alpha beta) + $(tm_handshakes beta alpha) ))
tm_wait 25 "the last step (the old key dropped)" \
  tm__coord_logged "preshared key rollover to generation 1, done"
DONE_AT=$(date +%s)
tm_log "done after $(tm_elapsed_since "$ROLL_START")s"

tm_step "handshakes after the last step use the new key"
# The agents get the last step within a second; from then on no member accepts the old key.
tm_wait 15 "alpha to complete a handshake with beta after the rollover" \
  tm__handshake_after alpha beta $(( DONE_AT + 1 ))
tm_wait 15 "beta to complete a handshake with alpha after the rollover" \
  tm__handshake_after beta alpha $(( DONE_AT + 1 ))
H_AFTER=$(( $(tm_handshakes alpha beta) + $(tm_handshakes beta alpha) ))
tm_expect_gt "handshakes during steps 1-2 of the rollover" $(( H_MID - H_BEFORE )) 0
tm_expect_gt "handshakes from step 2 to after the rollover" $(( H_AFTER - H_MID )) 1
tm_expect_eq "alpha: failed handshakes during the rollover" \
  "$(tm_mjson alpha "s['drops']['handshake_invalid']")" "$INVALID_A0"
tm_expect_eq "beta: failed handshakes during the rollover" \
  "$(tm_mjson beta "s['drops']['handshake_invalid']")" "$INVALID_B0"
tm_log "psk_secondary_accepted: alpha $(tm_mjson alpha "s['drops'].get('psk_secondary_accepted')")," \
  "beta $(tm_mjson beta "s['drops'].get('psk_secondary_accepted')")"

tm_step "the coordinator's record and the agents' logs"
tm_expect_eq "generation after the rollover" "$(tm_psk_field generation)" 1
tm_expect_eq "step after the rollover" "$(tm_psk_field step)" stable
tm_expect_eq "old key kept after the rollover" "$(tm_psk_field sha:previous)" none
[[ "$(tm_psk_field sha:key)" != "$OLD_KEY_HASH" ]] || tm_fail "the key did not change"
tm_expect_eq "mode of preshared-keys.json" "$(tm_mode "$PSK_FILE")" 600
# One when it joined, then one per step.
for m in alpha beta; do
  tm_expect_eq "$m: key changes applied" \
    "$(grep -c 'mesh preshared keys changed' "$(tm_member_log "$m")")" 4
done
NEW_KEY_B64=$(tm_psk_key_b64)
for log in "$(tm_coord_log)" "$(tm_member_log alpha)" "$(tm_member_log beta)"; do
  if grep -qF -e "$OLD_KEY_B64" -e "$NEW_KEY_B64" "$log"; then
    tm_fail "a preshared key appears in $log"
  fi
done

tm_step "no ping was lost"
tm_flow_ping_check ab 0
tm_flow_ping_check ba 0

# A restarted beta knows only the new key. Alpha kept its device peer for beta through the
# rollover: a handshake between them now shows that alpha applied the new key to that existing
# peer (had it kept the old one, every handshake would fail as handshake_invalid).
tm_step "a restarted member, which knows only the new key, handshakes with the other"
tm_member_stop beta
tm_member_start beta
RESTARTED_AT=$(date +%s)
tm_wait_ping a "$B4" 15
tm_wait 15 "alpha to complete a handshake with the restarted beta" \
  tm__handshake_after alpha beta $(( RESTARTED_AT - 1 ))
tm_ping b "$A4" 3
tm_member_alive alpha
tm_member_alive beta
tm_coord_alive
