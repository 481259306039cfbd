#!/usr/bin/env bash
# Installs the Debian 12 packages TunnelMesh needs to build, test and benchmark, and helm v4 and
# kubectl (scripts/get-kube-tools.sh). Idempotent: when everything is already installed it returns at once
# without touching the network.
set -euo pipefail

packages=(
  # Build
  cmake g++ make ninja-build pkg-config
  libsodium-dev libssl-dev libnl-3-dev libnl-route-3-dev libabsl-dev
  libspdlog-dev libfmt-dev libcli11-dev nlohmann-json3-dev
  libgtest-dev libgmock-dev libbenchmark-dev
  libgrpc++-dev protobuf-compiler-grpc libprotobuf-dev protobuf-compiler libyaml-cpp-dev
  libcpprest-dev libboost-dev zlib1g-dev
  # The agent's SSH path (node-agent/transport/ssh_transport.cc)
  libssh-dev
  # CI legs (scripts/ci/leg.sh): clang with its sanitizer runtimes, and the format check
  clang-14 libclang-rt-14-dev clang-format-14
  # ... and a compiler cache outside the clone that the next run reuses (leg.sh sets where)
  ccache
  # Run and test: real network namespaces, TUN, NAT, a real WireGuard peer, traffic tools
  iproute2 iputils-ping bind9-dnsutils dnsmasq-base nftables wireguard-go wireguard-tools iperf3 netcat-openbsd python3 procps stun-client
  # e2e/netns/metrics.sh parses every scraped line with a Prometheus text parser (and scrapes with curl)
  python3-prometheus-client
  # e2e/netns/ssh_path.sh: an OpenSSH server with another host key poses as a peer (ssh-keygen, sshd)
  openssh-server openssh-client
  # e2e/cluster: etcd and the toolchain to build kube-apiserver from Debian's kubernetes source
  etcd-server golang-go rsync golang-github-modern-go-reflect2-dev dpkg-dev
  # e2e/cluster talks to the API server with curl and makes its certificates with openssl
  curl openssl ca-certificates
  # scripts/build-image.sh (strip; ldd comes with every Debian) and e2e/cluster/image.sh,
  # which runs the image in a private containerd (with runc)
  binutils containerd runc
  # e2e/cluster/nodes.sh: real nodes (kubelet, kube-proxy, containerd) with the standard CNI
  # plugins, kube-proxy's iptables (nft backend) and conntrack, and busybox for the test pods
  containernetworking-plugins iptables conntrack busybox-static
)

missing=()
for p in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done
if [ ${#missing[@]} -ne 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "install-deps: missing packages: ${missing[*]}; run as root (sudo $0)" >&2
    exit 1
  fi
  echo "install-deps: installing ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# helm v4 and kubectl for the chart and cluster tests (e2e/cluster/, root only); a no-op once
# installed. TM_NO_HELM=1 skips them (the Containerfile's build stage needs neither).
if [ "${TM_NO_HELM:-0}" = 1 ]; then
  :
elif [ "$(id -u)" -eq 0 ]; then
  bash "$(dirname "$0")/get-kube-tools.sh"
elif [[ "$(helm version --short 2>/dev/null)" != v4.* ]] || ! command -v kubectl >/dev/null; then
  echo "install-deps: helm v4 or kubectl is missing (the cluster tests need them): sudo scripts/get-kube-tools.sh" >&2
fi
