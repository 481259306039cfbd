// The coordinator's member state: register, admit, leave, evict, and the map updates they fan out.
// One file (about 630 lines) because these steps share one lock and its invariants and are read
// together; the policy compilation they trigger is in coordinator_filter.cc, the store writes in
// member_writer.cc.
#include "operator/coordinator/coordinator.h"

#include <sodium.h>

#include <algorithm>
#include <optional>
#include <set>

#include "absl/algorithm/container.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "lib/base/log.h"
#include "lib/crypto/aead.h"
#include "lib/crypto/blake2s.h"
#include "lib/crypto/control_proofs.h"
#include "lib/dns/message.h"
#include "operator/api/meshpeer.h"
#include "operator/api/peer_policy.h"
#include "operator/coordinator/address_allocator.h"
#include "operator/coordinator/coordinator_locked.h"
#include "proto/member_kind.h"  // NOLINT(build/include_order)

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

// The key of sessions_: BLAKE2s of the token.
std::string SessionHash(std::string_view token) {
  uint8_t hash[kHashSize];
  Blake2s({Bytes(reinterpret_cast<const uint8_t*>(token.data()), token.size())}, hash);
  return std::string(reinterpret_cast<const char*>(hash), sizeof(hash));
}

std::string KeyBytes(const PublicKey& key) {
  return std::string(reinterpret_cast<const char*>(key.bytes.data()), kKeySize);
}

}  // namespace

Coordinator::Coordinator(MemberStore* store, Options options)
    : options_(std::move(options)),
      challenges_(options_.challenges),
      hello_limit_(options_.hellos_per_source),
      register_limit_(options_.registrations_per_source),
      wrong_token_limit_(options_.wrong_tokens_per_source),
      report_limit_(options_.reports_per_member),
      call_me_maybe_limit_(options_.call_me_maybe_per_pair),
      pod_limit_(options_.pod_calls_per_member),
      members_(store->members()),
      writer_(store, &counters_.store, options_.writer) {
  {
    // The quarantine a previous run kept: a restart must not hand a departed member's addresses
    // and name to another key (the store dropped expired entries when it loaded them).
    absl::MutexLock lock(&mu_);
    std::vector<QuarantineEntry> kept = store->quarantine();
    TrimQuarantine(&kept, absl::Now(), options_.max_quarantined);
    for (const QuarantineEntry& e : kept) quarantine_[e.ip] = Quarantined{e.key, e.name, e.until};
    for (const auto& [key, record] : members_) {
      if (record.pod) pods_by_host_[record.pod->host].insert(key);
    }
  }
  if (options_.psk_tick_interval > absl::ZeroDuration()) {
    psk_ticker_ = std::thread([this] {
      while (!stop_ticker_.WaitForNotificationWithTimeout(options_.psk_tick_interval)) {
        AdvancePresharedKeys();
      }
    });
  }
}

Coordinator::~Coordinator() {
  stop_ticker_.Notify();
  if (psk_ticker_.joinable()) psk_ticker_.join();
}

void Coordinator::PushLocked(const std::shared_ptr<Subscription>& subscription,
                             coord::MapUpdate update) {
  if (subscription->Push(std::move(update))) to_wake_.push_back(subscription);
  counters_.updates_sent.fetch_add(1, std::memory_order_relaxed);
}

void Coordinator::CancelLocked(const std::shared_ptr<Subscription>& subscription,
                               absl::Status reason) {
  if (subscription->Cancel(std::move(reason))) to_wake_.push_back(subscription);
}

namespace {

const char* StepName(PresharedKeyStep step) {
  switch (step) {
    case PresharedKeyStep::kStable:
      return "done: members use the new key only";
    case PresharedKeyStep::kAcceptNew:
      return "step 1/3: members accept the new key";
    case PresharedKeyStep::kUseNew:
      return "step 2/3: members use the new key and still accept the old one";
  }
  return "";
}

// The spec as members see it: the join token and its cap (only Register reads them), the key
// generation (a change reaches members as a key change) and where the spec came from are left out.
bool SameMemberView(const MeshSpec& a, const MeshSpec& b) {
  MeshSpec x = a, y = b;
  x.join_token.clear();
  y.join_token.clear();
  x.source.clear();
  y.source.clear();
  x.preshared_key_generation = y.preshared_key_generation = 0;
  x.join_token_max_members = y.join_token_max_members = 0;
  return x == y;
}

bool SameKeys(const SecretKey& a, const std::optional<SecretKey>& a_accepted, const SecretKey& b,
              const std::optional<SecretKey>& b_accepted) {
  return a == b && a_accepted.has_value() == b_accepted.has_value() &&
         (!a_accepted || *a_accepted == *b_accepted);
}

}  // namespace

void Coordinator::SetMeshes(std::vector<MeshSpec> meshes) {
  absl::MutexLock psk_lock(&psk_mu_);
  desired_ = std::move(meshes);
  ReconcileMeshesLocked(/*meshes_changed=*/true);
}

void Coordinator::AdvancePresharedKeys() {
  absl::MutexLock psk_lock(&psk_mu_);
  ReconcileMeshesLocked(/*meshes_changed=*/false);
}

std::optional<PresharedKeyStep> Coordinator::PresharedKeyStepOf(const std::string& mesh) const {
  absl::MutexLock psk_lock(&psk_mu_);
  auto it = psks_.find(mesh);
  if (it == psks_.end()) return std::nullopt;
  return it->second.step;
}

void Coordinator::ReconcileMeshesLocked(bool meshes_changed) {
  const absl::Time now = Now();
  if (!psks_loaded_) {
    if (options_.psk_store != nullptr) {
      absl::StatusOr<PresharedKeyRecords> loaded = options_.psk_store->Load();
      if (!loaded.ok()) {
        // Serving a mesh with a fresh key would cut every tunnel at its next handshake.
        TM_LOG_ERROR("loading the meshes' preshared keys: {} (no Mesh is served until this works)",
                     std::string(loaded.status().message()));
        return;
      }
      psks_ = *std::move(loaded);
    }
    // A rollover that was in progress resumes at its step, whose grace period starts again.
    for (const auto& [name, record] : psks_) step_since_[name] = now;
    psks_loaded_ = true;
  }
  PresharedKeyRecords next = CloneRecords(psks_);
  std::map<std::string, absl::Time> since = step_since_;
  std::vector<std::string> stepped;  // Meshes whose record moved, for the log.
  std::vector<std::string> created;  // Meshes seen for the first time.
  for (const MeshSpec& spec : desired_) {
    auto it = next.find(spec.name);
    if (it == next.end()) {
      MeshPresharedKey fresh;
      fresh.generation = spec.preshared_key_generation;
      fresh.key = SecretKey::Random();
      next.emplace(spec.name, std::move(fresh));
      since[spec.name] = now;
      created.push_back(spec.name);
      continue;
    }
    MeshPresharedKey& record = it->second;
    auto started = since.try_emplace(spec.name, now).first;
    const bool due = now - started->second >= options_.psk_rollover_step;
    switch (record.step) {
      case PresharedKeyStep::kAcceptNew:
        if (!due) continue;
        record.step = PresharedKeyStep::kUseNew;
        break;
      case PresharedKeyStep::kUseNew:
        if (!due) continue;
        record.step = PresharedKeyStep::kStable;
        record.previous.reset();
        record.previous_generation = 0;
        break;
      case PresharedKeyStep::kStable:
        // Lowering the generation does nothing: keys only move forward.
        if (spec.preshared_key_generation <= record.generation) continue;
        record.previous = std::move(record.key);
        record.previous_generation = record.generation;
        record.key = SecretKey::Random();
        record.generation = spec.preshared_key_generation;
        record.step = PresharedKeyStep::kAcceptNew;
        break;
    }
    started->second = now;
    stepped.push_back(spec.name);
  }
  bool keys_changed = next.size() != psks_.size();
  for (const auto& [name, record] : next) {
    auto old = psks_.find(name);
    keys_changed = keys_changed || old == psks_.end() || !(old->second == record);
  }
  if (keys_changed) {
    absl::Status saved =
        options_.psk_store == nullptr ? absl::OkStatus() : options_.psk_store->Save(next);
    if (saved.ok()) {
      psks_ = std::move(next);
      step_since_ = std::move(since);
      for (const std::string& name : created) {
        TM_LOG_INFO("Mesh {}: new random preshared key (generation {})", name,
                    psks_.at(name).generation);
      }
      for (const std::string& name : stepped) {
        const MeshPresharedKey& record = psks_.at(name);
        counters_.psk_rollover_steps.fetch_add(1, std::memory_order_relaxed);
        TM_LOG_INFO("Mesh {}: preshared key rollover to generation {}, {}", name, record.generation,
                    StepName(record.step));
      }
    } else {
      // Nothing changes until it is saved: members never hold a key a restart would lose.
      counters_.psk_save_failures.fetch_add(1, std::memory_order_relaxed);
      TM_LOG_ERROR("saving the meshes' preshared keys: {} (trying again in a moment)",
                   std::string(saved.message()));
    }
  }
  if (keys_changed || meshes_changed) InstallMeshes(meshes_changed);
}

void Coordinator::InstallMeshes(bool meshes_changed) {
  Locked lock(this);
  std::map<std::string, MeshState> next;
  for (const MeshSpec& spec : desired_) {
    auto record = psks_.find(spec.name);
    if (record == psks_.end()) {
      TM_LOG_WARN("Mesh {} is not served yet: its preshared key is not saved", spec.name);
      continue;
    }
    MeshState state;
    state.spec = spec;
    const MeshPresharedKey& keys = record->second;
    if (keys.step == PresharedKeyStep::kAcceptNew && keys.previous) {
      state.preshared_key = keys.previous->Clone();
      state.accepted_preshared_key = keys.key.Clone();
      state.preshared_key_generation = keys.previous_generation;
    } else {
      state.preshared_key = keys.key.Clone();
      if (keys.step == PresharedKeyStep::kUseNew && keys.previous) {
        state.accepted_preshared_key = keys.previous->Clone();
      }
      state.preshared_key_generation = keys.generation;
    }
    next.emplace(spec.name, std::move(state));
  }
  std::map<std::string, MeshState> previous = std::move(meshes_);
  meshes_ = std::move(next);
  bool any_change = meshes_changed || previous.size() != meshes_.size();
  if (any_change) SyncEnginesLocked();
  for (const auto& [name, mesh] : meshes_) {
    auto old = previous.find(name);
    const bool view_same = old != previous.end() && SameMemberView(old->second.spec, mesh.spec);
    const bool keys_same = old != previous.end() &&
                           SameKeys(old->second.preshared_key, old->second.accepted_preshared_key,
                                    mesh.preshared_key, mesh.accepted_preshared_key) &&
                           old->second.preshared_key_generation == mesh.preshared_key_generation;
    if (view_same && keys_same) continue;
    any_change = true;
    if (view_same) {
      // Only the keys moved: one settings delta per watcher, no full maps.
      ++version_;
      coord::MapUpdate update;
      *update.mutable_settings() = SettingsFor(mesh);
      update.set_version(version_);
      FanOut(name, nullptr, update);
      continue;
    }
    // Settings changed; so may have every peer's DNS name (the domain): each watcher gets a
    // fresh full map. It is built when its stream takes it (Refill, one watcher at a time), not
    // here: building N maps of N peers under the lock would hold every other call for O(N^2).
    for (auto& [key, live] : live_) {
      auto record = members_.find(key);
      if (record == members_.end() || record->second.mesh != name) continue;
      std::shared_ptr<Subscription> sub = live.subscription.lock();
      if (sub && sub->RequestFullMap()) to_wake_.push_back(sub);
    }
  }
  if (any_change) ++version_;
}

const Coordinator::MeshState* Coordinator::MeshFor(const std::string& name) const {
  if (name.empty()) return meshes_.size() == 1 ? &meshes_.begin()->second : nullptr;
  auto it = meshes_.find(name);
  return it == meshes_.end() ? nullptr : &it->second;
}

absl::StatusOr<const Coordinator::MeshState*> Coordinator::MeshToJoinLocked(
    const coord::RegisterRequest& request, const PublicKey& key, bool service_account) {
  if (!request.mesh().empty()) {
    if (const MeshState* named = MeshFor(request.mesh()); named != nullptr) return named;
    return absl::NotFoundError("no Mesh named \"" + request.mesh() +
                               "\" on this coordinator: check --mesh (kubectl get meshes lists "
                               "them in a cluster; the manifests directory standalone)");
  }
  // A member keeps its mesh: it re-registers (after either side restarted) without --mesh, also
  // once the coordinator serves more than one.
  if (auto known = members_.find(key); known != members_.end()) {
    if (const MeshState* own = MeshFor(known->second.mesh); own != nullptr) return own;
  }
  if (meshes_.size() == 1) return &meshes_.begin()->second;
  if (meshes_.empty()) {
    return absl::FailedPreconditionError(
        "the coordinator serves no Mesh yet: check its manifests (or kubectl get meshes)");
  }
  std::vector<std::string> names;
  const MeshState* match = nullptr;
  for (const auto& [name, mesh] : meshes_) {
    if (service_account || TokensEqual(request.join_token(), mesh.spec.join_token)) {
      names.push_back(name);
      match = &mesh;
    }
  }
  if (names.size() == 1) return match;
  if (names.empty()) {
    return absl::PermissionDeniedError(
        "the join token is not valid for any Mesh of this coordinator: check --token-file");
  }
  constexpr size_t kNamesShown = 10;
  const size_t more = names.size() > kNamesShown ? names.size() - kNamesShown : 0;
  names.resize(names.size() - more);
  return absl::InvalidArgumentError(absl::StrCat(
      "the join token admits to ", names.size() + more, " meshes (", absl::StrJoin(names, ", "),
      more > 0 ? absl::StrCat(" and ", more, " more") : "", "): name one with --mesh NAME"));
}

coord::Settings Coordinator::SettingsFor(const MeshState& mesh) const {
  coord::Settings s;
  s.set_mesh(mesh.spec.name);
  s.set_domain(mesh.spec.domain);
  s.set_preshared_key(std::string(reinterpret_cast<const char*>(mesh.preshared_key.data()), 32));
  if (mesh.accepted_preshared_key) {
    s.set_accepted_preshared_key(
        std::string(reinterpret_cast<const char*>(mesh.accepted_preshared_key->data()), 32));
  }
  s.set_preshared_key_generation(mesh.preshared_key_generation);
  s.set_stun_address(options_.stun_address);
  s.set_relay_url(options_.relay_url);
  if (!options_.relay_public_key.IsZero()) {
    s.set_relay_public_key(std::string(
        reinterpret_cast<const char*>(options_.relay_public_key.bytes.data()), kKeySize));
  }
  s.set_mtu(options_.mtu);
  s.set_dns_ttl_seconds(mesh.spec.dns_ttl_seconds);
  s.set_dns_negative_ttl_seconds(mesh.spec.dns_negative_ttl_seconds);
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
    // A pod is reached through its host: its addresses are the host's allowed IPs, not its own.
    if (!record.pod) peer.add_allowed_ips(Prefix(ip, ip.bit_length()).ToString());
  }
  if (record.pod) peer.set_host_public_key(KeyBytes(record.pod->host));
  if (auto pods = pods_by_host_.find(record.public_key); pods != pods_by_host_.end()) {
    for (const PublicKey& pod_key : pods->second) {
      auto pod = members_.find(pod_key);
      if (pod == members_.end()) continue;
      for (const IpAddress& ip : pod->second.mesh_ips) {
        peer.add_allowed_ips(Prefix(ip, ip.bit_length()).ToString());
      }
    }
  }
  auto live = live_.find(record.public_key);
  const std::vector<std::string>& endpoints = live != live_.end() && !live->second.endpoints.empty()
                                                  ? live->second.endpoints
                                                  : record.static_endpoints;
  for (const std::string& e : endpoints) peer.add_endpoints(e);
  for (const auto& [k, v] : record.labels) (*peer.mutable_labels())[k] = v;
  for (const std::string& alias : record.aliases) peer.add_aliases(alias);
  peer.set_kind(record.kind);
  peer.set_static_peer(!record.static_endpoints.empty());
  peer.set_exit_peer(record.exit_peer);
  if (!record.ssh_key.IsZero()) {
    peer.set_ssh_public_key(KeyBytes(record.ssh_key));
    peer.set_ssh_port(record.ssh_port);
  }
  return peer;
}

void Coordinator::FanOut(const std::string& mesh, const PublicKey* except,
                         const coord::MapUpdate& update) {
  for (auto& [key, live] : live_) {
    if (except != nullptr && key == *except) continue;
    auto record = members_.find(key);
    if (record == members_.end() || record->second.mesh != mesh) continue;
    if (std::shared_ptr<Subscription> sub = live.subscription.lock()) PushLocked(sub, update);
  }
}

absl::StatusOr<IpAddress> Coordinator::Allocate(const Prefix& cidr, const std::string& mesh,
                                                const PublicKey& key) const {
  const absl::Time now = absl::Now();
  std::set<IpAddress> used;
  for (const auto& [member, m] : members_) {
    for (const IpAddress& ip : m.mesh_ips) used.insert(ip);
  }
  size_t quarantined = 0;
  for (const auto& [ip, q] : quarantine_) {
    if (q.until <= now || !cidr.Contains(ip) || used.count(ip) > 0) continue;
    if (q.key == key) return ip;  // Its own address, back.
    used.insert(ip);
    ++quarantined;
  }
  absl::StatusOr<IpAddress> free = LowestFreeAddress(cidr, used);
  if (free.ok()) return free;
  std::string why = "Mesh \"" + mesh + "\" has no free address left in " + cidr.ToString() +
                    ": widen its CIDR in the Mesh spec";
  if (quarantined > 0) {
    absl::StrAppend(&why, " (", quarantined,
                    " addresses of members that left are quarantined: see the operator's "
                    "--ip-quarantine)");
  }
  return absl::FailedPreconditionError(why);
}

// Names are unique across meshes: in Kubernetes each member is a cluster-scoped MeshPeer.
std::string Coordinator::UniqueName(const std::string& requested, const PublicKey& key) const {
  std::string name = ToDnsLabel(requested);
  const std::string suffix = Hex(key.bytes.data(), 3);
  if (name.empty()) name = "member-" + suffix;
  const absl::Time now = absl::Now();
  bool taken = false;
  for (const auto& [other_key, m] : members_) taken = taken || (other_key != key && m.name == name);
  for (const auto& [ip, q] : quarantine_) {
    taken = taken || (q.key != key && q.until > now && q.name == name);
  }
  if (!taken) return name;
  if (name.size() > 56) name.resize(56);
  return name + "-" + suffix;
}

absl::StatusOr<coord::HelloResponse> Coordinator::Hello(const coord::HelloRequest& request,
                                                        const std::string& source) {
  const absl::Time now = absl::Now();
  if (!hello_limit_.Allow(source, now)) {
    counters_.rate_limited.fetch_add(1);
    return absl::ResourceExhaustedError("too many Hello calls from " + source + "; retry later");
  }
  if (request.nonce().size() < 16 || request.nonce().size() > 64) {
    counters_.malformed_requests.fetch_add(1);
    return absl::InvalidArgumentError("Hello's nonce must be 16 to 64 bytes");
  }
  counters_.hellos.fetch_add(1);
  coord::HelloResponse response;
  response.set_challenge(challenges_.Issue(now));
  response.set_ephemeral_public_key(KeyBytes(challenges_.ephemeral_public_key()));
  std::vector<std::string> tokens;
  {
    absl::ReaderMutexLock lock(&mu_);
    for (const auto& [name, mesh] : meshes_) tokens.push_back(mesh.spec.join_token);
  }
  // Meshes without a join token (ServiceAccount tokens only) prove nothing here.
  std::sort(tokens.begin(), tokens.end());
  tokens.erase(std::unique(tokens.begin(), tokens.end()), tokens.end());
  for (const std::string& token : tokens) {
    if (token.empty()) continue;
    const ControlProof proof = TokenProof(token, request.nonce(), options_.ca_hash);
    response.add_token_proofs(
        std::string(reinterpret_cast<const char*>(proof.data()), proof.size()));
  }
  return response;
}

absl::StatusOr<coord::RegisterResponse> Coordinator::Register(const coord::RegisterRequest& request,
                                                              const std::string& source) {
  const absl::Time now = absl::Now();
  if (!register_limit_.Allow(source, now)) {
    counters_.rate_limited.fetch_add(1);
    return absl::ResourceExhaustedError("too many registrations from " + source + "; retry later");
  }
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
  if (request.aliases_size() > static_cast<int>(kMaxAliases)) {
    counters_.malformed_requests.fetch_add(1);
    return absl::InvalidArgumentError(
        absl::StrCat("at most ", kMaxAliases, " DNS aliases (--alias) per member"));
  }
  for (const std::string& alias : request.aliases()) {
    if (!dns::IsDnsLabel(alias)) {
      counters_.malformed_requests.fetch_add(1);
      return absl::InvalidArgumentError("alias \"" + alias +
                                        "\" is not a DNS label (lowercase letters, digits and "
                                        "'-', e.g. git)");
    }
  }
  if (request.has_exit()) {
    const std::vector<std::string> use(request.exit().use().begin(), request.exit().use().end());
    if (absl::Status s = CheckExitPeerNames(use, "--exit-peer"); !s.ok()) {
      counters_.malformed_requests.fetch_add(1);
      return s;
    }
  }
  if (!request.ssh_public_key().empty() &&
      (request.ssh_public_key().size() != kKeySize || request.ssh_port() == 0 ||
       request.ssh_port() > 65535)) {
    counters_.malformed_requests.fetch_add(1);
    return absl::InvalidArgumentError(
        "ssh_public_key must be 32 bytes with an ssh_port from 1 to 65535 (--ssh-port)");
  }
  for (const auto& [k, v] : request.labels()) {
    absl::Status s = CheckLabel(k, v);
    if (s.ok() && k.rfind("tunnelmesh.io/", 0) == 0) {
      s = absl::InvalidArgumentError("label \"" + k +
                                     "\": keys under tunnelmesh.io/ are set by "
                                     "the coordinator");
    }
    if (!s.ok()) {
      counters_.malformed_requests.fetch_add(1);
      return s;
    }
  }
  // Proof of possession (without mu_: one X25519): only the holder of the private key may speak
  // for a public key, so no one can rename, move or remove another member by naming its key.
  if (absl::Status s = challenges_.Consume(request.challenge(), now); !s.ok()) {
    counters_.refused_proofs.fetch_add(1);
    return s;
  }
  if (!CheckPossessionProof(challenges_.ephemeral_private_key(), key, request.challenge(),
                            request.mesh(), request.possession_proof())) {
    counters_.refused_proofs.fetch_add(1);
    return absl::UnauthenticatedError(
        "the registration does not prove possession of the private key of public_key " +
        key.Short() + ": only the holder of a member's key may register it");
  }
  // Wrong join tokens are limited per source before any is compared.
  if (!request.join_token().empty() && !wrong_token_limit_.HasToken(source, now)) {
    counters_.rate_limited.fetch_add(1);
    return absl::ResourceExhaustedError("too many wrong join tokens from " + source +
                                        "; wait a minute and check --token-file");
  }
  // A ServiceAccount token is checked with the API server before taking the lock.
  bool service_account = false;
  if (!request.kubernetes_token().empty()) {
    if (!options_.review_token || options_.agent_service_account.empty()) {
      return absl::PermissionDeniedError(
          "this coordinator accepts no ServiceAccount tokens (it runs outside Kubernetes, or "
          "without --agent-service-account): join with --token-file");
    }
    absl::StatusOr<ServiceAccountToken> sa = options_.review_token(request.kubernetes_token());
    if (!sa.ok()) {
      if (sa.status().code() != absl::StatusCode::kUnavailable) {
        counters_.rejected_tokens.fetch_add(1);
      }
      return sa.status();
    }
    absl::Status refused;
    if (sa->user != options_.agent_service_account) {
      refused = absl::PermissionDeniedError(
          "the token of \"" + sa->user + "\" may not join; only the agent's ServiceAccount \"" +
          options_.agent_service_account + "\" may (operator flag --agent-service-account)");
    } else if (!absl::c_linear_search(sa->audiences, kServiceAccountTokenAudience)) {
      refused = absl::PermissionDeniedError(absl::StrCat(
          "the ServiceAccount token is not for audience \"", kServiceAccountTokenAudience,
          "\": join with a projected token of that audience (the chart mounts one; "
          "--kubernetes-token-file names it), not the pod's API token"));
    } else if (request.kind() == coord::MEMBER_KIND_NODE && sa->node != request.name()) {
      refused = absl::PermissionDeniedError(
          sa->node.empty()
              ? "kind Node needs a ServiceAccount token bound to a pod on that Node (a projected "
                "token; the chart mounts one), so that the coordinator can check the Node"
              : "the ServiceAccount token belongs to a pod on Node \"" + sa->node +
                    "\": it may register as that Node only, not as \"" + request.name() +
                    "\" (--name)");
    }
    if (!refused.ok()) {
      counters_.rejected_tokens.fetch_add(1);
      TM_LOG_WARN("ServiceAccount token refused: {}", std::string(refused.message()));
      return refused;
    }
    service_account = true;
  }
  const bool node = request.kind() == coord::MEMBER_KIND_NODE;
  if (node && options_.node_exists && !options_.node_exists(request.name())) {
    return absl::FailedPreconditionError(
        "kind Node needs --name to be the name of a Node of this "
        "cluster; there is no Node \"" +
        request.name() + "\"");
  }
  Locked lock(this);
  if (absl::Status removed = RemovedByAdminLocked(key); !removed.ok()) return removed;
  absl::StatusOr<const MeshState*> to_join = MeshToJoinLocked(request, key, service_account);
  if (!to_join.ok()) {
    if (to_join.status().code() == absl::StatusCode::kPermissionDenied) {
      counters_.rejected_tokens.fetch_add(1);
      (void)wrong_token_limit_.Allow(source, now);
    } else {
      counters_.malformed_requests.fetch_add(1);
    }
    return to_join.status();
  }
  const MeshState* mesh = *to_join;
  // The join token admits new members. A member the mesh already has proved above that it holds
  // its key, which is its identity from then on: it re-registers (after a coordinator restart,
  // say) without the token, so rotating the token disturbs no running member. Removing a member
  // is an eviction (its MeshPeer deleted), not a token change.
  auto known = members_.find(key);
  const bool member = known != members_.end() && known->second.mesh == mesh->spec.name;
  if (!service_account && !member && !TokensEqual(request.join_token(), mesh->spec.join_token)) {
    counters_.rejected_tokens.fetch_add(1);
    (void)wrong_token_limit_.Allow(source, now);
    return absl::PermissionDeniedError("the join token is not valid for Mesh \"" + mesh->spec.name +
                                       "\": check --token-file");
  }
  // The Mesh's cap on what the join token admits: a lost laptop's member counts until it leaves,
  // expires or its MeshPeer is deleted, so a leaked token cannot grow the mesh without bound.
  if (const uint32_t cap = mesh->spec.join_token_max_members;
      cap > 0 && !service_account && !member) {
    const size_t count = absl::c_count_if(
        members_, [&](const auto& entry) { return entry.second.mesh == mesh->spec.name; });
    if (count >= cap) {
      counters_.refused_token_cap.fetch_add(1);
      return absl::FailedPreconditionError(
          absl::StrCat("Mesh \"", mesh->spec.name, "\" has ", count,
                       " members and its join token admits none "
                       "beyond spec.joinTokenMaxMembers (",
                       cap,
                       "): raise it, or remove members that are gone "
                       "(delete their MeshPeers)"));
    }
  }
  MemberRecord record;
  auto existing = members_.find(key);
  if (existing != members_.end() && existing->second.mesh == mesh->spec.name) {
    record = existing->second;  // Sticky: same key, same addresses.
  } else {
    record.public_key = key;
    record.mesh = mesh->spec.name;
  }
  absl::StatusOr<std::vector<IpAddress>> ips = AddressesFor(*mesh, record);
  if (!ips.ok()) return ips.status();
  record.mesh_ips = *std::move(ips);
  record.name = UniqueName(request.name().empty() ? record.name : request.name(), key);
  if (request.aliases_size() > 0) {
    // An alias another member of the mesh already answers to is refused, naming that member: the
    // name would be ambiguous. (Aliases set in MeshPeers are not refused; the zone gives a
    // contested one to the member whose name sorts first.)
    for (const std::string& alias : request.aliases()) {
      for (const auto& [other_key, other] : members_) {
        if (other_key == key || other.mesh != record.mesh) continue;
        if (other.name == alias || absl::c_linear_search(other.aliases, alias)) {
          counters_.malformed_requests.fetch_add(1);
          return absl::AlreadyExistsError("alias \"" + alias + "\" is taken by member \"" +
                                          other.name + "\" of Mesh \"" + record.mesh + "\"");
        }
      }
    }
    record.aliases.assign(request.aliases().begin(), request.aliases().end());
    std::sort(record.aliases.begin(), record.aliases.end());
    record.aliases.erase(std::unique(record.aliases.begin(), record.aliases.end()),
                         record.aliases.end());
  }
  record.labels.clear();
  for (const auto& [k, v] : request.labels()) record.labels[k] = v;
  if (node) record.labels[kNodeLabel] = request.name();
  if (request.has_exit()) {
    record.exit_peer = request.exit().advertise();
    record.use_exit_peers.assign(request.exit().use().begin(), request.exit().use().end());
  }
  record.ssh_key = PublicKey();
  record.ssh_port = 0;
  if (!request.ssh_public_key().empty()) {
    std::memcpy(record.ssh_key.bytes.data(), request.ssh_public_key().data(), kKeySize);
    record.ssh_port = static_cast<uint16_t>(request.ssh_port());
  }
  // An agent now speaks for the member (it may have been a static one): it reports endpoints.
  record.static_endpoints.clear();
  // Anything but Node or Pod (no kind, or a value this coordinator does not know) is External.
  record.kind =
      request.kind() == coord::MEMBER_KIND_NODE || request.kind() == coord::MEMBER_KIND_POD
          ? request.kind()
          : coord::MEMBER_KIND_EXTERNAL;
  // The in-memory map changes now; the store follows on the writer thread. A member registering
  // again unchanged (after a reconnect) queues no write. Only a first registration creates the
  // record: a member already known is updated, so that a MeshPeer deleted before the write runs
  // stays deleted (MemberStore::Update).
  auto stored = members_.find(key);
  if (stored == members_.end()) {
    members_[key] = record;
    writer_.Put(record);
    SyncFilterLocked(nullptr, &record);
  } else if (!(stored->second == record)) {
    const MemberRecord old = stored->second;
    stored->second = record;
    writer_.Update(record);
    SyncFilterLocked(&old, &record);
    if (old.mesh != record.mesh) MovedLocked(old);
  }

  Live& live = live_[key];
  live.last_seen = now;
  // A new session replaces the old one (the key's holder restarted or moved); tokens are random
  // and kept only as hashes.
  if (!live.session_hash.empty()) sessions_.erase(live.session_hash);
  uint8_t token[32];
  RandomBytes(absl::Span<uint8_t>(token, sizeof(token)));
  const std::string session_token = Hex(token, sizeof(token));
  sodium_memzero(token, sizeof(token));
  live.session_hash = SessionHash(session_token);
  sessions_[live.session_hash] = key;
  counters_.registrations.fetch_add(1);

  coord::RegisterResponse response;
  response.set_name(record.name);
  for (const IpAddress& ip : record.mesh_ips) response.add_mesh_ips(ip.ToString());
  response.add_mesh_cidrs(mesh->spec.ipv4_cidr.ToString());
  if (mesh->spec.ipv6_cidr) response.add_mesh_cidrs(mesh->spec.ipv6_cidr->ToString());
  response.set_session_token(session_token);
  *response.mutable_settings() = SettingsFor(*mesh);
  for (const std::string& alias : record.aliases) response.add_aliases(alias);

  ++version_;
  coord::MapUpdate update;
  *update.add_upsert_peers() = PeerOf(record);
  update.set_version(version_);
  FanOut(record.mesh, &key, update);
  SendFiltersLocked();
  lock.Release();
  // Without mu_: only this member waits for its record (see the header for why it waits).
  if (absl::Status s = writer_.WaitDurable(key, options_.register_write_deadline); !s.ok()) {
    return absl::UnavailableError("persisting member state: " + std::string(s.message()));
  }
  TM_LOG_INFO("member registered: name={} key={} mesh_ips={}", record.name, key.Short(),
              response.mesh_ips(0));
  return response;
}

absl::StatusOr<PublicKey> Coordinator::Authenticate(std::string_view authorization) const {
  constexpr std::string_view kBearer = "Bearer ";
  if (authorization.substr(0, kBearer.size()) != kBearer) {
    return absl::UnauthenticatedError("missing \"authorization: Bearer\" session token");
  }
  const std::string hash = SessionHash(authorization.substr(kBearer.size()));
  absl::ReaderMutexLock lock(&mu_);
  auto it = sessions_.find(hash);
  if (it == sessions_.end()) {
    return absl::UnauthenticatedError("unknown session token: register again");
  }
  return it->second;
}

absl::StatusOr<std::shared_ptr<Subscription>> Coordinator::Watch(const PublicKey& member,
                                                                 const std::string& source) {
  Locked lock(this);
  auto record = members_.find(member);
  if (record == members_.end()) return absl::NotFoundError("not a member: register");
  const MeshState* mesh = MeshFor(record->second.mesh);
  if (mesh == nullptr) return absl::FailedPreconditionError("the member's Mesh no longer exists");
  Live& live = live_[member];
  live.last_seen = absl::Now();
  if (std::shared_ptr<Subscription> old = live.subscription.lock()) {
    CancelLocked(old,
                 old->cancelled() ? absl::OkStatus() : WatchTakenOverLocked(member, live, source));
  }
  live.watch_source = source;
  Subscription::Options options;
  options.max_pending = options_.max_pending_updates;
  options.collapses = &counters_.watch_collapses;
  options.fanout_seconds = &counters_.fanout_seconds;
  options.refill = [this, member](Subscription* sub) { Refill(member, sub); };
  auto subscription = std::make_shared<Subscription>(std::move(options));
  live.subscription = subscription;
  coord::MapUpdate full = FullMapFor(member, *mesh);
  NoteExitSentLocked(member, full.exit());
  PushLocked(subscription, std::move(full));
  FanOutPresenceLocked(record->second);
  return subscription;
}

void Coordinator::WatchEnded(const PublicKey& member, const Subscription* subscription) {
  Locked lock(this);
  auto live = live_.find(member);
  auto record = members_.find(member);
  if (live == live_.end() || record == members_.end()) return;  // It left or was removed.
  std::shared_ptr<Subscription> current = live->second.subscription.lock();
  if (current != nullptr && current.get() != subscription) return;  // A newer watch replaced it.
  live->second.subscription.reset();
  live->second.last_seen = Now();
  FanOutPresenceLocked(record->second);
}

bool Coordinator::OnlineLocked(const PublicKey& key) const {
  auto live = live_.find(key);
  if (live == live_.end()) return false;
  std::shared_ptr<Subscription> sub = live->second.subscription.lock();
  return sub != nullptr && !sub->cancelled();
}

coord::Presence Coordinator::PresenceOf(const PublicKey& key) const {
  coord::Presence presence;
  presence.set_public_key(std::string(reinterpret_cast<const char*>(key.bytes.data()), kKeySize));
  presence.set_online(OnlineLocked(key));
  if (auto live = live_.find(key); live != live_.end() && live->second.last_seen > started_) {
    presence.set_last_seen_unix(absl::ToUnixSeconds(live->second.last_seen));
  }
  return presence;
}

void Coordinator::FanOutPresenceLocked(const MemberRecord& record) {
  ++version_;
  coord::MapUpdate update;
  *update.add_presence() = PresenceOf(record.public_key);
  update.set_version(version_);
  FanOut(record.mesh, &record.public_key, update);
}

coord::MapUpdate Coordinator::FullMapFor(const PublicKey& member, const MeshState& mesh) const {
  coord::MapUpdate full;
  full.set_full(true);
  *full.mutable_settings() = SettingsFor(mesh);
  for (const auto& [key, m] : members_) {
    if (key != member && m.mesh == mesh.spec.name) {
      *full.add_upsert_peers() = PeerOf(m);
      *full.add_presence() = PresenceOf(key);
    }
  }
  if (auto self = members_.find(member); self != members_.end()) {
    *full.mutable_filter() = FilterFor(self->second, mesh);
    *full.mutable_exit() = ExitConfigLocked(self->second);
  }
  full.set_version(version_);
  return full;
}

void Coordinator::Refill(const PublicKey& member, Subscription* subscription) {
  Locked lock(this);
  auto record = members_.find(member);
  auto live = live_.find(member);
  const MeshState* mesh = record == members_.end() ? nullptr : MeshFor(record->second.mesh);
  // A replaced or ended watch was cancelled already; a member without a Mesh has no map.
  if (live == live_.end() || live->second.subscription.lock().get() != subscription) return;
  if (mesh == nullptr) {
    std::shared_ptr<Subscription> sub = live->second.subscription.lock();
    CancelLocked(sub, absl::FailedPreconditionError("the member's Mesh no longer exists"));
    return;
  }
  coord::MapUpdate full = FullMapFor(member, *mesh);
  NoteExitSentLocked(member, full.exit());
  subscription->ResetWithFullMap(std::move(full));
  counters_.updates_sent.fetch_add(1, std::memory_order_relaxed);
}

absl::Status Coordinator::ReportEndpoints(const PublicKey& member,
                                          const std::vector<std::string>& endpoints,
                                          PathCounts paths,
                                          const std::vector<PeerPathReport>& peer_paths) {
  if (endpoints.size() > kMaxEndpoints) {
    counters_.malformed_requests.fetch_add(1);
    return absl::InvalidArgumentError("at most 16 endpoints");
  }
  if (peer_paths.size() > kMaxPeerPaths) {
    counters_.malformed_requests.fetch_add(1);
    return absl::InvalidArgumentError("at most " + std::to_string(kMaxPeerPaths) + " peer paths");
  }
  for (const PeerPathReport& p : peer_paths) {
    if (!coord::PathKind_IsValid(p.path)) {
      counters_.malformed_requests.fetch_add(1);
      return absl::InvalidArgumentError("peer path kind " + std::to_string(p.path) +
                                        " is not none, direct, ssh or relay");
    }
  }
  for (const std::string& e : endpoints) {
    if (!Endpoint::Parse(e).ok()) {
      counters_.malformed_requests.fetch_add(1);
      return absl::InvalidArgumentError("endpoint \"" + e + "\" is not ip:port");
    }
  }
  if (!report_limit_.Allow(KeyBytes(member), absl::Now())) {
    counters_.rate_limited.fetch_add(1);
    return absl::ResourceExhaustedError("endpoint reports too frequent; retry later");
  }
  Locked lock(this);
  auto record = members_.find(member);
  if (record == members_.end()) return absl::NotFoundError("not a member: register");
  Live& live = live_[member];
  live.last_seen = absl::Now();
  live.paths = paths;
  SetPeerPathsLocked(record->second, live, peer_paths);
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
  for (const std::string& e : endpoints) {
    if (!Endpoint::Parse(e).ok()) {
      counters_.malformed_requests.fetch_add(1);
      return absl::InvalidArgumentError("endpoint \"" + e + "\" is not ip:port");
    }
  }
  // Each call makes the peer probe: at most about one per second per pair, so no member can turn
  // its peers into a packet source at a rate it chooses.
  if (!call_me_maybe_limit_.Allow(KeyBytes(from) + KeyBytes(to), absl::Now())) {
    counters_.rate_limited.fetch_add(1);
    return absl::ResourceExhaustedError("call-me-maybe to this peer too frequent; retry later");
  }
  Locked lock(this);
  auto sender = members_.find(from);
  auto target = members_.find(to);
  if (sender == members_.end() || target == members_.end() ||
      sender->second.mesh != target->second.mesh) {
    return absl::NotFoundError("no such peer in this mesh");
  }
  auto live = live_.find(to);
  if (live == live_.end()) return absl::OkStatus();
  if (std::shared_ptr<Subscription> sub = live->second.subscription.lock()) {
    // Only endpoints the sender reported as its own are passed on: a member cannot make its
    // peers probe addresses that are not its own.
    auto sender_live = live_.find(from);
    const std::vector<std::string> none;
    const std::vector<std::string>& own =
        sender_live != live_.end() ? sender_live->second.endpoints : none;
    coord::MapUpdate update;
    update.mutable_call_me_maybe()->set_from_public_key(KeyBytes(from));
    for (const std::string& e : endpoints) {
      if (absl::c_linear_search(own, e)) {
        update.mutable_call_me_maybe()->add_endpoints(e);
      } else {
        counters_.call_me_maybe_endpoints_dropped.fetch_add(1);
      }
    }
    update.set_version(version_);
    PushLocked(sub, std::move(update));
  }
  return absl::OkStatus();
}

absl::Status Coordinator::Leave(const PublicKey& member) {
  Locked lock(this);
  auto record = members_.find(member);
  if (record == members_.end()) return absl::OkStatus();
  TM_LOG_INFO("member left: name={} key={}", record->second.name, member.Short());
  RemoveLocked(member, absl::OkStatus());
  return absl::OkStatus();
}

void Coordinator::QuarantineLocked(const MemberRecord& record) {
  const absl::Time now = absl::Now();
  const size_t before = quarantine_.size();
  for (auto it = quarantine_.begin(); it != quarantine_.end();) {
    it = it->second.until <= now ? quarantine_.erase(it) : std::next(it);
  }
  bool changed = quarantine_.size() != before;
  if (options_.quarantine > absl::ZeroDuration()) {
    for (const IpAddress& ip : record.mesh_ips) {
      const absl::Duration period = record.pod ? options_.pod_quarantine : options_.quarantine;
      quarantine_[ip] = Quarantined{record.public_key, record.name, now + period};
      changed = true;
    }
    // Bounded: beyond the cap the entries that expire first go.
    while (quarantine_.size() > options_.max_quarantined) {
      quarantine_.erase(absl::c_min_element(quarantine_, [](const auto& a, const auto& b) {
        return a.second.until < b.second.until;
      }));
    }
  }
  // Written behind, before the member's record is deleted (member_writer.h).
  if (changed) writer_.SaveQuarantine(QuarantineSnapshotLocked());
}

std::vector<QuarantineEntry> Coordinator::QuarantineSnapshotLocked() const {
  std::vector<QuarantineEntry> entries;
  entries.reserve(quarantine_.size());
  for (const auto& [ip, q] : quarantine_) entries.push_back({ip, q.key, q.name, q.until});
  return entries;
}

std::vector<QuarantineEntry> Coordinator::QuarantineEntries() const {
  absl::ReaderMutexLock lock(&mu_);
  return QuarantineSnapshotLocked();
}

void Coordinator::MovedLocked(const MemberRecord& old) {
  TM_LOG_INFO("member moved: name={} key={} from mesh={}", old.name, old.public_key.Short(),
              old.mesh);
  // The addresses it leaves behind are freed like a departed member's.
  MemberRecord left = old;
  left.mesh_ips.clear();
  const MemberRecord& now = members_.at(old.public_key);
  for (const IpAddress& ip : old.mesh_ips) {
    if (!absl::c_linear_search(now.mesh_ips, ip)) left.mesh_ips.push_back(ip);
  }
  if (!left.mesh_ips.empty()) QuarantineLocked(left);
  // Its pods joined the old mesh through it: they go.
  RemovePodsOfLocked(old.public_key);
  // Its old mesh no longer has it as a peer.
  ++version_;
  coord::MapUpdate update;
  update.add_removed_peers(KeyBytes(old.public_key));
  update.set_version(version_);
  FanOut(old.mesh, nullptr, update);
  if (options_.on_member_moved) options_.on_member_moved(old.public_key);
}

void Coordinator::RemoveLocked(const PublicKey& member, absl::Status reason) {
  auto record = members_.find(member);
  if (record == members_.end()) return;
  if (record->second.pod) {
    RemovePodLocked(member);
    SendFiltersLocked();
    return;
  }
  RemovePodsOfLocked(member);
  record = members_.find(member);
  const std::string mesh = record->second.mesh;
  QuarantineLocked(record->second);
  SyncFilterLocked(&record->second, nullptr);
  members_.erase(record);
  writer_.Remove(member);
  DropLocked(member, mesh, std::move(reason));
  SendFiltersLocked();
}

size_t Coordinator::ExpireIdle(absl::Time now) {
  if (options_.member_expiry <= absl::ZeroDuration()) return 0;
  Locked lock(this);
  std::vector<PublicKey> idle;
  for (const auto& [key, record] : members_) {
    // Pods live as long as their host says (it expires with them).
    if (!record.static_endpoints.empty() || record.pod) continue;
    absl::Time seen = started_;  // Nobody is seen before the coordinator starts.
    if (auto live = live_.find(key); live != live_.end()) {
      std::shared_ptr<Subscription> sub = live->second.subscription.lock();
      if (sub != nullptr && !sub->cancelled()) continue;  // Watching now.
      seen = std::max(seen, live->second.last_seen);
    }
    if (now - seen >= options_.member_expiry) idle.push_back(key);
  }
  for (const PublicKey& key : idle) {
    TM_LOG_INFO("member expired: name={} key={} (not seen for {})", members_[key].name, key.Short(),
                absl::FormatDuration(options_.member_expiry));
    RemoveLocked(key, absl::PermissionDeniedError("expired: not seen for " +
                                                  absl::FormatDuration(options_.member_expiry)));
  }
  counters_.expired_members.fetch_add(idle.size());
  return idle.size();
}

void Coordinator::DropLocked(const PublicKey& member, const std::string& mesh,
                             absl::Status reason) {
  auto live = live_.find(member);
  if (live != live_.end()) {
    sessions_.erase(live->second.session_hash);
    if (std::shared_ptr<Subscription> sub = live->second.subscription.lock()) {
      CancelLocked(sub, std::move(reason));
    }
    live_.erase(live);
  }
  ++version_;
  coord::MapUpdate update;
  update.add_removed_peers(
      std::string(reinterpret_cast<const char*>(member.bytes.data()), kKeySize));
  update.set_version(version_);
  FanOut(mesh, nullptr, update);
  if (options_.on_member_removed) options_.on_member_removed(member);
}

absl::StatusOr<std::vector<IpAddress>> Coordinator::AddressesFor(const MeshState& mesh,
                                                                 const MemberRecord& record) const {
  // Keep the address families the Mesh has now: allocate what is missing, drop what it lost.
  std::vector<IpAddress> ips;
  for (const Prefix* cidr :
       {&mesh.spec.ipv4_cidr, mesh.spec.ipv6_cidr ? &*mesh.spec.ipv6_cidr : nullptr}) {
    if (cidr == nullptr) continue;
    std::optional<IpAddress> kept;
    for (const IpAddress& ip : record.mesh_ips) {
      if (!cidr->Contains(ip)) continue;
      bool taken = false;
      for (const auto& [key, other] : members_) {
        if (key == record.public_key) continue;
        for (const IpAddress& theirs : other.mesh_ips) taken = taken || theirs == ip;
      }
      if (!taken) kept = ip;
    }
    if (!kept) {
      absl::StatusOr<IpAddress> fresh = Allocate(*cidr, mesh.spec.name, record.public_key);
      if (!fresh.ok()) return fresh.status();
      kept = *fresh;
    }
    ips.push_back(*kept);
  }
  return ips;
}

absl::Status Coordinator::Admit(MemberRecord record) {
  if (record.public_key.IsZero()) return absl::InvalidArgumentError("spec.publicKey is required");
  Locked lock(this);
  const MeshState* mesh = MeshFor(record.mesh);
  if (mesh == nullptr || record.mesh.empty()) {
    return absl::FailedPreconditionError("spec.mesh names Mesh \"" + record.mesh +
                                         "\", which does not exist (kubectl get meshes)");
  }
  for (const auto& [key, other] : members_) {
    if (key != record.public_key && other.name == record.name) {
      return absl::AlreadyExistsError("member \"" + record.name + "\" already has another key");
    }
  }
  auto existing = members_.find(record.public_key);
  // Pod members are made and removed by the coordinator alone (AttachPod, DetachPod). A pod
  // MeshPeer it does not hold is one it detached whose removal is still on its way to the API
  // server (the informer saw the creation late): admitting it would bring the pod back and turn
  // the queued delete into a write.
  if (record.pod && existing == members_.end()) {
    return absl::FailedPreconditionError(
        "pod member \"" + record.name +
        "\" is not attached (its pod was detached or deleted); the operator deletes this "
        "MeshPeer");
  }
  // A member the coordinator removed (it left, expired or an admin removed it) whose MeshPeer's
  // deletion is still queued: the object the caller read predates that deletion. Admitting it
  // would bring the member back and turn the queued delete into a write.
  if (existing == members_.end() && writer_.RemovalPending(record.public_key)) {
    return absl::AbortedError("member \"" + record.name +
                              "\" was removed; its MeshPeer is being deleted");
  }
  // The coordinator allocates: for a member it knows, its own addresses win over what an object
  // says (a watch event may predate the status write that recorded them).
  if (existing != members_.end()) record.mesh_ips = existing->second.mesh_ips;
  if (existing != members_.end() && existing->second == record) return absl::OkStatus();
  absl::StatusOr<std::vector<IpAddress>> ips = AddressesFor(*mesh, record);
  if (!ips.ok()) return ips.status();
  // The in-memory map takes the record now; the store follows on the writer thread, which
  // retries a failed write until it lands or a newer record replaces it. The record exists at its
  // source: the write never creates it (an admin may delete it before the write runs).
  if (*ips != record.mesh_ips) {
    record.mesh_ips = *std::move(ips);
    writer_.Update(record);
  } else {
    writer_.Observe(record.public_key, &record);
  }
  std::optional<MemberRecord> old;
  if (existing != members_.end()) old = existing->second;
  members_[record.public_key] = record;
  if (record.pod) pods_by_host_[record.pod->host].insert(record.public_key);
  SyncFilterLocked(old ? &*old : nullptr, &record);
  if (old && old->mesh != record.mesh) MovedLocked(*old);
  ++version_;
  coord::MapUpdate update;
  *update.add_upsert_peers() = PeerOf(record);
  update.set_version(version_);
  FanOut(record.mesh, &record.public_key, update);
  SendFiltersLocked();
  return absl::OkStatus();
}

void Coordinator::Evict(const PublicKey& member, const std::string& why) {
  Locked lock(this);
  auto record = members_.find(member);
  if (record == members_.end()) return;
  std::optional<PublicKey> host;
  if (record->second.pod) {
    host = record->second.pod->host;
    if (auto pods = pods_by_host_.find(*host); pods != pods_by_host_.end()) {
      pods->second.erase(member);
      if (pods->second.empty()) pods_by_host_.erase(pods);
    }
  } else {
    RemovePodsOfLocked(member);
    record = members_.find(member);
  }
  const std::string mesh = record->second.mesh;
  SyncFilterLocked(&record->second, nullptr);
  members_.erase(record);
  writer_.Observe(member, nullptr);
  if (host) FanOutHostLocked(*host, nullptr, nullptr);
  DropLocked(member, mesh, absl::PermissionDeniedError("evicted: " + why));
  SendFiltersLocked();
  TM_LOG_INFO("member evicted: key={} why={}", member.Short(), why);
}

absl::StatusOr<MemberRecord> Coordinator::RemoveByAdmin(const PublicKey& member) {
  Locked lock(this);
  auto record = members_.find(member);
  if (record == members_.end()) {
    return absl::NotFoundError("key " + member.ToBase64() + " is no member's");
  }
  const MemberRecord removed = record->second;
  TM_LOG_INFO("member removed by an admin: name={} key={} mesh={}", removed.name, member.Short(),
              removed.mesh);
  counters_.admin_removals.fetch_add(1, std::memory_order_relaxed);
  absl::Status why = absl::PermissionDeniedError(
      "evicted: removed by an admin (tunnelmesh-operator remove); re-admitted with "
      "`tunnelmesh-operator readmit " +
      member.ToBase64() + "` on the coordinator's host, it may join again");
  if (options_.removed_keys != nullptr) {
    if (std::optional<RemovedKey> entry = options_.removed_keys->Find(member)) {
      why = absl::PermissionDeniedError(
          "evicted: " + std::string(options_.removed_keys->Refusal(*entry).message()));
    }
  }
  RemoveLocked(member, std::move(why));
  return removed;
}

std::vector<PublicKey> Coordinator::MembersOf(const std::string& mesh) const {
  absl::ReaderMutexLock lock(&mu_);
  std::vector<PublicKey> keys;
  for (const auto& [key, m] : members_) {
    if (m.mesh == mesh) keys.push_back(key);
  }
  return keys;
}

std::vector<MemberStatus> Coordinator::Members() const {
  absl::ReaderMutexLock lock(&mu_);
  std::vector<MemberStatus> out;
  for (const auto& [key, m] : members_) {
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
  Locked lock(this);
  policies_ = std::move(policies);
  for (auto& [mesh, engine] : engines_) engine.SetPolicies(PoliciesOf(mesh));
  SendFiltersLocked();
}

size_t Coordinator::policy_count() const {
  absl::ReaderMutexLock lock(&mu_);
  return policies_.size();
}

bool Coordinator::IsMember(const PublicKey& key) const {
  absl::ReaderMutexLock lock(&mu_);
  return members_.count(key) > 0;
}

std::optional<std::string> Coordinator::MeshOf(const PublicKey& key) const {
  absl::ReaderMutexLock lock(&mu_);
  auto it = members_.find(key);
  if (it == members_.end()) return std::nullopt;
  return it->second.mesh;
}

std::vector<MemberCount> Coordinator::MemberCounts() const {
  std::map<std::pair<std::string, int>, MemberCount> counts;
  absl::ReaderMutexLock lock(&mu_);
  for (const auto& [key, m] : members_) {
    MemberCount& c = counts[{m.mesh, static_cast<int>(m.kind)}];
    c.mesh = m.mesh;
    c.kind = m.kind;
    ++c.members;
    auto live = live_.find(key);
    if (live == live_.end()) continue;
    std::shared_ptr<Subscription> sub = live->second.subscription.lock();
    if (sub != nullptr && !sub->cancelled()) ++c.watching;
  }
  std::vector<MemberCount> out;
  for (auto& [k, c] : counts) out.push_back(std::move(c));
  return out;
}

size_t Coordinator::member_count() const {
  absl::ReaderMutexLock lock(&mu_);
  return members_.size();
}

std::vector<MeshZoneInput> Coordinator::DnsZones() const {
  absl::ReaderMutexLock lock(&mu_);
  std::vector<MeshZoneInput> zones;
  std::map<std::string, size_t> index;  // Mesh name -> its zone in `zones`.
  for (const auto& [name, mesh] : meshes_) {
    MeshZoneInput zone;
    zone.domain = mesh.spec.domain;
    zone.ttl = mesh.spec.dns_ttl_seconds;
    zone.negative_ttl = mesh.spec.dns_negative_ttl_seconds;
    zone.version = version_;
    zone.ranges.push_back(mesh.spec.ipv4_cidr);
    if (mesh.spec.ipv6_cidr) zone.ranges.push_back(*mesh.spec.ipv6_cidr);
    index[name] = zones.size();
    zones.push_back(std::move(zone));
  }
  for (const auto& [key, record] : members_) {
    auto it = index.find(record.mesh);
    if (it == index.end()) continue;
    MeshZoneInput::Member member{record.name, record.aliases, {}};
    for (const IpAddress& ip : record.mesh_ips) member.addresses.push_back(ip.ToString());
    zones[it->second].members.push_back(std::move(member));
  }
  for (MeshZoneInput& zone : zones) {
    absl::c_sort(zone.members, [](const MeshZoneInput::Member& a, const MeshZoneInput::Member& b) {
      return a.name < b.name;
    });
  }
  return zones;
}

}  // namespace tunnelmesh
