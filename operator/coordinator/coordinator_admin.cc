// The coordinator's admin-facing steps that Register and Watch call out to: refusing keys an admin
// removed, recording refused registrations, and noticing two agents that share one key (each
// takes the member's watch from the other: the coordinator warns, the replaced agent is told why).
#include <string>

#include "lib/base/log.h"
#include "operator/coordinator/coordinator.h"

namespace tunnelmesh {

absl::Status Coordinator::RemovedByAdminLocked(const PublicKey& key) {
  if (options_.removed_keys == nullptr) return absl::OkStatus();
  std::optional<RemovedKey> entry = options_.removed_keys->Find(key);
  if (!entry) return absl::OkStatus();
  counters_.refused_removed_keys.fetch_add(1, std::memory_order_relaxed);
  return options_.removed_keys->Refusal(*entry);
}

absl::Status Coordinator::WatchTakenOverLocked(const PublicKey& member, Live& live,
                                               const std::string& source) {
  const absl::Time now = Now();
  counters_.watch_takeovers.fetch_add(1, std::memory_order_relaxed);
  // An agent that reconnects before the coordinator noticed its old stream broke takes over its
  // own watch once in a while; only takeovers that keep coming are a second agent.
  if (now - live.last_takeover > kTakeoverEpisode) {
    live.takeovers = 0;
    live.takeover_warned = false;
  }
  live.last_takeover = now;
  ++live.takeovers;
  const std::string from = source.empty() ? "another address" : source;
  if (live.takeovers >= kTakeoversBeforeWarning && !live.takeover_warned) {
    live.takeover_warned = true;
    counters_.duplicate_key_warnings.fetch_add(1, std::memory_order_relaxed);
    auto record = members_.find(member);
    TM_LOG_WARN(
        "member {} (key {}) is registered from two places at once: {} and {} keep taking its "
        "watch from each other ({} times within {}). Two agents use one node key (a copied state "
        "dir, or a second agent on the same --state-dir): stop one, or give it its own "
        "--state-dir so that it gets its own key",
        record != members_.end() ? record->second.name : std::string("?"), member.Short(),
        live.watch_source.empty() ? "another address" : live.watch_source, from, live.takeovers,
        absl::FormatDuration(kTakeoverEpisode));
  }
  return absl::AbortedError("another agent registered with this member's node key (from " + from +
                            ") and took over its watch");
}

void Coordinator::NoteRefusedJoin(const coord::RegisterRequest& request, const std::string& peer,
                                  const std::string& source_key, const absl::Status& refusal) {
  // A store that cannot keep up is the coordinator's trouble, not a refusal of the member.
  if (refusal.ok() || refusal.code() == absl::StatusCode::kUnavailable) return;
  RefusedJoin entry;
  entry.time = Now();
  entry.source = peer;
  PublicKey key;
  const bool has_key = request.public_key().size() == kKeySize;
  if (has_key) std::memcpy(key.bytes.data(), request.public_key().data(), kKeySize);
  entry.key = has_key ? key.Short() : std::string(1, '-');
  entry.name = PrintableText(request.name());
  entry.mesh = PrintableText(request.mesh());
  entry.code = refusal.code();
  entry.reason = PrintableText(std::string(refusal.message()), 512);
  refused_joins_.Record(std::move(entry), source_key);
}

}  // namespace tunnelmesh
