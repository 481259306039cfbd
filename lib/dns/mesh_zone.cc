#include "lib/dns/mesh_zone.h"

#include "absl/strings/str_cat.h"

namespace tunnelmesh {

std::shared_ptr<const dns::Zone> BuildMeshZone(const MeshZoneInput& input) {
  dns::ZoneConfig config;
  config.domain = input.domain.empty() ? "mesh" : input.domain;
  config.ttl = input.ttl;
  config.negative_ttl = input.negative_ttl;
  config.version = input.version;
  config.ranges = input.ranges;
  config.server_name =
      absl::StrCat(input.server_label.empty() ? "ns" : input.server_label, ".", config.domain);
  config.server_addresses = input.server_addresses;
  std::vector<dns::ZoneMember> members;
  members.reserve(input.members.size());
  for (const MeshZoneInput::Member& m : input.members) {
    dns::ZoneMember z{m.name, m.aliases, {}};
    for (const std::string& text : m.addresses) {
      if (absl::StatusOr<IpAddress> ip = IpAddress::Parse(text); ip.ok()) {
        z.addresses.push_back(*ip);
      }
    }
    members.push_back(std::move(z));
  }
  return std::make_shared<const dns::Zone>(std::move(config), members);
}

}  // namespace tunnelmesh
