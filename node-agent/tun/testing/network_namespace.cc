#include "node-agent/tun/testing/network_namespace.h"

#include <net/if.h>
#include <sched.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "absl/strings/str_cat.h"

namespace tunnelmesh {

absl::Status EnterNewNetworkNamespace() {
  if (unshare(CLONE_NEWNET) != 0) {
    int error = errno;
    std::string what = absl::StrCat("unshare(CLONE_NEWNET): ", std::strerror(error));
    if (error == EPERM) {
      return absl::PermissionDeniedError(absl::StrCat(what, " (needs root / CAP_SYS_ADMIN)"));
    }
    return absl::InternalError(what);
  }
  // A new namespace has only "lo", and it is down.
  int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return absl::InternalError(absl::StrCat("socket: ", std::strerror(errno)));
  ifreq request{};
  std::strncpy(request.ifr_name, "lo", IFNAMSIZ - 1);
  bool ok = ioctl(fd, SIOCGIFFLAGS, &request) == 0;
  request.ifr_flags |= IFF_UP;
  ok = ok && ioctl(fd, SIOCSIFFLAGS, &request) == 0;
  int error = errno;
  close(fd);
  if (!ok) return absl::InternalError(absl::StrCat("setting lo up: ", std::strerror(error)));
  return absl::OkStatus();
}

}  // namespace tunnelmesh
