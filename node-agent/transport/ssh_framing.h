// The framing on an SSH path's channel: each datagram (a WireGuard or discovery message, sealed as
// on UDP) travels as a 2-byte big-endian length and that many bytes. SSH's channel is a byte
// stream; the frames restore datagram boundaries. A zero length or one above the reader's limit is
// a broken or hostile stream: the connection closes.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "absl/functional/function_ref.h"
#include "absl/types/span.h"

namespace tunnelmesh {

inline constexpr size_t kSshFrameHeaderSize = 2;
inline constexpr size_t kSshMaxFrame = 65535;

// Appends the frame of `payload` (1 to kSshMaxFrame bytes) to `out`; false (nothing appended)
// when the size is out of range.
bool AppendSshFrame(absl::Span<const uint8_t> payload, std::vector<uint8_t>* out);

class SshFrameReader {
 public:
  // Frames longer than `max_frame` (at most kSshMaxFrame) are refused.
  explicit SshFrameReader(size_t max_frame);

  // Consumes `bytes`, handing every frame they complete to `on_frame` (the span is valid during
  // the call only). Returns false, for good, once the stream is malformed.
  [[nodiscard]] bool Feed(absl::Span<const uint8_t> bytes,
                          absl::FunctionRef<void(absl::Span<const uint8_t>)> on_frame);

 private:
  const size_t max_frame_;
  std::vector<uint8_t> partial_;  // An incomplete frame, header included; at most 2 + max_frame_.
  bool broken_ = false;
};

}  // namespace tunnelmesh
