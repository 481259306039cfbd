// ExitController: the agent's exit-peer role, both ways (docs/remote-access.md).
// - As a client: the coordinator's ExitConfig.use_public_keys go to an ExitSelector; the exit it
//   picks owns 0.0.0.0/0 and ::/0 in the peer table's route snapshot (PeerTable::SetExitPeer), and
//   the kernel routes everything but the agent's own traffic into the interface
//   (ExitClientKernel). With no healthy exit, fail-closed (default) keeps the kernel rules, so
//   internet traffic reaches the data plane and is dropped there as `no_route`; --exit-fail-open
//   lifts the rules until an exit is healthy again.
// - As an exit: ExitConfig.client_prefixes go to an ExitForwarder (forwarding and masquerade).
// - Config mode (wg-quick's `AllowedIPs = 0.0.0.0/0`): the peer that lists the default route
//   already owns it; the kernel side is the same, always on (SetStaticFullTunnel).
// Everything is removed by Stop, and what a crashed run left is removed by Start.
//
// Threads: owned by the agent's control thread; not thread-safe. The kernel commands run there.
#pragma once

#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "lib/crypto/keys.h"
#include "lib/net/ip.h"
#include "nlohmann/json.hpp"
#include "node-agent/exit/exit_kernel.h"
#include "node-agent/exit/exit_selector.h"
#include "node-agent/peer/peer_table.h"

namespace tunnelmesh {

struct ExitOptions {
  // --exit-allow-lan: directly connected prefixes stay out of the tunnel (DNS to them does not).
  bool allow_lan = false;
  // --exit-fail-open: with no healthy exit, internet traffic goes out directly instead of being
  // dropped.
  bool fail_open = false;
  // --exit-dns: every DNS query of the host goes to this resolver, through the tunnel.
  std::optional<IpAddress> dns;
  // --exit-peer was given: fail closed even when the coordinator lists no usable exit (all
  // refused), rather than sending internet traffic out directly.
  bool requested = false;
};

class ExitController {
 public:
  // Counters and path of a candidate, sampled every second (the agent reads noise::PeerStats).
  using Sampler = std::function<ExitSample(const PublicKey&)>;
  // Addresses of this host's directly connected networks (--exit-allow-lan).
  using LanLister = std::function<std::vector<Prefix>()>;

  // `peers` must outlive the controller. `state_dir` holds a scratch file for the commands.
  ExitController(std::string interface_name, ExitOptions options,
                 std::unique_ptr<CommandRunner> runner, const std::string& state_dir,
                 PeerTable* peers, Sampler sampler, LanLister lan);

  // Removes rules, routes and tables a crashed run of this interface left.
  [[nodiscard]] absl::Status Start();
  // The mesh's ranges (never redirected, never masqueraded) and whether the interface has an IPv6
  // address (else IPv6 is unreachable while the tunnel carries everything).
  void SetMesh(std::vector<Prefix> mesh_cidrs, bool ipv6);
  // The coordinator, relay and STUN addresses: always reached outside the tunnel.
  void SetServiceAddresses(std::vector<IpAddress> addresses, absl::Time now);
  // A MapUpdate's ExitConfig.
  void ApplyConfig(const coordinator::v1::ExitConfig& config, absl::Time now);
  void SetPresence(const PublicKey& key, bool online, absl::Time now);
  // After the peer table changed: candidates join or leave the map, endpoints to keep out.
  void OnPeersChanged(absl::Time now);
  // Every second: samples the candidates and re-decides.
  void Tick(absl::Time now);
  // Config mode: a static peer owns the default route; the kernel sends everything to it.
  void SetStaticFullTunnel(bool on, absl::Time now);
  // Called when traffic moves to exit `key`, and every second while packets to it go unanswered
  // (ExitSelector::NeedsHandshake): the agent starts a fresh handshake (WireGuard sends at most one
  // per REKEY_TIMEOUT), since a restarted exit has forgotten the session this member may still
  // hold; its packets would be dropped until WireGuard's own timers renew it, some 15 s later.
  void SetHandshakeHook(std::function<void(const PublicKey&)> hook) {
    on_switch_ = std::move(hook);
  }
  // Takes every kernel change back.
  void Stop();

  uint32_t fwmark() const { return client_.ids().fwmark; }
  // For `status --json` under "exit".
  nlohmann::json Status(absl::Time now) const;

 private:
  void Reconcile(absl::Time now);
  std::string NameOf(const PublicKey& key) const;
  void LogFailure(const std::string& what, const absl::Status& status);

  const std::string interface_name_;
  const ExitOptions options_;
  std::unique_ptr<CommandRunner> runner_;
  PeerTable* const peers_;
  const Sampler sampler_;
  const LanLister lan_;
  std::function<void(const PublicKey&)> on_switch_;
  ExitClientKernel client_;
  ExitForwarder forwarder_;
  ExitSelector selector_;
  std::vector<Prefix> mesh_cidrs_;
  bool ipv6_ = false;
  std::vector<IpAddress> services_;
  std::map<PublicKey, bool> presence_;  // The coordinator's word on every peer, for new candidates.
  std::vector<Prefix> client_prefixes_;
  std::vector<std::pair<std::string, std::string>> refused_;
  bool static_full_tunnel_ = false;
  bool stopped_ = false;
  std::string last_error_;
};

}  // namespace tunnelmesh
