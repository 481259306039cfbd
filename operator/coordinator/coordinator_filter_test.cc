// The coordinator's packet-filter part: rule sets in full maps, filter deltas only to the members
// whose rules changed (counted), PeerPolicies from manifests, and Explain.
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "operator/coordinator/coordinator.h"
#include "operator/coordinator/testing/coordinator_fixtures.h"

namespace tunnelmesh {
namespace {

constexpr char kPolicies[] = R"(
apiVersion: tunnelmesh.io/v1alpha1
kind: PeerPolicy
metadata: {name: runners-to-git}
spec:
  mesh: demo
  action: Allow
  from: [{peerSelector: {matchLabels: {role: ci}}}]
  to: [{peerSelector: {matchLabels: {app: git}}}]
  ports: [{protocol: TCP, port: 22}, {protocol: TCP, port: 443}]
---
apiVersion: tunnelmesh.io/v1alpha1
kind: PeerPolicy
metadata: {name: broken}
spec: {mesh: demo, action: Perhaps}
---
apiVersion: tunnelmesh.io/v1alpha1
kind: PeerPolicy
metadata: {name: elsewhere}
spec: {mesh: other, action: Allow}
)";

std::vector<PeerPolicySpec> Policies(ManifestPolicies* out = nullptr) {
  std::string dir = TempDir();
  FILE* f = fopen((dir + "/mesh.yaml").c_str(), "w");
  fputs((MeshManifest(24) + "---\n" + kPolicies).c_str(), f);
  fclose(f);
  ManifestPolicies policies;
  auto meshes = LoadManifests(dir, &policies);
  EXPECT_TRUE(meshes.ok()) << meshes.status();
  if (out != nullptr) *out = policies;
  return policies.accepted;
}

coordinator::v1::RegisterRequest Labelled(const PublicKey& key, const std::string& name,
                                          const std::string& label, const std::string& value) {
  coordinator::v1::RegisterRequest r = Request(key, name);
  (*r.mutable_labels())[label] = value;
  return r;
}

// Takes every queued update; returns those that carry a rule set.
std::vector<coord::FilterRules> Drain(Subscription* sub) {
  std::vector<coord::FilterRules> out;
  coord::MapUpdate u;
  while (sub->Next(&u, absl::Milliseconds(20))) {
    if (u.has_filter()) out.push_back(u.filter());
  }
  return out;
}

class CoordinatorFilterTest : public ::testing::Test {
 protected:
  void SetUp() override {
    InitCrypto();
    store_ = *StateStore::Open(TempDir());
    c_ = std::make_unique<Coordinator>(store_.get(), Coordinator::Options{});
    c_->SetMeshes(Meshes(MeshManifest(24)));
    Join(runner_, "runner", "role", "ci");
    Join(git_, "git", "app", "git");
    Join(db_, "db", "app", "db");
  }
  void Join(const PublicKey& key, const std::string& name, const std::string& label,
            const std::string& value) {
    ASSERT_TRUE(RegisterAs(*c_, Labelled(key, name, label, value)).ok());
    auto sub = c_->Watch(key);
    ASSERT_TRUE(sub.ok());
    subs_[name] = *sub;
    coord::MapUpdate full;
    ASSERT_TRUE(subs_[name]->Next(&full, absl::Milliseconds(100)));
    ASSERT_TRUE(full.full());
    ASSERT_TRUE(full.has_filter()) << "a full map always carries the member's rule set";
    EXPECT_EQ(full.filter().default_action(), coord::FILTER_ACTION_DENY);
  }
  void DrainAll() {
    for (auto& [name, sub] : subs_) (void)Drain(sub.get());
  }

  std::unique_ptr<StateStore> store_;
  std::unique_ptr<Coordinator> c_;
  PublicKey runner_ = NewKey(), git_ = NewKey(), db_ = NewKey();
  std::map<std::string, std::shared_ptr<Subscription>> subs_;
};

TEST_F(CoordinatorFilterTest, OnlyAffectedMembersGetRuleSets) {
  DrainAll();
  EXPECT_EQ(c_->counters().filter_updates_sent.load(), 0u);

  // A policy change: only git's rules change.
  c_->SetPolicies(Policies());
  EXPECT_EQ(c_->counters().filter_updates_sent.load(), 1u);
  std::vector<coord::FilterRules> git = Drain(subs_["git"].get());
  ASSERT_EQ(git.size(), 1u);
  ASSERT_EQ(git[0].rules_size(), 1);
  EXPECT_EQ(git[0].policies(0), "runners-to-git");
  EXPECT_EQ(git[0].rules(0).sources(0), "10.99.0.1/32");
  EXPECT_TRUE(Drain(subs_["runner"].get()).empty());
  EXPECT_TRUE(Drain(subs_["db"].get()).empty());
  EXPECT_EQ(c_->PolicyStatsFor("runners-to-git"), (policy::PolicyStats{1, 1, false, false, 1}));

  // A join that the policy's `from` selects: git again (the newcomer has no watch yet).
  const PublicKey runner2 = NewKey();
  ASSERT_TRUE(RegisterAs(*c_, Labelled(runner2, "runner-2", "role", "ci")).ok());
  EXPECT_EQ(c_->counters().filter_updates_sent.load(), 2u);
  git = Drain(subs_["git"].get());
  ASSERT_EQ(git.size(), 1u);
  EXPECT_EQ(git[0].rules(0).sources_size(), 4);  // Two runners, IPv4 and IPv6 each.
  EXPECT_TRUE(Drain(subs_["db"].get()).empty()) << "db's rules did not change";
  EXPECT_TRUE(Drain(subs_["runner"].get()).empty());
  // Its full map carries its own (empty) rule set.
  auto sub = c_->Watch(runner2);
  ASSERT_TRUE(sub.ok());
  coord::MapUpdate full;
  ASSERT_TRUE((*sub)->Next(&full, absl::Milliseconds(100)));
  EXPECT_EQ(full.filter().rules_size(), 0);

  // A join no policy selects: nobody's rules change.
  ASSERT_TRUE(RegisterAs(*c_, Labelled(NewKey(), "laptop", "owner", "ann")).ok());
  EXPECT_EQ(c_->counters().filter_updates_sent.load(), 2u);

  // A leave: git loses a source.
  ASSERT_TRUE(c_->Leave(runner_).ok());
  EXPECT_EQ(c_->counters().filter_updates_sent.load(), 3u);
  git = Drain(subs_["git"].get());
  ASSERT_EQ(git.size(), 1u);
  EXPECT_EQ(git[0].rules(0).sources(0), "10.99.0.4/32");
  EXPECT_TRUE(Drain(subs_["db"].get()).empty());
}

TEST_F(CoordinatorFilterTest, DefaultActionTakesEffectThroughFullMaps) {
  DrainAll();
  std::string text = MeshManifest(24);
  text.insert(text.find("  joinTokenSecretRef"), "  defaultAction: Allow\n");
  c_->SetMeshes(Meshes(text));
  coord::MapUpdate u;
  ASSERT_TRUE(subs_["db"]->Next(&u, absl::Milliseconds(100)));
  EXPECT_TRUE(u.full());
  EXPECT_EQ(u.filter().default_action(), coord::FILTER_ACTION_ALLOW);
  EXPECT_EQ(c_->FilterRulesFor(git_)->default_action(), coord::FILTER_ACTION_ALLOW);
}

TEST_F(CoordinatorFilterTest, PoliciesFromManifests) {
  ManifestPolicies policies;
  ASSERT_EQ(Policies(&policies).size(), 1u);
  ASSERT_EQ(policies.rejected.size(), 2u);
  EXPECT_NE(policies.rejected[0].find("broken"), std::string::npos);
  EXPECT_NE(policies.rejected[0].find("spec.action"), std::string::npos) << policies.rejected[0];
  EXPECT_NE(policies.rejected[1].find("Mesh \"other\""), std::string::npos) << policies.rejected[1];
}

TEST_F(CoordinatorFilterTest, ExplainEvaluatesTheEnforcersRules) {
  c_->SetPolicies(Policies());
  coord::ExplainRequest request;
  request.set_source("runner");
  request.set_destination("git");
  request.set_protocol(coord::FILTER_PROTOCOL_TCP);
  request.set_port(22);
  auto r = c_->Explain(db_, request);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->action(), coord::FILTER_ACTION_ALLOW);
  EXPECT_EQ(r->policy(), "runners-to-git");
  EXPECT_EQ(r->enforced_by(), "git");
  EXPECT_EQ(r->source_ip(), "10.99.0.1");
  EXPECT_EQ(r->destination_ip(), "10.99.0.2");

  request.set_port(8080);
  r = c_->Explain(db_, request);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->action(), coord::FILTER_ACTION_DENY);
  EXPECT_EQ(r->policy(), "");

  request.set_source("fd99:99::1");  // runner's IPv6 address: git's IPv6 one is picked.
  request.set_port(443);
  r = c_->Explain(db_, request);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->action(), coord::FILTER_ACTION_ALLOW);
  EXPECT_EQ(r->destination_ip(), "fd99:99::2");

  request.set_source("nobody");
  r = c_->Explain(db_, request);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), absl::StatusCode::kNotFound);
  EXPECT_NE(std::string(r.status().message()).find("source \"nobody\""), std::string::npos);

  request.set_source("runner");
  request.set_destination("192.0.2.1");
  r = c_->Explain(db_, request);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(std::string(r.status().message()).find("192.0.2.1"), std::string::npos);
  EXPECT_EQ(c_->counters().explain_requests.load(), 5u);
}

}  // namespace
}  // namespace tunnelmesh
