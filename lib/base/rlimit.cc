#include "lib/base/rlimit.h"

#include <dirent.h>
#include <errno.h>
#include <string.h>
#include <sys/resource.h>

#include <string>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "lib/base/file.h"

namespace tunnelmesh {
namespace {

// The kernel's ceiling for RLIMIT_NOFILE (fs.nr_open), used when the hard limit is unlimited:
// setrlimit refuses a soft limit above it.
uint64_t NrOpen() {
  constexpr uint64_t kDefault = 1 << 20;  // The kernel's default nr_open.
  absl::StatusOr<std::string> text = ReadTrimmedFile("/proc/sys/fs/nr_open");
  uint64_t value = 0;
  if (!text.ok() || !absl::SimpleAtoi(*text, &value) || value == 0) return kDefault;
  return value;
}

}  // namespace

absl::StatusOr<DescriptorLimit> RaiseDescriptorLimit() {
  rlimit limit{};
  if (getrlimit(RLIMIT_NOFILE, &limit) != 0) {
    return absl::UnavailableError(absl::StrCat("getrlimit(RLIMIT_NOFILE): ", strerror(errno)));
  }
  DescriptorLimit out;
  out.soft_before = limit.rlim_cur;
  out.hard = limit.rlim_max;
  const uint64_t target = limit.rlim_max == RLIM_INFINITY ? NrOpen() : limit.rlim_max;
  if (limit.rlim_cur != RLIM_INFINITY && limit.rlim_cur < target) {
    rlimit raised = limit;
    raised.rlim_cur = target;
    if (setrlimit(RLIMIT_NOFILE, &raised) != 0) {
      return absl::UnavailableError(
          absl::StrCat("raising the descriptor limit (RLIMIT_NOFILE) from ", limit.rlim_cur, " to ",
                       target, ": ", strerror(errno)));
    }
    limit = raised;
  }
  out.soft = limit.rlim_cur;
  return out;
}

uint64_t DescriptorSoftLimit() {
  rlimit limit{};
  if (getrlimit(RLIMIT_NOFILE, &limit) != 0) return 0;
  return limit.rlim_cur;
}

absl::StatusOr<size_t> CountOpenDescriptors() {
  DIR* dir = opendir("/proc/self/fd");
  if (dir == nullptr) {
    return absl::UnavailableError(absl::StrCat("listing /proc/self/fd: ", strerror(errno)));
  }
  size_t count = 0;
  while (const dirent* entry = readdir(dir)) {
    if (entry->d_name[0] != '.') ++count;
  }
  closedir(dir);
  return count > 0 ? count - 1 : 0;  // The directory's own descriptor is listed too.
}

bool DescriptorsAvailable(size_t spare) {
  absl::StatusOr<size_t> open = CountOpenDescriptors();
  if (!open.ok()) return false;
  const uint64_t limit = DescriptorSoftLimit();
  return limit == RLIM_INFINITY || *open + spare < limit;
}

}  // namespace tunnelmesh
