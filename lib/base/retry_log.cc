#include "lib/base/retry_log.h"

#include "absl/strings/str_cat.h"

namespace tunnelmesh {

std::string FormatOutageDuration(absl::Duration d) {
  int64_t seconds = absl::ToInt64Seconds(d);
  if (seconds < 0) seconds = 0;
  const int64_t hours = seconds / 3600;
  const int64_t minutes = seconds % 3600 / 60;
  const int64_t rest = seconds % 60;
  if (hours > 0) return absl::StrCat(hours, " h ", minutes, " min");
  if (minutes > 0) return absl::StrCat(minutes, " min ", rest, " s");
  return absl::StrCat(rest, " s");
}

}  // namespace tunnelmesh
