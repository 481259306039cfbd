#include "node-agent/config/agent_config.h"

#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace tunnelmesh {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;
using ::testing::Not;
using ::testing::StartsWith;

// Key pairs made with `wg genkey | tee /dev/stderr | wg pubkey`.
constexpr char kPrivateA[] = "4MIsK4vfoHQadsOTzO0Dawy/5fPbXFNwJJNfXXQ/H28=";
constexpr char kPublicA[] = "7Ggn+vWc1+ngEW8JrB9824VlbE+Bmdr8FEAm+dA+dmk=";
constexpr char kPublicB[] = "hKf9fr37PGLy2zdK8tHwTl9i/kuvV6YO5PjjIyzOtVs=";
constexpr char kPublicC[] = "DiQB2LIyLMAsJja7Cyegp9rQ3qTgKztYvWk6isz/nXI=";
constexpr char kPsk[] = "BljAJk0++TVT+AoaqVQ6vAF9J7cMROmJoOuYnjkozu4=";
constexpr char kZeroKey[] = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=";

// A resolver that never touches the network and records what it was asked.
struct FakeResolver {
  std::vector<std::string> asked;
  HostResolver AsFunction() {
    return [this](const std::string& host) -> absl::StatusOr<IpAddress> {
      asked.push_back(host);
      if (host == "branch.example.net") return IpAddress::Parse("198.51.100.7");
      if (host == "v6.example.net") return IpAddress::Parse("2001:db8::7");
      if (host == "flaky.example.net") {
        return absl::UnavailableError("cannot resolve host \"flaky.example.net\": try again");
      }
      return absl::InvalidArgumentError(
          absl::StrCat("cannot resolve host \"", host, "\": Name or service not known"));
    };
  }
};

// A real wg-quick config of the kind found in /etc/wireguard, with hooks, DNS and comments.
constexpr char kRealWorldConfig[] = R"(# wg0.conf on the office gateway
[Interface]
PrivateKey = 4MIsK4vfoHQadsOTzO0Dawy/5fPbXFNwJJNfXXQ/H28=
Address = 10.200.0.1/24, fd42:42:42::1/64
ListenPort = 51820
DNS = 10.200.0.53, internal.example
PostUp = iptables -A FORWARD -i %i -j ACCEPT; iptables -t nat -A POSTROUTING -o eth0 -j MASQUERADE
PostDown = iptables -D FORWARD -i %i -j ACCEPT; iptables -t nat -D POSTROUTING -o eth0 -j MASQUERADE
SaveConfig = false

[Peer]
# laptop
PublicKey = hKf9fr37PGLy2zdK8tHwTl9i/kuvV6YO5PjjIyzOtVs=
PresharedKey = BljAJk0++TVT+AoaqVQ6vAF9J7cMROmJoOuYnjkozu4=
AllowedIPs = 10.200.0.2/32, fd42:42:42::2/128

[Peer]
# branch office
PublicKey = DiQB2LIyLMAsJja7Cyegp9rQ3qTgKztYvWk6isz/nXI=
Endpoint = branch.example.net:51820
AllowedIPs = 10.200.0.3/32
AllowedIPs = 192.168.50.0/24
PersistentKeepalive = 25
)";

std::string Message(const absl::Status& status) { return std::string(status.message()); }

std::string Interface(const std::string& extra = "") {
  return absl::StrCat("[Interface]\nPrivateKey = ", kPrivateA, "\n", extra);
}

absl::StatusOr<AgentConfig> Parse(const std::string& text) {
  FakeResolver resolver;
  return ParseAgentConfig(text, "wg0.conf", resolver.AsFunction());
}

// Expects `text` to fail with kInvalidArgument and exactly `message`.
void ExpectError(const std::string& text, const std::string& message) {
  absl::StatusOr<AgentConfig> config = Parse(text);
  ASSERT_FALSE(config.ok()) << "parsed although it should fail:\n" << text;
  EXPECT_EQ(config.status().code(), absl::StatusCode::kInvalidArgument) << config.status();
  EXPECT_EQ(Message(config.status()), message);
}

IpAddress Ip(const std::string& text) { return IpAddress::Parse(text).value(); }
Prefix Pfx(const std::string& text) { return Prefix::Parse(text).value(); }

TEST(AgentConfigTest, ParsesRealWorldWgQuickConfig) {
  FakeResolver resolver;
  absl::StatusOr<AgentConfig> config =
      ParseAgentConfig(kRealWorldConfig, "wg0.conf", resolver.AsFunction());
  ASSERT_TRUE(config.ok()) << config.status();

  EXPECT_EQ(config->private_key.ToBase64(), kPrivateA);
  EXPECT_EQ(config->listen_port, 51820);
  EXPECT_EQ(config->mtu, kDefaultMtu);
  ASSERT_EQ(config->addresses.size(), 2u);
  EXPECT_EQ(config->addresses[0].address, Ip("10.200.0.1"));
  EXPECT_EQ(config->addresses[0].prefix_length, 24);
  EXPECT_EQ(config->addresses[1].address, Ip("fd42:42:42::1"));
  EXPECT_EQ(config->addresses[1].prefix_length, 64);

  ASSERT_EQ(config->peers.size(), 2u);
  const PeerConfig& laptop = config->peers[0];
  EXPECT_EQ(laptop.public_key.ToBase64(), kPublicB);
  ASSERT_TRUE(laptop.preshared_key.has_value());
  EXPECT_EQ(laptop.preshared_key->ToBase64(), kPsk);
  EXPECT_FALSE(laptop.endpoint.has_value());
  EXPECT_THAT(laptop.allowed_ips, ElementsAre(Pfx("10.200.0.2/32"), Pfx("fd42:42:42::2/128")));
  EXPECT_EQ(laptop.persistent_keepalive, 0);
  EXPECT_EQ(laptop.line, 11);

  const PeerConfig& branch = config->peers[1];
  EXPECT_EQ(branch.public_key.ToBase64(), kPublicC);
  EXPECT_FALSE(branch.preshared_key.has_value());
  ASSERT_TRUE(branch.endpoint.has_value());
  EXPECT_EQ(*branch.endpoint, Endpoint(Ip("198.51.100.7"), 51820));
  EXPECT_EQ(branch.endpoint_text, "branch.example.net:51820");
  EXPECT_THAT(branch.allowed_ips, ElementsAre(Pfx("10.200.0.3/32"), Pfx("192.168.50.0/24")));
  EXPECT_EQ(branch.persistent_keepalive, 25);
  EXPECT_THAT(resolver.asked, ElementsAre("branch.example.net"));

  EXPECT_THAT(config->warnings, ElementsAre(StartsWith("wg0.conf:6: DNS is ignored"),
                                            StartsWith("wg0.conf:7: PostUp is ignored"),
                                            StartsWith("wg0.conf:8: PostDown is ignored"),
                                            StartsWith("wg0.conf:9: SaveConfig is ignored")));
}

TEST(AgentConfigTest, KeysAndSectionsAreCaseInsensitiveAndWhitespaceTolerant) {
  std::string text = absl::StrCat(
      "\xEF\xBB\xBF"  // UTF-8 byte order mark
      "  [ interface ]  \r\n"
      "privatekey=",
      kPrivateA, "\r\n",
      "\tmtu\t=\t1280   # smallest IPv6 MTU\r\n"
      "ADDRESS =10.0.0.1/8\r\n"
      "\r\n"
      "[PEER]\n"
      "publickey    =    ",
      kPublicB, "\n",
      "allowedips = 10.1.0.0/16 ,fd00::/8  \n"
      "persistentkeepalive = OFF\n"
      "endpoint = [2001:db8::1]:443\n");
  absl::StatusOr<AgentConfig> config = Parse(text);
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->mtu, 1280);
  EXPECT_EQ(config->listen_port, 0);
  ASSERT_EQ(config->peers.size(), 1u);
  EXPECT_EQ(config->peers[0].persistent_keepalive, 0);
  EXPECT_EQ(*config->peers[0].endpoint, Endpoint(Ip("2001:db8::1"), 443));
  EXPECT_THAT(config->peers[0].allowed_ips, ElementsAre(Pfx("10.1.0.0/16"), Pfx("fd00::/8")));
  EXPECT_THAT(config->warnings, IsEmpty());
}

TEST(AgentConfigTest, AddressKeepsHostBitsAndBareAddressIsHostPrefix) {
  absl::StatusOr<AgentConfig> config =
      Parse(Interface("Address = 10.0.0.7/24\nAddress = fd00::7, 192.168.1.1\n"));
  ASSERT_TRUE(config.ok()) << config.status();
  ASSERT_EQ(config->addresses.size(), 3u);
  EXPECT_EQ(config->addresses[0].ToString(), "10.0.0.7/24");
  EXPECT_EQ(config->addresses[0].subnet(), Pfx("10.0.0.0/24"));
  EXPECT_EQ(config->addresses[1].ToString(), "fd00::7/128");
  EXPECT_EQ(config->addresses[2].ToString(), "192.168.1.1/32");
}

TEST(AgentConfigTest, AllowedIpsZeroHostBitsDropInPeerDuplicatesAndAcceptEmptyValue) {
  absl::StatusOr<AgentConfig> config = Parse(Interface(absl::StrCat(
      "[Peer]\nPublicKey = ", kPublicB,
      "\nAllowedIPs =\nAllowedIPs = 10.0.0.9/24, 0.0.0.0/0\nAllowedIPs = 10.0.0.0/24, ::/0\n")));
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_THAT(config->peers[0].allowed_ips,
              ElementsAre(Pfx("10.0.0.0/24"), Pfx("0.0.0.0/0"), Pfx("::/0")));
}

TEST(AgentConfigTest, ZeroPresharedKeyMeansNone) {
  absl::StatusOr<AgentConfig> config = Parse(
      Interface(absl::StrCat("[Peer]\nPublicKey = ", kPublicB, "\nPresharedKey = ", kZeroKey)));
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_FALSE(config->peers[0].preshared_key.has_value());
}

TEST(AgentConfigTest, IpLiteralEndpointsNeverReachTheResolver) {
  FakeResolver resolver;
  absl::StatusOr<AgentConfig> config = ParseAgentConfig(
      Interface(absl::StrCat("[Peer]\nPublicKey = ", kPublicB, "\nEndpoint = 192.0.2.1:51820\n",
                             "[Peer]\nPublicKey = ", kPublicC, "\nEndpoint = [fd00::1]:1\n")),
      "wg0.conf", resolver.AsFunction());
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(*config->peers[0].endpoint, Endpoint(Ip("192.0.2.1"), 51820));
  EXPECT_EQ(*config->peers[1].endpoint, Endpoint(Ip("fd00::1"), 1));
  EXPECT_THAT(resolver.asked, IsEmpty());
}

TEST(AgentConfigTest, EveryIgnoredWgQuickKeyWarns) {
  absl::StatusOr<AgentConfig> config =
      Parse(Interface("DNS = 1.1.1.1\nTable = off\nPreUp = true\nPostUp = true\nPostUp = echo\n"
                      "PreDown = true\nPostDown = true\nSaveConfig = true\nFwMark = 0x1234\n"));
  ASSERT_TRUE(config.ok()) << config.status();
  // Table is honoured (below), so it does not warn.
  EXPECT_EQ(config->warnings.size(), 8u);
  EXPECT_EQ(config->warnings[7],
            "wg0.conf:11: FwMark is ignored (tunnelmesh-agent does not mark its UDP packets)");
}

TEST(AgentConfigTest, TableAsWgQuickReadsIt) {
  absl::StatusOr<AgentConfig> config = Parse(Interface(""));
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->table_mode, TableMode::kAuto);
  config = Parse(Interface("Table = off\n"));
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->table_mode, TableMode::kOff);
  EXPECT_THAT(config->warnings, IsEmpty());
  config = Parse(Interface("Table = auto\n"));
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->table_mode, TableMode::kAuto);
  config = Parse(Interface("Table = 1234\n"));
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->table_mode, TableMode::kId);
  EXPECT_EQ(config->table_id, 1234u);
  config = Parse(Interface("Table = main\n"));
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->table_mode, TableMode::kId);
  EXPECT_EQ(config->table_id, kMainRoutingTable);
}

TEST(AgentConfigErrorTest, TableNotANumber) {
  const std::string expected =
      " is not a routing table (expected off, auto, main or a table number 1-4294967295; give a "
      "named table by its number)";
  ExpectError(Interface("Table = vpn\n"), "wg0.conf:3: Table: \"vpn\"" + expected);
  ExpectError(Interface("Table = 0\n"), "wg0.conf:3: Table: \"0\"" + expected);
  ExpectError(Interface("Table = 4294967296\n"), "wg0.conf:3: Table: \"4294967296\"" + expected);
  ExpectError(Interface("Table = off\nTable = 5\n"),
              "wg0.conf:4: Table: appears twice in this section (first at line 3); keep one");
}

// --- Structure errors ---

TEST(AgentConfigErrorTest, KeyOutsideSection) {
  ExpectError("# leading comment\nPrivateKey = x\n",
              "wg0.conf:2: PrivateKey: appears before any section (put it under [Interface] or "
              "[Peer])");
}

TEST(AgentConfigErrorTest, UnknownSection) {
  ExpectError(Interface("[Peers]\n"),
              "wg0.conf:3: [Peers]: unknown section (expected [Interface] or [Peer])");
}

TEST(AgentConfigErrorTest, MalformedSectionHeader) {
  ExpectError("[Interface\n",
              "wg0.conf:1: \"[Interface\" is not a section header (expected [Interface] or "
              "[Peer])");
}

TEST(AgentConfigErrorTest, LineWithoutEquals) {
  ExpectError(Interface("ListenPort 51820\n"),
              "wg0.conf:3: \"ListenPort 51820\" is neither a \"Key = Value\" line nor a section "
              "header ([Interface] or [Peer])");
}

TEST(AgentConfigErrorTest, MissingKeyName) {
  ExpectError(Interface(" = 5\n"), "wg0.conf:3: \"= 5\" has no key before \"=\"");
}

TEST(AgentConfigErrorTest, UnknownKey) {
  ExpectError(Interface("Adress = 10.0.0.1/24\n"),
              "wg0.conf:3: Adress: unknown key in [Interface] (expected one of PrivateKey, "
              "ListenPort, Address, MTU, DNS, Table, PreUp, PostUp, PreDown, PostDown, "
              "SaveConfig, FwMark)");
  ExpectError(Interface(absl::StrCat("[Peer]\nPublicKey = ", kPublicB, "\nAllowedIP = 1.2.3.4\n")),
              "wg0.conf:5: AllowedIP: unknown key in [Peer] (expected one of PublicKey, "
              "PresharedKey, Endpoint, AllowedIPs, PersistentKeepalive)");
}

TEST(AgentConfigErrorTest, UnknownKeyIsEscaped) {
  absl::StatusOr<AgentConfig> config = Parse(Interface("Bad\x01Key = 1\n"));
  ASSERT_FALSE(config.ok());
  EXPECT_THAT(Message(config.status()), StartsWith("wg0.conf:3: Bad\\x01Key: unknown key"));
}

TEST(AgentConfigErrorTest, KeyInWrongSection) {
  ExpectError(Interface(absl::StrCat("PublicKey = ", kPublicB, "\n")),
              "wg0.conf:3: PublicKey: belongs in a [Peer] section, not in [Interface]");
  ExpectError(Interface(absl::StrCat("[Peer]\nPublicKey = ", kPublicB, "\nListenPort = 1\n")),
              "wg0.conf:5: ListenPort: belongs in a [Interface] section, not in [Peer]");
}

TEST(AgentConfigErrorTest, RepeatedSingleValuedKey) {
  ExpectError(Interface("MTU = 1400\nMTU = 1300\n"),
              "wg0.conf:4: MTU: appears twice in this section (first at line 3); keep one");
  ExpectError(Interface(absl::StrCat("[Peer]\nPublicKey = ", kPublicB, "\nEndpoint = 1.2.3.4:5\n",
                                     "endpoint = 1.2.3.4:6\n")),
              "wg0.conf:6: Endpoint: appears twice in this section (first at line 5); keep one");
}

TEST(AgentConfigErrorTest, SecondInterfaceSection) {
  ExpectError(absl::StrCat(Interface(), "[Interface]\n"),
              "wg0.conf:3: [Interface]: second [Interface] section (the first is at line 1); a "
              "file configures one interface");
}

TEST(AgentConfigErrorTest, MissingInterfaceSection) {
  ExpectError("", "wg0.conf: [Interface]: section is missing (expected one with a PrivateKey)");
  ExpectError(absl::StrCat("[Peer]\nPublicKey = ", kPublicB, "\n"),
              "wg0.conf: [Interface]: section is missing (expected one with a PrivateKey)");
}

TEST(AgentConfigErrorTest, MissingPrivateKey) {
  ExpectError("\n[Interface]\nListenPort = 1\n",
              "wg0.conf:2: PrivateKey: missing from [Interface] (generate one with \"wg genkey\")");
  ExpectError(absl::StrCat("[Interface]\n[Peer]\nPublicKey = ", kPublicB, "\n"),
              "wg0.conf:1: PrivateKey: missing from [Interface] (generate one with \"wg genkey\")");
}

TEST(AgentConfigErrorTest, MissingPublicKey) {
  ExpectError(Interface("[Peer]\nAllowedIPs = 10.0.0.0/8\n"),
              "wg0.conf:3: PublicKey: missing from [Peer] (expected the peer's base64 public key, "
              "as \"wg pubkey\" prints it)");
  ExpectError(Interface(absl::StrCat("[Peer]\n[Peer]\nPublicKey = ", kPublicB, "\n")),
              "wg0.conf:3: PublicKey: missing from [Peer] (expected the peer's base64 public key, "
              "as \"wg pubkey\" prints it)");
}

TEST(AgentConfigErrorTest, DuplicatePeer) {
  ExpectError(Interface(absl::StrCat("[Peer]\nPublicKey = ", kPublicB,
                                     "\n[Peer]\nPublicKey = ", kPublicB, "\n")),
              absl::StrCat("wg0.conf:6: PublicKey: peer \"", kPublicB,
                           "\" is already defined at line 4 (merge the two [Peer] sections)"));
}

TEST(AgentConfigErrorTest, PeerWithOwnPublicKey) {
  ExpectError(Interface(absl::StrCat("[Peer]\nPublicKey = ", kPublicA, "\n")),
              "wg0.conf:4: PublicKey: is this interface's own public key (derived from PrivateKey "
              "at line 2); a peer must be another host");
}

// --- Value errors, one per key ---

TEST(AgentConfigErrorTest, PublicKeyNotBase64) {
  ExpectError(Interface("[Peer]\nPublicKey = abc\n"),
              "wg0.conf:4: PublicKey: \"abc\" is not a base64 WireGuard key (expected 44 "
              "characters ending in \"=\", as \"wg pubkey\" prints it)");
  // Right length, wrong alphabet.
  ExpectError(Interface("[Peer]\nPublicKey = 7Ggn+vWc1+ngEW8JrB9824VlbE+Bmdr8FEAm+dA+dm!=\n"),
              "wg0.conf:4: PublicKey: \"7Ggn+vWc1+ngEW8JrB9824VlbE+Bmdr8FEAm+dA+dm!=\" is not a "
              "base64 WireGuard key (expected 44 characters ending in \"=\", as \"wg pubkey\" "
              "prints it)");
}

TEST(AgentConfigErrorTest, PublicKeyAllZero) {
  ExpectError(Interface(absl::StrCat("[Peer]\nPublicKey = ", kZeroKey, "\n")),
              "wg0.conf:4: PublicKey: is all zero (expected the peer's key)");
}

TEST(AgentConfigErrorTest, PrivateKeyErrorsNeverShowTheValue) {
  std::string near_miss = std::string(kPrivateA).substr(0, 43);
  absl::StatusOr<AgentConfig> config = Parse(absl::StrCat("[Interface]\nPrivateKey = ", near_miss));
  ASSERT_FALSE(config.ok());
  EXPECT_EQ(config.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(Message(config.status()),
            "wg0.conf:2: PrivateKey: value is not a base64 WireGuard key (expected 44 characters "
            "ending in \"=\", as \"wg genkey\" prints it; got 43 characters; the value is not "
            "shown because it is secret)");
  EXPECT_THAT(Message(config.status()), Not(HasSubstr(near_miss.substr(0, 8))));
}

TEST(AgentConfigErrorTest, PrivateKeyAllZero) {
  ExpectError(absl::StrCat("[Interface]\nPrivateKey = ", kZeroKey, "\n"),
              "wg0.conf:2: PrivateKey: is all zero (generate a key with \"wg genkey\")");
}

TEST(AgentConfigErrorTest, PresharedKeyNotBase64) {
  ExpectError(Interface(absl::StrCat("[Peer]\nPublicKey = ", kPublicB,
                                     "\nPresharedKey = secretsecretsecretsecretsecretsecretsecret"
                                     "se=\n")),
              "wg0.conf:5: PresharedKey: value is not a base64 WireGuard key (expected 44 "
              "characters ending in \"=\", as \"wg genkey\" prints it; got 45 characters; the "
              "value is not shown because it is secret)");
}

TEST(AgentConfigErrorTest, ListenPort) {
  constexpr char kMessage[] = "\" is not a UDP port (expected 0-65535)";
  ExpectError(Interface("ListenPort = 65536\n"),
              absl::StrCat("wg0.conf:3: ListenPort: \"65536", kMessage));
  ExpectError(Interface("ListenPort = -1\n"),
              absl::StrCat("wg0.conf:3: ListenPort: \"-1", kMessage));
  ExpectError(Interface("ListenPort = http\n"),
              absl::StrCat("wg0.conf:3: ListenPort: \"http", kMessage));
  ExpectError(Interface("ListenPort =\n"), absl::StrCat("wg0.conf:3: ListenPort: \"", kMessage));
}

TEST(AgentConfigErrorTest, Mtu) {
  ExpectError(Interface("MTU = 1279\n"),
              "wg0.conf:3: MTU: 1279 is out of range (expected 1280-65535; IPv6 needs at least "
              "1280)");
  ExpectError(Interface("MTU = 65536\n"),
              "wg0.conf:3: MTU: 65536 is out of range (expected 1280-65535; IPv6 needs at least "
              "1280)");
  ExpectError(Interface("MTU = 99999999999999\n"),
              "wg0.conf:3: MTU: \"99999999999999\" is not a number (expected an MTU of "
              "1280-65535)");
  ExpectError(Interface("MTU = 1420b\n"),
              "wg0.conf:3: MTU: \"1420b\" is not a number (expected an MTU of 1280-65535)");
}

TEST(AgentConfigErrorTest, Address) {
  constexpr char kExpected[] =
      " is not an interface address (expected an IP address with a prefix length, e.g. "
      "10.0.0.1/24 or fd00::1/64)";
  ExpectError(Interface("Address = 10.0.0.256/24\n"),
              absl::StrCat("wg0.conf:3: Address: \"10.0.0.256/24\"", kExpected));
  ExpectError(Interface("Address = 10.0.0.1/24, fd00::1/64, eth0\n"),
              absl::StrCat("wg0.conf:3: Address: \"eth0\"", kExpected));
  ExpectError(Interface("Address = 10.0.0.1/33\n"),
              "wg0.conf:3: Address: \"10.0.0.1/33\" has an invalid prefix length (expected 1-32 "
              "for IPv4)");
  ExpectError(Interface("Address = fd00::1/0\n"),
              "wg0.conf:3: Address: \"fd00::1/0\" has an invalid prefix length (expected 1-128 for "
              "IPv6)");
  ExpectError(Interface("Address = 10.0.0.1/\n"),
              "wg0.conf:3: Address: \"10.0.0.1/\" has an invalid prefix length (expected 1-32 for "
              "IPv4)");
  ExpectError(Interface("Address = 0.0.0.0/8\n"),
              "wg0.conf:3: Address: \"0.0.0.0/8\" is the unspecified address (expected this "
              "host's address in the tunnel)");
  ExpectError(Interface("Address = 10.0.0.1/24,,10.0.0.2/24\n"),
              "wg0.conf:3: Address: \"10.0.0.1/24,,10.0.0.2/24\" has an empty entry (expected a "
              "comma-separated list)");
  ExpectError(Interface("Address = 10.0.0.1/24\nAddress = 10.0.0.1/16\n"),
              "wg0.conf:4: Address: \"10.0.0.1/16\" repeats address 10.0.0.1 (first at line 3); "
              "keep one");
}

TEST(AgentConfigErrorTest, AllowedIps) {
  std::string peer = absl::StrCat("[Peer]\nPublicKey = ", kPublicB, "\n");
  ExpectError(Interface(peer + "AllowedIPs = 10.0.0.0/24, fd00::/129\n"),
              "wg0.conf:5: AllowedIPs: \"fd00::/129\" has an invalid prefix length (expected "
              "0-128 for IPv6)");
  ExpectError(Interface(peer + "AllowedIPs = 10.0.0.0/x\n"),
              "wg0.conf:5: AllowedIPs: \"10.0.0.0/x\" has an invalid prefix length (expected "
              "0-32 for IPv4)");
  ExpectError(Interface(peer + "AllowedIPs = any\n"),
              "wg0.conf:5: AllowedIPs: \"any\" is not an IP prefix (expected an address with an "
              "optional /length, e.g. 10.0.0.0/24 or fd00::/64)");
  ExpectError(Interface(peer + "AllowedIPs = 10.0.0.0/8,\n"),
              "wg0.conf:5: AllowedIPs: \"10.0.0.0/8,\" has an empty entry (expected a "
              "comma-separated list)");
  ExpectError(Interface(absl::StrCat(peer, "AllowedIPs = 10.9.0.0/16\n[Peer]\nPublicKey = ",
                                     kPublicC, "\nAllowedIPs = 10.9.1.1/16\n")),
              "wg0.conf:8: AllowedIPs: \"10.9.1.1/16\" is already allowed for the peer at line 3 "
              "(a prefix routes to one peer; remove one)");
}

TEST(AgentConfigErrorTest, Endpoint) {
  std::string peer = absl::StrCat("[Peer]\nPublicKey = ", kPublicB, "\nEndpoint = ");
  constexpr char kExpected[] =
      "expected host:port, e.g. 192.0.2.1:51820, [2001:db8::1]:51820 or vpn.example.com:51820";
  ExpectError(Interface(peer + "192.0.2.1\n"),
              absl::StrCat("wg0.conf:5: Endpoint: \"192.0.2.1\" has no port (", kExpected, ")"));
  ExpectError(Interface(peer + "192.0.2.1:0\n"),
              "wg0.conf:5: Endpoint: \"192.0.2.1:0\" has an invalid port (expected 1-65535)");
  ExpectError(Interface(peer + "192.0.2.1:65536\n"),
              "wg0.conf:5: Endpoint: \"192.0.2.1:65536\" has an invalid port (expected 1-65535)");
  ExpectError(Interface(peer + ":51820\n"),
              absl::StrCat("wg0.conf:5: Endpoint: \":51820\" has no host (", kExpected, ")"));
  ExpectError(Interface(peer + "2001:db8::1:51820\n"),
              "wg0.conf:5: Endpoint: \"2001:db8::1:51820\" needs brackets around its IPv6 "
              "address (e.g. [2001:db8::1]:51820)");
  ExpectError(Interface(peer + "[2001:db8::1]51820\n"),
              absl::StrCat("wg0.conf:5: Endpoint: \"[2001:db8::1]51820\" is not an endpoint (",
                           kExpected, ")"));
  ExpectError(
      Interface(peer + "[2001:db8::1\n"),
      absl::StrCat("wg0.conf:5: Endpoint: \"[2001:db8::1\" is not an endpoint (", kExpected, ")"));
  ExpectError(Interface(peer + "[vpn.example.com]:1\n"),
              "wg0.conf:5: Endpoint: \"[vpn.example.com]:1\" has no IPv6 address inside the "
              "brackets");
  ExpectError(Interface(peer + "[192.0.2.1]:1\n"),
              "wg0.conf:5: Endpoint: \"[192.0.2.1]:1\" has brackets around an IPv4 address "
              "(write 192.0.2.1:1)");
  ExpectError(Interface(peer + "vpn example.com:1\n"),
              absl::StrCat("wg0.conf:5: Endpoint: \"vpn example.com:1\" is neither an IP address "
                           "nor a host name (",
                           kExpected, ")"));
  ExpectError(Interface(peer + "nowhere.invalid:1\n"),
              "wg0.conf:5: Endpoint: cannot resolve host \"nowhere.invalid\": Name or service not "
              "known");
}

TEST(AgentConfigErrorTest, EndpointResolverCodeIsKept) {
  absl::StatusOr<AgentConfig> config = Parse(Interface(
      absl::StrCat("[Peer]\nPublicKey = ", kPublicB, "\nEndpoint = flaky.example.net:1\n")));
  ASSERT_FALSE(config.ok());
  EXPECT_EQ(config.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(Message(config.status()),
            "wg0.conf:5: Endpoint: cannot resolve host \"flaky.example.net\": try again");
}

TEST(AgentConfigErrorTest, PersistentKeepalive) {
  ExpectError(
      Interface(absl::StrCat("[Peer]\nPublicKey = ", kPublicB, "\nPersistentKeepalive = 65536\n")),
      "wg0.conf:5: PersistentKeepalive: \"65536\" is not a keepalive interval (expected "
      "seconds 0-65535, or \"off\")");
  ExpectError(
      Interface(absl::StrCat("[Peer]\nPublicKey = ", kPublicB, "\nPersistentKeepalive = 25s\n")),
      "wg0.conf:5: PersistentKeepalive: \"25s\" is not a keepalive interval (expected "
      "seconds 0-65535, or \"off\")");
}

TEST(AgentConfigErrorTest, LongValuesAreTruncatedInMessages) {
  absl::StatusOr<AgentConfig> config = Parse(Interface("MTU = " + std::string(5000, 'x') + "\n"));
  ASSERT_FALSE(config.ok());
  EXPECT_LT(Message(config.status()).size(), 200u);
  EXPECT_THAT(Message(config.status()), HasSubstr("xxx...\""));
}

TEST(InterfaceAddressTest, ParseAndPrint) {
  absl::StatusOr<InterfaceAddress> address = InterfaceAddress::Parse("fd00::1:2/48");
  ASSERT_TRUE(address.ok()) << address.status();
  EXPECT_EQ(address->ToString(), "fd00::1:2/48");
  EXPECT_EQ(address->subnet(), Pfx("fd00::/48"));
  EXPECT_FALSE(InterfaceAddress::Parse("").ok());
  EXPECT_FALSE(InterfaceAddress::Parse("10.0.0.1/24/1").ok());
}

// --- LoadAgentConfig ---

class LoadAgentConfigTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char dir_template[] = "/tmp/agent_config_test.XXXXXX";
    ASSERT_NE(mkdtemp(dir_template), nullptr);
    dir_ = dir_template;
  }
  void TearDown() override {
    for (const std::string& path : written_) unlink(path.c_str());
    rmdir(dir_.c_str());
  }
  std::string Write(const std::string& name, const std::string& text, mode_t mode) {
    std::string path = absl::StrCat(dir_, "/", name);
    std::FILE* file = std::fopen(path.c_str(), "w");
    EXPECT_NE(file, nullptr);
    std::fwrite(text.data(), 1, text.size(), file);
    std::fclose(file);
    chmod(path.c_str(), mode);
    written_.push_back(path);
    return path;
  }

  std::string dir_;
  std::vector<std::string> written_;
};

TEST(AgentConfigErrorTest, NonCanonicalBase64KeyDoesNotDecode) {
  // Right shape, but the last character before "=" carries bits beyond the 32 bytes.
  std::string psk = kPsk;
  psk[42] = '5';
  ExpectError(Interface(absl::StrCat("[Peer]\nPublicKey = ", kPublicB, "\nPresharedKey = ", psk)),
              "wg0.conf:5: PresharedKey: value is not a base64 WireGuard key (expected 44 "
              "characters ending in \"=\", as \"wg genkey\" prints it; it does not decode to 32 "
              "bytes; the value is not shown because it is secret)");
}

TEST_F(LoadAgentConfigTest, LoadsFileAndNamesItInErrors) {
  FakeResolver resolver;
  std::string good = Write("wg0.conf", kRealWorldConfig, 0600);
  absl::StatusOr<AgentConfig> config = LoadAgentConfig(good, resolver.AsFunction());
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->peers.size(), 2u);
  EXPECT_EQ(config->warnings.size(), 4u);

  std::string bad = Write("bad.conf", "[Interface]\nMTU = 9\n", 0600);
  config = LoadAgentConfig(bad, resolver.AsFunction());
  ASSERT_FALSE(config.ok());
  EXPECT_THAT(Message(config.status()), StartsWith(bad + ":2: MTU: 9 is out"));
}

TEST_F(LoadAgentConfigTest, WarnsWhenOthersCanReadTheFile) {
  std::string path = Write("open.conf", Interface(), 0644);
  absl::StatusOr<AgentConfig> config = LoadAgentConfig(path, FakeResolver().AsFunction());
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_THAT(config->warnings,
              ElementsAre(absl::StrCat(path,
                                       ": is accessible to every user but holds the private "
                                       "key (chmod 600 ",
                                       path, ")")));
}

TEST_F(LoadAgentConfigTest, MissingFileIsNotFound) {
  absl::StatusOr<AgentConfig> config = LoadAgentConfig(dir_ + "/absent.conf");
  ASSERT_FALSE(config.ok());
  EXPECT_EQ(config.status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(Message(config.status()), absl::StrCat("cannot open config file ", dir_,
                                                   "/absent.conf: No such file or directory"));
}

TEST_F(LoadAgentConfigTest, DirectoryIsRejected) {
  absl::StatusOr<AgentConfig> config = LoadAgentConfig(dir_);
  ASSERT_FALSE(config.ok());
  EXPECT_EQ(config.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(Message(config.status()), HasSubstr("is not a regular file"));
}

TEST_F(LoadAgentConfigTest, HugeFileIsRejected) {
  std::string path = Write("huge.conf", std::string(2 << 20, '#'), 0600);
  absl::StatusOr<AgentConfig> config = LoadAgentConfig(path);
  ASSERT_FALSE(config.ok());
  EXPECT_EQ(config.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(Message(config.status()), HasSubstr("is this the right file?"));
}

TEST(ResolveHostNameTest, LiteralAddressesResolveWithoutNetwork) {
  absl::StatusOr<IpAddress> address = ResolveHostName("127.0.0.1");
  ASSERT_TRUE(address.ok()) << address.status();
  EXPECT_EQ(*address, Ip("127.0.0.1"));
  address = ResolveHostName("::1");
  ASSERT_TRUE(address.ok()) << address.status();
  EXPECT_EQ(*address, Ip("::1"));
}

}  // namespace
}  // namespace tunnelmesh
