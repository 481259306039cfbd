// For fuzz targets of parsers that take JSON objects from the cluster: random bytes are rarely
// JSON, so ShapeJson turns them into (at most 24) edits of a well-formed `base` object instead.
// Each 3-byte group picks one of `paths` (JSON pointers), a value shape (string, number, list,
// null, map, boolean) and a length of input bytes for the string. Header-only; no exceptions escape
// (an edit whose parent is not a container is skipped).
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "nlohmann/json.hpp"

namespace tunnelmesh::testing {

inline nlohmann::json ShapeJson(nlohmann::json base, const std::vector<std::string>& paths,
                                const uint8_t* data, size_t size) {
  if (paths.empty()) return base;
  // At most 24 edits: each one copies the object, and long inputs would only repeat them.
  for (size_t i = 0; i + 2 < size && i < 24 * 3; i += 3) {
    const std::string& path = paths[data[i] % paths.size()];
    const size_t len = std::min<size_t>(data[i + 2] % 48, size - i - 3);
    const std::string text(reinterpret_cast<const char*>(data + i + 3), len);
    nlohmann::json value;
    switch (data[i + 1] % 6) {
      case 0:
        value = text;
        break;
      case 1:
        value = static_cast<int64_t>(data[i + 2]) - 100;
        break;
      case 2:
        value = nlohmann::json::array({text});
        break;
      case 3:
        value = nullptr;
        break;
      case 4:
        value = nlohmann::json::object({{text, text}});
        break;
      default:
        value = data[i + 2] % 2 == 0;
        break;
    }
    nlohmann::json patch =
        nlohmann::json::array({{{"op", "add"}, {"path", path}, {"value", std::move(value)}}});
    try {
      base = base.patch(patch);
    } catch (const nlohmann::json::exception&) {
      // The path's parent is not a container now: skip this edit.
    }
  }
  return base;
}

}  // namespace tunnelmesh::testing
