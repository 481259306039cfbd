#include "operator/tls/tls_files.h"

#include <sys/stat.h>

#include <cstdlib>
#include <filesystem>

#include "gtest/gtest.h"
#include "lib/base/file.h"

namespace tunnelmesh {
namespace {

std::string TempDir() {
  std::string pattern = ::testing::TempDir() + "/tls_files_XXXXXX";
  return mkdtemp(pattern.data());
}

mode_t Mode(const std::string& path) {
  struct stat st {};
  EXPECT_EQ(stat(path.c_str(), &st), 0) << path;
  return st.st_mode & 0777;
}

TEST(TlsFilesTest, CreatesOnceThenLoads) {
  const std::string dir = TempDir() + "/tls";
  absl::StatusOr<TlsIdentity> first = LoadOrCreateTlsIdentity(dir);
  ASSERT_TRUE(first.ok()) << first.status();
  EXPECT_EQ(Mode(dir + "/ca.key"), 0600u);
  EXPECT_EQ(Mode(dir + "/server.key"), 0600u);
  EXPECT_EQ(Mode(dir + "/ca.crt"), 0644u);
  EXPECT_NE(first->server_cert_pem.find(first->ca_cert_pem), std::string::npos)
      << "the chain ends with the CA";
  absl::StatusOr<TlsIdentity> again = LoadOrCreateTlsIdentity(dir);
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(again->ca_cert_pem, first->ca_cert_pem);
  EXPECT_EQ(again->server_key_pem, first->server_key_pem);
  // A lost server certificate is issued again by the same CA.
  std::filesystem::remove(dir + "/server.crt");
  absl::StatusOr<TlsIdentity> reissued = LoadOrCreateTlsIdentity(dir);
  ASSERT_TRUE(reissued.ok());
  EXPECT_EQ(reissued->ca_cert_pem, first->ca_cert_pem);
  EXPECT_NE(reissued->server_key_pem, first->server_key_pem);
}

TEST(TlsFilesTest, DirectoriesAreOwnerOnlyWhateverTheUmask) {
  const std::string state = TempDir() + "/state";
  const mode_t old = umask(0);
  absl::StatusOr<TlsIdentity> identity = LoadOrCreateTlsIdentity(state + "/tls");
  umask(old);
  ASSERT_TRUE(identity.ok()) << identity.status();
  EXPECT_EQ(Mode(state), 0700u);
  EXPECT_EQ(Mode(state + "/tls"), 0700u);
  EXPECT_EQ(Mode(state + "/tls/ca.key"), 0600u);
  EXPECT_EQ(Mode(state + "/tls/server.key"), 0600u);
}

TEST(TlsFilesTest, CorruptCaNamesTheFiles) {
  const std::string dir = TempDir();
  ASSERT_TRUE(LoadOrCreateTlsIdentity(dir).ok());
  ASSERT_TRUE(WriteFileAtomically(dir + "/ca.key", "garbage", 0600).ok());
  std::filesystem::remove(dir + "/server.crt");
  absl::StatusOr<TlsIdentity> broken = LoadOrCreateTlsIdentity(dir);
  EXPECT_EQ(broken.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_NE(broken.status().message().find("ca.key"), std::string::npos);
}

}  // namespace
}  // namespace tunnelmesh
