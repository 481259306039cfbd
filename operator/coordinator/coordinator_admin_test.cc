// The standalone admin surface: listing members, removing one (evicted at once, refused until
// re-admitted, across a restart), the refused-join ring and its log limit, and the warning about
// two agents sharing one key.
#include <sys/stat.h>

#include <fstream>

#include "absl/strings/match.h"
#include "gtest/gtest.h"
#include "lib/base/file.h"
#include "nlohmann/json.hpp"
#include "operator/coordinator/admin_requests.h"
#include "operator/coordinator/coordinator.h"
#include "operator/coordinator/testing/coordinator_fixtures.h"

namespace tunnelmesh {
namespace {

nlohmann::json Ask(AdminRequests& admin, const nlohmann::json& request) {
  const std::string response = admin.Handle(request.dump());
  nlohmann::json doc = nlohmann::json::parse(response, nullptr, false);
  EXPECT_FALSE(doc.is_discarded()) << response;
  return doc;
}

bool Contains(const std::string& text, const std::string& part) {
  return text.find(part) != std::string::npos;
}

// Every update queued for `sub` until it has none; true when one removed `key`.
bool SawRemoval(Subscription& sub, const PublicKey& key) {
  const std::string bytes(reinterpret_cast<const char*>(key.bytes.data()), kKeySize);
  bool removed = false;
  coord::MapUpdate update;
  while (sub.TryNext(&update) == Subscription::Poll::kUpdate) {
    for (const std::string& r : update.removed_peers()) removed = removed || r == bytes;
  }
  return removed;
}

TEST(CoordinatorAdminTest, MembersListNamesKindsAndWhoIsOnline) {
  InitCrypto();
  auto store = *StateStore::Open(TempDir());
  Coordinator c(store.get(), {});
  c.SetMeshes(Meshes());
  const PublicKey a = NewKey(), b = NewKey();
  ASSERT_TRUE(RegisterAs(c, Request(a, "alpha")).ok());
  coord::RegisterRequest node = Request(b, "beta");
  node.set_kind(coord::MEMBER_KIND_POD);
  ASSERT_TRUE(RegisterAs(c, node).ok());
  auto watch = c.Watch(a, "192.0.2.1:4000");
  ASSERT_TRUE(watch.ok());
  auto removed = RemovedKeys::Open("");
  AdminRequests admin(&c, removed->get());
  nlohmann::json doc = Ask(admin, {{"op", "members"}});
  ASSERT_EQ(doc["members"].size(), 2u) << doc;
  std::map<std::string, nlohmann::json> by_name;
  for (const auto& m : doc["members"]) by_name[m["name"]] = m;
  EXPECT_EQ(by_name["alpha"]["kind"], "External");
  EXPECT_EQ(by_name["beta"]["kind"], "Pod");
  EXPECT_EQ(by_name["alpha"]["online"], true);
  EXPECT_FALSE(by_name["alpha"]["last_seen"].is_null());
  EXPECT_EQ(by_name["beta"]["online"], false);
  EXPECT_EQ(by_name["alpha"]["mesh"], "demo");
  EXPECT_EQ(by_name["alpha"]["public_key"], a.ToBase64());
  EXPECT_EQ(by_name["alpha"]["mesh_ips"][0], "10.99.0.1");
  // The stream ends (the agent went away): offline, last seen then.
  const Subscription* ended = watch->get();
  (*watch)->Cancel();
  c.WatchEnded(a, ended);
  watch->reset();
  doc = Ask(admin, {{"op", "members"}});
  for (const auto& m : doc["members"]) {
    EXPECT_EQ(m["online"], false) << m;
    if (m["name"] == "alpha") {
      EXPECT_TRUE(m["last_seen"].is_string()) << m;
    }
  }
  EXPECT_TRUE(Ask(admin, {{"op", "nonsense"}}).contains("error"));
  EXPECT_TRUE(Contains(admin.Handle("not json"), "\"error\""));
  EXPECT_TRUE(Contains(admin.Handle(std::string(5000, '{')), "4096"));
}

TEST(CoordinatorAdminTest, RemovedMemberIsEvictedAndRefusedUntilReadmitted) {
  InitCrypto();
  const std::string dir = TempDir();
  auto store = *StateStore::Open(dir);
  auto removed = *RemovedKeys::Open(dir);
  Coordinator::Options options;
  options.removed_keys = removed.get();
  Coordinator c(store.get(), options);
  c.SetMeshes(Meshes());
  const PublicKey lost = NewKey(), other = NewKey();
  ASSERT_TRUE(RegisterAs(c, Request(lost, "laptop")).ok());
  ASSERT_TRUE(RegisterAs(c, Request(other, "desk")).ok());
  auto lost_watch = c.Watch(lost);
  auto other_watch = c.Watch(other);
  ASSERT_TRUE(lost_watch.ok() && other_watch.ok());
  SawRemoval(**other_watch, lost);  // Drain the full map.

  AdminRequests admin(&c, removed.get());
  EXPECT_EQ(Ask(admin, {{"op", "remove"}, {"member", "nobody"}})["code"], "NOT_FOUND");
  nlohmann::json doc = Ask(admin, {{"op", "remove"}, {"member", "laptop"}});
  ASSERT_TRUE(doc.contains("removed")) << doc;
  EXPECT_EQ(doc["removed"]["public_key"], lost.ToBase64());
  EXPECT_EQ(doc["removed"]["was_member"], true);
  EXPECT_EQ(c.counters().admin_removals.load(), 1u);

  // Evicted at once: its watch ends with the eviction error agents stop on; the mesh is told.
  EXPECT_TRUE((*lost_watch)->cancelled());
  EXPECT_EQ((*lost_watch)->reason().code(), absl::StatusCode::kPermissionDenied);
  EXPECT_TRUE(Contains(std::string((*lost_watch)->reason().message()), "readmit"));
  EXPECT_TRUE(SawRemoval(**other_watch, lost));
  EXPECT_FALSE(c.IsMember(lost));
  ASSERT_TRUE(c.FlushStore(absl::Seconds(5)));
  EXPECT_FALSE(Contains(*ReadFile(dir + "/members.json"), lost.ToBase64()));
  EXPECT_TRUE(Contains(*ReadFile(dir + "/members.json"), other.ToBase64()));

  // Refused with the token and all, with a message that says how to re-admit it.
  auto again = RegisterAs(c, Request(lost, "laptop"));
  ASSERT_FALSE(again.ok());
  EXPECT_EQ(again.status().code(), absl::StatusCode::kPermissionDenied);
  const std::string message(again.status().message());
  EXPECT_TRUE(Contains(message, "removed by an admin")) << message;
  EXPECT_TRUE(Contains(message, "tunnelmesh-operator readmit " + lost.ToBase64())) << message;
  EXPECT_TRUE(Contains(message, "--state-dir " + dir)) << message;
  EXPECT_EQ(c.counters().refused_removed_keys.load(), 1u);
  EXPECT_EQ(Ask(admin, {{"op", "remove"}, {"member", lost.ToBase64()}})["code"], "ALREADY_EXISTS");
  EXPECT_EQ(Ask(admin, {{"op", "removed"}})["removed"].size(), 1u);

  // Re-admitted by a prefix of its key, as `members` prints it: it joins again.
  EXPECT_EQ(Ask(admin, {{"op", "readmit"}, {"key", "zz"}})["code"], "NOT_FOUND");
  doc = Ask(admin, {{"op", "readmit"}, {"key", lost.Short()}});
  ASSERT_TRUE(doc.contains("readmitted")) << doc;
  EXPECT_EQ(doc["readmitted"]["name"], "laptop");
  auto back = RegisterAs(c, Request(lost, "laptop"));
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(back->mesh_ips(0), "10.99.0.1") << "its quarantined address comes back to it";
}

TEST(CoordinatorAdminTest, RemovedKeysSurviveARestartAndADamagedFileIsNamed) {
  InitCrypto();
  const std::string dir = TempDir();
  const PublicKey key = NewKey();
  {
    auto removed = *RemovedKeys::Open(dir);
    ASSERT_TRUE(removed->Add({key, "laptop", "demo", absl::FromUnixSeconds(1700000000)}).ok());
  }
  const std::string path = dir + "/removed-keys.json";
  struct stat st {};
  ASSERT_EQ(stat(path.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  auto removed = *RemovedKeys::Open(dir);
  std::optional<RemovedKey> found = removed->Find(key);
  ASSERT_TRUE(found.has_value());
  EXPECT_EQ(found->name, "laptop");
  EXPECT_EQ(found->removed_at, absl::FromUnixSeconds(1700000000));
  // The restarted coordinator refuses it before it is a member again.
  auto store = *StateStore::Open(TempDir());
  Coordinator::Options options;
  options.removed_keys = removed.get();
  Coordinator c(store.get(), options);
  c.SetMeshes(Meshes());
  auto r = RegisterAs(c, Request(key, "laptop"));
  ASSERT_FALSE(r.ok());
  EXPECT_TRUE(Contains(std::string(r.status().message()), "2023-11-14T22:13:20Z")) << r.status();
  ASSERT_TRUE(removed->Readmit(key).ok());
  EXPECT_FALSE(RemovedKeys::Open(dir).value()->Find(key).has_value());

  std::ofstream(path) << "{\"removed\": [{\"name\": \"x\"}]}";
  auto damaged = RemovedKeys::Open(dir);
  ASSERT_FALSE(damaged.ok());
  EXPECT_TRUE(Contains(std::string(damaged.status().message()), path)) << damaged.status();
  std::ofstream(path) << "garbage";
  EXPECT_FALSE(RemovedKeys::Open(dir).ok());
}

TEST(CoordinatorAdminTest, RefusedJoinsAreKeptInABoundedRingAndLoggedRateLimited) {
  RefusedJoins::Options options;
  options.capacity = 4;
  options.logged_per_source = 3;
  RefusedJoins ring(options);
  const absl::Time t0 = absl::FromUnixSeconds(1000);
  for (int i = 0; i < 10; ++i) {
    ring.Record({t0 + absl::Seconds(i), "198.51.100.7:" + std::to_string(40000 + i), "-",
                 "n" + std::to_string(i), "", absl::StatusCode::kPermissionDenied, "wrong token"},
                "198.51.100.7");
  }
  std::vector<RefusedJoin> recent = ring.Recent();
  ASSERT_EQ(recent.size(), 4u);
  EXPECT_EQ(recent.front().name, "n6");
  EXPECT_EQ(recent.back().name, "n9");
  EXPECT_EQ(ring.total(), 10u);
  EXPECT_EQ(ring.unlogged(), 7u) << "three lines per source per minute, the rest summarized";
  // Another source has its own share; the next minute starts a new one.
  ring.Record({t0, "203.0.113.1:1", "-", "x", "", absl::StatusCode::kNotFound, "no mesh"},
              "203.0.113.1");
  EXPECT_EQ(ring.unlogged(), 7u);
  ring.Tick(t0 + absl::Minutes(2));
  ring.Record({t0 + absl::Minutes(2), "198.51.100.7:1", "-", "y", "",
               absl::StatusCode::kPermissionDenied, "wrong token"},
              "198.51.100.7");
  EXPECT_EQ(ring.unlogged(), 7u);
  EXPECT_EQ(PrintableText("a\nb\"c\x01\xff"), "a?b\"c??");
  EXPECT_EQ(PrintableText(std::string(100, 'x'), 8), "xxxxxxxx...");
}

TEST(CoordinatorAdminTest, RefusedRegistrationsAreListedWithTheirReasonAndNoToken) {
  InitCrypto();
  auto store = *StateStore::Open(TempDir());
  Coordinator c(store.get(), {});
  c.SetMeshes(Meshes());
  const PublicKey key = NewKey();
  coord::RegisterRequest request = Request(key, "intruder", "the wrong secret token");
  auto r = RegisterAs(c, request, "198.51.100.9");
  ASSERT_FALSE(r.ok());
  c.NoteRefusedJoin(request, "198.51.100.9:5555", "198.51.100.9", r.status());
  auto removed = *RemovedKeys::Open("");
  AdminRequests admin(&c, removed.get());
  nlohmann::json doc = Ask(admin, {{"op", "refused"}});
  ASSERT_EQ(doc["refused"].size(), 1u) << doc;
  const nlohmann::json& e = doc["refused"][0];
  EXPECT_EQ(e["source"], "198.51.100.9:5555");
  EXPECT_EQ(e["key"], key.Short());
  EXPECT_EQ(e["name"], "intruder");
  EXPECT_EQ(e["code"], "PERMISSION_DENIED");
  EXPECT_TRUE(Contains(e["reason"].get<std::string>(), "join token")) << e;
  EXPECT_FALSE(Contains(doc.dump(), "the wrong secret token"));
  EXPECT_EQ(doc["capacity"], 256);
}

TEST(CoordinatorAdminTest, TwoAgentsWithOneKeyAreWarnedAboutOncePerEpisode) {
  InitCrypto();
  auto store = *StateStore::Open(TempDir());
  absl::Time now = absl::FromUnixSeconds(5000);
  Coordinator::Options options;
  options.now = [&now] { return now; };
  Coordinator c(store.get(), options);
  c.SetMeshes(Meshes());
  const PublicKey key = NewKey();
  ASSERT_TRUE(RegisterAs(c, Request(key, "dave")).ok());
  auto first = c.Watch(key, "192.0.2.10:4000");
  ASSERT_TRUE(first.ok());
  // A reconnect before the old stream was noticed gone: one takeover, no warning.
  auto second = c.Watch(key, "192.0.2.20:4000");
  ASSERT_TRUE(second.ok());
  EXPECT_EQ((*first)->reason().code(), absl::StatusCode::kAborted);
  EXPECT_TRUE(Contains(std::string((*first)->reason().message()), "192.0.2.20:4000"))
      << (*first)->reason();
  EXPECT_EQ(c.counters().watch_takeovers.load(), 1u);
  EXPECT_EQ(c.counters().duplicate_key_warnings.load(), 0u);
  // Two agents taking the watch from each other, 200 ms apart; the last watch stays.
  std::vector<std::shared_ptr<Subscription>> watches;
  auto fight = [&](int rounds) {
    for (int i = 0; i < rounds; ++i) {
      now += absl::Milliseconds(200);
      auto next = c.Watch(key, i % 2 == 0 ? "192.0.2.10:4000" : "192.0.2.20:4000");
      ASSERT_TRUE(next.ok());
      watches.push_back(*next);
    }
  };
  fight(6);
  EXPECT_EQ(c.counters().watch_takeovers.load(), 7u);
  EXPECT_EQ(c.counters().duplicate_key_warnings.load(), 1u) << "warned once per episode";
  // A watch that ended already is no takeover.
  watches.back()->Cancel();
  auto after_end = c.Watch(key, "192.0.2.10:4000");
  ASSERT_TRUE(after_end.ok());
  EXPECT_EQ(c.counters().watch_takeovers.load(), 7u);
  // Quiet for longer than an episode, then fighting again: a new warning.
  now += Coordinator::kTakeoverEpisode + absl::Seconds(1);
  fight(3);
  EXPECT_EQ(c.counters().duplicate_key_warnings.load(), 2u);
}

}  // namespace
}  // namespace tunnelmesh
