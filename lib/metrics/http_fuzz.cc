// Fuzz target: the /metrics endpoint's request-head parser on arbitrary bytes, as a client sends
// them. It must never read out of bounds, a complete head must name a token method and an
// origin-form target, and every parse must lead to a response that serializes.
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>

#include "lib/metrics/http.h"

using namespace tunnelmesh::metrics;

namespace {

void Check(bool condition) {
  if (!condition) std::abort();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  // Half the inputs start with a valid request line, so the header parser runs often.
  std::string input(reinterpret_cast<const char*>(data), size);
  if (size > 0 && data[0] % 2 == 0) input = "GET /metrics HTTP/1.1\r\n" + input.substr(1);
  const size_t limit = size > 1 ? 16 + data[size - 1] * 64u : kMaxRequestHead;
  const ParsedHead head = ParseRequestHead(input, limit);
  if (head.state == HeadState::kComplete) {
    Check(!head.request.method.empty() && !head.request.target.empty());
    Check(head.request.target[0] == '/');
    Check(head.head_size <= input.size() && head.head_size <= limit);
  }
  if (head.state == HeadState::kTooLarge) Check(input.size() >= limit);
  if (head.state == HeadState::kIncomplete) Check(input.size() < limit);
  const HttpResponse response =
      Answer(head, "/metrics", [] { return std::optional<std::string>("x 1\n"); });
  const std::string bytes = SerializeResponse(response);
  Check(bytes.rfind("HTTP/1.1 ", 0) == 0);
  Check(response.status == 200 || head.state != HeadState::kComplete ||
        TargetPath(head.request.target) != "/metrics" ||
        (head.request.method != "GET" && head.request.method != "HEAD"));
  return 0;
}
