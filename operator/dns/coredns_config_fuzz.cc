// Fuzz target: the Corefile comes from the cluster (anyone allowed to edit the ConfigMap
// kube-system/coredns). Whatever the bytes, editing it never crashes, and the promises of
// coredns_config.h hold: refusals are kFailedPrecondition, an applied region is applied again
// without a change, and removing it gives back the text (when it had a final line break and no
// region of ours).
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>

#include "operator/dns/coredns_config.h"

namespace {

using tunnelmesh::Prefix;
using namespace tunnelmesh::coredns;

constexpr char kRelease[] = "ns/rel";

void Check(bool condition) {
  if (!condition) std::abort();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  // The first byte picks whether the input gets our markers spliced in, so that the region
  // handling runs often, not only the scan.
  std::string corefile(reinterpret_cast<const char*>(data), size);
  if (size > 0 && data[0] % 4 == 0) {
    const size_t at = corefile.size() / 2;
    corefile.insert(at, "\n" + BeginMarker(kRelease) + "\nx {\n}\n" + EndMarker(kRelease) + "\n");
  }
  (void)TopLevelZones(corefile);
  static const std::vector<ServerBlock> blocks =
      PlanServerBlocks({{"mesh", {*Prefix::Parse("10.99.0.0/16"), *Prefix::Parse("fd99:99::/48")}},
                        {"corp.example", {*Prefix::Parse("10.98.0.0/15")}}});
  absl::StatusOr<CorefileEdit> applied =
      ApplyMarkedRegion(corefile, kRelease, blocks, "10.96.0.20:53");
  absl::StatusOr<CorefileEdit> removed = RemoveMarkedRegion(corefile, kRelease);
  if (!removed.ok()) Check(removed.status().code() == absl::StatusCode::kFailedPrecondition);
  if (!applied.ok()) {
    Check(applied.status().code() == absl::StatusCode::kFailedPrecondition);
    return 0;
  }
  absl::StatusOr<CorefileEdit> again =
      ApplyMarkedRegion(applied->corefile, kRelease, blocks, "10.96.0.20:53");
  Check(again.ok() && !again->changed);
  const bool had_region = corefile.find("release ns/rel") != std::string::npos;
  if (!had_region && (corefile.empty() || corefile.back() == '\n')) {
    absl::StatusOr<CorefileEdit> back = RemoveMarkedRegion(applied->corefile, kRelease);
    Check(back.ok() && back->corefile == corefile);
  }
  return 0;
}
