#include "node-agent/exit/exit_controller.h"

#include <algorithm>
#include <utility>

#include "lib/base/log.h"

namespace tunnelmesh {

ExitController::ExitController(std::string interface_name, ExitOptions options,
                               std::unique_ptr<CommandRunner> runner, const std::string& state_dir,
                               PeerTable* peers, Sampler sampler, LanLister lan)
    : interface_name_(std::move(interface_name)),
      options_(std::move(options)),
      runner_(std::move(runner)),
      peers_(peers),
      sampler_(std::move(sampler)),
      lan_(std::move(lan)),
      client_(interface_name_, runner_.get(), state_dir + "/" + interface_name_ + ".exit-client"),
      forwarder_(interface_name_, runner_.get(), state_dir + "/" + interface_name_ + ".exit") {}

absl::Status ExitController::Start() {
  if (absl::Status s = client_.PurgeStale(); !s.ok()) return s;
  return forwarder_.PurgeStale();
}

void ExitController::SetMesh(std::vector<Prefix> mesh_cidrs, bool ipv6) {
  mesh_cidrs_ = std::move(mesh_cidrs);
  ipv6_ = ipv6;
}

void ExitController::SetServiceAddresses(std::vector<IpAddress> addresses, absl::Time now) {
  services_ = std::move(addresses);
  Reconcile(now);
}

void ExitController::ApplyConfig(const coordinator::v1::ExitConfig& config, absl::Time now) {
  std::vector<PublicKey> keys;
  for (const std::string& bytes : config.use_public_keys()) {
    const PublicKey key = PublicKeyFromBytes(bytes);
    if (!key.IsZero()) keys.push_back(key);
  }
  const std::vector<PublicKey> before = selector_.candidates();
  selector_.SetCandidates(keys);
  for (const PublicKey& key : keys) {
    selector_.SetInMap(key, peers_->Find(key) != nullptr);
    auto presence = presence_.find(key);
    const bool known = std::find(before.begin(), before.end(), key) != before.end();
    if (!known && presence != presence_.end()) {
      selector_.SetPresence(key, presence->second, now);
    }
  }
  std::vector<std::pair<std::string, std::string>> refused;
  for (const auto& r : config.refused()) refused.emplace_back(r.name(), r.reason());
  if (refused != refused_) {
    for (const auto& [name, reason] : refused) {
      TM_LOG_WARN("exit peer {} may not be used: {}", name, reason);
    }
  }
  refused_ = std::move(refused);
  std::vector<Prefix> clients;
  for (const std::string& text : config.client_prefixes()) {
    absl::StatusOr<Prefix> prefix = Prefix::Parse(text);
    if (prefix.ok()) clients.push_back(*prefix);
  }
  client_prefixes_ = std::move(clients);
  Reconcile(now);
}

void ExitController::SetPresence(const PublicKey& key, bool online, absl::Time now) {
  presence_[key] = online;
  const std::vector<PublicKey>& candidates = selector_.candidates();
  if (std::find(candidates.begin(), candidates.end(), key) == candidates.end()) return;
  selector_.SetPresence(key, online, now);
  Reconcile(now);
}

void ExitController::OnPeersChanged(absl::Time now) {
  std::erase_if(presence_,
                [this](const auto& entry) { return peers_->Find(entry.first) == nullptr; });
  for (const PublicKey& key : selector_.candidates()) {
    selector_.SetInMap(key, peers_->Find(key) != nullptr);
  }
  Reconcile(now);
}

void ExitController::Tick(absl::Time now) {
  for (const PublicKey& key : selector_.candidates()) selector_.Sample(key, sampler_(key), now);
  Reconcile(now);
  const std::optional<PublicKey> active = selector_.active();
  if (active && on_switch_ && selector_.NeedsHandshake(*active, now)) on_switch_(*active);
}

void ExitController::SetStaticFullTunnel(bool on, absl::Time now) {
  static_full_tunnel_ = on;
  Reconcile(now);
}

std::string ExitController::NameOf(const PublicKey& key) const {
  const PeerInfo* info = peers_->Find(key);
  return info != nullptr && !info->name.empty() ? info->name : key.Short();
}

void ExitController::LogFailure(const std::string& what, const absl::Status& status) {
  const std::string message = what + ": " + std::string(status.message());
  if (message != last_error_) TM_LOG_ERROR("{}", message);
  last_error_ = message;
}

void ExitController::Reconcile(absl::Time now) {
  if (stopped_) return;
  const std::optional<PublicKey> before = selector_.active();
  if (selector_.Update(now)) {
    const std::optional<PublicKey>& active = selector_.active();
    std::string why;
    if (before.has_value()) {
      for (const ExitCandidateView& view : selector_.View(now)) {
        if (view.key == *before && !view.healthy) why = " (" + view.reason + ")";
      }
    }
    if (active.has_value() && on_switch_) on_switch_(*active);
    if (active.has_value()) {
      TM_LOG_INFO("exit: internet traffic goes through {}{}", NameOf(*active),
                  before ? ", instead of " + NameOf(*before) + why : "");
    } else if (!selector_.candidates().empty()) {
      TM_LOG_WARN(
          "exit: no healthy exit peer{}: internet traffic is {}", why,
          options_.fail_open ? "sent directly (--exit-fail-open)" : "dropped (fail-closed)");
    } else if (before.has_value()) {
      TM_LOG_INFO("exit: no exit peer in use: internet traffic goes out directly");
    }
  }
  (void)peers_->SetExitPeer(selector_.active());

  ClientRoutes routes;
  const bool wants_exit = !selector_.candidates().empty() || options_.requested;
  routes.route_all = static_full_tunnel_ ||
                     (wants_exit && (selector_.active().has_value() || !options_.fail_open));
  if (routes.route_all) {
    routes.bypass.insert(services_.begin(), services_.end());
    for (const auto& [key, info] : peers_->peers()) {
      for (const Endpoint& e : info.candidates) routes.bypass.insert(e.address());
    }
    if (options_.allow_lan && lan_) routes.lan = lan_();
    routes.ipv6 = ipv6_;
    routes.dns = options_.dns;
    routes.mesh_cidrs = mesh_cidrs_;
  }
  absl::Status client = client_.Apply(routes);
  if (!client.ok()) LogFailure("exit routing", client);
  absl::Status exit = forwarder_.Apply(client_prefixes_, mesh_cidrs_);
  if (!exit.ok()) LogFailure("exit forwarding", exit);
  if (client.ok() && exit.ok()) last_error_.clear();
}

void ExitController::Stop() {
  if (stopped_) return;
  stopped_ = true;
  if (absl::Status s = client_.Remove(); !s.ok()) {
    TM_LOG_WARN("removing the exit routing: {}", std::string(s.message()));
  }
  if (absl::Status s = forwarder_.Remove(); !s.ok()) {
    TM_LOG_WARN("removing the exit forwarding: {}", std::string(s.message()));
  }
}

nlohmann::json ExitController::Status(absl::Time now) const {
  nlohmann::json out;
  nlohmann::json candidates = nlohmann::json::array();
  for (const ExitCandidateView& view : selector_.View(now)) {
    candidates.push_back({{"name", NameOf(view.key)},
                          {"public_key", view.key.ToBase64()},
                          {"healthy", view.healthy},
                          {"active", view.active},
                          {"reason", view.reason}});
  }
  out["peers"] = std::move(candidates);
  out["using"] = selector_.active() ? nlohmann::json(NameOf(*selector_.active())) : nullptr;
  std::string state;
  if (static_full_tunnel_) {
    state = "full tunnel (AllowedIPs 0.0.0.0/0 in the config file)";
  } else if (selector_.active()) {
    state = "using " + NameOf(*selector_.active());
  } else if (!selector_.candidates().empty() || options_.requested) {
    state = options_.fail_open ? "no healthy exit: internet traffic goes out directly (fail-open)"
                               : "no healthy exit: internet traffic is dropped (fail-closed)";
  } else {
    state = "none";
  }
  out["state"] = state;
  out["routing"] = client_.applied().route_all;
  nlohmann::json refused = nlohmann::json::array();
  for (const auto& [name, reason] : refused_) {
    refused.push_back({{"name", name}, {"reason", reason}});
  }
  out["refused"] = std::move(refused);
  out["allow_lan"] = options_.allow_lan;
  out["fail_open"] = options_.fail_open;
  out["dns"] = options_.dns ? nlohmann::json(options_.dns->ToString()) : nullptr;
  nlohmann::json serving = nlohmann::json::array();
  for (const Prefix& p : client_prefixes_) serving.push_back(p.ToString());
  out["serving"] = std::move(serving);
  out["forwarding"] = forwarder_.active();
  out["switches"] = selector_.switches();
  if (!last_error_.empty()) out["error"] = last_error_;
  return out;
}

}  // namespace tunnelmesh
