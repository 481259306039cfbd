#include "node-agent/agent/pod_attacher.h"

#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <deque>
#include <set>
#include <string>

#include "gtest/gtest.h"
#include "lib/base/file.h"
#include "node-agent/agent/pod_attachments.h"

namespace tunnelmesh {
namespace {

// A scratch directory per test, removed afterwards.
class TempDir {
 public:
  TempDir() {
    char pattern[] = "/tmp/pod_attacher_test.XXXXXX";
    path_ = mkdtemp(pattern);
  }
  ~TempDir() { std::system(("rm -rf '" + path_ + "'").c_str()); }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

// Answers like a coordinator that allocates 10.99.1.N per new pod uid and keeps what it attached;
// a queued error makes the next RPC fail with it.
class FakePodCoordinator : public PodCoordinator {
 public:
  absl::StatusOr<coord::AttachPodResponse> AttachPod(
      const coord::AttachPodRequest& request) override {
    ++attach_calls;
    if (absl::Status s = NextError(); !s.ok()) return s;
    coord::AttachPodResponse response;
    const std::string& uid = request.pod().uid();
    if (refused.count(uid)) {
      response.set_attached(false);
      response.set_reason("the pod did not opt in");
      return response;
    }
    return Admit(request.pod());
  }
  absl::StatusOr<coord::DetachPodResponse> DetachPod(
      const coord::DetachPodRequest& request) override {
    ++detach_calls;
    if (absl::Status s = NextError(); !s.ok()) return s;
    coord::DetachPodResponse response;
    response.set_detached(attached.erase(request.pod().uid()) > 0);
    return response;
  }
  absl::StatusOr<coord::SyncPodsResponse> SyncPods(const coord::SyncPodsRequest& request) override {
    ++sync_calls;
    if (absl::Status s = NextError(); !s.ok()) return s;
    coord::SyncPodsResponse response;
    std::set<std::string> listed;
    for (const coord::AttachPodRequest& pod : request.pods()) {
      listed.insert(pod.pod().uid());
      if (refused.count(pod.pod().uid())) {
        coord::AttachPodResponse* r = response.add_pods();
        r->set_attached(false);
        r->set_reason("the pod's annotation was removed");
        attached.erase(pod.pod().uid());
      } else {
        *response.add_pods() = Admit(pod.pod());
      }
    }
    for (auto it = attached.begin(); it != attached.end();) {
      it = listed.count(it->first) ? std::next(it) : attached.erase(it);
    }
    return response;
  }

  std::map<std::string, std::string> attached;  // uid -> address.
  std::set<std::string> refused;
  std::deque<absl::Status> errors;
  int attach_calls = 0, detach_calls = 0, sync_calls = 0;

 private:
  absl::Status NextError() {
    if (errors.empty()) return absl::OkStatus();
    absl::Status s = errors.front();
    errors.pop_front();
    return s;
  }
  coord::AttachPodResponse Admit(const coord::PodRef& pod) {
    auto [it, added] = attached.emplace(pod.uid(), "");
    if (added) it->second = "10.99.1." + std::to_string(++next_);
    coord::AttachPodResponse response;
    response.set_attached(true);
    response.set_name(pod.name() + "." + pod.namespace_() + ".pod");
    response.add_mesh_ips(it->second);
    response.add_mesh_cidrs("10.99.0.0/16");
    return response;
  }
  int next_ = 0;
};

cni::AttachRequest Request(const std::string& command, const std::string& container) {
  cni::AttachRequest r;
  r.command = command;
  r.mesh = "demo";
  r.container_id = container;
  r.netns = "/var/run/netns/" + container;
  r.if_name = "mesh0";
  r.pod_namespace = "ci";
  r.pod_name = "runner-" + container;
  r.pod_uid = "uid-" + container;
  return r;
}

PodRequestContext Context() {
  PodRequestContext c;
  c.interface_name = "tm0";
  c.mesh = "demo";
  c.connected = true;
  c.mtu = 1380;
  c.routes = {"10.99.0.0/16", "fd99:99::/48"};
  return c;
}

const absl::Time kNow = absl::FromUnixSeconds(1'800'000'000);

class PodAttacherTest : public ::testing::Test {
 protected:
  std::string path() const { return PodAttachmentsPath(dir_.path(), "tm0"); }
  // A new attacher over the file as it is (an agent restart).
  void Restart() {
    absl::StatusOr<PodAttachmentStore> store = PodAttachmentStore::Load(path(), max_records_);
    ASSERT_TRUE(store.ok()) << store.status();
    attacher_ = std::make_unique<PodAttacher>(
        *std::move(store), &coordinator_,
        [this](const std::string& name) { return interfaces_.count(name) > 0; });
  }
  void SetUp() override { Restart(); }
  cni::AttachResponse Handle(const cni::AttachRequest& r, absl::Time now = kNow) {
    return attacher_->Handle(r, Context(), now);
  }
  size_t Recorded() const { return attacher_->attachments()->size(); }

  TempDir dir_;
  size_t max_records_ = kMaxPodAttachments;
  FakePodCoordinator coordinator_;
  std::set<std::string> interfaces_;
  std::unique_ptr<PodAttacher> attacher_;
};

TEST_F(PodAttacherTest, AddAttachesRecordsAndAnswersTheInterfaceSettings) {
  cni::AttachResponse r = Handle(Request("ADD", "c1"));
  ASSERT_FALSE(r.failed()) << r.error.msg;
  EXPECT_TRUE(r.attached);
  EXPECT_EQ(r.name, "runner-c1.ci.pod");
  EXPECT_EQ(r.addresses, std::vector<std::string>{"10.99.1.1"});
  EXPECT_EQ(r.routes, (std::vector<std::string>{"10.99.0.0/16", "fd99:99::/48"}));
  EXPECT_EQ(r.mtu, 1380u);
  EXPECT_EQ(r.host_interface, cni::HostInterfaceName("c1"));
  ASSERT_EQ(Recorded(), 1u);
  EXPECT_EQ(coordinator_.attached.count("uid-c1"), 1u);
  struct stat st {};
  ASSERT_EQ(stat(path().c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);

  // The runtime repeats an ADD: the same answer, without asking the coordinator again.
  cni::AttachResponse again = Handle(Request("ADD", "c1"));
  EXPECT_EQ(again, r);
  EXPECT_EQ(coordinator_.attach_calls, 1);
}

TEST_F(PodAttacherTest, RestartKeepsThePodsAndSyncStatesThem) {
  ASSERT_TRUE(Handle(Request("ADD", "c1")).attached);
  ASSERT_TRUE(Handle(Request("ADD", "c2")).attached);
  Restart();
  EXPECT_EQ(Recorded(), 2u);
  attacher_->Sync();
  EXPECT_EQ(coordinator_.sync_calls, 1);
  EXPECT_EQ(coordinator_.attached.size(), 2u);
  cni::AttachResponse check = Handle(Request("CHECK", "c2"));
  EXPECT_TRUE(check.attached);
  EXPECT_EQ(check.addresses, std::vector<std::string>{"10.99.1.2"});
}

TEST_F(PodAttacherTest, PodThatDidNotOptInIsNotRecorded) {
  coordinator_.refused.insert("uid-c1");
  cni::AttachResponse r = Handle(Request("ADD", "c1"));
  ASSERT_FALSE(r.failed());
  EXPECT_FALSE(r.attached);
  EXPECT_EQ(r.reason, "the pod did not opt in");
  EXPECT_EQ(Recorded(), 0u);
}

TEST_F(PodAttacherTest, ContainerWithoutPodUidIsKnownByItsContainerId) {
  cni::AttachRequest request = Request("ADD", "c1");
  request.pod_uid.clear();
  ASSERT_TRUE(Handle(request).attached);
  EXPECT_EQ(coordinator_.attached.count("c1"), 1u);
}

TEST_F(PodAttacherTest, OtherMeshIsRefusedNamingBoth) {
  cni::AttachRequest request = Request("ADD", "c1");
  request.mesh = "prod";
  cni::AttachResponse r = Handle(request);
  EXPECT_EQ(r.error.code, cni::kCniErrorMeshUnknown);
  EXPECT_NE(r.error.msg.find("\"prod\""), std::string::npos) << r.error.msg;
  EXPECT_NE(r.error.msg.find("\"demo\""), std::string::npos) << r.error.msg;
  EXPECT_EQ(coordinator_.attach_calls, 0);
  // An empty mesh means the agent's.
  request.mesh.clear();
  EXPECT_TRUE(Handle(request).attached);
}

TEST_F(PodAttacherTest, NotConnectedIsTryLater) {
  PodRequestContext context = Context();
  context.connected = false;
  context.disconnected_why = "lost the coordinator at 10.0.0.1:7700";
  cni::AttachResponse r = attacher_->Handle(Request("ADD", "c1"), context, kNow);
  EXPECT_EQ(r.error.code, cni::kCniErrorTryLater);
  EXPECT_NE(r.error.msg.find("not connected"), std::string::npos) << r.error.msg;
  EXPECT_NE(r.error.msg.find("lost the coordinator"), std::string::npos) << r.error.msg;
  cni::AttachResponse status = attacher_->Handle(Request("STATUS", ""), context, kNow);
  EXPECT_EQ(status.error.code, cni::kCniErrorNotAvailable);
  EXPECT_FALSE(Handle(Request("STATUS", "")).failed());
}

TEST_F(PodAttacherTest, CoordinatorErrorsMapToCniCodes) {
  coordinator_.errors = {absl::UnavailableError("connection refused"),
                         absl::UnimplementedError("unknown method"),
                         absl::ResourceExhaustedError("mesh demo has no free IPv4 address"),
                         absl::PermissionDeniedError("pod runs on another node")};
  EXPECT_EQ(Handle(Request("ADD", "c1")).error.code, cni::kCniErrorTryLater);
  cni::AttachResponse old = Handle(Request("ADD", "c1"));
  EXPECT_EQ(old.error.code, cni::kCniErrorAttachFailed);
  EXPECT_NE(old.error.msg.find("upgrade tunnelmesh-operator"), std::string::npos);
  cni::AttachResponse full = Handle(Request("ADD", "c1"));
  EXPECT_EQ(full.error.code, cni::kCniErrorOutOfAddresses);
  EXPECT_NE(full.error.msg.find("no free IPv4"), std::string::npos);
  cni::AttachResponse refused = Handle(Request("ADD", "c1"));
  EXPECT_EQ(refused.error.code, cni::kCniErrorAttachFailed);
  EXPECT_NE(refused.error.msg.find("another node"), std::string::npos);
  EXPECT_EQ(Recorded(), 0u);
}

TEST_F(PodAttacherTest, LimitIsAnError) {
  max_records_ = 2;
  Restart();
  ASSERT_TRUE(Handle(Request("ADD", "c1")).attached);
  ASSERT_TRUE(Handle(Request("ADD", "c2")).attached);
  cni::AttachResponse r = Handle(Request("ADD", "c3"));
  EXPECT_EQ(r.error.code, cni::kCniErrorOutOfAddresses);
  EXPECT_NE(r.error.msg.find("limit (2)"), std::string::npos) << r.error.msg;
  EXPECT_EQ(coordinator_.attach_calls, 2);
  // A repeated ADD of a recorded pod is no new one.
  EXPECT_TRUE(Handle(Request("ADD", "c2")).attached);
}

TEST_F(PodAttacherTest, UnwritableFileFailsTheAddAndUndoesTheAttach) {
  // The file's place is a directory: the atomic rename cannot replace it.
  ASSERT_EQ(mkdir(path().c_str(), 0700), 0);
  cni::AttachResponse r = Handle(Request("ADD", "c1"));
  EXPECT_EQ(r.error.code, cni::kCniErrorIo);
  EXPECT_NE(r.error.msg.find(path()), std::string::npos) << r.error.msg;
  EXPECT_TRUE(coordinator_.attached.empty());
  EXPECT_EQ(Recorded(), 0u);
}

TEST_F(PodAttacherTest, DelDetachesAndForgets) {
  ASSERT_TRUE(Handle(Request("ADD", "c1")).attached);
  cni::AttachResponse r = Handle(Request("DEL", "c1"));
  EXPECT_FALSE(r.failed());
  EXPECT_EQ(Recorded(), 0u);
  EXPECT_TRUE(coordinator_.attached.empty());
  // Unknown, again, or of another mesh: still success.
  cni::AttachRequest other = Request("DEL", "c1");
  other.mesh = "prod";
  EXPECT_FALSE(Handle(other).failed());
  EXPECT_FALSE(Handle(Request("CHECK", "c1")).attached);
}

TEST_F(PodAttacherTest, DelWhileTheCoordinatorIsDownIsRetried) {
  ASSERT_TRUE(Handle(Request("ADD", "c1")).attached);
  coordinator_.errors = {absl::UnavailableError("connection refused")};
  EXPECT_FALSE(Handle(Request("DEL", "c1")).failed());
  ASSERT_EQ(Recorded(), 1u);
  EXPECT_TRUE(attacher_->attachments()->front().detaching);
  EXPECT_FALSE(Handle(Request("CHECK", "c1")).attached);
  // Kept across a restart, then confirmed by the next collection.
  Restart();
  ASSERT_EQ(Recorded(), 1u);
  attacher_->Collect(kNow);
  EXPECT_EQ(Recorded(), 0u);
  EXPECT_TRUE(coordinator_.attached.empty());
}

TEST_F(PodAttacherTest, SyncLeavesDetachingPodsOutAndForgetsRefusedOnes) {
  ASSERT_TRUE(Handle(Request("ADD", "c1")).attached);
  ASSERT_TRUE(Handle(Request("ADD", "c2")).attached);
  ASSERT_TRUE(Handle(Request("ADD", "c3")).attached);
  coordinator_.errors = {absl::UnavailableError("connection refused")};
  Handle(Request("DEL", "c1"));
  coordinator_.refused.insert("uid-c2");
  attacher_->Sync();
  ASSERT_EQ(Recorded(), 1u);
  EXPECT_EQ(attacher_->attachments()->front().container_id, "c3");
  EXPECT_EQ(coordinator_.attached.size(), 1u);
  EXPECT_EQ(coordinator_.attached.count("uid-c3"), 1u);
}

TEST_F(PodAttacherTest, FailedSyncIsRetriedByCollect) {
  ASSERT_TRUE(Handle(Request("ADD", "c1")).attached);
  coordinator_.errors = {absl::UnavailableError("connection refused")};
  attacher_->Sync();
  EXPECT_EQ(coordinator_.sync_calls, 1);
  interfaces_.insert(cni::HostInterfaceName("c1"));
  attacher_->Collect(kNow);
  EXPECT_EQ(coordinator_.sync_calls, 2);
  attacher_->Collect(kNow);
  EXPECT_EQ(coordinator_.sync_calls, 2);
}

TEST_F(PodAttacherTest, CollectDetachesPodsWhoseInterfaceVanished) {
  ASSERT_TRUE(Handle(Request("ADD", "c1"), kNow).attached);
  ASSERT_TRUE(Handle(Request("ADD", "c2"), kNow).attached);
  interfaces_.insert(cni::HostInterfaceName("c2"));
  // Too young: the plugin may still be making the veth.
  attacher_->Collect(kNow + absl::Seconds(10));
  EXPECT_EQ(Recorded(), 2u);
  attacher_->Collect(kNow + kPodInterfaceGrace);
  ASSERT_EQ(Recorded(), 1u);
  EXPECT_EQ(attacher_->attachments()->front().container_id, "c2");
  EXPECT_EQ(coordinator_.attached.count("uid-c1"), 0u);
}

TEST_F(PodAttacherTest, GcDetachesWhatIsNotValid) {
  ASSERT_TRUE(Handle(Request("ADD", "c1")).attached);
  ASSERT_TRUE(Handle(Request("ADD", "c2")).attached);
  cni::AttachRequest gc = Request("GC", "");
  gc.valid_attachments = {{"c2", "mesh0"}, {"c9", "mesh0"}};
  EXPECT_FALSE(Handle(gc).failed());
  ASSERT_EQ(Recorded(), 1u);
  EXPECT_EQ(attacher_->attachments()->front().container_id, "c2");
  // A GC for another mesh would detach everything: refused.
  gc.mesh = "prod";
  gc.valid_attachments.clear();
  EXPECT_EQ(Handle(gc).error.code, cni::kCniErrorMeshUnknown);
  EXPECT_EQ(Recorded(), 1u);
}

TEST_F(PodAttacherTest, BadRequestsNameTheField) {
  EXPECT_EQ(Handle(Request("RENAME", "c1")).error.code, cni::kCniErrorInvalidEnvironment);
  cni::AttachResponse r = Handle(Request("ADD", ""));
  EXPECT_EQ(r.error.code, cni::kCniErrorInvalidEnvironment);
  EXPECT_NE(r.error.msg.find("CNI_CONTAINERID"), std::string::npos);
}

TEST(PodAttachmentStoreTest, EncodeDecodeRoundTrip) {
  PodAttachment a;
  a.container_id = "c1";
  a.if_name = "mesh0";
  a.netns = "/proc/1/ns/net";
  a.pod_namespace = "ci";
  a.pod_name = "runner";
  a.pod_uid = "uid-1";
  a.name = "runner.ci.pod";
  a.addresses = {"10.99.1.1", "fd99:99::1:1"};
  a.host_interface = cni::HostInterfaceName("c1");
  a.attached_at = absl::FromUnixSeconds(1'800'000'000);
  PodAttachment b = a;
  b.container_id = "c2";
  b.detaching = true;
  std::map<PodAttachmentKey, PodAttachment> records{{a.key(), a}, {b.key(), b}};
  absl::StatusOr<std::map<PodAttachmentKey, PodAttachment>> decoded =
      PodAttachmentStore::Decode(PodAttachmentStore::Encode(records));
  ASSERT_TRUE(decoded.ok()) << decoded.status();
  EXPECT_EQ(*decoded, records);
}

TEST(PodAttachmentStoreTest, MissingFileIsEmptyAndCorruptFileIsAnErrorNamingIt) {
  TempDir dir;
  const std::string path = dir.path() + "/tm0.pods.json";
  absl::StatusOr<PodAttachmentStore> empty = PodAttachmentStore::Load(path);
  ASSERT_TRUE(empty.ok());
  EXPECT_EQ(empty->size(), 0u);
  for (const std::string& bad :
       {std::string("{\"version\": 1, \"pods\": [{\"containerId\": \"c1\"}]"),
        std::string("{\"version\": 2, \"pods\": []}"),
        std::string("{\"version\": 1, \"pods\": [{\"containerId\": \"c1\", \"ifName\": \"m\", "
                    "\"podUid\": \"u\", \"hostInterface\": \"h\", \"addresses\": [1]}]}"),
        std::string("{\"version\": 1, \"pods\": [{\"containerId\": \"c1\", \"ifName\": \"m\", "
                    "\"podUid\": \"u\", \"addresses\": []}]}")}) {
    ASSERT_TRUE(WriteFileAtomically(path, bad).ok());
    absl::StatusOr<PodAttachmentStore> store = PodAttachmentStore::Load(path);
    ASSERT_FALSE(store.ok()) << bad;
    EXPECT_NE(store.status().message().find(path), std::string::npos) << store.status();
  }
  // Two records of one attachment.
  const std::string one =
      "{\"containerId\": \"c1\", \"ifName\": \"m\", \"podUid\": \"u\", \"hostInterface\": "
      "\"h\", \"addresses\": []}";
  ASSERT_TRUE(
      WriteFileAtomically(path, "{\"version\": 1, \"pods\": [" + one + ", " + one + "]}").ok());
  EXPECT_FALSE(PodAttachmentStore::Load(path).ok());
  // More than the limit.
  ASSERT_TRUE(WriteFileAtomically(path, "{\"version\": 1, \"pods\": [" + one + "]}").ok());
  EXPECT_TRUE(PodAttachmentStore::Load(path, 1).ok());
  EXPECT_FALSE(PodAttachmentStore::Load(path, 0).ok());
}

TEST(PodAttachmentDecisionsTest, VanishedAndInvalid) {
  std::map<PodAttachmentKey, PodAttachment> records;
  auto add = [&](const std::string& id, absl::Time at, bool detaching) {
    PodAttachment a;
    a.container_id = id;
    a.if_name = "mesh0";
    a.host_interface = "veth-" + id;
    a.attached_at = at;
    a.detaching = detaching;
    records[a.key()] = a;
  };
  const absl::Time now = absl::FromUnixSeconds(1'800'000'000);
  add("old-gone", now - absl::Minutes(5), false);
  add("old-here", now - absl::Minutes(5), false);
  add("young-gone", now - absl::Seconds(5), false);
  add("detaching-gone", now - absl::Minutes(5), true);
  auto exists = [](const std::string& name) { return name == "veth-old-here"; };
  EXPECT_EQ(VanishedAttachments(records, exists, now, absl::Seconds(60)),
            (std::vector<PodAttachmentKey>{{"old-gone", "mesh0"}}));
  EXPECT_EQ(InvalidAttachments(records, {{"old-here", "mesh0"}, {"young-gone", "eth1"}}),
            (std::vector<PodAttachmentKey>{{"old-gone", "mesh0"}, {"young-gone", "mesh0"}}));
}

}  // namespace
}  // namespace tunnelmesh
