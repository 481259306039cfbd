// pod_churn_bench: what pods joining and leaving cost the coordinator (docs/benchmarks.md, "Pod
// churn"). An in-process Coordinator (members kept in memory, so that the store's I/O, which is
// the API server's in Kubernetes, does not hide the coordinator's own work) with H hosts that each
// hold an open watch, drained by a thread as an agent's stream would be. Each round attaches P pods
// spread over the hosts, then detaches them all; every attach and detach fans the host's Peer and
// the pod's out to every watcher and recompiles the affected rule sets under one PeerPolicy whose
// `from` selects half of them by a label (every host filters for them). The baseline in the same
// run: as many members with keys of their own (laptops, the same labels, so the same policy work)
// registering and leaving: the operations pods are compared against.
//
//   pod_churn_bench [--hosts 50] [--pods 200] [--rounds 7]
//
// Prints per round and the medians: microseconds per attach, detach, registration and leave.
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "operator/coordinator/coordinator.h"
#include "operator/coordinator/testing/coordinator_fixtures.h"
#include "operator/coordinator/testing/fake_member_store.h"

namespace tunnelmesh {
namespace {

using Clock = std::chrono::steady_clock;

double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

double MicrosSince(Clock::time_point start, int ops) {
  return std::chrono::duration<double, std::micro>(Clock::now() - start).count() / ops;
}

int Run(int hosts, int pods, int rounds) {
  InitCrypto();
  FakeMemberStore store;
  Coordinator::Options options;
  options.pod_calls_per_member = {.rate = 1e9, .burst = 1e9};
  options.registrations_per_source = {.rate = 1e9, .burst = 1e9};
  options.hellos_per_source = {.rate = 1e9, .burst = 1e9};
  options.quarantine = absl::ZeroDuration();
  options.pod_quarantine = absl::ZeroDuration();
  Coordinator c(&store, options);
  c.SetMeshes(Meshes(MeshManifest(16)));
  absl::StatusOr<PeerPolicySpec> policy = ParsePeerPolicy(nlohmann::json::parse(R"({
    "apiVersion": "tunnelmesh.io/v1alpha1", "kind": "PeerPolicy", "metadata": {"name": "ci"},
    "spec": {"mesh": "demo", "action": "Allow",
             "from": [{"peerSelector": {"matchLabels": {"role": "runner"}}}],
             "to": [{"kinds": ["Node"]}]}})"));
  if (!policy.ok()) return 1;
  c.SetPolicies({*policy});

  std::vector<PublicKey> keys;
  std::vector<std::shared_ptr<Subscription>> subs;
  for (int i = 0; i < hosts; ++i) {
    keys.push_back(NewKey());
    coord::RegisterRequest r = Request(keys.back(), "node-" + std::to_string(i));
    r.set_kind(coord::MEMBER_KIND_NODE);
    if (!RegisterAs(c, r).ok()) return 1;
    subs.push_back(*c.Watch(keys.back()));
  }
  std::atomic<bool> stop{false};
  std::atomic<uint64_t> drained{0};
  std::thread drainer([&] {
    coord::MapUpdate u;
    while (!stop.load()) {
      for (auto& sub : subs) {
        while (sub->Next(&u, absl::ZeroDuration())) drained.fetch_add(1);
      }
      std::this_thread::sleep_for(std::chrono::microseconds(200));
    }
  });

  std::vector<double> attach, detach, join, leave;
  for (int round = 0; round < rounds; ++round) {
    auto start = Clock::now();
    for (int p = 0; p < pods; ++p) {
      coord::AttachPodRequest r;
      r.mutable_pod()->set_namespace_("ci");
      r.mutable_pod()->set_name("runner-" + std::to_string(p));
      r.mutable_pod()->set_uid("r" + std::to_string(round) + "-" + std::to_string(p));
      (*r.mutable_labels())["role"] = p % 2 == 0 ? "runner" : "cache";
      if (!c.AttachPod(keys[p % hosts], r).ok()) return 1;
    }
    attach.push_back(MicrosSince(start, pods));
    start = Clock::now();
    for (int p = 0; p < pods; ++p) {
      coord::DetachPodRequest r;
      r.mutable_pod()->set_namespace_("ci");
      r.mutable_pod()->set_name("runner-" + std::to_string(p));
      if (!c.DetachPod(keys[p % hosts], r).ok()) return 1;
    }
    detach.push_back(MicrosSince(start, pods));
    // The baseline: members joining with their own keys, then leaving.
    std::vector<PublicKey> laptops;
    for (int p = 0; p < pods; ++p) laptops.push_back(NewKey());
    start = Clock::now();
    for (int p = 0; p < pods; ++p) {
      coord::RegisterRequest r = Request(laptops[p], "laptop-" + std::to_string(p));
      (*r.mutable_labels())["role"] = p % 2 == 0 ? "runner" : "cache";
      if (!RegisterAs(c, r).ok()) return 1;
    }
    join.push_back(MicrosSince(start, pods));
    start = Clock::now();
    for (const PublicKey& k : laptops) (void)c.Leave(k);
    leave.push_back(MicrosSince(start, pods));
    std::printf(
        "round %d: attach %.1f us, detach %.1f us, register %.1f us, leave %.1f us (per "
        "operation)\n",
        round + 1, attach.back(), detach.back(), join.back(), leave.back());
  }
  stop.store(true);
  drainer.join();
  std::printf(
      "hosts=%d pods=%d rounds=%d median: attach %.1f us, detach %.1f us; baseline register %.1f "
      "us, leave %.1f us; attach/register %.2f, detach/leave %.2f; updates drained %llu\n",
      hosts, pods, rounds, Median(attach), Median(detach), Median(join), Median(leave),
      Median(attach) / Median(join), Median(detach) / Median(leave),
      static_cast<unsigned long long>(drained.load()));
  return 0;
}

}  // namespace
}  // namespace tunnelmesh

int main(int argc, char** argv) {
  int hosts = 50, pods = 200, rounds = 7;
  for (int i = 1; i + 1 < argc; i += 2) {
    const int value = std::atoi(argv[i + 1]);
    if (value <= 0) {
      std::fprintf(stderr, "%s needs a positive number\n", argv[i]);
      return 2;
    }
    if (std::strcmp(argv[i], "--hosts") == 0) {
      hosts = value;
    } else if (std::strcmp(argv[i], "--pods") == 0) {
      pods = value;
    } else if (std::strcmp(argv[i], "--rounds") == 0) {
      rounds = value;
    } else {
      std::fprintf(stderr, "unknown flag %s (--hosts N, --pods N, --rounds N)\n", argv[i]);
      return 2;
    }
  }
  if (argc % 2 == 0) {
    std::fprintf(stderr, "usage: pod_churn_bench [--hosts N] [--pods N] [--rounds N]\n");
    return 2;
  }
  return tunnelmesh::Run(hosts, pods, rounds);
}
