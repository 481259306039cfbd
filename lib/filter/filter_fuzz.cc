// Fuzz target for the Filter: arbitrary bytes through Inbound and Outbound with a fixed rule set
// must never read out of bounds, crash or overfill the connection table. Besides the raw input it
// also feeds the bytes as the payload of well-formed IPv4 and IPv6 headers (protocol chosen by the
// first byte), and quoted inside an ICMP error, so the transport and quote parsers and the
// tracking paths are reached often even by the non-coverage-guided replay driver.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <memory>
#include <vector>

#include "lib/filter/filter.h"
#include "lib/filter/l4.h"
#include "lib/filter/testing/packets.h"

namespace {

using tunnelmesh::IpAddress;
using tunnelmesh::MonoTime;
using tunnelmesh::Prefix;
using namespace tunnelmesh::filter;  // NOLINT: the fuzz target's whole subject.

constexpr size_t kMaxFlows = 64;

Filter& TheFilter() {
  static Filter* filter = [] {
    auto* f = new Filter(Options{.max_flows = kMaxFlows});
    RuleSet rs;
    rs.policies = {"web", "deny", "ping6"};
    rs.rules.push_back({{Prefix::Parse("10.0.0.0/8").value()},
                        {},
                        Protocol::kTcp,
                        {{80, 80}, {443, 443}},
                        Action::kAllow,
                        0});
    rs.rules.push_back({{}, {}, Protocol::kUdp, {{0, 1023}}, Action::kDeny, 1});
    rs.rules.push_back({{}, {}, Protocol::kUdp, {}, Action::kAllow, 1});
    rs.rules.push_back(
        {{Prefix::Parse("fd00::/8").value()}, {}, Protocol::kIcmp, {}, Action::kAllow, 2});
    rs.egress = {Prefix::Parse("10.9.0.0/16").value(), Prefix::Parse("fd09::/16").value()};
    f->SetRules(std::make_shared<const Matcher>(std::move(rs)));
    return f;
  }();
  return *filter;
}

void Feed(Filter& f, absl::Span<const uint8_t> packet, MonoTime now) {
  (void)f.Inbound(packet, now);
  (void)f.Outbound(packet, now);
  if (f.tracked_flows() > kMaxFlows) std::abort();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  Filter& f = TheFilter();
  static MonoTime now = MonoTime{} + std::chrono::hours(1);
  now += std::chrono::seconds(size > 0 ? data[0] % 8 : 1);
  const absl::Span<const uint8_t> input(data, size);
  Feed(f, input, now);
  if (size == 0) return 0;

  static const uint8_t kProtocols[] = {kIpProtoTcp, kIpProtoUdp, kIpProtoIcmp, kIpProtoIcmpv6,
                                       0,           43,          44,           60};
  const uint8_t protocol = kProtocols[data[0] % 8];
  const bool v6 = (data[0] >> 3) & 1;
  const bool egress = (data[0] >> 4) & 1;
  const IpAddress a = testing::Ip(v6 ? "fd00::1" : "10.0.0.1");
  const IpAddress b =
      testing::Ip(v6 ? (egress ? "fd09::2" : "fd00::2") : (egress ? "10.9.0.2" : "10.0.0.2"));
  const std::vector<uint8_t> payload(data + 1, data + size);
  const uint16_t fragment = (data[0] >> 5) == 7 && size > 2 ? uint16_t{data[1]} : 0;
  const std::vector<uint8_t> inner = testing::IpPacket(a, b, protocol, payload, fragment);
  Feed(f, inner, now);
  const std::vector<uint8_t> reverse = testing::IpPacket(b, a, protocol, payload, fragment);
  Feed(f, reverse, now);
  Feed(f, testing::Unreachable(b, a, inner), now);
  return 0;
}
