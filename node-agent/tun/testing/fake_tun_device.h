// FakeTunDevice: a TunDevice backed by two packet queues, for unit tests of the data plane. Tests
// play the kernel: InjectPacket() queues a packet the "kernel" routes into the tunnel (the agent
// reads it), and PopWrittenPacket() returns what the agent wrote back. fd() is an eventfd that is
// readable exactly while packets wait, so code that polls a real TUN descriptor runs unchanged.
#pragma once

#include <cstddef>
#include <cstdint>
#include <deque>
#include <optional>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/types/span.h"
#include "node-agent/tun/tun_device.h"

namespace tunnelmesh {

// Thread-safe: tests may inject and inspect from their thread while the data plane runs on its own.
class FakeTunDevice final : public TunDevice {
 public:
  // Aborts if no eventfd can be created (the test could not run anyway).
  explicit FakeTunDevice(std::string name = "tm-fake0");
  ~FakeTunDevice() override;
  FakeTunDevice(const FakeTunDevice&) = delete;
  FakeTunDevice& operator=(const FakeTunDevice&) = delete;

  // TunDevice. Read truncates to the buffer as the kernel does; Write records the packet unless a
  // write error is set.
  absl::StatusOr<size_t> Read(absl::Span<uint8_t> buffer) override;
  absl::Status Write(absl::Span<const uint8_t> packet) override;
  int fd() const override { return event_fd_; }
  const std::string& name() const override { return name_; }

  // Queues a packet for Read and makes fd() readable.
  void InjectPacket(absl::Span<const uint8_t> packet);
  // The oldest packet the agent wrote, if any.
  std::optional<std::vector<uint8_t>> PopWrittenPacket();
  // Every packet written so far, oldest first; empties the queue.
  std::vector<std::vector<uint8_t>> TakeWrittenPackets();
  // Packets injected but not yet read.
  size_t pending_reads() const;
  // Totals since construction.
  size_t read_count() const;
  size_t write_count() const;

  // From now on Write returns `status` (OK restores normal behaviour), e.g. to simulate a link
  // that went down: absl::UnavailableError("link down").
  void SetWriteStatus(absl::Status status);
  // From now on Read returns `status` instead of packets (OK restores normal behaviour).
  void SetReadStatus(absl::Status status);

 private:
  const std::string name_;
  // Counts queued inbound packets (EFD_SEMAPHORE: each read takes one).
  const int event_fd_;

  mutable absl::Mutex mu_;
  std::deque<std::vector<uint8_t>> inbound_ ABSL_GUARDED_BY(mu_);
  std::deque<std::vector<uint8_t>> outbound_ ABSL_GUARDED_BY(mu_);
  absl::Status read_status_ ABSL_GUARDED_BY(mu_);
  absl::Status write_status_ ABSL_GUARDED_BY(mu_);
  size_t read_count_ ABSL_GUARDED_BY(mu_) = 0;
  size_t write_count_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace tunnelmesh
