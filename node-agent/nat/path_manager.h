// PathManager: how each agent peer is reached (ARCHITECTURE.md, "Data flow" step 4). One
// disco::PathSelector per peer decides between a direct UDP endpoint, the peer's SSH connection and
// the relay; this class feeds it (candidates from the map, sealed ping/pong/call-me-maybe from the
// data socket and from SSH connections, whether the peer offers SSH and is connected,
// call-me-maybe relayed by the coordinator, relay availability, time), sends the pings and pongs it
// asks for, applies the chosen path to the device peer through PathTransport, and collects the
// call-me-maybe requests the agent sends through the coordinator.
//
// Threads: owned by the agent's control thread; not thread-safe, no locks. Disco datagrams reach it
// as copies posted by the data plane's inbound thread (the data thread never runs this code).
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/types/span.h"
#include "lib/base/clock.h"
#include "lib/crypto/keys.h"
#include "lib/disco/message.h"
#include "lib/disco/path_selector.h"
#include "node-agent/nat/path_transport.h"

namespace tunnelmesh {

// Why a discovery datagram was dropped, counted for status and tests.
struct DiscoDrops {
  uint64_t unknown_peer = 0;  // Sender not in the map, or a static peer.
  uint64_t bad_seal = 0;      // Did not open with the sender's key.
};

// What PathManager knows of one peer's path, for `status` and metrics.
struct PathStats {
  disco::Path path;             // As PathOf says (kind kNone for unknown peers).
  std::optional<Duration> rtt;  // The last ping/pong round trip on the direct or SSH path.
  uint64_t changes = 0;         // Paths applied after the first (relay <-> direct, ...).
};

class PathManager {
 public:
  // `transport` must outlive the manager. `tx_ids` is for tests (deterministic transaction ids);
  // null uses the OS CSPRNG.
  PathManager(const SecretKey& private_key, const PublicKey& public_key, PathTransport* transport,
              disco::PathSelector::TxIdGenerator tx_ids = nullptr);

  // A peer reached by discovery was added or changed (new candidates); creates its selector.
  void UpsertPeer(const PublicKey& key, const std::string& name,
                  absl::Span<const Endpoint> candidates, MonoTime now);
  void RemovePeer(const PublicKey& key);
  bool HasPeer(const PublicKey& key) const { return peers_.count(key) != 0; }

  void SetRelayAvailable(bool available);
  bool relay_available() const { return relay_available_; }
  // Whether `key` offers an SSH path (it publishes an SSH key and port, and this agent runs SSH).
  void SetSshOffered(const PublicKey& key, bool offered, MonoTime now);

  // A datagram for which disco::IsDiscoMessage holds, received directly from `from`.
  void OnDiscoDatagram(absl::Span<const uint8_t> datagram, const Endpoint& from, MonoTime now);
  // A discovery datagram that arrived over the SSH connection of `peer` (its login or host key
  // proved who it is; the datagram must be sealed by that same peer), whose TCP remote end is
  // `remote` (what a pong reports as observed).
  void OnSshDiscoDatagram(const PublicKey& peer, const Endpoint& remote,
                          absl::Span<const uint8_t> datagram, MonoTime now);
  // A call-me-maybe from `from` relayed by the coordinator in the network map.
  void OnCallMeMaybe(const PublicKey& from, absl::Span<const Endpoint> endpoints, MonoTime now);
  // Runs the selectors' timers, sends their pings, applies changed paths.
  void Tick(MonoTime now);

  // Peers the selectors asked to send a call-me-maybe to (through the coordinator); clears them.
  std::vector<PublicKey> TakeCallMeMaybe();
  // The current path to `key` (kind kNone for unknown peers).
  disco::Path PathOf(const PublicKey& key) const;
  // The applied path, its RTT when direct, and how often it changed (default for unknown peers).
  PathStats StatsOf(const PublicKey& key) const;
  // The applied path to every peer, by key.
  std::vector<std::pair<PublicKey, disco::PathKind>> Paths() const;
  // Peers reached each way, as applied.
  struct Counts {
    uint32_t direct = 0;
    uint32_t relayed = 0;
    uint32_t ssh = 0;
    friend bool operator==(const Counts&, const Counts&) = default;
  };
  Counts PathCounts() const;
  const DiscoDrops& drops() const { return drops_; }

 private:
  struct PeerPaths {
    std::string name;
    disco::PathSelector selector;
    disco::BoxKey box;
    bool box_ok = false;
    disco::Path applied;
    bool ssh_offered = false;
    bool applied_once = false;
    uint64_t changes = 0;
    explicit PeerPaths(disco::PathSelector::TxIdGenerator tx_ids)
        : selector(tx_ids ? disco::PathSelector(std::move(tx_ids)) : disco::PathSelector()) {}
  };

  void RunActions(const PublicKey& key, PeerPaths& peer);
  void Send(const PeerPaths& peer, const disco::Message& message, const Endpoint& to);
  void SendSsh(const PublicKey& key, const PeerPaths& peer, const disco::Message& message);
  // Opens a sealed datagram from a known peer; null (counted) when it does not open.
  PeerPaths* Open(absl::Span<const uint8_t> datagram, PublicKey* sender, disco::Message* message);
  void ApplyPath(const PublicKey& key, PeerPaths& peer);

  const SecretKey private_key_;
  const PublicKey public_key_;
  PathTransport* const transport_;
  const disco::PathSelector::TxIdGenerator tx_ids_;
  bool relay_available_ = false;
  std::map<PublicKey, std::unique_ptr<PeerPaths>> peers_;
  std::vector<PublicKey> call_me_maybe_;
  DiscoDrops drops_;
};

// "ping", "pong" or "call-me-maybe", for logs.
const char* DiscoMessageName(const disco::Message& message);

}  // namespace tunnelmesh
