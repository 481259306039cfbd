// tunnelmesh-cni's commands (CNI spec 1.1, "Execution protocol"): ADD asks the node's agent to
// attach the pod and, when it does, makes the pod's mesh interfaces (pod_network.h); DEL removes
// them and tells the agent; CHECK compares both; GC and STATUS are forwarded to the agent; VERSION
// answers locally. The agent is reached over its control socket (attach_protocol.h).
#pragma once

#include <string>
#include <string_view>

#include "node-agent/cni/plugin_config.h"

namespace tunnelmesh::cni {

struct PluginOutput {
  std::string stdout_text;  // the result, or the CNI error
  std::string stderr_text;  // notes for whoever reads the runtime's log
  int exit_code = 0;        // 0, or 1 with a CNI error on stdout
};

// Runs one command with the environment from `getenv` and the configuration `stdin_text`.
// Single-threaded callers only (it enters the pod's network namespace).
PluginOutput RunPlugin(const Getenv& getenv, std::string_view stdin_text);

}  // namespace tunnelmesh::cni
