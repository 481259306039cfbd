#include "node-agent/cni/plugin_config.h"

#include <map>
#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace tunnelmesh::cni {
namespace {

using nlohmann::json;
using ::testing::HasSubstr;

Getenv FromMap(const std::map<std::string, std::string>& vars) {
  return [vars](const char* name) -> const char* {
    auto it = vars.find(name);
    return it == vars.end() ? nullptr : it->second.c_str();
  };
}

std::map<std::string, std::string> AddEnv() {
  return {{"CNI_COMMAND", "ADD"},
          {"CNI_CONTAINERID", "0123456789abcdef0123"},
          {"CNI_NETNS", "/var/run/netns/pod"},
          {"CNI_IFNAME", "eth0"},
          {"CNI_PATH", "/opt/cni/bin"}};
}

TEST(EnvironmentTest, ReadsKubernetesArgs) {
  auto vars = AddEnv();
  vars["CNI_ARGS"] =
      "IgnoreUnknown=1;K8S_POD_NAMESPACE=ci;K8S_POD_NAME=runner-1;K8S_POD_INFRA_CONTAINER_ID=x;"
      "K8S_POD_UID=1234-5678";
  absl::StatusOr<Environment> env = ParseEnvironment(FromMap(vars));
  ASSERT_TRUE(env.ok()) << env.status();
  EXPECT_EQ(env->command, "ADD");
  EXPECT_EQ(env->container_id, "0123456789abcdef0123");
  EXPECT_EQ(env->netns, "/var/run/netns/pod");
  EXPECT_EQ(env->if_name, "eth0");
  EXPECT_EQ(env->path, "/opt/cni/bin");
  EXPECT_EQ(env->pod_namespace, "ci");
  EXPECT_EQ(env->pod_name, "runner-1");
  EXPECT_EQ(env->pod_uid, "1234-5678");
}

TEST(EnvironmentTest, OutsideKubernetesThePodIsNamedAfterTheContainer) {
  absl::StatusOr<Environment> env = ParseEnvironment(FromMap(AddEnv()));
  ASSERT_TRUE(env.ok()) << env.status();
  EXPECT_EQ(env->pod_name, "0123456789ab");
  EXPECT_EQ(env->pod_namespace, "default");
  EXPECT_EQ(env->pod_uid, "");
}

TEST(EnvironmentTest, ErrorsNameTheVariable) {
  struct Case {
    std::string variable;
    std::string value;  // "" removes it
    std::string expected;
  };
  for (const Case& c : std::vector<Case>{
           {"CNI_COMMAND", "", "CNI_COMMAND is not set"},
           {"CNI_COMMAND", "UP", "CNI_COMMAND \"UP\""},
           {"CNI_CONTAINERID", "", "CNI_CONTAINERID is not set"},
           {"CNI_CONTAINERID", "-bad/id", "CNI_CONTAINERID \"-bad/id\""},
           {"CNI_IFNAME", "", "CNI_IFNAME is not set"},
           {"CNI_NETNS", "", "CNI_NETNS is not set"},
           {"CNI_ARGS", "K8S_POD_NAME", "CNI_ARGS entry \"K8S_POD_NAME\""},
       }) {
    auto vars = AddEnv();
    if (c.value.empty()) {
      vars.erase(c.variable);
    } else {
      vars[c.variable] = c.value;
    }
    absl::StatusOr<Environment> env = ParseEnvironment(FromMap(vars));
    ASSERT_FALSE(env.ok()) << c.variable;
    EXPECT_EQ(CniErrorCode(env.status()), kCniErrorInvalidEnvironment) << c.variable;
    EXPECT_THAT(env.status().message(), HasSubstr(c.expected));
  }
}

TEST(EnvironmentTest, DelGcStatusAndVersionNeedLess) {
  auto del = AddEnv();
  del["CNI_COMMAND"] = "DEL";
  del.erase("CNI_NETNS");  // the pod's namespace may be gone already
  EXPECT_TRUE(ParseEnvironment(FromMap(del)).ok());
  for (const char* command : {"GC", "STATUS", "VERSION"}) {
    EXPECT_TRUE(ParseEnvironment(FromMap({{"CNI_COMMAND", command}})).ok()) << command;
  }
}

TEST(ConfigTest, DefaultsAndFields) {
  absl::StatusOr<NetworkConfig> config = ParseNetworkConfig(
      R"({"cniVersion": "1.0.0", "name": "pods", "type": "tunnelmesh-cni", "mesh": "demo"})",
      "ADD");
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->cni_version, "1.0.0");
  EXPECT_EQ(config->name, "pods");
  EXPECT_EQ(config->mesh, "demo");
  EXPECT_EQ(config->agent_socket, "/var/lib/tunnelmesh/tm0.sock");
  EXPECT_EQ(config->pod_interface, "mesh0");
  EXPECT_FALSE(config->prev_result.has_value());

  config = ParseNetworkConfig(
      R"({"cniVersion": "1.1.0", "name": "pods", "type": "tunnelmesh-cni",
          "agentSocket": "/run/tm/tm1.sock", "podInterface": "tm-pod",
          "cni.dev/valid-attachments": [{"containerID": "c1", "ifname": "eth0"}]})",
      "GC");
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->agent_socket, "/run/tm/tm1.sock");
  EXPECT_EQ(config->pod_interface, "tm-pod");
  EXPECT_EQ(config->valid_attachments, (std::vector<Attachment>{{"c1", "eth0"}}));
}

TEST(ConfigTest, BadConfigsNameTheField) {
  struct Case {
    std::string config;
    int code;
    std::string expected;
  };
  const std::string head = R"("cniVersion": "1.0.0", "name": "pods", "type": "tunnelmesh-cni")";
  for (const Case& c : std::vector<Case>{
           {"not json", kCniErrorDecode, "not a JSON object"},
           {"[1]", kCniErrorDecode, "not a JSON object"},
           {R"({"name": "pods", "type": "tunnelmesh-cni"})", kCniErrorInvalidConfig,
            "\"cniVersion\" is missing"},
           {R"({"cniVersion": 1, "name": "pods"})", kCniErrorInvalidConfig,
            "\"cniVersion\" must be a string"},
           {R"({"cniVersion": "0.3.1", "name": "pods", "type": "tunnelmesh-cni"})",
            kCniErrorIncompatibleVersion, "cniVersion \"0.3.1\" is not supported"},
           {R"({"cniVersion": "1.0.0", "type": "tunnelmesh-cni"})", kCniErrorInvalidConfig,
            "\"name\" is missing"},
           {R"({"cniVersion": "1.0.0", "name": "pods", "type": "bridge"})", kCniErrorInvalidConfig,
            "\"type\" must be \"tunnelmesh-cni\""},
           {"{" + head + R"(, "mesh": 7})", kCniErrorInvalidConfig, "\"mesh\" must be a string"},
           {"{" + head + R"(, "agentSocket": "tm0.sock"})", kCniErrorInvalidConfig,
            "\"agentSocket\" must be an absolute path"},
           {"{" + head + R"(, "podInterface": "a-name-far-too-long"})", kCniErrorInvalidConfig,
            "\"podInterface\""},
           {"{" + head + R"(, "podInterface": "a/b"})", kCniErrorInvalidConfig, "\"podInterface\""},
           {"{" + head + R"(, "prevResult": []})", kCniErrorInvalidConfig,
            "\"prevResult\" must be an object"},
           {"{" + head + R"(, "prevResult": {"ips": {}}})", kCniErrorInvalidConfig,
            "\"prevResult.ips\" must be a list"},
           {"{" + head + R"(, "prevResult": {"interfaces": [7]}})", kCniErrorInvalidConfig,
            "\"prevResult.interfaces[0]\" must be an object"},
           {"{" + head + R"(, "prevResult": {"ips": [{"address": "10.0.0.1/24"}, {}]}})",
            kCniErrorInvalidConfig, "\"prevResult.ips[1].address\" is missing"},
           {"{" + head + R"(, "prevResult": {"ips": [{"address": "10.0.0.1/33"}]}})",
            kCniErrorInvalidConfig, "\"prevResult.ips[0].address\" is not an address"},
           {"{" + head +
                R"(, "prevResult": {"ips": [{"address": "10.0.0.1/8", "interface": -1}]}})",
            kCniErrorInvalidConfig, "\"prevResult.ips[0].interface\""},
       }) {
    absl::StatusOr<NetworkConfig> config = ParseNetworkConfig(c.config, "ADD");
    ASSERT_FALSE(config.ok()) << c.config;
    EXPECT_EQ(CniErrorCode(config.status()), c.code) << c.config;
    EXPECT_THAT(config.status().message(), HasSubstr(c.expected)) << c.config;
  }
}

TEST(ConfigTest, GcAndStatusNeedVersion110) {
  const char* config = R"({"cniVersion": "1.0.0", "name": "pods", "type": "tunnelmesh-cni"})";
  for (const char* command : {"GC", "STATUS"}) {
    absl::StatusOr<NetworkConfig> parsed = ParseNetworkConfig(config, command);
    ASSERT_FALSE(parsed.ok());
    EXPECT_EQ(CniErrorCode(parsed.status()), kCniErrorIncompatibleVersion);
  }
  absl::StatusOr<NetworkConfig> parsed = ParseNetworkConfig(
      R"({"cniVersion": "1.1.0", "name": "p", "type": "tunnelmesh-cni",
          "cni.dev/valid-attachments": [{"containerID": "c1"}]})",
      "GC");
  ASSERT_FALSE(parsed.ok());
  EXPECT_THAT(parsed.status().message(), HasSubstr("cni.dev/valid-attachments[0]"));
}

TEST(ConfigTest, VersionAcceptsAnyConfig) {
  absl::StatusOr<NetworkConfig> config =
      ParseNetworkConfig(R"({"cniVersion": "0.2.0"})", "VERSION");
  ASSERT_TRUE(config.ok());
  EXPECT_EQ(json::parse(EncodeVersionResult(config->cni_version)),
            json::parse(R"({"cniVersion": "1.1.0",
                            "supportedVersions": ["0.4.0", "1.0.0", "1.1.0"]})"));
  EXPECT_EQ(json::parse(EncodeVersionResult("1.0.0"))["cniVersion"], "1.0.0");
}

TEST(ErrorTest, EncodesCodeMessageAndDetails) {
  json error = json::parse(
      EncodeError("1.0.0", CniError(kCniErrorAgentUnreachable, "no agent", "socket gone")));
  EXPECT_EQ(error, json::parse(R"({"cniVersion": "1.0.0", "code": 100, "msg": "no agent",
                                   "details": "socket gone"})"));
  error = json::parse(EncodeError("", absl::InvalidArgumentError("bad")));
  EXPECT_EQ(error["code"], kCniErrorInvalidConfig);
  EXPECT_EQ(error["cniVersion"], "1.1.0");
  EXPECT_FALSE(error.contains("details"));
  EXPECT_EQ(json::parse(EncodeError("1.0.0", absl::InternalError("x")))["code"],
            kCniErrorAttachFailed);
}

// What bridge + host-local print in a chain (0.4.0 shape: ips carry "version").
json BridgeResult040() {
  return json::parse(R"({
    "cniVersion": "0.4.0",
    "interfaces": [{"name": "cni0", "mac": "aa:bb:cc:dd:ee:00"},
                   {"name": "veth1", "mac": "aa:bb:cc:dd:ee:01"},
                   {"name": "eth0", "mac": "aa:bb:cc:dd:ee:02", "sandbox": "/var/run/netns/pod"}],
    "ips": [{"version": "4", "address": "10.22.0.5/16", "gateway": "10.22.0.1", "interface": 2}],
    "routes": [{"dst": "0.0.0.0/0"}],
    "dns": {}
  })");
}

PodResult Ours() {
  PodResult ours;
  ours.interface_name = "mesh0";
  ours.mac = "02:00:00:00:00:09";
  ours.sandbox = "/var/run/netns/pod";
  ours.addresses = {"10.99.0.9", "fd99::9"};
  ours.routes = {"10.99.0.0/16", "fd99::/48"};
  ours.mtu = 1420;
  return ours;
}

TEST(ResultTest, AppendsOursToPrevResult) {
  PodResult ours = Ours();
  json result = BuildResult("0.4.0", BridgeResult040(), &ours);
  json expected = BridgeResult040();
  expected["interfaces"].push_back(
      {{"name", "mesh0"}, {"mac", "02:00:00:00:00:09"}, {"sandbox", "/var/run/netns/pod"}});
  expected["ips"].push_back({{"version", "4"}, {"address", "10.99.0.9/32"}, {"interface", 3}});
  expected["ips"].push_back({{"version", "6"}, {"address", "fd99::9/128"}, {"interface", 3}});
  expected["routes"].push_back({{"dst", "10.99.0.0/16"}});
  expected["routes"].push_back({{"dst", "fd99::/48"}, {"gw", "fe80::1"}});
  EXPECT_EQ(result, expected);
}

TEST(ResultTest, ConvertsToTheRequestedShape) {
  json prev = BridgeResult040();
  prev["cniVersion"] = "1.0.0";  // a 1.0.0 result that still carries "version"
  PodResult ours = Ours();
  json result = BuildResult("1.1.0", prev, &ours);
  EXPECT_EQ(result["cniVersion"], "1.1.0");
  for (const json& ip : result["ips"]) EXPECT_FALSE(ip.contains("version")) << ip;
  EXPECT_EQ(result["interfaces"][3]["mtu"], 1420);  // 1.1.0 has the interface's MTU
  EXPECT_EQ(result["dns"], json::object());

  json back = BuildResult("0.4.0", BuildResult("1.0.0", BridgeResult040(), nullptr), nullptr);
  EXPECT_EQ(back, BridgeResult040());
}

TEST(ResultTest, WithoutPrevResultOnlyOurs) {
  PodResult ours = Ours();
  ours.addresses = {"10.99.0.9"};
  ours.routes = {"10.99.0.0/16"};
  EXPECT_EQ(BuildResult("1.0.0", std::nullopt, &ours), json::parse(R"({
    "cniVersion": "1.0.0",
    "interfaces": [{"name": "mesh0", "mac": "02:00:00:00:00:09", "sandbox": "/var/run/netns/pod"}],
    "ips": [{"address": "10.99.0.9/32", "interface": 0}],
    "routes": [{"dst": "10.99.0.0/16"}]
  })"));
  // Not attached and nothing before us: an empty result of the right version.
  EXPECT_EQ(BuildResult("1.0.0", std::nullopt, nullptr), json::parse(R"({"cniVersion": "1.0.0"})"));
}

TEST(InterfaceNameTest, LinuxRules) {
  EXPECT_TRUE(IsValidInterfaceName("mesh0"));
  EXPECT_TRUE(IsValidInterfaceName("abcdefghijklmno"));
  EXPECT_FALSE(IsValidInterfaceName("abcdefghijklmnop"));
  EXPECT_FALSE(IsValidInterfaceName(""));
  EXPECT_FALSE(IsValidInterfaceName(".."));
  EXPECT_FALSE(IsValidInterfaceName("a b"));
  EXPECT_FALSE(IsValidInterfaceName("a:1"));
}

TEST(ProtocolTest, GcCarriesAnEmptyValidList) {
  AttachRequest request;
  request.command = "GC";
  std::string line = EncodeRequest(request);
  ASSERT_EQ(line.rfind("cni ", 0), 0u);
  json object = json::parse(line.substr(4));
  EXPECT_EQ(object["validAttachments"], json::array());
  absl::StatusOr<AttachRequest> decoded = DecodeRequest(line.substr(4));
  ASSERT_TRUE(decoded.ok());
  EXPECT_EQ(*decoded, request);
}

}  // namespace
}  // namespace tunnelmesh::cni
