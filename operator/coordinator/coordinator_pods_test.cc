// Pods as members: attach (sticky addresses, the host's allowed IPs, names, DNS), detach, sync,
// the host leaving, persistence across a restart, Kubernetes checks through lookup_pod, and
// per-pod PeerPolicy verdicts enforced by the host.
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "operator/coordinator/coordinator.h"
#include "operator/coordinator/testing/coordinator_fixtures.h"

namespace tunnelmesh {
namespace {

coord::AttachPodRequest Pod(const std::string& ns, const std::string& name, const std::string& uid,
                            const std::string& app = "") {
  coord::AttachPodRequest r;
  r.mutable_pod()->set_namespace_(ns);
  r.mutable_pod()->set_name(name);
  r.mutable_pod()->set_uid(uid);
  if (!app.empty()) (*r.mutable_labels())["app"] = app;
  return r;
}

// Every peer of the queued updates, by name (the last version of each).
std::map<std::string, coord::Peer> Peers(Subscription* sub, std::vector<std::string>* removed) {
  std::map<std::string, coord::Peer> out;
  coord::MapUpdate u;
  while (sub->Next(&u, absl::Milliseconds(20))) {
    for (const coord::Peer& p : u.upsert_peers()) out[p.name()] = p;
    if (removed != nullptr) {
      for (const std::string& key : u.removed_peers()) removed->push_back(key);
    }
  }
  return out;
}

std::vector<std::string> AllowedIps(const coord::Peer& peer) {
  return {peer.allowed_ips().begin(), peer.allowed_ips().end()};
}

class CoordinatorPodsTest : public ::testing::Test {
 protected:
  void SetUp() override { InitCrypto(); }
  void Start(Coordinator::Options options = {}) {
    c_.reset();
    if (!store_) store_ = *StateStore::Open(dir_);
    c_ = std::make_unique<Coordinator>(store_.get(), std::move(options));
    c_->SetMeshes(Meshes(MeshManifest(24)));
  }
  std::shared_ptr<Subscription> Join(const PublicKey& key, const std::string& name,
                                     coord::MemberKind kind = coord::MEMBER_KIND_EXTERNAL) {
    coord::RegisterRequest r = Request(key, name);
    r.set_kind(kind);
    auto registered = RegisterAs(*c_, r);
    EXPECT_TRUE(registered.ok()) << registered.status();
    auto sub = c_->Watch(key);
    EXPECT_TRUE(sub.ok());
    coord::MapUpdate full;
    EXPECT_TRUE((*sub)->Next(&full, absl::Milliseconds(100)));
    return *sub;
  }

  std::string dir_ = TempDir();
  std::unique_ptr<StateStore> store_;
  std::unique_ptr<Coordinator> c_;
  PublicKey node_a_ = NewKey(), node_b_ = NewKey();
};

TEST_F(CoordinatorPodsTest, AttachedPodIsReachedThroughItsHost) {
  Start();
  auto a = Join(node_a_, "node-a");
  auto b = Join(node_b_, "node-b");
  auto attached = c_->AttachPod(node_a_, Pod("ci", "runner-1", "uid-1", "runner"));
  ASSERT_TRUE(attached.ok()) << attached.status();
  EXPECT_TRUE(attached->attached());
  EXPECT_EQ(attached->name(), "runner-1.ci.pod");
  ASSERT_EQ(attached->mesh_ips_size(), 2);
  EXPECT_EQ(attached->mesh_ips(0), "10.99.0.3");
  ASSERT_EQ(attached->mesh_cidrs_size(), 2);
  EXPECT_EQ(attached->mesh_cidrs(0), "10.99.0.0/24");

  // Node b learns the pod (no key, no endpoints, its host named) and node a's new allowed IPs.
  std::map<std::string, coord::Peer> seen = Peers(b.get(), nullptr);
  ASSERT_TRUE(seen.count("runner-1.ci.pod"));
  const coord::Peer& pod = seen["runner-1.ci.pod"];
  EXPECT_EQ(pod.kind(), coord::MEMBER_KIND_POD);
  EXPECT_EQ(pod.dns_name(), "runner-1.ci.pod.mesh");
  EXPECT_EQ(pod.host_public_key(),
            std::string(reinterpret_cast<const char*>(node_a_.bytes.data()), 32));
  EXPECT_TRUE(pod.allowed_ips().empty());
  EXPECT_TRUE(pod.endpoints().empty());
  EXPECT_EQ(pod.labels().at("app"), "runner");
  ASSERT_TRUE(seen.count("node-a"));
  EXPECT_EQ(AllowedIps(seen["node-a"]),
            (std::vector<std::string>{"10.99.0.1/32", "fd99:99::1/128", "10.99.0.3/32",
                                      "fd99:99::3/128"}));
  // The host hears of its pod (for its DNS), not of itself.
  std::map<std::string, coord::Peer> own = Peers(a.get(), nullptr);
  EXPECT_TRUE(own.count("runner-1.ci.pod"));
  EXPECT_FALSE(own.count("node-a"));

  // Attaching again answers the same addresses and sends nothing.
  auto again = c_->AttachPod(node_a_, Pod("ci", "runner-1", "uid-1", "runner"));
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(again->mesh_ips(0), "10.99.0.3");
  EXPECT_TRUE(Peers(b.get(), nullptr).empty());

  // The central DNS zone has the pod's name.
  bool found = false;
  for (const MeshZoneInput& zone : c_->DnsZones()) {
    for (const auto& m : zone.members) found = found || m.name == "runner-1.ci.pod";
  }
  EXPECT_TRUE(found);

  // Detach: the pod goes, node a's allowed IPs shrink, its address is quarantined briefly.
  auto detached = c_->DetachPod(node_a_, [] {
    coord::DetachPodRequest r;
    r.mutable_pod()->set_namespace_("ci");
    r.mutable_pod()->set_name("runner-1");
    return r;
  }());
  ASSERT_TRUE(detached.ok());
  EXPECT_TRUE(detached->detached());
  std::vector<std::string> removed;
  seen = Peers(b.get(), &removed);
  EXPECT_EQ(removed.size(), 1u);
  EXPECT_EQ(AllowedIps(seen["node-a"]),
            (std::vector<std::string>{"10.99.0.1/32", "fd99:99::1/128"}));
  EXPECT_EQ(c_->member_count(), 2u);
  auto next = c_->AttachPod(node_a_, Pod("ci", "runner-2", "uid-2"));
  ASSERT_TRUE(next.ok());
  EXPECT_EQ(next->mesh_ips(0), "10.99.0.4") << "the departed pod's address is quarantined";
}

TEST_F(CoordinatorPodsTest, ALateMeshPeerEventDoesNotBringADetachedPodBack) {
  Start();
  auto a = Join(node_a_, "node-a");
  ASSERT_TRUE(c_->AttachPod(node_a_, Pod("ci", "runner-1", "uid-1", "runner")).ok());
  MemberRecord pod;
  for (const MemberStatus& m : c_->Members()) {
    if (m.record.pod) pod = m.record;
  }
  ASSERT_TRUE(pod.pod.has_value());
  EXPECT_TRUE(c_->Admit(pod).ok()) << "the informer's echo of an attached pod is no change";
  coord::DetachPodRequest detach;
  *detach.mutable_pod() = Pod("ci", "runner-1", "uid-1", "runner").pod();
  ASSERT_TRUE(c_->DetachPod(node_a_, detach).ok());
  // The MeshPeer's creation reaches the informer only now.
  absl::Status late = c_->Admit(pod);
  EXPECT_EQ(late.code(), absl::StatusCode::kFailedPrecondition) << late;
  for (const MemberStatus& m : c_->Members()) EXPECT_FALSE(m.record.pod.has_value());
  ASSERT_TRUE(c_->FlushStore(absl::Seconds(5)));
  EXPECT_EQ(store_->members().count(pod.public_key), 0u)
      << "the delete was not turned into a write";
}

TEST_F(CoordinatorPodsTest, RejectsBadPodsWithTheField) {
  Start();
  Join(node_a_, "node-a");
  auto bad_ns = c_->AttachPod(node_a_, Pod("Not_A_Label", "p", "u"));
  ASSERT_FALSE(bad_ns.ok());
  EXPECT_NE(std::string(bad_ns.status().message()).find("namespace"), std::string::npos);
  auto bad_uid = c_->AttachPod(node_a_, Pod("ci", "p", "has space"));
  ASSERT_FALSE(bad_uid.ok());
  EXPECT_NE(std::string(bad_uid.status().message()).find("uid"), std::string::npos);
  auto bad_label = Pod("ci", "p", "u");
  (*bad_label.mutable_labels())["bad key!"] = "x";
  EXPECT_FALSE(c_->AttachPod(node_a_, bad_label).ok());
  EXPECT_FALSE(c_->AttachPod(NewKey(), Pod("ci", "p", "u")).ok()) << "not a member";
  EXPECT_EQ(c_->member_count(), 1u);
}

TEST_F(CoordinatorPodsTest, PodsSurviveRestartsAndGoWithTheirHost) {
  Start();
  Join(node_a_, "node-a");
  ASSERT_TRUE(c_->AttachPod(node_a_, Pod("ci", "runner-1", "uid-1")).ok());
  ASSERT_TRUE(c_->AttachPod(node_a_, Pod("ci", "runner-2", "uid-2")).ok());
  ASSERT_TRUE(c_->FlushStore(absl::Seconds(5)));
  // A restart (a new store read from members.json): the pods and their addresses are back.
  c_.reset();
  store_.reset();
  Start();
  EXPECT_EQ(c_->member_count(), 3u);
  auto b = Join(node_b_, "node-b");
  // SyncPods states node a's pods: runner-2 only. runner-1 goes; runner-2 keeps its address.
  auto registered = RegisterAs(*c_, Request(node_a_, "node-a"));
  ASSERT_TRUE(registered.ok());
  coord::SyncPodsRequest sync;
  *sync.add_pods() = Pod("ci", "runner-2", "uid-2");
  auto synced = c_->SyncPods(node_a_, sync);
  ASSERT_TRUE(synced.ok()) << synced.status();
  ASSERT_EQ(synced->pods_size(), 1);
  EXPECT_EQ(synced->pods(0).mesh_ips(0), "10.99.0.3");
  ASSERT_EQ(synced->detached_size(), 1);
  EXPECT_EQ(synced->detached(0).name(), "runner-1");
  EXPECT_EQ(c_->member_count(), 3u);
  // The host leaves: its pods go with it.
  ASSERT_TRUE(c_->Leave(node_a_).ok());
  EXPECT_EQ(c_->member_count(), 1u);
}

TEST_F(CoordinatorPodsTest, ASyncOfManyPodsIsOneCallOfTheRateLimit) {
  Coordinator::Options options;
  options.pod_calls_per_member = {.rate = 1, .burst = 5};
  Start(std::move(options));
  Join(node_a_, "node-a");
  coord::SyncPodsRequest sync;
  for (int i = 0; i < 100; ++i) {
    *sync.add_pods() = Pod("ci", "runner-" + std::to_string(i), "u" + std::to_string(i));
  }
  auto synced = c_->SyncPods(node_a_, sync);
  ASSERT_TRUE(synced.ok()) << synced.status();
  ASSERT_EQ(synced->pods_size(), 100);
  for (const coord::AttachPodResponse& pod : synced->pods()) EXPECT_TRUE(pod.attached());
  EXPECT_EQ(c_->member_count(), 101u);
  // Single attaches count one each: 4 more fit the burst of 5, the next one does not.
  for (int i = 0; i < 4; ++i) {
    const std::string n = std::to_string(i);
    ASSERT_TRUE(c_->AttachPod(node_a_, Pod("ci", "runner-" + n, "u" + n)).ok());
  }
  EXPECT_EQ(c_->AttachPod(node_a_, Pod("ci", "runner-9", "u9")).status().code(),
            absl::StatusCode::kResourceExhausted);
}

TEST_F(CoordinatorPodsTest, NewIncarnationReplacesTheOldOne) {
  Start();
  Join(node_a_, "node-a");
  Join(node_b_, "node-b");
  ASSERT_TRUE(c_->AttachPod(node_a_, Pod("db", "db-0", "uid-old")).ok());
  // The StatefulSet pod comes back on node b with a new uid; node a never said DEL.
  auto moved = c_->AttachPod(node_b_, Pod("db", "db-0", "uid-new"));
  ASSERT_TRUE(moved.ok());
  EXPECT_EQ(c_->member_count(), 3u);
  for (const MemberStatus& m : c_->Members()) {
    if (m.record.pod) {
      EXPECT_EQ(m.record.pod->host, node_b_);
    }
  }
}

TEST_F(CoordinatorPodsTest, KubernetesAsksTheApiServer) {
  PodFacts facts;
  facts.node = "node-a";
  facts.uid = "uid-1";
  facts.labels = {{"app", "runner"}, {"tunnelmesh.io/node", "forged"}};
  facts.mesh_annotation = "demo";
  facts.namespace_labels = {{"kubernetes.io/metadata.name", "ci"}, {"team", "build"}};
  Coordinator::Options options;
  options.lookup_pod = [&facts](const std::string& ns,
                                const std::string& name) -> absl::StatusOr<PodFacts> {
    if (ns != "ci" || name != "runner-1") return absl::NotFoundError("no such pod");
    return facts;
  };
  Start(std::move(options));
  Join(node_a_, "node-a", coord::MEMBER_KIND_NODE);
  Join(node_b_, "laptop");

  auto ok = c_->AttachPod(node_a_, Pod("ci", "runner-1", "uid-1", "ignored"));
  ASSERT_TRUE(ok.ok()) << ok.status();
  EXPECT_TRUE(ok->attached());
  for (const MemberStatus& m : c_->Members()) {
    if (!m.record.pod) continue;
    EXPECT_EQ(m.record.labels, (std::map<std::string, std::string>{{"app", "runner"}}))
        << "labels come from the API server, and tunnelmesh.io/ keys are the coordinator's";
    EXPECT_EQ(m.record.pod->namespace_labels.at("team"), "build");
  }
  // Not a Node, another Node's pod, a stale uid, a missing pod: refused, naming why.
  auto laptop = c_->AttachPod(node_b_, Pod("ci", "runner-1", "uid-1"));
  ASSERT_FALSE(laptop.ok());
  EXPECT_NE(std::string(laptop.status().message()).find("kind Node"), std::string::npos);
  facts.node = "node-z";
  auto elsewhere = c_->AttachPod(node_a_, Pod("ci", "runner-1", "uid-1"));
  ASSERT_FALSE(elsewhere.ok());
  EXPECT_NE(std::string(elsewhere.status().message()).find("node-z"), std::string::npos);
  facts.node = "node-a";
  EXPECT_EQ(c_->AttachPod(node_a_, Pod("ci", "runner-1", "uid-0")).status().code(),
            absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(c_->AttachPod(node_a_, Pod("ci", "nope", "uid-1")).status().code(),
            absl::StatusCode::kNotFound);
  // Not opted in, or opted in to another mesh: attached=false with the reason, no error.
  facts.mesh_annotation = "";
  auto plain = c_->AttachPod(node_a_, Pod("ci", "runner-1", "uid-1"));
  ASSERT_TRUE(plain.ok());
  EXPECT_FALSE(plain->attached());
  EXPECT_NE(plain->reason().find("tunnelmesh.io/mesh"), std::string::npos);
  facts.mesh_annotation = "other";
  auto other = c_->AttachPod(node_a_, Pod("ci", "runner-1", "uid-1"));
  ASSERT_TRUE(other.ok());
  EXPECT_FALSE(other->attached());
  EXPECT_NE(other->reason().find("\"other\""), std::string::npos);
}

TEST_F(CoordinatorPodsTest, HostEnforcesPolicyPerPodAddress) {
  Start();
  Join(node_a_, "node-a");
  Join(node_b_, "node-b");
  ASSERT_TRUE(c_->AttachPod(node_a_, Pod("ci", "runner", "u1", "runner")).ok());
  ASSERT_TRUE(c_->AttachPod(node_a_, Pod("ci", "other", "u2", "other")).ok());
  auto git = c_->AttachPod(node_b_, Pod("infra", "git", "u3", "git"));
  ASSERT_TRUE(git.ok());
  absl::StatusOr<PeerPolicySpec> policy = ParsePeerPolicy(nlohmann::json::parse(R"({
    "apiVersion": "tunnelmesh.io/v1alpha1", "kind": "PeerPolicy",
    "metadata": {"name": "runners-to-git"},
    "spec": {"mesh": "demo", "action": "Allow",
             "from": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "ci"}},
                       "podSelector": {"matchLabels": {"app": "runner"}}}],
             "to": [{"podSelector": {"matchLabels": {"app": "git"}}}]}})"));
  ASSERT_TRUE(policy.ok()) << policy.status();
  c_->SetPolicies({*policy});
  // Node b filters for its pod git: the runner pod's address is allowed, the other pod's is not.
  std::optional<coord::FilterRules> rules = c_->FilterRulesFor(node_b_);
  ASSERT_TRUE(rules.has_value());
  ASSERT_EQ(rules->rules_size(), 1);
  std::vector<std::string> sources(rules->rules(0).sources().begin(),
                                   rules->rules(0).sources().end());
  EXPECT_EQ(sources, (std::vector<std::string>{"10.99.0.3/32", "fd99:99::3/128"}));
  EXPECT_EQ(rules->rules(0).destinations(0), git->mesh_ips(0) + "/32");
  coord::ExplainRequest explain;
  explain.set_source("other.ci.pod");
  explain.set_destination("git.infra.pod");
  auto verdict = c_->Explain(node_a_, explain);
  ASSERT_TRUE(verdict.ok()) << verdict.status();
  EXPECT_EQ(verdict->action(), coord::FILTER_ACTION_DENY);
  EXPECT_EQ(verdict->enforced_by(), "node-b");
  explain.set_source("runner.ci.pod");
  verdict = c_->Explain(node_a_, explain);
  ASSERT_TRUE(verdict.ok());
  EXPECT_EQ(verdict->action(), coord::FILTER_ACTION_ALLOW);
}

}  // namespace
}  // namespace tunnelmesh
