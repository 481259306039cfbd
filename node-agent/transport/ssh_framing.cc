#include "node-agent/transport/ssh_framing.h"

#include <algorithm>

namespace tunnelmesh {

bool AppendSshFrame(absl::Span<const uint8_t> payload, std::vector<uint8_t>* out) {
  if (payload.empty() || payload.size() > kSshMaxFrame) return false;
  out->push_back(static_cast<uint8_t>(payload.size() >> 8));
  out->push_back(static_cast<uint8_t>(payload.size()));
  out->insert(out->end(), payload.begin(), payload.end());
  return true;
}

SshFrameReader::SshFrameReader(size_t max_frame) : max_frame_(std::min(max_frame, kSshMaxFrame)) {
  partial_.reserve(kSshFrameHeaderSize + max_frame_);
}

bool SshFrameReader::Feed(absl::Span<const uint8_t> bytes,
                          absl::FunctionRef<void(absl::Span<const uint8_t>)> on_frame) {
  while (!broken_ && !bytes.empty()) {
    // Whole frames straight from the input when nothing is pending: no copy.
    if (partial_.empty() && bytes.size() >= kSshFrameHeaderSize) {
      const size_t length = (size_t{bytes[0]} << 8) | bytes[1];
      if (length == 0 || length > max_frame_) {
        broken_ = true;
        break;
      }
      if (bytes.size() >= kSshFrameHeaderSize + length) {
        on_frame(bytes.subspan(kSshFrameHeaderSize, length));
        bytes.remove_prefix(kSshFrameHeaderSize + length);
        continue;
      }
    }
    // Otherwise collect into partial_: the header first, then the rest of the frame.
    size_t want = kSshFrameHeaderSize;
    if (partial_.size() >= kSshFrameHeaderSize) {
      want += (size_t{partial_[0]} << 8) | partial_[1];
    }
    const size_t take = std::min(want - partial_.size(), bytes.size());
    partial_.insert(partial_.end(), bytes.begin(), bytes.begin() + take);
    bytes.remove_prefix(take);
    if (partial_.size() == kSshFrameHeaderSize) {
      const size_t length = (size_t{partial_[0]} << 8) | partial_[1];
      if (length == 0 || length > max_frame_) {
        broken_ = true;
        break;
      }
    } else if (partial_.size() > kSshFrameHeaderSize && partial_.size() == want) {
      on_frame(absl::Span<const uint8_t>(partial_).subspan(kSshFrameHeaderSize));
      partial_.clear();
    }
  }
  return !broken_;
}

}  // namespace tunnelmesh
