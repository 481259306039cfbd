// `tunnelmesh-agent join`: membership through the coordinator. Loads or creates the node key in
// the state directory, verifies the coordinator's CA, registers with the join token, configures the
// TUN interface from the answer, follows the network map (full, then deltas) into the WireGuard
// device and its routes, learns the reflexive endpoint by STUN on the data socket, reports endpoint
// candidates, and reconnects with jittered backoff starting near 100 ms. The data plane never waits
// for the coordinator: established sessions keep working while it is away.
#pragma once

#include <signal.h>

#include <map>
#include <string>

namespace tunnelmesh {

struct JoinOptions {
  std::string coordinator;  // host[:port]
  std::string token_file;
  std::string name;
  std::map<std::string, std::string> labels;
  std::string state_dir;
  std::string interface_name = "tm0";
  std::string ca_hash;
  uint16_t listen_port = 51820;
};

// Runs until one of `signals` arrives (or the agent is told to leave); returns the exit code.
int RunJoin(const JoinOptions& options, const sigset_t& signals);

}  // namespace tunnelmesh
