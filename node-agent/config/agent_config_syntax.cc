#include "node-agent/config/agent_config_syntax.h"

#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "lib/base/decimal.h"

namespace tunnelmesh::config_syntax {
namespace {

constexpr KeySpec kKeySpecs[] = {
    {"PrivateKey", Section::kInterface, Key::kPrivateKey, true, ""},
    {"ListenPort", Section::kInterface, Key::kListenPort, true, ""},
    {"Address", Section::kInterface, Key::kAddress, false, ""},
    {"MTU", Section::kInterface, Key::kMtu, true, ""},
    {"DNS", Section::kInterface, Key::kIgnored, false,
     "tunnelmesh-agent does not configure DNS resolvers"},
    {"Table", Section::kInterface, Key::kTable, true, ""},
    {"PreUp", Section::kInterface, Key::kIgnored, false, "tunnelmesh-agent runs no wg-quick hooks"},
    {"PostUp", Section::kInterface, Key::kIgnored, false,
     "tunnelmesh-agent runs no wg-quick hooks"},
    {"PreDown", Section::kInterface, Key::kIgnored, false,
     "tunnelmesh-agent runs no wg-quick hooks"},
    {"PostDown", Section::kInterface, Key::kIgnored, false,
     "tunnelmesh-agent runs no wg-quick hooks"},
    {"SaveConfig", Section::kInterface, Key::kIgnored, false,
     "tunnelmesh-agent never writes the config file"},
    {"FwMark", Section::kInterface, Key::kIgnored, false,
     "tunnelmesh-agent does not mark its UDP packets"},
    {"PublicKey", Section::kPeer, Key::kPublicKey, true, ""},
    {"PresharedKey", Section::kPeer, Key::kPresharedKey, true, ""},
    {"Endpoint", Section::kPeer, Key::kEndpoint, true, ""},
    {"AllowedIPs", Section::kPeer, Key::kAllowedIps, false, ""},
    {"PersistentKeepalive", Section::kPeer, Key::kPersistentKeepalive, true, ""},
};

}  // namespace

// Quotes text for an error message: C-escaped (so control bytes stay visible) and truncated.
std::string Quote(absl::string_view text) {
  bool truncated = text.size() > kMaxQuotedChars;
  return absl::StrCat("\"", absl::CHexEscape(text.substr(0, kMaxQuotedChars)),
                      truncated ? "...\"" : "\"");
}

// A key or section name as written by the user, made safe to print.
std::string Escaped(absl::string_view text) {
  bool truncated = text.size() > kMaxQuotedChars;
  return absl::StrCat(absl::CHexEscape(text.substr(0, kMaxQuotedChars)), truncated ? "..." : "");
}

// Decimal digits only: no sign, no spaces, no hex. Empty when not a number or above `max`.
std::optional<uint32_t> ParseDecimal(absl::string_view text, uint32_t max) {
  return tunnelmesh::ParseDecimal(Std(text), max);
}

bool IsUnspecified(const IpAddress& address) {
  for (int i = 0; i < address.byte_length(); ++i) {
    if (address.bytes()[i] != 0) return false;
  }
  return true;
}

absl::string_view FamilyName(const IpAddress& address) { return address.is_v4() ? "IPv4" : "IPv6"; }

// Splits "addr/len" and parses both halves. `what` names the expected thing for messages.
// `min_length` is the smallest prefix length accepted.
absl::Status ParseAddressAndLength(absl::string_view text, absl::string_view what,
                                   absl::string_view example, int min_length, IpAddress* address,
                                   int* length) {
  absl::string_view address_text = text;
  std::optional<absl::string_view> length_text;
  if (size_t slash = text.find('/'); slash != absl::string_view::npos) {
    address_text = text.substr(0, slash);
    length_text = text.substr(slash + 1);
  }
  absl::StatusOr<IpAddress> parsed = IpAddress::Parse(Std(address_text));
  if (!parsed.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat(Quote(text), " is not ", what, " (expected ", example, ")"));
  }
  *address = *parsed;
  *length = address->bit_length();
  if (length_text.has_value()) {
    std::optional<uint32_t> value =
        ParseDecimal(*length_text, static_cast<uint32_t>(address->bit_length()));
    if (!value.has_value() || static_cast<int>(*value) < min_length) {
      return absl::InvalidArgumentError(
          absl::StrCat(Quote(text), " has an invalid prefix length (expected ", min_length, "-",
                       address->bit_length(), " for ", FamilyName(*address), ")"));
    }
    *length = static_cast<int>(*value);
  }
  return absl::OkStatus();
}

// A hashable identity for a prefix (Prefix itself has no hash).
std::string PrefixKey(const Prefix& prefix) {
  std::string key(reinterpret_cast<const char*>(prefix.address().bytes()),
                  prefix.address().byte_length());
  key.push_back(static_cast<char>(prefix.length()));
  return key;
}

// Why a value is not a base64 key, or empty if its shape is right (decoding may still fail).
std::string KeyShapeProblem(absl::string_view value) {
  if (value.size() != kBase64KeyChars) return absl::StrCat("got ", value.size(), " characters");
  if (value.back() != '=') return "the last character is not \"=\"";
  for (char c : value.substr(0, kBase64KeyChars - 1)) {
    if (!absl::ascii_isalnum(static_cast<unsigned char>(c)) && c != '+' && c != '/') {
      return "it contains characters outside base64 (A-Z a-z 0-9 + /)";
    }
  }
  return "";
}

const KeySpec* FindKey(absl::string_view name, Section section) {
  for (const KeySpec& spec : kKeySpecs) {
    if (spec.section == section && absl::EqualsIgnoreCase(spec.name, name)) return &spec;
  }
  return nullptr;
}

absl::string_view SectionName(Section section) {
  return section == Section::kInterface ? "[Interface]" : "[Peer]";
}

std::string KeyList(Section section) {
  std::string list;
  for (const KeySpec& spec : kKeySpecs) {
    if (spec.section != section) continue;
    absl::StrAppend(&list, list.empty() ? "" : ", ", spec.name);
  }
  return list;
}

}  // namespace tunnelmesh::config_syntax
