#include "node-agent/cni/plugin.h"

#include <algorithm>
#include <utility>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_cat.h"
#include "lib/net/ip.h"
#include "node-agent/cni/attach_protocol.h"
#include "node-agent/cni/pod_network.h"
#include "node-agent/control/control_socket.h"

namespace tunnelmesh::cni {
namespace {

using nlohmann::json;

// The cniVersion of a configuration that did not parse, for the error's own cniVersion.
std::string LooseVersion(std::string_view stdin_text) {
  json config = json::parse(stdin_text, nullptr, /*allow_exceptions=*/false);
  if (config.is_object() && config.contains("cniVersion") && config["cniVersion"].is_string() &&
      IsSupportedVersion(config["cniVersion"].get<std::string>())) {
    return config["cniVersion"].get<std::string>();
  }
  return SupportedVersions().back();
}

class Plugin {
 public:
  Plugin(Environment env, NetworkConfig config, PluginOutput* out)
      : env_(std::move(env)), config_(std::move(config)), out_(out) {}

  absl::Status Run() {
    if (env_.command == "ADD") return Add();
    if (env_.command == "DEL") return Del();
    if (env_.command == "CHECK") return Check();
    if (env_.command == "GC") return Gc();
    return Status();
  }

 private:
  AttachRequest Request(std::string command) const {
    AttachRequest request;
    request.command = std::move(command);
    request.mesh = config_.mesh;
    request.container_id = env_.container_id;
    request.netns = env_.netns;
    // The attachment is the runtime's (container ID, CNI_IFNAME), as in GC's valid-attachments;
    // podInterface is only the name of our interface in the pod.
    request.if_name = env_.if_name;
    request.pod_namespace = env_.pod_namespace;
    request.pod_name = env_.pod_name;
    request.pod_uid = env_.pod_uid;
    return request;
  }

  absl::StatusOr<AttachResponse> AskAgent(const AttachRequest& request) const {
    const std::string& socket = config_.agent_socket;
    absl::StatusOr<std::string> answer = ControlRequest(socket, EncodeRequest(request));
    if (!answer.ok()) {
      return CniError(kCniErrorAgentUnreachable,
                      absl::StrCat("cannot reach the tunnelmesh agent at ", socket,
                                   ": is tunnelmesh-agent running on this node? (if it runs with "
                                   "another --state-dir or --interface, set \"agentSocket\" in the "
                                   "network configuration)"),
                      answer.status().message());
    }
    if (answer->empty()) {
      return CniError(kCniErrorAgentUnreachable,
                      absl::StrCat("the tunnelmesh agent at ", socket,
                                   " closed the connection without answering: see its log"));
    }
    absl::StatusOr<AttachResponse> response = DecodeResponse(*answer);
    if (!response.ok()) {
      return CniError(kCniErrorDecode,
                      absl::StrCat("the tunnelmesh agent at ", socket,
                                   " answered something tunnelmesh-cni cannot read (",
                                   response.status().message(),
                                   "): are the agent and the plugin the same version?"));
    }
    if (response->failed() && response->error.msg == "unknown request") {
      // An agent from before pods were members answers "cni ..." like any request it does not know.
      return CniError(kCniErrorNotAvailable,
                      absl::StrCat("the tunnelmesh agent at ", socket,
                                   " does not attach pods: upgrade tunnelmesh-agent to the version "
                                   "of tunnelmesh-cni"));
    }
    if (response->failed()) {
      return CniError(response->error.code, response->error.msg, response->error.details);
    }
    return response;
  }

  // After the agent attached the pod but the interfaces could not be made: undo both.
  absl::Status Undo(const absl::Status& failure) {
    (void)DeleteHostInterface(HostInterfaceName(env_.container_id));
    if (absl::StatusOr<AttachResponse> detached = AskAgent(Request("DEL")); !detached.ok()) {
      absl::StrAppend(&out_->stderr_text, "tunnelmesh-cni: could not detach the pod again: ",
                      detached.status().message(), "\n");
    }
    return failure;
  }

  absl::Status Add() {
    absl::StatusOr<AttachResponse> response = AskAgent(Request("ADD"));
    if (!response.ok()) return response.status();
    if (!response->attached) {
      absl::StrAppend(&out_->stderr_text, "tunnelmesh-cni: pod ", env_.pod_namespace, "/",
                      env_.pod_name, " not attached to the mesh: ",
                      response->reason.empty() ? "the agent gave no reason" : response->reason,
                      "\n");
      out_->stdout_text = BuildResult(config_.cni_version, config_.prev_result, nullptr).dump();
      return absl::OkStatus();
    }
    PodNetworkSpec spec;
    spec.netns = env_.netns;
    spec.host_interface = HostInterfaceName(env_.container_id);
    spec.pod_interface = config_.pod_interface;
    spec.mtu = response->mtu;
    for (const std::string& text : response->addresses) {
      absl::StatusOr<IpAddress> address = IpAddress::Parse(text);
      if (!address.ok()) {
        return Undo(CniError(kCniErrorDecode,
                             absl::StrCat("the agent answered a bad address \"", text, "\"")));
      }
      spec.addresses.push_back(*address);
    }
    for (const std::string& text : response->routes) {
      absl::StatusOr<Prefix> route = Prefix::Parse(text);
      if (!route.ok()) {
        return Undo(CniError(kCniErrorDecode,
                             absl::StrCat("the agent answered a bad route \"", text, "\"")));
      }
      spec.routes.push_back(*route);
    }
    if (spec.addresses.empty()) {
      return Undo(CniError(kCniErrorOutOfAddresses,
                           "the agent attached the pod without giving it an address"));
    }
    if (absl::Status forwarding = CheckForwarding(spec.addresses); !forwarding.ok()) {
      return Undo(CniError(kCniErrorAttachFailed, forwarding.message()));
    }
    absl::StatusOr<std::string> mac = CreatePodNetwork(spec);
    if (!mac.ok()) {
      return Undo(CniError(kCniErrorAttachFailed, absl::StrCat("making the pod's mesh interface: ",
                                                               mac.status().message())));
    }
    PodResult ours;
    ours.interface_name = spec.pod_interface;
    ours.mac = *mac;
    ours.sandbox = env_.netns;
    ours.addresses = response->addresses;
    ours.routes = response->routes;
    ours.mtu = response->mtu;
    out_->stdout_text = BuildResult(config_.cni_version, config_.prev_result, &ours).dump();
    return absl::OkStatus();
  }

  absl::Status Del() {
    if (absl::Status s = DeleteHostInterface(HostInterfaceName(env_.container_id)); !s.ok()) {
      return CniError(kCniErrorIo, s.message());
    }
    absl::StatusOr<AttachResponse> response = AskAgent(Request("DEL"));
    if (!response.ok() && CniErrorCode(response.status()) == kCniErrorAgentUnreachable) {
      // DEL must succeed when there is nothing left to do here; the agent collects the attachment
      // later (its garbage collection finds the host end gone).
      absl::StrAppend(&out_->stderr_text, "tunnelmesh-cni: removed the pod's interfaces, but ",
                      response.status().message(), " (", CniErrorDetails(response.status()),
                      "); the agent forgets the attachment when it next runs\n");
      return absl::OkStatus();
    }
    return response.status();
  }

  absl::Status Check() {
    absl::StatusOr<AttachResponse> response = AskAgent(Request("CHECK"));
    if (!response.ok()) return response.status();
    PodNetworkSpec spec;
    spec.netns = env_.netns;
    spec.host_interface = HostInterfaceName(env_.container_id);
    spec.pod_interface = config_.pod_interface;
    if (!response->attached) {
      absl::StatusOr<std::vector<std::string>> hosts = ListHostInterfaces();
      if (!hosts.ok()) return CniError(kCniErrorIo, hosts.status().message());
      if (std::find(hosts->begin(), hosts->end(), spec.host_interface) != hosts->end()) {
        return CniError(kCniErrorAttachFailed,
                        absl::StrCat("the agent does not know this pod's attachment, but its "
                                     "interface ",
                                     spec.host_interface, " exists: delete and recreate the pod"));
      }
      return absl::OkStatus();
    }
    for (const std::string& text : response->addresses) {
      absl::StatusOr<IpAddress> address = IpAddress::Parse(text);
      if (!address.ok()) {
        return CniError(kCniErrorDecode,
                        absl::StrCat("the agent answered a bad address \"", text, "\""));
      }
      spec.addresses.push_back(*address);
    }
    if (absl::Status s = CheckPodNetwork(spec); !s.ok()) {
      return CniError(kCniErrorAttachFailed,
                      absl::StrCat("the pod's mesh interface: ", s.message()));
    }
    return absl::OkStatus();
  }

  absl::Status Gc() {
    // Host ends of containers the runtime no longer knows: their pods are gone.
    absl::flat_hash_set<std::string> valid;
    for (const Attachment& a : config_.valid_attachments) {
      valid.insert(HostInterfaceName(a.container_id));
    }
    absl::StatusOr<std::vector<std::string>> hosts = ListHostInterfaces();
    if (!hosts.ok()) return CniError(kCniErrorIo, hosts.status().message());
    for (const std::string& name : *hosts) {
      if (valid.contains(name)) continue;
      if (absl::Status s = DeleteHostInterface(name); !s.ok()) {
        return CniError(kCniErrorIo, s.message());
      }
    }
    AttachRequest request;
    request.command = "GC";
    request.mesh = config_.mesh;
    request.valid_attachments = config_.valid_attachments;
    return AskAgent(request).status();
  }

  absl::Status Status() {
    absl::StatusOr<AttachResponse> response = AskAgent(Request("STATUS"));
    if (response.ok()) return absl::OkStatus();
    const absl::Status& failure = response.status();
    std::string details = CniErrorDetails(failure);
    return CniError(kCniErrorNotAvailable, failure.message(), details);
  }

  const Environment env_;
  const NetworkConfig config_;
  PluginOutput* const out_;
};

}  // namespace

PluginOutput RunPlugin(const Getenv& getenv, std::string_view stdin_text) {
  PluginOutput out;
  auto fail = [&](std::string_view version, const absl::Status& status) {
    out.stdout_text = EncodeError(version, status);
    out.exit_code = 1;
    return out;
  };
  absl::StatusOr<Environment> env = ParseEnvironment(getenv);
  if (!env.ok()) return fail(LooseVersion(stdin_text), env.status());
  if (env->command == "VERSION") {
    // Any configuration, even none: VERSION is how a runtime finds out what to send.
    absl::StatusOr<NetworkConfig> config = ParseNetworkConfig(stdin_text, "VERSION");
    out.stdout_text = EncodeVersionResult(config.ok() ? config->cni_version : "");
    return out;
  }
  absl::StatusOr<NetworkConfig> config = ParseNetworkConfig(stdin_text, env->command);
  if (!config.ok()) return fail(LooseVersion(stdin_text), config.status());
  const std::string version = config->cni_version;
  Plugin plugin(*std::move(env), *std::move(config), &out);
  if (absl::Status status = plugin.Run(); !status.ok()) return fail(version, status);
  return out;
}

}  // namespace tunnelmesh::cni
