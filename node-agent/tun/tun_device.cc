#include "node-agent/tun/tun_device.h"

#include <vector>

namespace tunnelmesh {

absl::Status TunDevice::WriteV(absl::Span<const iovec> parts) {
  std::vector<uint8_t> joined;
  for (const iovec& part : parts) {
    const auto* data = static_cast<const uint8_t*>(part.iov_base);
    joined.insert(joined.end(), data, data + part.iov_len);
  }
  return Write(joined);
}

}  // namespace tunnelmesh
