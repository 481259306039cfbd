// Fuzz target: every WireGuard message parser on arbitrary bytes. Parsing must never read out of
// bounds, and whatever Classify accepts must parse, and re-serialize to the same bytes.
#include <cstdint>
#include <cstdlib>
#include <cstring>

#include "lib/wire/wireguard.h"

using namespace tunnelmesh::wire;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  Bytes input(data, size);
  // Bias the raw input toward real headers so the type-specific paths run often.
  uint8_t shaped[256];
  if (size >= 2 && size <= sizeof(shaped)) {
    std::memcpy(shaped, data, size);
    shaped[0] = 1 + data[0] % 4;
    shaped[1] = shaped[2] = shaped[3] = 0;
    static const size_t kSizes[] = {kInitiationSize, kResponseSize, kCookieReplySize,
                                    kTransportMinSize};
    size_t shaped_size = data[1] % 2 ? kSizes[shaped[0] - 1] : size;
    if (shaped_size > size) std::memset(shaped + size, data[size - 1], shaped_size - size);
    input = Bytes(shaped, shaped_size < 4 ? size : shaped_size);
  }
  std::optional<MessageType> type = Classify(input);
  HandshakeInitiation init;
  HandshakeResponse resp;
  CookieReply cookie;
  TransportHeader header;
  bool parsed_init = Parse(input, &init);
  bool parsed_resp = Parse(input, &resp);
  bool parsed_cookie = Parse(input, &cookie);
  bool parsed_data = ParseTransportHeader(input, &header);
  uint8_t out[kInitiationSize];
  if (parsed_init != (type == MessageType::kHandshakeInitiation)) std::abort();
  if (parsed_resp != (type == MessageType::kHandshakeResponse)) std::abort();
  if (parsed_cookie != (type == MessageType::kCookieReply)) std::abort();
  if (parsed_data != (type == MessageType::kTransportData)) std::abort();
  if (parsed_init) {
    Serialize(init, out);
    if (std::memcmp(out, input.data(), kInitiationSize) != 0) std::abort();
  }
  if (parsed_resp) {
    Serialize(resp, out);
    if (std::memcmp(out, input.data(), kResponseSize) != 0) std::abort();
  }
  if (parsed_cookie) {
    Serialize(cookie, out);
    if (std::memcmp(out, input.data(), kCookieReplySize) != 0) std::abort();
  }
  if (parsed_data) {
    SerializeTransportHeader(header, out);
    if (std::memcmp(out, input.data(), kTransportHeaderSize) != 0) std::abort();
  }
  return 0;
}
