// Parsing of a watch response body (https://kubernetes.io/docs/reference/using-api/api-concepts/
// #efficient-detection-of-changes): one JSON event {"type": ..., "object": ...} per line, arriving
// in chunks cut anywhere. Pure: client.cc feeds the bytes as they come off the socket.
#pragma once

#include <cstddef>
#include <functional>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "operator/kube/resource.h"

namespace tunnelmesh::kube {

// Splits a byte stream into lines without buffering more than one line.
// Thread-safety: none; owned by the reading thread.
class WatchLineSplitter {
 public:
  // A single event larger than this is refused (kResourceExhausted): objects are at most ~1.5 MiB
  // in etcd, so a longer line is garbage, not an event.
  static constexpr size_t kDefaultMaxLine = 16u << 20;

  explicit WatchLineSplitter(size_t max_line = kDefaultMaxLine) : max_line_(max_line) {}

  // Appends `chunk` and calls `on_line` for every line it completes (without the '\n' or a '\r'
  // before it; empty lines are skipped). Stops at, and returns, the first non-OK status of
  // `on_line`; the rest of the chunk is then dropped.
  absl::Status Feed(std::string_view chunk,
                    const std::function<absl::Status(std::string_view)>& on_line);

  // At the end of the stream: calls `on_line` for an unterminated last line, if any.
  absl::Status Finish(const std::function<absl::Status(std::string_view)>& on_line);

  size_t buffered() const { return partial_.size(); }

 private:
  size_t max_line_;
  std::string partial_;
};

// One line of a watch stream. kInvalidArgument names what is wrong when it is not an event.
// An ERROR event is returned as such; its object is a metav1.Status (see StatusFromApiStatus).
absl::StatusOr<WatchEvent> ParseWatchEvent(std::string_view line);

}  // namespace tunnelmesh::kube
