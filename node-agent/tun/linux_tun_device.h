// LinuxTunDevice: a TUN interface opened through /dev/net/tun (IFF_TUN | IFF_NO_PI), non-blocking,
// deleted by the kernel when the device object (its file descriptor) goes away.
#pragma once

#include <memory>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "node-agent/tun/tun_device.h"

namespace tunnelmesh {

class LinuxTunDevice final : public TunDevice {
 public:
  // Creates the interface `name` (at most 15 characters; empty lets the kernel pick "tunN") in the
  // calling thread's network namespace. The interface starts down, without addresses; configure it
  // with LinkConfigurator (node-agent/netlink). Errors say what to check: kFailedPrecondition when
  // /dev/net/tun is missing, kPermissionDenied without CAP_NET_ADMIN, kAlreadyExists when another
  // process holds the name, kInvalidArgument for a bad name or one taken by a non-TUN interface.
  //
  // With `offload`, the device is opened with IFF_VNET_HDR and asks the kernel for checksum and TCP
  // segmentation offload (TUNSETOFFLOAD), so reads and writes carry a virtio_net_hdr and may be TCP
  // super-packets (offload.h). When the kernel refuses the offloads, the header stays but every
  // packet is a plain one.
  [[nodiscard]] static absl::StatusOr<std::unique_ptr<LinuxTunDevice>> Create(std::string_view name,
                                                                              bool offload = false);

  // Closes the descriptor; the kernel then deletes the interface with its addresses and routes.
  ~LinuxTunDevice() override;
  LinuxTunDevice(const LinuxTunDevice&) = delete;
  LinuxTunDevice& operator=(const LinuxTunDevice&) = delete;

  absl::StatusOr<size_t> Read(absl::Span<uint8_t> buffer) override;
  absl::Status Write(absl::Span<const uint8_t> packet) override;
  absl::Status WriteV(absl::Span<const iovec> parts) override;
  bool offload() const override { return offload_; }
  int fd() const override { return fd_; }
  const std::string& name() const override { return name_; }

 private:
  LinuxTunDevice(int fd, std::string name, bool offload);
  absl::Status WriteError(int error, size_t size) const;

  const int fd_;
  const std::string name_;
  const bool offload_;
  // Per-packet Write outcomes, built once so the data plane never formats strings per packet.
  const absl::Status link_down_;
  const absl::Status queue_full_;
};

}  // namespace tunnelmesh
