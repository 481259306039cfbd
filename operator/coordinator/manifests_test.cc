// The standalone manifest directory when it cannot be read: LoadManifests reports the error
// instead of an empty set, and ManifestWatcher (the reload loop's view) never hands over a Mesh
// set that comes from a read error, retries it, and still treats a directory emptied on purpose
// as a change. Descriptor exhaustion is reproduced by lowering this process's RLIMIT_NOFILE to
// what it has open (no other way to make a directory unreadable works for root).
#include "operator/coordinator/manifests.h"

#include <stdio.h>
#include <sys/resource.h>
#include <unistd.h>

#include <filesystem>
#include <string>

#include "gtest/gtest.h"
#include "operator/coordinator/testing/coordinator_fixtures.h"

namespace tunnelmesh {
namespace {

void WriteText(const std::string& path, const std::string& text) {
  FILE* f = fopen(path.c_str(), "w");
  ASSERT_NE(f, nullptr) << path;
  fputs(text.c_str(), f);
  fclose(f);
}

class ManifestDirTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_EQ(getrlimit(RLIMIT_NOFILE, &saved_), 0);
    dir_ = TempDir();
    WriteText(dir_ + "/mesh.yaml", MeshManifest());
  }
  void TearDown() override {
    Restore();
    std::filesystem::remove_all(dir_);
  }

  // No descriptor left: opendir fails with EMFILE. (The limit bounds descriptor numbers: set it
  // to the lowest free one.)
  void Exhaust() {
    const int lowest_free = dup(0);
    ASSERT_GE(lowest_free, 0);
    close(lowest_free);
    rlimit exhausted = saved_;
    exhausted.rlim_cur = lowest_free;
    ASSERT_EQ(setrlimit(RLIMIT_NOFILE, &exhausted), 0);
  }
  void Restore() { ASSERT_EQ(setrlimit(RLIMIT_NOFILE, &saved_), 0); }

  rlimit saved_{};
  std::string dir_;
};

TEST_F(ManifestDirTest, UnreadableDirectoryIsAnErrorNotAnEmptySet) {
  Exhaust();
  absl::StatusOr<std::vector<MeshSpec>> meshes = LoadManifests(dir_);
  absl::StatusOr<std::string> fingerprint = ManifestFingerprint(dir_);
  Restore();
  ASSERT_FALSE(meshes.ok()) << "read " << meshes->size() << " meshes without descriptors";
  EXPECT_EQ(meshes.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_NE(meshes.status().message().find("--manifests"), std::string::npos) << meshes.status();
  EXPECT_NE(meshes.status().message().find(dir_), std::string::npos) << meshes.status();
  EXPECT_EQ(fingerprint.status().code(), absl::StatusCode::kUnavailable);
  // Readable again: the same directory loads.
  meshes = LoadManifests(dir_);
  ASSERT_TRUE(meshes.ok()) << meshes.status();
  EXPECT_EQ(meshes->size(), 1u);
}

TEST_F(ManifestDirTest, WatcherKeepsTheMeshesThroughReadErrorsAndRetries) {
  absl::StatusOr<std::string> initial = ManifestFingerprint(dir_);
  ASSERT_TRUE(initial.ok()) << initial.status();
  ManifestWatcher watcher(dir_, *initial);
  EXPECT_FALSE(watcher.Poll().has_value()) << "nothing changed";

  // Exhausted descriptors: no change, however often it polls (the old code read an empty
  // directory here and dropped every Mesh).
  Exhaust();
  for (int i = 0; i < 3; ++i) {
    const std::optional<ManifestWatcher::Change> change = watcher.Poll();
    if (change.has_value()) {
      Restore();
      FAIL() << "a change with " << change->meshes.size() << " meshes from an unreadable directory";
    }
  }
  Restore();
  EXPECT_EQ(watcher.read_errors(), 3u);
  // Readable and unchanged: still nothing to apply.
  EXPECT_FALSE(watcher.Poll().has_value());

  // A second Mesh added while descriptors are exhausted is picked up once they are back.
  WriteText(dir_ + "/second.yaml",
            "apiVersion: tunnelmesh.io/v1alpha1\nkind: Mesh\nmetadata: {name: second}\nspec:\n"
            "  ipv4CIDR: 10.98.0.0/16\n"
            "  joinTokenSecretRef: {namespace: tunnelmesh, name: demo-join, key: token}\n");
  Exhaust();
  const bool changed_while_exhausted = watcher.Poll().has_value();
  Restore();
  EXPECT_FALSE(changed_while_exhausted);
  std::optional<ManifestWatcher::Change> change = watcher.Poll();
  ASSERT_TRUE(change.has_value());
  EXPECT_EQ(change->meshes.size(), 2u);
  EXPECT_FALSE(watcher.Poll().has_value());
}

TEST_F(ManifestDirTest, EmptiedDirectoryIsARealChangeAndInvalidOnesWaitForAnEdit) {
  absl::StatusOr<std::string> initial = ManifestFingerprint(dir_);
  ASSERT_TRUE(initial.ok()) << initial.status();
  ManifestWatcher watcher(dir_, *initial);

  // An invalid manifest: not applied, and not retried until the next edit.
  WriteText(dir_ + "/mesh.yaml", "apiVersion: tunnelmesh.io/v1alpha1\nkind: Mesh\nmetadata: {}\n");
  EXPECT_FALSE(watcher.Poll().has_value());
  EXPECT_FALSE(watcher.Poll().has_value());
  EXPECT_EQ(watcher.read_errors(), 0u) << "an invalid manifest is no read error";

  // Removed on purpose: an empty set that was read fine is applied.
  ASSERT_EQ(unlink((dir_ + "/mesh.yaml").c_str()), 0);
  std::optional<ManifestWatcher::Change> change = watcher.Poll();
  ASSERT_TRUE(change.has_value());
  EXPECT_TRUE(change->meshes.empty());
}

}  // namespace
}  // namespace tunnelmesh
