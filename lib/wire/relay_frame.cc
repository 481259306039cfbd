#include "lib/wire/relay_frame.h"

#include <algorithm>

#include "lib/base/byte_io.h"

namespace tunnelmesh::wire::relay {
namespace {

bool IsType(Bytes frame, FrameType type) { return Classify(frame) == type; }

// Writes the type byte and key of a Send or Deliver, then the payload.
bool SerializeAddressed(FrameType type, const Key& key, Bytes payload, std::vector<uint8_t>* out) {
  out->clear();
  if (payload.empty() || payload.size() > kMaxPayloadSize) return false;
  out->resize(kAddressedHeaderSize + payload.size());
  ByteWriter writer(out->data());
  writer.U8(static_cast<uint8_t>(type));
  writer.Array(key);
  writer.Raw(payload.data(), payload.size());
  return true;
}

bool ParseAddressed(Bytes frame, FrameType type, Key* key, Bytes* payload) {
  if (!IsType(frame, type)) return false;
  ByteReader reader(frame);
  if (!reader.Skip(1) || !reader.ReadArray(key)) return false;
  *payload = frame.subspan(kAddressedHeaderSize);
  return true;
}

}  // namespace

std::optional<FrameType> Classify(Bytes frame) {
  if (frame.empty()) return std::nullopt;
  const size_t size = frame.size();
  switch (frame[0]) {
    case static_cast<uint8_t>(FrameType::kChallenge):
      if (size == kChallengeSize) return FrameType::kChallenge;
      break;
    case static_cast<uint8_t>(FrameType::kHello):
      if (size == kHelloSize) return FrameType::kHello;
      break;
    case static_cast<uint8_t>(FrameType::kReady):
      if (size == kReadySize) return FrameType::kReady;
      break;
    case static_cast<uint8_t>(FrameType::kSend):
      if (size > kAddressedHeaderSize && size <= kMaxAddressedSize) return FrameType::kSend;
      break;
    case static_cast<uint8_t>(FrameType::kDeliver):
      if (size > kAddressedHeaderSize && size <= kMaxAddressedSize) return FrameType::kDeliver;
      break;
    case static_cast<uint8_t>(FrameType::kError):
      if (size >= 2 && size <= kMaxErrorSize) return FrameType::kError;
      break;
  }
  return std::nullopt;
}

bool Parse(Bytes frame, Challenge* out) {
  if (!IsType(frame, FrameType::kChallenge)) return false;
  ByteReader reader(frame);
  return reader.Skip(1) && reader.ReadArray(&out->server_key) && reader.ReadArray(&out->nonce) &&
         reader.ReadArray(&out->random) && reader.remaining() == 0;
}

bool Parse(Bytes frame, Hello* out) {
  if (!IsType(frame, FrameType::kHello)) return false;
  ByteReader reader(frame);
  return reader.Skip(1) && reader.ReadArray(&out->client_key) && reader.ReadArray(&out->proof) &&
         reader.remaining() == 0;
}

bool ParseReady(Bytes frame) { return IsType(frame, FrameType::kReady); }

bool Parse(Bytes frame, Send* out) {
  return ParseAddressed(frame, FrameType::kSend, &out->destination, &out->payload);
}

bool Parse(Bytes frame, Deliver* out) {
  return ParseAddressed(frame, FrameType::kDeliver, &out->source, &out->payload);
}

bool Parse(Bytes frame, Error* out) {
  if (!IsType(frame, FrameType::kError)) return false;
  ByteReader reader(frame);
  uint8_t code = 0;
  if (!reader.Skip(1) || !reader.ReadU8(&code)) return false;
  out->code = static_cast<ErrorCode>(code);
  Bytes text = frame.subspan(2);
  out->text = std::string_view(reinterpret_cast<const char*>(text.data()), text.size());
  return true;
}

void Serialize(const Challenge& frame, std::vector<uint8_t>* out) {
  out->resize(kChallengeSize);
  ByteWriter writer(out->data());
  writer.U8(static_cast<uint8_t>(FrameType::kChallenge));
  writer.Array(frame.server_key);
  writer.Array(frame.nonce);
  writer.Array(frame.random);
}

void Serialize(const Hello& frame, std::vector<uint8_t>* out) {
  out->resize(kHelloSize);
  ByteWriter writer(out->data());
  writer.U8(static_cast<uint8_t>(FrameType::kHello));
  writer.Array(frame.client_key);
  writer.Array(frame.proof);
}

void SerializeReady(std::vector<uint8_t>* out) {
  out->assign(1, static_cast<uint8_t>(FrameType::kReady));
}

bool Serialize(const Send& frame, std::vector<uint8_t>* out) {
  return SerializeAddressed(FrameType::kSend, frame.destination, frame.payload, out);
}

bool Serialize(const Deliver& frame, std::vector<uint8_t>* out) {
  return SerializeAddressed(FrameType::kDeliver, frame.source, frame.payload, out);
}

void Serialize(const Error& frame, std::vector<uint8_t>* out) {
  const size_t text_size = std::min(frame.text.size(), kMaxErrorTextSize);
  out->resize(2 + text_size);
  ByteWriter writer(out->data());
  writer.U8(static_cast<uint8_t>(FrameType::kError));
  writer.U8(static_cast<uint8_t>(frame.code));
  writer.Raw(reinterpret_cast<const uint8_t*>(frame.text.data()), text_size);
}

bool RewriteSendAsDeliver(absl::Span<uint8_t> frame, const Key& source) {
  if (!IsType(frame, FrameType::kSend)) return false;
  frame[0] = static_cast<uint8_t>(FrameType::kDeliver);
  std::copy(source.begin(), source.end(), frame.begin() + 1);
  return true;
}

std::string_view ErrorCodeName(ErrorCode code) {
  switch (code) {
    case ErrorCode::kProtocol:
      return "protocol";
    case ErrorCode::kAuthFailed:
      return "auth_failed";
    case ErrorCode::kNotMember:
      return "not_member";
    case ErrorCode::kAuthTimeout:
      return "auth_timeout";
    case ErrorCode::kReplaced:
      return "replaced";
  }
  return "unknown";
}

}  // namespace tunnelmesh::wire::relay
