#include "operator/kube/config.h"

#include <stdlib.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <string>

#include "absl/strings/escaping.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace tunnelmesh::kube {
namespace {

using ::testing::HasSubstr;

class ConfigTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string pattern = ::testing::TempDir() + "/kubeconfig_test.XXXXXX";
    ASSERT_NE(mkdtemp(pattern.data()), nullptr);
    dir_ = pattern;
    unsetenv("KUBECONFIG");
    unsetenv("KUBERNETES_SERVICE_HOST");
    unsetenv("KUBERNETES_SERVICE_PORT");
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  std::string Write(const std::string& name, const std::string& text) {
    const std::string path = dir_ + "/" + name;
    std::filesystem::create_directories(std::filesystem::path(path).parent_path());
    std::ofstream(path) << text;
    return path;
  }

  std::string dir_;
};

std::string Kubeconfig(const std::string& cluster, const std::string& user,
                       const std::string& extra_context = "") {
  return "apiVersion: v1\nkind: Config\n"
         "clusters:\n- name: other\n  cluster: {server: https://wrong:1}\n"
         "- name: c1\n  cluster:\n" +
         cluster + "users:\n- name: u1\n  user:\n" + user +
         "contexts:\n- name: ctx\n  context: {cluster: c1, user: u1" + extra_context +
         "}\n"
         "current-context: ctx\n";
}

TEST_F(ConfigTest, InlineCaAndToken) {
  const std::string path = Write("config", Kubeconfig("    server: https://10.0.0.1:6443/\n"
                                                      "    certificate-authority-data: " +
                                                          absl::Base64Escape("CA PEM") + "\n",
                                                      "    token: abc123\n", ", namespace: ops"));
  absl::StatusOr<ClusterConfig> config = LoadKubeconfig(path);
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->server, "https://10.0.0.1:6443");
  EXPECT_EQ(config->ca_pem, "CA PEM");
  EXPECT_EQ(config->token, "abc123");
  EXPECT_EQ(config->namespace_name, "ops");
  EXPECT_FALSE(config->insecure_skip_tls_verify);
  EXPECT_TRUE(config->token_file.empty());
}

TEST_F(ConfigTest, FilesRelativeToTheKubeconfigFolder) {
  Write("sub/pki/ca.crt", "CA FROM FILE");
  Write("sub/pki/client.crt", "CERT FROM FILE");
  Write("sub/pki/client.key", "KEY FROM FILE");
  Write("sub/token", "tok-from-file\n");
  const std::string path = Write("sub/config", Kubeconfig("    server: https://api.example:443\n"
                                                          "    certificate-authority: pki/ca.crt\n",
                                                          "    client-certificate: pki/client.crt\n"
                                                          "    client-key: " +
                                                              dir_ +
                                                              "/sub/pki/client.key\n"
                                                              "    tokenFile: token\n"));
  absl::StatusOr<ClusterConfig> config = LoadKubeconfig(path);
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->ca_pem, "CA FROM FILE");
  EXPECT_EQ(config->client_cert_pem, "CERT FROM FILE");
  EXPECT_EQ(config->client_key_pem, "KEY FROM FILE");
  EXPECT_EQ(config->token_file, dir_ + "/sub/token");
}

TEST_F(ConfigTest, InlineClientCertificateAndInsecure) {
  const std::string path = Write(
      "config", Kubeconfig("    server: https://127.0.0.1:1\n    insecure-skip-tls-verify: true\n",
                           "    client-certificate-data: " + absl::Base64Escape("C") +
                               "\n    client-key-data: " + absl::Base64Escape("K") + "\n"));
  absl::StatusOr<ClusterConfig> config = LoadKubeconfig(path);
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_TRUE(config->insecure_skip_tls_verify);
  EXPECT_EQ(config->client_cert_pem, "C");
  EXPECT_EQ(config->client_key_pem, "K");
}

TEST_F(ConfigTest, ErrorsNameTheFileAndTheField) {
  struct Case {
    std::string text;
    std::string want;
  };
  const Case cases[] = {
      {"clusters: []\n", "current-context"},
      {"current-context: nope\ncontexts: []\n", "context \"nope\" is not in contexts"},
      {"current-context: [unclosed\n", "not valid YAML"},
      {"- just\n- a list\n", "not a YAML map"},
      {Kubeconfig("    server: https://a:1\n    certificate-authority-data: '!!!'\n", ""),
       "clusters[c1].cluster.certificate-authority-data: not valid base64"},
      {Kubeconfig("    server: https://a:1\n    certificate-authority: missing.crt\n", ""),
       "clusters[c1].cluster.certificate-authority: cannot read"},
      {Kubeconfig("    server: ftp://a\n", ""), "clusters[c1].cluster.server"},
      {Kubeconfig("    server: https://a:1\n", "    tokenFile: /nonexistent/token\n"),
       "users[u1].user.tokenFile"},
      {Kubeconfig("    server: https://a:1\n", "    client-certificate-data: QQ==\n"),
       "users[u1].user.client-key"},
      {Kubeconfig("    server: https://a:1\n", "    exec: {command: aws}\n"),
       "users[u1].user.exec"},
      {Kubeconfig("    server: https://a:1\n    insecure-skip-tls-verify: maybe\n", ""),
       "insecure-skip-tls-verify"},
  };
  for (const Case& c : cases) {
    const std::string path = Write("bad", c.text);
    absl::StatusOr<ClusterConfig> config = LoadKubeconfig(path);
    ASSERT_FALSE(config.ok()) << c.text;
    EXPECT_THAT(config.status().message(), HasSubstr(path)) << c.text;
    EXPECT_THAT(config.status().message(), HasSubstr(c.want)) << c.text;
  }
  EXPECT_THAT(LoadKubeconfig(dir_ + "/absent").status().message(), HasSubstr(dir_ + "/absent"));
}

TEST_F(ConfigTest, InClusterFromEnvironmentAndServiceAccountFolder) {
  Write("sa/token", "sa-token\n");
  Write("sa/ca.crt", "SA CA");
  Write("sa/namespace", "tunnelmesh\n");
  EXPECT_EQ(InClusterConfig(dir_ + "/sa").status().code(), absl::StatusCode::kFailedPrecondition);

  setenv("KUBERNETES_SERVICE_HOST", "fd00:10:96::1", 1);
  setenv("KUBERNETES_SERVICE_PORT", "443", 1);
  absl::StatusOr<ClusterConfig> config = InClusterConfig(dir_ + "/sa");
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->server, "https://[fd00:10:96::1]:443");
  EXPECT_EQ(config->token_file, dir_ + "/sa/token");
  EXPECT_EQ(config->ca_pem, "SA CA");
  EXPECT_EQ(config->namespace_name, "tunnelmesh");

  setenv("KUBERNETES_SERVICE_HOST", "10.96.0.1", 1);
  config = InClusterConfig(dir_ + "/sa");
  ASSERT_TRUE(config.ok());
  EXPECT_EQ(config->server, "https://10.96.0.1:443");

  absl::StatusOr<ClusterConfig> missing = InClusterConfig(dir_ + "/nothing");
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(missing.status().message(), HasSubstr("token"));
}

TEST_F(ConfigTest, ResolveOrder) {
  const std::string flag_path =
      Write("flag", Kubeconfig("    server: https://flag:1\n", "    token: t\n"));
  const std::string env_path =
      Write("env", Kubeconfig("    server: https://env:1\n", "    token: t\n"));
  setenv("KUBECONFIG", (env_path + ":" + flag_path).c_str(), 1);
  EXPECT_EQ(ResolveClusterConfig(flag_path)->server, "https://flag:1");
  EXPECT_EQ(ResolveClusterConfig("")->server, "https://env:1");
  EXPECT_THAT(ResolveClusterConfig(dir_ + "/none").status().message(), HasSubstr("--kubeconfig"));
  unsetenv("KUBECONFIG");
  absl::StatusOr<ClusterConfig> none = ResolveClusterConfig("");
  ASSERT_FALSE(none.ok());
  EXPECT_THAT(none.status().message(), HasSubstr("--kubeconfig"));
  EXPECT_THAT(none.status().message(), HasSubstr("$KUBECONFIG"));
  EXPECT_THAT(none.status().message(), HasSubstr("in-cluster"));
}

}  // namespace
}  // namespace tunnelmesh::kube
