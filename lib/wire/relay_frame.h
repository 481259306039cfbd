// The relay protocol: frames carried one per WebSocket binary message between an agent and the
// coordinator's relay (docs/protocol.md, "Relay"). The first byte is the frame type; every field
// has a fixed size except the trailing payload or text, which runs to the end of the message (the
// WebSocket message boundary is the length). Payloads are WireGuard or discovery messages that are
// already encrypted end to end, so the relay forwards them without ever seeing plaintext.
//
//   server -> client  Challenge  type=1 | server public key (32) | nonce (24) | random (32)
//   client -> server  Hello      type=2 | client public key (32) | crypto_box(random) (48)
//   server -> client  Ready      type=3
//   client -> server  Send       type=4 | destination public key (32) | payload (1..65535)
//   server -> client  Deliver    type=5 | source public key (32)      | payload (1..65535)
//   server -> client  Error      type=6 | reason code (1) | text (0..255, UTF-8, for people)
//
// Hello proves that the client holds the private key of the public key it names: the box of the
// challenge's random bytes (crypto_box_easy, nonce from the Challenge, client private key to server
// public key) opens only with that key pair. Ready tells the client that the relay checked
// membership and registered its key, so frames addressed to it are delivered from now on.
// Send and Deliver have the same layout, so the relay turns one into the other in place.
//
// Parsing never reads outside the given bytes (ByteReader) and needs the exact size of fixed
// frames. Functions here are pure and thread-safe.
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <string_view>
#include <vector>

#include "absl/types/span.h"

namespace tunnelmesh::wire::relay {

using Bytes = absl::Span<const uint8_t>;
using Key = std::array<uint8_t, 32>;

enum class FrameType : uint8_t {
  kChallenge = 1,
  kHello = 2,
  kReady = 3,
  kSend = 4,
  kDeliver = 5,
  kError = 6,
};

// Why the relay refuses or ends a connection. Unknown codes from a newer relay parse as-is.
enum class ErrorCode : uint8_t {
  kProtocol = 1,     // a frame that is malformed or not allowed in this state
  kAuthFailed = 2,   // the Hello's proof does not open with the named key
  kNotMember = 3,    // the key is not a member of any mesh this coordinator serves
  kAuthTimeout = 4,  // no valid Hello in time
  kReplaced = 5,     // a newer connection authenticated with the same key
};

inline constexpr size_t kKeySize = 32;
inline constexpr size_t kNonceSize = 24;  // crypto_box_NONCEBYTES
inline constexpr size_t kRandomSize = 32;
inline constexpr size_t kBoxMacSize = 16;  // crypto_box_MACBYTES
inline constexpr size_t kProofSize = kRandomSize + kBoxMacSize;
inline constexpr size_t kMaxPayloadSize = 65535;
inline constexpr size_t kMaxErrorTextSize = 255;

inline constexpr size_t kChallengeSize = 1 + kKeySize + kNonceSize + kRandomSize;  // 89
inline constexpr size_t kHelloSize = 1 + kKeySize + kProofSize;                    // 81
inline constexpr size_t kReadySize = 1;
inline constexpr size_t kAddressedHeaderSize = 1 + kKeySize;  // Send and Deliver, before payload
inline constexpr size_t kMaxAddressedSize = kAddressedHeaderSize + kMaxPayloadSize;
inline constexpr size_t kMaxErrorSize = 2 + kMaxErrorTextSize;
// The largest frame either side may send; anything longer is malformed.
inline constexpr size_t kMaxFrameSize = kMaxAddressedSize;

struct Challenge {
  Key server_key{};
  std::array<uint8_t, kNonceSize> nonce{};
  std::array<uint8_t, kRandomSize> random{};
};

struct Hello {
  Key client_key{};
  std::array<uint8_t, kProofSize> proof{};
};

// Send and Deliver views point into the parsed bytes; they are valid while those bytes are.
struct Send {
  Key destination{};
  Bytes payload;
};

struct Deliver {
  Key source{};
  Bytes payload;
};

struct Error {
  ErrorCode code = ErrorCode::kProtocol;
  std::string_view text;
};

// The type of a frame whose size is valid for its type (fixed frames exactly, Send and Deliver
// with a payload of 1..kMaxPayloadSize bytes, Error with at most kMaxErrorTextSize bytes of text);
// nullopt for anything else.
std::optional<FrameType> Classify(Bytes frame);

// Each parser returns false unless Classify(frame) is its type.
bool Parse(Bytes frame, Challenge* out);
bool Parse(Bytes frame, Hello* out);
bool ParseReady(Bytes frame);
bool Parse(Bytes frame, Send* out);
bool Parse(Bytes frame, Deliver* out);
bool Parse(Bytes frame, Error* out);

// Serializers replace the contents of `out`. Those with variable parts return false (leaving
// `out` empty) when a payload is empty or longer than kMaxPayloadSize; Error text is cut to
// kMaxErrorTextSize bytes.
void Serialize(const Challenge& frame, std::vector<uint8_t>* out);
void Serialize(const Hello& frame, std::vector<uint8_t>* out);
void SerializeReady(std::vector<uint8_t>* out);
[[nodiscard]] bool Serialize(const Send& frame, std::vector<uint8_t>* out);
[[nodiscard]] bool Serialize(const Deliver& frame, std::vector<uint8_t>* out);
void Serialize(const Error& frame, std::vector<uint8_t>* out);

// Turns a well-formed Send frame into the Deliver frame the destination receives, in place: the
// type byte changes and the destination key is overwritten with `source`; the payload is not
// copied. Returns false, leaving `frame` unchanged, when it is not a valid Send.
[[nodiscard]] bool RewriteSendAsDeliver(absl::Span<uint8_t> frame, const Key& source);

// A stable lower-case name for logs and metrics ("not_member"); "unknown" for other codes.
std::string_view ErrorCodeName(ErrorCode code);

}  // namespace tunnelmesh::wire::relay
