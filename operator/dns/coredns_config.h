// The cluster's CoreDNS configuration as the operator keeps it: in the Corefile (key `Corefile` of
// the ConfigMap kube-system/coredns), one server block per mesh domain that forwards the domain,
// and the reverse zones of the meshes' ranges, to the operator's DNS Service, all between two
// marker comment lines that name the Helm release:
//
//   # BEGIN tunnelmesh release tunnelmesh/tunnelmesh: managed by tunnelmesh-operator ...
//   mesh:53 99.10.in-addr.arpa:53 {
//       errors
//       cache 5
//       forward . 10.96.0.20:53
//   }
//   # END tunnelmesh release tunnelmesh/tunnelmesh
//
// Pure functions on text, no I/O (the reconciler in coredns_config_reconciler.h reads and writes
// the ConfigMap). What they promise:
//   - every byte outside the markers stays as it was; a new marked region goes at the end (after a
//     line break added only when the text does not end with one), an existing one is replaced
//     where it stands, so a user may move it;
//   - Apply is idempotent, and RemoveMarkedRegion after Apply gives back the text as it was
//     (with a final line break);
//   - zones that a server block outside the markers already serves on port 53 are left out of
//     ours (CoreDNS refuses a configuration that defines a zone twice) and listed in `skipped`;
//   - markers that do not pair up (a BEGIN without its END, two BEGINs, an END first), a marked
//     region inside another block, or (when there is no region yet) a text that ends inside a
//     block are kFailedPrecondition, and the text is not touched: a person must look at it.
//
// The Corefile is text anyone allowed to edit the ConfigMap wrote; the scan of its top-level
// server block keys (Caddyfile syntax: tokens, "quoted strings", # comments, { } nesting) is
// bounds-checked and fuzzed (coredns_config_fuzz.cc).
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "lib/net/ip.h"

namespace tunnelmesh::coredns {

// What one Mesh contributes: its domain and its address ranges.
struct MeshZones {
  std::string domain;          // Empty: "mesh".
  std::vector<Prefix> ranges;  // IPv4 and IPv6.
};

// One server block of ours: the zones it forwards, the mesh domain first.
struct ServerBlock {
  std::vector<std::string> zones;

  bool operator==(const ServerBlock&) const = default;
};

// The zone under in-addr.arpa or ip6.arpa holding the PTR names of `range`, rounded down to the
// enclosing octet (IPv4) or nibble (IPv6) boundary, since only whole labels can be zones:
// 10.99.0.0/16 -> "99.10.in-addr.arpa", 10.99.0.0/20 -> "99.10.in-addr.arpa", fd99:99::/48 ->
// "0.0.0.0.9.9.0.0.9.9.d.f.ip6.arpa". nullopt when that is all of in-addr.arpa or ip6.arpa (IPv4
// shorter than /8, IPv6 shorter than /4): forwarding every reverse lookup of the cluster to the
// mesh would break the cluster's own PTR records.
std::optional<std::string> ReverseZone(const Prefix& range);

// The server blocks for `meshes`: one per distinct domain (sorted), each with the domain and the
// reverse zones of the ranges of the meshes with that domain. A zone appears once, in the first
// block that has it. Domains are lower-cased, without a final dot.
std::vector<ServerBlock> PlanServerBlocks(const std::vector<MeshZones>& meshes);

// The marker lines of `release` ("NAMESPACE/NAME" of the Helm release), without line breaks.
std::string BeginMarker(std::string_view release);
std::string EndMarker(std::string_view release);

// The marked region: the markers and `blocks`, each forwarding to `upstream` ("10.96.0.20:53"),
// lines ending in `newline`. Empty when `blocks` is empty.
std::string RenderRegion(std::string_view release, const std::vector<ServerBlock>& blocks,
                         std::string_view upstream, std::string_view newline = "\n");

struct CorefileEdit {
  std::string corefile;  // The new text.
  bool changed = false;  // It differs from the old one.
  // Zones left out because a server block outside our markers serves them already.
  std::vector<std::string> skipped;
};

// Makes the marked region of `release` hold `blocks` forwarding to `upstream`; with no blocks
// (or none left after skipping taken zones) the region is removed.
[[nodiscard]] absl::StatusOr<CorefileEdit> ApplyMarkedRegion(std::string_view corefile,
                                                             std::string_view release,
                                                             const std::vector<ServerBlock>& blocks,
                                                             std::string_view upstream);

// Removes the marked region of `release`, markers included; unchanged when there is none.
[[nodiscard]] absl::StatusOr<CorefileEdit> RemoveMarkedRegion(std::string_view corefile,
                                                              std::string_view release);

// The zones (lower-case, without a final dot) that top-level server blocks of `corefile` serve on
// port 53 ("mesh", "mesh:53", "dns://mesh.:53", an octet-aligned "10.99.0.0/16" as its reverse
// zone); keys with another port or transport (tls://, grpc://, https://) and snippets are left
// out. Best effort on text that is not a valid Corefile: it never fails.
std::vector<std::string> TopLevelZones(std::string_view corefile);

}  // namespace tunnelmesh::coredns
