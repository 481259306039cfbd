// The agent's side of the WireGuard socket (node-agent/uapi): `wg show` reads the device's real
// state; `wg set` (and wg-quick, `wg setconf`) changes a config-file agent's peers through the
// same PeerTable the config file filled. In join mode the coordinator owns the peers, so `set` is
// refused with EPERM and a log line that says so.
#include <errno.h>

#include <memory>
#include <set>

#include "lib/base/log.h"
#include "node-agent/agent/agent.h"

namespace tunnelmesh {
namespace {

// How long the socket's thread waits for the control loop.
constexpr absl::Duration kUapiTimeout = absl::Seconds(5);

}  // namespace

std::string Agent::HandleUapi(uapi::Request request) {
  if (request.kind == uapi::Request::Kind::kGet) {
    std::optional<std::string> reply = loop_.Call<std::string>(
        [this] {
          const uapi::DeviceState state = BuildUapiState();
          return uapi::FormatGetReply(state);
        },
        kUapiTimeout);
    if (!reply) {
      TM_LOG_WARN("WireGuard socket: the control loop did not answer within 5 s");
      return uapi::FormatErrnoReply(EBUSY);
    }
    return *reply;
  }
  // std::function needs a copyable closure; the request holds keys (move-only).
  auto set = std::make_shared<uapi::SetRequest>(std::move(request.set));
  std::optional<int> errno_value = loop_.Call<int>(
      [this, set] {
        const absl::Status applied = ApplyUapiSet(*set);
        return uapi::ErrnoFor(applied);
      },
      kUapiTimeout);
  if (!errno_value) {
    TM_LOG_WARN("WireGuard socket: the control loop did not answer within 5 s");
    return uapi::FormatErrnoReply(EBUSY);
  }
  return uapi::FormatErrnoReply(*errno_value);
}

uapi::DeviceState Agent::BuildUapiState() const {
  uapi::DeviceState state;
  state.private_key = params_.private_key.Clone();
  state.listen_port = socket_ ? socket_->port() : 0;
  for (const auto& [key, info] : peers_->peers()) {
    uapi::PeerState peer;
    peer.public_key = key;
    if (std::optional<SecretKey> psk = device_->PresharedKey(key))
      peer.preshared_key = std::move(*psk);
    if (const noise::Peer* device_peer = device_->FindPeer(key)) {
      const std::optional<TransportEndpoint> endpoint = device_peer->endpoint();
      // A peer reached through the relay has no UDP endpoint to show.
      if (endpoint && endpoint->is_udp()) peer.endpoint = endpoint->udp();
      const noise::PeerStats& stats = device_peer->stats();
      peer.last_handshake_unix_nanos = stats.last_handshake_unix_nanos.load();
      peer.rx_bytes = stats.rx_bytes.load();
      peer.tx_bytes = stats.tx_bytes.load();
      peer.persistent_keepalive =
          static_cast<uint16_t>(device_peer->persistent_keepalive().count());
    }
    peer.allowed_ips = info.allowed;
    state.peers.push_back(std::move(peer));
  }
  return state;
}

absl::Status Agent::ApplyUapiSet(const uapi::SetRequest& set) {
  if (coordinated_) {
    TM_LOG_WARN(
        "WireGuard socket: refused a set (wg set, wg-quick): this agent joined a mesh and the "
        "coordinator owns its peers; `wg show` works, changes go through the coordinator "
        "(MeshPeer, PeerPolicy) or `tunnelmesh-agent leave`");
    return absl::PermissionDeniedError("the coordinator owns the peers");
  }
  auto refuse = [](const std::string& what) {
    TM_LOG_WARN("WireGuard socket: refused a set: {}", what);
    return absl::UnimplementedError(what);
  };
  if (set.private_key && !(*set.private_key == params_.private_key)) {
    return refuse(
        "the private key cannot change while the agent runs: change PrivateKey in the config "
        "file and restart the agent");
  }
  if (set.listen_port && socket_ && *set.listen_port != socket_->port()) {
    return refuse("the listen port cannot change while the agent runs (it listens on " +
                  std::to_string(socket_->port()) +
                  "): change ListenPort in the config file and restart the agent");
  }
  if (set.fwmark && *set.fwmark != 0) {
    return refuse("fwmark is not supported: the agent does not mark its UDP packets");
  }
  std::vector<StaticPeerUpdate> updates;
  std::vector<PublicKey> removals;
  std::set<PublicKey> named;
  for (const uapi::PeerChange& change : set.peers) {
    named.insert(change.public_key);
    if (change.remove) {
      removals.push_back(change.public_key);
      continue;
    }
    if (change.update_only && peers_->Find(change.public_key) == nullptr) continue;
    StaticPeerUpdate update;
    update.public_key = change.public_key;
    if (change.preshared_key) update.preshared_key = change.preshared_key->Clone();
    update.endpoint = change.endpoint;
    if (change.persistent_keepalive) {
      update.persistent_keepalive = std::chrono::seconds(*change.persistent_keepalive);
    }
    update.replace_allowed = change.replace_allowed_ips;
    update.allowed = change.allowed_ips;
    updates.push_back(std::move(update));
  }
  if (set.replace_peers) {
    for (const auto& [key, info] : peers_->peers()) {
      if (named.count(key) == 0) removals.push_back(key);
    }
  }
  if (absl::Status s = peers_->ApplyStatic(updates, removals); !s.ok()) {
    TM_LOG_WARN("WireGuard socket: set failed: {}", std::string(s.message()));
    return s;
  }
  return absl::OkStatus();
}

}  // namespace tunnelmesh
