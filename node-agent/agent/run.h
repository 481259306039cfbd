// The two ways tunnelmesh-agent runs, each building an Agent (agent.h): `join` (membership through
// the coordinator) and config mode (a wg-quick config file: a static network map fed once into the
// same peer table). Both run until a signal in `signals` (blocked by the caller) arrives and return
// the process exit code.
#pragma once

#include <signal.h>

#include <string>

#include "node-agent/agent/agent_metrics.h"
#include "node-agent/agent/join_options.h"
#include "node-agent/config/agent_config.h"

namespace tunnelmesh {

// Options already checked by CheckJoinOptions and CheckMetricsFlags.
int RunJoin(const JoinOptions& options, const CheckedJoinOptions& checked,
            const MetricsFlags& metrics, const sigset_t& signals);

struct ConfigRunOptions {
  std::string config_path;  // For messages.
  std::string interface_name;
  std::string state_dir;
  MetricsFlags metrics;
};
int RunConfig(AgentConfig config, const ConfigRunOptions& options, const sigset_t& signals);

}  // namespace tunnelmesh
