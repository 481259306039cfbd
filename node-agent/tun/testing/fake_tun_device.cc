#include "node-agent/tun/testing/fake_tun_device.h"

#include <sys/eventfd.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <utility>

namespace tunnelmesh {
namespace {

int MakeEventFd() {
  int fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC | EFD_SEMAPHORE);
  if (fd < 0) {
    std::fprintf(stderr, "FakeTunDevice: eventfd: %s\n", std::strerror(errno));
    std::abort();
  }
  return fd;
}

}  // namespace

FakeTunDevice::FakeTunDevice(std::string name) : name_(std::move(name)), event_fd_(MakeEventFd()) {}

FakeTunDevice::~FakeTunDevice() { close(event_fd_); }

absl::StatusOr<size_t> FakeTunDevice::Read(absl::Span<uint8_t> buffer) {
  absl::MutexLock lock(&mu_);
  if (!read_status_.ok()) return read_status_;
  if (inbound_.empty()) return 0;
  std::vector<uint8_t> packet = std::move(inbound_.front());
  inbound_.pop_front();
  uint64_t one;
  // Cannot fail: the counter is at least 1 while inbound_ is non-empty.
  if (read(event_fd_, &one, sizeof(one)) != sizeof(one)) std::abort();
  size_t n = std::min(packet.size(), buffer.size());
  std::copy_n(packet.begin(), n, buffer.begin());
  ++read_count_;
  return n;
}

absl::Status FakeTunDevice::Write(absl::Span<const uint8_t> packet) {
  absl::MutexLock lock(&mu_);
  if (!write_status_.ok()) return write_status_;
  outbound_.emplace_back(packet.begin(), packet.end());
  ++write_count_;
  return absl::OkStatus();
}

void FakeTunDevice::InjectPacket(absl::Span<const uint8_t> packet) {
  absl::MutexLock lock(&mu_);
  inbound_.emplace_back(packet.begin(), packet.end());
  uint64_t one = 1;
  if (write(event_fd_, &one, sizeof(one)) != sizeof(one)) std::abort();
}

std::optional<std::vector<uint8_t>> FakeTunDevice::PopWrittenPacket() {
  absl::MutexLock lock(&mu_);
  if (outbound_.empty()) return std::nullopt;
  std::vector<uint8_t> packet = std::move(outbound_.front());
  outbound_.pop_front();
  return packet;
}

std::vector<std::vector<uint8_t>> FakeTunDevice::TakeWrittenPackets() {
  absl::MutexLock lock(&mu_);
  std::vector<std::vector<uint8_t>> packets(std::make_move_iterator(outbound_.begin()),
                                            std::make_move_iterator(outbound_.end()));
  outbound_.clear();
  return packets;
}

size_t FakeTunDevice::pending_reads() const {
  absl::MutexLock lock(&mu_);
  return inbound_.size();
}

size_t FakeTunDevice::read_count() const {
  absl::MutexLock lock(&mu_);
  return read_count_;
}

size_t FakeTunDevice::write_count() const {
  absl::MutexLock lock(&mu_);
  return write_count_;
}

void FakeTunDevice::SetWriteStatus(absl::Status status) {
  absl::MutexLock lock(&mu_);
  write_status_ = std::move(status);
}

void FakeTunDevice::SetReadStatus(absl::Status status) {
  absl::MutexLock lock(&mu_);
  read_status_ = std::move(status);
}

}  // namespace tunnelmesh
