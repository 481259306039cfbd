#include "node-agent/peer/peer_table.h"

#include <algorithm>
#include <cstring>
#include <set>

#include "lib/base/log.h"

namespace tunnelmesh {

PublicKey PublicKeyFromBytes(const std::string& bytes) {
  PublicKey key;
  if (bytes.size() == kKeySize) std::memcpy(key.bytes.data(), bytes.data(), kKeySize);
  return key;
}

std::string PublicKeyBytes(const PublicKey& key) {
  return std::string(reinterpret_cast<const char*>(key.bytes.data()), kKeySize);
}

PeerTable::PeerTable(noise::Device* device, const PublicKey& self, RouteInstaller* link,
                     RoutePublisher publish, const Clock* clock)
    : device_(device), self_(self), link_(link), publish_(std::move(publish)), clock_(clock) {}

namespace {

std::optional<SecretKey> KeyFromBytes(const std::string& bytes) {
  if (bytes.size() != kKeySize) return std::nullopt;
  return SecretKey(reinterpret_cast<const uint8_t*>(bytes.data()));
}

bool SameKey(const std::optional<SecretKey>& a, const std::optional<SecretKey>& b) {
  return a.has_value() == b.has_value() && (!a || *a == *b);
}

}  // namespace

noise::PresharedKeys PeerTable::MeshKeys() const {
  noise::PresharedKeys keys;
  if (preshared_key_) keys.primary = preshared_key_->Clone();
  if (accepted_preshared_key_) keys.secondary = accepted_preshared_key_->Clone();
  return keys;
}

void PeerTable::SetPresharedKeys(const std::string& primary, const std::string& secondary) {
  std::optional<SecretKey> next = KeyFromBytes(primary);
  std::optional<SecretKey> next_accepted = KeyFromBytes(secondary);
  if (SameKey(next, preshared_key_) && SameKey(next_accepted, accepted_preshared_key_)) return;
  preshared_key_ = std::move(next);
  accepted_preshared_key_ = std::move(next_accepted);
  size_t changed = 0;
  for (const auto& [key, info] : peers_) {
    if (info.is_static) continue;
    changed += device_->SetPresharedKeys(key, MeshKeys()) ? 1 : 0;
  }
  // Never the keys themselves: only that they changed.
  TM_LOG_INFO("mesh preshared keys changed ({}): applied to {} peers",
              accepted_preshared_key_ ? "rollover: a second key is accepted" : "one key", changed);
}

const PeerInfo* PeerTable::Find(const PublicKey& key) const {
  auto it = peers_.find(key);
  return it == peers_.end() ? nullptr : &it->second;
}

bool PeerTable::Upsert(const coord::Peer& peer, PeerChanges* changes) {
  const PublicKey key = PublicKeyFromBytes(peer.public_key());
  if (key.IsZero()) {
    ++skipped_;
    return false;
  }
  if (key == self_) return false;
  if (!peer.host_public_key().empty()) {
    // A pod: its host's tunnel carries it. Were it a device peer, it would take its addresses
    // from the host's allowed IPs.
    PodPeerInfo pod;
    pod.name = peer.name();
    pod.dns_name = peer.dns_name();
    pod.aliases.assign(peer.aliases().begin(), peer.aliases().end());
    pod.mesh_ips.assign(peer.mesh_ips().begin(), peer.mesh_ips().end());
    pod.host = PublicKeyFromBytes(peer.host_public_key());
    // A device peer of the same key (listed before as a member with a tunnel of its own) is
    // removed by Apply, after the routes.
    pod_peers_[key] = std::move(pod);
    return false;
  }
  pod_peers_.erase(key);
  PeerInfo info;
  info.name = peer.name();
  info.dns_name = peer.dns_name();
  info.aliases.assign(peer.aliases().begin(), peer.aliases().end());
  info.mesh_ips.assign(peer.mesh_ips().begin(), peer.mesh_ips().end());
  for (const std::string& p : peer.allowed_ips()) {
    absl::StatusOr<Prefix> prefix = Prefix::Parse(p);
    if (prefix.ok()) {
      info.allowed.push_back(*prefix);
    } else {
      ++skipped_;
      TM_LOG_DEBUG("peer {}: allowed IP \"{}\" skipped: {}", info.name, p,
                   std::string(prefix.status().message()));
    }
  }
  for (const std::string& e : peer.endpoints()) {
    absl::StatusOr<Endpoint> endpoint = Endpoint::Parse(e);
    if (endpoint.ok()) {
      info.candidates.push_back(*endpoint);
    } else {
      ++skipped_;
    }
  }
  info.is_static = peer.static_peer();
  if (peer.ssh_public_key().size() == kKeySize && peer.ssh_port() > 0 && peer.ssh_port() < 65536) {
    std::memcpy(info.ssh_key.bytes.data(), peer.ssh_public_key().data(), kKeySize);
    info.ssh_port = static_cast<uint16_t>(peer.ssh_port());
  }

  auto old = peers_.find(key);
  noise::Peer* existing = device_->FindPeer(key);
  if (existing != nullptr && old != peers_.end() && old->second.is_static != info.is_static) {
    // A static member got an agent (or lost it): its preshared key and path handling change, so
    // the device peer starts over.
    Forget(key);
    device_->RemovePeer(key, clock_->Now());
    changes->removed.push_back(key);
    existing = nullptr;
    old = peers_.end();
  }
  std::optional<Endpoint> first;
  if (!info.candidates.empty()) first = info.candidates.front();
  if (existing == nullptr) {
    // Static peers are plain WireGuard members: they never know the mesh's keys.
    noise::PresharedKeys psks = info.is_static ? noise::PresharedKeys{} : MeshKeys();
    // For an agent peer the path manager, not the source of the latest packet, decides where the
    // peer is reached; a static peer roams like any WireGuard peer.
    absl::StatusOr<noise::Peer*> added =
        device_->AddPeer({key, std::move(psks.primary), first, std::chrono::seconds(0),
                          /*roaming=*/info.is_static, std::move(psks.secondary)});
    if (!added.ok()) {
      TM_LOG_WARN("peer {}: {}", info.name, std::string(added.status().message()));
      return false;
    }
    info.device_id = (*added)->id();
    if (info.is_static) {
      TM_LOG_INFO("static peer {} ({}) joined the map at {}", info.name, key.Short(),
                  first ? first->ToString() : std::string("no endpoint"));
    } else {
      TM_LOG_INFO("peer {} ({}) joined the map", info.name, key.Short());
    }
  } else {
    info.device_id = existing->id();
  }
  peers_[key] = std::move(info);
  changes->upserted.push_back(key);
  return true;
}

void PeerTable::Forget(const PublicKey& key) {
  auto it = peers_.find(key);
  if (it == peers_.end()) return;
  TM_LOG_INFO("peer {} left the map", it->second.name);
  peers_.erase(it);
}

PeerChanges PeerTable::Apply(const coord::MapUpdate& update) {
  PeerChanges changes;
  std::vector<PublicKey> gone;
  if (update.full()) {
    std::set<PublicKey> listed;
    for (const coord::Peer& p : update.upsert_peers()) {
      listed.insert(PublicKeyFromBytes(p.public_key()));
    }
    for (const auto& [key, info] : peers_) {
      if (!listed.count(key)) gone.push_back(key);
    }
    std::erase_if(pod_peers_, [&](const auto& entry) { return listed.count(entry.first) == 0; });
  }
  for (const std::string& k : update.removed_peers()) gone.push_back(PublicKeyFromBytes(k));
  for (const coord::Peer& p : update.upsert_peers()) {
    // A pod now: any device peer of its key goes.
    if (!p.host_public_key().empty()) gone.push_back(PublicKeyFromBytes(p.public_key()));
  }
  for (const coord::Peer& p : update.upsert_peers()) Upsert(p, &changes);
  for (const std::string& k : update.removed_peers()) pod_peers_.erase(PublicKeyFromBytes(k));
  std::vector<PublicKey> removed_from_device;
  for (const PublicKey& key : gone) {
    if (peers_.count(key) == 0) continue;
    if (exit_peer_ == key) exit_peer_.reset();
    Forget(key);
    removed_from_device.push_back(key);
    changes.removed.push_back(key);
  }
  // Routes first, so no data thread looks a removed peer up again, then the device forgets it.
  if (absl::Status s = Publish(); !s.ok()) {
    TM_LOG_WARN("updating routes: {}", std::string(s.message()));
  }
  for (const PublicKey& key : removed_from_device) device_->RemovePeer(key, clock_->Now());
  return changes;
}

absl::Status PeerTable::AddStatic(const StaticPeerConfig& config) {
  if (config.public_key == self_) {
    return absl::InvalidArgumentError("a [Peer] has this interface's own public key");
  }
  SecretKey psk = config.preshared_key.Clone();
  absl::StatusOr<noise::Peer*> added = device_->AddPeer(
      {config.public_key, std::move(psk), config.endpoint, config.persistent_keepalive});
  if (!added.ok()) return added.status();
  PeerInfo info;
  info.allowed = config.allowed;
  if (config.endpoint) info.candidates.push_back(*config.endpoint);
  info.device_id = (*added)->id();
  info.is_static = true;
  peers_[config.public_key] = std::move(info);
  return absl::OkStatus();
}

absl::Status PeerTable::ApplyStatic(const std::vector<StaticPeerUpdate>& updates,
                                    const std::vector<PublicKey>& removals) {
  // Checked first, so that a refused request changes nothing.
  auto owned_by_map = [this](const PublicKey& key) {
    auto it = peers_.find(key);
    return it != peers_.end() && !it->second.is_static;
  };
  for (const StaticPeerUpdate& update : updates) {
    if (update.public_key == self_) {
      return absl::InvalidArgumentError("a peer has this interface's own key");
    }
    if (owned_by_map(update.public_key)) {
      return absl::InvalidArgumentError("peer " + update.public_key.Short() +
                                        " belongs to the coordinator's map");
    }
  }
  for (const PublicKey& key : removals) {
    if (owned_by_map(key)) {
      return absl::InvalidArgumentError("peer " + key.Short() +
                                        " belongs to the coordinator's map");
    }
  }
  for (const StaticPeerUpdate& update : updates) {
    const PublicKey& key = update.public_key;
    auto it = peers_.find(key);
    if (it == peers_.end()) {
      StaticPeerConfig config;
      config.public_key = key;
      if (update.preshared_key) config.preshared_key = update.preshared_key->Clone();
      config.endpoint = update.endpoint;
      if (update.persistent_keepalive) config.persistent_keepalive = *update.persistent_keepalive;
      if (absl::Status s = AddStatic(config); !s.ok()) return s;
      it = peers_.find(key);
      TM_LOG_INFO("peer {} added at run time (WireGuard socket)", key.Short());
    } else {
      if (update.preshared_key) {
        noise::PresharedKeys keys;
        keys.primary = update.preshared_key->Clone();
        (void)device_->SetPresharedKeys(key, std::move(keys));
      }
      if (update.endpoint) {
        if (noise::Peer* peer = device_->FindPeer(key)) peer->set_endpoint(*update.endpoint);
        it->second.candidates = {*update.endpoint};
      }
      if (update.persistent_keepalive) {
        (void)device_->SetPersistentKeepalive(key, *update.persistent_keepalive);
      }
    }
    if (update.replace_allowed) it->second.allowed.clear();
    for (const Prefix& prefix : update.allowed) {
      for (auto& [other_key, other] : peers_) {
        if (other_key == key) continue;
        std::erase(other.allowed, prefix);
      }
      std::vector<Prefix>& allowed = it->second.allowed;
      if (std::find(allowed.begin(), allowed.end(), prefix) == allowed.end()) {
        allowed.push_back(prefix);
      }
    }
  }
  std::vector<PublicKey> removed;
  for (const PublicKey& key : removals) {
    auto it = peers_.find(key);
    if (it == peers_.end()) continue;
    peers_.erase(it);
    removed.push_back(key);
    TM_LOG_INFO("peer {} removed at run time (WireGuard socket)", key.Short());
  }
  // Routes first, so no data thread looks a removed peer up again, then the device forgets it.
  absl::Status published = Publish();
  for (const PublicKey& key : removed) device_->RemovePeer(key, clock_->Now());
  return published;
}

bool PeerTable::SetExitPeer(std::optional<PublicKey> key) {
  if (key.has_value() && peers_.count(*key) == 0) return false;
  if (key == exit_peer_) return true;
  exit_peer_ = key;
  if (absl::Status s = Publish(); !s.ok()) {
    TM_LOG_WARN("updating routes: {}", std::string(s.message()));
  }
  return true;
}

absl::Status PeerTable::Publish() {
  auto routes = std::make_shared<RouteTable>();
  std::vector<Prefix> outside_mesh;
  for (const auto& [key, info] : peers_) {
    noise::Peer* peer = device_->FindPeer(key);
    if (peer == nullptr) continue;
    for (const Prefix& prefix : info.allowed) {
      routes->Insert(prefix, peer);
      bool inside = false;
      for (const Prefix& cidr : mesh_cidrs_) {
        inside = inside || (cidr.Contains(prefix.address()) && prefix.length() >= cidr.length());
      }
      if (!inside) outside_mesh.push_back(prefix);
    }
  }
  if (exit_peer_.has_value()) {
    if (noise::Peer* exit = device_->FindPeer(*exit_peer_); exit != nullptr) {
      for (const char* all : {"0.0.0.0/0", "::/0"}) routes->Insert(*Prefix::Parse(all), exit);
    }
  }
  routes_ = routes;
  if (publish_) publish_(routes);
  return link_ == nullptr ? absl::OkStatus() : link_->ReplaceRoutes(outside_mesh);
}

}  // namespace tunnelmesh
