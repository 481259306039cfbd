#include "node-agent/agent/join_options.h"

#include "absl/strings/str_cat.h"
#include "lib/base/file.h"
#include "lib/crypto/x509.h"
#include "lib/dns/message.h"
#include "node-agent/control/coordinator_client.h"  // coord::, which member_kind.h uses.
#include "proto/member_kind.h"

namespace tunnelmesh {

absl::StatusOr<HostPort> ParseHostPort(const std::string& text) {
  const absl::Status bad = absl::InvalidArgumentError("\"" + text + "\" is not HOST[:PORT]");
  HostPort out;
  std::string rest = text;
  if (!rest.empty() && rest.front() == '[') {
    const size_t close = rest.find(']');
    if (close == std::string::npos) return bad;
    out.host = rest.substr(1, close - 1);
    rest = rest.substr(close + 1);
    if (out.host.empty()) return bad;
    if (rest.empty()) return out;
    if (rest.front() != ':') return bad;
    rest = rest.substr(1);
  } else {
    const size_t colon = rest.rfind(':');
    if (colon == std::string::npos || rest.find(':') != colon) {
      // No port, or a bare IPv6 address.
      out.host = rest;
      if (out.host.empty()) return bad;
      return out;
    }
    out.host = rest.substr(0, colon);
    rest = rest.substr(colon + 1);
  }
  if (out.host.empty() || rest.empty() || rest.size() > 5) return bad;
  int port = 0;
  for (char c : rest) {
    if (c < '0' || c > '9') return bad;
    port = port * 10 + (c - '0');
  }
  if (port < 1 || port > 65535) return bad;
  out.port = static_cast<uint16_t>(port);
  return out;
}

absl::StatusOr<CheckedJoinOptions> CheckJoinOptions(const JoinOptions& options) {
  CheckedJoinOptions checked;
  absl::StatusOr<HostPort> coordinator = ParseHostPort(options.coordinator);
  if (!coordinator.ok()) return coordinator.status();
  checked.coordinator = *coordinator;
  if (options.token_file.empty() == options.kubernetes_token_file.empty()) {
    return absl::InvalidArgumentError(
        "give exactly one of --token-file (the mesh's join token) and --kubernetes-token-file (a "
        "ServiceAccount token)");
  }
  if (!MemberKindFromName(options.kind)) {
    return absl::InvalidArgumentError("--kind \"" + options.kind +
                                      "\" is not one of Node, Pod, External");
  }
  const bool join_token = !options.token_file.empty();
  const std::string& token_path = join_token ? options.token_file : options.kubernetes_token_file;
  absl::StatusOr<std::string> token = ReadTrimmedFile(token_path);
  if (!token.ok() || token->empty()) {
    return absl::InvalidArgumentError(std::string("cannot read a token from ") +
                                      (join_token ? "--token-file " : "--kubernetes-token-file ") +
                                      token_path);
  }
  if (join_token) checked.join_token = *token;
  if (!options.ca_file.empty()) {
    absl::StatusOr<std::string> pem = ReadTrimmedFile(options.ca_file);
    if (!pem.ok() || pem->find("BEGIN CERTIFICATE") == std::string::npos) {
      return absl::InvalidArgumentError("--ca-file " + options.ca_file +
                                        " does not hold a PEM certificate");
    }
    checked.ca_pem = *pem + "\n";
  }
  if (!options.ca_hash.empty()) {
    if (absl::Status s = ValidateCaHash(options.ca_hash); !s.ok()) return s;
  }
  if (options.aliases.size() > kMaxAliases) {
    return absl::InvalidArgumentError(
        absl::StrCat("--alias: at most ", kMaxAliases, " aliases per member"));
  }
  for (const std::string& alias : options.aliases) {
    if (!dns::IsDnsLabel(alias)) {
      return absl::InvalidArgumentError("--alias \"" + alias +
                                        "\" is not a DNS label: lowercase letters, digits and "
                                        "'-', at most 63 (e.g. --alias git)");
    }
  }
  if (!options.no_dns) {
    if (options.dns_port == 0) {
      return absl::InvalidArgumentError("--dns-port must be 1-65535 (or turn DNS off: --no-dns)");
    }
    absl::StatusOr<IpAddress> listen = IpAddress::Parse(options.dns_listen);
    if (!listen.ok()) {
      return absl::InvalidArgumentError("--dns-listen \"" + options.dns_listen +
                                        "\" is not an IP address (e.g. 127.0.0.100)");
    }
    checked.dns_listen = *listen;
    if (!options.dns_upstream.empty()) {
      absl::StatusOr<Endpoint> upstream = Endpoint::Parse(options.dns_upstream);
      if (!upstream.ok()) {
        // A bare address means port 53.
        absl::StatusOr<IpAddress> ip = IpAddress::Parse(options.dns_upstream);
        if (ip.ok()) upstream = Endpoint(*ip, 53);
      }
      if (!upstream.ok() || upstream->port() == 0) {
        return absl::InvalidArgumentError("--dns-upstream \"" + options.dns_upstream +
                                          "\" is not IP or IP:PORT (e.g. 1.1.1.1 or "
                                          "[2606:4700:4700::1111]:53)");
      }
      checked.dns_upstream = *upstream;
    }
    checked.register_resolved = !options.no_resolved;
  }
  return checked;
}

absl::StatusOr<SecretKey> LoadOrCreateNodeKey(const std::string& state_dir) {
  const std::string path = state_dir + "/node.key";
  absl::StatusOr<std::string> text = ReadTrimmedFile(path);
  if (text.ok() && !text->empty()) {
    absl::StatusOr<SecretKey> key = SecretKey::FromBase64(*text);
    if (!key.ok()) return absl::DataLossError(path + " does not hold a private key");
    return key;
  }
  if (!text.ok() && text.status().code() != absl::StatusCode::kNotFound) return text.status();
  SecretKey key = SecretKey::GeneratePrivate();
  if (absl::Status s = WriteFileAtomically(path, key.ToBase64() + "\n", 0600); !s.ok()) {
    return absl::FailedPreconditionError("cannot write " + path + ": " + std::string(s.message()) +
                                         " (set --state-dir)");
  }
  return key;
}

}  // namespace tunnelmesh
