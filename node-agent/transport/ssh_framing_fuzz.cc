// Fuzz target: the SSH path's frame reader on arbitrary byte streams, split at arbitrary points.
// The reader must never read out of bounds, never hand over an empty or oversized frame, and must
// hand over the same frames however the stream is split; frames it accepts must re-encode to the
// bytes they came from.
#include <cstdint>
#include <cstdlib>
#include <vector>

#include "node-agent/transport/ssh_framing.h"

using namespace tunnelmesh;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 2) return 0;
  // The first byte picks the frame limit, the second the split step.
  const size_t max_frame = 1 + size_t{data[0]} * 8;
  const size_t step = 1 + data[1] % 17;
  const absl::Span<const uint8_t> stream(data + 2, size - 2);

  std::vector<std::vector<uint8_t>> whole, split;
  SshFrameReader a(max_frame), b(max_frame);
  auto collect = [max_frame](std::vector<std::vector<uint8_t>>* out) {
    return [out, max_frame](absl::Span<const uint8_t> frame) {
      if (frame.empty() || frame.size() > max_frame) abort();
      out->emplace_back(frame.begin(), frame.end());
    };
  };
  const bool ok_whole = a.Feed(stream, collect(&whole));
  bool ok_split = true;
  for (size_t at = 0; at < stream.size() && ok_split; at += step) {
    ok_split = b.Feed(stream.subspan(at, step), collect(&split));
  }
  if (ok_whole != ok_split || whole != split) abort();
  std::vector<uint8_t> encoded;
  for (const std::vector<uint8_t>& frame : whole) {
    if (!AppendSshFrame(frame, &encoded)) abort();
  }
  if (encoded.size() > stream.size() ||
      !std::equal(encoded.begin(), encoded.end(), stream.begin())) {
    abort();
  }
  return 0;
}
