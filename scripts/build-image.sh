#!/usr/bin/env bash
# build-image.sh OUT.tar [BUILD_DIR]: the TunnelMesh container image, built offline from a build
# tree (default: build), written as a docker-archive tarball that `ctr images import`,
# `docker load` and `podman load` accept. No container daemon, registry or network is needed.
#
# The image holds one layer with exactly:
#   /usr/bin/tunnelmesh-agent, /usr/bin/tunnelmesh-operator, /usr/bin/tunnelmesh-cni
#                                                             debug info stripped
#   /usr/sbin/ip and /usr/sbin/nft (iproute2, nftables): the agent runs them for exit peers
#   (docs/remote-access.md)
#   the shared libraries they all load (ldd) and the dynamic loader, under /usr/lib..., with /lib
#   and /lib64 as symlinks into /usr (Debian 12's merged /usr)
#   /etc/ssl/certs/ca-certificates.crt, /etc/passwd and /etc/group (root and nobody), /tmp (1777)
# No shell and no other program: no binary runs one. (The agent runs `ip` and `nft` directly, no
# shell in between; it runs `resolvectl` only when
# systemd-resolved listens in its network namespace, which a container does not see; without it
# the agent logs the DNS commands to run instead, see docs/dns.md.)
# The config matches the Containerfile's image: no entrypoint, Cmd
# ["/usr/bin/tunnelmesh-operator", "--help"], user 65532:65532, Debian's default PATH.
#
# Reproducible: the same binaries and libraries give the same bytes (entries sorted, uid/gid 0,
# every mtime SOURCE_DATE_EPOCH, default 0, no timestamp in the JSON).
#   TM_IMAGE_NAME  repository with a domain part (default k8s.local/tunnelmesh)
#   TM_IMAGE_TAG   tag (default: the version `tunnelmesh-agent --version` prints, or dev)
# Needs bash, python3, ldd (libc-bin), strip (binutils), ca-certificates, iproute2 and nftables:
# scripts/install-deps.sh.
set -euo pipefail

usage() {
  echo "usage: $0 OUT.tar [BUILD_DIR]   (BUILD_DIR defaults to build)" >&2
  exit 2
}
[[ $# -ge 1 && $# -le 2 ]] || usage
[[ $1 != -* ]] || usage
out=$1
build_dir=${2:-build}
name=${TM_IMAGE_NAME:-k8s.local/tunnelmesh}
epoch=${SOURCE_DATE_EPOCH:-0}

die() {
  echo "build-image: $*" >&2
  exit 1
}
[[ $epoch =~ ^[0-9]+$ ]] || { echo "build-image: SOURCE_DATE_EPOCH must be whole seconds, not '$epoch'" >&2; exit 2; }
[[ $name == */* && ${name%%/*} == *.* ]] ||
  { echo "build-image: TM_IMAGE_NAME '$name' needs a domain part, e.g. k8s.local/tunnelmesh" >&2; exit 2; }
for tool in python3 ldd strip ip nft; do
  command -v "$tool" >/dev/null || die "'$tool' is not installed (run scripts/install-deps.sh)"
done
ca_bundle=/etc/ssl/certs/ca-certificates.crt
[[ -f $ca_bundle ]] || die "$ca_bundle is missing (install the ca-certificates package)"
binaries=(tunnelmesh-agent tunnelmesh-operator tunnelmesh-cni)
for b in "${binaries[@]}"; do
  [[ -x $build_dir/bin/$b ]] ||
    die "$build_dir/bin/$b is missing: build it (ninja -C $build_dir $b) or pass the build folder"
done

# The tools the agent runs, as Debian installs them (/usr/sbin/ip is a link to /bin/ip).
tools=()
for t in ip nft; do
  tools+=("$(readlink -f "$(command -v "$t")")")
done

tag=${TM_IMAGE_TAG:-}
if [[ -z $tag ]]; then
  # "tunnelmesh-agent 0.1.0 (git abc1234)" -> 0.1.0
  tag=$("$build_dir/bin/tunnelmesh-agent" --version 2>/dev/null | awk 'NR == 1 {print $2}') || true
  [[ $tag =~ ^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$ ]] || tag=dev
fi

root=$(mktemp -d "${TMPDIR:-/tmp}/tm-image.XXXXXX")
trap 'rm -rf "$root"' EXIT
mkdir -p "$root/usr/bin" "$root/usr/sbin" "$root/etc/ssl/certs" "$root/tmp"
for b in "${binaries[@]}"; do
  strip --strip-debug -o "$root/usr/bin/$b" "$build_dir/bin/$b"
done
for t in "${tools[@]}"; do
  cp -L "$t" "$root/usr/sbin/$(basename "$t")"
done

# Libraries at the path ldd resolves them to, moved under /usr (merged /usr: /lib -> usr/lib), the
# file's content under the name the binary asks for (symlinks followed). The loader is the line
# without "=>" that names an absolute path; "FILE:" lines head each binary's list.
libs=$(ldd "${binaries[@]/#/$build_dir/bin/}" "${tools[@]}" | awk '
  /:$/ { next }
  / not found/ { print "MISSING " $1; next }
  $2 == "=>" && $3 ~ /^\// { print $3; next }
  $1 ~ /^\// { print $1 }' | sort -u)
if grep -q '^MISSING ' <<<"$libs"; then
  die "ldd finds no $(grep '^MISSING ' <<<"$libs" | cut -d' ' -f2 | paste -sd' ') (run scripts/install-deps.sh)"
fi
while read -r lib; do
  dest=$root/usr${lib#/usr}
  mkdir -p "$(dirname "$dest")"
  cp -L "$lib" "$dest"
done <<<"$libs"
for dir in "$root"/usr/lib*; do
  ln -s "usr/$(basename "$dir")" "$root/$(basename "$dir")"
done

cp -L "$ca_bundle" "$root/etc/ssl/certs/"
printf '%s\n' 'root:x:0:0:root:/root:/usr/sbin/nologin' \
  'nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin' >"$root/etc/passwd"
printf '%s\n' 'root:x:0:' 'nogroup:x:65534:' >"$root/etc/group"

case $(uname -m) in
  x86_64) arch=amd64 ;;
  aarch64) arch=arm64 ;;
  *) arch=$(uname -m) ;;
esac

mkdir -p "$(dirname "$out")"
config='{"User": "65532:65532", "Entrypoint": null, "Cmd": ["/usr/bin/tunnelmesh-operator", "--help"]}'
python3 "$(dirname "$0")/docker-archive.py" "$root" "$out.tmp" "$name:$tag" "$arch" "$epoch" "$config" \
  "scripts/build-image.sh"
mv "$out.tmp" "$out"
echo "build-image: wrote $out ($(stat -c %s "$out") bytes)"
