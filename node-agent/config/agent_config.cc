// The wg-quick config parser: the section/key state machine, each key's validation and the checks
// across the whole file (duplicate keys, peers and AllowedIPs). Its lexical layer (key table, value
// parsers) is agent_config_syntax.*; resolving host names and reading the file,
// agent_config_load.cc.
#include "node-agent/config/agent_config.h"

#include <map>
#include <utility>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "lib/base/status_macros.h"
#include "node-agent/config/agent_config_syntax.h"

namespace tunnelmesh {
namespace {

using config_syntax::Absl;
using config_syntax::Escaped;
using config_syntax::FamilyName;
using config_syntax::FindKey;
using config_syntax::IsUnspecified;
using config_syntax::Key;
using config_syntax::KeyList;
using config_syntax::KeyShapeProblem;
using config_syntax::KeySpec;
using config_syntax::kMaxHostNameChars;
using config_syntax::ParseAddressAndLength;
using config_syntax::ParseDecimal;
using config_syntax::PrefixKey;
using config_syntax::Quote;
using config_syntax::Section;
using config_syntax::SectionName;
using config_syntax::Std;

// Parses one config text. One instance per parse.
class ConfigParser {
 public:
  ConfigParser(absl::string_view file_name, const HostResolver& resolve_host)
      : file_name_(file_name), resolve_host_(resolve_host) {}

  absl::StatusOr<AgentConfig> Parse(absl::string_view text) {
    // Editors on Windows may prepend a UTF-8 byte order mark.
    absl::ConsumePrefix(&text, "\xEF\xBB\xBF");
    int line_number = 0;
    for (absl::string_view line : absl::StrSplit(text, '\n')) {
      ++line_number;
      // As in wg(8), "#" starts a comment anywhere on a line.
      if (size_t hash = line.find('#'); hash != absl::string_view::npos)
        line = line.substr(0, hash);
      line = absl::StripAsciiWhitespace(line);
      if (line.empty()) continue;
      RETURN_IF_ERROR(HandleLine(line_number, line));
    }
    RETURN_IF_ERROR(Finish());
    return std::move(config_);
  }

 private:
  absl::Status Error(int line, absl::string_view key, absl::string_view what) const {
    return absl::InvalidArgumentError(absl::StrCat(file_name_, ":", line, ": ", key, ": ", what));
  }

  absl::Status HandleLine(int line, absl::string_view text) {
    if (text.front() == '[') return HandleSectionHeader(line, text);
    size_t equals = text.find('=');
    if (equals == absl::string_view::npos) {
      return absl::InvalidArgumentError(absl::StrCat(
          file_name_, ":", line, ": ", Quote(text),
          " is neither a \"Key = Value\" line nor a section header ([Interface] or [Peer])"));
    }
    absl::string_view name = absl::StripAsciiWhitespace(text.substr(0, equals));
    absl::string_view value = absl::StripAsciiWhitespace(text.substr(equals + 1));
    if (name.empty()) {
      return absl::InvalidArgumentError(
          absl::StrCat(file_name_, ":", line, ": ", Quote(text), " has no key before \"=\""));
    }
    if (section_ == Section::kNone) {
      return Error(line, Escaped(name),
                   "appears before any section (put it under [Interface] or [Peer])");
    }
    const KeySpec* spec = FindKey(name, section_);
    if (spec == nullptr) {
      Section other = section_ == Section::kInterface ? Section::kPeer : Section::kInterface;
      if (const KeySpec* elsewhere = FindKey(name, other); elsewhere != nullptr) {
        return Error(line, elsewhere->name,
                     absl::StrCat("belongs in a ", SectionName(other), " section, not in ",
                                  SectionName(section_)));
      }
      return Error(line, Escaped(name),
                   absl::StrCat("unknown key in ", SectionName(section_), " (expected one of ",
                                KeyList(section_), ")"));
    }
    if (spec->single) {
      auto [it, inserted] = keys_in_section_.emplace(spec->key, line);
      if (!inserted) {
        return Error(line, spec->name,
                     absl::StrCat("appears twice in this section (first at line ", it->second,
                                  "); keep one"));
      }
    }
    if (spec->key == Key::kIgnored) {
      config_.warnings.push_back(absl::StrCat(file_name_, ":", line, ": ", spec->name,
                                              " is ignored (", spec->ignored_because, ")"));
      return absl::OkStatus();
    }
    return section_ == Section::kInterface ? HandleInterfaceKey(line, *spec, value)
                                           : HandlePeerKey(line, *spec, value);
  }

  absl::Status HandleSectionHeader(int line, absl::string_view text) {
    if (text.back() != ']') {
      return absl::InvalidArgumentError(
          absl::StrCat(file_name_, ":", line, ": ", Quote(text),
                       " is not a section header (expected [Interface] or [Peer])"));
    }
    absl::string_view name = absl::StripAsciiWhitespace(text.substr(1, text.size() - 2));
    RETURN_IF_ERROR(FinishSection());
    keys_in_section_.clear();
    if (absl::EqualsIgnoreCase(name, "Interface")) {
      if (interface_line_ != 0) {
        return Error(line, "[Interface]",
                     absl::StrCat("second [Interface] section (the first is at line ",
                                  interface_line_, "); a file configures one interface"));
      }
      interface_line_ = line;
      section_ = Section::kInterface;
      return absl::OkStatus();
    }
    if (absl::EqualsIgnoreCase(name, "Peer")) {
      section_ = Section::kPeer;
      peer_ = PeerConfig();
      peer_->line = line;
      peer_key_line_ = 0;
      return absl::OkStatus();
    }
    return Error(line, absl::StrCat("[", Escaped(name), "]"),
                 "unknown section (expected [Interface] or [Peer])");
  }

  absl::Status HandleInterfaceKey(int line, const KeySpec& spec, absl::string_view value) {
    switch (spec.key) {
      case Key::kPrivateKey: {
        ASSIGN_OR_RETURN(config_.private_key, ParseSecretKey(line, spec.name, value));
        if (config_.private_key.IsZero()) {
          return Error(line, spec.name, "is all zero (generate a key with \"wg genkey\")");
        }
        private_key_line_ = line;
        return absl::OkStatus();
      }
      case Key::kListenPort: {
        std::optional<uint32_t> port = ParseDecimal(value, 65535);
        if (!port.has_value()) {
          return Error(line, spec.name,
                       absl::StrCat(Quote(value), " is not a UDP port (expected 0-65535)"));
        }
        config_.listen_port = static_cast<uint16_t>(*port);
        return absl::OkStatus();
      }
      case Key::kMtu: {
        std::optional<uint32_t> mtu = ParseDecimal(value, UINT32_MAX);
        if (!mtu.has_value()) {
          return Error(line, spec.name,
                       absl::StrCat(Quote(value), " is not a number (expected an MTU of ", kMinMtu,
                                    "-", kMaxMtu, ")"));
        }
        if (*mtu < kMinMtu || *mtu > kMaxMtu) {
          return Error(line, spec.name,
                       absl::StrCat(*mtu, " is out of range (expected ", kMinMtu, "-", kMaxMtu,
                                    "; IPv6 needs at least ", kMinMtu, ")"));
        }
        config_.mtu = static_cast<int>(*mtu);
        return absl::OkStatus();
      }
      case Key::kAddress:
        return ForEachListEntry(line, spec.name, value, [&](absl::string_view entry) {
          return AddAddress(line, spec.name, entry);
        });
      case Key::kTable:
        return ParseTable(line, spec.name, value);
      default:
        return Error(line, spec.name, "internal error: key routed to the wrong section");
    }
  }

  absl::Status HandlePeerKey(int line, const KeySpec& spec, absl::string_view value) {
    PeerConfig& peer = *peer_;
    switch (spec.key) {
      case Key::kPublicKey: {
        std::string problem = KeyShapeProblem(value);
        absl::StatusOr<PublicKey> key = problem.empty() ? PublicKey::FromBase64(Std(value))
                                                        : absl::InvalidArgumentError(problem);
        if (!key.ok()) {
          return Error(line, spec.name,
                       absl::StrCat(Quote(value),
                                    " is not a base64 WireGuard key (expected 44 characters "
                                    "ending in \"=\", as \"wg pubkey\" prints it)"));
        }
        if (key->IsZero()) return Error(line, spec.name, "is all zero (expected the peer's key)");
        auto [it, inserted] = peer_key_lines_.emplace(*key, line);
        if (!inserted) {
          return Error(line, spec.name,
                       absl::StrCat("peer ", Quote(value), " is already defined at line ",
                                    it->second, " (merge the two [Peer] sections)"));
        }
        peer.public_key = *key;
        peer_key_line_ = line;
        return absl::OkStatus();
      }
      case Key::kPresharedKey: {
        ASSIGN_OR_RETURN(SecretKey psk, ParseSecretKey(line, spec.name, value));
        // An all-zero PresharedKey is how wg(8) spells "none".
        if (psk.IsZero()) {
          peer.preshared_key.reset();
        } else {
          peer.preshared_key = std::move(psk);
        }
        return absl::OkStatus();
      }
      case Key::kEndpoint: {
        ASSIGN_OR_RETURN(peer.endpoint, ParseEndpoint(line, spec.name, value));
        peer.endpoint_text = std::string(value);
        return absl::OkStatus();
      }
      case Key::kAllowedIps:
        return ForEachListEntry(line, spec.name, value, [&](absl::string_view entry) {
          return AddAllowedIp(line, spec.name, entry, &peer);
        });
      case Key::kPersistentKeepalive: {
        if (absl::EqualsIgnoreCase(value, "off")) {
          peer.persistent_keepalive = 0;
          return absl::OkStatus();
        }
        std::optional<uint32_t> seconds = ParseDecimal(value, 65535);
        if (!seconds.has_value()) {
          return Error(line, spec.name,
                       absl::StrCat(Quote(value),
                                    " is not a keepalive interval (expected seconds 0-65535, "
                                    "or \"off\")"));
        }
        peer.persistent_keepalive = static_cast<uint16_t>(*seconds);
        return absl::OkStatus();
      }
      default:
        return Error(line, spec.name, "internal error: key routed to the wrong section");
    }
  }

  // Calls `handle` for each entry of a comma-separated list. An empty value is an empty list (as in
  // wg-quick); an empty entry between commas is a typo.
  template <typename Handle>
  absl::Status ForEachListEntry(int line, absl::string_view key, absl::string_view value,
                                Handle handle) {
    if (value.empty()) return absl::OkStatus();
    for (absl::string_view entry : absl::StrSplit(value, ',')) {
      entry = absl::StripAsciiWhitespace(entry);
      if (entry.empty()) {
        return Error(
            line, key,
            absl::StrCat(Quote(value), " has an empty entry (expected a comma-separated list)"));
      }
      RETURN_IF_ERROR(handle(entry));
    }
    return absl::OkStatus();
  }

  // wg-quick's `Table`: off, auto, main, or a table number. Other names would need
  // /etc/iproute2/rt_tables, which this parser does not read.
  absl::Status ParseTable(int line, absl::string_view key, absl::string_view value) {
    if (value == "off") {
      config_.table_mode = TableMode::kOff;
    } else if (value == "auto") {
      config_.table_mode = TableMode::kAuto;
    } else if (value == "main") {
      config_.table_mode = TableMode::kId;
      config_.table_id = kMainRoutingTable;
    } else {
      std::optional<uint32_t> id = ParseDecimal(value, UINT32_MAX);
      if (!id.has_value() || *id == 0) {
        return Error(line, key,
                     absl::StrCat(Quote(value),
                                  " is not a routing table (expected off, auto, main or a table "
                                  "number 1-4294967295; give a named table by its number)"));
      }
      config_.table_mode = TableMode::kId;
      config_.table_id = *id;
    }
    return absl::OkStatus();
  }

  absl::Status AddAddress(int line, absl::string_view key, absl::string_view entry) {
    absl::StatusOr<InterfaceAddress> address = InterfaceAddress::Parse(Std(entry));
    if (!address.ok()) return Error(line, key, address.status().message());
    for (size_t i = 0; i < config_.addresses.size(); ++i) {
      if (config_.addresses[i].address == address->address) {
        return Error(
            line, key,
            absl::StrCat(Quote(entry), " repeats address ", config_.addresses[i].address.ToString(),
                         " (first at line ", address_lines_[i], "); keep one"));
      }
    }
    config_.addresses.push_back(*address);
    address_lines_.push_back(line);
    return absl::OkStatus();
  }

  absl::Status AddAllowedIp(int line, absl::string_view key, absl::string_view entry,
                            PeerConfig* peer) {
    IpAddress address;
    int length = 0;
    absl::Status parsed = ParseAddressAndLength(
        entry, "an IP prefix", "an address with an optional /length, e.g. 10.0.0.0/24 or fd00::/64",
        /*min_length=*/0, &address, &length);
    if (!parsed.ok()) return Error(line, key, parsed.message());
    Prefix prefix(address, length);
    auto [it, inserted] = allowed_ip_owner_.emplace(PrefixKey(prefix), peer->line);
    if (inserted) {
      peer->allowed_ips.push_back(prefix);
    } else if (it->second != peer->line) {
      // wg(8) would silently move the prefix to the later peer; that is almost always a mistake.
      return Error(line, key,
                   absl::StrCat(Quote(entry), " is already allowed for the peer at line ",
                                it->second, " (a prefix routes to one peer; remove one)"));
    }
    return absl::OkStatus();
  }

  absl::StatusOr<Endpoint> ParseEndpoint(int line, absl::string_view key, absl::string_view value) {
    constexpr absl::string_view kExpected =
        "expected host:port, e.g. 192.0.2.1:51820, [2001:db8::1]:51820 or vpn.example.com:51820";
    absl::string_view host;
    absl::string_view port_text;
    bool bracketed = false;
    if (!value.empty() && value.front() == '[') {
      bracketed = true;
      size_t close = value.find(']');
      if (close == absl::string_view::npos || close + 1 >= value.size() ||
          value[close + 1] != ':') {
        return Error(line, key,
                     absl::StrCat(Quote(value), " is not an endpoint (", kExpected, ")"));
      }
      host = value.substr(1, close - 1);
      port_text = value.substr(close + 2);
    } else {
      size_t colon = value.rfind(':');
      if (colon == absl::string_view::npos) {
        return Error(line, key, absl::StrCat(Quote(value), " has no port (", kExpected, ")"));
      }
      host = value.substr(0, colon);
      port_text = value.substr(colon + 1);
      if (host.find(':') != absl::string_view::npos) {
        return Error(
            line, key,
            absl::StrCat(Quote(value),
                         " needs brackets around its IPv6 address (e.g. [2001:db8::1]:51820)"));
      }
    }
    std::optional<uint32_t> port = ParseDecimal(port_text, 65535);
    if (!port.has_value() || *port == 0) {
      return Error(line, key,
                   absl::StrCat(Quote(value), " has an invalid port (expected 1-65535)"));
    }
    if (host.empty()) {
      return Error(line, key, absl::StrCat(Quote(value), " has no host (", kExpected, ")"));
    }
    absl::StatusOr<IpAddress> address = IpAddress::Parse(Std(host));
    if (address.ok()) {
      if (bracketed && !address->is_v6()) {
        return Error(line, key,
                     absl::StrCat(Quote(value), " has brackets around an IPv4 address (write ",
                                  host, ":", *port, ")"));
      }
      return Endpoint(*address, static_cast<uint16_t>(*port));
    }
    if (bracketed) {
      return Error(line, key,
                   absl::StrCat(Quote(value), " has no IPv6 address inside the brackets"));
    }
    if (host.size() > kMaxHostNameChars || !IsHostName(host)) {
      return Error(line, key,
                   absl::StrCat(Quote(value), " is neither an IP address nor a host name (",
                                kExpected, ")"));
    }
    absl::StatusOr<IpAddress> resolved = resolve_host_(std::string(host));
    if (!resolved.ok()) {
      return absl::Status(
          resolved.status().code(),
          absl::StrCat(file_name_, ":", line, ": ", key, ": ", resolved.status().message()));
    }
    return Endpoint(*resolved, static_cast<uint16_t>(*port));
  }

  static bool IsHostName(absl::string_view host) {
    for (char c : host) {
      if (!absl::ascii_isalnum(static_cast<unsigned char>(c)) && c != '-' && c != '.' && c != '_') {
        return false;
      }
    }
    return true;
  }

  // Secret values are never quoted back: a near-miss of a real key is still mostly the key.
  absl::StatusOr<SecretKey> ParseSecretKey(int line, absl::string_view key,
                                           absl::string_view value) {
    std::string problem = KeyShapeProblem(value);
    if (problem.empty()) {
      absl::StatusOr<SecretKey> parsed = SecretKey::FromBase64(Std(value));
      if (parsed.ok()) return std::move(parsed).value();
      problem = "it does not decode to 32 bytes";
    }
    return Error(line, key,
                 absl::StrCat("value is not a base64 WireGuard key (expected 44 characters ending "
                              "in \"=\", as \"wg genkey\" prints it; ",
                              problem, "; the value is not shown because it is secret)"));
  }

  // Checks a finished section for its required keys.
  absl::Status FinishSection() {
    if (section_ == Section::kInterface && private_key_line_ == 0) {
      return Error(interface_line_, "PrivateKey",
                   "missing from [Interface] (generate one with \"wg genkey\")");
    }
    if (section_ == Section::kPeer) {
      if (peer_key_line_ == 0) {
        return Error(peer_->line, "PublicKey",
                     "missing from [Peer] (expected the peer's base64 public key, as "
                     "\"wg pubkey\" prints it)");
      }
      config_.peers.push_back(std::move(*peer_));
      peer_.reset();
    }
    return absl::OkStatus();
  }

  absl::Status Finish() {
    RETURN_IF_ERROR(FinishSection());
    if (interface_line_ == 0) {
      return absl::InvalidArgumentError(absl::StrCat(
          file_name_, ": [Interface]: section is missing (expected one with a PrivateKey)"));
    }
    // wg(8) silently drops a peer whose key is our own; here it is reported as the mistake it is.
    PublicKey own = DerivePublicKey(config_.private_key);
    if (auto it = peer_key_lines_.find(own); it != peer_key_lines_.end()) {
      return Error(it->second, "PublicKey",
                   "is this interface's own public key (derived from PrivateKey at line " +
                       std::to_string(private_key_line_) + "); a peer must be another host");
    }
    return absl::OkStatus();
  }

  const std::string file_name_;
  const HostResolver& resolve_host_;
  AgentConfig config_;
  Section section_ = Section::kNone;
  // Line of the [Interface] header and its PrivateKey; 0 while not seen.
  int interface_line_ = 0;
  int private_key_line_ = 0;
  // Single-valued keys seen in the current section, with their lines.
  std::map<Key, int> keys_in_section_;
  // Lines of config_.addresses, index for index.
  std::vector<int> address_lines_;
  // The [Peer] section being read, and the line of its PublicKey (0 while not seen).
  std::optional<PeerConfig> peer_;
  int peer_key_line_ = 0;
  // Every peer's public key with the line it was set on, for duplicates.
  std::map<PublicKey, int> peer_key_lines_;
  // Each AllowedIPs prefix with the [Peer] line of the peer it belongs to.
  absl::flat_hash_map<std::string, int> allowed_ip_owner_;
};

}  // namespace

absl::StatusOr<InterfaceAddress> InterfaceAddress::Parse(std::string_view std_text) {
  const absl::string_view text = Absl(std_text);
  InterfaceAddress result;
  RETURN_IF_ERROR(
      ParseAddressAndLength(text, "an interface address",
                            "an IP address with a prefix length, e.g. 10.0.0.1/24 or fd00::1/64",
                            /*min_length=*/1, &result.address, &result.prefix_length));
  if (IsUnspecified(result.address)) {
    return absl::InvalidArgumentError(absl::StrCat(
        Quote(text), " is the unspecified address (expected this host's address in the tunnel)"));
  }
  return result;
}

std::string InterfaceAddress::ToString() const {
  return absl::StrCat(address.ToString(), "/", prefix_length);
}

absl::StatusOr<AgentConfig> ParseAgentConfig(std::string_view text, std::string_view file_name,
                                             const HostResolver& resolve_host) {
  return ConfigParser(Absl(file_name), resolve_host).Parse(Absl(text));
}

}  // namespace tunnelmesh
