// The Coordinator's record of how each member reaches its peers (declared in coordinator.h): the
// per-peer paths agents report with their endpoints, and a short log of the changes between
// reports, which the operator turns into MeshPeer status.peerPaths and PathChanged Events. Runs
// under mu_ and does no I/O; memory is bounded by kMaxPeerPaths and kKeptPathChanges per member.
#include <string>

#include "operator/coordinator/coordinator.h"

namespace tunnelmesh {

const char* PathKindWord(coord::PathKind path) {
  switch (path) {
    case coord::PATH_KIND_DIRECT:
      return "direct";
    case coord::PATH_KIND_SSH:
      return "ssh";
    case coord::PATH_KIND_RELAY:
      return "relay";
    default:
      return "none";
  }
}

void Coordinator::SetPeerPathsLocked(const MemberRecord& record, Live& live,
                                     const std::vector<PeerPathReport>& reported) {
  std::map<std::string, coord::PathKind> now;
  for (const PeerPathReport& p : reported) {
    auto peer = members_.find(p.peer);
    if (peer == members_.end() || peer->second.mesh != record.mesh ||
        peer->second.public_key == record.public_key) {
      continue;
    }
    now[peer->second.name] = p.path;
  }
  const absl::Time at = absl::Now();
  for (const auto& [name, path] : now) {
    auto old = live.peer_paths.find(name);
    // A peer's first path is not a change, nor is one that returns after it was not reported.
    if (old == live.peer_paths.end() || old->second == path) continue;
    live.path_changes.push_back(PathChange{++path_change_seq_, name, old->second, path, at});
    if (live.path_changes.size() > kKeptPathChanges) {
      live.dropped_change_seq = live.path_changes.front().seq;
      live.path_changes.pop_front();
    }
  }
  live.peer_paths = std::move(now);
}

MemberPaths Coordinator::PathsOf(const PublicKey& member, size_t limit, uint64_t after) const {
  absl::ReaderMutexLock lock(&mu_);
  MemberPaths out;
  auto live = live_.find(member);
  if (live == live_.end()) return out;
  out.total = live->second.peer_paths.size();
  for (const auto& [name, path] : live->second.peer_paths) {
    if (out.first.size() >= limit) break;
    out.first.emplace_back(name, path);
  }
  const std::deque<PathChange>& changes = live->second.path_changes;
  for (const PathChange& c : changes) {
    if (c.seq > after) out.changes.push_back(c);
  }
  out.changes_lost = live->second.dropped_change_seq > after;
  return out;
}

}  // namespace tunnelmesh
