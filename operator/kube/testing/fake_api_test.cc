// The fake API server behaves as the real one does where reconcilers depend on it.
#include "operator/kube/testing/fake_api.h"

#include <thread>

#include "gtest/gtest.h"
#include "operator/kube/api_status.h"

namespace tunnelmesh::kube::testing {
namespace {

nlohmann::json Mesh(const std::string& name, const std::string& cidr = "10.99.0.0/16") {
  return {{"apiVersion", "tunnelmesh.io/v1alpha1"},
          {"kind", "Mesh"},
          {"metadata", {{"name", name}}},
          {"spec", {{"ipv4CIDR", cidr}}}};
}

TEST(FakeApiTest, CreateGetListAndNotFound) {
  FakeApi api;
  absl::StatusOr<nlohmann::json> created = api.Create(kMeshes, "", Mesh("a"));
  ASSERT_TRUE(created.ok()) << created.status();
  EXPECT_EQ(ObjectGeneration(*created), 1);
  EXPECT_FALSE(MetadataString(*created, "uid").empty());
  EXPECT_EQ(MetadataString(*created, "resourceVersion"), "1");
  EXPECT_TRUE(absl::IsAlreadyExists(api.Create(kMeshes, "", Mesh("a")).status()));
  EXPECT_TRUE(absl::IsNotFound(api.Get(kMeshes, "", "b").status()));
  ASSERT_TRUE(api.Create(kMeshes, "", Mesh("b")).ok());
  absl::StatusOr<nlohmann::json> list = api.List(kMeshes, "");
  ASSERT_TRUE(list.ok());
  EXPECT_EQ((*list)["items"].size(), 2u);
  EXPECT_EQ(MetadataString(*list, "resourceVersion"), "2");
  EXPECT_EQ(api.CallCount("create", "meshes"), 3);
}

TEST(FakeApiTest, NamespacesAndGenerateName) {
  FakeApi api;
  nlohmann::json secret = {{"metadata", {{"generateName", "s-"}}}, {"data", {{"k", "dg=="}}}};
  absl::StatusOr<nlohmann::json> a = api.Create(kSecrets, "ns1", secret);
  ASSERT_TRUE(a.ok()) << a.status();
  EXPECT_EQ(ObjectNamespace(*a), "ns1");
  EXPECT_EQ(ObjectName(*a).rfind("s-", 0), 0u);
  EXPECT_TRUE(absl::IsNotFound(api.Get(kSecrets, "ns2", ObjectName(*a)).status()));
  EXPECT_TRUE(api.Get(kSecrets, "ns1", ObjectName(*a)).ok());
}

TEST(FakeApiTest, StaleResourceVersionIsAConflict) {
  FakeApi api;
  nlohmann::json first = *api.Create(kMeshes, "", Mesh("a"));
  nlohmann::json edit = first;
  edit["spec"]["domain"] = "x";
  absl::StatusOr<nlohmann::json> updated = api.Update(kMeshes, "", edit);
  ASSERT_TRUE(updated.ok()) << updated.status();
  EXPECT_EQ(ObjectGeneration(*updated), 2) << "a spec change bumps the generation";
  edit["spec"]["domain"] = "y";  // still carries the first resourceVersion
  EXPECT_TRUE(IsConflict(api.Update(kMeshes, "", edit).status()));
  nlohmann::json labels = *updated;
  labels["metadata"]["labels"] = {{"a", "b"}};
  absl::StatusOr<nlohmann::json> relabelled = api.Update(kMeshes, "", labels);
  ASSERT_TRUE(relabelled.ok());
  EXPECT_EQ(ObjectGeneration(*relabelled), 2) << "metadata is not spec";
}

TEST(FakeApiTest, StatusSubresourceIsSeparate) {
  FakeApi api;
  nlohmann::json with_status = Mesh("a");
  with_status["status"] = {{"memberCount", 9}};
  nlohmann::json created = *api.Create(kMeshes, "", with_status);
  EXPECT_FALSE(created.contains("status")) << "create ignores status on a status subresource";
  absl::StatusOr<nlohmann::json> patched =
      api.Patch(kMeshes, "", "a", {{"status", {{"memberCount", 2}}}, {"spec", {{"domain", "z"}}}},
                PatchType::kMerge, /*status_subresource=*/true);
  ASSERT_TRUE(patched.ok()) << patched.status();
  EXPECT_EQ((*patched)["status"]["memberCount"], 2);
  EXPECT_FALSE((*patched)["spec"].contains("domain")) << "a status patch changes only status";
  EXPECT_EQ(ObjectGeneration(*patched), 1);
  absl::StatusOr<nlohmann::json> spec =
      api.Patch(kMeshes, "", "a", {{"status", nullptr}, {"spec", {{"domain", "z"}}}});
  ASSERT_TRUE(spec.ok());
  EXPECT_EQ((*spec)["status"]["memberCount"], 2) << "a plain patch keeps the status";
  EXPECT_EQ(ObjectGeneration(*spec), 2);
  nlohmann::json status_update = *spec;
  status_update["status"] = {{"memberCount", 5}};
  status_update["spec"]["domain"] = "ignored";
  absl::StatusOr<nlohmann::json> updated = api.UpdateStatus(kMeshes, "", status_update);
  ASSERT_TRUE(updated.ok()) << updated.status();
  EXPECT_EQ((*updated)["status"]["memberCount"], 5);
  EXPECT_EQ((*updated)["spec"]["domain"], "z");
}

TEST(FakeApiTest, JsonPatchTestFailureIsInvalid) {
  FakeApi api;
  ASSERT_TRUE(api.Create(kMeshes, "", Mesh("a")).ok());
  nlohmann::json patch = nlohmann::json::array(
      {{{"op", "test"}, {"path", "/metadata/resourceVersion"}, {"value", "999"}},
       {{"op", "add"}, {"path", "/metadata/finalizers"}, {"value", {"f"}}}});
  EXPECT_EQ(api.Patch(kMeshes, "", "a", patch, PatchType::kJson).status().code(),
            absl::StatusCode::kInvalidArgument);
  patch[0]["value"] = "1";
  absl::StatusOr<nlohmann::json> ok = api.Patch(kMeshes, "", "a", patch, PatchType::kJson);
  ASSERT_TRUE(ok.ok()) << ok.status();
  EXPECT_EQ((*ok)["metadata"]["finalizers"][0], "f");
}

TEST(FakeApiTest, FinalizersHoldDeletion) {
  FakeApi api;
  nlohmann::json mesh = Mesh("a");
  mesh["metadata"]["finalizers"] = {"f"};
  const std::string uid = MetadataString(*api.Create(kMeshes, "", mesh), "uid");
  EXPECT_TRUE(IsConflict(api.Delete(kMeshes, "", "a", "other-uid")));
  ASSERT_TRUE(api.Delete(kMeshes, "", "a", uid).ok());
  absl::StatusOr<nlohmann::json> held = api.Get(kMeshes, "", "a");
  ASSERT_TRUE(held.ok()) << "an object with finalizers stays";
  EXPECT_TRUE(BeingDeleted(*held));
  ASSERT_TRUE(api.Patch(kMeshes, "", "a", {{"metadata", {{"finalizers", nullptr}}}}).ok());
  EXPECT_TRUE(absl::IsNotFound(api.Get(kMeshes, "", "a").status()));
  EXPECT_TRUE(absl::IsNotFound(api.Delete(kMeshes, "", "a")));
}

TEST(FakeApiTest, WatchDeliversChangesFromAVersion) {
  FakeApi api;
  ASSERT_TRUE(api.Create(kMeshes, "", Mesh("a")).ok());
  const std::string from = std::to_string(api.revision());
  ASSERT_TRUE(api.Create(kMeshes, "", Mesh("b")).ok());
  ASSERT_TRUE(api.Create(kSecrets, "ns", {{"metadata", {{"name", "s"}}}}).ok());
  ASSERT_TRUE(api.Patch(kMeshes, "", "b", {{"spec", {{"domain", "d"}}}}).ok());
  ASSERT_TRUE(api.Delete(kMeshes, "", "a").ok());
  std::vector<std::string> seen;
  absl::Status s = api.Watch(
      kMeshes, "", from, 30,
      [&](const WatchEvent& e) {
        seen.push_back(e.type + " " + ObjectName(e.object));
        return seen.size() < 3;
      },
      nullptr);
  EXPECT_TRUE(s.ok()) << s;
  EXPECT_EQ(seen, (std::vector<std::string>{"ADDED b", "MODIFIED b", "DELETED a"}));
}

TEST(FakeApiTest, WatchFollowsWritesAndStops) {
  FakeApi api;
  std::atomic<bool> stop{false};
  std::vector<std::string> seen;
  absl::Mutex mu;
  std::thread watcher([&] {
    absl::Status s = api.Watch(
        kMeshes, "", "0", 30,
        [&](const WatchEvent& e) {
          absl::MutexLock lock(&mu);
          seen.push_back(e.type + " " + ObjectName(e.object));
          return true;
        },
        &stop);
    EXPECT_EQ(s.code(), absl::StatusCode::kCancelled);
  });
  const absl::Time deadline = absl::Now() + absl::Seconds(10);
  while (api.watchers() == 0 && absl::Now() < deadline) absl::SleepFor(absl::Milliseconds(1));
  ASSERT_TRUE(api.Create(kMeshes, "", Mesh("a")).ok());
  auto count = [&] {
    absl::MutexLock lock(&mu);
    return seen.size();
  };
  while (count() < 1 && absl::Now() < deadline) absl::SleepFor(absl::Milliseconds(1));
  stop = true;
  watcher.join();
  EXPECT_EQ(seen, (std::vector<std::string>{"ADDED a"}));
}

TEST(FakeApiTest, CompactedVersionIsGone) {
  FakeApi api;
  ASSERT_TRUE(api.Create(kMeshes, "", Mesh("a")).ok());
  ASSERT_TRUE(api.Create(kMeshes, "", Mesh("b")).ok());
  api.Compact();
  EXPECT_TRUE(IsGone(api.Watch(
      kMeshes, "", "1", 1, [](const WatchEvent&) { return true; }, nullptr)));
  api.EndWatches();
}

TEST(FakeApiTest, InjectedErrorsLatencyAndCreateHandlers) {
  FakeApi api;
  api.FailNext("create", "meshes", absl::UnavailableError("injected"), 2);
  EXPECT_EQ(api.Create(kMeshes, "", Mesh("a")).status().code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(api.Create(kMeshes, "", Mesh("a")).status().code(), absl::StatusCode::kUnavailable);
  EXPECT_TRUE(api.Create(kMeshes, "", Mesh("a")).ok());
  api.SetErrorRule([](const FakeApi::Call& c) {
    return c.verb == "get" && c.name == "secret" ? absl::PermissionDeniedError("403")
                                                 : absl::OkStatus();
  });
  EXPECT_EQ(api.Get(kSecrets, "ns", "secret").status().code(), absl::StatusCode::kPermissionDenied);
  EXPECT_TRUE(api.Get(kMeshes, "", "a").ok());
  api.SetErrorRule(nullptr);
  api.SetLatency(absl::Milliseconds(20));
  const absl::Time start = absl::Now();
  EXPECT_TRUE(api.Get(kMeshes, "", "a").ok());
  EXPECT_GE(absl::Now() - start, absl::Milliseconds(20));
  api.SetLatency(absl::ZeroDuration());
  api.SetCreateHandler("tokenreviews", [](const nlohmann::json& review) {
    return nlohmann::json{{"status", {{"authenticated", review["spec"]["token"] == "good"}}}};
  });
  absl::StatusOr<nlohmann::json> answer =
      api.Create(kTokenReviews, "", {{"spec", {{"token", "good"}}}});
  ASSERT_TRUE(answer.ok());
  EXPECT_EQ((*answer)["status"]["authenticated"], true);
  EXPECT_TRUE(absl::IsNotFound(api.Get(kTokenReviews, "", "").status())) << "nothing stored";
}

}  // namespace
}  // namespace tunnelmesh::kube::testing
