#!/usr/bin/env bash
# image.sh: the image scripts/build-image.sh writes works in a real containerd.
#
# Builds the image twice from this build's binaries and compares the tarballs' sha256 (it must be
# reproducible), checks that its one layer holds nothing but what build-image.sh lists (the three
# binaries, the libraries ldd names for them and the loader, the CA bundle, passwd, group, /tmp,
# the /lib and /lib64 links), then starts a private containerd (its own root, state and socket in
# a temp dir, the CRI plugin disabled, so no system containerd is touched), imports the tarball
# with `ctr images import` and runs `tunnelmesh-agent --version` and `tunnelmesh-operator
# --version` in containers (runc), whose output must equal the host binaries'. /bin/sh must not run
# in it. Prints the tarball's size, gzip-compressed and unpacked. On exit, even on failure, it
# deletes the containers and tasks, stops containerd (by pid), unmounts what is left under the
# temp dir and removes it.
#   TM_AGENT      the agent binary of the build under test (CMake sets it); the operator is
#                 taken from the same folder.
#   TM_KEEP_WORK=1  keep the temp dir.
set -Eeuo pipefail
shopt -s inherit_errexit

TEST=image
REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
BUDGET=${TM_IMAGE_BUDGET:-300}
WORK=""
CONTAINERD_PID=""
WATCHDOG_PID=""
SOCK=""
NS=tm
START=$EPOCHREALTIME

log() { printf '[%s %s] %s\n' "$(date +%H:%M:%S.%3N)" "$TEST" "$*" >&2; }
fail() {
  printf '\n[%s %s] FAIL: %s\n' "$(date +%H:%M:%S.%3N)" "$TEST" "$*" >&2
  exit 1
}

if [[ $EUID -ne 0 ]]; then
  echo "SKIP: $TEST needs root (runs containerd and runc)" >&2
  exit 77
fi
for tool in containerd ctr runc containerd-shim-runc-v2 python3 gzip sha256sum timeout; do
  command -v "$tool" >/dev/null || fail "required tool '$tool' is not installed (run scripts/install-deps.sh)"
done
agent=${TM_AGENT:-$REPO_ROOT/build/bin/tunnelmesh-agent}
bin_dir=$(dirname "$agent")
build_dir=$(dirname "$bin_dir")
operator=$bin_dir/tunnelmesh-operator
cni=$bin_dir/tunnelmesh-cni
for b in "$agent" "$operator" "$cni"; do
  [[ -x $b ]] || fail "$b is missing: build it (ninja -C $build_dir tunnelmesh-agent tunnelmesh-operator tunnelmesh-cni)"
done

ctr_() { timeout 60 ctr -a "$SOCK" -n "$NS" "$@"; }

cleanup() {
  local status=$? id mnt
  trap - EXIT ERR
  set +e # every step below runs, whatever the one before it did
  [[ -n $WATCHDOG_PID ]] && kill "$WATCHDOG_PID" 2>/dev/null
  if [[ -n $CONTAINERD_PID ]]; then
    if [[ $status -ne 0 && -f $WORK/containerd.log ]]; then
      log "containerd log (last 40 lines):"
      tail -n 40 "$WORK/containerd.log" >&2 || true
    fi
    for id in $(ctr_ containers list -q 2>/dev/null); do
      ctr_ tasks kill -s SIGKILL "$id" >/dev/null 2>&1 || true
      ctr_ tasks delete -f "$id" >/dev/null 2>&1 || true
      ctr_ containers delete "$id" >/dev/null 2>&1 || true
    done
    kill "$CONTAINERD_PID" 2>/dev/null || true
    for _ in $(seq 100); do kill -0 "$CONTAINERD_PID" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$CONTAINERD_PID" 2>/dev/null || true
    wait "$CONTAINERD_PID" 2>/dev/null || true
  fi
  if [[ -n $WORK ]]; then
    # Deepest first: the snapshotter's and the shim's mounts under the work dir.
    while read -r mnt; do
      umount "$mnt" 2>/dev/null || umount -l "$mnt" 2>/dev/null || log "could not unmount $mnt"
    done < <(awk -v w="$WORK" 'index($2, w) == 1 {print $2}' /proc/self/mounts | sort -r)
    if [[ ${TM_KEEP_WORK:-0} == 1 ]]; then
      log "kept $WORK"
    else
      rm -rf "$WORK"
    fi
  fi
  if [[ $status -eq 0 ]]; then
    log "PASS in $(( (${EPOCHREALTIME/./} - ${START/./}) / 1000 )) ms"
  fi
  exit "$status"
}

WORK=$(mktemp -d "/tmp/tm-$TEST-$$.XXXXXX")
trap cleanup EXIT
trap 'fail "interrupted by SIGINT"' INT
trap 'fail "terminated by SIGTERM"' TERM
# shellcheck disable=SC2064 # the budget is fixed now
trap "fail \"time budget of ${BUDGET}s exceeded\"" USR1
trap 'log "command failed (status $?) at line $LINENO: $BASH_COMMAND"' ERR
( trap 'kill "$s" 2>/dev/null; exit 0' TERM
  sleep "$BUDGET" & s=$!
  wait "$s" && kill -USR1 "$$" ) >/dev/null 2>&1 &
WATCHDOG_PID=$!
log "work directory $WORK, binaries from $bin_dir"

# ---- build twice, compare
log "==== build the image twice"
bash "$REPO_ROOT/scripts/build-image.sh" "$WORK/a/image.tar" "$build_dir" >&2
bash "$REPO_ROOT/scripts/build-image.sh" "$WORK/b/image.tar" "$build_dir" >&2
sum_a=$(sha256sum <"$WORK/a/image.tar" | cut -d' ' -f1)
sum_b=$(sha256sum <"$WORK/b/image.tar" | cut -d' ' -f1)
[[ $sum_a == "$sum_b" ]] || fail "two builds differ: sha256 $sum_a vs $sum_b (build-image.sh is not reproducible)"
log "both builds: sha256 $sum_a"
tarball=$WORK/a/image.tar
ref=$(python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))[0]["RepoTags"][0])' \
  <(tar -xOf "$tarball" manifest.json))
log "image $ref"

# ---- what the layer holds
log "==== the layer holds only what build-image.sh lists"
layer=$(tar -tf "$tarball" | grep '/layer.tar$')
tar -xOf "$tarball" "$layer" | tar -tf - | sed 's,/$,,' | sort >"$WORK/layer.list"
# Allowed: these paths, their parent folders, and each library ldd names (under usr/lib*).
{
  printf '%s\n' usr/bin/tunnelmesh-agent usr/bin/tunnelmesh-operator usr/bin/tunnelmesh-cni \
    usr/sbin/ip usr/sbin/nft etc/passwd etc/group etc/ssl/certs/ca-certificates.crt tmp lib lib64
  ldd "$agent" "$operator" "$cni" "$(readlink -f "$(command -v ip)")" "$(readlink -f "$(command -v nft)")" | awk '$2 == "=>" && $3 ~ /^\// {print $3} $1 ~ /^\/.*[^:]$/ {print $1}' |
    sed -E 's,^(/usr)?/,usr/,'
} | sort -u >"$WORK/expected.list"
while read -r path; do
  grep -qxF "$path" "$WORK/layer.list" || fail "the layer lacks $path"
done < <(grep -v '^lib64$' "$WORK/expected.list")
python3 - "$WORK/expected.list" "$WORK/layer.list" <<'PY' || fail "the layer holds files build-image.sh does not list (above)"
import os, sys
expected = set(open(sys.argv[1]).read().split())
parents = set()
for p in expected:
    while (p := os.path.dirname(p)):
        parents.add(p)
extra = [p for p in open(sys.argv[2]).read().split() if p not in expected and p not in parents]
for p in extra:
    print("unexpected in the image:", p, file=sys.stderr)
sys.exit(1 if extra else 0)
PY
log "$(wc -l <"$WORK/layer.list") entries, all accounted for; no bin/sh: $(grep -c '^\(usr/\)\?bin/sh$' "$WORK/layer.list" || true)"

# ---- a private containerd
log "==== containerd in $WORK"
SOCK=$WORK/run/containerd.sock
mkdir -p "$WORK/root" "$WORK/state" "$WORK/run" "$WORK/opt"
cat >"$WORK/config.toml" <<EOF
version = 2
root = "$WORK/root"
state = "$WORK/state"
disabled_plugins = ["io.containerd.grpc.v1.cri"]
[grpc]
  address = "$SOCK"
[ttrpc]
  address = "$WORK/run/containerd.sock.ttrpc"
[debug]
  address = ""
[metrics]
  address = ""
[plugins."io.containerd.internal.v1.opt"]
  path = "$WORK/opt"
EOF
containerd --config "$WORK/config.toml" >"$WORK/containerd.log" 2>&1 &
CONTAINERD_PID=$!
for _ in $(seq 100); do
  ctr -a "$SOCK" version >/dev/null 2>&1 && break
  kill -0 "$CONTAINERD_PID" 2>/dev/null || fail "containerd exited at start (log above)"
  sleep 0.1
done
ctr -a "$SOCK" version >/dev/null || fail "containerd did not answer on $SOCK within 10 s"
log "containerd $(containerd --version | awk '{print $3}') pid $CONTAINERD_PID, runc $(runc --version | awk 'NR == 1 {print $3}')"

log "==== import"
ctr_ images import "$tarball" >&2
ctr_ images list -q | grep -qxF "$ref" || fail "ctr images import did not create $ref"

log "==== run the binaries in containers"
run() { # NAME ARGS...: ctr run --rm, stdout and stderr together
  local name=$1
  shift
  ctr_ run --rm "$ref" "$TEST-$name-$$" "$@" 2>&1
}
for b in tunnelmesh-agent tunnelmesh-operator; do
  want=$("$bin_dir/$b" --version 2>&1)
  got=$(run "${b#tunnelmesh-}" "/usr/bin/$b" --version) ||
    fail "$b --version in the container failed: $got"
  [[ $got == "$want" ]] || fail "$b --version in the container says '$got', the host binary '$want'"
  log "in the container: $got"
done
# The tools the agent runs for exit peers start too (their libraries are all there).
for t in "ip -V" "nft --version"; do
  want=$(${t} 2>&1)
  want=${want%%, libbpf*} # ip reports the libbpf version it found in its own way
  got=$(run "${t%% *}" "/usr/sbin/${t%% *}" "${t#* }") || fail "$t in the container failed: $got"
  [[ $got == "$want"* ]] || fail "$t in the container says '$got', the host's '$want'"
  log "in the container: $got"
done
if out=$(run sh /bin/sh -c true); then
  fail "/bin/sh ran in the image (it should have no shell): $out"
fi
log "no shell: /bin/sh does not start ($(tail -n 1 <<<"$out" | cut -c1-200))"

log "==== size"
gz=$(gzip -n <"$tarball" | wc -c)
unpacked=$(du -sb "$WORK/root/io.containerd.snapshotter.v1.overlayfs" 2>/dev/null | cut -f1) || true
log "tarball $(stat -c %s "$tarball") bytes, gzip $gz bytes; layer $(tar -xOf "$tarball" "$layer" | wc -c) bytes; snapshot on disk ${unpacked:-?} bytes"
