#include "node-agent/agent/join_options.h"

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "lib/base/file.h"
#include "lib/crypto/x509.h"
#include "lib/dns/message.h"
#include "node-agent/control/coordinator_client.h"  // coord::, which member_kind.h uses.
#include "proto/member_kind.h"

namespace tunnelmesh {

namespace {

// Letters, digits, '-', '.' and '_': a DNS name or an IPv4 address.
bool IsHostName(const std::string& host) {
  if (host.empty() || host.size() > 253) return false;
  for (char c : host) {
    if (!absl::ascii_isalnum(static_cast<unsigned char>(c)) && c != '-' && c != '.' && c != '_') {
      return false;
    }
  }
  return true;
}

// The words after "reading PATH: " in lib/base/file.h's errors: the errno's text alone, so that
// the path (which may be a pasted token) is not repeated.
std::string ErrnoText(const absl::Status& status, const std::string& path) {
  const std::string message(status.message());
  const std::string prefix = "reading " + path + ": ";
  return message.rfind(prefix, 0) == 0 ? message.substr(prefix.size()) : "cannot read it";
}

bool IsIpv6Literal(const std::string& host) {
  absl::StatusOr<IpAddress> ip = IpAddress::Parse(host);
  return ip.ok() && !ip->is_v4();
}

}  // namespace

absl::StatusOr<HostPort> ParseHostPort(const std::string& text) {
  std::string hint;
  if (text.find("://") != std::string::npos) {
    hint = ": give the address without a scheme (no https://)";
  } else if (text.find('/') != std::string::npos) {
    hint = ": give the address without a path";
  }
  const absl::Status bad = absl::InvalidArgumentError(
      "COORDINATOR \"" + text +
      "\" is not an address: give HOST, HOST:PORT, [IPv6]:PORT or an IPv6 address (e.g. "
      "198.51.100.1, coordinator.example.com:7700, [fd00::1]:7700, fd00::1; the port defaults "
      "to 7700)" +
      hint);
  HostPort out;
  std::string rest = text;
  if (!rest.empty() && rest.front() == '[') {
    const size_t close = rest.find(']');
    if (close == std::string::npos) return bad;
    out.host = rest.substr(1, close - 1);
    rest = rest.substr(close + 1);
    if (!IsIpv6Literal(out.host)) return bad;
    if (rest.empty()) return out;
    if (rest.front() != ':') return bad;
    rest = rest.substr(1);
  } else {
    const size_t colon = rest.rfind(':');
    if (colon == std::string::npos) {
      out.host = rest;
      if (!IsHostName(out.host)) return bad;
      return out;
    }
    if (rest.find(':') != colon) {
      // Several colons: only a bare IPv6 address (its port needs brackets).
      out.host = rest;
      if (!IsIpv6Literal(out.host)) return bad;
      return out;
    }
    out.host = rest.substr(0, colon);
    rest = rest.substr(colon + 1);
    if (!IsHostName(out.host)) return bad;
  }
  if (rest.empty() || rest.size() > 5) return bad;
  int port = 0;
  for (char c : rest) {
    if (c < '0' || c > '9') return bad;
    port = port * 10 + (c - '0');
  }
  if (port < 1 || port > 65535) return bad;
  out.port = static_cast<uint16_t>(port);
  return out;
}

absl::StatusOr<std::string> ReadTokenFile(const std::string& flag, const std::string& path) {
  absl::StatusOr<std::string> token = ReadTrimmedFile(path);
  if (!token.ok()) {
    std::string advice;
    switch (token.status().code()) {
      case absl::StatusCode::kNotFound:
        advice = " (give the path of a file that holds the token, not the token itself)";
        break;
      case absl::StatusCode::kPermissionDenied:
        advice = " (run as root, or let this user read the file)";
        break;
      default:
        break;
    }
    // The path is not repeated: a token pasted in its place must not reach the terminal or logs.
    return absl::InvalidArgumentError(
        flag + ": cannot read the file: " + ErrnoText(token.status(), path) + advice);
  }
  if (token->empty()) {
    return absl::InvalidArgumentError(flag + ": the file is empty; it must hold the token");
  }
  return token;
}

std::string MakeDnsLabel(std::string_view text) {
  std::string label;
  for (char c : text) {
    const char lower = absl::ascii_tolower(static_cast<unsigned char>(c));
    if (absl::ascii_isalnum(static_cast<unsigned char>(lower))) {
      label.push_back(lower);
    } else if (!label.empty() && label.back() != '-') {
      label.push_back('-');
    }
  }
  if (label.size() > 63) label.resize(63);
  while (!label.empty() && label.back() == '-') label.pop_back();
  return label;
}

std::string DefaultMemberName(std::string_view host_name) {
  return MakeDnsLabel(host_name.substr(0, host_name.find('.')));
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
  absl::StatusOr<std::string> token =
      ReadTokenFile(join_token ? "--token-file" : "--kubernetes-token-file",
                    join_token ? options.token_file : options.kubernetes_token_file);
  if (!token.ok()) return token.status();
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
  if (!options.timeout.empty()) {
    absl::Duration timeout;
    if (!absl::ParseDuration(options.timeout, &timeout) || timeout <= absl::ZeroDuration()) {
      return absl::InvalidArgumentError("--timeout \"" + options.timeout +
                                        "\" is not a duration above zero (e.g. 30s, 2m, 1h; "
                                        "without --timeout, join waits for ever)");
    }
    checked.timeout = timeout;
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
  if (options.no_ssh && !options.ssh_proxy_command.empty()) {
    return absl::InvalidArgumentError(
        "--ssh-proxy-command needs the SSH path: drop --no-ssh or --ssh-proxy-command");
  }
  if (!options.ssh_proxy_command.empty() &&
      (options.ssh_proxy_command.find("%h") == std::string::npos ||
       options.ssh_proxy_command.find("%p") == std::string::npos)) {
    return absl::InvalidArgumentError(
        "--ssh-proxy-command must contain %h and %p (the peer's address and SSH port), e.g. "
        "--ssh-proxy-command 'ssh -W [%h]:%p user@jump.example.com'");
  }
  if (!options.no_ssh && options.ssh_port == 0) {
    return absl::InvalidArgumentError(
        "--ssh-port must be 1-65535 (or turn the SSH path off: --no-ssh)");
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
  for (const std::string& exit : options.exit_peers) {
    if (exit.empty() || MakeDnsLabel(exit) != exit) {
      return absl::InvalidArgumentError("--exit-peer \"" + exit +
                                        "\" is not a member name (lowercase letters, digits and "
                                        "'-', as `status` lists members)");
    }
  }
  if (!options.exit_dns.empty()) {
    absl::StatusOr<IpAddress> dns = IpAddress::Parse(options.exit_dns);
    if (!dns.ok()) {
      return absl::InvalidArgumentError("--exit-dns \"" + options.exit_dns +
                                        "\" is not an IP address (e.g. 9.9.9.9); the resolver "
                                        "is asked on port 53 through the exit peer");
    }
    checked.exit_dns = *dns;
  }
  return checked;
}

absl::StatusOr<SecretKey> LoadOrCreateNodeKey(const std::string& state_dir) {
  const std::string path = state_dir + "/node.key";
  // What to do about a node key that cannot be read or written.
  auto cannot = [&path](const char* verb, const absl::Status& s) {
    const std::string advice =
        s.code() == absl::StatusCode::kPermissionDenied
            ? "join runs as root (it creates a network interface); as root, give a --state-dir "
              "root may write"
            : "give a --state-dir on a writable file system";
    return absl::FailedPreconditionError(std::string("cannot ") + verb + " the node key " + path +
                                         " (" + std::string(s.message()) + "): " + advice);
  };
  absl::StatusOr<std::string> text = ReadTrimmedFile(path);
  if (text.ok() && !text->empty()) {
    absl::StatusOr<SecretKey> key = SecretKey::FromBase64(*text);
    if (!key.ok()) return absl::DataLossError(path + " does not hold a private key");
    return key;
  }
  if (!text.ok() && text.status().code() != absl::StatusCode::kNotFound) {
    return cannot("read", text.status());
  }
  SecretKey key = SecretKey::GeneratePrivate();
  if (absl::Status s = WriteFileAtomically(path, key.ToBase64() + "\n", 0600); !s.ok()) {
    return cannot("write", s);
  }
  return key;
}

}  // namespace tunnelmesh
