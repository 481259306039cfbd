// What a mesh DNS server does with one query's bytes, without sockets: decode it, answer it from
// the zone, and encode the answer within the size the transport allows (RFC 1035 4.2.1's 512
// bytes over UDP, or the client's EDNS0 size up to this server's; 65535 over TCP), truncating with
// TC set so that the client retries over TCP. Questions outside the zone are REFUSED, or handed
// back for forwarding when the server has an upstream. Shared by the agent's server and the
// operator's (plain DNS and CoreDNS's gRPC, which carries the same bytes).
//
// Never answers a response (QR set) or a message too short to hold a header: those are dropped,
// so two servers cannot make each other loop. Threads: Respond is a pure function of its inputs.
#pragma once

#include <cstdint>
#include <vector>

#include "absl/types/span.h"
#include "lib/dns/message.h"
#include "lib/dns/zone.h"

namespace tunnelmesh::dns {

enum class Transport { kUdp, kTcp };

// Why a query got the answer it got, for counters.
enum class Outcome : uint8_t {
  kAnswered,  // From the zone: NOERROR with records.
  kNoData,    // From the zone: NOERROR without records.
  kNxDomain,  // From the zone.
  kRefused,   // Outside the zone, no upstream (or not class IN).
  kForward,   // Outside the zone; `bytes` is the query to send upstream, unchanged.
  kFormErr,   // Malformed query, answered FORMERR.
  kOther,     // NOTIMP, BADVERS and the like.
  kDropped,   // Nothing to send: a response, or less than a header.
};
inline constexpr int kOutcomeCount = 8;
const char* OutcomeName(Outcome outcome);  // "answered", "nodata", ...

struct Reply {
  Outcome outcome = Outcome::kDropped;
  std::vector<uint8_t> bytes;  // The response (or, for kForward, the query) to send.
  bool truncated = false;      // TC was set to fit the transport.
};

// The payload this server accepts and offers over UDP with EDNS0 (DNS Flag Day 2020).
inline constexpr size_t kMaxUdpPayload = 1232;

// `zone` may be null (no map yet): every question is then outside the zone.
Reply Respond(const Zone* zone, absl::Span<const uint8_t> query, Transport transport,
              bool can_forward);

}  // namespace tunnelmesh::dns
