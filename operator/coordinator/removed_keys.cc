#include "operator/coordinator/removed_keys.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "lib/base/file.h"
#include "nlohmann/json.hpp"

namespace tunnelmesh {

std::string UtcTime(absl::Time t) {
  return absl::FormatTime("%Y-%m-%dT%H:%M:%SZ", t, absl::UTCTimeZone());
}

std::string EncodeRemovedKeys(const std::map<PublicKey, RemovedKey>& keys) {
  nlohmann::json list = nlohmann::json::array();
  for (const auto& [key, entry] : keys) {
    list.push_back({{"key", key.ToBase64()},
                    {"name", entry.name},
                    {"mesh", entry.mesh},
                    {"removed_at", UtcTime(entry.removed_at)}});
  }
  return nlohmann::json({{"version", 1}, {"removed", list}}).dump(2) + "\n";
}

absl::StatusOr<std::map<PublicKey, RemovedKey>> DecodeRemovedKeys(const std::string& text,
                                                                  const std::string& where) {
  auto bad = [&where](const std::string& why) {
    return absl::DataLossError(where + ": " + why +
                               "; restore it from a backup, or fix it by hand (each entry needs "
                               "\"key\", the member's base64 public key): until then the "
                               "coordinator does not start, so that no removed key gets back in");
  };
  nlohmann::json doc = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (doc.is_discarded() || !doc.is_object() || !doc.contains("removed") ||
      !doc["removed"].is_array()) {
    return bad("not a list of removed keys ({\"removed\": [...]})");
  }
  if (doc["removed"].size() > kMaxRemovedKeys) {
    return bad(absl::StrCat("more than ", kMaxRemovedKeys, " entries"));
  }
  std::map<PublicKey, RemovedKey> keys;
  for (const nlohmann::json& e : doc["removed"]) {
    if (!e.is_object() || !e.contains("key") || !e["key"].is_string()) {
      return bad("an entry has no \"key\"");
    }
    absl::StatusOr<PublicKey> key = PublicKey::FromBase64(e["key"].get<std::string>());
    if (!key.ok()) return bad("entry \"" + e["key"].get<std::string>() + "\" is not a public key");
    RemovedKey entry;
    entry.key = *key;
    if (e.contains("name") && e["name"].is_string()) entry.name = e["name"].get<std::string>();
    if (e.contains("mesh") && e["mesh"].is_string()) entry.mesh = e["mesh"].get<std::string>();
    entry.removed_at = absl::UnixEpoch();
    if (e.contains("removed_at") && e["removed_at"].is_string()) {
      std::string error;
      if (!absl::ParseTime(absl::RFC3339_full, e["removed_at"].get<std::string>(),
                           &entry.removed_at, &error)) {
        return bad("entry " + key->ToBase64() + ": \"removed_at\" is not an RFC 3339 time");
      }
    }
    keys[entry.key] = std::move(entry);
  }
  return keys;
}

absl::StatusOr<std::unique_ptr<RemovedKeys>> RemovedKeys::Open(const std::string& state_dir) {
  std::unique_ptr<RemovedKeys> removed(new RemovedKeys(state_dir));
  if (state_dir.empty()) return removed;
  const std::string path = state_dir + "/" + kRemovedKeysFile;
  absl::StatusOr<std::string> text = ReadFile(path);
  if (absl::IsNotFound(text.status())) return removed;
  if (!text.ok()) return text.status();
  absl::StatusOr<std::map<PublicKey, RemovedKey>> keys = DecodeRemovedKeys(*text, path);
  if (!keys.ok()) return keys.status();
  absl::MutexLock lock(&removed->mu_);
  removed->keys_ = *std::move(keys);
  return removed;
}

std::optional<RemovedKey> RemovedKeys::Find(const PublicKey& key) const {
  absl::MutexLock lock(&mu_);
  auto it = keys_.find(key);
  if (it == keys_.end()) return std::nullopt;
  return it->second;
}

std::vector<RemovedKey> RemovedKeys::List() const {
  std::vector<RemovedKey> list;
  {
    absl::MutexLock lock(&mu_);
    for (const auto& [key, entry] : keys_) list.push_back(entry);
  }
  std::stable_sort(list.begin(), list.end(), [](const RemovedKey& a, const RemovedKey& b) {
    return a.removed_at < b.removed_at;
  });
  return list;
}

absl::Status RemovedKeys::Save(const std::map<PublicKey, RemovedKey>& keys) const {
  if (state_dir_.empty()) return absl::OkStatus();
  return WriteFileAtomically(state_dir_ + "/" + kRemovedKeysFile, EncodeRemovedKeys(keys), 0600);
}

absl::Status RemovedKeys::Add(RemovedKey entry) {
  absl::MutexLock write_lock(&write_mu_);
  std::map<PublicKey, RemovedKey> next;
  {
    absl::MutexLock lock(&mu_);
    if (keys_.count(entry.key) > 0) {
      return absl::AlreadyExistsError("key " + entry.key.ToBase64() +
                                      " is removed already (tunnelmesh-operator readmit admits "
                                      "it again)");
    }
    if (keys_.size() >= kMaxRemovedKeys) {
      return absl::ResourceExhaustedError(
          absl::StrCat("already ", kMaxRemovedKeys, " removed keys: re-admit some first"));
    }
    next = keys_;
  }
  next[entry.key] = entry;
  if (absl::Status s = Save(next); !s.ok()) return s;
  absl::MutexLock lock(&mu_);
  keys_ = std::move(next);
  return absl::OkStatus();
}

absl::StatusOr<RemovedKey> RemovedKeys::Readmit(const PublicKey& key) {
  absl::MutexLock write_lock(&write_mu_);
  std::map<PublicKey, RemovedKey> next;
  RemovedKey entry;
  {
    absl::MutexLock lock(&mu_);
    auto it = keys_.find(key);
    if (it == keys_.end()) {
      return absl::NotFoundError("key " + key.ToBase64() + " is not among the removed keys");
    }
    entry = it->second;
    next = keys_;
  }
  next.erase(key);
  if (absl::Status s = Save(next); !s.ok()) return s;
  absl::MutexLock lock(&mu_);
  keys_ = std::move(next);
  return entry;
}

absl::Status RemovedKeys::Refusal(const RemovedKey& entry) const {
  const std::string who =
      entry.name.empty() ? "this key" : "member \"" + entry.name + "\" (this key)";
  const std::string dir = state_dir_.empty() ? "DIR" : state_dir_;
  return absl::PermissionDeniedError(
      who + " was removed by an admin at " + UtcTime(entry.removed_at) +
      " and may not join again until an admin re-admits it on the coordinator's host: "
      "tunnelmesh-operator readmit " +
      entry.key.ToBase64() + " --state-dir " + dir);
}

}  // namespace tunnelmesh
