// Fuzz target for ParseIpHeader: arbitrary bytes must never be read out of bounds, and whatever it
// accepts must be self-consistent (the declared length fits the buffer, the families match the
// version, and DestinationOf/SourceOf agree with it). Besides the raw input it also checks variants
// with a forced version nibble and a length field that fits, so that the accepting paths are
// reached often even by the non-coverage-guided replay driver.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <vector>

#include "absl/types/span.h"
#include "lib/net/packet.h"

namespace {

void Check(absl::Span<const uint8_t> packet) {
  tunnelmesh::IpHeaderInfo info;
  const bool ok = tunnelmesh::ParseIpHeader(packet, &info);
  const auto destination = tunnelmesh::DestinationOf(packet);
  const auto source = tunnelmesh::SourceOf(packet);
  if (destination.has_value() != ok || source.has_value() != ok) std::abort();
  if (!ok) return;

  if (info.total_length > packet.size()) std::abort();
  if (*destination != info.destination || *source != info.source) std::abort();
  if (info.version != packet[0] >> 4) std::abort();
  if (info.version == 4) {
    if (!info.source.is_v4() || !info.destination.is_v4()) std::abort();
    if ((packet[0] & 0x0f) < 5) std::abort();
    if (info.total_length < static_cast<size_t>(packet[0] & 0x0f) * 4) std::abort();
  } else if (info.version == 6) {
    if (!info.source.is_v6() || !info.destination.is_v6()) std::abort();
    if (info.total_length < tunnelmesh::kIpv6HeaderLength) std::abort();
  } else {
    std::abort();
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  Check(absl::Span<const uint8_t>(data, size));
  if (size == 0) return 0;

  // Same bytes with the version forced to 4 or 6 (chosen by the low bit of the first byte).
  std::vector<uint8_t> copy(data, data + size);
  const bool v6 = copy[0] & 1;
  copy[0] = static_cast<uint8_t>((v6 ? 0x60 : 0x40) | (copy[0] & 0x0f));
  Check(copy);

  // And with the length field scaled into the buffer, so that it usually fits.
  if (v6 && size >= 6 && size >= tunnelmesh::kIpv6HeaderLength) {
    const size_t payload = (copy[4] << 8 | copy[5]) % (size - tunnelmesh::kIpv6HeaderLength + 1);
    copy[4] = static_cast<uint8_t>(payload >> 8);
    copy[5] = static_cast<uint8_t>(payload);
  } else if (!v6 && size >= 4) {
    const size_t total = (copy[2] << 8 | copy[3]) % (size + 1);
    copy[2] = static_cast<uint8_t>(total >> 8);
    copy[3] = static_cast<uint8_t>(total);
  }
  Check(copy);
  return 0;
}
