#include "operator/coordinator/coordinator.h"

#include <unistd.h>

#include <atomic>

#include "gtest/gtest.h"
#include "operator/coordinator/testing/coordinator_fixtures.h"
#include "operator/coordinator/testing/fake_member_store.h"

namespace tunnelmesh {
namespace {

TEST(ManifestsTest, ParsesMeshAndResolvesSecret) {
  auto meshes = Meshes();
  ASSERT_EQ(meshes.size(), 1u);
  EXPECT_EQ(meshes[0].name, "demo");
  EXPECT_EQ(meshes[0].domain, "mesh");
  EXPECT_EQ(meshes[0].join_token, "a long random string for tests");
  ASSERT_TRUE(meshes[0].ipv6_cidr.has_value());
}

TEST(ManifestsTest, ErrorsNameTheField) {
  std::vector<MeshSpec> meshes;
  std::map<std::string, std::map<std::string, std::string>> secrets;
  auto s = ParseManifestText(
      "apiVersion: tunnelmesh.io/v1alpha1\nkind: Mesh\nmetadata: {name: x}\nspec: {ipv4CIDR: "
      "10.0.0.300/16}\n",
      "m.yaml", &meshes, &secrets);
  ASSERT_FALSE(s.ok());
  EXPECT_NE(std::string(s.message()).find("spec.ipv4CIDR"), std::string::npos) << s;
  s = ParseManifestText("kind: [unclosed", "bad.yaml", &meshes, &secrets);
  ASSERT_FALSE(s.ok());
  EXPECT_NE(std::string(s.message()).find("bad.yaml"), std::string::npos);
  s = ParseManifestText(
      "apiVersion: tunnelmesh.io/v1alpha1\nkind: Mesh\nmetadata: {name: x}\nspec: {ipv4CIDR: "
      "10.0.0.0/16, defaultAction: Maybe, joinTokenSecretRef: {namespace: a, name: b}}\n",
      "m.yaml", &meshes, &secrets);
  ASSERT_FALSE(s.ok());
  EXPECT_NE(std::string(s.message()).find("defaultAction"), std::string::npos);
}

TEST(CoordinatorTest, RegistersWithStickyAddressesAcrossRestart) {
  InitCrypto();
  std::string dir = TempDir();
  PublicKey a = NewKey();
  std::string first_ip;
  {
    auto store = *StateStore::Open(dir);
    Coordinator c(store.get(), {});
    c.SetMeshes(Meshes());
    auto r = RegisterAs(c, Request(a, "Laptop_One"));
    ASSERT_TRUE(r.ok()) << r.status();
    EXPECT_EQ(r->name(), "laptop-one");
    ASSERT_EQ(r->mesh_ips_size(), 2);
    first_ip = r->mesh_ips(0);
    EXPECT_EQ(first_ip, "10.99.0.1");
    EXPECT_EQ(r->settings().preshared_key().size(), 32u);
  }
  auto store = *StateStore::Open(dir);
  Coordinator c(store.get(), {});
  c.SetMeshes(Meshes());
  PublicKey b = NewKey();
  auto rb = RegisterAs(c, Request(b, "other"));
  ASSERT_TRUE(rb.ok());
  EXPECT_EQ(rb->mesh_ips(0), "10.99.0.2") << "the first address stays taken";
  auto ra = RegisterAs(c, Request(a, "laptop-one"));
  ASSERT_TRUE(ra.ok());
  EXPECT_EQ(ra->mesh_ips(0), first_ip);
  // A /30 holds two members: the third is refused with a message that says what to change.
  auto rc = RegisterAs(c, Request(NewKey(), "third"));
  ASSERT_FALSE(rc.ok());
  EXPECT_EQ(rc.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(std::string(rc.status().message()).find("widen"), std::string::npos);
}

TEST(CoordinatorTest, RejectsWrongTokenAndMalformedRequests) {
  auto store = *StateStore::Open(TempDir());
  Coordinator c(store.get(), {});
  c.SetMeshes(Meshes());
  auto wrong = RegisterAs(c, Request(NewKey(), "x", "not the token"));
  ASSERT_FALSE(wrong.ok());
  EXPECT_EQ(wrong.status().code(), absl::StatusCode::kPermissionDenied);
  EXPECT_EQ(c.counters().rejected_tokens.load(), 1u);
  coord::RegisterRequest bad = Request(NewKey(), "x");
  bad.set_public_key("short");
  EXPECT_FALSE(RegisterAs(c, bad).ok());
  EXPECT_EQ(c.counters().malformed_requests.load(), 1u);
  EXPECT_EQ(c.member_count(), 0u);
  EXPECT_FALSE(c.Authenticate("Bearer nope").ok());
}

TEST(CoordinatorTest, WatchGetsFullMapThenDeltas) {
  auto store = *StateStore::Open(TempDir());
  Coordinator c(store.get(), {});
  c.SetMeshes(Meshes());
  PublicKey a = NewKey(), b = NewKey();
  auto ra = RegisterAs(c, Request(a, "a"));
  ASSERT_TRUE(ra.ok());
  auto who = c.Authenticate("Bearer " + ra->session_token());
  ASSERT_TRUE(who.ok());
  EXPECT_EQ(*who, a);
  auto sub = c.Watch(a);
  ASSERT_TRUE(sub.ok());
  coord::MapUpdate u;
  ASSERT_TRUE((*sub)->Next(&u, absl::Milliseconds(100)));
  EXPECT_TRUE(u.full());
  EXPECT_EQ(u.upsert_peers_size(), 0);

  ASSERT_TRUE(RegisterAs(c, Request(b, "b")).ok());
  ASSERT_TRUE((*sub)->Next(&u, absl::Milliseconds(100)));
  EXPECT_FALSE(u.full());
  ASSERT_EQ(u.upsert_peers_size(), 1);
  EXPECT_EQ(u.upsert_peers(0).name(), "b");
  EXPECT_EQ(u.upsert_peers(0).allowed_ips(0), "10.99.0.2/32");
  EXPECT_EQ(u.upsert_peers(0).dns_name(), "b.mesh");

  // Two members of the mesh, one of them watching; the full map and the delta reached a's stream.
  EXPECT_EQ(c.MemberCounts(),
            (std::vector<MemberCount>{{"demo", coord::MEMBER_KIND_EXTERNAL, 2, 1}}));
  EXPECT_EQ(c.counters().fanout_seconds.Take().count, 2u);
  ASSERT_TRUE(c.ReportEndpoints(b, {"192.0.2.5:51820", "[2001:db8::5]:51820"}, {3, 1}).ok());
  for (const MemberStatus& m : c.Members()) {
    if (m.record.public_key == b) {
      EXPECT_EQ(m.paths, (PathCounts{3, 1}));
    }
  }
  ASSERT_TRUE((*sub)->Next(&u, absl::Milliseconds(100)));
  ASSERT_EQ(u.upsert_peers(0).endpoints_size(), 2);
  EXPECT_FALSE(c.ReportEndpoints(b, {"not an endpoint"}).ok());

  ASSERT_TRUE(c.CallMeMaybe(b, a, {"192.0.2.5:51820"}).ok());
  ASSERT_TRUE((*sub)->Next(&u, absl::Milliseconds(100)));
  ASSERT_TRUE(u.has_call_me_maybe());
  EXPECT_EQ(u.call_me_maybe().endpoints(0), "192.0.2.5:51820");

  ASSERT_TRUE(c.Leave(b).ok());
  ASSERT_TRUE((*sub)->Next(&u, absl::Milliseconds(100)));
  ASSERT_EQ(u.removed_peers_size(), 1);
  EXPECT_FALSE((*sub)->Next(&u, absl::Milliseconds(10))) << "nothing more";

  // A second watch by the same member cancels the first.
  auto again = c.Watch(a);
  ASSERT_TRUE(again.ok());
  EXPECT_TRUE((*sub)->cancelled());
}

TEST(CoordinatorTest, AdmitKeepsValidAddressesAndAllocatesMissingOnes) {
  auto store = *StateStore::Open(TempDir());
  Coordinator c(store.get(), {});
  c.SetMeshes(Meshes());
  // A record restored from its source (operator restart) keeps its addresses.
  MemberRecord restored;
  restored.public_key = NewKey();
  restored.mesh = "demo";
  restored.name = "restored";
  restored.mesh_ips = {*IpAddress::Parse("10.99.0.2"), *IpAddress::Parse("fd99:99::7")};
  ASSERT_TRUE(c.Admit(restored).ok());
  ASSERT_TRUE(c.FlushStore(absl::Seconds(10)));  // Admit writes behind.
  EXPECT_EQ(store->members().at(restored.public_key).mesh_ips, restored.mesh_ips);
  // A pre-created member without addresses gets free ones; one that claims a taken address too.
  MemberRecord fresh;
  fresh.public_key = NewKey();
  fresh.mesh = "demo";
  fresh.name = "fresh";
  fresh.static_endpoints = {"192.0.2.9:51820"};
  fresh.mesh_ips = {*IpAddress::Parse("10.99.0.2")};
  ASSERT_TRUE(c.Admit(fresh).ok());
  ASSERT_TRUE(c.FlushStore(absl::Seconds(10)));
  EXPECT_EQ(store->members().at(fresh.public_key).mesh_ips[0].ToString(), "10.99.0.1");
  // The same record again changes nothing; a name held by another key and an unknown mesh are
  // errors that say what to fix.
  EXPECT_TRUE(c.Admit(store->members().at(fresh.public_key)).ok());
  MemberRecord clash = fresh;
  clash.public_key = NewKey();
  EXPECT_EQ(c.Admit(clash).code(), absl::StatusCode::kAlreadyExists);
  MemberRecord lost = fresh;
  lost.public_key = NewKey();
  lost.name = "lost";
  lost.mesh = "nope";
  absl::Status s = c.Admit(lost);
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(std::string(s.message()).find("kubectl get meshes"), std::string::npos);
  auto r = RegisterAs(c, Request(NewKey(), "watcher"));
  ASSERT_FALSE(r.ok()) << "the /30 is full";
}

TEST(CoordinatorTest, EvictEndsTheWatchAndTellsTheMesh) {
  auto store = *StateStore::Open(TempDir());
  std::vector<PublicKey> removed;
  Coordinator::Options options;
  options.on_member_removed = [&removed](const PublicKey& key) { removed.push_back(key); };
  Coordinator c(store.get(), options);
  c.SetMeshes(Meshes());
  PublicKey a = NewKey(), b = NewKey();
  ASSERT_TRUE(RegisterAs(c, Request(a, "a")).ok());
  ASSERT_TRUE(RegisterAs(c, Request(b, "b")).ok());
  auto sa = c.Watch(a);
  auto sb = c.Watch(b);
  ASSERT_TRUE(sa.ok() && sb.ok());
  coord::MapUpdate u;
  ASSERT_TRUE((*sa)->Next(&u, absl::Milliseconds(100)));
  ASSERT_TRUE((*sb)->Next(&u, absl::Milliseconds(100)));
  // a learns that b's agent is connected now.
  ASSERT_TRUE((*sa)->Next(&u, absl::Milliseconds(100)));
  ASSERT_EQ(u.presence_size(), 1);
  EXPECT_TRUE(u.presence(0).online());
  c.Evict(b, "MeshPeer b was deleted");
  EXPECT_TRUE((*sb)->cancelled());
  EXPECT_EQ((*sb)->reason().code(), absl::StatusCode::kPermissionDenied);
  EXPECT_NE(std::string((*sb)->reason().message()).find("MeshPeer b was deleted"),
            std::string::npos);
  ASSERT_TRUE((*sa)->Next(&u, absl::Milliseconds(100)));
  ASSERT_EQ(u.removed_peers_size(), 1);
  EXPECT_FALSE(c.IsMember(b));
  EXPECT_EQ(removed, std::vector<PublicKey>{b}) << "the relay is told";
  EXPECT_EQ(c.MembersOf("demo").size(), 1u);
  std::vector<MemberStatus> members = c.Members();
  ASSERT_EQ(members.size(), 1u);
  EXPECT_TRUE(members[0].connected);
}

TEST(CoordinatorTest, PeersLearnWhenAMembersWatchStartsAndEnds) {
  auto store = *StateStore::Open(TempDir());
  Coordinator c(store.get(), {});
  c.SetMeshes(Meshes());
  PublicKey a = NewKey(), b = NewKey();
  ASSERT_TRUE(RegisterAs(c, Request(a, "a")).ok());
  ASSERT_TRUE(RegisterAs(c, Request(b, "b")).ok());
  auto sb = c.Watch(b);
  ASSERT_TRUE(sb.ok());
  auto sa = c.Watch(a);
  ASSERT_TRUE(sa.ok());
  coord::MapUpdate u;
  // The full map carries b's presence: online.
  ASSERT_TRUE((*sa)->Next(&u, absl::Milliseconds(100)));
  ASSERT_TRUE(u.full());
  ASSERT_EQ(u.presence_size(), 1);
  EXPECT_EQ(u.presence(0).public_key(),
            std::string(reinterpret_cast<const char*>(b.bytes.data()), kKeySize));
  EXPECT_TRUE(u.presence(0).online());
  EXPECT_GT(u.presence(0).last_seen_unix(), 0);
  // b's agent watches again (a reconnect): the old stream's end is no news.
  auto sb2 = c.Watch(b);
  ASSERT_TRUE(sb2.ok());
  c.WatchEnded(b, sb->get());
  ASSERT_TRUE((*sa)->Next(&u, absl::Milliseconds(100)));
  ASSERT_EQ(u.presence_size(), 1);
  EXPECT_TRUE(u.presence(0).online()) << "the new watch";
  EXPECT_FALSE((*sa)->Next(&u, absl::Milliseconds(20))) << "nothing for the replaced stream";
  // The current stream ends: a learns that b went offline.
  c.WatchEnded(b, sb2->get());
  ASSERT_TRUE((*sa)->Next(&u, absl::Milliseconds(100)));
  ASSERT_EQ(u.presence_size(), 1);
  EXPECT_FALSE(u.presence(0).online());
}

TEST(CoordinatorTest, ServiceAccountTokensAndLabels) {
  auto store = *StateStore::Open(TempDir());
  Coordinator::Options options;
  options.agent_service_account = "system:serviceaccount:tm:agent";
  options.review_token = [](const std::string& token) -> absl::StatusOr<ServiceAccountToken> {
    if (token == "agent-token") {
      return ServiceAccountToken{"system:serviceaccount:tm:agent", {"tunnelmesh"}, "node-1"};
    }
    if (token == "other-token") {
      return ServiceAccountToken{"system:serviceaccount:tm:other", {"tunnelmesh"}, "node-1"};
    }
    return absl::UnauthenticatedError("the API server did not accept the token");
  };
  options.node_exists = [](const std::string& node) { return node == "node-1"; };
  Coordinator c(store.get(), options);
  c.SetMeshes(Meshes());
  coord::RegisterRequest r = Request(NewKey(), "node-1", "");
  r.set_kubernetes_token("agent-token");
  r.set_kind(coord::MEMBER_KIND_NODE);
  auto ok = RegisterAs(c, r);
  ASSERT_TRUE(ok.ok()) << ok.status();
  EXPECT_EQ(store->members().begin()->second.labels.at(kNodeLabel), "node-1");
  const PublicKey other = NewKey();
  r.set_public_key(std::string(reinterpret_cast<const char*>(other.bytes.data()), kKeySize));
  r.set_name("node-2");  // Not its token's Node (and no such Node).
  EXPECT_EQ(RegisterAs(c, r).status().code(), absl::StatusCode::kPermissionDenied);
  r.set_name("node-1");
  r.set_kubernetes_token("other-token");
  EXPECT_EQ(RegisterAs(c, r).status().code(), absl::StatusCode::kPermissionDenied);
  r.set_kubernetes_token("forged");
  EXPECT_EQ(RegisterAs(c, r).status().code(), absl::StatusCode::kUnauthenticated);
  coord::RegisterRequest labelled = Request(NewKey(), "x");
  (*labelled.mutable_labels())["bad key!"] = "v";
  EXPECT_EQ(RegisterAs(c, labelled).status().code(), absl::StatusCode::kInvalidArgument);
  labelled.mutable_labels()->clear();
  (*labelled.mutable_labels())[kNodeLabel] = "node-1";
  EXPECT_EQ(RegisterAs(c, labelled).status().code(), absl::StatusCode::kInvalidArgument);
  labelled.mutable_labels()->clear();
  (*labelled.mutable_labels())["example.com/role"] = "db_primary-1";
  EXPECT_TRUE(RegisterAs(c, labelled).ok());
}

TEST(CoordinatorTest, RegisteringAgainUnchangedWritesNothing) {
  FakeMemberStore store;
  Coordinator c(&store, {});
  c.SetMeshes(Meshes());
  PublicKey a = NewKey();
  ASSERT_TRUE(RegisterAs(c, Request(a, "a")).ok());
  ASSERT_TRUE(RegisterAs(c, Request(a, "a")).ok());
  EXPECT_EQ(store.puts(), 1);
  ASSERT_TRUE(RegisterAs(c, Request(a, "renamed")).ok());
  EXPECT_EQ(store.puts(), 2);
}

TEST(CoordinatorTest, MeshChangeResendsSettingsAndPeers) {
  auto store = *StateStore::Open(TempDir());
  Coordinator c(store.get(), {});
  std::vector<MeshSpec> meshes = Meshes();
  c.SetMeshes(meshes);
  PublicKey a = NewKey(), b = NewKey();
  ASSERT_TRUE(RegisterAs(c, Request(a, "a")).ok());
  ASSERT_TRUE(RegisterAs(c, Request(b, "b")).ok());
  auto sub = c.Watch(a);
  ASSERT_TRUE(sub.ok());
  coord::MapUpdate u;
  ASSERT_TRUE((*sub)->Next(&u, absl::Milliseconds(100)));
  c.SetMeshes(meshes);
  EXPECT_FALSE((*sub)->Next(&u, absl::Milliseconds(10))) << "nothing changed, nothing sent";
  meshes[0].domain = "corp.example";
  c.SetMeshes(meshes);
  ASSERT_TRUE((*sub)->Next(&u, absl::Milliseconds(100)));
  EXPECT_TRUE(u.full()) << "a fresh full map, built when the watcher takes it";
  EXPECT_EQ(u.settings().domain(), "corp.example");
  ASSERT_EQ(u.upsert_peers_size(), 1) << "the peers, without the member itself";
  EXPECT_EQ(u.upsert_peers(0).dns_name(), "b.corp.example");
}

TEST(CoordinatorTest, AliasesAreCheckedKeptAndSentWithThePeer) {
  FakeMemberStore store;
  Coordinator c(&store, {});
  c.SetMeshes(Meshes());
  PublicKey a = NewKey(), b = NewKey();
  coord::RegisterRequest ra = Request(a, "a");
  ra.add_aliases("git");
  ra.add_aliases("git");
  ra.add_aliases("cache");
  absl::StatusOr<coord::RegisterResponse> first = RegisterAs(c, ra);
  ASSERT_TRUE(first.ok()) << first.status();
  EXPECT_EQ(std::vector<std::string>(first->aliases().begin(), first->aliases().end()),
            (std::vector<std::string>{"cache", "git"}));
  // Registering again without aliases keeps them (an agent restarted without --alias, or aliases
  // an admin set in the MeshPeer).
  absl::StatusOr<coord::RegisterResponse> again = RegisterAs(c, Request(a, "a"));
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(again->aliases_size(), 2);

  coord::RegisterRequest taken = Request(b, "b");
  taken.add_aliases("git");
  absl::StatusOr<coord::RegisterResponse> refused = RegisterAs(c, taken);
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kAlreadyExists);
  EXPECT_NE(refused.status().message().find("taken by member \"a\""), std::string::npos);
  coord::RegisterRequest name_clash = Request(b, "b");
  name_clash.add_aliases("a");
  EXPECT_EQ(RegisterAs(c, name_clash).status().code(), absl::StatusCode::kAlreadyExists);
  coord::RegisterRequest bad = Request(b, "b");
  bad.add_aliases("Not_A_Label");
  EXPECT_EQ(RegisterAs(c, bad).status().code(), absl::StatusCode::kInvalidArgument);

  ASSERT_TRUE(RegisterAs(c, Request(b, "b")).ok());
  auto sub = c.Watch(b);
  ASSERT_TRUE(sub.ok());
  coord::MapUpdate u;
  ASSERT_TRUE((*sub)->Next(&u, absl::Milliseconds(100)));
  ASSERT_EQ(u.upsert_peers_size(), 1);
  EXPECT_EQ(u.upsert_peers(0).aliases_size(), 2);
  EXPECT_EQ(u.settings().dns_ttl_seconds(), 5u);
  EXPECT_TRUE(u.settings().has_dns_negative_ttl_seconds());
}

TEST(CoordinatorTest, DnsZonesFollowTheStateAndOnChangeFiresOutsideTheLock) {
  FakeMemberStore store;
  std::atomic<int> changes{0};
  Coordinator* self = nullptr;
  Coordinator::Options options;
  options.on_change = [&] {
    // The lock is free: calling back must not deadlock.
    EXPECT_FALSE(self->DnsZones().empty());
    changes.fetch_add(1);
  };
  Coordinator c(&store, options);
  self = &c;
  std::vector<MeshSpec> meshes = Meshes();
  meshes[0].dns_ttl_seconds = 30;
  meshes[0].dns_negative_ttl_seconds = 2;
  c.SetMeshes(meshes);
  EXPECT_EQ(changes.load(), 1);
  coord::RegisterRequest rb = Request(NewKey(), "bob");
  rb.add_aliases("git");
  ASSERT_TRUE(RegisterAs(c, rb).ok());
  ASSERT_TRUE(RegisterAs(c, Request(NewKey(), "alice")).ok());
  EXPECT_EQ(changes.load(), 3);
  std::vector<MeshZoneInput> zones = c.DnsZones();
  ASSERT_EQ(zones.size(), 1u);
  EXPECT_EQ(zones[0].domain, meshes[0].domain);
  EXPECT_EQ(zones[0].ttl, 30u);
  EXPECT_EQ(zones[0].negative_ttl, 2u);
  EXPECT_EQ(zones[0].ranges.size(), meshes[0].ipv6_cidr ? 2u : 1u);
  ASSERT_EQ(zones[0].members.size(), 2u);
  EXPECT_EQ(zones[0].members[0].name, "alice") << "sorted by name";
  EXPECT_EQ(zones[0].members[1].aliases, std::vector<std::string>{"git"});
  EXPECT_FALSE(zones[0].members[1].addresses.empty());
}

}  // namespace
}  // namespace tunnelmesh
