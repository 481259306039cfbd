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
  // Exactly one of: the mesh's join token, or (in a Kubernetes pod) the ServiceAccount token file,
  // re-read at every registration because the kubelet rotates it.
  std::string token_file;
  std::string kubernetes_token_file;
  std::string mesh;             // empty: the coordinator's only mesh
  std::string kind = "External";  // Node, Pod or External
  std::string ca_file;          // the coordinator's CA certificate (PEM), instead of fetching it
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
