// PeerTable: the agent's view of the network map and what it makes of it. It turns the map the
// coordinator sends (a full map, then deltas, as coord::MapUpdate) or the static map of a wg-quick
// config file into WireGuard device peers (noise::Device::AddPeer/RemovePeer), keeps the per-peer
// facts the rest of the agent needs (name, DNS name, mesh IPs, allowed prefixes, candidate
// endpoints, static or not), publishes the immutable route snapshot the data threads read, and
// gives the link the routes that lie outside the mesh's address ranges (the mesh's own addresses
// are covered by the interface's connected routes).
//
// Threads: owned by the agent's control thread (node-agent/agent/control_loop.h); no method is
// thread-safe and none takes a lock of its own. The data threads see only what it publishes: the
// route snapshot (shared_ptr<const RouteTable>, swapped atomically by the publisher) and the device
// peers (whose own locks the device documents).
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/types/span.h"
#include "lib/base/clock.h"
#include "lib/crypto/keys.h"
#include "lib/net/ip.h"
#include "lib/noise/device.h"
#include "lib/routing/allowed_ips.h"
#include "proto/coordinator.pb.h"

namespace tunnelmesh {

namespace coord = ::tunnelmesh::coordinator::v1;

// The data plane's routing snapshot: which device peer owns which allowed prefixes. (The same type
// as node-agent/dataplane/dataplane.h's RouteTable.)
using RouteTable = AllowedIps<noise::Peer*>;

// The link's routes outside the mesh (LinkConfigurator::ReplaceRoutes in the agent; a fake in
// tests).
class RouteInstaller {
 public:
  virtual ~RouteInstaller() = default;
  [[nodiscard]] virtual absl::Status ReplaceRoutes(absl::Span<const Prefix> prefixes) = 0;
};

struct PeerInfo {
  std::string name;
  std::string dns_name;
  std::vector<std::string> aliases;  // More DNS labels of the peer.
  std::vector<std::string> mesh_ips;
  std::vector<Prefix> allowed;
  std::vector<Endpoint> candidates;
  // The peer's SSH server (docs/protocol.md, "SSH path"): its Ed25519 key and TCP port; a zero key
  // or port 0 when it runs none.
  PublicKey ssh_key;
  uint16_t ssh_port = 0;
  uint32_t device_id = 0;
  // A plain WireGuard peer (a config file's peer, or a static member of the map): fixed endpoint,
  // roaming, no discovery.
  bool is_static = false;
};

// A peer of a wg-quick config file.
struct StaticPeerConfig {
  PublicKey public_key;
  SecretKey preshared_key;  // Zero for none.
  std::optional<Endpoint> endpoint;
  std::chrono::seconds persistent_keepalive{0};
  std::vector<Prefix> allowed;
};

// A change to a config file's peer made at run time (`wg set`, node-agent/uapi): what is given
// replaces what the peer had; a peer not in the table is added.
struct StaticPeerUpdate {
  PublicKey public_key;
  std::optional<SecretKey> preshared_key;  // All zero: none.
  std::optional<Endpoint> endpoint;
  std::optional<std::chrono::seconds> persistent_keepalive;
  bool replace_allowed = false;  // Drop the old allowed prefixes before adding `allowed`.
  std::vector<Prefix> allowed;
};

// A pod the map lists (kind Pod, with host_public_key): a member reached through its host's
// tunnel, whose addresses are in the host's allowed IPs. It is no WireGuard peer: only its names
// and addresses matter here (mesh DNS, `status`, `explain`).
struct PodPeerInfo {
  std::string name;
  std::string dns_name;
  std::vector<std::string> aliases;
  std::vector<std::string> mesh_ips;
  PublicKey host;
};

// What an Apply changed, for the path manager (pod peers are not in it).
struct PeerChanges {
  // Peers added or updated (their candidates may have changed), in map order.
  std::vector<PublicKey> upserted;
  // Peers gone from the map, and peers whose device peer was re-created (static <-> agent).
  std::vector<PublicKey> removed;
};

class PeerTable {
 public:
  using RoutePublisher = std::function<void(std::shared_ptr<const RouteTable>)>;

  // `device`, `link` and `clock` must outlive the table. `self` is this member's key (ignored when
  // the map lists it). `publish` hands each new route snapshot to the data plane.
  PeerTable(noise::Device* device, const PublicKey& self, RouteInstaller* link,
            RoutePublisher publish, const Clock* clock);

  // The mesh's address ranges: allowed prefixes inside them need no route of their own.
  void SetMeshCidrs(std::vector<Prefix> cidrs) { mesh_cidrs_ = std::move(cidrs); }
  // The mesh-wide preshared key and, during a rollover, a second key also accepted in handshake
  // responses (each: empty or not 32 bytes means none). Applies to the agent peers already in the
  // device too (their established sessions run on until the next handshake, which uses the new
  // keys) and to peers added from now on; static peers never use the mesh's keys.
  void SetPresharedKeys(const std::string& primary, const std::string& secondary);

  // Applies a full map (every peer not listed leaves) or a delta, then publishes routes. A peer
  // whose kind changed (static <-> agent) gets a new device peer. Pods (a host_public_key) are
  // kept apart (pod_peers()) and never become device peers. Entries with a zero or own key
  // are ignored; allowed prefixes and endpoints that do not parse are skipped and counted.
  PeerChanges Apply(const coord::MapUpdate& update);

  // Adds a config file's peer (no publish: call Publish after the last one).
  [[nodiscard]] absl::Status AddStatic(const StaticPeerConfig& config);

  // Config mode at run time: adds or changes `updates` (in order), then removes `removals`, then
  // publishes. A prefix that another peer holds moves to the peer that now lists it, as in
  // WireGuard. Errors: kInvalidArgument for our own key or an agent peer (the coordinator owns
  // those), or the link's error from Publish (the table has changed by then).
  [[nodiscard]] absl::Status ApplyStatic(const std::vector<StaticPeerUpdate>& updates,
                                         const std::vector<PublicKey>& removals);

  // Builds and publishes the route snapshot and replaces the link's outside-mesh routes; the error
  // is the link's.
  [[nodiscard]] absl::Status Publish();

  // The exit peer this member sends its internet traffic through (docs/remote-access.md), or none.
  // In the route snapshot it also owns 0.0.0.0/0 and ::/0 (mesh prefixes still route to their own
  // peers by longest prefix), so packets to the internet go to it and packets from the internet
  // pass its inner-source check. These routes never go to the link (the exit's kernel routing is
  // node-agent/exit/exit_kernel.h). Publishes when it changed; false when the key is no peer.
  bool SetExitPeer(std::optional<PublicKey> key);
  const std::optional<PublicKey>& exit_peer() const { return exit_peer_; }

  const PeerInfo* Find(const PublicKey& key) const;
  const std::map<PublicKey, PeerInfo>& peers() const { return peers_; }
  // The pods in the map, by their identifier (Peer.public_key).
  const std::map<PublicKey, PodPeerInfo>& pod_peers() const { return pod_peers_; }
  // The snapshot last published (empty before the first Publish).
  std::shared_ptr<const RouteTable> routes() const { return routes_; }
  // Map entries skipped for a bad key, prefix or endpoint.
  uint64_t skipped_entries() const { return skipped_; }

 private:
  // Returns true when the peer was added or updated.
  bool Upsert(const coord::Peer& peer, PeerChanges* changes);
  void Forget(const PublicKey& key);

  noise::Device* const device_;
  const PublicKey self_;
  RouteInstaller* const link_;
  const RoutePublisher publish_;
  const Clock* const clock_;
  std::vector<Prefix> mesh_cidrs_;
  // The mesh's keys for agent peers (absent: none, i.e. all zero as WireGuard defines it).
  noise::PresharedKeys MeshKeys() const;
  std::optional<SecretKey> preshared_key_;
  std::optional<SecretKey> accepted_preshared_key_;
  std::map<PublicKey, PeerInfo> peers_;
  std::map<PublicKey, PodPeerInfo> pod_peers_;
  std::shared_ptr<const RouteTable> routes_ = std::make_shared<RouteTable>();
  std::optional<PublicKey> exit_peer_;
  uint64_t skipped_ = 0;
};

// A public key from its 32 raw bytes as the coordinator API carries it (zero when not 32 bytes).
PublicKey PublicKeyFromBytes(const std::string& bytes);
std::string PublicKeyBytes(const PublicKey& key);

}  // namespace tunnelmesh
