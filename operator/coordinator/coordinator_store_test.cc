// The coordinator off the store's critical path (member_writer.h) and its bounded watch queues
// (subscription.h): a store that blocks stalls only the registration that writes, failed writes
// are retried or reported, a slow watcher's backlog collapses into one full map, members.json
// keeps kinds as names, and a departed member's quarantine is durable before its record goes.
#include <fstream>
#include <random>
#include <thread>

#include "gtest/gtest.h"
#include "lib/base/file.h"
#include "operator/coordinator/address_allocator.h"
#include "operator/coordinator/coordinator.h"
#include "operator/coordinator/member_writer.h"
#include "operator/coordinator/subscription.h"
#include "operator/coordinator/testing/coordinator_fixtures.h"
#include "operator/coordinator/testing/fake_member_store.h"

namespace tunnelmesh {
namespace {

constexpr absl::Duration kWait = absl::Seconds(10);
// What "completes at once" means below: far less than any store wait, generous for a loaded
// machine.
constexpr absl::Duration kPrompt = absl::Seconds(2);

std::string Bearer(const coord::RegisterResponse& r) { return "Bearer " + r.session_token(); }

MemberRecord Record(const PublicKey& key, const std::string& name) {
  MemberRecord r;
  r.public_key = key;
  r.mesh = "demo";
  r.name = name;
  return r;
}

// A crash between the two writes must never free a departed member's addresses: the quarantine
// is written (and retried when it fails) before the member's record is deleted.
TEST(CoordinatorStoreTest, TheQuarantineIsDurableBeforeTheDepartedRecordGoes) {
  InitCrypto();
  FakeMemberStore store;
  Coordinator c(&store, {});
  c.SetMeshes(Meshes(MeshManifest(24)));
  const PublicKey bob = NewKey();
  ASSERT_TRUE(RegisterAs(c, Request(bob, "bob")).ok());
  store.FailNext(1, absl::UnavailableError("the API server is restarting"));
  ASSERT_TRUE(c.Leave(bob).ok());
  ASSERT_TRUE(c.FlushStore(kWait));
  EXPECT_EQ(store.ops(), (std::vector<std::string>{"quarantine", "remove"}));
  EXPECT_EQ(c.counters().store.retries.load(), 1u);
  const std::vector<QuarantineEntry> kept = store.quarantine();
  ASSERT_EQ(kept.size(), 2u);
  EXPECT_EQ(kept[0].key, bob);
  EXPECT_EQ(kept[0].name, "bob");
  EXPECT_FALSE(store.Stored(bob).has_value());
}

TEST(CoordinatorStoreTest, SlowStoreStallsOnlyTheMemberBeingWritten) {
  InitCrypto();
  FakeMemberStore store;
  Coordinator::Options options;
  options.register_write_deadline = absl::Seconds(60);
  Coordinator c(&store, options);
  c.SetMeshes(Meshes(MeshManifest(24)));
  const PublicKey a = NewKey(), b = NewKey();
  auto rb = RegisterAs(c, Request(b, "b"));
  ASSERT_TRUE(rb.ok()) << rb.status();
  auto watch_b = c.Watch(b);
  ASSERT_TRUE(watch_b.ok());
  coord::MapUpdate u;
  ASSERT_TRUE((*watch_b)->Next(&u, kWait));
  ASSERT_TRUE(u.full());

  // The API server hangs: a's MeshPeer write blocks, and so does its Register.
  store.Block();
  absl::StatusOr<coord::RegisterResponse> ra;
  std::thread registering([&] { ra = RegisterAs(c, Request(a, "a")); });
  ASSERT_TRUE(store.AwaitWaiting(1, kWait)) << "a's write reached the store";

  // Meanwhile every other call completes promptly.
  const absl::Time start = absl::Now();
  auto caller = c.Authenticate(Bearer(*rb));
  ASSERT_TRUE(caller.ok()) << caller.status();
  EXPECT_EQ(*caller, b);
  EXPECT_TRUE(c.IsMember(b));
  EXPECT_TRUE(c.IsMember(a)) << "the in-memory map is authoritative";
  EXPECT_TRUE(c.ReportEndpoints(b, {"192.0.2.5:51820"}).ok());
  EXPECT_TRUE(c.CallMeMaybe(b, a, {"192.0.2.5:51820"}).ok());
  auto again = RegisterAs(c, Request(b, "b"));
  ASSERT_TRUE(again.ok()) << "registering again unchanged writes nothing: " << again.status();
  auto rewatch = c.Watch(b);
  ASSERT_TRUE(rewatch.ok());
  ASSERT_TRUE((*rewatch)->Next(&u, kWait));
  EXPECT_EQ(u.upsert_peers_size(), 1) << "a is in b's map already";
  EXPECT_EQ(c.Members().size(), 2u);
  EXPECT_LT(absl::Now() - start, kPrompt);

  // Once the store answers, a's record lands and its Register returns.
  store.Unblock();
  registering.join();
  ASSERT_TRUE(ra.ok()) << ra.status();
  ASSERT_TRUE(store.Stored(a).has_value());
  EXPECT_EQ(store.Stored(a)->name, "a");
  EXPECT_EQ(store.Stored(a)->mesh_ips[0].ToString(), ra->mesh_ips(0));
}

TEST(CoordinatorStoreTest, RegisterAnswersUnavailableWhenItsWriteMissesTheDeadline) {
  InitCrypto();
  FakeMemberStore store;
  Coordinator::Options options;
  options.register_write_deadline = absl::Milliseconds(50);
  Coordinator c(&store, options);
  c.SetMeshes(Meshes(MeshManifest(24)));
  const PublicKey a = NewKey();
  store.Block();
  auto first = RegisterAs(c, Request(a, "a"));
  ASSERT_FALSE(first.ok());
  EXPECT_EQ(first.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_NE(first.status().message().find("not written"), std::string::npos) << first.status();
  // The agent retries; once the write landed, the retry (unchanged, so no new write) succeeds
  // with the same address.
  store.Unblock();
  ASSERT_TRUE(c.FlushStore(kWait));
  auto retry = RegisterAs(c, Request(a, "a"));
  ASSERT_TRUE(retry.ok()) << retry.status();
  EXPECT_EQ(store.puts(), 1);
  EXPECT_EQ(store.Stored(a)->mesh_ips[0].ToString(), retry->mesh_ips(0));
}

TEST(CoordinatorStoreTest, FailedWritesAreRetriedOrReported) {
  InitCrypto();
  FakeMemberStore store;
  Coordinator::Options options;
  options.writer.initial_backoff = std::chrono::milliseconds(1);
  options.writer.max_backoff = std::chrono::milliseconds(4);
  Coordinator c(&store, options);
  c.SetMeshes(Meshes(MeshManifest(24)));
  // An API server that errs twice, then recovers: the writer retries, Register succeeds.
  store.FailNext(2, absl::UnavailableError("connection refused"));
  const PublicKey a = NewKey();
  auto ra = RegisterAs(c, Request(a, "a"));
  ASSERT_TRUE(ra.ok()) << ra.status();
  EXPECT_TRUE(store.Stored(a).has_value());
  EXPECT_EQ(c.counters().store.failures.load(), 2u);
  EXPECT_EQ(c.counters().store.retries.load(), 2u);
  // An error a retry cannot fix is reported to the member whose record it is, and again on an
  // unchanged re-registration (its record is still not stored), until a new record is written.
  store.FailNext(1, absl::AlreadyExistsError("MeshPeer b belongs to another public key"));
  const PublicKey b = NewKey();
  auto rb = RegisterAs(c, Request(b, "b"));
  ASSERT_FALSE(rb.ok());
  EXPECT_NE(rb.status().message().find("belongs to another public key"), std::string::npos);
  EXPECT_EQ(c.counters().store.retries.load(), 2u) << "not retried";
  EXPECT_FALSE(RegisterAs(c, Request(b, "b")).ok());
  ASSERT_TRUE(RegisterAs(c, Request(b, "b-renamed")).ok());
  EXPECT_EQ(store.Stored(b)->name, "b-renamed");
  // Leave removes the record behind the member's back; a failure there is retried too.
  store.FailNext(1, absl::DeadlineExceededError("timed out"));
  ASSERT_TRUE(c.Leave(a).ok());
  ASSERT_TRUE(c.FlushStore(kWait));
  EXPECT_FALSE(store.Stored(a).has_value());
  EXPECT_EQ(store.removes(), 1);
}

TEST(MemberWriterTest, CoalescesPerKeyAndKeepsTheLatestRecord) {
  FakeMemberStore store;
  MemberWriterCounters counters;
  MemberWriter writer(&store, &counters);
  const PublicKey a = NewKey(), b = NewKey();
  store.Block();
  writer.Put(Record(a, "a1"));
  ASSERT_TRUE(store.AwaitWaiting(1, kWait));  // a1 is in flight.
  writer.Put(Record(b, "b1"));
  writer.Put(Record(a, "a2"));
  writer.Put(Record(a, "a3"));  // Replaces a2, which never reaches the store.
  writer.Observe(a, nullptr);   // Removes a in the store's memory; still written as a delete.
  writer.Put(Record(a, "a4"));
  EXPECT_EQ(counters.coalesced.load(), 3u);
  EXPECT_EQ(writer.backlog(), 3u) << "a in flight, b, a queued: bounded by the member count";
  EXPECT_EQ(writer.WaitDurable(b, absl::Milliseconds(10)).code(), absl::StatusCode::kUnavailable);
  store.Unblock();
  ASSERT_TRUE(writer.Flush(kWait));
  EXPECT_EQ(store.puts(), 3) << "a1, b1, a4";
  EXPECT_EQ(store.Stored(a)->name, "a4");
  EXPECT_EQ(store.Stored(b)->name, "b1");
  EXPECT_TRUE(writer.WaitDurable(a, kWait).ok());
}

TEST(SubscriptionTest, SlowReaderBacklogCollapsesIntoOneFullMap) {
  std::atomic<uint64_t> collapses{0};
  metrics::Histogram fanout(metrics::LatencyBuckets());
  int refills = 0;
  Subscription::Options options;
  options.max_pending = 4;
  options.collapses = &collapses;
  options.fanout_seconds = &fanout;
  options.refill = [&refills](Subscription* s) {
    ++refills;
    coord::MapUpdate full;
    full.set_full(true);
    full.set_version(100);
    s->ResetWithFullMap(full);
  };
  Subscription sub(options);
  for (int i = 1; i <= 4; ++i) {
    coord::MapUpdate delta;
    delta.set_version(i);
    EXPECT_EQ(sub.Push(delta), i == 1) << "only the first push into an empty queue wakes";
  }
  EXPECT_EQ(sub.pending(), 4u);
  // The reader is behind: the fifth delta collapses the backlog.
  coord::MapUpdate delta;
  delta.set_version(5);
  EXPECT_TRUE(sub.Push(delta));
  EXPECT_EQ(sub.pending(), 0u);
  EXPECT_FALSE(sub.Push(delta)) << "dropped: the full map will carry it";
  EXPECT_EQ(collapses.load(), 1u);
  EXPECT_TRUE(sub.HasWork());
  coord::MapUpdate out;
  ASSERT_EQ(sub.TryNext(&out), Subscription::Poll::kUpdate);
  EXPECT_TRUE(out.full());
  EXPECT_EQ(out.version(), 100u);
  EXPECT_EQ(refills, 1);
  EXPECT_EQ(sub.TryNext(&out), Subscription::Poll::kEmpty);
  EXPECT_EQ(fanout.Take().count, 0u) << "refills and dropped deltas are not observed";
  // Deltas after the full map queue normally again.
  delta.set_version(101);
  EXPECT_TRUE(sub.Push(delta));
  ASSERT_EQ(sub.TryNext(&out), Subscription::Poll::kUpdate);
  EXPECT_EQ(out.version(), 101u);
  // The delta's time in the queue was observed once.
  const metrics::Histogram::Snapshot observed = fanout.Take();
  EXPECT_EQ(observed.count, 1u);
  EXPECT_GE(observed.sum, 0.0);
  EXPECT_LT(observed.sum, 10.0);
  EXPECT_TRUE(sub.Cancel(absl::OkStatus()));
  EXPECT_EQ(sub.TryNext(&out), Subscription::Poll::kEnded);
}

TEST(SubscriptionTest, CoordinatorRefillsACollapsedWatcherWithTheCurrentMap) {
  InitCrypto();
  FakeMemberStore store;
  Coordinator::Options options;
  options.max_pending_updates = 2;
  Coordinator c(&store, options);
  c.SetMeshes(Meshes(MeshManifest(24)));
  const PublicKey slow = NewKey();
  ASSERT_TRUE(RegisterAs(c, Request(slow, "slow")).ok());
  auto sub = c.Watch(slow);
  ASSERT_TRUE(sub.ok());
  // The watcher reads nothing while six members join: full map + 2 deltas fit, then it collapses.
  std::vector<PublicKey> others;
  for (int i = 0; i < 6; ++i) {
    others.push_back(NewKey());
    ASSERT_TRUE(RegisterAs(c, Request(others.back(), "m" + std::to_string(i))).ok());
  }
  EXPECT_EQ(c.counters().watch_collapses.load(), 1u);
  coord::MapUpdate u;
  ASSERT_TRUE((*sub)->Next(&u, kWait));
  EXPECT_TRUE(u.full());
  EXPECT_EQ(u.upsert_peers_size(), 6) << "every member, in one map";
  EXPECT_FALSE((*sub)->Next(&u, absl::Milliseconds(10))) << "and nothing stale after it";
  ASSERT_TRUE(c.Leave(others[0]).ok());
  ASSERT_TRUE((*sub)->Next(&u, kWait));
  EXPECT_EQ(u.removed_peers_size(), 1);
}

TEST(StateStoreTest, KindsAreWrittenAsNamesAndOldNumbersStillLoad) {
  InitCrypto();
  const std::string dir = TempDir();
  const PublicKey node = NewKey(), old = NewKey();
  ASSERT_TRUE(WriteFileAtomically(dir + "/members.json",
                                  R"({"version": 1, "members": [{"public_key": ")" +
                                      old.ToBase64() +
                                      R"(", "mesh": "demo", "name": "old", "kind": 2}]})",
                                  0600)
                  .ok());
  auto store = StateStore::Open(dir);
  ASSERT_TRUE(store.ok()) << store.status();
  EXPECT_EQ((*store)->members().at(old).kind, coord::MEMBER_KIND_POD);
  MemberRecord record = Record(node, "n");
  record.kind = coord::MEMBER_KIND_NODE;
  ASSERT_TRUE((*store)->Put(record).ok());
  std::ifstream in(dir + "/members.json");
  const std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  EXPECT_NE(text.find(R"("kind": "Node")"), std::string::npos) << text;
  EXPECT_NE(text.find(R"("kind": "Pod")"), std::string::npos) << text;
  auto reopened = StateStore::Open(dir);
  ASSERT_TRUE(reopened.ok());
  EXPECT_EQ((*reopened)->members().at(node).kind, coord::MEMBER_KIND_NODE);
  ASSERT_TRUE(WriteFileAtomically(
                  dir + "/members.json",
                  R"({"members": [{"public_key": ")" + old.ToBase64() + R"(", "kind": "Robot"}]})",
                  0600)
                  .ok());
  auto bad = StateStore::Open(dir);
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("not Node, Pod or External"), std::string::npos);
}

// Against a reference model: the lowest free host of a /27 (offsets 1..30) is found by parsing
// "10.1.2.N" strings in order.
TEST(AddressAllocatorTest, MatchesAReferenceModelOnRandomUsedSets) {
  const Prefix cidr = *Prefix::Parse("10.1.2.32/27");
  std::mt19937 rng(7);
  for (int round = 0; round < 500; ++round) {
    std::set<IpAddress> used;
    for (int host = 0; host < 32; ++host) {
      if (rng() % 3 != 0) used.insert(*IpAddress::Parse("10.1.2." + std::to_string(32 + host)));
    }
    std::optional<IpAddress> expected;
    for (int host = 1; host <= 30 && !expected; ++host) {
      IpAddress ip = *IpAddress::Parse("10.1.2." + std::to_string(32 + host));
      if (!used.count(ip)) expected = ip;
    }
    absl::StatusOr<IpAddress> got = LowestFreeAddress(cidr, used);
    ASSERT_EQ(got.ok(), expected.has_value()) << round;
    if (expected) {
      EXPECT_EQ(*got, *expected) << round;
    }
  }
  EXPECT_EQ(NthAddress(*Prefix::Parse("fd99:99::/48"), 0x1ff).ToString(), "fd99:99::1ff");
}

}  // namespace
}  // namespace tunnelmesh
