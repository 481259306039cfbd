#include "operator/coordinator/admin_requests.h"

#include <optional>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_join.h"
#include "nlohmann/json.hpp"
#include "proto/member_kind.h"

namespace tunnelmesh {
namespace {

// A key prefix must be this long: shorter ones match too much to remove anything by.
constexpr size_t kMinKeyPrefix = 4;

std::string Error(const absl::Status& status) {
  return nlohmann::json({{"error", std::string(status.message())},
                         {"code", absl::StatusCodeToString(status.code())}})
      .dump();
}

// "AbCdEfGh..." as `members` prints it is a prefix too.
std::string WithoutEllipsis(std::string text) {
  if (absl::EndsWith(text, "...")) text.resize(text.size() - 3);
  return text;
}

// Which of `candidates` (name, key) `query` means: the name, the whole key, or a unique prefix of
// the key. `what` names the list in errors.
struct Candidate {
  std::string name;
  PublicKey key;
};
absl::StatusOr<PublicKey> Resolve(const std::string& query,
                                  const std::vector<Candidate>& candidates, const std::string& what,
                                  const std::string& lister) {
  for (const Candidate& c : candidates) {
    if (!c.name.empty() && c.name == query) return c.key;
  }
  if (absl::StatusOr<PublicKey> key = PublicKey::FromBase64(query); key.ok()) return *key;
  const std::string prefix = WithoutEllipsis(query);
  if (prefix.size() >= kMinKeyPrefix) {
    std::vector<const Candidate*> matches;
    for (const Candidate& c : candidates) {
      if (absl::StartsWith(c.key.ToBase64(), prefix)) matches.push_back(&c);
    }
    if (matches.size() == 1) return matches[0]->key;
    if (matches.size() > 1) {
      std::vector<std::string> names;
      for (const Candidate* c : matches) names.push_back(c->key.ToBase64());
      return absl::InvalidArgumentError("\"" + query + "\" is the start of " +
                                        std::to_string(matches.size()) + " keys (" +
                                        absl::StrJoin(names, ", ") + "): give more of it");
    }
  }
  return absl::NotFoundError("no " + what + " is named \"" + query + "\" or has a key starting " +
                             "with it (" + lister + " lists them)");
}

}  // namespace

std::string AdminRequests::Handle(std::string_view text) {
  if (text.size() > kMaxAdminRequest) {
    return Error(absl::InvalidArgumentError("request longer than 4096 bytes"));
  }
  nlohmann::json request = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (request.is_discarded() || !request.is_object() || !request.contains("op") ||
      !request["op"].is_string()) {
    return Error(absl::InvalidArgumentError(
        "not an admin request: send one JSON object with \"op\" (members, remove, readmit, "
        "removed, refused) per line"));
  }
  const std::string op = request["op"].get<std::string>();
  auto argument = [&request](const char* field) -> std::optional<std::string> {
    if (!request.contains(field) || !request[field].is_string()) return std::nullopt;
    return request[field].get<std::string>();
  };

  if (op == "members") {
    const absl::Time now = Now();
    nlohmann::json list = nlohmann::json::array();
    for (const MemberStatus& m : coordinator_->Members()) {
      nlohmann::json ips = nlohmann::json::array();
      for (const IpAddress& ip : m.record.mesh_ips) ips.push_back(ip.ToString());
      nlohmann::json last_seen = nullptr;
      if (m.connected) {
        last_seen = UtcTime(now);
      } else if (m.last_seen != absl::InfinitePast()) {
        last_seen = UtcTime(m.last_seen);
      }
      list.push_back({{"name", m.record.name},
                      {"mesh", m.record.mesh},
                      {"kind", MemberKindName(m.record.kind)},
                      {"mesh_ips", ips},
                      {"online", m.connected},
                      {"last_seen", last_seen},
                      {"public_key", m.record.public_key.ToBase64()},
                      {"endpoints", m.endpoints},
                      {"static", !m.record.static_endpoints.empty()}});
    }
    return nlohmann::json({{"members", list}}).dump();
  }

  if (op == "refused") {
    nlohmann::json list = nlohmann::json::array();
    for (const RefusedJoin& r : coordinator_->refused_joins().Recent()) {
      list.push_back({{"time", UtcTime(r.time)},
                      {"source", r.source},
                      {"key", r.key},
                      {"name", r.name},
                      {"mesh", r.mesh},
                      {"code", absl::StatusCodeToString(r.code)},
                      {"reason", r.reason}});
    }
    return nlohmann::json({{"refused", list},
                           {"total", coordinator_->refused_joins().total()},
                           {"capacity", coordinator_->refused_joins().capacity()}})
        .dump();
  }

  if (op == "removed") {
    nlohmann::json list = nlohmann::json::array();
    for (const RemovedKey& r : removed_->List()) {
      list.push_back({{"public_key", r.key.ToBase64()},
                      {"name", r.name},
                      {"mesh", r.mesh},
                      {"removed_at", UtcTime(r.removed_at)}});
    }
    return nlohmann::json({{"removed", list}}).dump();
  }

  if (op == "remove") {
    std::optional<std::string> query = argument("member");
    if (!query || query->empty()) {
      return Error(absl::InvalidArgumentError("remove needs \"member\": a name or a key"));
    }
    std::vector<MemberStatus> members = coordinator_->Members();
    std::vector<Candidate> candidates;
    for (const MemberStatus& m : members) {
      candidates.push_back({m.record.name, m.record.public_key});
    }
    absl::StatusOr<PublicKey> key =
        Resolve(*query, candidates, "member", "tunnelmesh-operator members");
    if (!key.ok()) return Error(key.status());
    RemovedKey entry;
    entry.key = *key;
    entry.removed_at = Now();
    bool was_member = false;
    for (const MemberStatus& m : members) {
      if (m.record.public_key != *key) continue;
      entry.name = m.record.name;
      entry.mesh = m.record.mesh;
      was_member = true;
    }
    // Refused first, then removed: a registration between the two cannot bring it back.
    if (absl::Status s = removed_->Add(entry); !s.ok()) return Error(s);
    absl::StatusOr<MemberRecord> record = coordinator_->RemoveByAdmin(*key);
    if (record.ok()) {
      was_member = true;
    } else if (!absl::IsNotFound(record.status())) {
      return Error(record.status());
    }
    return nlohmann::json({{"removed",
                            {{"public_key", key->ToBase64()},
                             {"name", entry.name},
                             {"mesh", entry.mesh},
                             {"was_member", was_member}}}})
        .dump();
  }

  if (op == "readmit") {
    std::optional<std::string> query = argument("key");
    if (!query || query->empty()) {
      return Error(absl::InvalidArgumentError("readmit needs \"key\": a removed key"));
    }
    std::vector<Candidate> candidates;
    for (const RemovedKey& r : removed_->List()) candidates.push_back({r.name, r.key});
    absl::StatusOr<PublicKey> key =
        Resolve(*query, candidates, "removed key", "tunnelmesh-operator readmit --list");
    if (!key.ok()) return Error(key.status());
    absl::StatusOr<RemovedKey> readmitted = removed_->Readmit(*key);
    if (!readmitted.ok()) return Error(readmitted.status());
    return nlohmann::json({{"readmitted",
                            {{"public_key", key->ToBase64()},
                             {"name", readmitted->name},
                             {"mesh", readmitted->mesh}}}})
        .dump();
  }

  return Error(absl::InvalidArgumentError("unknown op \"" + PrintableText(op) +
                                          "\": members, remove, readmit, removed or refused"));
}

}  // namespace tunnelmesh
