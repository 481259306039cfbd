// CorednsConfigReconciler and RemoveCorednsConfig over the fake API server
// (kube/testing/fake_api.h): what is written to the ConfigMap, when nothing is, conflicts with
// other writers, and the uninstall hook racing with the operator.
#include "operator/dns/coredns_config_reconciler.h"

#include <functional>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "operator/kube/object.h"
#include "operator/kube/testing/fake_api.h"

namespace tunnelmesh {
namespace {

using kube::testing::FakeApi;
using ::testing::HasSubstr;
using ::testing::Not;

constexpr char kCorefile[] = R"(.:53 {
    errors
    kubernetes cluster.local in-addr.arpa ip6.arpa {
       pods insecure
       fallthrough in-addr.arpa ip6.arpa
    }
    forward . /etc/resolv.conf
    cache 30
    reload
}
)";

bool WaitFor(const std::function<bool()>& condition) {
  const absl::Time deadline = absl::Now() + absl::Seconds(10);
  while (!condition()) {
    if (absl::Now() > deadline) return false;
    absl::SleepFor(absl::Milliseconds(2));
  }
  return true;
}

nlohmann::json ServiceObject(const std::string& ip = "10.96.0.20") {
  return {{"apiVersion", "v1"},
          {"kind", "Service"},
          {"metadata", {{"namespace", "tm"}, {"name", "tunnelmesh"}}},
          {"spec",
           {{"clusterIP", ip},
            {"ports",
             {{{"name", "grpc"}, {"port", 7700}, {"protocol", "TCP"}},
              {{"name", "dns-udp"}, {"port", 53}, {"protocol", "UDP"}},
              {{"name", "dns-tcp"}, {"port", 53}, {"protocol", "TCP"}}}}}}};
}

nlohmann::json ConfigMapObject(const std::string& corefile = kCorefile) {
  return {{"apiVersion", "v1"},
          {"kind", "ConfigMap"},
          {"metadata", {{"namespace", "kube-system"}, {"name", "coredns"}}},
          {"data", {{"Corefile", corefile}}}};
}

class CorednsReconcilerTest : public ::testing::Test {
 protected:
  CorednsReconcilerTest() {
    options_.target.release = "tm/tunnelmesh";
    options_.target.service_namespace = "tm";
    options_.target.service_name = "tunnelmesh";
    meshes_ = {{"mesh", {*Prefix::Parse("10.99.0.0/16")}}};
  }

  std::unique_ptr<CorednsConfigReconciler> Make() {
    return std::make_unique<CorednsConfigReconciler>(
        &api_, &events_, informer_.get(), [this] { return meshes_; }, options_);
  }

  std::string Corefile() {
    absl::StatusOr<nlohmann::json> cm = api_.Get(kube::kConfigMaps, "kube-system", "coredns");
    EXPECT_TRUE(cm.ok()) << cm.status();
    return cm.ok() ? kube::StringAt((*cm)["data"], "Corefile") : "";
  }

  void SetCorefile(const std::string& text) {
    absl::StatusOr<nlohmann::json> cm = api_.Get(kube::kConfigMaps, "kube-system", "coredns");
    ASSERT_TRUE(cm.ok());
    (*cm)["data"]["Corefile"] = text;
    ASSERT_TRUE(api_.Update(kube::kConfigMaps, "kube-system", *cm).ok());
  }

  // The Corefile with the region for `blocks` forwarding to `upstream`.
  std::string Expected(const std::vector<coredns::ServerBlock>& blocks,
                       const std::string& upstream = "10.96.0.20:53",
                       const std::string& base = kCorefile) {
    return base + coredns::RenderRegion("tm/tunnelmesh", blocks, upstream);
  }

  FakeApi api_;
  kube::EventRecorder events_{&api_, "test", "default"};
  std::unique_ptr<kube::Informer> informer_;
  CorednsConfigReconciler::Options options_;
  std::vector<coredns::MeshZones> meshes_;
};

TEST_F(CorednsReconcilerTest, WritesTheBlockOnceAndFollowsTheMeshes) {
  ASSERT_TRUE(api_.Create(kServices, "tm", ServiceObject()).ok());
  ASSERT_TRUE(api_.Create(kube::kConfigMaps, "kube-system", ConfigMapObject()).ok());
  auto reconciler = Make();
  EXPECT_EQ(reconciler->key(), "kube-system/coredns");
  absl::StatusOr<Result> result = reconciler->Reconcile(reconciler->key());
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_EQ(result->requeue_after, options_.resync_period);
  EXPECT_EQ(Corefile(), Expected(coredns::PlanServerBlocks(meshes_)));
  EXPECT_EQ(reconciler->counters().writes.load(), 1u);

  // Level-triggered: nothing changed, nothing written.
  api_.ClearCalls();
  ASSERT_TRUE(reconciler->Reconcile(reconciler->key()).ok());
  EXPECT_EQ(api_.CallCount("update", "configmaps"), 0);
  EXPECT_EQ(reconciler->counters().unchanged.load(), 1u);

  // A second Mesh with another domain: a second block.
  meshes_.push_back({"corp.example", {*Prefix::Parse("10.98.0.0/16")}});
  ASSERT_TRUE(reconciler->Reconcile(reconciler->key()).ok());
  EXPECT_EQ(Corefile(), Expected(coredns::PlanServerBlocks(meshes_)));
  EXPECT_THAT(Corefile(), HasSubstr("\ncorp.example:53 98.10.in-addr.arpa:53 {\n"));

  // The Service got another address: the forward follows.
  absl::StatusOr<nlohmann::json> svc = api_.Get(kServices, "tm", "tunnelmesh");
  (*svc)["spec"]["clusterIP"] = "fd00:96::20";
  ASSERT_TRUE(api_.Update(kServices, "tm", *svc).ok());
  ASSERT_TRUE(reconciler->Reconcile(reconciler->key()).ok());
  EXPECT_EQ(Corefile(), Expected(coredns::PlanServerBlocks(meshes_), "[fd00:96::20]:53"));

  // No meshes: no block.
  meshes_.clear();
  ASSERT_TRUE(reconciler->Reconcile(reconciler->key()).ok());
  EXPECT_EQ(Corefile(), kCorefile);
}

TEST_F(CorednsReconcilerTest, KeepsTheUsersEditsOutsideTheMarkers) {
  ASSERT_TRUE(api_.Create(kServices, "tm", ServiceObject()).ok());
  ASSERT_TRUE(api_.Create(kube::kConfigMaps, "kube-system", ConfigMapObject()).ok());
  auto reconciler = Make();
  ASSERT_TRUE(reconciler->Reconcile("").ok());
  const std::string user_block = "example.org {\n    forward . 192.0.2.53\n}\n";
  SetCorefile("# mine\n" + Corefile() + user_block);
  meshes_.push_back({"corp", {}});
  ASSERT_TRUE(reconciler->Reconcile("").ok());
  EXPECT_EQ(Corefile(), "# mine\n" + Expected(coredns::PlanServerBlocks(meshes_)) + user_block);
}

TEST_F(CorednsReconcilerTest, AnEditBetweenReadAndWriteIsNotLost) {
  ASSERT_TRUE(api_.Create(kServices, "tm", ServiceObject()).ok());
  ASSERT_TRUE(api_.Create(kube::kConfigMaps, "kube-system", ConfigMapObject()).ok());
  // A person saves the ConfigMap after the operator read it and before it writes.
  bool edited = false;
  api_.SetErrorRule([&](const FakeApi::Call& call) {
    if (call.verb == "update" && call.resource == "configmaps" && !edited) {
      edited = true;
      SetCorefile(std::string(kCorefile) + "# saved by a person\n");
    }
    return absl::OkStatus();
  });
  auto reconciler = Make();
  ASSERT_TRUE(reconciler->Reconcile("").ok());
  EXPECT_EQ(reconciler->counters().conflicts.load(), 1u);
  EXPECT_EQ(Corefile(), Expected(coredns::PlanServerBlocks(meshes_), "10.96.0.20:53",
                                 std::string(kCorefile) + "# saved by a person\n"));
}

TEST_F(CorednsReconcilerTest, EndlessConflictsFailTheReconcileForABackoff) {
  ASSERT_TRUE(api_.Create(kServices, "tm", ServiceObject()).ok());
  ASSERT_TRUE(api_.Create(kube::kConfigMaps, "kube-system", ConfigMapObject()).ok());
  api_.FailNext("update", "configmaps", absl::AbortedError("conflict"), 100);
  auto reconciler = Make();
  absl::StatusOr<Result> result = reconciler->Reconcile("");
  ASSERT_FALSE(result.ok());
  EXPECT_EQ(result.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(api_.CallCount("update", "configmaps"), options_.conflict_retries + 1);
}

TEST_F(CorednsReconcilerTest, AMissingConfigMapIsReportedAndLookedAtLater) {
  ASSERT_TRUE(api_.Create(kServices, "tm", ServiceObject()).ok());
  ASSERT_TRUE(api_.Create(kube::kMeshes, "",
                          {{"apiVersion", "tunnelmesh.io/v1alpha1"},
                           {"kind", "Mesh"},
                           {"metadata", {{"name", "demo"}}},
                           {"spec", {{"ipv4CIDR", "10.99.0.0/16"}}}})
                  .ok());
  informer_ = std::make_unique<kube::Informer>(&api_, kube::kMeshes, kube::Informer::Handlers{},
                                               kube::Informer::Options{});
  informer_->Start();
  ASSERT_TRUE(WaitFor([&] { return informer_->HasSynced(); }));
  auto reconciler = Make();
  for (int i = 0; i < 3; ++i) {
    absl::StatusOr<Result> result = reconciler->Reconcile("");
    ASSERT_TRUE(result.ok()) << result.status();
    EXPECT_EQ(result->requeue_after, options_.resync_period) << "no tight loop";
  }
  EXPECT_EQ(api_.CallCount("create", "configmaps"), 0) << "never created by the operator";
  EXPECT_EQ(reconciler->counters().problems.load(), 1u) << "reported once";
  events_.Flush();
  absl::StatusOr<nlohmann::json> events = api_.List(kube::kEvents, "default");
  ASSERT_TRUE(events.ok());
  ASSERT_EQ((*events)["items"].size(), 1u);
  const nlohmann::json& event = (*events)["items"][0];
  EXPECT_EQ(event["reason"], "CoreDNSConfigMapNotFound");
  EXPECT_EQ(event["type"], "Warning");
  EXPECT_EQ(event["involvedObject"]["name"], "demo");
  EXPECT_THAT(event["message"].get<std::string>(), HasSubstr("kube-system/coredns"));

  // It appears: the next look configures it.
  ASSERT_TRUE(api_.Create(kube::kConfigMaps, "kube-system", ConfigMapObject()).ok());
  ASSERT_TRUE(reconciler->Reconcile("").ok());
  EXPECT_EQ(Corefile(), Expected(coredns::PlanServerBlocks(meshes_)));
  informer_->Stop();
}

TEST_F(CorednsReconcilerTest, NothingIsWrittenWhenTheUserMustAct) {
  ASSERT_TRUE(api_.Create(kServices, "tm", ServiceObject()).ok());
  nlohmann::json no_corefile = ConfigMapObject();
  no_corefile["data"] = {{"other", "x"}};
  ASSERT_TRUE(api_.Create(kube::kConfigMaps, "kube-system", no_corefile).ok());
  auto reconciler = Make();
  ASSERT_TRUE(reconciler->Reconcile("").ok());
  EXPECT_EQ(api_.CallCount("update", "configmaps"), 0);
  EXPECT_EQ(reconciler->counters().problems.load(), 1u);

  // Broken markers (a BEGIN without END).
  SetCorefile(std::string(kCorefile) + coredns::BeginMarker("tm/tunnelmesh") + "\n");
  const std::string broken = Corefile();
  api_.ClearCalls();
  ASSERT_TRUE(reconciler->Reconcile("").ok());
  EXPECT_EQ(api_.CallCount("update", "configmaps"), 0);
  EXPECT_EQ(Corefile(), broken);
  EXPECT_EQ(reconciler->counters().problems.load(), 2u);

  // Forbidden: reported, not retried in a loop.
  SetCorefile(kCorefile);
  api_.FailNext("update", "configmaps", absl::PermissionDeniedError("forbidden"));
  absl::StatusOr<Result> result = reconciler->Reconcile("");
  ASSERT_TRUE(result.ok());
  EXPECT_EQ(reconciler->counters().problems.load(), 3u);
}

TEST_F(CorednsReconcilerTest, AZoneTheUserServesIsLeftToThem) {
  ASSERT_TRUE(api_.Create(kServices, "tm", ServiceObject()).ok());
  const std::string mine = std::string(kCorefile) + "mesh:53 {\n    forward . 10.0.0.53\n}\n";
  ASSERT_TRUE(api_.Create(kube::kConfigMaps, "kube-system", ConfigMapObject(mine)).ok());
  auto reconciler = Make();
  ASSERT_TRUE(reconciler->Reconcile("").ok());
  EXPECT_EQ(Corefile(), mine + coredns::RenderRegion("tm/tunnelmesh", {{{"99.10.in-addr.arpa"}}},
                                                     "10.96.0.20:53"));
  EXPECT_EQ(reconciler->counters().problems.load(), 1u);
}

TEST_F(CorednsReconcilerTest, WithoutItsServiceTheBlockGoes) {
  ASSERT_TRUE(api_.Create(kServices, "tm", ServiceObject()).ok());
  ASSERT_TRUE(api_.Create(kube::kConfigMaps, "kube-system", ConfigMapObject()).ok());
  auto reconciler = Make();
  ASSERT_TRUE(reconciler->Reconcile("").ok());
  ASSERT_NE(Corefile(), kCorefile);
  ASSERT_TRUE(api_.Delete(kServices, "tm", "tunnelmesh").ok());
  ASSERT_TRUE(reconciler->Reconcile("").ok());
  EXPECT_EQ(Corefile(), kCorefile);
  // A Service without the DNS port cannot be forwarded to either.
  nlohmann::json old = ServiceObject();
  old["spec"]["ports"].erase(1);
  ASSERT_TRUE(api_.Create(kServices, "tm", old).ok());
  ASSERT_TRUE(reconciler->Reconcile("").ok());
  EXPECT_EQ(Corefile(), kCorefile);
}

TEST_F(CorednsReconcilerTest, RemovalByTheUninstallHook) {
  ASSERT_TRUE(api_.Create(kServices, "tm", ServiceObject()).ok());
  ASSERT_TRUE(api_.Create(kube::kConfigMaps, "kube-system", ConfigMapObject()).ok());
  auto reconciler = Make();
  ASSERT_TRUE(reconciler->Reconcile("").ok());
  SetCorefile(Corefile() + "# after ours\n");

  ASSERT_TRUE(RemoveCorednsConfig(&api_, options_.target).ok());
  EXPECT_EQ(Corefile(), std::string(kCorefile) + "# after ours\n");
  absl::StatusOr<nlohmann::json> svc = api_.Get(kServices, "tm", "tunnelmesh");
  EXPECT_FALSE((*svc)["metadata"]["annotations"][kCorednsRemovalAnnotation].is_null());
  // The operator, still running until helm deletes it, keeps the block out.
  ASSERT_TRUE(reconciler->Reconcile("").ok());
  EXPECT_EQ(Corefile(), std::string(kCorefile) + "# after ours\n");
  // Again: nothing to remove is fine.
  api_.ClearCalls();
  ASSERT_TRUE(RemoveCorednsConfig(&api_, options_.target).ok());
  EXPECT_EQ(api_.CallCount("update", "configmaps"), 0);
}

TEST_F(CorednsReconcilerTest, AReconcileRacingWithTheHookUndoesItsWrite) {
  ASSERT_TRUE(api_.Create(kServices, "tm", ServiceObject()).ok());
  ASSERT_TRUE(api_.Create(kube::kConfigMaps, "kube-system", ConfigMapObject()).ok());
  // The hook runs entirely between the operator's reads and its write: it finds no block.
  bool hooked = false;
  api_.SetErrorRule([&](const FakeApi::Call& call) {
    if (call.verb == "update" && call.resource == "configmaps" && !hooked) {
      hooked = true;
      EXPECT_TRUE(RemoveCorednsConfig(&api_, options_.target).ok());
    }
    return absl::OkStatus();
  });
  auto reconciler = Make();
  ASSERT_TRUE(reconciler->Reconcile("").ok());
  EXPECT_TRUE(hooked);
  EXPECT_EQ(Corefile(), kCorefile);
  EXPECT_EQ(reconciler->counters().writes.load(), 2u) << "written, then removed again";
}

TEST(RemoveCorednsConfigTest, NothingThereIsFine) {
  FakeApi api;
  CorednsTarget target;
  target.release = "tm/tunnelmesh";
  target.service_namespace = "tm";
  target.service_name = "tunnelmesh";
  EXPECT_TRUE(RemoveCorednsConfig(&api, target).ok()) << "no Service, no ConfigMap";
  nlohmann::json cm = ConfigMapObject();
  cm["data"] = nlohmann::json::object();
  ASSERT_TRUE(api.Create(kube::kConfigMaps, "kube-system", cm).ok());
  EXPECT_TRUE(RemoveCorednsConfig(&api, target).ok()) << "no Corefile";
  cm["data"]["Corefile"] = std::string(kCorefile) + coredns::EndMarker("tm/tunnelmesh") + "\n";
  ASSERT_TRUE(api.Update(kube::kConfigMaps, "kube-system", cm).ok());
  absl::Status broken = RemoveCorednsConfig(&api, target);
  EXPECT_EQ(broken.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(std::string(broken.message()), HasSubstr("kube-system/coredns"));
  EXPECT_THAT(std::string(broken.message()), Not(HasSubstr("forward")));
}

}  // namespace
}  // namespace tunnelmesh
