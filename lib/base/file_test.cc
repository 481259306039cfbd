#include "lib/base/file.h"

#include <stdlib.h>
#include <sys/stat.h>

#include <filesystem>

#include "gtest/gtest.h"

namespace tunnelmesh {
namespace {

class FileTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char pattern[] = "/tmp/tm_file_test.XXXXXX";
    ASSERT_NE(mkdtemp(pattern), nullptr);
    dir_ = pattern;
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }
  std::string dir_;
};

TEST_F(FileTest, WriteThenReadRoundTrips) {
  const std::string path = dir_ + "/a/b/secret";
  ASSERT_TRUE(WriteFileAtomically(path, "  token\n").ok());
  EXPECT_EQ(*ReadFile(path), "  token\n");
  EXPECT_EQ(*ReadTrimmedFile(path), "token");
  ASSERT_TRUE(WriteFileAtomically(path, "second").ok());
  EXPECT_EQ(*ReadFile(path), "second");
  EXPECT_FALSE(std::filesystem::exists(path + ".tmp"));
}

TEST_F(FileTest, SecretsAreOwnerOnlyEvenWithAPermissiveUmask) {
  const mode_t old = umask(0);
  const std::string path = dir_ + "/key";
  ASSERT_TRUE(WriteFileAtomically(path, "k").ok());
  umask(old);
  struct stat st {};
  ASSERT_EQ(stat(path.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  ASSERT_TRUE(WriteFileAtomically(dir_ + "/public", "p", 0644).ok());
  ASSERT_EQ(stat((dir_ + "/public").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0644u);
}

mode_t ModeOf(const std::string& path) {
  struct stat st {};
  EXPECT_EQ(stat(path.c_str(), &st), 0) << path;
  return st.st_mode & 07777;
}

TEST_F(FileTest, CreatedDirectoriesAreOwnerOnlyWhateverTheUmask) {
  for (const mode_t mask : {0000, 0022, 0277}) {
    SCOPED_TRACE(testing::Message() << "umask " << std::oct << mask);
    const std::string top = dir_ + "/u" + std::to_string(mask);
    const mode_t old = umask(mask);
    const absl::Status created = CreatePrivateDirectories(top + "/state/tls");
    const absl::Status written = WriteFileAtomically(top + "/other/deeper/key", "k");
    umask(old);
    ASSERT_TRUE(created.ok()) << created;
    ASSERT_TRUE(written.ok()) << written;
    for (const char* sub : {"", "/state", "/state/tls", "/other", "/other/deeper"}) {
      EXPECT_EQ(ModeOf(top + sub), 0700u) << top + sub;
    }
    EXPECT_EQ(ModeOf(top + "/other/deeper/key"), 0600u);
  }
}

TEST_F(FileTest, ExistingDirectoriesKeepTheirMode) {
  const std::string shared = dir_ + "/shared";
  ASSERT_EQ(mkdir(shared.c_str(), 0755), 0);
  ASSERT_EQ(chmod(shared.c_str(), 0755), 0);
  ASSERT_TRUE(CreatePrivateDirectories(shared + "/state/").ok());
  EXPECT_EQ(ModeOf(shared), 0755u) << "an admin's directory is left as it is";
  EXPECT_EQ(ModeOf(shared + "/state"), 0700u);
  ASSERT_TRUE(CreatePrivateDirectories(shared + "/state").ok()) << "existing is fine";
}

TEST_F(FileTest, ErrorsNameThePathAndCarryMeaningfulCodes) {
  absl::StatusOr<std::string> missing = ReadFile(dir_ + "/nope");
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kNotFound);
  EXPECT_NE(missing.status().message().find(dir_ + "/nope"), std::string::npos);
  // A regular file where a directory should be.
  ASSERT_TRUE(WriteFileAtomically(dir_ + "/file", "x").ok());
  EXPECT_FALSE(WriteFileAtomically(dir_ + "/file/child", "x").ok());
  const absl::Status not_dir = CreatePrivateDirectories(dir_ + "/file/child");
  EXPECT_EQ(not_dir.code(), absl::StatusCode::kFailedPrecondition) << not_dir;
  EXPECT_NE(not_dir.message().find(dir_ + "/file"), std::string::npos) << not_dir;
}

}  // namespace
}  // namespace tunnelmesh
