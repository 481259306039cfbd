#include "operator/kube/watch_stream.h"

#include <string>

#include "operator/kube/api_status.h"

namespace tunnelmesh::kube {

absl::Status WatchLineSplitter::Feed(std::string_view chunk,
                                     const std::function<absl::Status(std::string_view)>& on_line) {
  while (!chunk.empty()) {
    const size_t newline = chunk.find('\n');
    const std::string_view piece = chunk.substr(0, newline);
    if (partial_.size() + piece.size() > max_line_) {
      partial_.clear();
      return absl::ResourceExhaustedError("watch event longer than " + std::to_string(max_line_) +
                                          " bytes");
    }
    if (newline == std::string_view::npos) {
      partial_.append(piece);
      return absl::OkStatus();
    }
    chunk.remove_prefix(newline + 1);
    std::string_view line = piece;
    if (!partial_.empty()) {
      partial_.append(piece);
      line = partial_;
    }
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    absl::Status status = line.empty() ? absl::OkStatus() : on_line(line);
    partial_.clear();  // after the call: `line` may point into it
    if (!status.ok()) return status;
  }
  return absl::OkStatus();
}

absl::Status WatchLineSplitter::Finish(
    const std::function<absl::Status(std::string_view)>& on_line) {
  if (partial_.empty()) return absl::OkStatus();
  std::string last;
  last.swap(partial_);
  return on_line(last);
}

absl::StatusOr<WatchEvent> ParseWatchEvent(std::string_view line) {
  nlohmann::json parsed = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
  if (parsed.is_discarded()) {
    return absl::InvalidArgumentError("watch event is not JSON: " + Printable(line, 120));
  }
  if (!parsed.is_object()) {
    return absl::InvalidArgumentError("watch event is not a JSON object: " + Printable(line, 120));
  }
  auto type = parsed.find("type");
  if (type == parsed.end() || !type->is_string()) {
    return absl::InvalidArgumentError("watch event has no string field \"type\": " +
                                      Printable(line, 120));
  }
  auto object = parsed.find("object");
  if (object == parsed.end() || !object->is_object()) {
    return absl::InvalidArgumentError("watch event has no object field \"object\": " +
                                      Printable(line, 120));
  }
  WatchEvent event;
  event.type = type->get<std::string>();
  if (event.type != "ADDED" && event.type != "MODIFIED" && event.type != "DELETED" &&
      event.type != "BOOKMARK" && event.type != "ERROR") {
    return absl::InvalidArgumentError("watch event of unknown type \"" + Printable(event.type, 40) +
                                      "\"");
  }
  event.object = std::move(*object);
  return event;
}

}  // namespace tunnelmesh::kube
