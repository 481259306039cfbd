#!/usr/bin/env bash
# kube_client: the operator's Kubernetes client library (operator/kube) against a real
# kube-apiserver, through operator/kube/kube_client_check (built by CMake next to the other
# binaries; TM_KUBE_CLIENT_CHECK overrides where it is). The API server gets:
#   - a serving certificate signed by a CA made here, so that the client's verification is
#     tested with the right CA, a wrong one, and insecure-skip-tls-verify;
#   - client certificates signed by that CA (--client-ca-file), one for system:masters;
#   - two more static tokens: tm-nobody (no RBAC at all) and tm-watcher (RBAC granted and revoked
#     by the check);
#   - etcd compaction every 2 s and no watch cache for configmaps, so that watches from old
#     resource versions get 410 Gone soon and the informer's relist can be tested.
# shellcheck source=kube.sh
source "$(dirname "${BASH_SOURCE[0]}")/kube.sh"
kube_init kube_client 1200

# The check binary: CTest runs this script in BUILD/e2e/cluster.
find_check_binary() {
  local dir=$PWD
  while [[ "$dir" != / ]]; do
    if [[ -f "$dir/CMakeCache.txt" ]]; then echo "$dir/bin/kube_client_check"; return; fi
    dir=$(dirname "$dir")
  done
  echo "$KUBE_REPO_ROOT/build/bin/kube_client_check"
}
CHECK=${TM_KUBE_CLIENT_CHECK:-$(find_check_binary)}
[[ -x "$CHECK" ]] || kube_fail "no check binary at $CHECK (build the target kube_client_check)"

kube_step "making a CA, a serving and a client certificate signed by it, and a wrong CA"
pki=$KUBE_WORK/pki
mkdir -p "$pki"
make_ca() { # NAME
  openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj "/CN=$1" \
    -keyout "$pki/$1.key" -out "$pki/$1.crt" 2>/dev/null
}
make_ca tm-test-ca
make_ca tm-wrong-ca
openssl req -newkey rsa:2048 -nodes -subj /CN=kube-apiserver \
  -keyout "$pki/server.key" -out "$pki/server.csr" 2>/dev/null
printf '%s\n' 'subjectAltName=IP:127.0.0.1,DNS:localhost' 'basicConstraints=CA:FALSE' \
  'keyUsage=digitalSignature,keyEncipherment' 'extendedKeyUsage=serverAuth' >"$pki/server.ext"
openssl x509 -req -in "$pki/server.csr" -CA "$pki/tm-test-ca.crt" -CAkey "$pki/tm-test-ca.key" \
  -CAcreateserial -days 1 -extfile "$pki/server.ext" -out "$pki/server.crt" 2>/dev/null

openssl req -newkey rsa:2048 -nodes -subj "/O=system:masters/CN=tm-certuser" \
  -keyout "$pki/client.key" -out "$pki/client.csr" 2>/dev/null
printf '%s\n' 'extendedKeyUsage=clientAuth' >"$pki/client.ext"
openssl x509 -req -in "$pki/client.csr" -CA "$pki/tm-test-ca.crt" -CAkey "$pki/tm-test-ca.key" \
  -CAcreateserial -days 1 -extfile "$pki/client.ext" -out "$pki/client.crt" 2>/dev/null

random_token() { head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n'; }
nobody_token=$(random_token)
watcher_token=$(random_token)
KUBE_EXTRA_TOKENS="$nobody_token,tm-nobody,tm-nobody"$'\n'
KUBE_EXTRA_TOKENS+="$watcher_token,tm-watcher,tm-watcher"
export KUBE_EXTRA_TOKENS
KUBE_APISERVER_EXTRA_ARGS="--tls-cert-file $pki/server.crt --tls-private-key-file $pki/server.key"
KUBE_APISERVER_EXTRA_ARGS+=" --client-ca-file $pki/tm-test-ca.crt"
KUBE_APISERVER_EXTRA_ARGS+=" --etcd-compaction-interval 2s --watch-cache-sizes configmaps#0"
export KUBE_APISERVER_EXTRA_ARGS

kube_up

# The same kubeconfig, verifying with the CA named by a path relative to the kubeconfig.
sed 's|insecure-skip-tls-verify: true|certificate-authority: pki/tm-test-ca.crt|' \
  "$KUBECONFIG_FILE" >"$KUBE_WORK/kubeconfig-ca"

kube_step "running $CHECK"
start=$(kube__now_ms)
status=0
"$CHECK" --kubeconfig "$KUBECONFIG_FILE" --kubeconfig-ca "$KUBE_WORK/kubeconfig-ca" \
  --ca-file "$pki/tm-test-ca.crt" --wrong-ca-file "$pki/tm-wrong-ca.crt" \
  --nobody-token "$nobody_token" --watcher-token "$watcher_token" \
  --localhost-server "https://localhost:$KUBE_PORT" \
  --client-cert "$pki/client.crt" --client-key "$pki/client.key" \
  ${TM_KUBE_CHECK_ONLY:+--only "$TM_KUBE_CHECK_ONLY"} \
  >"$KUBE_WORK/check.out" 2>"$KUBE_WORK/check.err" || status=$?
cat "$KUBE_WORK/check.out" >&2
kube_log "checks took $(( ($(kube__now_ms) - start) / 1000 ))s"
if (( status != 0 )); then
  echo "-------- check stderr (last 80 lines)" >&2
  tail -n 80 "$KUBE_WORK/check.err" >&2
  kube_fail "$(grep -c '^FAIL ' "$KUBE_WORK/check.out") kube client check(s) failed"
fi
