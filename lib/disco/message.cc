#include "lib/disco/message.h"

#include <sodium.h>

#include <cstring>

#include "lib/base/byte_io.h"
#include "lib/crypto/aead.h"

namespace tunnelmesh::disco {
namespace {

static_assert(kNonceSize == crypto_box_NONCEBYTES);
static_assert(kBoxTagSize == crypto_box_MACBYTES);
static_assert(kKeySize == crypto_box_PUBLICKEYBYTES && kKeySize == crypto_box_SECRETKEYBYTES);
static_assert(kKeySize == crypto_box_BEFORENMBYTES);
static_assert(kMagic[0] < 1 || kMagic[0] > 4, "the magic must not start like a WireGuard message");

constexpr uint8_t kFamilyV4 = 4;
constexpr uint8_t kFamilyV6 = 6;

// True when `key` is the unique encoding of its u-coordinate: below p = 2^255 - 19, which also
// means bit 255 is clear (RFC 7748 section 5 masks it; every honestly derived key has it clear).
bool IsCanonical(const PublicKey& key) {
  const auto& b = key.bytes;
  if (b[31] & 0x80) return false;
  if (b[31] != 0x7f || b[0] < 0xed) return true;
  for (size_t i = 1; i < 31; ++i) {
    if (b[i] != 0xff) return true;
  }
  return false;  // Between p and 2^255 - 1.
}

void SetError(OpenError* error, OpenError value) {
  if (error != nullptr) *error = value;
}

bool Encodable(const Endpoint& endpoint) { return endpoint.valid(); }

void WriteEndpoint(const Endpoint& endpoint, ByteWriter* writer) {
  const IpAddress& address = endpoint.address();
  writer->U8(address.is_v4() ? kFamilyV4 : kFamilyV6);
  uint8_t bytes[16] = {};
  std::memcpy(bytes, address.bytes(), address.byte_length());
  writer->Raw(bytes, sizeof(bytes));
  writer->Be16(endpoint.port());
}

bool ReadEndpoint(ByteReader* reader, Endpoint* out) {
  uint8_t family = 0;
  std::array<uint8_t, 16> bytes;
  uint16_t port = 0;
  if (!reader->ReadU8(&family) || !reader->ReadArray(&bytes) || !reader->ReadBe16(&port)) {
    return false;
  }
  if (port == 0) return false;
  IpAddress address;
  if (family == kFamilyV4) {
    // Exactly one encoding per address: the unused bytes of an IPv4 address must be zero.
    for (size_t i = 4; i < bytes.size(); ++i) {
      if (bytes[i] != 0) return false;
    }
    address = IpAddress::V4(bytes.data());
  } else if (family == kFamilyV6) {
    address = IpAddress::V6(bytes.data());
  } else {
    return false;
  }
  *out = Endpoint(address, port);
  return true;
}

size_t PayloadSize(const Message& message) {
  if (std::holds_alternative<Ping>(message)) return 1 + kTxIdSize;
  if (const Pong* pong = std::get_if<Pong>(&message)) {
    return Encodable(pong->observed) ? 1 + kTxIdSize + kEndpointSize : 0;
  }
  const auto& endpoints = std::get<CallMeMaybe>(message).endpoints;
  if (endpoints.size() > kMaxCallMeMaybeEndpoints) return 0;
  for (const Endpoint& endpoint : endpoints) {
    if (!Encodable(endpoint)) return 0;
  }
  return 1 + 1 + endpoints.size() * kEndpointSize;
}

}  // namespace

const char* OpenErrorName(OpenError error) {
  switch (error) {
    case OpenError::kNone:
      return "none";
    case OpenError::kNotDisco:
      return "not_disco";
    case OpenError::kBadSize:
      return "bad_size";
    case OpenError::kNotAuthentic:
      return "not_authentic";
    case OpenError::kBadPayload:
      return "bad_payload";
  }
  return "unknown";
}

bool BoxKey::Derive(const SecretKey& my_private, const PublicKey& peer, BoxKey* out) {
  InitCrypto();
  // crypto_box_beforenm fails when X25519 yields the all-zero value (a low-order public key).
  out->peer_ = peer;
  return crypto_box_beforenm(out->key_.mutable_data(), peer.bytes.data(), my_private.data()) == 0;
}

bool IsDiscoMessage(Bytes datagram) {
  return datagram.size() >= kMagic.size() &&
         std::memcmp(datagram.data(), kMagic.data(), kMagic.size()) == 0;
}

bool PeekSender(Bytes datagram, PublicKey* sender, OpenError* error) {
  if (!IsDiscoMessage(datagram)) {
    SetError(error, OpenError::kNotDisco);
    return false;
  }
  if (datagram.size() < kMinDatagramSize || datagram.size() > kMaxDatagramSize) {
    SetError(error, OpenError::kBadSize);
    return false;
  }
  ByteReader reader(datagram);
  if (!reader.Skip(kMagic.size()) || !reader.ReadArray(&sender->bytes)) {
    SetError(error, OpenError::kBadSize);
    return false;
  }
  if (!IsCanonical(*sender)) {
    SetError(error, OpenError::kNotAuthentic);
    return false;
  }
  SetError(error, OpenError::kNone);
  return true;
}

size_t SealedSize(const Message& message) {
  size_t payload = PayloadSize(message);
  return payload == 0 ? 0 : kHeaderSize + kBoxTagSize + payload;
}

size_t SerializePayload(const Message& message, absl::Span<uint8_t> out) {
  size_t size = PayloadSize(message);
  if (size == 0 || out.size() < size) return 0;
  ByteWriter writer(out.data());
  if (const Ping* ping = std::get_if<Ping>(&message)) {
    writer.U8(static_cast<uint8_t>(MessageType::kPing));
    writer.Array(ping->tx_id);
  } else if (const Pong* pong = std::get_if<Pong>(&message)) {
    writer.U8(static_cast<uint8_t>(MessageType::kPong));
    writer.Array(pong->tx_id);
    WriteEndpoint(pong->observed, &writer);
  } else {
    const auto& endpoints = std::get<CallMeMaybe>(message).endpoints;
    writer.U8(static_cast<uint8_t>(MessageType::kCallMeMaybe));
    writer.U8(static_cast<uint8_t>(endpoints.size()));
    for (const Endpoint& endpoint : endpoints) WriteEndpoint(endpoint, &writer);
  }
  return writer.size();
}

bool ParsePayload(Bytes payload, Message* out) {
  ByteReader reader(payload);
  uint8_t type = 0;
  if (!reader.ReadU8(&type)) return false;
  switch (static_cast<MessageType>(type)) {
    case MessageType::kPing: {
      Ping ping;
      if (!reader.ReadArray(&ping.tx_id) || reader.remaining() != 0) return false;
      *out = ping;
      return true;
    }
    case MessageType::kPong: {
      Pong pong;
      if (!reader.ReadArray(&pong.tx_id) || !ReadEndpoint(&reader, &pong.observed) ||
          reader.remaining() != 0) {
        return false;
      }
      *out = pong;
      return true;
    }
    case MessageType::kCallMeMaybe: {
      uint8_t count = 0;
      if (!reader.ReadU8(&count) || count > kMaxCallMeMaybeEndpoints ||
          reader.remaining() != count * kEndpointSize) {
        return false;
      }
      CallMeMaybe call;
      call.endpoints.resize(count);
      for (Endpoint& endpoint : call.endpoints) {
        if (!ReadEndpoint(&reader, &endpoint)) return false;
      }
      *out = std::move(call);
      return true;
    }
  }
  return false;
}

size_t SealPayloadWithKey(const BoxKey& key, const PublicKey& from_public, Bytes payload,
                          absl::Span<uint8_t> out) {
  if (payload.empty() || payload.size() > kMaxPayloadSize) return 0;
  size_t total = kHeaderSize + kBoxTagSize + payload.size();
  if (out.size() < total) return 0;
  ByteWriter writer(out.data());
  writer.Array(kMagic);
  writer.Array(from_public.bytes);
  uint8_t* nonce = out.data() + writer.size();
  // Random 24-byte nonces never repeat in practice (XSalsa20's nonce is long enough for that), so
  // no per-peer counter has to survive restarts.
  RandomBytes(absl::MakeSpan(nonce, kNonceSize));
  if (crypto_box_easy_afternm(out.data() + kHeaderSize, payload.data(), payload.size(), nonce,
                              key.data()) != 0) {
    return 0;
  }
  return total;
}

size_t SealWithKey(const BoxKey& key, const PublicKey& from_public, const Message& message,
                   absl::Span<uint8_t> out) {
  uint8_t payload[kMaxPayloadSize];
  size_t size = SerializePayload(message, absl::MakeSpan(payload));
  if (size == 0) return 0;
  return SealPayloadWithKey(key, from_public, Bytes(payload, size), out);
}

size_t Seal(const SecretKey& from_private, const PublicKey& from_public, const PublicKey& to,
            const Message& message, absl::Span<uint8_t> out) {
  // Check the cheap conditions before paying for X25519.
  size_t size = SealedSize(message);
  if (size == 0 || out.size() < size) return 0;
  BoxKey key;
  if (!BoxKey::Derive(from_private, to, &key)) return 0;
  return SealWithKey(key, from_public, message, out);
}

bool OpenWithKey(const BoxKey& key, Bytes datagram, Message* out, OpenError* error) {
  PublicKey sender;
  if (!PeekSender(datagram, &sender, error)) return false;
  if (sender != key.peer()) {
    SetError(error, OpenError::kNotAuthentic);
    return false;
  }
  ByteReader reader(datagram);
  std::array<uint8_t, kNonceSize> nonce;
  if (!reader.Skip(kMagic.size() + kKeySize) || !reader.ReadArray(&nonce)) {
    SetError(error, OpenError::kBadSize);
    return false;
  }
  // PeekSender guaranteed kMinDatagramSize, so the ciphertext holds at least a tag and a byte, and
  // kMaxDatagramSize, so the plaintext fits the buffer.
  Bytes ciphertext = datagram.subspan(kHeaderSize);
  uint8_t payload[kMaxPayloadSize];
  size_t payload_size = ciphertext.size() - kBoxTagSize;
  if (crypto_box_open_easy_afternm(payload, ciphertext.data(), ciphertext.size(), nonce.data(),
                                   key.data()) != 0) {
    SetError(error, OpenError::kNotAuthentic);
    return false;
  }
  if (!ParsePayload(Bytes(payload, payload_size), out)) {
    SetError(error, OpenError::kBadPayload);
    return false;
  }
  SetError(error, OpenError::kNone);
  return true;
}

bool Open(const SecretKey& my_private, Bytes datagram, PublicKey* sender, Message* out,
          OpenError* error) {
  if (!PeekSender(datagram, sender, error)) return false;
  BoxKey key;
  if (!BoxKey::Derive(my_private, *sender, &key)) {
    SetError(error, OpenError::kNotAuthentic);
    return false;
  }
  return OpenWithKey(key, datagram, out, error);
}

}  // namespace tunnelmesh::disco
