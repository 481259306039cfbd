// Kubeconfig files are user input: any text must parse or fail with a status, never crash or
// throw. Files named in it are "read" from a fake that knows one CA.
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "operator/kube/config.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  const tunnelmesh::kube::ReadFileFunction read_file =
      [](const std::string& path) -> absl::StatusOr<std::string> {
    if (path == "/fuzz/ca.crt") return std::string("CA");
    return absl::NotFoundError("cannot read " + path);
  };
  (void)tunnelmesh::kube::ParseKubeconfig(text, "/fuzz/config", read_file);
  return 0;
}
