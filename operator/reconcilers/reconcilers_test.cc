// Each reconciler over the fake API server (kube/testing/fake_api.h) with a real informer and the
// real Coordinator: Reconcile(key) is called directly, then the objects' status and the
// coordinator's state are checked. The wiring of all four (Manager) is covered at the end.
#include <functional>

#include "absl/strings/escaping.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "lib/crypto/keys.h"
#include "operator/kube/conditions.h"
#include "operator/kube/object.h"
#include "operator/kube/testing/fake_api.h"
#include "operator/reconcilers/manager.h"
#include "operator/reconcilers/mesh_reconciler.h"
#include "operator/reconcilers/meshpeer_reconciler.h"
#include "operator/reconcilers/node_gc.h"
#include "operator/reconcilers/policy_reconciler.h"
#include "operator/store/meshpeer_store.h"

namespace tunnelmesh {
namespace {

using kube::testing::FakeApi;

constexpr char kToken[] = "a long random string";

bool WaitFor(const std::function<bool()>& condition) {
  const absl::Time deadline = absl::Now() + absl::Seconds(10);
  while (!condition()) {
    if (absl::Now() > deadline) return false;
    absl::SleepFor(absl::Milliseconds(2));
  }
  return true;
}

nlohmann::json MeshObject(const std::string& name, const std::string& cidr = "10.99.0.0/16") {
  return {{"apiVersion", "tunnelmesh.io/v1alpha1"},
          {"kind", "Mesh"},
          {"metadata", {{"name", name}}},
          {"spec",
           {{"ipv4CIDR", cidr},
            {"joinTokenSecretRef", {{"namespace", "tm"}, {"name", name + "-join"}}}}}};
}

nlohmann::json SecretObject(const std::string& mesh) {
  return {{"apiVersion", "v1"},
          {"kind", "Secret"},
          {"metadata", {{"namespace", "tm"}, {"name", mesh + "-join"}}},
          {"data", {{"token", absl::Base64Escape(kToken)}}}};
}

nlohmann::json PeerObject(const std::string& name, const std::string& mesh, const PublicKey& key,
                          const std::string& kind = "External") {
  return {{"apiVersion", "tunnelmesh.io/v1alpha1"},
          {"kind", "MeshPeer"},
          {"metadata", {{"name", name}, {"labels", {{"role", "ci"}}}}},
          {"spec", {{"mesh", mesh}, {"kind", kind}, {"publicKey", key.ToBase64()}}}};
}

MeshSpec Spec(const std::string& name) {
  MeshSpec spec;
  spec.name = name;
  spec.ipv4_cidr = *Prefix::Parse("10.99.0.0/16");
  spec.join_token_ref = {"tm", name + "-join", "token"};
  spec.join_token = kToken;
  return spec;
}

// The Ready condition of the object as the API server has it.
struct Ready {
  std::string status, reason, message;
};

class ReconcilerTest : public ::testing::Test {
 protected:
  void SetUp() override { InitCrypto(); }

  // An informer over the fake, started and synced.
  std::unique_ptr<kube::Informer> Watch(const kube::Resource& resource) {
    auto informer = std::make_unique<kube::Informer>(&api_, resource, kube::Informer::Handlers{},
                                                     kube::Informer::Options{});
    informer->Start();
    EXPECT_TRUE(WaitFor([&] { return informer->HasSynced(); }));
    return informer;
  }

  // Waits until `informer` holds the object's current resourceVersion (or its absence).
  void CatchUp(const kube::Informer& informer, const kube::Resource& resource,
               const std::string& name) {
    absl::StatusOr<nlohmann::json> live = api_.Get(resource, "", name);
    const std::string rv = live.ok() ? kube::MetadataString(*live, "resourceVersion") : "";
    ASSERT_TRUE(WaitFor([&] {
      std::optional<nlohmann::json> cached = informer.Find("", name);
      return live.ok() ? cached && kube::MetadataString(*cached, "resourceVersion") == rv
                       : !cached.has_value();
    })) << name;
  }

  // Creates MeshPeer `name` (mesh demo) with `key`, reconciles it into the coordinator and waits
  // until the addresses it got are written back.
  void AdmitFromObject(MeshPeerReconciler& reconciler, const kube::Informer& peers,
                       const std::string& name, const PublicKey& key) {
    ASSERT_TRUE(api_.Create(kube::kMeshPeers, "", PeerObject(name, "demo", key)).ok());
    CatchUp(peers, kube::kMeshPeers, name);
    ASSERT_TRUE(reconciler.Reconcile(name).ok());
    ASSERT_TRUE(coordinator_.IsMember(key));
    ASSERT_TRUE(coordinator_.FlushStore(absl::Seconds(10)));  // its meshIPs are written, behind
  }

  Ready ReadyOf(const kube::Resource& resource, const std::string& name) {
    absl::StatusOr<nlohmann::json> object = api_.Get(resource, "", name);
    if (!object.ok()) return {"gone", "", ""};
    const nlohmann::json status = kube::ObjectStatus(*object);
    const nlohmann::json* c = kube::FindCondition(status, "Ready");
    if (c == nullptr) return {};
    return {kube::StringAt(*c, "status"), kube::StringAt(*c, "reason"),
            kube::StringAt(*c, "message")};
  }

  FakeApi api_;
  kube::EventRecorder events_{&api_, "test", "default"};
  KubeMemberStore store_{&api_};
  Coordinator coordinator_{&store_, Coordinator::Options{}};
};

TEST_F(ReconcilerTest, MeshWithAndWithoutItsSecret) {
  auto meshes = Watch(kube::kMeshes);
  MeshReconciler reconciler(&api_, &events_, &coordinator_, meshes.get(), {});
  ASSERT_TRUE(api_.Create(kube::kMeshes, "", MeshObject("demo")).ok());
  CatchUp(*meshes, kube::kMeshes, "demo");
  ASSERT_TRUE(reconciler.Reconcile("demo").ok());
  Ready ready = ReadyOf(kube::kMeshes, "demo");
  EXPECT_EQ(ready.status, "False");
  EXPECT_EQ(ready.reason, "SecretNotFound");
  EXPECT_NE(ready.message.find("tm/demo-join"), std::string::npos) << ready.message;
  EXPECT_EQ(reconciler.mesh_count(), 0u);

  ASSERT_TRUE(api_.Create(kube::kSecrets, "tm", SecretObject("demo")).ok());
  CatchUp(*meshes, kube::kMeshes, "demo");  // the status write came back
  absl::StatusOr<Result> result = reconciler.Reconcile("demo");
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_GT(result->requeue_after, absl::ZeroDuration()) << "the Secret is re-read later";
  ready = ReadyOf(kube::kMeshes, "demo");
  EXPECT_EQ(ready.status, "True") << ready.message;
  EXPECT_EQ(ready.reason, "Serving");
  EXPECT_EQ(reconciler.mesh_count(), 1u);
  absl::StatusOr<nlohmann::json> object = api_.Get(kube::kMeshes, "", "demo");
  EXPECT_EQ((*object)["metadata"]["finalizers"], nlohmann::json({kMeshFinalizer}));
  EXPECT_EQ((*object)["status"]["memberCount"], 0);
  // A member can now register against it: the coordinator serves the mesh with its token.
  EXPECT_TRUE(coordinator_.MembersOf("demo").empty());
}

TEST_F(ReconcilerTest, MeshWithABadCidrSaysWhichField) {
  auto meshes = Watch(kube::kMeshes);
  MeshReconciler reconciler(&api_, &events_, &coordinator_, meshes.get(), {});
  ASSERT_TRUE(api_.Create(kube::kSecrets, "tm", SecretObject("bad")).ok());
  ASSERT_TRUE(api_.Create(kube::kMeshes, "", MeshObject("bad", "10.99.0.0/31")).ok());
  CatchUp(*meshes, kube::kMeshes, "bad");
  ASSERT_TRUE(reconciler.Reconcile("bad").ok());
  Ready ready = ReadyOf(kube::kMeshes, "bad");
  EXPECT_EQ(ready.status, "False");
  EXPECT_EQ(ready.reason, "InvalidSpec");
  EXPECT_NE(ready.message.find("spec.ipv4CIDR"), std::string::npos) << ready.message;
  EXPECT_EQ(reconciler.mesh_count(), 0u);
  events_.Flush();
  EXPECT_GE(api_.CallCount("create", "events"), 1) << "a Warning Event says it too";
}

TEST_F(ReconcilerTest, DeletedMeshLosesItsMembersThenItsFinalizer) {
  auto meshes = Watch(kube::kMeshes);
  MeshReconciler reconciler(&api_, &events_, &coordinator_, meshes.get(), {});
  ASSERT_TRUE(api_.Create(kube::kSecrets, "tm", SecretObject("demo")).ok());
  ASSERT_TRUE(api_.Create(kube::kMeshes, "", MeshObject("demo")).ok());
  CatchUp(*meshes, kube::kMeshes, "demo");
  ASSERT_TRUE(reconciler.Reconcile("demo").ok());
  MemberRecord member;
  member.public_key = DerivePublicKey(SecretKey::GeneratePrivate());
  member.mesh = "demo";
  member.name = "laptop";
  member.kind = static_cast<decltype(member.kind)>(coord::MEMBER_KIND_EXTERNAL);
  // Admitted from its MeshPeer (Admit updates the object, never creates it).
  ASSERT_TRUE(api_.Create(kube::kMeshPeers, "", MeshPeerFor(member)).ok());
  ASSERT_TRUE(coordinator_.Admit(member).ok());
  ASSERT_EQ(coordinator_.MembersOf("demo").size(), 1u);
  ASSERT_TRUE(coordinator_.FlushStore(absl::Seconds(10)));  // Admit writes behind.
  ASSERT_TRUE(api_.Get(kube::kMeshPeers, "", "laptop").ok()) << "the store wrote its MeshPeer";

  ASSERT_TRUE(api_.Delete(kube::kMeshes, "", "demo").ok());
  ASSERT_TRUE(api_.Get(kube::kMeshes, "", "demo").ok()) << "held by the finalizer";
  CatchUp(*meshes, kube::kMeshes, "demo");
  ASSERT_TRUE(reconciler.Reconcile("demo").ok());
  EXPECT_TRUE(coordinator_.MembersOf("demo").empty());
  EXPECT_TRUE(absl::IsNotFound(api_.Get(kube::kMeshPeers, "", "laptop").status()));
  EXPECT_TRUE(absl::IsNotFound(api_.Get(kube::kMeshes, "", "demo").status()));
  CatchUp(*meshes, kube::kMeshes, "demo");
  ASSERT_TRUE(reconciler.Reconcile("demo").ok());
  EXPECT_EQ(reconciler.mesh_count(), 0u);
}

TEST_F(ReconcilerTest, MeshPeerAdmissionAndStatus) {
  coordinator_.SetMeshes({Spec("demo")});
  auto peers = Watch(kube::kMeshPeers);
  MeshPeerReconciler reconciler(&api_, &events_, &coordinator_, peers.get(), {});
  const PublicKey key = DerivePublicKey(SecretKey::GeneratePrivate());
  nlohmann::json object = PeerObject("laptop", "demo", key);
  object["spec"]["endpoints"] = {"198.51.100.7:51820"};
  ASSERT_TRUE(api_.Create(kube::kMeshPeers, "", object).ok());
  CatchUp(*peers, kube::kMeshPeers, "laptop");
  absl::StatusOr<Result> result = reconciler.Reconcile("laptop");
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_GT(result->requeue_after, absl::ZeroDuration()) << "connection state is polled";
  ASSERT_EQ(coordinator_.MembersOf("demo"), std::vector<PublicKey>{key});
  ASSERT_TRUE(coordinator_.FlushStore(absl::Seconds(10)));  // the store's meshIPs write, behind
  CatchUp(*peers, kube::kMeshPeers, "laptop");
  ASSERT_TRUE(reconciler.Reconcile("laptop").ok());
  absl::StatusOr<nlohmann::json> written = api_.Get(kube::kMeshPeers, "", "laptop");
  ASSERT_TRUE(written.ok());
  const nlohmann::json& status = (*written)["status"];
  ASSERT_EQ(status["meshIPs"].size(), 1u) << status.dump();
  EXPECT_EQ(status["meshIPs"][0].get<std::string>().rfind("10.99.", 0), 0u);
  EXPECT_EQ(status["endpoints"], nlohmann::json({"198.51.100.7:51820"}));
  EXPECT_EQ(status["pathSummary"], "no agent");
  Ready ready = ReadyOf(kube::kMeshPeers, "laptop");
  EXPECT_EQ(ready.status, "True");
  EXPECT_EQ(ready.reason, "Admitted");
  // Nothing changed: another reconcile writes nothing.
  CatchUp(*peers, kube::kMeshPeers, "laptop");
  api_.ClearCalls();
  ASSERT_TRUE(reconciler.Reconcile("laptop").ok());
  EXPECT_EQ(api_.CallCount("patch"), 0);
}

TEST_F(ReconcilerTest, MeshPeerInvalidSpecAndMeshNotFound) {
  coordinator_.SetMeshes({Spec("demo")});
  auto peers = Watch(kube::kMeshPeers);
  MeshPeerReconciler reconciler(&api_, &events_, &coordinator_, peers.get(), {});
  ASSERT_TRUE(api_.Create(kube::kMeshPeers, "",
                          PeerObject("toaster", "demo",
                                     DerivePublicKey(SecretKey::GeneratePrivate()), "Toaster"))
                  .ok());
  ASSERT_TRUE(
      api_.Create(kube::kMeshPeers, "",
                  PeerObject("lost", "nowhere", DerivePublicKey(SecretKey::GeneratePrivate())))
          .ok());
  CatchUp(*peers, kube::kMeshPeers, "toaster");
  CatchUp(*peers, kube::kMeshPeers, "lost");
  ASSERT_TRUE(reconciler.Reconcile("toaster").ok());
  ASSERT_TRUE(reconciler.Reconcile("lost").ok());
  Ready invalid = ReadyOf(kube::kMeshPeers, "toaster");
  EXPECT_EQ(invalid.status, "False");
  EXPECT_EQ(invalid.reason, "InvalidSpec");
  EXPECT_NE(invalid.message.find("spec.kind"), std::string::npos);
  Ready lost = ReadyOf(kube::kMeshPeers, "lost");
  EXPECT_EQ(lost.status, "False");
  EXPECT_EQ(lost.reason, "MeshNotFound");
  EXPECT_TRUE(coordinator_.Members().empty());
}

TEST_F(ReconcilerTest, DeletedMeshPeerEvictsItsMember) {
  coordinator_.SetMeshes({Spec("demo")});
  auto peers = Watch(kube::kMeshPeers);
  MeshPeerReconciler reconciler(&api_, &events_, &coordinator_, peers.get(), {});
  const PublicKey key = DerivePublicKey(SecretKey::GeneratePrivate());
  AdmitFromObject(reconciler, *peers, "laptop", key);
  ASSERT_TRUE(api_.Delete(kube::kMeshPeers, "", "laptop").ok());
  CatchUp(*peers, kube::kMeshPeers, "laptop");
  ASSERT_TRUE(reconciler.Reconcile("laptop").ok());
  EXPECT_FALSE(coordinator_.IsMember(key));
}

// A member that leaves while a reconcile still reads its MeshPeer from the cache (its deletion is
// queued behind a slow API server) is not admitted again, and the deletion lands.
TEST_F(ReconcilerTest, MemberThatLeftIsNotBroughtBackByAStaleMeshPeer) {
  coordinator_.SetMeshes({Spec("demo")});
  auto peers = Watch(kube::kMeshPeers);
  MeshPeerReconciler reconciler(&api_, &events_, &coordinator_, peers.get(), {});
  const PublicKey key = DerivePublicKey(SecretKey::GeneratePrivate());
  AdmitFromObject(reconciler, *peers, "laptop", key);
  CatchUp(*peers, kube::kMeshPeers, "laptop");
  api_.SetLatency(absl::Milliseconds(300));
  ASSERT_TRUE(coordinator_.Leave(key).ok());
  ASSERT_TRUE(peers->Find("", "laptop").has_value()) << "the cache still holds the MeshPeer";
  ASSERT_TRUE(reconciler.Reconcile("laptop").ok());
  EXPECT_FALSE(coordinator_.IsMember(key)) << "admitted again from a stale object";
  api_.SetLatency(absl::ZeroDuration());
  ASSERT_TRUE(coordinator_.FlushStore(absl::Seconds(10)));
  EXPECT_TRUE(absl::IsNotFound(api_.Get(kube::kMeshPeers, "", "laptop").status()))
      << "the queued deletion was turned into a write";
  EXPECT_FALSE(coordinator_.IsMember(key));
}

TEST_F(ReconcilerTest, MeshPeerMissingFromTheCacheIsCheckedWithTheServer) {
  coordinator_.SetMeshes({Spec("demo")});
  auto peers = Watch(kube::kMeshPeers);
  MeshPeerReconciler reconciler(&api_, &events_, &coordinator_, peers.get(), {});
  MemberRecord member;
  member.public_key = DerivePublicKey(SecretKey::GeneratePrivate());
  member.mesh = "demo";
  member.name = "fresh";
  member.kind = static_cast<decltype(member.kind)>(coord::MEMBER_KIND_EXTERNAL);
  // Admitted from its MeshPeer; the store writes the addresses it allocated, behind.
  ASSERT_TRUE(api_.Create(kube::kMeshPeers, "", MeshPeerFor(member)).ok());
  ASSERT_TRUE(coordinator_.Admit(member).ok());
  ASSERT_TRUE(coordinator_.FlushStore(absl::Seconds(10)));
  // Whatever the informer has seen, the object exists: the member stays.
  ASSERT_TRUE(reconciler.Reconcile("fresh").ok());
  EXPECT_TRUE(coordinator_.IsMember(member.public_key));
  // A server that cannot be asked is an error (retried), never an eviction.
  ASSERT_TRUE(api_.Delete(kube::kMeshPeers, "", "fresh").ok());
  CatchUp(*peers, kube::kMeshPeers, "fresh");
  api_.FailNext("get", "meshpeers", absl::UnavailableError("injected"));
  EXPECT_FALSE(reconciler.Reconcile("fresh").ok());
  EXPECT_TRUE(coordinator_.IsMember(member.public_key));
  ASSERT_TRUE(reconciler.Reconcile("fresh").ok());
  EXPECT_FALSE(coordinator_.IsMember(member.public_key));
}

// The events the recorder wrote with `reason`, as "TYPE: message".
std::vector<std::string> EventsWith(FakeApi& api, const std::string& reason) {
  std::vector<std::string> out;
  absl::StatusOr<nlohmann::json> list = api.List(kube::kEvents, "default");
  if (!list.ok()) return out;
  for (const nlohmann::json& e : (*list)["items"]) {
    if (kube::StringAt(e, "reason") != reason) continue;
    out.push_back(kube::StringAt(e, "type") + ": " + kube::StringAt(e, "message"));
  }
  return out;
}

TEST_F(ReconcilerTest, MeshPeerListsPeerPathsAndEventsSayWhenOneChanges) {
  Coordinator::Options options;
  options.reports_per_member = {.rate = 1000, .burst = 1000};
  Coordinator coordinator(&store_, std::move(options));
  coordinator.SetMeshes({Spec("demo")});
  auto peers = Watch(kube::kMeshPeers);
  MeshPeerReconciler reconciler(&api_, &events_, &coordinator, peers.get(),
                                {.members_max_age = absl::ZeroDuration()});
  std::map<std::string, PublicKey> keys;
  for (const std::string name : {"laptop", "server", "builder"}) {
    keys[name] = DerivePublicKey(SecretKey::GeneratePrivate());
    ASSERT_TRUE(api_.Create(kube::kMeshPeers, "", PeerObject(name, "demo", keys[name])).ok());
    CatchUp(*peers, kube::kMeshPeers, name);
    ASSERT_TRUE(reconciler.Reconcile(name).ok());
  }
  ASSERT_TRUE(coordinator.FlushStore(absl::Seconds(10)));
  absl::StatusOr<std::shared_ptr<Subscription>> watch = coordinator.Watch(keys["laptop"]);
  ASSERT_TRUE(watch.ok()) << watch.status();
  auto report = [&](coord::PathKind server, coord::PathKind builder) {
    ASSERT_TRUE(coordinator
                    .ReportEndpoints(keys["laptop"], {}, {},
                                     {{keys["server"], server}, {keys["builder"], builder}})
                    .ok());
  };
  auto status = [&] {
    CatchUp(*peers, kube::kMeshPeers, "laptop");
    EXPECT_TRUE(reconciler.Reconcile("laptop").ok());
    events_.Flush();
    return (*api_.Get(kube::kMeshPeers, "", "laptop"))["status"];
  };
  report(coord::PATH_KIND_DIRECT, coord::PATH_KIND_RELAY);
  nlohmann::json got = status();
  EXPECT_EQ(got["peerPaths"], nlohmann::json::parse(R"([{"peer": "builder", "path": "relay"},
                                                        {"peer": "server", "path": "direct"}])"))
      << got.dump();
  EXPECT_FALSE(got.contains("peerPathsNotListed"));
  EXPECT_TRUE(EventsWith(api_, "PathChanged").empty()) << "first paths are no change";
  // server falls back to the relay (worse: Warning), then comes back (better: Normal).
  report(coord::PATH_KIND_RELAY, coord::PATH_KIND_RELAY);
  got = status();
  EXPECT_EQ(got["peerPaths"][1]["path"], "relay");
  EXPECT_EQ(EventsWith(api_, "PathChanged"),
            std::vector<std::string>{"Warning: The path to server changed from direct to relay."});
  report(coord::PATH_KIND_DIRECT, coord::PATH_KIND_SSH);
  status();
  EXPECT_THAT(
      EventsWith(api_, "PathChanged"),
      ::testing::UnorderedElementsAre("Warning: The path to server changed from direct to relay.",
                                      "Normal: The path to server changed from relay to direct.",
                                      "Normal: The path to builder changed from relay to ssh."));
  // Many changes between two looks: a few Events (repeats fold into one), and one that counts
  // the rest.
  for (int i = 0; i < 8; ++i) {
    report(i % 2 == 0 ? coord::PATH_KIND_RELAY : coord::PATH_KIND_DIRECT, coord::PATH_KIND_SSH);
  }
  status();
  EXPECT_THAT(EventsWith(api_, "PathChanged"),
              ::testing::Contains(
                  "Normal: 3 more path changes happened since the last look; status.peerPaths "
                  "shows the paths now."));
  // A member whose agent is gone lists no paths.
  (*watch)->Cancel(absl::CancelledError("test"));
  watch->reset();
  got = status();
  EXPECT_FALSE(got.contains("peerPaths")) << got.dump();
}

TEST_F(ReconcilerTest, PeerPolicyAcceptedOrInvalid) {
  auto meshes = Watch(kube::kMeshes);
  auto policies = Watch(kube::kPeerPolicies);
  PolicyReconciler reconciler(&api_, &events_, &coordinator_, policies.get(), meshes.get());
  ASSERT_TRUE(api_.Create(kube::kMeshes, "", MeshObject("demo")).ok());
  CatchUp(*meshes, kube::kMeshes, "demo");
  nlohmann::json good = {
      {"metadata", {{"name", "runners-to-git"}}},
      {"spec",
       {{"mesh", "demo"},
        {"action", "Allow"},
        {"from", {{{"peerSelector", {{"matchLabels", {{"role", "ci-runner"}}}}}}}},
        {"to", {{{"peerSelector", {{"matchLabels", {{"app", "git"}}}}}}}},
        {"ports", {{{"protocol", "TCP"}, {"port", 22}}}}}}};
  nlohmann::json bad = good;
  bad["metadata"]["name"] = "bad";
  bad["spec"]["action"] = "Maybe";
  nlohmann::json orphan = good;
  orphan["metadata"]["name"] = "orphan";
  orphan["spec"]["mesh"] = "nowhere";
  for (const nlohmann::json& p : {good, bad, orphan}) {
    ASSERT_TRUE(api_.Create(kube::kPeerPolicies, "", p).ok());
    CatchUp(*policies, kube::kPeerPolicies, kube::ObjectName(p));
    ASSERT_TRUE(reconciler.Reconcile(kube::ObjectName(p)).ok());
  }
  EXPECT_EQ(ReadyOf(kube::kPeerPolicies, "runners-to-git").reason, "Accepted");
  EXPECT_EQ(ReadyOf(kube::kPeerPolicies, "runners-to-git").status, "True");
  Ready invalid = ReadyOf(kube::kPeerPolicies, "bad");
  EXPECT_EQ(invalid.status, "False");
  EXPECT_EQ(invalid.reason, "InvalidSpec");
  EXPECT_NE(invalid.message.find("spec.action"), std::string::npos);
  EXPECT_EQ(ReadyOf(kube::kPeerPolicies, "orphan").reason, "MeshNotFound");
  EXPECT_EQ(coordinator_.policy_count(), 1u);
  ASSERT_TRUE(api_.Delete(kube::kPeerPolicies, "", "runners-to-git").ok());
  CatchUp(*policies, kube::kPeerPolicies, "runners-to-git");
  ASSERT_TRUE(reconciler.Reconcile("runners-to-git").ok());
  EXPECT_EQ(coordinator_.policy_count(), 0u);
}

TEST_F(ReconcilerTest, PeerPolicyStatusSaysWhatItSelectsAndCompiledTo) {
  auto meshes = Watch(kube::kMeshes);
  auto policies = Watch(kube::kPeerPolicies);
  PolicyReconciler reconciler(&api_, &events_, &coordinator_, policies.get(), meshes.get());
  ASSERT_TRUE(api_.Create(kube::kMeshes, "", MeshObject("demo")).ok());
  CatchUp(*meshes, kube::kMeshes, "demo");
  nlohmann::json policy = {
      {"metadata", {{"name", "ci-to-git"}}},
      {"spec",
       {{"mesh", "demo"},
        {"action", "Allow"},
        {"from", {{{"peerSelector", {{"matchLabels", {{"role", "ci"}}}}}}}},
        {"to", {{{"names", {"git"}}}}},
        {"ports", {{{"protocol", "TCP"}, {"port", 22}}, {{"protocol", "ICMP"}}}}}}};
  ASSERT_TRUE(api_.Create(kube::kPeerPolicies, "", policy).ok());
  CatchUp(*policies, kube::kPeerPolicies, "ci-to-git");
  auto condition = [&](const std::string& type) -> std::pair<std::string, std::string> {
    absl::StatusOr<nlohmann::json> object = api_.Get(kube::kPeerPolicies, "", "ci-to-git");
    if (!object.ok()) return {};
    const nlohmann::json status = kube::ObjectStatus(*object);
    const nlohmann::json* c = kube::FindCondition(status, type);
    if (c == nullptr) return {};
    return {kube::StringAt(*c, "status"), kube::StringAt(*c, "reason")};
  };
  auto field = [&](const std::string& key) -> int64_t {
    absl::StatusOr<nlohmann::json> object = api_.Get(kube::kPeerPolicies, "", "ci-to-git");
    if (!object.ok()) return -1;
    return kube::ObjectStatus(*object).value(key, int64_t{-1});
  };

  // The coordinator does not serve the Mesh yet: accepted, not compiled, looked at again soon.
  absl::StatusOr<Result> result = reconciler.Reconcile("ci-to-git");
  ASSERT_TRUE(result.ok());
  EXPECT_EQ(result->requeue_after, PolicyReconciler::kPendingRetry);
  EXPECT_EQ(ReadyOf(kube::kPeerPolicies, "ci-to-git").reason, "Accepted");
  EXPECT_EQ(condition("Compiled"), (std::pair<std::string, std::string>{"False", "Pending"}));

  // Served, but no member matches either side.
  coordinator_.SetMeshes({Spec("demo")});
  CatchUp(*policies, kube::kPeerPolicies, "ci-to-git");
  result = reconciler.Reconcile("ci-to-git");
  ASSERT_TRUE(result.ok());
  EXPECT_EQ(result->requeue_after, PolicyReconciler::kResync);
  EXPECT_EQ(condition("Compiled"), (std::pair<std::string, std::string>{"True", "Compiled"}));
  EXPECT_EQ(condition("SelectsNothing"),
            (std::pair<std::string, std::string>{"True", "NoSources"}));
  EXPECT_EQ(field("compiledRules"), 0);

  // Two runners and git join: both sides select, git holds one rule per protocol.
  for (const auto& [name, role] : std::vector<std::pair<std::string, std::string>>{
           {"runner-1", "ci"}, {"runner-2", "ci"}, {"git", "scm"}}) {
    MemberRecord record;
    record.public_key = DerivePublicKey(SecretKey::GeneratePrivate());
    record.mesh = "demo";
    record.name = name;
    record.labels = {{"role", role}};
    ASSERT_TRUE(coordinator_.Admit(record).ok());
  }
  CatchUp(*policies, kube::kPeerPolicies, "ci-to-git");
  ASSERT_TRUE(reconciler.Reconcile("ci-to-git").ok());
  EXPECT_EQ(condition("SelectsNothing"),
            (std::pair<std::string, std::string>{"False", "Selected"}));
  EXPECT_EQ(field("selectedSources"), 2);
  EXPECT_EQ(field("selectedDestinations"), 1);
  EXPECT_EQ(field("compiledRules"), 2);
  EXPECT_TRUE(coordinator_.FlushStore(absl::Seconds(10)));
}

TEST_F(ReconcilerTest, DeletedNodeRemovesItsMember) {
  coordinator_.SetMeshes({Spec("demo")});
  auto nodes = Watch(kube::kNodes);
  NodeGarbageCollector gc(&api_, &coordinator_, nodes.get());
  ASSERT_TRUE(api_.Create(kube::kNodes, "", {{"metadata", {{"name", "node-a"}}}}).ok());
  CatchUp(*nodes, kube::kNodes, "node-a");
  MemberRecord member;
  member.public_key = DerivePublicKey(SecretKey::GeneratePrivate());
  member.mesh = "demo";
  member.name = "node-a";
  member.kind = static_cast<decltype(member.kind)>(coord::MEMBER_KIND_NODE);
  member.labels = {{kNodeLabel, "node-a"}};
  ASSERT_TRUE(coordinator_.Admit(member).ok());
  EXPECT_EQ(gc.NodeNames(), std::vector<std::string>{"node-a"});
  ASSERT_TRUE(gc.Reconcile("node-a").ok());
  EXPECT_TRUE(coordinator_.IsMember(member.public_key)) << "its Node exists";
  ASSERT_TRUE(api_.Delete(kube::kNodes, "", "node-a").ok());
  CatchUp(*nodes, kube::kNodes, "node-a");
  ASSERT_TRUE(gc.Reconcile("node-a").ok());
  EXPECT_FALSE(coordinator_.IsMember(member.public_key));
  ASSERT_TRUE(coordinator_.FlushStore(absl::Seconds(10)));  // the MeshPeer is deleted behind
  EXPECT_TRUE(absl::IsNotFound(api_.Get(kube::kMeshPeers, "", "node-a").status()));
}

TEST(ManagerTest, WiresTheKindsTogether) {
  InitCrypto();
  FakeApi api;
  kube::EventRecorder events(&api, "test", "default");
  KubeMemberStore store(&api);
  ASSERT_TRUE(api.Create(kube::kSecrets, "tm", SecretObject("demo")).ok());
  ASSERT_TRUE(api.Create(kube::kMeshes, "", MeshObject("demo")).ok());
  const PublicKey key = DerivePublicKey(SecretKey::GeneratePrivate());
  ASSERT_TRUE(api.Create(kube::kMeshPeers, "", PeerObject("laptop", "demo", key)).ok());
  Manager::Options options;
  options.watch.min_backoff = absl::Milliseconds(1);
  Manager manager(&api, &events, &store, options);
  std::atomic<bool> stop{false};
  ASSERT_TRUE(manager.Start(stop));
  // Start reconciled the existing objects before returning: the mesh is served, the peer admitted.
  EXPECT_EQ(manager.mesh_count(), 1u);
  EXPECT_TRUE(manager.coordinator().IsMember(key));
  // Reconciles are counted and timed per controller.
  uint64_t reconciles = 0;
  for (const Controller* c : manager.controllers()) {
    const uint64_t done = c->stats().succeeded.load() + c->stats().failed.load();
    EXPECT_GE(c->stats().seconds.Take().count, done) << c->name();  // Observed, then counted.
    reconciles += done;
  }
  EXPECT_GE(reconciles, 2u) << "at least the Mesh and the MeshPeer";
  // Then events drive it: the MeshPeer deleted, its member goes.
  ASSERT_TRUE(api.Delete(kube::kMeshPeers, "", "laptop").ok());
  EXPECT_TRUE(WaitFor([&] { return !manager.coordinator().IsMember(key); }));
  manager.Stop();
}

}  // namespace
}  // namespace tunnelmesh
