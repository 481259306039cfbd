// Fuzz target: every relay frame parser on arbitrary bytes, as the relay and its clients receive
// them from the network. Parsing must never read out of bounds, a frame must parse exactly when
// Classify names its type, and whatever parses must re-serialize to the same bytes.
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "lib/wire/relay_frame.h"

using namespace tunnelmesh::wire::relay;

namespace {

void Check(bool condition) {
  if (!condition) std::abort();
}

bool SameBytes(const std::vector<uint8_t>& a, Bytes b) {
  return a.size() == b.size() && (a.empty() || std::memcmp(a.data(), b.data(), a.size()) == 0);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  // Bias toward known types and their sizes so each parser's accepting path runs often.
  std::vector<uint8_t> shaped(data, data + size);
  if (size >= 2 && data[1] % 2 == 0) {
    shaped[0] = static_cast<uint8_t>(1 + data[0] % 6);
    static const size_t kFixedSizes[] = {kChallengeSize, kHelloSize, kReadySize};
    if (shaped[0] <= 3) shaped.resize(kFixedSizes[shaped[0] - 1], data[size - 1]);
  }
  Bytes input(shaped.data(), shaped.size());

  std::optional<FrameType> type = Classify(input);
  Challenge challenge;
  Hello hello;
  Send send;
  Deliver deliver;
  Error error;
  const bool is_challenge = Parse(input, &challenge);
  const bool is_hello = Parse(input, &hello);
  const bool is_ready = ParseReady(input);
  const bool is_send = Parse(input, &send);
  const bool is_deliver = Parse(input, &deliver);
  const bool is_error = Parse(input, &error);
  Check(is_challenge == (type == FrameType::kChallenge));
  Check(is_hello == (type == FrameType::kHello));
  Check(is_ready == (type == FrameType::kReady));
  Check(is_send == (type == FrameType::kSend));
  Check(is_deliver == (type == FrameType::kDeliver));
  Check(is_error == (type == FrameType::kError));
  Check(!type.has_value() || input.size() <= kMaxFrameSize);

  std::vector<uint8_t> out;
  if (is_challenge) {
    Serialize(challenge, &out);
    Check(SameBytes(out, input));
  }
  if (is_hello) {
    Serialize(hello, &out);
    Check(SameBytes(out, input));
  }
  if (is_ready) {
    SerializeReady(&out);
    Check(SameBytes(out, input));
  }
  if (is_send) {
    Check(send.payload.size() >= 1 && send.payload.size() <= kMaxPayloadSize);
    Check(Serialize(send, &out) && SameBytes(out, input));
    Key source;
    source.fill(0x5a);
    std::vector<uint8_t> rewritten(input.begin(), input.end());
    Check(RewriteSendAsDeliver(absl::MakeSpan(rewritten), source));
    Deliver delivered;
    Check(Parse(Bytes(rewritten.data(), rewritten.size()), &delivered));
    Check(delivered.source == source && delivered.payload.size() == send.payload.size());
  } else {
    std::vector<uint8_t> copy(input.begin(), input.end());
    Check(!RewriteSendAsDeliver(absl::MakeSpan(copy), Key{}));
    Check(SameBytes(copy, input));
  }
  if (is_deliver) {
    Check(Serialize(deliver, &out) && SameBytes(out, input));
  }
  if (is_error) {
    Check(error.text.size() <= kMaxErrorTextSize);
    Serialize(error, &out);
    Check(SameBytes(out, input));
  }
  return 0;
}
