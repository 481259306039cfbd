#include "operator/coordinator/state_store.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "lib/base/file.h"
#include "lib/base/log.h"
#include "nlohmann/json.hpp"
#include "proto/member_kind.h"

namespace tunnelmesh {
namespace {

constexpr char kMembersFile[] = "members.json";
constexpr char kQuarantineFile[] = "quarantine.json";

// "kind" is a name ("Node", "Pod", "External"), or in files from before names a number (the
// coordinator API's enum value); 0 (no kind) is External.
absl::StatusOr<coord::MemberKind> KindOf(const nlohmann::json& member) {
  const nlohmann::json kind = member.value("kind", nlohmann::json());
  if (kind.is_null()) return coord::MEMBER_KIND_EXTERNAL;
  if (kind.is_number_integer()) {
    const int value = kind.get<int>();
    if (value == coord::MEMBER_KIND_UNSPECIFIED) return coord::MEMBER_KIND_EXTERNAL;
    if (coord::MemberKind_IsValid(value)) return static_cast<coord::MemberKind>(value);
  } else if (kind.is_string()) {
    if (std::optional<coord::MemberKind> named = MemberKindFromName(kind.get<std::string>())) {
      return *named;
    }
  }
  return absl::DataLossError("kind " + kind.dump() + " is not Node, Pod or External");
}

}  // namespace

void TrimQuarantine(std::vector<QuarantineEntry>* entries, absl::Time now, size_t cap) {
  std::erase_if(*entries, [now](const QuarantineEntry& e) { return e.until <= now; });
  if (entries->size() <= cap) return;
  // Latest first, so that the cut keeps the newest.
  std::stable_sort(
      entries->begin(), entries->end(),
      [](const QuarantineEntry& a, const QuarantineEntry& b) { return a.until > b.until; });
  entries->resize(cap);
}

std::string EncodeQuarantine(std::vector<QuarantineEntry> entries, absl::Time now) {
  TrimQuarantine(&entries, now);
  nlohmann::json list = nlohmann::json::array();
  for (const QuarantineEntry& e : entries) {
    list.push_back({{"ip", e.ip.ToString()},
                    {"key", e.key.ToBase64()},
                    {"name", e.name},
                    {"until", absl::ToUnixSeconds(e.until)}});
  }
  return nlohmann::json({{"quarantine", list}}).dump(1) + "\n";
}

absl::StatusOr<std::vector<QuarantineEntry>> DecodeQuarantine(std::string_view text,
                                                              const std::string& where,
                                                              absl::Time now) {
  auto bad = [&where](const std::string& why) {
    return absl::DataLossError(where + ": " + why +
                               "; restore it from a backup, or remove it to forget which "
                               "addresses and names of departed members are quarantined");
  };
  nlohmann::json doc = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (doc.is_discarded() || !doc.is_object() || !doc.contains("quarantine") ||
      !doc["quarantine"].is_array()) {
    return bad("not a quarantine list");
  }
  std::vector<QuarantineEntry> entries;
  for (const nlohmann::json& e : doc["quarantine"]) {
    if (!e.is_object() || !e.contains("ip") || !e["ip"].is_string() || !e.contains("key") ||
        !e["key"].is_string() || !e.contains("until") || !e["until"].is_number_integer()) {
      return bad("an entry lacks \"ip\", \"key\" or \"until\"");
    }
    absl::StatusOr<IpAddress> ip = IpAddress::Parse(e["ip"].get<std::string>());
    absl::StatusOr<PublicKey> key = PublicKey::FromBase64(e["key"].get<std::string>());
    if (!ip.ok() || !key.ok()) return bad("an entry has a bad \"ip\" or \"key\"");
    entries.push_back(QuarantineEntry{*ip, *key, e.value("name", std::string()),
                                      absl::FromUnixSeconds(e["until"].get<int64_t>())});
  }
  TrimQuarantine(&entries, now);
  return entries;
}

absl::StatusOr<std::unique_ptr<StateStore>> StateStore::Open(const std::string& dir) {
  // The state directory holds keys (tls/, relay.key, preshared-keys.json): owner only when we
  // create it (an existing directory keeps the mode its admin gave it).
  if (absl::Status s = CreatePrivateDirectories(dir); !s.ok()) {
    return absl::FailedPreconditionError("creating --state-dir " + dir + ": " +
                                         std::string(s.message()));
  }
  std::unique_ptr<StateStore> store(new StateStore(dir));
  const std::string quarantine_path = dir + "/" + kQuarantineFile;
  absl::StatusOr<std::string> quarantine = ReadFile(quarantine_path);
  if (quarantine.ok()) {
    absl::StatusOr<std::vector<QuarantineEntry>> entries =
        DecodeQuarantine(*quarantine, quarantine_path, absl::Now());
    if (!entries.ok()) return entries.status();
    store->quarantine_ = *std::move(entries);
  } else if (!absl::IsNotFound(quarantine.status())) {
    return quarantine.status();
  }
  const std::string path = dir + "/" + kMembersFile;
  absl::StatusOr<std::string> text = ReadFile(path);
  if (absl::IsNotFound(text.status())) return store;  // First start.
  if (!text.ok()) return text.status();
  nlohmann::json doc = nlohmann::json::parse(*text, nullptr, /*allow_exceptions=*/false);
  if (doc.is_discarded() || !doc.is_object() || !doc.contains("members") ||
      !doc["members"].is_array()) {
    return absl::DataLossError(path +
                               " is not a valid state file; move it away to start afresh "
                               "(members will get new addresses)");
  }
  for (const nlohmann::json& m : doc["members"]) {
    if (!m.is_object() || !m.contains("public_key") || !m["public_key"].is_string()) {
      return absl::DataLossError(path + ": a member record has no public_key");
    }
    absl::StatusOr<PublicKey> key = PublicKey::FromBase64(m["public_key"].get<std::string>());
    if (!key.ok()) return absl::DataLossError(path + ": " + std::string(key.status().message()));
    MemberRecord record;
    record.public_key = *key;
    record.mesh = m.value("mesh", std::string());
    record.name = m.value("name", std::string());
    absl::StatusOr<coord::MemberKind> kind = KindOf(m);
    if (!kind.ok()) {
      return absl::DataLossError(path + ": member " + record.name + ": " +
                                 std::string(kind.status().message()));
    }
    record.kind = *kind;
    for (const auto& ip : m.value("mesh_ips", nlohmann::json::array())) {
      if (!ip.is_string()) continue;
      absl::StatusOr<IpAddress> parsed = IpAddress::Parse(ip.get<std::string>());
      if (!parsed.ok()) return absl::DataLossError(path + ": bad mesh IP in record " + record.name);
      record.mesh_ips.push_back(*parsed);
    }
    if (m.contains("labels") && m["labels"].is_object()) {
      for (const auto& [k, v] : m["labels"].items()) {
        if (v.is_string()) record.labels[k] = v.get<std::string>();
      }
    }
    for (const auto& alias : m.value("aliases", nlohmann::json::array())) {
      if (alias.is_string()) record.aliases.push_back(alias.get<std::string>());
    }
    record.exit_peer = m.value("exit_peer", false);
    for (const auto& exit : m.value("use_exit_peers", nlohmann::json::array())) {
      if (exit.is_string()) record.use_exit_peers.push_back(exit.get<std::string>());
    }
    if (const std::string ssh = m.value("ssh_key", std::string()); !ssh.empty()) {
      absl::StatusOr<PublicKey> ssh_key = PublicKey::FromBase64(ssh);
      if (!ssh_key.ok())
        return absl::DataLossError(path + ": bad ssh_key in record " + record.name);
      record.ssh_key = *ssh_key;
      record.ssh_port = static_cast<uint16_t>(m.value("ssh_port", 0u) & 0xffffu);
    }
    if (m.contains("pod")) {
      absl::StatusOr<PodIdentity> pod =
          ParsePodIdentity(m["pod"], path + ": " + record.name + ".pod");
      if (!pod.ok()) return absl::DataLossError(pod.status().message());
      record.pod = *std::move(pod);
    }
    store->members_[record.public_key] = std::move(record);
  }
  return store;
}

absl::Status StateStore::Put(const MemberRecord& record) {
  members_[record.public_key] = record;
  return Save();
}

absl::Status StateStore::Remove(const PublicKey& key) {
  members_.erase(key);
  return Save();
}

void StateStore::Observe(const PublicKey& key, const MemberRecord* record) {
  if (record == nullptr) {
    members_.erase(key);
  } else {
    members_[key] = *record;
  }
  if (absl::Status s = Save(); !s.ok()) {
    TM_LOG_ERROR("saving members: {}", std::string(s.message()));
  }
}

absl::Status StateStore::SaveQuarantine(const std::vector<QuarantineEntry>& entries) {
  return WriteFileAtomically(dir_ + "/" + kQuarantineFile, EncodeQuarantine(entries, absl::Now()),
                             0600);
}

absl::Status StateStore::Save() const {
  nlohmann::json members = nlohmann::json::array();
  for (const auto& [key, m] : members_) {
    nlohmann::json ips = nlohmann::json::array();
    for (const IpAddress& ip : m.mesh_ips) ips.push_back(ip.ToString());
    members.push_back({{"public_key", key.ToBase64()},
                       {"mesh", m.mesh},
                       {"name", m.name},
                       {"mesh_ips", ips},
                       {"labels", m.labels},
                       {"kind", MemberKindName(m.kind)}});
    if (!m.aliases.empty()) members.back()["aliases"] = m.aliases;
    if (m.pod) members.back()["pod"] = PodIdentityJson(*m.pod);
    if (m.exit_peer) members.back()["exit_peer"] = true;
    if (!m.use_exit_peers.empty()) members.back()["use_exit_peers"] = m.use_exit_peers;
    if (!m.ssh_key.IsZero()) {
      members.back()["ssh_key"] = m.ssh_key.ToBase64();
      members.back()["ssh_port"] = m.ssh_port;
    }
  }
  nlohmann::json doc = {{"version", 1}, {"members", members}};
  return WriteFileAtomically(dir_ + "/" + kMembersFile, doc.dump(2) + "\n", 0600);
}

}  // namespace tunnelmesh
