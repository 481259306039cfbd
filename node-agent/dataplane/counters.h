// The data plane's own drop reasons, apart from the WireGuard core's protocol drops
// (lib/noise/counters.h): packets it could not route, write, fit or send. `status --json` prints
// both sets under "drops" with the names below.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>

#include "lib/noise/counters.h"

namespace tunnelmesh {

enum class DataplaneDrop : uint8_t {
  kNoRoute,         // Outbound packet to an address no peer's AllowedIPs cover.
  kTunWriteFailed,  // The TUN device refused a packet.
  kPacketTooBig,    // Outbound packet larger than the interface MTU.
  kSendFailed,      // A transport refused a datagram (kernel error, relay down or busy, no relay).
  kRelayQueueFull,  // Relayed datagram dropped because the inbound thread was not keeping up.
  kCount,
};

inline const char* DataplaneDropName(DataplaneDrop d) {
  static constexpr const char* kNames[] = {"no_route", "tun_write_failed", "packet_too_big",
                                           "send_failed", "relay_queue_full"};
  static_assert(sizeof(kNames) / sizeof(kNames[0]) == static_cast<size_t>(DataplaneDrop::kCount));
  return kNames[static_cast<size_t>(d)];
}

using DataplaneDropCounters = noise::EnumCounters<DataplaneDrop>;

// A copy of the counters at one moment, for reports.
struct DataplaneDropCounts {
  std::array<uint64_t, static_cast<size_t>(DataplaneDrop::kCount)> counts{};
  uint64_t Get(DataplaneDrop d) const { return counts[static_cast<size_t>(d)]; }
};

}  // namespace tunnelmesh
