// Fuzz target for the WireGuard socket's framer and parser (node-agent/uapi/uapi_protocol.h):
// anything a local client sends must end in a request, a refusal or "need more bytes", never a
// crash. The input is fed in pieces whose sizes come from the input itself, so that lines split
// across reads are exercised too.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "node-agent/uapi/uapi_protocol.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const size_t chunk = 1 + data[0] % 64;
  std::string_view input(reinterpret_cast<const char*>(data + 1), size - 1);
  tunnelmesh::uapi::RequestFramer framer;
  while (!input.empty()) {
    const std::string_view piece = input.substr(0, chunk);
    input.remove_prefix(piece.size());
    framer.Feed(piece);
    while (true) {
      auto lines = framer.Next();
      if (!lines.ok()) return 0;
      if (!lines->has_value()) break;
      (void)tunnelmesh::uapi::ParseRequest(**lines);
    }
  }
  return 0;
}
