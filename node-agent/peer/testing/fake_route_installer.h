// A RouteInstaller that records the routes it is given, for PeerTable and agent unit tests.
#pragma once

#include <vector>

#include "node-agent/peer/peer_table.h"

namespace tunnelmesh {

class FakeRouteInstaller final : public RouteInstaller {
 public:
  absl::Status ReplaceRoutes(absl::Span<const Prefix> prefixes) override {
    ++calls;
    routes.assign(prefixes.begin(), prefixes.end());
    return fail_with;
  }
  std::vector<Prefix> routes;
  int calls = 0;
  absl::Status fail_with;  // Returned by every call (OK by default).
};

}  // namespace tunnelmesh
