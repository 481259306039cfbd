#include "node-agent/tun/linux_tun_device.h"

// <net/if.h> must come before <linux/if.h>: both define the interface flags and struct ifreq, and
// only the kernel header knows to skip its copies when glibc's came first.
// clang-format off
#include <net/if.h>
#include <linux/if.h>
#include <linux/if_tun.h>
// clang-format on
#include <fcntl.h>
#include <sys/ioctl.h>
#include <sys/uio.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"

namespace tunnelmesh {
namespace {

constexpr char kTunPath[] = "/dev/net/tun";

// Debian's abseil has its own string_view type that does not convert from std::string_view.
absl::string_view Absl(std::string_view text) {
  return absl::string_view(text.data(), text.size());
}

// Closes a descriptor unless released; keeps Create() leak-free on every error path.
class FdGuard {
 public:
  explicit FdGuard(int fd) : fd_(fd) {}
  ~FdGuard() {
    if (fd_ >= 0) close(fd_);
  }
  FdGuard(const FdGuard&) = delete;
  FdGuard& operator=(const FdGuard&) = delete;
  int get() const { return fd_; }
  int release() { return std::exchange(fd_, -1); }

 private:
  int fd_;
};

// The rules of the kernel's dev_valid_name(), plus "%" (a name template) and non-printable bytes,
// checked here so the error can say which rule the name breaks.
absl::Status ValidateName(std::string_view name) {
  if (name.size() >= IFNAMSIZ) {
    return absl::InvalidArgumentError(absl::StrCat("TUN interface name \"", Absl(name), "\" has ",
                                                   name.size(), " characters (at most ",
                                                   IFNAMSIZ - 1, " allowed)"));
  }
  if (name == "." || name == "..") {
    return absl::InvalidArgumentError(
        absl::StrCat("TUN interface name \"", Absl(name), "\" is reserved"));
  }
  for (char c : name) {
    if (c == '/' || c == ':' || c == '%' || !absl::ascii_isgraph(static_cast<unsigned char>(c))) {
      return absl::InvalidArgumentError(
          absl::StrCat("TUN interface name \"", absl::CEscape(Absl(name)),
                       "\" may not contain \"/\", \":\", \"%\", spaces or control characters"));
    }
  }
  return absl::OkStatus();
}

absl::Status OpenError(int error) {
  std::string what = absl::StrCat("opening ", kTunPath, ": ", std::strerror(error));
  switch (error) {
    case ENOENT:
    case ENODEV:
    case ENXIO:
      return absl::FailedPreconditionError(
          absl::StrCat(what,
                       " (is the tun module loaded? try \"modprobe tun\"; in a container, pass the "
                       "device in, e.g. --device /dev/net/tun)"));
    case EACCES:
    case EPERM:
      return absl::PermissionDeniedError(
          absl::StrCat(what, " (run as root or give the agent access to ", kTunPath, ")"));
    case EMFILE:
    case ENFILE:
      return absl::ResourceExhaustedError(absl::StrCat(what, " (too many open files)"));
    default:
      return absl::UnknownError(what);
  }
}

absl::Status SetIffError(std::string_view name, int error) {
  std::string what = absl::StrCat("creating TUN interface \"", Absl(name),
                                  "\" (TUNSETIFF): ", std::strerror(error));
  switch (error) {
    case EPERM:
    case EACCES:
      return absl::PermissionDeniedError(absl::StrCat(
          what,
          " (the agent needs CAP_NET_ADMIN: run as root or grant it with "
          "\"setcap cap_net_admin+ep\" or systemd's AmbientCapabilities=CAP_NET_ADMIN)"));
    case EBUSY:
      return absl::AlreadyExistsError(
          absl::StrCat(what,
                       " (another process already holds this interface: is another agent or "
                       "wireguard-go running? pick another name or stop it)"));
    case EINVAL:
      if (!name.empty() && if_nametoindex(std::string(name).c_str()) != 0) {
        return absl::InvalidArgumentError(absl::StrCat(
            what,
            " (an interface with this name exists and is not a TUN device: pick another "
            "name or delete it with \"ip link delete ",
            Absl(name), "\")"));
      }
      return absl::InvalidArgumentError(what);
    default:
      return absl::UnknownError(what);
  }
}

}  // namespace

absl::StatusOr<std::unique_ptr<LinuxTunDevice>> LinuxTunDevice::Create(std::string_view name,
                                                                       bool offload) {
  if (absl::Status valid = ValidateName(name); !valid.ok()) return valid;
  FdGuard fd(open(kTunPath, O_RDWR | O_NONBLOCK | O_CLOEXEC));
  if (fd.get() < 0) return OpenError(errno);

  ifreq request{};
  // IFF_NO_PI: packets carry no 4-byte flags/protocol header; the IP version nibble tells v4/v6.
  request.ifr_flags = IFF_TUN | IFF_NO_PI | (offload ? IFF_VNET_HDR : 0);
  std::memcpy(request.ifr_name, name.data(), name.size());
  if (ioctl(fd.get(), TUNSETIFF, &request) != 0) return SetIffError(name, errno);
  if (offload) {
    // Checksum offload is required for TSO; without both, packets simply arrive unsegmented.
    unsigned int features = TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6;
    if (ioctl(fd.get(), TUNSETOFFLOAD, features) != 0) ioctl(fd.get(), TUNSETOFFLOAD, 0u);
  }

  // The kernel writes back the final name (it differs when `name` was empty).
  std::string actual(request.ifr_name, strnlen(request.ifr_name, IFNAMSIZ));
  return std::unique_ptr<LinuxTunDevice>(
      new LinuxTunDevice(fd.release(), std::move(actual), offload));
}

LinuxTunDevice::LinuxTunDevice(int fd, std::string name, bool offload)
    : fd_(fd),
      name_(std::move(name)),
      offload_(offload),
      link_down_(absl::UnavailableError(
          absl::StrCat("writing to TUN interface ", name_, ": the link is down"))),
      queue_full_(absl::UnavailableError(
          absl::StrCat("writing to TUN interface ", name_, ": the queue is full"))) {}

LinuxTunDevice::~LinuxTunDevice() { close(fd_); }

absl::StatusOr<size_t> LinuxTunDevice::Read(absl::Span<uint8_t> buffer) {
  while (true) {
    ssize_t n = read(fd_, buffer.data(), buffer.size());
    if (n >= 0) return static_cast<size_t>(n);
    if (errno == EINTR) continue;
    if (errno == EAGAIN || errno == EWOULDBLOCK) return 0;
    return absl::UnavailableError(
        absl::StrCat("reading from TUN interface ", name_, ": ", std::strerror(errno)));
  }
}

absl::Status LinuxTunDevice::Write(absl::Span<const uint8_t> packet) {
  while (true) {
    ssize_t n = write(fd_, packet.data(), packet.size());
    if (n >= 0) return absl::OkStatus();
    if (errno == EINTR) continue;
    return WriteError(errno, packet.size());
  }
}

absl::Status LinuxTunDevice::WriteV(absl::Span<const iovec> parts) {
  while (true) {
    ssize_t n = writev(fd_, parts.data(), static_cast<int>(parts.size()));
    if (n >= 0) return absl::OkStatus();
    if (errno == EINTR) continue;
    size_t size = 0;
    for (const iovec& part : parts) size += part.iov_len;
    return WriteError(errno, size);
  }
}

absl::Status LinuxTunDevice::WriteError(int error, size_t size) const {
  switch (error) {
    case EIO:  // tun_get_user() refuses packets while the interface is down.
      return link_down_;
    case EAGAIN:
    case ENOBUFS:
      return queue_full_;
    case EINVAL:
      return absl::InvalidArgumentError(absl::StrCat(
          "writing to TUN interface ", name_, ": the kernel rejected a ", size, "-byte packet"));
    default:
      return absl::UnavailableError(
          absl::StrCat("writing to TUN interface ", name_, ": ", std::strerror(error)));
  }
}

}  // namespace tunnelmesh
