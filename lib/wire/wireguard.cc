#include "lib/wire/wireguard.h"

#include "lib/base/byte_io.h"

namespace tunnelmesh::wire {
namespace {

bool ReadHeader(ByteReader& reader, MessageType expected) {
  uint8_t type = 0, r0 = 1, r1 = 1, r2 = 1;
  return reader.ReadU8(&type) && reader.ReadU8(&r0) && reader.ReadU8(&r1) && reader.ReadU8(&r2) &&
         type == static_cast<uint8_t>(expected) && r0 == 0 && r1 == 0 && r2 == 0;
}

void WriteHeader(ByteWriter& writer, MessageType type) {
  writer.U8(static_cast<uint8_t>(type));
  writer.U8(0);
  writer.U8(0);
  writer.U8(0);
}

}  // namespace

std::optional<MessageType> Classify(Bytes datagram) {
  if (datagram.size() < 4 || datagram[1] != 0 || datagram[2] != 0 || datagram[3] != 0) {
    return std::nullopt;
  }
  switch (datagram[0]) {
    case 1:
      if (datagram.size() == kInitiationSize) return MessageType::kHandshakeInitiation;
      break;
    case 2:
      if (datagram.size() == kResponseSize) return MessageType::kHandshakeResponse;
      break;
    case 3:
      if (datagram.size() == kCookieReplySize) return MessageType::kCookieReply;
      break;
    case 4:
      if (datagram.size() >= kTransportMinSize) return MessageType::kTransportData;
      break;
  }
  return std::nullopt;
}

bool Parse(Bytes datagram, HandshakeInitiation* out) {
  if (datagram.size() != kInitiationSize) return false;
  ByteReader r(datagram);
  return ReadHeader(r, MessageType::kHandshakeInitiation) && r.ReadLe32(&out->sender_index) &&
         r.ReadArray(&out->unencrypted_ephemeral) && r.ReadArray(&out->encrypted_static) &&
         r.ReadArray(&out->encrypted_timestamp) && r.ReadArray(&out->mac1) &&
         r.ReadArray(&out->mac2) && r.remaining() == 0;
}

bool Parse(Bytes datagram, HandshakeResponse* out) {
  if (datagram.size() != kResponseSize) return false;
  ByteReader r(datagram);
  return ReadHeader(r, MessageType::kHandshakeResponse) && r.ReadLe32(&out->sender_index) &&
         r.ReadLe32(&out->receiver_index) && r.ReadArray(&out->unencrypted_ephemeral) &&
         r.ReadArray(&out->encrypted_nothing) && r.ReadArray(&out->mac1) &&
         r.ReadArray(&out->mac2) && r.remaining() == 0;
}

bool Parse(Bytes datagram, CookieReply* out) {
  if (datagram.size() != kCookieReplySize) return false;
  ByteReader r(datagram);
  return ReadHeader(r, MessageType::kCookieReply) && r.ReadLe32(&out->receiver_index) &&
         r.ReadArray(&out->nonce) && r.ReadArray(&out->encrypted_cookie) && r.remaining() == 0;
}

bool ParseTransportHeader(Bytes datagram, TransportHeader* out) {
  if (datagram.size() < kTransportMinSize) return false;
  ByteReader r(datagram);
  return ReadHeader(r, MessageType::kTransportData) && r.ReadLe32(&out->receiver_index) &&
         r.ReadLe64(&out->counter);
}

void Serialize(const HandshakeInitiation& m, uint8_t out[kInitiationSize]) {
  ByteWriter w(out);
  WriteHeader(w, MessageType::kHandshakeInitiation);
  w.Le32(m.sender_index);
  w.Array(m.unencrypted_ephemeral);
  w.Array(m.encrypted_static);
  w.Array(m.encrypted_timestamp);
  w.Array(m.mac1);
  w.Array(m.mac2);
}

void Serialize(const HandshakeResponse& m, uint8_t out[kResponseSize]) {
  ByteWriter w(out);
  WriteHeader(w, MessageType::kHandshakeResponse);
  w.Le32(m.sender_index);
  w.Le32(m.receiver_index);
  w.Array(m.unencrypted_ephemeral);
  w.Array(m.encrypted_nothing);
  w.Array(m.mac1);
  w.Array(m.mac2);
}

void Serialize(const CookieReply& m, uint8_t out[kCookieReplySize]) {
  ByteWriter w(out);
  WriteHeader(w, MessageType::kCookieReply);
  w.Le32(m.receiver_index);
  w.Array(m.nonce);
  w.Array(m.encrypted_cookie);
}

void SerializeTransportHeader(const TransportHeader& h, uint8_t out[kTransportHeaderSize]) {
  ByteWriter w(out);
  WriteHeader(w, MessageType::kTransportData);
  w.Le32(h.receiver_index);
  w.Le64(h.counter);
}

}  // namespace tunnelmesh::wire
