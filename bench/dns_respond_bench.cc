// The mesh DNS server's work per query without sockets (lib/dns/responder.h): decode, answer from
// a zone, encode. What this costs is the user-space part of bench/dns_qps.sh's figures; the rest
// is the kernel's UDP path, the same for every server.
#include <cstdint>
#include <string>
#include <vector>

#include "benchmark/benchmark.h"
#include "lib/dns/mesh_zone.h"
#include "lib/dns/message.h"
#include "lib/dns/responder.h"

namespace tunnelmesh {
namespace {

// A mesh of `n` members, as an agent builds it from its map.
std::shared_ptr<const dns::Zone> MeshOf(int n) {
  MeshZoneInput input;
  input.version = 7;
  input.ranges = {Prefix::Parse("10.99.0.0/16").value(), Prefix::Parse("fd99:99::/48").value()};
  input.server_label = "m0";
  for (int i = 0; i < n; ++i) {
    input.members.push_back(
        {"m" + std::to_string(i),
         {},
         {"10.99." + std::to_string(i / 250) + "." + std::to_string(i % 250 + 1),
          "fd99:99::" + std::to_string(i + 1)}});
  }
  return BuildMeshZone(input);
}

std::vector<uint8_t> QueryBytes(const std::string& name, uint16_t type, bool edns) {
  dns::Message q;
  q.header.id = 0x4242;
  q.header.rd = true;
  q.questions.push_back({name, type, dns::kClassIn});
  if (edns) q.edns = dns::Edns{1232, 0, false};
  return *dns::Encode(q, dns::kClassicUdpSize);
}

void Run(benchmark::State& state, const std::string& name, uint16_t type, bool edns) {
  const std::shared_ptr<const dns::Zone> zone = MeshOf(static_cast<int>(state.range(0)));
  const std::vector<uint8_t> query = QueryBytes(name, type, edns);
  for (auto _ : state) {
    dns::Reply reply = dns::Respond(zone.get(), query, dns::Transport::kUdp, false);
    benchmark::DoNotOptimize(reply.bytes.data());
  }
}

void BM_RespondA(benchmark::State& state) { Run(state, "m3.mesh", dns::kTypeA, false); }
void BM_RespondAEdns(benchmark::State& state) { Run(state, "m3.mesh", dns::kTypeA, true); }
void BM_RespondNxDomain(benchmark::State& state) { Run(state, "nobody.mesh", dns::kTypeA, false); }
void BM_RespondPtr(benchmark::State& state) {
  Run(state, "4.0.99.10.in-addr.arpa", dns::kTypePtr, false);
}
BENCHMARK(BM_RespondA)->Arg(5)->Arg(1000);
BENCHMARK(BM_RespondAEdns)->Arg(5);
BENCHMARK(BM_RespondNxDomain)->Arg(5);
BENCHMARK(BM_RespondPtr)->Arg(5);

}  // namespace
}  // namespace tunnelmesh

BENCHMARK_MAIN();
