// The coordinator's gRPC front end over real TLS on 127.0.0.1 (a free port), with real generated
// client stubs: the listener watchdog's decisions (ListenerWatchdog), the probe and the rebuild on
// the same port, the watchdog thread with an injected probe, and a member that never reads its
// Watch stream while another keeps getting every change quickly and memory stays flat (finding 4
// of the security review).
#include "operator/coordinator/grpc_service.h"

#include <grpcpp/grpcpp.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "gtest/gtest.h"
#include "lib/crypto/x509.h"
#include "operator/coordinator/testing/coordinator_fixtures.h"
#include "operator/coordinator/testing/fake_member_store.h"
#include "proto/coordinator.grpc.pb.h"

#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define TM_SANITIZED 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer)
#define TM_SANITIZED 1
#endif
#endif

namespace tunnelmesh {
namespace {

namespace coord = ::tunnelmesh::coordinator::v1;
using Verdict = ListenerWatchdog::Verdict;

TEST(ListenerWatchdogTest, RebuildsOnlyAfterConsecutiveFailuresWithDescriptorsFree) {
  ListenerWatchdog w(3);
  EXPECT_EQ(w.Observe(true, true), Verdict::kHealthy);
  EXPECT_EQ(w.Observe(false, true), Verdict::kFailing);
  EXPECT_EQ(w.Observe(false, true), Verdict::kFailing);
  // A success in between starts the count again: a slow probe is not an outage.
  EXPECT_EQ(w.Observe(true, true), Verdict::kHealthy);
  EXPECT_EQ(w.Observe(false, true), Verdict::kFailing);
  EXPECT_EQ(w.Observe(false, true), Verdict::kFailing);
  EXPECT_EQ(w.Observe(false, true), Verdict::kRebuild);
  // After a rebuild the count starts again.
  EXPECT_EQ(w.consecutive_failures(), 0);
  EXPECT_EQ(w.Observe(false, true), Verdict::kFailing);
}

TEST(ListenerWatchdogTest, WaitsWhileDescriptorsAreExhausted) {
  ListenerWatchdog w(2);
  EXPECT_EQ(w.Observe(false, false), Verdict::kFailing);
  EXPECT_EQ(w.Observe(false, false), Verdict::kWaitForDescriptors);
  EXPECT_EQ(w.Observe(false, false), Verdict::kWaitForDescriptors);
  // Descriptors free again and the port still dead: rebuild at once.
  EXPECT_EQ(w.Observe(false, true), Verdict::kRebuild);
  EXPECT_EQ(w.Observe(true, true), Verdict::kHealthy);
}

bool Eventually(const std::function<bool()>& condition, absl::Duration timeout) {
  const absl::Time deadline = absl::Now() + timeout;
  while (!condition()) {
    if (absl::Now() > deadline) return false;
    absl::SleepFor(absl::Milliseconds(5));
  }
  return true;
}

// Resident memory of this process, from /proc/self/statm.
size_t ResidentBytes() {
  std::ifstream statm("/proc/self/statm");
  size_t size = 0, resident = 0;
  statm >> size >> resident;
  return resident * static_cast<size_t>(sysconf(_SC_PAGESIZE));
}

class CoordinatorServerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    InitCrypto();
    Coordinator::Options options;
    // The slow-reader test sends thousands of endpoint reports from one member.
    options.reports_per_member = {.rate = 1e6, .burst = 1e6};
    coordinator_ = std::make_unique<Coordinator>(&store_, std::move(options));
    coordinator_->SetMeshes(Meshes(MeshManifest(16)));
    absl::StatusOr<PemPair> ca = MakeCa();
    ASSERT_TRUE(ca.ok()) << ca.status();
    absl::StatusOr<PemPair> cert = IssueServerCert(*ca);
    ASSERT_TRUE(cert.ok()) << cert.status();
    tls_ = TlsIdentity{ca->cert_pem, cert->cert_pem + ca->cert_pem, cert->key_pem};
    absl::StatusOr<std::unique_ptr<CoordinatorServer>> server =
        CoordinatorServer::Start(coordinator_.get(), tls_, "127.0.0.1", 0);
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = *std::move(server);
  }

  void TearDown() override {
    if (server_ != nullptr) server_->Shutdown();
  }

  // A client channel of its own (no connection shared with another member's). `small_window`:
  // no BDP probing, so that the client buffers at most HTTP/2's initial 64 kB window of a stream
  // it does not read (what the client holds is not the coordinator's memory, but it is the same
  // process's RSS).
  std::unique_ptr<coord::Coordinator::Stub> NewStub(bool small_window = false) {
    grpc::SslCredentialsOptions ssl;
    ssl.pem_root_certs = tls_.ca_cert_pem;
    grpc::ChannelArguments args;
    args.SetSslTargetNameOverride(kCoordinatorServerName);
    args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
    if (small_window) args.SetInt(GRPC_ARG_HTTP2_BDP_PROBE, 0);
    return coord::Coordinator::NewStub(grpc::CreateCustomChannel(
        "127.0.0.1:" + std::to_string(server_->port()), grpc::SslCredentials(ssl), args));
  }

  // A Hello through `stub`, and the request for `key` with its proof of possession.
  static grpc::Status Proved(coord::Coordinator::Stub* stub, coord::RegisterRequest* request) {
    coord::HelloRequest hello;
    hello.set_nonce(std::string(16, 'n'));
    coord::HelloResponse challenge;
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
    const grpc::Status status = stub->Hello(&context, hello, &challenge);
    if (status.ok()) Prove(request, challenge);
    return status;
  }

  // Registers through `stub`; the session token.
  std::string Register(coord::Coordinator::Stub* stub, const PublicKey& key,
                       const std::string& name, const std::map<std::string, std::string>& labels) {
    coord::RegisterRequest request = Request(key, name);
    for (const auto& [k, v] : labels) (*request.mutable_labels())[k] = v;
    const grpc::Status hello = Proved(stub, &request);
    EXPECT_TRUE(hello.ok()) << hello.error_message();
    coord::RegisterResponse response;
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(20));
    const grpc::Status status = stub->Register(&context, request, &response);
    EXPECT_TRUE(status.ok()) << status.error_message();
    return response.session_token();
  }

  FakeMemberStore store_;
  std::unique_ptr<Coordinator> coordinator_;
  TlsIdentity tls_;
  std::unique_ptr<CoordinatorServer> server_;
};

TEST_F(CoordinatorServerTest, PeerPathsArriveAndMalformedOnesAreRefused) {
  auto stub = NewStub();
  const PublicKey carol = NewKey(), dave = NewKey();
  const std::string token = Register(stub.get(), carol, "carol", {});
  Register(stub.get(), dave, "dave", {});
  auto report = [&](const std::string& key, coord::PathKind path) {
    coord::ReportEndpointsRequest request;
    request.set_direct_peers(path == coord::PATH_KIND_DIRECT ? 1 : 0);
    coord::PeerPath* p = request.add_peer_paths();
    p->set_public_key(key);
    p->set_path(path);
    coord::ReportEndpointsResponse response;
    grpc::ClientContext context;
    context.AddMetadata("authorization", "Bearer " + token);
    context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
    return stub->ReportEndpoints(&context, request, &response);
  };
  const std::string dave_key(reinterpret_cast<const char*>(dave.bytes.data()), kKeySize);
  ASSERT_TRUE(report(dave_key, coord::PATH_KIND_DIRECT).ok());
  MemberPaths paths = coordinator_->PathsOf(carol, 16, 0);
  ASSERT_EQ(paths.first.size(), 1u);
  EXPECT_EQ(paths.first[0],
            (std::pair<std::string, coord::PathKind>{"dave", coord::PATH_KIND_DIRECT}));
  const uint64_t malformed = coordinator_->counters().malformed_requests.load();
  grpc::Status status = report("short", coord::PATH_KIND_RELAY);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_NE(status.error_message().find("not 32 bytes"), std::string::npos)
      << status.error_message();
  status = report(dave_key, static_cast<coord::PathKind>(7));
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(coordinator_->counters().malformed_requests.load(), malformed + 2);
  EXPECT_EQ(coordinator_->PathsOf(carol, 16, 0).first[0].second, coord::PATH_KIND_DIRECT);
}

TEST_F(CoordinatorServerTest, ProbeConnectsAndRebuildKeepsThePortAndServes) {
  EXPECT_TRUE(server_->ProbeAccepting(absl::Seconds(10)));
  const int port = server_->port();
  auto stub = NewStub();
  EXPECT_FALSE(Register(stub.get(), NewKey(), "before", {}).empty());

  ASSERT_TRUE(server_->Rebuild().ok());
  EXPECT_EQ(server_->port(), port);
  EXPECT_TRUE(server_->ProbeAccepting(absl::Seconds(10)));
  // The old channel reconnects to the new server by itself.
  EXPECT_TRUE(Eventually(
      [&] {
        coord::RegisterRequest request = Request(NewKey(), "after");
        if (!Proved(stub.get(), &request).ok()) return false;
        coord::RegisterResponse response;
        grpc::ClientContext context;
        context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
        return stub->Register(&context, request, &response).ok();
      },
      absl::Seconds(20)));

  // Nothing listens after Shutdown: the probe says so within its timeout.
  server_->Shutdown();
  EXPECT_FALSE(server_->ProbeAccepting(absl::Milliseconds(500)));
}

TEST_F(CoordinatorServerTest, WatchdogRebuildsAfterConsecutiveFailedProbes) {
  std::atomic<int> probes{0};
  CoordinatorServer::WatchdogOptions options;
  options.interval = absl::Milliseconds(10);
  options.failures_before_rebuild = 3;
  // Probes 1-3 fail (the listener "died"), 4-5 fail while descriptors are short, then all pass.
  options.probe = [&probes](absl::Duration) { return ++probes > 5; };
  options.descriptors_available = [&probes] { return probes.load() != 4 && probes.load() != 5; };
  server_->StartWatchdog(options);
  const ListenerWatchdogCounters& c = server_->watchdog_counters();
  ASSERT_TRUE(Eventually([&] { return c.checks.load() >= 10; }, absl::Seconds(30)));
  // Probe 3 rebuilt (descriptors were free); 4 and 5 counted as failures of the new server but
  // fewer than three in a row before 6 succeeded.
  EXPECT_EQ(c.restarts.load(), 1u);
  EXPECT_EQ(c.restart_failures.load(), 0u);
  EXPECT_EQ(c.failed_checks.load(), 5u);
  EXPECT_EQ(c.descriptor_waits.load(), 0u);
  EXPECT_TRUE(server_->ProbeAccepting(absl::Seconds(10)));
}

TEST_F(CoordinatorServerTest, WatchdogWaitsForDescriptorsBeforeRebuilding) {
  std::atomic<bool> descriptors{false};
  CoordinatorServer::WatchdogOptions options;
  options.interval = absl::Milliseconds(10);
  options.failures_before_rebuild = 2;
  options.probe = [](absl::Duration) { return false; };
  options.descriptors_available = [&descriptors] { return descriptors.load(); };
  server_->StartWatchdog(options);
  const ListenerWatchdogCounters& c = server_->watchdog_counters();
  ASSERT_TRUE(Eventually([&] { return c.descriptor_waits.load() >= 3; }, absl::Seconds(30)));
  EXPECT_EQ(c.restarts.load(), 0u);
  descriptors = true;
  ASSERT_TRUE(Eventually([&] { return c.restarts.load() >= 1; }, absl::Seconds(30)));
  EXPECT_EQ(c.restart_failures.load(), 0u);
}

// Finding 4: a member that opens its Watch and never reads it. The coordinator may hold at most
// Options::max_pending_updates deltas for it (then one full map); another member sees every
// checkpoint change promptly; thousands of large deltas (a third member's endpoint reports, each
// carrying its 64 long labels, about 8 kB) leave the process's resident memory flat.
TEST_F(CoordinatorServerTest, MemberThatNeverReadsItsWatchCostsBoundedMemoryAndDelaysNobody) {
  constexpr int kChanges = 4000;
  constexpr int kCheckpointEvery = 200;
  const absl::Duration kMaxDelay = absl::Seconds(5);

  // Carol reports; her labels make every delta about 8 kB.
  std::map<std::string, std::string> labels;
  for (int i = 0; i < 64; ++i) {
    labels["label-" + std::to_string(i) + std::string(50, 'k')] = std::string(60, 'v');
  }
  auto carol_stub = NewStub();
  const PublicKey carol = NewKey();
  const std::string carol_token = Register(carol_stub.get(), carol, "carol", labels);
  const std::string carol_key(reinterpret_cast<const char*>(carol.bytes.data()), kKeySize);

  // Alice reads her stream on a thread and keeps the last endpoint of carol's she saw.
  auto alice_stub = NewStub();
  const std::string alice_token = Register(alice_stub.get(), NewKey(), "alice", {});
  absl::Mutex alice_mu;
  std::string alice_saw;  // Carol's first endpoint in alice's latest update about her.
  grpc::ClientContext alice_context;
  alice_context.AddMetadata("authorization", "Bearer " + alice_token);
  std::unique_ptr<grpc::ClientReader<coord::MapUpdate>> alice_reader =
      alice_stub->Watch(&alice_context, coord::WatchRequest());
  std::thread alice([&] {
    coord::MapUpdate update;
    while (alice_reader->Read(&update)) {
      for (const coord::Peer& peer : update.upsert_peers()) {
        if (peer.public_key() != carol_key || peer.endpoints_size() == 0) continue;
        absl::MutexLock lock(&alice_mu);
        alice_saw = peer.endpoints(0);
      }
    }
  });

  // Bob opens his Watch and never reads it.
  auto bob_stub = NewStub(/*small_window=*/true);
  const std::string bob_token = Register(bob_stub.get(), NewKey(), "bob", {});
  grpc::ClientContext bob_context;
  bob_context.AddMetadata("authorization", "Bearer " + bob_token);
  std::unique_ptr<grpc::ClientReader<coord::MapUpdate>> bob_reader =
      bob_stub->Watch(&bob_context, coord::WatchRequest());

  auto report = [&](int i) {
    coord::ReportEndpointsRequest request;
    request.add_endpoints("192.0.2.7:" + std::to_string(10000 + i));
    coord::ReportEndpointsResponse response;
    grpc::ClientContext context;
    context.AddMetadata("authorization", "Bearer " + carol_token);
    context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(20));
    const grpc::Status status = carol_stub->ReportEndpoints(&context, request, &response);
    ASSERT_TRUE(status.ok()) << status.error_message();
  };
  auto alice_sees = [&](int i) {
    const std::string want = "192.0.2.7:" + std::to_string(10000 + i);
    return Eventually(
        [&] {
          absl::MutexLock lock(&alice_mu);
          return alice_saw == want;
        },
        kMaxDelay);
  };

  // Warm-up: TLS sessions, gRPC's buffers, the allocator's pools, bob's flow-control window fills.
  for (int i = 0; i < kCheckpointEvery; ++i) report(i);
  ASSERT_TRUE(alice_sees(kCheckpointEvery - 1));
  const size_t rss_before = ResidentBytes();
  absl::Duration slowest = absl::ZeroDuration();
  int checkpoints = 0;
  for (int i = kCheckpointEvery; i < kChanges; ++i) {
    report(i);
    if (HasFatalFailure()) break;
    if ((i + 1) % kCheckpointEvery != 0) continue;
    const absl::Time start = absl::Now();
    ASSERT_TRUE(alice_sees(i)) << "alice did not see change " << i << " within " << kMaxDelay;
    slowest = std::max(slowest, absl::Now() - start);
    ++checkpoints;
  }
  const size_t rss_after = ResidentBytes();
  EXPECT_EQ(checkpoints, kChanges / kCheckpointEvery - 1);
  // Bob's backlog collapsed (at least once) instead of growing: about 30 MB of deltas went his way.
  EXPECT_GE(coordinator_->counters().watch_collapses.load(), 1u);
  const double grown_mb = (static_cast<double>(rss_after) - static_cast<double>(rss_before)) / 1e6;
  RecordProperty("rss_growth_kb", static_cast<int>(grown_mb * 1000));
  RecordProperty("slowest_checkpoint_ms", static_cast<int>(absl::ToDoubleMilliseconds(slowest)));
  std::printf("slow reader: %d changes, rss %.1f MB -> %.1f MB, slowest checkpoint %s\n", kChanges,
              rss_before / 1e6, rss_after / 1e6, absl::FormatDuration(slowest).c_str());
#ifndef TM_SANITIZED
  // An unbounded queue for bob would hold (kChanges - 200) deltas of about 8 kB and their copies
  // (measured: 64 MB of growth with max_pending_updates raised to a million). Bounded: at most 256
  // of them (2 MB) and one full map (measured: about 3 MB of growth). (Sanitizers keep freed memory
  // in quarantine, so RSS says nothing there.)
  EXPECT_LT(grown_mb, 12.0) << "resident memory grew while a member did not read its stream";
#endif

  // When bob finally reads, he gets what was already in flight, then a full map with carol's
  // latest endpoint.
  const std::string latest = "192.0.2.7:" + std::to_string(10000 + kChanges - 1);
  bool bob_current = false;
  int bob_full_maps = 0;
  coord::MapUpdate update;
  while (!bob_current && bob_reader->Read(&update)) {
    if (update.full()) ++bob_full_maps;
    for (const coord::Peer& peer : update.upsert_peers()) {
      if (peer.public_key() == carol_key && peer.endpoints_size() > 0 &&
          peer.endpoints(0) == latest) {
        bob_current = true;
      }
    }
  }
  EXPECT_TRUE(bob_current);
  // The first full map opened the stream; the second replaced the collapsed backlog.
  EXPECT_GE(bob_full_maps, 2) << "bob's backlog should have collapsed into a full map";

  bob_context.TryCancel();
  alice_context.TryCancel();
  alice.join();
}

}  // namespace
}  // namespace tunnelmesh
