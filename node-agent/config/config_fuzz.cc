// Fuzz target for ParseAgentConfig. Config files come from users and from generated manifests, so
// the parser must reject anything without crashing. The first input byte picks a mode: raw text;
// text assembled from config fragments; or whole "Key = value" lines after a valid [Interface]
// header, so that random bytes also produce accepted configs and reach every value parser. Host
// names resolve through a fake: fuzzing never touches the network.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>
#include <vector>

#include "absl/strings/match.h"
#include "node-agent/config/agent_config.h"

namespace {

constexpr std::string_view kFragments[] = {
    "[Interface]\n",
    "[Peer]\n",
    "[peer]",
    "PrivateKey = 4MIsK4vfoHQadsOTzO0Dawy/5fPbXFNwJJNfXXQ/H28=\n",
    "PublicKey = hKf9fr37PGLy2zdK8tHwTl9i/kuvV6YO5PjjIyzOtVs=\n",
    "PublicKey = DiQB2LIyLMAsJja7Cyegp9rQ3qTgKztYvWk6isz/nXI=\n",
    "PublicKey = 7Ggn+vWc1+ngEW8JrB9824VlbE+Bmdr8FEAm+dA+dmk=\n",
    "PresharedKey = BljAJk0++TVT+AoaqVQ6vAF9J7cMROmJoOuYnjkozu4=\n",
    "PresharedKey = AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n",
    "Address = ",
    "AllowedIPs = ",
    "Endpoint = ",
    "ListenPort = ",
    "MTU = ",
    "PersistentKeepalive = ",
    "PostUp = iptables -A FORWARD -i %i -j ACCEPT\n",
    "DNS = 1.1.1.1\n",
    "10.0.0.1/24",
    "fd00::1/64",
    "0.0.0.0/0",
    "::/0",
    "192.0.2.1:51820",
    "[2001:db8::1]:51820",
    "vpn.example.com:51820",
    "flaky.example.net:1",
    "1420",
    "65535",
    "65536",
    "off",
    "25",
    "0",
    ",",
    ", ",
    "/",
    ":",
    "[",
    "]",
    "=",
    "#",
    " ",
    "\n",
    "\r\n",
};

// For the line mode: a line starts with `prefix`, then one of `values`, then a newline.
struct LineKind {
  std::string_view prefix;
  std::vector<std::string_view> values;
};

const std::vector<LineKind>& LineKinds() {
  static const auto* kinds = new std::vector<LineKind>{
      {"[Peer]\nPublicKey = ",
       {"hKf9fr37PGLy2zdK8tHwTl9i/kuvV6YO5PjjIyzOtVs=",
        "DiQB2LIyLMAsJja7Cyegp9rQ3qTgKztYvWk6isz/nXI=",
        "7Ggn+vWc1+ngEW8JrB9824VlbE+Bmdr8FEAm+dA+dmk=", "abc",
        "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="}},
      {"[Peer]\n", {""}},
      {"Address = ",
       {"10.0.0.1/24", "fd00::1/64", "10.0.0.2", "10.0.0.1/24, fd00::1/64", "10.0.0.1/33",
        "0.0.0.0/8", "", "a,,b"}},
      {"AllowedIPs = ",
       {"10.0.0.0/24", "0.0.0.0/0, ::/0", "10.1.2.3/16", "fd00::/129", "", "10.0.0.0/24,",
        "192.168.0.0/16, fd00::/8"}},
      {"Endpoint = ",
       {"192.0.2.1:51820", "[2001:db8::1]:51820", "vpn.example.com:51820", "flaky.example.net:1",
        "2001:db8::1:1", "host:0", "[1.2.3.4]:5", "bad host:1"}},
      {"ListenPort = ", {"0", "51820", "65535", "65536", "-1"}},
      {"MTU = ", {"1280", "1420", "65535", "1279", "x"}},
      {"PersistentKeepalive = ", {"off", "25", "0", "65536"}},
      {"PresharedKey = ",
       {"BljAJk0++TVT+AoaqVQ6vAF9J7cMROmJoOuYnjkozu4=",
        "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=", "short="}},
      {"PostUp = ", {"iptables -A FORWARD -i %i -j ACCEPT"}},
      {"DNS = ", {"1.1.1.1"}},
      {"[Interface]\n", {""}},
      {"# ", {"comment", "PrivateKey = x"}},
  };
  return *kinds;
}

absl::StatusOr<tunnelmesh::IpAddress> FakeResolve(const std::string& host) {
  if (absl::StartsWith(host, "flaky")) return absl::UnavailableError("fuzz: DNS unavailable");
  return tunnelmesh::IpAddress::V4(0xC0000207u);  // 192.0.2.7
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  std::string text;
  switch (data[0] % 3) {
    case 0:
      text.assign(reinterpret_cast<const char*>(data + 1), size - 1);
      break;
    case 1: {
      constexpr size_t kCount = sizeof(kFragments) / sizeof(kFragments[0]);
      for (size_t i = 1; i < size; ++i) text.append(kFragments[data[i] % kCount]);
      break;
    }
    default: {
      text = "[Interface]\nPrivateKey = 4MIsK4vfoHQadsOTzO0Dawy/5fPbXFNwJJNfXXQ/H28=\n";
      const std::vector<LineKind>& kinds = LineKinds();
      for (size_t i = 1; i + 1 < size; i += 2) {
        const LineKind& kind = kinds[data[i] % kinds.size()];
        text.append(kind.prefix);
        text.append(kind.values[data[i + 1] % kind.values.size()]);
        text.push_back('\n');
      }
    }
  }
  absl::StatusOr<tunnelmesh::AgentConfig> config =
      tunnelmesh::ParseAgentConfig(text, "fuzz.conf", &FakeResolve);
  if (!config.ok()) {
    // Every error names the file, and only the documented codes come out.
    if (!absl::StartsWith(config.status().message(), "fuzz.conf")) std::abort();
    if (config.status().code() != absl::StatusCode::kInvalidArgument &&
        config.status().code() != absl::StatusCode::kUnavailable) {
      std::abort();
    }
    return 0;
  }
  // Invariants of an accepted config.
  if (config->mtu < tunnelmesh::kMinMtu || config->mtu > tunnelmesh::kMaxMtu) std::abort();
  if (config->private_key.IsZero()) std::abort();
  for (const tunnelmesh::InterfaceAddress& address : config->addresses) {
    if (address.prefix_length < 1 || address.prefix_length > address.address.bit_length()) {
      std::abort();
    }
  }
  for (size_t i = 0; i < config->peers.size(); ++i) {
    const tunnelmesh::PeerConfig& peer = config->peers[i];
    if (peer.public_key.IsZero()) std::abort();
    if (peer.endpoint.has_value() && peer.endpoint->port() == 0) std::abort();
    if (peer.preshared_key.has_value() && peer.preshared_key->IsZero()) std::abort();
    for (size_t j = 0; j < i; ++j) {
      if (config->peers[j].public_key == peer.public_key) std::abort();
    }
  }
  return 0;
}
