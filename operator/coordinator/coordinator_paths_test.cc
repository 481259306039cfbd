// The coordinator's record of each member's per-peer paths: what PathsOf lists (by peer name,
// bounded), the changes it logs between reports (and only real changes), the keys it skips, the
// reports it refuses, and the bound on kept changes.
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "operator/coordinator/coordinator.h"
#include "operator/coordinator/testing/coordinator_fixtures.h"

namespace tunnelmesh {
namespace {

class CoordinatorPathsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    InitCrypto();
    store_ = *StateStore::Open(TempDir());
    Coordinator::Options options;
    options.reports_per_member = {.rate = 1000, .burst = 1000};  // flaps faster than agents report
    c_ = std::make_unique<Coordinator>(store_.get(), std::move(options));
    c_->SetMeshes(Meshes(MeshManifest(24)));
    for (const auto& [key, name] : {std::pair{&a_, "alpha"}, {&b_, "bravo"}, {&d_, "delta"}}) {
      ASSERT_TRUE(RegisterAs(*c_, Request(*key, name)).ok());
    }
  }
  absl::Status Report(const std::vector<PeerPathReport>& paths) {
    return c_->ReportEndpoints(a_, {"192.0.2.1:51820"}, {}, paths);
  }

  std::unique_ptr<StateStore> store_;
  std::unique_ptr<Coordinator> c_;
  PublicKey a_ = NewKey(), b_ = NewKey(), d_ = NewKey();
};

TEST_F(CoordinatorPathsTest, ListsByPeerNameAndLogsOnlyChanges) {
  EXPECT_EQ(c_->PathsOf(a_, 16, 0).total, 0u) << "nothing reported yet";
  const PublicKey stranger = NewKey();
  ASSERT_TRUE(Report({{d_, coord::PATH_KIND_RELAY},
                      {b_, coord::PATH_KIND_DIRECT},
                      {stranger, coord::PATH_KIND_DIRECT},
                      {a_, coord::PATH_KIND_DIRECT}})
                  .ok());
  MemberPaths paths = c_->PathsOf(a_, 16, 0);
  EXPECT_EQ(paths.total, 2u) << "a key of no member, and the member itself, are skipped";
  ASSERT_EQ(paths.first.size(), 2u);
  EXPECT_EQ(paths.first[0],
            (std::pair<std::string, coord::PathKind>{"bravo", coord::PATH_KIND_DIRECT}));
  EXPECT_EQ(paths.first[1],
            (std::pair<std::string, coord::PathKind>{"delta", coord::PATH_KIND_RELAY}));
  EXPECT_TRUE(paths.changes.empty()) << "first paths are not changes";
  EXPECT_EQ(c_->PathsOf(a_, 1, 0).first.size(), 1u) << "the limit bounds the list";
  EXPECT_EQ(c_->PathsOf(a_, 1, 0).total, 2u);

  // The same report again logs nothing; bravo falls back to the relay, then recovers.
  ASSERT_TRUE(Report({{b_, coord::PATH_KIND_DIRECT}, {d_, coord::PATH_KIND_RELAY}}).ok());
  EXPECT_TRUE(c_->PathsOf(a_, 16, 0).changes.empty());
  ASSERT_TRUE(Report({{b_, coord::PATH_KIND_RELAY}, {d_, coord::PATH_KIND_RELAY}}).ok());
  ASSERT_TRUE(Report({{b_, coord::PATH_KIND_DIRECT}, {d_, coord::PATH_KIND_SSH}}).ok());
  paths = c_->PathsOf(a_, 16, 0);
  ASSERT_EQ(paths.changes.size(), 3u);
  EXPECT_EQ(paths.changes[0].peer, "bravo");
  EXPECT_EQ(paths.changes[0].from, coord::PATH_KIND_DIRECT);
  EXPECT_EQ(paths.changes[0].to, coord::PATH_KIND_RELAY);
  EXPECT_EQ(paths.changes[1].peer, "bravo");
  EXPECT_EQ(paths.changes[1].to, coord::PATH_KIND_DIRECT);
  EXPECT_EQ(paths.changes[2].peer, "delta");
  EXPECT_EQ(paths.changes[2].to, coord::PATH_KIND_SSH);
  EXPECT_LT(paths.changes[0].seq, paths.changes[1].seq);
  EXPECT_FALSE(paths.changes_lost);
  // After a bookmark: only later changes.
  paths = c_->PathsOf(a_, 16, paths.changes[1].seq);
  ASSERT_EQ(paths.changes.size(), 1u);
  EXPECT_EQ(paths.changes[0].peer, "delta");
  EXPECT_EQ(std::string(PathKindWord(paths.changes[0].from)), "relay");
  // Another member's paths are its own.
  EXPECT_EQ(c_->PathsOf(b_, 16, 0).total, 0u);
}

TEST_F(CoordinatorPathsTest, KeepsABoundedLogAndSaysWhenChangesWereLost) {
  ASSERT_TRUE(Report({{b_, coord::PATH_KIND_DIRECT}}).ok());
  const uint64_t bookmark = 0;
  for (size_t flap = 0; flap < Coordinator::kKeptPathChanges + 4; ++flap) {
    const coord::PathKind next = flap % 2 == 0 ? coord::PATH_KIND_RELAY : coord::PATH_KIND_DIRECT;
    ASSERT_TRUE(Report({{b_, next}}).ok());
  }
  MemberPaths paths = c_->PathsOf(a_, 16, bookmark);
  EXPECT_EQ(paths.changes.size(), Coordinator::kKeptPathChanges);
  EXPECT_TRUE(paths.changes_lost);
  // A bookmark at the newest change: nothing new, nothing lost.
  paths = c_->PathsOf(a_, 16, paths.changes.back().seq);
  EXPECT_TRUE(paths.changes.empty());
  EXPECT_FALSE(paths.changes_lost);
}

TEST_F(CoordinatorPathsTest, RefusesTooManyPathsAndUnknownKinds) {
  std::vector<PeerPathReport> many(Coordinator::kMaxPeerPaths + 1, {b_, coord::PATH_KIND_DIRECT});
  absl::Status s = Report(many);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
  EXPECT_NE(std::string(s.message()).find("1024"), std::string::npos) << s;
  s = Report({{b_, static_cast<coord::PathKind>(9)}});
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
  EXPECT_NE(std::string(s.message()).find("not none, direct, ssh or relay"), std::string::npos);
  EXPECT_EQ(c_->counters().malformed_requests.load(), 2u);
  EXPECT_EQ(c_->PathsOf(a_, 16, 0).total, 0u) << "a refused report changes nothing";
}

}  // namespace
}  // namespace tunnelmesh
