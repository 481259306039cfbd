#include "node-agent/exit/exit_selector.h"

#include <algorithm>
#include <utility>

namespace tunnelmesh {

void ExitSelector::SetCandidates(std::vector<PublicKey> keys) {
  order_ = std::move(keys);
  std::erase_if(states_, [this](const auto& entry) {
    return std::find(order_.begin(), order_.end(), entry.first) == order_.end();
  });
  for (const PublicKey& key : order_) states_.try_emplace(key);
}

void ExitSelector::SetInMap(const PublicKey& key, bool in_map) {
  auto it = states_.find(key);
  if (it != states_.end()) it->second.in_map = in_map;
}

void ExitSelector::SetPresence(const PublicKey& key, bool online, absl::Time now) {
  auto it = states_.find(key);
  if (it == states_.end()) return;
  State& state = it->second;
  const bool came_back = online && state.presence_known && !state.online;
  state.presence_known = true;
  state.online = online;
  // A restarted agent is worth another try, whatever the data plane found before.
  if (came_back) {
    state.dead_since = absl::InfinitePast();
    state.unanswered_since = absl::InfinitePast();
    state.back_since = now;
  }
}

void ExitSelector::Sample(const PublicKey& key, const ExitSample& sample, absl::Time now) {
  auto it = states_.find(key);
  if (it == states_.end()) return;
  State& state = it->second;
  if (!state.sampled) {
    state.sampled = true;
    state.last = sample;
    return;
  }
  const bool heard = sample.rx_packets > state.last.rx_packets ||
                     sample.handshakes_completed > state.last.handshakes_completed;
  const bool answered = heard || sample.direct_path;
  const bool sent = sample.tx_packets > state.last.tx_packets ||
                    sample.handshakes_initiated > state.last.handshakes_initiated;
  state.last = sample;
  if (heard) {
    state.silent_since = absl::InfinitePast();
  } else if (sent && state.silent_since == absl::InfinitePast()) {
    state.silent_since = now;
  }
  if (answered) {
    state.unanswered_since = absl::InfinitePast();
    state.dead_since = absl::InfinitePast();
    state.back_since = absl::InfinitePast();
  } else if (sent && state.unanswered_since == absl::InfinitePast()) {
    state.unanswered_since = now;
  }
}

bool ExitSelector::NeedsHandshake(const PublicKey& key, absl::Time now) const {
  auto it = states_.find(key);
  return it != states_.end() && it->second.silent_since != absl::InfinitePast() &&
         now - it->second.silent_since >= kExitRehandshakeAfter;
}

std::string ExitSelector::Unhealthy(const State& state, absl::Time now) const {
  if (!state.in_map) return "not a peer in the network map";
  if (state.presence_known && !state.online) return "its agent is offline (coordinator)";
  if (state.back_since != absl::InfinitePast() && now - state.back_since < kExitSettle) {
    return "its agent restarted " + absl::FormatDuration(now - state.back_since) + " ago";
  }
  if (state.dead_since != absl::InfinitePast() && now - state.dead_since < kExitRetryAfter) {
    return "did not answer for " + absl::FormatDuration(kExitAnswerTimeout) +
           " while traffic was sent to it";
  }
  return "";
}

bool ExitSelector::Update(absl::Time now) {
  for (auto& [key, state] : states_) {
    if (state.unanswered_since != absl::InfinitePast() &&
        now - state.unanswered_since >= kExitAnswerTimeout) {
      state.dead_since = now;
      state.unanswered_since = absl::InfinitePast();
    }
    if (state.dead_since != absl::InfinitePast() && now - state.dead_since >= kExitRetryAfter) {
      state.dead_since = absl::InfinitePast();
    }
  }
  std::optional<PublicKey> next;
  for (const PublicKey& key : order_) {
    if (Unhealthy(states_.at(key), now).empty()) {
      next = key;
      break;
    }
  }
  if (next == active_) return false;
  if (active_.has_value() || next.has_value()) ++switches_;
  active_ = next;
  return true;
}

std::vector<ExitCandidateView> ExitSelector::View(absl::Time now) const {
  std::vector<ExitCandidateView> views;
  for (const PublicKey& key : order_) {
    ExitCandidateView view;
    view.key = key;
    view.reason = Unhealthy(states_.at(key), now);
    view.healthy = view.reason.empty();
    view.active = active_ == key;
    views.push_back(std::move(view));
  }
  return views;
}

}  // namespace tunnelmesh
