#include "operator/coordinator/coordinator.h"

#include <sodium.h>

#include <set>

#include "lib/base/log.h"
#include "lib/crypto/aead.h"
#include "lib/crypto/blake2s.h"
#include "operator/api/peer_policy.h"

namespace tunnelmesh {
namespace {

constexpr size_t kMaxEndpoints = 16;
constexpr size_t kMaxLabels = 64;

std::string Hex(const uint8_t* data, size_t size) {
  static const char kDigits[] = "0123456789abcdef";
  std::string out;
  for (size_t i = 0; i < size; ++i) {
    out += kDigits[data[i] >> 4];
    out += kDigits[data[i] & 15];
  }
  return out;
}

// Lowercase letters, digits and '-', at most 63 characters, no leading or trailing '-'.
std::string ToDnsLabel(const std::string& requested) {
  std::string out;
  for (char c : requested) {
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
    const bool ok = (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9');
    out += ok ? c : '-';
  }
  while (!out.empty() && out.front() == '-') out.erase(out.begin());
  if (out.size() > 63) out.resize(63);
  while (!out.empty() && out.back() == '-') out.pop_back();
  return out;
}

bool TokensEqual(const std::string& a, const std::string& b) {
  return a.size() == b.size() && sodium_memcmp(a.data(), b.data(), a.size()) == 0;
}

// The IPv4 or IPv6 address at `offset` from the start of `cidr`.
IpAddress Nth(const Prefix& cidr, uint64_t offset) {
  uint8_t bytes[16];
  std::memcpy(bytes, cidr.address().bytes(), cidr.address().byte_length());
  int i = cidr.address().byte_length() - 1;
  uint64_t carry = offset;
  while (carry > 0 && i >= 0) {
    uint64_t sum = bytes[i] + (carry & 0xff);
    bytes[i] = static_cast<uint8_t>(sum);
    carry = (carry >> 8) + (sum >> 8);
    --i;
  }
  return cidr.address().is_v4() ? IpAddress::V4(bytes) : IpAddress::V6(bytes);
}

}  // namespace

bool Subscription::Next(coord::MapUpdate* out, absl::Duration timeout) {
  std::unique_lock<std::mutex> lock(mu_);
  cv_.wait_for(lock, absl::ToChronoMilliseconds(timeout),
               [&] { return cancelled_ || !queue_.empty(); });
  if (cancelled_ || queue_.empty()) return false;
  *out = std::move(queue_.front());
  queue_.pop_front();
  return true;
}

void Subscription::Push(coord::MapUpdate update) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    queue_.push_back(std::move(update));
  }
  cv_.notify_all();
}

void Subscription::Cancel(absl::Status reason) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (!cancelled_) reason_ = std::move(reason);
    cancelled_ = true;
  }
  cv_.notify_all();
}

absl::Status Subscription::reason() const {
  std::lock_guard<std::mutex> lock(mu_);
  return reason_;
}

bool Subscription::cancelled() const {
  std::lock_guard<std::mutex> lock(mu_);
  return cancelled_;
}

Coordinator::Coordinator(MemberStore* store, Options options)
    : store_(store), options_(std::move(options)) {}

void Coordinator::SetMeshes(std::vector<MeshSpec> meshes) {
  std::lock_guard<std::mutex> lock(mu_);
  std::map<std::string, MeshState> next;
  for (MeshSpec& spec : meshes) {
    MeshState state;
    // The mesh-wide WireGuard preshared key: derived from the join token, so it changes when the
    // token is rotated, and never leaves the coordinator except over TLS to admitted members.
    const std::string label = "tunnelmesh preshared key v1 " + spec.name;
    Blake2s({Bytes(reinterpret_cast<const uint8_t*>(label.data()), label.size()),
             Bytes(reinterpret_cast<const uint8_t*>(spec.join_token.data()),
                   spec.join_token.size())},
            state.preshared_key.mutable_data());
    state.spec = std::move(spec);
    const std::string name = state.spec.name;
    next.emplace(name, std::move(state));
  }
  std::map<std::string, MeshState> previous = std::move(meshes_);
  meshes_ = std::move(next);
  ++version_;
  for (const auto& [name, mesh] : meshes_) {
    auto old = previous.find(name);
    if (old != previous.end() && old->second.spec == mesh.spec) continue;
    // Settings changed; so may have every peer's DNS name (the domain): each watcher gets the
    // settings and its peers again.
    const coord::Settings settings = SettingsFor(mesh);
    for (auto& [key, live] : live_) {
      auto record = store_->members().find(key);
      if (record == store_->members().end() || record->second.mesh != name) continue;
      std::shared_ptr<Subscription> sub = live.subscription.lock();
      if (!sub) continue;
      coord::MapUpdate update;
      *update.mutable_settings() = settings;
      for (const auto& [other, m] : store_->members()) {
        if (other != key && m.mesh == name) *update.add_upsert_peers() = PeerOf(m);
      }
      update.set_version(version_);
      sub->Push(std::move(update));
      counters_.updates_sent.fetch_add(1, std::memory_order_relaxed);
    }
  }
}

const Coordinator::MeshState* Coordinator::MeshFor(const std::string& name) const {
  if (name.empty()) return meshes_.size() == 1 ? &meshes_.begin()->second : nullptr;
  auto it = meshes_.find(name);
  return it == meshes_.end() ? nullptr : &it->second;
}

coord::Settings Coordinator::SettingsFor(const MeshState& mesh) const {
  coord::Settings s;
  s.set_mesh(mesh.spec.name);
  s.set_domain(mesh.spec.domain);
  s.set_preshared_key(std::string(reinterpret_cast<const char*>(mesh.preshared_key.data()), 32));
  s.set_stun_address(options_.stun_address);
  s.set_relay_url(options_.relay_url);
  if (!options_.relay_public_key.IsZero()) {
    s.set_relay_public_key(std::string(
        reinterpret_cast<const char*>(options_.relay_public_key.bytes.data()), kKeySize));
  }
  s.set_mtu(options_.mtu);
  return s;
}

coord::Peer Coordinator::PeerOf(const MemberRecord& record) const {
  coord::Peer peer;
  peer.set_public_key(
      std::string(reinterpret_cast<const char*>(record.public_key.bytes.data()), kKeySize));
  peer.set_name(record.name);
  auto mesh = meshes_.find(record.mesh);
  if (mesh != meshes_.end()) peer.set_dns_name(record.name + "." + mesh->second.spec.domain);
  for (const IpAddress& ip : record.mesh_ips) {
    peer.add_mesh_ips(ip.ToString());
    peer.add_allowed_ips(Prefix(ip, ip.bit_length()).ToString());
  }
  auto live = live_.find(record.public_key);
  const std::vector<std::string>& endpoints =
      live != live_.end() && !live->second.endpoints.empty() ? live->second.endpoints
                                                             : record.static_endpoints;
  for (const std::string& e : endpoints) peer.add_endpoints(e);
  for (const auto& [k, v] : record.labels) (*peer.mutable_labels())[k] = v;
  peer.set_kind(static_cast<coord::MemberKind>(record.kind));
  peer.set_static_peer(!record.static_endpoints.empty());
  return peer;
}

void Coordinator::FanOut(const std::string& mesh, const PublicKey* except,
                         const coord::MapUpdate& update) {
  for (auto& [key, live] : live_) {
    if (except != nullptr && key == *except) continue;
    auto record = store_->members().find(key);
    if (record == store_->members().end() || record->second.mesh != mesh) continue;
    if (std::shared_ptr<Subscription> sub = live.subscription.lock()) {
      sub->Push(update);
      counters_.updates_sent.fetch_add(1, std::memory_order_relaxed);
    }
  }
}

absl::StatusOr<IpAddress> Coordinator::Allocate(const Prefix& cidr, const std::string& mesh) const {
  std::set<IpAddress> used;
  for (const auto& [key, m] : store_->members()) {
    for (const IpAddress& ip : m.mesh_ips) used.insert(ip);
  }
  const int host_bits = cidr.address().bit_length() - cidr.length();
  // IPv4: skip the network and broadcast addresses. IPv6: search the first 2^20 addresses.
  const uint64_t size = host_bits >= 20 ? (uint64_t{1} << 20) : (uint64_t{1} << host_bits);
  const uint64_t last = cidr.address().is_v4() ? size - 1 : size;
  for (uint64_t offset = 1; offset < last; ++offset) {
    IpAddress candidate = Nth(cidr, offset);
    if (!used.count(candidate)) return candidate;
  }
  return absl::ResourceExhaustedError("Mesh \"" + mesh + "\" has no free address left in " +
                                      cidr.ToString() + ": widen its CIDR in the Mesh spec");
}

// Names are unique across meshes: in Kubernetes each member is a cluster-scoped MeshPeer.
std::string Coordinator::UniqueName(const std::string& requested, const PublicKey& key) const {
  std::string name = ToDnsLabel(requested);
  const std::string suffix = Hex(key.bytes.data(), 3);
  if (name.empty()) name = "member-" + suffix;
  for (const auto& [other_key, m] : store_->members()) {
    if (other_key != key && m.name == name) {
      if (name.size() > 56) name.resize(56);
      return name + "-" + suffix;
    }
  }
  return name;
}

absl::StatusOr<coord::RegisterResponse> Coordinator::Register(
    const coord::RegisterRequest& request) {
  if (request.public_key().size() != kKeySize) {
    counters_.malformed_requests.fetch_add(1);
    return absl::InvalidArgumentError("public_key must be 32 bytes");
  }
  if (request.labels_size() > static_cast<int>(kMaxLabels) || request.name().size() > 253) {
    counters_.malformed_requests.fetch_add(1);
    return absl::InvalidArgumentError("too many labels or a name longer than 253 characters");
  }
  PublicKey key;
  std::memcpy(key.bytes.data(), request.public_key().data(), kKeySize);
  if (key.IsZero()) {
    counters_.malformed_requests.fetch_add(1);
    return absl::InvalidArgumentError("public_key is all zero");
  }
  for (const auto& [k, v] : request.labels()) {
    absl::Status s = CheckLabel(k, v);
    if (s.ok() && k.rfind("tunnelmesh.io/", 0) == 0) {
      s = absl::InvalidArgumentError("label \"" + k + "\": keys under tunnelmesh.io/ are set by "
                                     "the coordinator");
    }
    if (!s.ok()) {
      counters_.malformed_requests.fetch_add(1);
      return s;
    }
  }
  // A ServiceAccount token is checked with the API server before taking the lock.
  bool service_account = false;
  if (!request.kubernetes_token().empty()) {
    if (!options_.review_token || options_.agent_service_account.empty()) {
      return absl::PermissionDeniedError(
          "this coordinator accepts no ServiceAccount tokens (it runs outside Kubernetes, or "
          "without --agent-service-account): join with --token-file");
    }
    absl::StatusOr<std::string> user = options_.review_token(request.kubernetes_token());
    if (!user.ok()) {
      counters_.rejected_tokens.fetch_add(1);
      return user.status();
    }
    if (*user != options_.agent_service_account) {
      counters_.rejected_tokens.fetch_add(1);
      return absl::PermissionDeniedError(
          "the token of \"" + *user + "\" may not join; only the agent's ServiceAccount \"" +
          options_.agent_service_account + "\" may (operator flag --agent-service-account)");
    }
    service_account = true;
  }
  const bool node = request.kind() == coord::MEMBER_KIND_NODE;
  if (node && options_.node_exists && !options_.node_exists(request.name())) {
    return absl::FailedPreconditionError("kind Node needs --name to be the name of a Node of this "
                                         "cluster; there is no Node \"" + request.name() + "\"");
  }
  std::lock_guard<std::mutex> lock(mu_);
  const MeshState* mesh = MeshFor(request.mesh());
  if (mesh == nullptr) {
    counters_.malformed_requests.fetch_add(1);
    return absl::NotFoundError(request.mesh().empty()
                                   ? "the coordinator serves several meshes (or none): name one"
                                   : "no Mesh named \"" + request.mesh() + "\"");
  }
  if (!service_account && !TokensEqual(request.join_token(), mesh->spec.join_token)) {
    counters_.rejected_tokens.fetch_add(1);
    return absl::PermissionDeniedError("the join token is not valid for Mesh \"" +
                                       mesh->spec.name + "\": check --token-file");
  }
  MemberRecord record;
  auto existing = store_->members().find(key);
  if (existing != store_->members().end() && existing->second.mesh == mesh->spec.name) {
    record = existing->second;  // Sticky: same key, same addresses.
  } else {
    record.public_key = key;
    record.mesh = mesh->spec.name;
  }
  absl::StatusOr<std::vector<IpAddress>> ips = AddressesFor(*mesh, record);
  if (!ips.ok()) return ips.status();
  record.mesh_ips = *std::move(ips);
  record.name = UniqueName(request.name().empty() ? record.name : request.name(), key);
  record.labels.clear();
  for (const auto& [k, v] : request.labels()) record.labels[k] = v;
  if (node) record.labels[kNodeLabel] = request.name();
  // An agent now speaks for the member (it may have been a static one): it reports endpoints.
  record.static_endpoints.clear();
  record.kind = request.kind();
  // A member registering again unchanged (after a reconnect) costs no write: with MeshPeers as the
  // store that would be API calls under this lock.
  auto stored = store_->members().find(key);
  if (stored == store_->members().end() || !(stored->second == record)) {
    if (absl::Status s = store_->Put(record); !s.ok()) {
      return absl::UnavailableError("persisting member state: " + std::string(s.message()));
    }
  }

  Live& live = live_[key];
  live.last_seen = absl::Now();
  if (!live.session_token.empty()) sessions_.erase(live.session_token);
  uint8_t token[32];
  RandomBytes(absl::Span<uint8_t>(token, sizeof(token)));
  live.session_token = Hex(token, sizeof(token));
  sessions_[live.session_token] = key;
  counters_.registrations.fetch_add(1);

  coord::RegisterResponse response;
  response.set_name(record.name);
  for (const IpAddress& ip : record.mesh_ips) response.add_mesh_ips(ip.ToString());
  response.add_mesh_cidrs(mesh->spec.ipv4_cidr.ToString());
  if (mesh->spec.ipv6_cidr) response.add_mesh_cidrs(mesh->spec.ipv6_cidr->ToString());
  response.set_session_token(live.session_token);
  *response.mutable_settings() = SettingsFor(*mesh);

  ++version_;
  coord::MapUpdate update;
  *update.add_upsert_peers() = PeerOf(record);
  update.set_version(version_);
  FanOut(record.mesh, &key, update);
  TM_LOG_INFO("member registered: name={} key={} mesh_ips={}", record.name, key.Short(),
              response.mesh_ips(0));
  return response;
}

absl::StatusOr<PublicKey> Coordinator::Authenticate(std::string_view authorization) const {
  constexpr std::string_view kBearer = "Bearer ";
  if (authorization.substr(0, kBearer.size()) != kBearer) {
    return absl::UnauthenticatedError("missing \"authorization: Bearer\" session token");
  }
  const std::string token(authorization.substr(kBearer.size()));
  std::lock_guard<std::mutex> lock(mu_);
  auto it = sessions_.find(token);
  if (it == sessions_.end()) {
    return absl::UnauthenticatedError("unknown session token: register again");
  }
  return it->second;
}

absl::StatusOr<std::shared_ptr<Subscription>> Coordinator::Watch(const PublicKey& member) {
  std::lock_guard<std::mutex> lock(mu_);
  auto record = store_->members().find(member);
  if (record == store_->members().end()) return absl::NotFoundError("not a member: register");
  const MeshState* mesh = MeshFor(record->second.mesh);
  if (mesh == nullptr) return absl::FailedPreconditionError("the member's Mesh no longer exists");
  Live& live = live_[member];
  live.last_seen = absl::Now();
  if (std::shared_ptr<Subscription> old = live.subscription.lock()) old->Cancel();
  auto subscription = std::make_shared<Subscription>();
  live.subscription = subscription;
  coord::MapUpdate full;
  full.set_full(true);
  *full.mutable_settings() = SettingsFor(*mesh);
  for (const auto& [key, m] : store_->members()) {
    if (key != member && m.mesh == record->second.mesh) *full.add_upsert_peers() = PeerOf(m);
  }
  full.set_version(version_);
  subscription->Push(std::move(full));
  counters_.updates_sent.fetch_add(1);
  return subscription;
}

absl::Status Coordinator::ReportEndpoints(const PublicKey& member,
                                          const std::vector<std::string>& endpoints,
                                          PathCounts paths) {
  if (endpoints.size() > kMaxEndpoints) {
    counters_.malformed_requests.fetch_add(1);
    return absl::InvalidArgumentError("at most 16 endpoints");
  }
  for (const std::string& e : endpoints) {
    if (!Endpoint::Parse(e).ok()) {
      counters_.malformed_requests.fetch_add(1);
      return absl::InvalidArgumentError("endpoint \"" + e + "\" is not ip:port");
    }
  }
  std::lock_guard<std::mutex> lock(mu_);
  auto record = store_->members().find(member);
  if (record == store_->members().end()) return absl::NotFoundError("not a member: register");
  Live& live = live_[member];
  live.last_seen = absl::Now();
  live.paths = paths;
  if (live.endpoints == endpoints) return absl::OkStatus();
  live.endpoints = endpoints;
  ++version_;
  coord::MapUpdate update;
  *update.add_upsert_peers() = PeerOf(record->second);
  update.set_version(version_);
  FanOut(record->second.mesh, &member, update);
  return absl::OkStatus();
}

absl::Status Coordinator::CallMeMaybe(const PublicKey& from, const PublicKey& to,
                                      const std::vector<std::string>& endpoints) {
  if (endpoints.size() > kMaxEndpoints) {
    counters_.malformed_requests.fetch_add(1);
    return absl::InvalidArgumentError("at most 16 endpoints");
  }
  std::lock_guard<std::mutex> lock(mu_);
  auto sender = store_->members().find(from);
  auto target = store_->members().find(to);
  if (sender == store_->members().end() || target == store_->members().end() ||
      sender->second.mesh != target->second.mesh) {
    return absl::NotFoundError("no such peer in this mesh");
  }
  auto live = live_.find(to);
  if (live == live_.end()) return absl::OkStatus();
  if (std::shared_ptr<Subscription> sub = live->second.subscription.lock()) {
    coord::MapUpdate update;
    update.mutable_call_me_maybe()->set_from_public_key(
        std::string(reinterpret_cast<const char*>(from.bytes.data()), kKeySize));
    for (const std::string& e : endpoints) update.mutable_call_me_maybe()->add_endpoints(e);
    update.set_version(version_);
    sub->Push(std::move(update));
  }
  return absl::OkStatus();
}

absl::Status Coordinator::Leave(const PublicKey& member) {
  std::lock_guard<std::mutex> lock(mu_);
  auto record = store_->members().find(member);
  if (record == store_->members().end()) return absl::OkStatus();
  const std::string mesh = record->second.mesh;
  if (absl::Status s = store_->Remove(member); !s.ok()) return s;
  DropLocked(member, mesh, absl::OkStatus());
  TM_LOG_INFO("member left: key={}", member.Short());
  return absl::OkStatus();
}

void Coordinator::DropLocked(const PublicKey& member, const std::string& mesh,
                             absl::Status reason) {
  auto live = live_.find(member);
  if (live != live_.end()) {
    sessions_.erase(live->second.session_token);
    if (std::shared_ptr<Subscription> sub = live->second.subscription.lock()) {
      sub->Cancel(std::move(reason));
    }
    live_.erase(live);
  }
  ++version_;
  coord::MapUpdate update;
  update.add_removed_peers(std::string(reinterpret_cast<const char*>(member.bytes.data()), kKeySize));
  update.set_version(version_);
  FanOut(mesh, nullptr, update);
  if (options_.on_member_removed) options_.on_member_removed(member);
}

absl::StatusOr<std::vector<IpAddress>> Coordinator::AddressesFor(
    const MeshState& mesh, const MemberRecord& record) const {
  // Keep the address families the Mesh has now: allocate what is missing, drop what it lost.
  std::vector<IpAddress> ips;
  for (const Prefix* cidr :
       {&mesh.spec.ipv4_cidr, mesh.spec.ipv6_cidr ? &*mesh.spec.ipv6_cidr : nullptr}) {
    if (cidr == nullptr) continue;
    std::optional<IpAddress> kept;
    for (const IpAddress& ip : record.mesh_ips) {
      if (!cidr->Contains(ip)) continue;
      bool taken = false;
      for (const auto& [key, other] : store_->members()) {
        if (key == record.public_key) continue;
        for (const IpAddress& theirs : other.mesh_ips) taken = taken || theirs == ip;
      }
      if (!taken) kept = ip;
    }
    if (!kept) {
      absl::StatusOr<IpAddress> fresh = Allocate(*cidr, mesh.spec.name);
      if (!fresh.ok()) return fresh.status();
      kept = *fresh;
    }
    ips.push_back(*kept);
  }
  return ips;
}

absl::Status Coordinator::Admit(MemberRecord record) {
  if (record.public_key.IsZero()) return absl::InvalidArgumentError("spec.publicKey is required");
  std::lock_guard<std::mutex> lock(mu_);
  const MeshState* mesh = MeshFor(record.mesh);
  if (mesh == nullptr || record.mesh.empty()) {
    return absl::FailedPreconditionError("spec.mesh names Mesh \"" + record.mesh +
                                         "\", which does not exist (kubectl get meshes)");
  }
  for (const auto& [key, other] : store_->members()) {
    if (key != record.public_key && other.name == record.name) {
      return absl::AlreadyExistsError("member \"" + record.name + "\" already has another key");
    }
  }
  auto existing = store_->members().find(record.public_key);
  // The coordinator allocates: for a member it knows, its own addresses win over what an object
  // says (a watch event may predate the status write that recorded them).
  if (existing != store_->members().end()) record.mesh_ips = existing->second.mesh_ips;
  if (existing != store_->members().end() && existing->second == record) return absl::OkStatus();
  absl::StatusOr<std::vector<IpAddress>> ips = AddressesFor(*mesh, record);
  if (!ips.ok()) return ips.status();
  if (*ips != record.mesh_ips) {
    record.mesh_ips = *std::move(ips);
    if (absl::Status s = store_->Put(record); !s.ok()) {
      return absl::UnavailableError("recording the member's addresses: " +
                                    std::string(s.message()));
    }
  } else {
    store_->Observe(record.public_key, &record);
  }
  ++version_;
  coord::MapUpdate update;
  *update.add_upsert_peers() = PeerOf(record);
  update.set_version(version_);
  FanOut(record.mesh, &record.public_key, update);
  return absl::OkStatus();
}

void Coordinator::Evict(const PublicKey& member, const std::string& why) {
  std::lock_guard<std::mutex> lock(mu_);
  auto record = store_->members().find(member);
  if (record == store_->members().end()) return;
  const std::string mesh = record->second.mesh;
  store_->Observe(member, nullptr);
  DropLocked(member, mesh, absl::PermissionDeniedError("evicted: " + why));
  TM_LOG_INFO("member evicted: key={} why={}", member.Short(), why);
}

std::vector<PublicKey> Coordinator::MembersOf(const std::string& mesh) const {
  std::lock_guard<std::mutex> lock(mu_);
  std::vector<PublicKey> keys;
  for (const auto& [key, m] : store_->members()) {
    if (m.mesh == mesh) keys.push_back(key);
  }
  return keys;
}

std::vector<MemberStatus> Coordinator::Members() const {
  std::lock_guard<std::mutex> lock(mu_);
  std::vector<MemberStatus> out;
  for (const auto& [key, m] : store_->members()) {
    MemberStatus status;
    status.record = m;
    auto live = live_.find(key);
    if (live != live_.end()) {
      std::shared_ptr<Subscription> sub = live->second.subscription.lock();
      status.connected = sub != nullptr && !sub->cancelled();
      status.endpoints = live->second.endpoints;
      status.paths = live->second.paths;
      status.last_seen = live->second.last_seen;
    }
    out.push_back(std::move(status));
  }
  return out;
}

void Coordinator::SetPolicies(std::vector<PeerPolicySpec> policies) {
  std::lock_guard<std::mutex> lock(mu_);
  policies_ = std::move(policies);
}

size_t Coordinator::policy_count() const {
  std::lock_guard<std::mutex> lock(mu_);
  return policies_.size();
}

bool Coordinator::IsMember(const PublicKey& key) const {
  std::lock_guard<std::mutex> lock(mu_);
  return store_->members().count(key) > 0;
}

size_t Coordinator::member_count() const {
  std::lock_guard<std::mutex> lock(mu_);
  return store_->members().size();
}

}  // namespace tunnelmesh
