// The lexical layer of the wg-quick config format, shared by the parser (agent_config.cc) and
// kept apart from it: the table of keys each section accepts, and the value parsers and message
// quoting every key's handler uses. Pure functions, no I/O; errors are kInvalidArgument without the
// "file:line: key:" prefix, which the parser adds. Internal to node-agent/config.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "lib/net/ip.h"

namespace tunnelmesh::config_syntax {

// Values quoted in messages are cut here so one bad line cannot produce a huge error.
constexpr size_t kMaxQuotedChars = 64;
// RFC 1035 section 2.3.4: a full domain name has at most 253 characters in text form.
constexpr size_t kMaxHostNameChars = 253;
// WireGuard keys in base64: 32 bytes -> 43 characters plus one "=" of padding.
constexpr size_t kBase64KeyChars = 44;

// Debian's abseil has its own string_view type, which does not convert to or from std::one; the
// parser works in absl::string_view (for absl's string functions) and converts at the edges.
inline absl::string_view Absl(std::string_view text) {
  return absl::string_view(text.data(), text.size());
}
inline std::string_view Std(absl::string_view text) {
  return std::string_view(text.data(), text.size());
}

// Quotes text for an error message: C-escaped (so control bytes stay visible) and truncated.
std::string Quote(absl::string_view text);
// A key or section name as written by the user, made safe to print.
std::string Escaped(absl::string_view text);
// lib/base/decimal.h's ParseDecimal, for absl::string_view.
std::optional<uint32_t> ParseDecimal(absl::string_view text, uint32_t max);
bool IsUnspecified(const IpAddress& address);
absl::string_view FamilyName(const IpAddress& address);
// Splits "addr/len" and parses both halves. `what` names the expected thing for messages.
// `min_length` is the smallest prefix length accepted.
[[nodiscard]] absl::Status ParseAddressAndLength(absl::string_view text, absl::string_view what,
                                                 absl::string_view example, int min_length,
                                                 IpAddress* address, int* length);
// A hashable identity for a prefix (Prefix itself has no hash).
std::string PrefixKey(const Prefix& prefix);
// Why a value is not a base64 key, or empty if its shape is right (decoding may still fail).
std::string KeyShapeProblem(absl::string_view value);

enum class Section { kNone, kInterface, kPeer };

enum class Key {
  kPrivateKey,
  kListenPort,
  kAddress,
  kMtu,
  kTable,
  kPublicKey,
  kPresharedKey,
  kEndpoint,
  kAllowedIps,
  kPersistentKeepalive,
  kIgnored,
};

struct KeySpec {
  absl::string_view name;
  Section section;
  Key key;
  // Keys that may appear once per section; a repeat is an error rather than a silent override.
  bool single;
  // For keys accepted but ignored: why, for the warning.
  absl::string_view ignored_because;
};

// The key `name` (case-insensitive, as wg-quick) in `section`; null when it has none such.
const KeySpec* FindKey(absl::string_view name, Section section);
absl::string_view SectionName(Section section);
// The keys `section` accepts, comma separated, for messages.
std::string KeyList(Section section);

}  // namespace tunnelmesh::config_syntax
