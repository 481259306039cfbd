// The coordinator's write-behind MeshPeer writes (member_writer.h) against an admin who deletes a
// MeshPeer: a write queued for a member whose object existed must not create it again. Runs the
// Coordinator over KubeMemberStore over the fake API server; the race (a delete between the
// admission or registration and the queued write) is made deterministic by holding the writer
// thread's first MeshPeer call until the test has deleted the object.
#include <atomic>
#include <string>

#include "absl/synchronization/notification.h"
#include "gtest/gtest.h"
#include "operator/coordinator/coordinator.h"
#include "operator/coordinator/testing/coordinator_fixtures.h"
#include "operator/kube/testing/fake_api.h"
#include "operator/store/meshpeer_store.h"

namespace tunnelmesh {
namespace {

constexpr absl::Duration kWait = absl::Seconds(10);

// Holds the first MeshPeer call made on the writer thread (any thread but the test's) until
// Release(); every other call passes.
class Gate {
 public:
  explicit Gate(kube::testing::FakeApi* api) : test_thread_(std::this_thread::get_id()) {
    api->SetErrorRule([this](const kube::testing::FakeApi::Call& call) {
      if (call.resource != "meshpeers" || std::this_thread::get_id() == test_thread_ ||
          used_.exchange(true)) {
        return absl::OkStatus();
      }
      reached_.Notify();
      release_.WaitForNotification();
      return absl::OkStatus();
    });
  }
  bool AwaitReached() { return reached_.WaitForNotificationWithTimeout(kWait); }
  void Release() { release_.Notify(); }

 private:
  const std::thread::id test_thread_;
  std::atomic<bool> used_{false};
  absl::Notification reached_;
  absl::Notification release_;
};

MemberRecord AdminRecord() {
  MemberRecord r;
  r.public_key = NewKey();
  r.mesh = "demo";
  r.name = "printer";
  r.kind = coord::MEMBER_KIND_EXTERNAL;
  r.static_endpoints = {"198.51.100.9:51820"};
  return r;
}

TEST(MeshPeerWriteRaceTest, AdmittedMemberDeletedBeforeItsAddressesAreWrittenStaysDeleted) {
  InitCrypto();
  kube::testing::FakeApi api;
  KubeMemberStore store(&api);
  Coordinator c(&store, Coordinator::Options());
  c.SetMeshes(Meshes(MeshManifest(24)));
  // An admin creates a MeshPeer without addresses; the coordinator admits it and queues the
  // write of the addresses it allocated.
  const MemberRecord record = AdminRecord();
  ASSERT_TRUE(api.Create(kube::kMeshPeers, "", MeshPeerFor(record)).ok());
  Gate gate(&api);
  ASSERT_TRUE(c.Admit(record).ok());
  ASSERT_TRUE(gate.AwaitReached()) << "the writer thread calls the API server";
  // The admin deletes it before that write reaches the API server.
  ASSERT_TRUE(api.Delete(kube::kMeshPeers, "", record.name).ok());
  gate.Release();
  ASSERT_TRUE(c.FlushStore(kWait));
  EXPECT_TRUE(absl::IsNotFound(api.Get(kube::kMeshPeers, "", record.name).status()))
      << "the queued write created the deleted MeshPeer again";
}

TEST(MeshPeerWriteRaceTest, RegisteredMemberDeletedBeforeItsUpdateIsWrittenStaysDeleted) {
  InitCrypto();
  kube::testing::FakeApi api;
  KubeMemberStore store(&api);
  Coordinator::Options options;
  options.register_write_deadline = kWait;
  Coordinator c(&store, options);
  c.SetMeshes(Meshes(MeshManifest(24)));
  const PublicKey key = NewKey();
  // The first registration creates the MeshPeer.
  auto first = RegisterAs(c, Request(key, "laptop"));
  ASSERT_TRUE(first.ok()) << first.status();
  ASSERT_TRUE(api.Get(kube::kMeshPeers, "", "laptop").ok());
  // The agent registers again with a new label; an admin deletes the MeshPeer before that write
  // lands (the coordinator has not seen the delete yet: no reconciler runs here).
  Gate gate(&api);
  coord::RegisterRequest again = Request(key, "laptop");
  (*again.mutable_labels())["role"] = "ci";
  absl::StatusOr<coord::RegisterResponse> second;
  std::thread registering([&] { second = RegisterAs(c, again); });
  ASSERT_TRUE(gate.AwaitReached());
  ASSERT_TRUE(api.Delete(kube::kMeshPeers, "", "laptop").ok());
  gate.Release();
  registering.join();
  ASSERT_TRUE(c.FlushStore(kWait));
  EXPECT_TRUE(absl::IsNotFound(api.Get(kube::kMeshPeers, "", "laptop").status()))
      << "the queued write created the deleted MeshPeer again";
  EXPECT_FALSE(second.ok()) << "the agent learns its record could not be written";
}

TEST(MeshPeerWriteRaceTest, FirstRegistrationAndAdmissionStillWrite) {
  InitCrypto();
  kube::testing::FakeApi api;
  KubeMemberStore store(&api);
  Coordinator c(&store, Coordinator::Options());
  c.SetMeshes(Meshes(MeshManifest(24)));
  auto registered = RegisterAs(c, Request(NewKey(), "laptop"));
  ASSERT_TRUE(registered.ok()) << registered.status();
  absl::StatusOr<nlohmann::json> created = api.Get(kube::kMeshPeers, "", "laptop");
  ASSERT_TRUE(created.ok()) << created.status();
  EXPECT_EQ((*created)["status"]["meshIPs"].size(), 2u);

  const MemberRecord record = AdminRecord();
  ASSERT_TRUE(api.Create(kube::kMeshPeers, "", MeshPeerFor(record)).ok());
  ASSERT_TRUE(c.Admit(record).ok());
  ASSERT_TRUE(c.FlushStore(kWait));
  absl::StatusOr<nlohmann::json> admitted = api.Get(kube::kMeshPeers, "", record.name);
  ASSERT_TRUE(admitted.ok()) << admitted.status();
  EXPECT_EQ((*admitted)["status"]["meshIPs"].size(), 2u) << "the allocated addresses are written";
  EXPECT_EQ((*admitted)["spec"]["endpoints"], nlohmann::json({"198.51.100.9:51820"}));
}

}  // namespace
}  // namespace tunnelmesh
