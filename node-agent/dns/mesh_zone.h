// The zone an agent serves, from what its control thread knows: the mesh's settings (domain,
// TTLs), the map's version, the mesh ranges, this member and its peers.
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
  // This member first, then its peers; addresses as text (unparsable ones are skipped).
  struct Member {
    std::string name;
    std::vector<std::string> aliases;
    std::vector<std::string> addresses;
  };
  std::vector<Member> members;
  // The addresses this agent's server answers on: the NS record's glue.
  std::vector<IpAddress> server_addresses;
};

std::shared_ptr<const dns::Zone> BuildMeshZone(const MeshZoneInput& input);

}  // namespace tunnelmesh
