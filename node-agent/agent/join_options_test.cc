#include "node-agent/agent/join_options.h"

#include <sys/stat.h>
#include <unistd.h>

#include <fstream>

#include "gtest/gtest.h"
#include "lib/base/file.h"

namespace tunnelmesh {
namespace {

std::string TempDir() {
  char tmpl[] = "/tmp/tm-join-options-XXXXXX";
  return mkdtemp(tmpl);
}

// Options that pass the checks: a coordinator and a readable token file (in a new directory).
JoinOptions ValidOptions() {
  const std::string dir = TempDir();
  EXPECT_TRUE(WriteFileAtomically(dir + "/token", "secret-token\n").ok());
  JoinOptions options;
  options.coordinator = "coord:7700";
  options.token_file = dir + "/token";
  return options;
}

TEST(ParseHostPortTest, AcceptsTheDocumentedForms) {
  EXPECT_EQ(ParseHostPort("coord.example")->host, "coord.example");
  EXPECT_EQ(ParseHostPort("coord.example")->port, kDefaultCoordinatorPort);
  EXPECT_EQ(ParseHostPort("10.0.0.1:9000")->port, 9000);
  EXPECT_EQ(ParseHostPort("[fd00::1]:7701")->host, "fd00::1");
  EXPECT_EQ(ParseHostPort("[fd00::1]:7701")->port, 7701);
  EXPECT_EQ(ParseHostPort("[fd00::1]")->port, kDefaultCoordinatorPort);
  EXPECT_EQ(ParseHostPort("fd00::1")->host, "fd00::1");
  for (const char* bad : {"", ":7700", "host:", "host:0", "host:65536", "host:12a", "[fd00::1",
                          "[fd00::1]x", "[]:1", "host:123456"}) {
    absl::StatusOr<HostPort> parsed = ParseHostPort(bad);
    EXPECT_FALSE(parsed.ok()) << bad;
    if (!parsed.ok()) {
      EXPECT_EQ(parsed.status().code(), absl::StatusCode::kInvalidArgument);
    }
  }
}

TEST(ParseHostPortTest, RefusesUrlsPathsAndOtherTextWithTheAcceptedForms) {
  EXPECT_EQ(ParseHostPort("fd00::1")->port, kDefaultCoordinatorPort);
  EXPECT_EQ(ParseHostPort("coord_1.example:7700")->host, "coord_1.example");
  for (const char* bad :
       {"https://198.51.100.1:7700", "grpc://coord", "coord/path", "/var/run/x.sock", " coord",
        "coord:7700:1", "user@coord", "co ord", "[coord]:7700", "fd00::zz", "[198.51.100.1]:1"}) {
    absl::StatusOr<HostPort> parsed = ParseHostPort(bad);
    ASSERT_FALSE(parsed.ok()) << bad;
    EXPECT_EQ(parsed.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_NE(
        parsed.status().message().find("give HOST, HOST:PORT, [IPv6]:PORT or an IPv6 address"),
        std::string::npos)
        << parsed.status();
  }
  EXPECT_NE(ParseHostPort("https://198.51.100.1:7700").status().message().find("no https://"),
            std::string::npos);
  EXPECT_NE(ParseHostPort("coord/path").status().message().find("without a path"),
            std::string::npos);
}

TEST(ReadTokenFileTest, NamesTheErrnoAndNeverThePath) {
  const std::string dir = TempDir();
  const std::string pasted = dir + "/8WnQOmM3mwIILOiuchVZTt1aHamRxcj";
  absl::StatusOr<std::string> missing = ReadTokenFile("--token-file", pasted);
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(missing.status().message().find("--token-file: cannot read the file: No such file"),
            std::string::npos)
      << missing.status();
  EXPECT_EQ(missing.status().message().find("8WnQOmM3"), std::string::npos);
  ASSERT_TRUE(WriteFileAtomically(dir + "/empty", " \n").ok());
  absl::StatusOr<std::string> empty = ReadTokenFile("--token-file", dir + "/empty");
  ASSERT_FALSE(empty.ok());
  EXPECT_NE(empty.status().message().find("is empty"), std::string::npos);
  absl::StatusOr<std::string> directory = ReadTokenFile("--kubernetes-token-file", dir);
  ASSERT_FALSE(directory.ok());
  EXPECT_NE(directory.status().message().find("--kubernetes-token-file: cannot read the file: "
                                              "Is a directory"),
            std::string::npos)
      << directory.status();
  ASSERT_TRUE(WriteFileAtomically(dir + "/token", "tok\n").ok());
  EXPECT_EQ(*ReadTokenFile("--token-file", dir + "/token"), "tok");
}

TEST(CheckJoinOptionsTest, TimeoutIsADurationAboveZero) {
  JoinOptions options = ValidOptions();
  EXPECT_FALSE(CheckJoinOptions(options)->timeout.has_value());
  options.timeout = "90s";
  EXPECT_EQ(CheckJoinOptions(options)->timeout, absl::Seconds(90));
  for (const char* bad : {"0s", "-1s", "30", "soon"}) {
    options.timeout = bad;
    absl::StatusOr<CheckedJoinOptions> checked = CheckJoinOptions(options);
    ASSERT_FALSE(checked.ok()) << bad;
    EXPECT_NE(checked.status().message().find("--timeout"), std::string::npos);
  }
}

TEST(CheckJoinOptionsTest, SshFlagsNameWhatToFix) {
  JoinOptions options = ValidOptions();
  EXPECT_TRUE(CheckJoinOptions(options).ok());
  options.ssh_port = 0;
  absl::StatusOr<CheckedJoinOptions> checked = CheckJoinOptions(options);
  ASSERT_FALSE(checked.ok());
  EXPECT_NE(checked.status().message().find("--ssh-port"), std::string::npos);
  options.no_ssh = true;  // Port 0 does not matter without SSH.
  EXPECT_TRUE(CheckJoinOptions(options).ok());

  options.ssh_proxy_command = "ssh -W [%h]:%p jump";
  checked = CheckJoinOptions(options);
  ASSERT_FALSE(checked.ok());
  EXPECT_NE(checked.status().message().find("--no-ssh"), std::string::npos);
  options.no_ssh = false;
  options.ssh_port = 7722;
  EXPECT_TRUE(CheckJoinOptions(options).ok());
  options.ssh_proxy_command = "ssh jump";
  checked = CheckJoinOptions(options);
  ASSERT_FALSE(checked.ok());
  EXPECT_NE(checked.status().message().find("%h and %p"), std::string::npos);
}

TEST(MemberNameTest, HostNamesBecomeDnsLabels) {
  EXPECT_EQ(MakeDnsLabel("Bob's Laptop"), "bob-s-laptop");
  EXPECT_EQ(MakeDnsLabel("--x__y--"), "x-y");
  EXPECT_EQ(MakeDnsLabel(std::string(80, 'a')), std::string(63, 'a'));
  EXPECT_EQ(DefaultMemberName("Build-Host-7.example.com"), "build-host-7");
  EXPECT_EQ(DefaultMemberName("alice"), "alice");
  EXPECT_EQ(DefaultMemberName("___"), "");
  EXPECT_EQ(DefaultMemberName(""), "");
}

TEST(CheckJoinOptionsTest, NamesTheFlagToFix) {
  const std::string dir = TempDir();
  ASSERT_TRUE(WriteFileAtomically(dir + "/token", "secret-token\n").ok());
  JoinOptions options;
  options.coordinator = "coord:7700";
  options.token_file = dir + "/token";
  absl::StatusOr<CheckedJoinOptions> checked = CheckJoinOptions(options);
  ASSERT_TRUE(checked.ok()) << checked.status();
  EXPECT_EQ(checked->join_token, "secret-token");
  EXPECT_EQ(checked->coordinator.host, "coord");

  auto message = [](const JoinOptions& o) {
    absl::StatusOr<CheckedJoinOptions> c = CheckJoinOptions(o);
    return c.ok() ? std::string() : std::string(c.status().message());
  };
  JoinOptions both = options;
  both.kubernetes_token_file = dir + "/token";
  EXPECT_NE(message(both).find("--kubernetes-token-file"), std::string::npos);
  JoinOptions kind = options;
  kind.kind = "node";
  EXPECT_NE(message(kind).find("--kind"), std::string::npos);
  JoinOptions missing = options;
  missing.token_file = dir + "/absent";
  EXPECT_NE(message(missing).find("--token-file"), std::string::npos);
  JoinOptions ca = options;
  ca.ca_file = dir + "/token";
  EXPECT_NE(message(ca).find("--ca-file"), std::string::npos);
  JoinOptions hash = options;
  hash.ca_hash = "md5:abc";
  EXPECT_FALSE(message(hash).empty());
  JoinOptions address = options;
  address.coordinator = "coord:notaport";
  EXPECT_NE(message(address).find("give HOST, HOST:PORT, [IPv6]:PORT"), std::string::npos);
  JoinOptions alias = options;
  alias.aliases = {"git", "Registry"};
  EXPECT_NE(message(alias).find("--alias \"Registry\""), std::string::npos);
  alias.aliases.assign(17, "git");
  EXPECT_NE(message(alias).find("--alias: at most 16"), std::string::npos);
}

TEST(CheckJoinOptionsTest, ResolvedRegistrationFollowsDnsAndNoResolved) {
  const JoinOptions options = ValidOptions();
  auto registers = [](const JoinOptions& o) {
    absl::StatusOr<CheckedJoinOptions> c = CheckJoinOptions(o);
    EXPECT_TRUE(c.ok()) << c.status();
    return c.ok() && c->register_resolved;
  };
  EXPECT_TRUE(registers(options));
  JoinOptions no_resolved = options;
  no_resolved.no_resolved = true;
  EXPECT_FALSE(registers(no_resolved));
  // No DNS server, nothing to register: --no-dns implies --no-resolved.
  JoinOptions no_dns = options;
  no_dns.no_dns = true;
  EXPECT_FALSE(registers(no_dns));
}

TEST(NodeKeyTest, CreatedOnceWithMode0600) {
  InitCrypto();
  const std::string dir = TempDir() + "/state";
  absl::StatusOr<SecretKey> first = LoadOrCreateNodeKey(dir);
  ASSERT_TRUE(first.ok()) << first.status();
  struct stat st {};
  ASSERT_EQ(stat((dir + "/node.key").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  ASSERT_EQ(stat(dir.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0700u) << "the state directory it creates is owner-only";
  absl::StatusOr<SecretKey> again = LoadOrCreateNodeKey(dir);
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(DerivePublicKey(*first), DerivePublicKey(*again));
  ASSERT_TRUE(WriteFileAtomically(dir + "/node.key", "garbage").ok());
  EXPECT_EQ(LoadOrCreateNodeKey(dir).status().code(), absl::StatusCode::kDataLoss);
}

}  // namespace
}  // namespace tunnelmesh

namespace tunnelmesh {
namespace {

TEST(CheckJoinOptionsTest, ExitFlagsAreCheckedAndNamed) {
  JoinOptions options = ValidOptions();
  options.exit_peers = {"home", "office-2"};
  options.exit_dns = "9.9.9.9";
  absl::StatusOr<CheckedJoinOptions> checked = CheckJoinOptions(options);
  ASSERT_TRUE(checked.ok()) << checked.status();
  ASSERT_TRUE(checked->exit_dns.has_value());
  EXPECT_EQ(checked->exit_dns->ToString(), "9.9.9.9");

  options.exit_dns = "dns.example";
  checked = CheckJoinOptions(options);
  ASSERT_FALSE(checked.ok());
  EXPECT_NE(checked.status().message().find("--exit-dns \"dns.example\" is not an IP address"),
            std::string::npos)
      << checked.status();

  options.exit_dns.clear();
  options.exit_peers = {"Home Laptop"};
  checked = CheckJoinOptions(options);
  ASSERT_FALSE(checked.ok());
  EXPECT_NE(checked.status().message().find("--exit-peer \"Home Laptop\" is not a member name"),
            std::string::npos)
      << checked.status();
}

}  // namespace
}  // namespace tunnelmesh
