#include "lib/dns/responder.h"

#include <algorithm>
#include <utility>

namespace tunnelmesh::dns {
namespace {

// A response to `query` with only the header, the question (when there is one) and the OPT record
// (when the query had one): FORMERR, REFUSED.
Message Bare(const Message& query, Rcode rcode) {
  Message r;
  r.header.id = query.header.id;
  r.header.qr = true;
  r.header.opcode = query.header.opcode;
  r.header.rd = query.header.rd;
  r.header.cd = query.header.cd;
  r.header.rcode = rcode;
  if (query.questions.size() == 1) r.questions = query.questions;
  if (query.edns.has_value()) r.edns = Edns{static_cast<uint16_t>(kMaxUdpPayload), 0, false};
  return r;
}

Outcome OutcomeOf(const Message& r) {
  switch (r.header.rcode) {
    case Rcode::kNoError:
      return r.answers.empty() ? Outcome::kNoData : Outcome::kAnswered;
    case Rcode::kNxDomain:
      return Outcome::kNxDomain;
    case Rcode::kRefused:
      return Outcome::kRefused;
    case Rcode::kFormErr:
      return Outcome::kFormErr;
    default:
      return Outcome::kOther;
  }
}

// RFC 6891 6.2.5: a requestor's size below 512 is treated as 512; this server offers at most
// kMaxUdpPayload.
size_t LimitOf(const Message& query, Transport transport) {
  if (transport == Transport::kTcp) return kMaxMessageSize;
  if (!query.edns.has_value()) return kClassicUdpSize;
  return std::clamp<size_t>(query.edns->udp_size, kClassicUdpSize, kMaxUdpPayload);
}

Reply Encoded(const Message& response, size_t limit) {
  Reply reply;
  absl::StatusOr<std::vector<uint8_t>> bytes = Encode(response, limit);
  if (!bytes.ok()) {
    // Only a name the zone itself produced could fail to encode; answer SERVFAIL rather than
    // nothing, so the client does not wait for a timeout.
    Message failed = response;
    failed.answers.clear();
    failed.authority.clear();
    failed.additional.clear();
    failed.header.rcode = Rcode::kServFail;
    bytes = Encode(failed, limit);
    if (!bytes.ok()) return reply;
    reply.outcome = Outcome::kOther;
  } else {
    reply.outcome = OutcomeOf(response);
  }
  reply.bytes = std::move(*bytes);
  // The TC bit is bit 1 of the third byte (RFC 1035 4.1.1).
  reply.truncated = reply.bytes.size() >= 3 && (reply.bytes[2] & 0x02) != 0;
  return reply;
}

}  // namespace

const char* OutcomeName(Outcome outcome) {
  switch (outcome) {
    case Outcome::kAnswered:
      return "answered";
    case Outcome::kNoData:
      return "nodata";
    case Outcome::kNxDomain:
      return "nxdomain";
    case Outcome::kRefused:
      return "refused";
    case Outcome::kForward:
      return "forwarded";
    case Outcome::kFormErr:
      return "formerr";
    case Outcome::kOther:
      return "other";
    case Outcome::kDropped:
      return "dropped";
  }
  return "other";
}

Reply Respond(const Zone* zone, absl::Span<const uint8_t> query, Transport transport,
              bool can_forward) {
  constexpr size_t kHeaderSize = 12;
  // QR is the top bit of the third byte.
  if (query.size() < kHeaderSize || (query[2] & 0x80) != 0) return Reply{};
  uint16_t id = 0;
  absl::StatusOr<Message> decoded = Decode(query, &id);
  if (!decoded.ok()) {
    Message q;
    q.header.id = id;
    q.header.opcode = static_cast<uint8_t>((query[2] >> 3) & 0x0F);
    q.header.rd = (query[2] & 0x01) != 0;
    return Encoded(Bare(q, Rcode::kFormErr), kClassicUdpSize);
  }
  const Message& q = *decoded;
  Message response;
  if (zone != nullptr && zone->Answer(q, &response)) {
    return Encoded(response, LimitOf(q, transport));
  }
  if (q.questions.size() != 1) return Encoded(Bare(q, Rcode::kFormErr), LimitOf(q, transport));
  if (can_forward && q.header.opcode == kOpcodeQuery) {
    Reply reply;
    reply.outcome = Outcome::kForward;
    reply.bytes.assign(query.begin(), query.end());
    return reply;
  }
  return Encoded(Bare(q, Rcode::kRefused), LimitOf(q, transport));
}

}  // namespace tunnelmesh::dns
