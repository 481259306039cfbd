// A mesh's zone from the network map as text: the mesh's settings (domain, TTLs), the map's
// version, the mesh ranges and its members. The agent builds it from its own map (itself first,
// then its peers), the operator's central server from the coordinator's state, one per Mesh.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "lib/dns/zone.h"
#include "lib/net/ip.h"

namespace tunnelmesh {

struct MeshZoneInput {
  std::string domain;  // Empty: "mesh".
  uint32_t ttl = 5;
  uint32_t negative_ttl = 5;
  uint64_t version = 0;
  std::vector<Prefix> ranges;
  // Addresses as text (unparsable ones are skipped).
  struct Member {
    std::string name;
    std::vector<std::string> aliases;
    std::vector<std::string> addresses;

    bool operator==(const Member&) const = default;
  };
  std::vector<Member> members;
  // The NS record's target, a label under the domain: an agent names itself; empty: "ns".
  std::string server_label;
  // The addresses the server answers on: the NS record's glue.
  std::vector<IpAddress> server_addresses;

  bool operator==(const MeshZoneInput&) const = default;
};

std::shared_ptr<const dns::Zone> BuildMeshZone(const MeshZoneInput& input);

}  // namespace tunnelmesh
