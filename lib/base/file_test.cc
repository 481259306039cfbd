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

TEST_F(FileTest, ErrorsNameThePathAndCarryMeaningfulCodes) {
  absl::StatusOr<std::string> missing = ReadFile(dir_ + "/nope");
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kNotFound);
  EXPECT_NE(missing.status().message().find(dir_ + "/nope"), std::string::npos);
  // A regular file where a directory should be.
  ASSERT_TRUE(WriteFileAtomically(dir_ + "/file", "x").ok());
  EXPECT_FALSE(WriteFileAtomically(dir_ + "/file/child", "x").ok());
}

}  // namespace
}  // namespace tunnelmesh
