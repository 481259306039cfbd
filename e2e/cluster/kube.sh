# shellcheck shell=bash
# kube.sh: a real Kubernetes control plane (etcd + kube-apiserver, no nodes) for end-to-end tests.
#
# A test script sources this file, calls `kube_init NAME BUDGET_SECONDS` first, then `kube_up`,
# and talks to the API server with `kube_kubectl ...` (kubectl with the generated kubeconfig). An
# EXIT trap stops etcd and kube-apiserver (by pid) and removes the work directory; on failure it
# first prints the tail of both daemons' logs. Conventions follow e2e/netns/lib.sh: exit 77 when
# not root, a time budget watchdog shorter than the CTest TIMEOUT, polling with deadlines.
#
# The Kubernetes binaries are built once from Debian's own kubernetes source package (1.20.2, dependencies
# vendored) and cached outside the clone, so later runs start in seconds:
#   TM_KUBE_CACHE   cache folder (default /var/cache/tunnelmesh/kube); one subfolder per build's
#                   inputs holds kube-apiserver, kube-controller-manager, kube-scheduler, kubelet, kube-proxy.
#   TM_LOG_LINES    log lines per daemon printed on failure (default 200).
#   TM_KEEP_WORK=1  keep the work directory even on success.
#   KUBE_APISERVER_EXTRA_ARGS  more kube-apiserver flags, split at spaces (e.g. --tls-cert-file F
#                   --tls-private-key-file K for a CA-signed serving certificate).
#   KUBE_EXTRA_TOKENS  more lines for the static token file (TOKEN,USER,UID[,"GROUP,..."]).
#   KUBE_AUTHORIZATION_MODE  --authorization-mode (default RBAC).
#   KUBE_BIND_ADDRESS  the API server's address (default 127.0.0.1); nodes.sh uses one that pods
#                   on its nodes reach.
# Hooks a script (or nodes.sh) may define: kube_before_down (runs on exit before the control plane
# stops) and kube_more_diagnostics (runs on failure after the daemons' logs).
#
# Why the reflect2 replacement: the vendored modern-go/reflect2 1.0.1 crashes the API server on
# the first custom resource when built with Go >= 1.18; Debian's 1.0.2 does not.

set -Eeuo pipefail
shopt -s inherit_errexit

KUBE_LIB_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck disable=SC2034 # used by the test scripts
KUBE_REPO_ROOT=$(cd "$KUBE_LIB_DIR/../.." && pwd)
KUBE_CACHE=${TM_KUBE_CACHE:-/var/cache/tunnelmesh/kube}
KUBE_TEST=""
KUBE_WORK=""
KUBE_WATCHDOG_PID=""
KUBE_ETCD_PID=""
KUBE_APISERVER_PID=""
KUBE_APISERVER=""
KUBECONFIG_FILE=""
KUBE_PORT=""
KUBE_SERVER=""
KUBE_TOKEN=""

# Messages go to the script's original stderr (fd KUBE_ERR), so that a kube_fail inside a polled
# command, whose output kube_wait captures, is still seen.
exec {KUBE_OUT}>&1 {KUBE_ERR}>&2
kube_log() { printf '[%s %s] %s\n' "$(date +%H:%M:%S.%3N)" "${KUBE_TEST:-cluster}" "$*" >&"$KUBE_ERR"; }
kube_step() {
  printf '\n[%s %s] ==== %s\n' "$(date +%H:%M:%S.%3N)" "${KUBE_TEST:-cluster}" "$*" >&"$KUBE_ERR"
}
kube_fail() {
  printf '\n[%s %s] FAIL: %s\n' "$(date +%H:%M:%S.%3N)" "${KUBE_TEST:-cluster}" "$*" >&"$KUBE_ERR"
  exit 1
}

# ---------------------------------------------------------------------------------------------
# Setup and teardown

# kube_init NAME BUDGET_SECONDS: must come first. Exits 77 (CTest skip) when not root.
kube_init() {
  KUBE_TEST=$1
  local budget=$2 tool
  if [[ $EUID -ne 0 ]]; then
    echo "SKIP: $KUBE_TEST needs root (installs packages, builds and caches kube-apiserver)" >&2
    exit 77
  fi
  for tool in etcd kubectl openssl curl flock timeout; do
    command -v "$tool" >/dev/null ||
      kube_fail "required tool '$tool' is not installed (run scripts/install-deps.sh)"
  done
  KUBE_WORK=$(mktemp -d "/tmp/tmkube-$KUBE_TEST-$$.XXXXXX")
  trap kube__on_exit EXIT
  trap 'kube_fail "interrupted by SIGINT"' INT
  trap 'kube_fail "terminated by SIGTERM"' TERM
  # shellcheck disable=SC2064 # the budget is fixed now
  trap "kube_fail \"time budget of ${budget}s exceeded\"" USR1
  trap 'kube__on_err "$LINENO" "$BASH_COMMAND" "$?"' ERR
  ( trap 'kill "$s" 2>/dev/null; exit 0' TERM
    sleep "$budget" & s=$!
    wait "$s" && kill -USR1 "$$" ) >/dev/null 2>&1 &
  KUBE_WATCHDOG_PID=$!
  kube_log "work directory $KUBE_WORK, cache $KUBE_CACHE"
}

kube__on_err() { # LINE COMMAND STATUS
  printf '[%s %s] command failed (status %s) at %s line %s: %s\n' "$(date +%H:%M:%S.%3N)" \
    "${KUBE_TEST:-cluster}" "$3" "${BASH_SOURCE[1]##*/}" "$1" "$2" >&2
}

kube__on_exit() {
  local rc=$?
  trap - EXIT ERR INT TERM USR1
  set +eE
  exec 1>&"$KUBE_OUT" 2>&"$KUBE_ERR" # the exit may come from inside a redirected, polled command
  [[ -n "$KUBE_WATCHDOG_PID" ]] && kill "$KUBE_WATCHDOG_PID" 2>/dev/null
  (( rc == 0 )) || kube_dump_diagnostics
  if declare -F kube_before_down >/dev/null; then kube_before_down; fi
  kube_down
  if (( rc == 0 )); then
    [[ "${TM_KEEP_WORK:-0}" == 1 ]] || rm -rf "$KUBE_WORK"
    printf '\n[%s] PASS\n' "$KUBE_TEST" >&2
  else
    # Logs were printed above; the etcd data and certificates are of no use later.
    [[ "${TM_KEEP_WORK:-0}" == 1 ]] || rm -rf "$KUBE_WORK"
    printf '\n[%s] FAILED (exit %s)\n' "$KUBE_TEST" "$rc" >&2
  fi
  exit "$rc"
}

# kube__stop PID: TERM, up to 10 s, then KILL. Only our own children.
kube__stop() {
  local pid=$1 i
  [[ -n "$pid" ]] || return 0
  kill -TERM "$pid" 2>/dev/null || return 0
  for ((i = 0; i < 100; i++)); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  kill -KILL "$pid" 2>/dev/null
  wait "$pid" 2>/dev/null
  return 0
}

# kube_down: stop kube-apiserver, then etcd.
kube_down() {
  kube__stop "$KUBE_APISERVER_PID"
  KUBE_APISERVER_PID=""
  kube__stop "$KUBE_ETCD_PID"
  KUBE_ETCD_PID=""
}

kube_dump_diagnostics() {
  local lines=${TM_LOG_LINES:-200} f
  echo >&2
  echo "################ diagnostics for $KUBE_TEST ################" >&2
  for f in apiserver etcd; do
    if [[ -f "$KUBE_WORK/$f.log" ]]; then
      echo "-------- $f log (last $lines lines)" >&2
      tail -n "$lines" "$KUBE_WORK/$f.log" >&2
    fi
  done
  if [[ -n "$KUBE_APISERVER_PID" ]] && kill -0 "$KUBE_APISERVER_PID" 2>/dev/null; then
    echo "-------- kubectl get crds,meshes,meshpeers,peerpolicies -A" >&2
    timeout 10 kubectl --kubeconfig "$KUBECONFIG_FILE" get crds,meshes,meshpeers,peerpolicies -A \
      >&2 2>&1
  fi
  if declare -F kube_more_diagnostics >/dev/null; then kube_more_diagnostics; fi
  echo "################ end of diagnostics ################" >&2
}

# ---------------------------------------------------------------------------------------------
# Time and polling

kube__now_ms() { echo $(( ${EPOCHREALTIME/./} / 1000 )); }

# kube_wait TIMEOUT DESCRIPTION COMMAND...: poll COMMAND every 0.2 s until it succeeds; fail after
# TIMEOUT seconds with the output of its last attempt.
kube_wait() {
  local timeout=$1 desc=$2 deadline
  shift 2
  deadline=$(( $(kube__now_ms) + timeout * 1000 ))
  while ! "$@" >"$KUBE_WORK/poll.out" 2>&1; do
    if (( $(kube__now_ms) > deadline )); then
      echo "--- last attempt of: $*" >&2
      tail -n 20 "$KUBE_WORK/poll.out" >&2
      kube_fail "timed out after ${timeout}s waiting for $desc"
    fi
    sleep 0.2
  done
}

# kube_free_port: a TCP port on 127.0.0.1 that nothing listens on now.
kube_free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# ---------------------------------------------------------------------------------------------
# kube-apiserver binary

# kube_binaries: sets KUBE_BIN to the cache folder holding kube-apiserver, kube-controller-manager,
# kube-scheduler, kubelet and kube-proxy, and KUBE_APISERVER to the first, building all five if
# any is absent. The folder is named after the build's inputs (Debian's kubernetes version, the
# reflect2 package that replaces the vendored one, the Go toolchain), so a change of any of them
# builds anew instead of reusing binaries of other inputs. A lock on the cache folder keeps two
# runs from building at once; the second waits and uses the first one's result.
kube_binaries() {
  local key
  key=$(kube__build_key)
  KUBE_BIN=$KUBE_CACHE/$key
  KUBE_APISERVER=$KUBE_BIN/kube-apiserver
  if kube__binaries_present; then return 0; fi
  mkdir -p "$KUBE_CACHE"
  local lockfd
  exec {lockfd}>"$KUBE_CACHE/.lock"
  kube_log "waiting for the build lock $KUBE_CACHE/.lock"
  flock "$lockfd"
  if ! kube__binaries_present; then
    local start
    start=$(kube__now_ms)
    kube_step "building Kubernetes 1.20 from Debian's source into $KUBE_BIN (first run only, ~5 min on 2 cores)"
    # A plain call, not in an `||` list, so that errexit stays on inside; a failure ends the
    # script through the ERR and EXIT traps (the lock goes with the process).
    kube__build
    kube_log "Kubernetes built in $(( ($(kube__now_ms) - start) / 1000 ))s"
  fi
  exec {lockfd}>&-
}
# The old name, for the scripts that need only the API server.
kube_apiserver_binary() { kube_binaries; }

KUBE_COMPONENTS=(kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy)

kube__binaries_present() {
  local c
  for c in "${KUBE_COMPONENTS[@]}"; do [[ -x "$KUBE_BIN/$c" ]] || return 1; done
}

# kube__build_key: "k8s-" and the first 16 hex digits of a hash over the inputs' versions.
kube__build_key() {
  local k8s reflect go_version
  k8s=$(apt-cache policy kubernetes-client 2>/dev/null | awk '$1 == "Candidate:" {print $2}')
  [[ -n "$k8s" && "$k8s" != "(none)" ]] ||
    kube_fail "apt knows no kubernetes-client package: Debian's kubernetes source is what the tests build (run apt-get update)"
  reflect=$(dpkg-query -W -f '${Version}' golang-github-modern-go-reflect2-dev 2>/dev/null) ||
    kube_fail "golang-github-modern-go-reflect2-dev is missing (run scripts/install-deps.sh)"
  go_version=$(go version 2>/dev/null) || kube_fail "go is missing (run scripts/install-deps.sh)"
  printf 'k8s-%s\n' "$(printf '%s|%s|%s|%s' "$k8s" "$reflect" "$go_version" "${KUBE_COMPONENTS[*]}" |
    sha256sum | cut -c1-16)"
}

kube__build() (
  set -Eeuo pipefail
  local src=/etc/apt/sources.list.d/tunnelmesh-deb-src.sources
  local src_list=/etc/apt/sources.list.d/tunnelmesh-deb-src.list tmp tree
  for tool in apt-get dpkg-source go rsync make; do
    command -v "$tool" >/dev/null ||
      { echo "'$tool' is missing (run scripts/install-deps.sh)" >&2; return 1; }
  done
  [[ -d /usr/share/gocode/src/github.com/modern-go/reflect2 ]] ||
    { echo "golang-github-modern-go-reflect2-dev is missing (run scripts/install-deps.sh)" >&2; return 1; }
  # Same URIs, suites and components as the binary archive, for source packages: from the deb822
  # file of Debian's images, or from the one-line /etc/apt/sources.list that the installer and
  # debootstrap write.
  if [[ ! -f "$src" && ! -f "$src_list" ]]; then
    if [[ -f /etc/apt/sources.list.d/debian.sources ]]; then
      sed 's/^Types: deb$/Types: deb-src/' /etc/apt/sources.list.d/debian.sources >"$src.tmp"
      mv "$src.tmp" "$src"
    elif grep -qs '^deb ' /etc/apt/sources.list; then
      sed -n 's/^deb /deb-src /p' /etc/apt/sources.list >"$src_list.tmp"
      mv "$src_list.tmp" "$src_list"
    else
      echo "no Debian archive found in /etc/apt/sources.list or sources.list.d/debian.sources" \
        "to fetch the kubernetes source package from" >&2
      return 1
    fi
  fi
  apt-get update -qq
  tmp=$(mktemp -d /var/tmp/tmkube-build.XXXXXX)
  # shellcheck disable=SC2064 # the folder is fixed now
  trap "rm -rf '$tmp'" EXIT
  cd "$tmp"
  apt-get source -qq kubernetes >apt-source.log 2>&1 || { cat apt-source.log >&2; return 1; }
  tree=$(find . -maxdepth 1 -type d -name 'kubernetes-*' | head -n1)
  [[ -n "$tree" ]] || { echo "apt-get source kubernetes gave no source tree" >&2; return 1; }
  cd "$tree"
  rm -f vendor/github.com/modern-go/reflect2/*.go
  cp /usr/share/gocode/src/github.com/modern-go/reflect2/*.go vendor/github.com/modern-go/reflect2/
  cp /usr/share/gocode/src/github.com/modern-go/reflect2/*.s vendor/github.com/modern-go/reflect2/ \
    2>/dev/null || true
  rm -f vendor/github.com/modern-go/reflect2/*_test.go
  export GOPATH=$PWD/.go CGO_ENABLED=0 GOFLAGS=-mod=vendor GOCACHE=$PWD/.gocache
  mkdir -p .go/src/k8s.io
  ln -s ../../.. .go/src/k8s.io/kubernetes
  local what="" c
  for c in "${KUBE_COMPONENTS[@]}"; do what+=" cmd/$c"; done
  if ! make WHAT="${what# }" >"$tmp/build.log" 2>&1; then
    tail -n 60 "$tmp/build.log" >&2
    return 1
  fi
  # Into a fresh folder beside the final one, renamed into place: no half-filled cache folder.
  rm -rf "$KUBE_BIN.tmp.$$"
  mkdir -p "$KUBE_BIN.tmp.$$"
  for c in "${KUBE_COMPONENTS[@]}"; do install -m 755 "_output/bin/$c" "$KUBE_BIN.tmp.$$/$c"; done
  rm -rf "$KUBE_BIN"
  mv "$KUBE_BIN.tmp.$$" "$KUBE_BIN"
)

# ---------------------------------------------------------------------------------------------
# The control plane

# kube_up: etcd and kube-apiserver on free loopback ports, ready, with a kubeconfig for an admin
# token (KUBECONFIG_FILE).
kube_up() {
  kube_apiserver_binary
  local w=$KUBE_WORK etcd_client etcd_peer token start
  etcd_client=$(kube_free_port)
  etcd_peer=$(kube_free_port)
  while [[ "$etcd_peer" == "$etcd_client" ]]; do etcd_peer=$(kube_free_port); done

  kube_step "starting etcd on 127.0.0.1:$etcd_client"
  etcd --name tmkube --data-dir "$w/etcd" \
    --listen-client-urls "http://127.0.0.1:$etcd_client" \
    --advertise-client-urls "http://127.0.0.1:$etcd_client" \
    --listen-peer-urls "http://127.0.0.1:$etcd_peer" \
    --initial-advertise-peer-urls "http://127.0.0.1:$etcd_peer" \
    --initial-cluster "tmkube=http://127.0.0.1:$etcd_peer" >"$w/etcd.log" 2>&1 &
  KUBE_ETCD_PID=$!
  kube_wait 30 "etcd to serve on 127.0.0.1:$etcd_client" kube__etcd_healthy "$etcd_client"

  openssl genrsa -out "$w/sa.key" 2048 2>/dev/null
  openssl rsa -in "$w/sa.key" -pubout -out "$w/sa.pub" 2>/dev/null
  token=$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')
  (umask 077 && printf '%s,admin,admin,system:masters\n' "$token" >"$w/tokens.csv")
  if [[ -n "${KUBE_EXTRA_TOKENS:-}" ]]; then printf '%s\n' "$KUBE_EXTRA_TOKENS" >>"$w/tokens.csv"; fi
  local -a extra_args=()
  read -r -a extra_args <<<"${KUBE_APISERVER_EXTRA_ARGS:-}"

  KUBE_PORT=$(kube_free_port)
  local addr=${KUBE_BIND_ADDRESS:-127.0.0.1}
  KUBE_SERVER=https://$addr:$KUBE_PORT
  kube_step "starting kube-apiserver on $addr:$KUBE_PORT"
  start=$(kube__now_ms)
  "$KUBE_APISERVER" \
    --etcd-servers "http://127.0.0.1:$etcd_client" \
    --bind-address "$addr" --advertise-address "$addr" --secure-port "$KUBE_PORT" \
    --cert-dir "$w/certs" \
    --token-auth-file "$w/tokens.csv" \
    --authorization-mode "${KUBE_AUTHORIZATION_MODE:-RBAC}" \
    --service-account-key-file "$w/sa.pub" \
    --service-account-signing-key-file "$w/sa.key" \
    --service-account-issuer https://kubernetes.default.svc \
    --service-cluster-ip-range 10.96.0.0/16 \
    "${extra_args[@]}" \
    >"$w/apiserver.log" 2>&1 &
  KUBE_APISERVER_PID=$!

  KUBECONFIG_FILE=$w/kubeconfig
  cat >"$KUBECONFIG_FILE" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: tmkube
  cluster:
    server: $KUBE_SERVER
    insecure-skip-tls-verify: true
users:
- name: admin
  user:
    token: $token
contexts:
- name: tmkube
  context: {cluster: tmkube, user: admin}
current-context: tmkube
EOF
  chmod 600 "$KUBECONFIG_FILE"
  export KUBECONFIG=$KUBECONFIG_FILE
  KUBE_TOKEN=$token
  kube_wait 60 "kube-apiserver /readyz" kube__ready "$token"
  kube_log "kube-apiserver ready after $(( ($(kube__now_ms) - start) / 1000 ))s"
}

kube__etcd_healthy() {
  kill -0 "$KUBE_ETCD_PID" 2>/dev/null || kube_fail "etcd exited"
  curl -fsS "http://127.0.0.1:$1/health"
}

kube__ready() {
  kill -0 "$KUBE_APISERVER_PID" 2>/dev/null || kube_fail "kube-apiserver exited"
  curl -fsSk -H "Authorization: Bearer $1" "$KUBE_SERVER/readyz"
}

# kube_kubectl ARGS...: kubectl against this control plane, with a 30 s request timeout.
# kube_link_namespace NETNS HOST_IF NETNS_IF HOST_ADDR NETNS_ADDR: a veth pair from this namespace
# (where the API server listens) into NETNS, HOST_ADDR/30 on HOST_IF and NETNS_ADDR/30 on NETNS_IF,
# both up: NETNS then reaches the API server at HOST_ADDR, as a pod reaches the kubernetes
# Service. The pair goes away with NETNS.
kube_link_namespace() {
  local netns=$1 host_if=$2 netns_if=$3 host_addr=$4 netns_addr=$5
  ip link add "$host_if" type veth peer name "$netns_if" netns "$netns"
  ip addr add "$host_addr/30" dev "$host_if"
  ip link set "$host_if" up
  ip -n "$netns" addr add "$netns_addr/30" dev "$netns_if"
  ip -n "$netns" link set "$netns_if" up
}
kube_kubectl() { kubectl --kubeconfig "$KUBECONFIG_FILE" --request-timeout=30s "$@"; }

# kube_placeholder_pod NS NAME SERVICE_ACCOUNT: a Pod object NAME (no kubelet runs it) for a
# container that pod_launcher.py starts in its place, so that what the container does to its own
# pod (the operator labels it, --label-pod) has an object to act on.
kube_placeholder_pod() {
  kube_kubectl -n "$1" get pod "$2" >/dev/null 2>&1 && return 0
  kube_kubectl -n "$1" create -f - >/dev/null <<EOF
apiVersion: v1
kind: Pod
metadata: {name: $2}
spec:
  serviceAccountName: $3
  automountServiceAccountToken: false
  containers: [{name: placeholder, image: k8s.local/placeholder}]
EOF
}
