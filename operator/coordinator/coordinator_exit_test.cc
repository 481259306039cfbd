// The coordinator's exit-peer part: which exits a member may use (its order, refusals with
// reasons), whom an exit forwards for, deltas only when that changes, the fields peers see, and
// what survives a restart.
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "operator/api/peer_policy.h"
#include "operator/coordinator/coordinator.h"
#include "operator/coordinator/testing/coordinator_fixtures.h"

namespace tunnelmesh {
namespace {

PeerPolicySpec Policy(const std::string& json) {
  absl::StatusOr<PeerPolicySpec> spec = ParsePeerPolicy(nlohmann::json::parse(json));
  EXPECT_TRUE(spec.ok()) << spec.status();
  return spec.ok() ? *spec : PeerPolicySpec{};
}

// Laptops may use exits labelled region=eu.
constexpr char kLaptopsToEu[] = R"({"metadata": {"name": "laptops-out"}, "spec": {
  "mesh": "demo", "action": "Allow",
  "from": [{"peerSelector": {"matchLabels": {"role": "laptop"}}}],
  "to": [{"internet": {"exitSelector": {"matchLabels": {"region": "eu"}}}}]}})";

std::string Key(const PublicKey& key) {
  return std::string(reinterpret_cast<const char*>(key.bytes.data()), kKeySize);
}

class CoordinatorExitTest : public ::testing::Test {
 protected:
  void SetUp() override {
    InitCrypto();
    dir_ = TempDir();
    store_ = *StateStore::Open(dir_);
    c_ = std::make_unique<Coordinator>(store_.get(), Coordinator::Options{});
    c_->SetMeshes(Meshes(MeshManifest(24)));
  }
  coord::RegisterRequest Req(const PublicKey& key, const std::string& name,
                             std::map<std::string, std::string> labels, bool advertise,
                             std::vector<std::string> use) {
    coord::RegisterRequest r = Request(key, name);
    for (const auto& [k, v] : labels) (*r.mutable_labels())[k] = v;
    r.mutable_exit()->set_advertise(advertise);
    for (const std::string& u : use) r.mutable_exit()->add_use(u);
    return r;
  }
  void Join(const coord::RegisterRequest& r) {
    ASSERT_TRUE(RegisterAs(*c_, r).ok());
    PublicKey key;
    std::memcpy(key.bytes.data(), r.public_key().data(), kKeySize);
    auto sub = c_->Watch(key);
    ASSERT_TRUE(sub.ok());
    coord::MapUpdate full;
    ASSERT_TRUE((*sub)->Next(&full, absl::Milliseconds(100)));
    ASSERT_TRUE(full.full());
    ASSERT_TRUE(full.has_exit()) << "a full map always carries the member's exit config";
    subs_[r.name()] = *sub;
    full_[r.name()] = full;
  }
  // The exit configs queued for `name` since the last call.
  std::vector<coord::ExitConfig> Exits(const std::string& name) {
    std::vector<coord::ExitConfig> out;
    coord::MapUpdate u;
    while (subs_[name]->Next(&u, absl::Milliseconds(20))) {
      if (u.has_exit()) out.push_back(u.exit());
    }
    return out;
  }

  std::string dir_;
  std::unique_ptr<StateStore> store_;
  std::unique_ptr<Coordinator> c_;
  PublicKey laptop_ = NewKey(), eu1_ = NewKey(), eu2_ = NewKey(), us_ = NewKey(), guest_ = NewKey();
  std::map<std::string, std::shared_ptr<Subscription>> subs_;
  std::map<std::string, coord::MapUpdate> full_;
};

TEST_F(CoordinatorExitTest, ExitsInOrderWithRefusalsAndClients) {
  c_->SetPolicies({Policy(kLaptopsToEu)});
  Join(Req(eu1_, "eu1", {{"region", "eu"}}, true, {}));
  Join(Req(eu2_, "eu2", {{"region", "eu"}}, true, {}));
  Join(Req(us_, "us", {{"region", "us"}}, true, {}));
  Join(Req(laptop_, "laptop", {{"role", "laptop"}}, false,
           {"eu2", "nobody", "us", "laptop", "eu1"}));
  Join(Req(guest_, "guest", {}, false, {"eu1"}));

  const coord::ExitConfig& laptop = full_["laptop"].exit();
  ASSERT_EQ(laptop.use_public_keys_size(), 2);
  EXPECT_EQ(laptop.use_public_keys(0), Key(eu2_)) << "the member's own order";
  EXPECT_EQ(laptop.use_public_keys(1), Key(eu1_));
  ASSERT_EQ(laptop.refused_size(), 3);
  EXPECT_EQ(laptop.refused(0).name(), "nobody");
  EXPECT_NE(laptop.refused(0).reason().find("no member"), std::string::npos);
  EXPECT_EQ(laptop.refused(1).name(), "us");
  EXPECT_NE(laptop.refused(1).reason().find("PeerPolicy"), std::string::npos)
      << "us is an exit, but the policy's exitSelector does not cover it";
  EXPECT_EQ(laptop.refused(2).name(), "laptop");
  EXPECT_TRUE(laptop.client_prefixes().empty()) << "not an exit";

  const coord::ExitConfig& guest = full_["guest"].exit();
  EXPECT_TRUE(guest.use_public_keys().empty()) << "no policy selects the guest";
  ASSERT_EQ(guest.refused_size(), 1);

  // The exits that the policy covers forward for the laptop only; `us` for nobody.
  std::vector<coord::ExitConfig> eu1 = Exits("eu1");
  ASSERT_FALSE(eu1.empty()) << "eu1's clients changed when the laptop joined";
  EXPECT_EQ(std::vector<std::string>(eu1.back().client_prefixes().begin(),
                                     eu1.back().client_prefixes().end()),
            (std::vector<std::string>{"10.99.0.4/32", "fd99:99::4/128"}));
  EXPECT_TRUE(Exits("us").empty());
  EXPECT_TRUE(full_["us"].exit().client_prefixes().empty());

  // eu1's rule set lets the laptop reach the internet, nothing else, and not the mesh.
  std::optional<coord::FilterRules> rules = c_->FilterRulesFor(eu1_);
  ASSERT_TRUE(rules.has_value());
  ASSERT_EQ(rules->rules_size(), 1);
  EXPECT_EQ(rules->rules(0).sources(0), "10.99.0.4/32");
  for (const std::string& d : rules->rules(0).destinations()) {
    absl::StatusOr<Prefix> p = Prefix::Parse(d);
    ASSERT_TRUE(p.ok());
    EXPECT_FALSE(p->Contains(*IpAddress::Parse("10.99.0.1"))) << d << " covers the mesh";
    EXPECT_FALSE(p->Contains(*IpAddress::Parse("fd99:99::1"))) << d << " covers the mesh";
  }

  // Peers see who offers itself as an exit.
  for (const coord::Peer& p : full_["laptop"].upsert_peers()) {
    EXPECT_EQ(p.exit_peer(), p.name() != "guest") << p.name();
  }
}

TEST_F(CoordinatorExitTest, PolicyAndMemberChangesSendDeltasToThoseAffected) {
  Join(Req(eu1_, "eu1", {{"region", "eu"}}, true, {}));
  Join(Req(laptop_, "laptop", {{"role", "laptop"}}, false, {"eu1"}));
  Join(Req(guest_, "guest", {}, false, {}));
  EXPECT_TRUE(full_["laptop"].exit().use_public_keys().empty()) << "no policy yet";
  (void)Exits("eu1");
  (void)Exits("laptop");

  c_->SetPolicies({Policy(kLaptopsToEu)});
  std::vector<coord::ExitConfig> laptop = Exits("laptop");
  ASSERT_EQ(laptop.size(), 1u);
  ASSERT_EQ(laptop[0].use_public_keys_size(), 1);
  EXPECT_EQ(laptop[0].use_public_keys(0), Key(eu1_));
  std::vector<coord::ExitConfig> eu1 = Exits("eu1");
  ASSERT_EQ(eu1.size(), 1u);
  EXPECT_EQ(eu1[0].client_prefixes_size(), 2);
  EXPECT_TRUE(Exits("guest").empty()) << "nothing changed for the guest";

  // The exit stops offering itself: the laptop is told, and eu1 forwards for nobody.
  ASSERT_TRUE(RegisterAs(*c_, Req(eu1_, "eu1", {{"region", "eu"}}, false, {})).ok());
  laptop = Exits("laptop");
  ASSERT_EQ(laptop.size(), 1u);
  EXPECT_TRUE(laptop[0].use_public_keys().empty());
  EXPECT_NE(laptop[0].refused(0).reason().find("does not offer"), std::string::npos);
  eu1 = Exits("eu1");
  ASSERT_EQ(eu1.size(), 1u);
  EXPECT_TRUE(eu1[0].client_prefixes().empty());

  // A registration without ExitPreferences keeps what the member had.
  coord::RegisterRequest again = Request(laptop_, "laptop");
  (*again.mutable_labels())["role"] = "laptop";
  ASSERT_TRUE(RegisterAs(*c_, again).ok());
  EXPECT_TRUE(Exits("laptop").empty()) << "unchanged";
}

TEST_F(CoordinatorExitTest, ExplainNamesTheExitThatDecides) {
  c_->SetPolicies({Policy(R"({"metadata": {"name": "laptops-web"}, "spec": {
    "mesh": "demo", "action": "Allow",
    "from": [{"peerSelector": {"matchLabels": {"role": "laptop"}}}],
    "to": [{"internet": {}}], "ports": [{"protocol": "TCP", "port": 443}]}})")});
  Join(Req(eu1_, "eu1", {{"region", "eu"}}, true, {}));
  Join(Req(eu2_, "eu2", {{"region", "eu"}}, true, {}));
  Join(Req(laptop_, "laptop", {{"role", "laptop"}}, false, {"eu2", "eu1"}));
  Join(Req(guest_, "guest", {}, false, {}));
  coord::ExplainRequest request;
  request.set_source("laptop");
  request.set_destination("192.0.2.80");
  request.set_protocol(coord::FILTER_PROTOCOL_TCP);
  request.set_port(443);
  absl::StatusOr<coord::ExplainResponse> r = c_->Explain(laptop_, request);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->action(), coord::FILTER_ACTION_ALLOW);
  EXPECT_EQ(r->policy(), "laptops-web");
  EXPECT_EQ(r->enforced_by(), "eu2") << "the laptop's first choice";
  EXPECT_EQ(r->source_ip(), "10.99.0.3");
  request.set_port(22);
  r = c_->Explain(laptop_, request);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->action(), coord::FILTER_ACTION_DENY);
  EXPECT_EQ(r->policy(), "") << "the default";
  request.set_source("guest");
  r = c_->Explain(guest_, request);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("uses no exit peer"), std::string::npos) << r.status();
}

TEST_F(CoordinatorExitTest, RegistrationChecksAndSshFields) {
  coord::RegisterRequest bad = Req(laptop_, "laptop", {}, false, {"Not A Name"});
  absl::StatusOr<coord::RegisterResponse> r = RegisterAs(*c_, bad);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("--exit-peer"), std::string::npos) << r.status();
  bad = Req(laptop_, "laptop", {}, false, {"a", "b", "c", "d", "e", "f", "g", "h", "i"});
  EXPECT_FALSE(RegisterAs(*c_, bad).ok()) << "more than 8 exits";
  bad = Req(laptop_, "laptop", {}, false, {});
  bad.set_ssh_public_key(std::string(31, 'k'));
  bad.set_ssh_port(7722);
  EXPECT_FALSE(RegisterAs(*c_, bad).ok()) << "a 31-byte SSH key";
  bad.set_ssh_public_key(std::string(32, 'k'));
  bad.set_ssh_port(0);
  EXPECT_FALSE(RegisterAs(*c_, bad).ok()) << "an SSH key without a port";

  coord::RegisterRequest exit = Req(eu1_, "eu1", {{"region", "eu"}}, true, {});
  exit.set_ssh_public_key(std::string(32, 'k'));
  exit.set_ssh_port(7722);
  ASSERT_TRUE(RegisterAs(*c_, exit).ok());
  Join(Req(laptop_, "laptop", {{"role", "laptop"}}, false, {"eu1"}));
  ASSERT_EQ(full_["laptop"].upsert_peers_size(), 1);
  const coord::Peer& peer = full_["laptop"].upsert_peers(0);
  EXPECT_TRUE(peer.exit_peer());
  EXPECT_EQ(peer.ssh_public_key(), std::string(32, 'k'));
  EXPECT_EQ(peer.ssh_port(), 7722u);

  // members.json keeps the exit settings and the SSH key across a restart.
  c_.reset();
  store_ = *StateStore::Open(dir_);
  const MemberRecord& eu1 = store_->members().at(eu1_);
  EXPECT_TRUE(eu1.exit_peer);
  EXPECT_EQ(eu1.ssh_port, 7722);
  EXPECT_EQ(std::string(eu1.ssh_key.bytes.begin(), eu1.ssh_key.bytes.end()), std::string(32, 'k'));
  EXPECT_EQ(store_->members().at(laptop_).use_exit_peers, std::vector<std::string>{"eu1"});
}

}  // namespace
}  // namespace tunnelmesh
