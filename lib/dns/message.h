// DNS messages (RFC 1035 section 4) as the mesh's resolvers read and write them: the header, the
// question, and resource records of the types a mesh zone serves (A, AAAA, NS, SOA, PTR, CNAME),
// every other type carried as opaque RDATA; names compressed on output (RFC 1035 4.1.4) and
// pointers followed on input; EDNS0 (RFC 6891) as the OPT pseudo-record of the additional section.
//
// Sans-IO: bytes in, a Message out, and back. Decoding reads untrusted bytes through ByteReader
// only and rejects rather than guesses: a message cut short, a label over 63 bytes or a name over
// 255, a compression pointer that does not point backwards (so loops are impossible), more than
// one OPT record, record counts that the bytes cannot hold. Encoding truncates at a size limit the
// way RFC 1035 4.2.1 and RFC 2181 9 ask: whole records only, TC set when a record of the answer
// had to go (records of the additional section are dropped first and silently).
//
// Threads: plain values and free functions; no shared state.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "lib/net/ip.h"

namespace tunnelmesh::dns {

// RR TYPE values (RFC 1035 3.2.2, RFC 3596, RFC 6891).
inline constexpr uint16_t kTypeA = 1;
inline constexpr uint16_t kTypeNs = 2;
inline constexpr uint16_t kTypeCname = 5;
inline constexpr uint16_t kTypeSoa = 6;
inline constexpr uint16_t kTypePtr = 12;
inline constexpr uint16_t kTypeTxt = 16;
inline constexpr uint16_t kTypeAaaa = 28;
inline constexpr uint16_t kTypeOpt = 41;
inline constexpr uint16_t kTypeAny = 255;
inline constexpr uint16_t kClassIn = 1;

// OPCODE and RCODE values (RFC 1035 4.1.1; RFC 6891's extended RCODE BADVERS = 16).
inline constexpr uint8_t kOpcodeQuery = 0;
enum class Rcode : uint16_t {
  kNoError = 0,
  kFormErr = 1,
  kServFail = 2,
  kNxDomain = 3,
  kNotImp = 4,
  kRefused = 5,
  kBadVers = 16,
};

// The largest DNS message over UDP without EDNS0 (RFC 1035 4.2.1), and over TCP (a 16-bit length).
inline constexpr size_t kClassicUdpSize = 512;
inline constexpr size_t kMaxMessageSize = 65535;

// A domain name in presentation form without the trailing dot ("bob.mesh"; the root is ""),
// as it came off the wire: case preserved, compared case-insensitively (RFC 4343) by NameEquals.
// Labels hold letters, digits, '-' and '_' as the mesh writes them; bytes outside that set
// (legal on the wire) are kept as they are, except '.' and '\' inside a label, which are escaped
// as "\." and "\\" so that splitting on dots gives the labels back.
bool NameEquals(std::string_view a, std::string_view b);
// `name` is `zone` or below it ("a.b.mesh" is in "mesh" and in "b.mesh"; "xmesh" is not in "mesh").
bool NameInZone(std::string_view name, std::string_view zone);
// Lower-case ASCII copy (RFC 4343: only A-Z fold).
std::string CanonicalName(std::string_view name);
// A DNS-1123 label: 1 to 63 lowercase letters, digits and '-', no '-' at either end. What
// Kubernetes accepts as a cluster-scoped object's name, and what a mesh member's name or alias
// must be.
bool IsDnsLabel(std::string_view s);

struct Question {
  std::string name;
  uint16_t type = kTypeA;
  uint16_t qclass = kClassIn;
  friend bool operator==(const Question&, const Question&) = default;
};

struct Soa {
  std::string mname;  // Primary name server.
  std::string rname;  // Responsible mailbox, as a name ("hostmaster.mesh").
  uint32_t serial = 0;
  uint32_t refresh = 0;
  uint32_t retry = 0;
  uint32_t expire = 0;
  uint32_t minimum = 0;  // The TTL of negative answers (RFC 2308 section 4).
  friend bool operator==(const Soa&, const Soa&) = default;
};

// RDATA: an address for A and AAAA, a name for NS, PTR and CNAME, the SOA fields, or the raw
// bytes of any other type (kept so that a forwarded or unknown record survives a round trip).
using RData = std::variant<IpAddress, std::string, Soa, std::vector<uint8_t>>;

struct Record {
  std::string name;
  uint16_t type = kTypeA;
  uint16_t rclass = kClassIn;
  uint32_t ttl = 0;
  RData data;
  friend bool operator==(const Record&, const Record&) = default;
};

// The OPT pseudo-record's meaning (RFC 6891 section 6.1.3); its options are not kept.
struct Edns {
  uint16_t udp_size = kClassicUdpSize;  // Requestor's payload size; values below 512 mean 512.
  uint8_t version = 0;
  bool dnssec_ok = false;
  friend bool operator==(const Edns&, const Edns&) = default;
};

struct Header {
  uint16_t id = 0;
  bool qr = false;  // A response.
  uint8_t opcode = kOpcodeQuery;
  bool aa = false;  // Authoritative answer.
  bool tc = false;  // Truncated.
  bool rd = false;  // Recursion desired.
  bool ra = false;  // Recursion available.
  bool ad = false;
  bool cd = false;
  // The full RCODE: the header's 4 bits, and with EDNS0 the OPT record's upper 8 bits.
  Rcode rcode = Rcode::kNoError;
  friend bool operator==(const Header&, const Header&) = default;
};

struct Message {
  Header header;
  std::vector<Question> questions;
  std::vector<Record> answers;
  std::vector<Record> authority;
  std::vector<Record> additional;  // Without the OPT record, which is `edns`.
  std::optional<Edns> edns;
  friend bool operator==(const Message&, const Message&) = default;
};

// Decodes one message (a UDP payload, or a TCP message without its 2-byte length). The error says
// what was wrong (kInvalidArgument) and, when the header was readable, `*id_out` (if not null)
// holds its ID so that a server can answer FORMERR to the right query.
[[nodiscard]] absl::StatusOr<Message> Decode(absl::Span<const uint8_t> bytes,
                                             uint16_t* id_out = nullptr);

// Encodes `message` in at most `max_size` bytes (at least 512 is sensible; at most 65535), with
// names compressed. When it does not fit, drops records from the end of the additional section,
// then of the authority and answer sections, keeping whole records, and sets TC when an answer or
// authority record was dropped (the OPT record is always kept, RFC 6891 7). Fails, with
// kInvalidArgument, only for a Message that cannot be written: a name that is not valid (an empty
// label, a label over 63 bytes, a name over 255), RDATA that is not the kind its type calls for
// (an address for A/AAAA in class IN, a name for NS/CNAME/PTR, an Soa for SOA, raw bytes of at
// most 65535 for others), an OPT record among the records, an OPCODE over 15, an RCODE over 15
// without `edns` (over 4095 with it), or questions that alone do not fit in `max_size`.
[[nodiscard]] absl::StatusOr<std::vector<uint8_t>> Encode(const Message& message,
                                                          size_t max_size = kMaxMessageSize);

// The name under in-addr.arpa or ip6.arpa that a PTR query for `address` asks about
// ("7.0.64.100.in-addr.arpa" for 100.64.0.7; nibbles for IPv6, RFC 3596 2.5).
std::string ReverseName(const IpAddress& address);
// The address a reverse name stands for, if it is a complete one (4 labels under in-addr.arpa,
// 32 nibbles under ip6.arpa; case-insensitive).
std::optional<IpAddress> AddressOfReverseName(std::string_view name);

const char* RcodeName(Rcode rcode);   // "NOERROR", "NXDOMAIN", ...
const char* TypeName(uint16_t type);  // "A", "AAAA", ... or "TYPE65" for others.

}  // namespace tunnelmesh::dns
