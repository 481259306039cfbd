// Bytes from the network: a watch body cut into chunks, and error bodies. Nothing may crash or
// throw; every line either parses into an event or is refused with a status.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "operator/kube/api_status.h"
#include "operator/kube/watch_stream.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view input(reinterpret_cast<const char*>(data), size);
  // The first byte picks the chunk size, so that events are cut at varied places.
  const size_t step = size == 0 ? 1 : 1 + data[0] % 64;
  tunnelmesh::kube::WatchLineSplitter splitter(4096);
  const auto on_line = [](std::string_view line) {
    absl::StatusOr<tunnelmesh::kube::WatchEvent> event = tunnelmesh::kube::ParseWatchEvent(line);
    if (event.ok() && event->type == "ERROR") {
      (void)tunnelmesh::kube::StatusFromApiStatus(event->object, 200, "WATCH /fuzz");
    }
    return absl::OkStatus();
  };
  for (size_t at = 0; at < input.size(); at += step) {
    (void)splitter.Feed(input.substr(at, step), on_line);
  }
  (void)splitter.Finish(on_line);
  (void)tunnelmesh::kube::StatusFromResponse(size == 0 ? 500 : 400 + data[0] % 200, input,
                                             "GET /fuzz");
  return 0;
}
