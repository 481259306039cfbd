#include "node-agent/agent/pod_attachments.h"

#include <set>

#include "absl/strings/str_cat.h"
#include "lib/base/file.h"
#include "nlohmann/json.hpp"

namespace tunnelmesh {
namespace {

using nlohmann::json;

constexpr int kFileVersion = 1;

absl::Status FieldError(size_t index, const char* field, const char* what) {
  return absl::InvalidArgumentError(
      absl::StrCat("pod ", index, ": \"", field, "\" must be ", what));
}

absl::Status ReadString(const json& object, size_t index, const char* field, bool required,
                        std::string* out) {
  auto it = object.find(field);
  if (it == object.end() || it->is_null()) {
    return required ? FieldError(index, field, "a non-empty string") : absl::OkStatus();
  }
  if (!it->is_string()) return FieldError(index, field, "a string");
  *out = it->get<std::string>();
  if (required && out->empty()) return FieldError(index, field, "a non-empty string");
  return absl::OkStatus();
}

}  // namespace

std::string PodAttachmentsPath(const std::string& state_dir, const std::string& interface_name) {
  return state_dir + "/" + interface_name + ".pods.json";
}

std::string PodAttachmentStore::Encode(const std::map<PodAttachmentKey, PodAttachment>& records) {
  json pods = json::array();
  for (const auto& [key, a] : records) {
    pods.push_back(
        {{"containerId", a.container_id},
         {"ifName", a.if_name},
         {"netns", a.netns},
         {"podNamespace", a.pod_namespace},
         {"podName", a.pod_name},
         {"podUid", a.pod_uid},
         {"name", a.name},
         {"addresses", a.addresses},
         {"hostInterface", a.host_interface},
         {"attachedAt",
          a.attached_at == absl::InfinitePast() ? int64_t{0} : absl::ToUnixSeconds(a.attached_at)},
         {"detaching", a.detaching}});
  }
  return json{{"version", kFileVersion}, {"pods", std::move(pods)}}.dump(1) + "\n";
}

absl::StatusOr<std::map<PodAttachmentKey, PodAttachment>> PodAttachmentStore::Decode(
    const std::string& text, size_t max_records) {
  const json root = json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (root.is_discarded() || !root.is_object()) {
    return absl::InvalidArgumentError("not a JSON object");
  }
  auto version = root.find("version");
  if (version == root.end() || !version->is_number_integer() ||
      version->get<int64_t>() != kFileVersion) {
    return absl::InvalidArgumentError(
        absl::StrCat("\"version\" must be ", kFileVersion, " (written by another agent version?)"));
  }
  auto pods = root.find("pods");
  if (pods == root.end() || !pods->is_array()) {
    return absl::InvalidArgumentError("\"pods\" must be a list");
  }
  if (pods->size() > max_records) {
    return absl::InvalidArgumentError(absl::StrCat(
        "it lists ", pods->size(), " pods, more than an agent attaches (", max_records, ")"));
  }
  std::map<PodAttachmentKey, PodAttachment> records;
  for (size_t i = 0; i < pods->size(); ++i) {
    const json& p = (*pods)[i];
    if (!p.is_object()) return absl::InvalidArgumentError(absl::StrCat("pod ", i, " is no object"));
    PodAttachment a;
    for (auto [field, out, required] : {std::tuple{"containerId", &a.container_id, true},
                                        {"ifName", &a.if_name, true},
                                        {"netns", &a.netns, false},
                                        {"podNamespace", &a.pod_namespace, false},
                                        {"podName", &a.pod_name, false},
                                        {"podUid", &a.pod_uid, true},
                                        {"name", &a.name, false},
                                        {"hostInterface", &a.host_interface, true}}) {
      if (absl::Status s = ReadString(p, i, field, required, out); !s.ok()) return s;
    }
    auto addresses = p.find("addresses");
    if (addresses == p.end() || !addresses->is_array()) {
      return FieldError(i, "addresses", "a list of strings");
    }
    for (const json& address : *addresses) {
      if (!address.is_string()) return FieldError(i, "addresses", "a list of strings");
      a.addresses.push_back(address.get<std::string>());
    }
    if (auto at = p.find("attachedAt"); at != p.end() && !at->is_null()) {
      if (!at->is_number_integer()) return FieldError(i, "attachedAt", "a number (Unix seconds)");
      const int64_t seconds = at->get<int64_t>();
      a.attached_at = seconds == 0 ? absl::InfinitePast() : absl::FromUnixSeconds(seconds);
    }
    if (auto detaching = p.find("detaching"); detaching != p.end() && !detaching->is_null()) {
      if (!detaching->is_boolean()) return FieldError(i, "detaching", "true or false");
      a.detaching = detaching->get<bool>();
    }
    PodAttachmentKey key = a.key();
    if (!records.emplace(key, std::move(a)).second) {
      return absl::InvalidArgumentError(
          absl::StrCat("pod ", i, " repeats container ", key.first, " interface ", key.second));
    }
  }
  return records;
}

absl::StatusOr<PodAttachmentStore> PodAttachmentStore::Load(const std::string& path,
                                                            size_t max_records) {
  PodAttachmentStore store(path, max_records);
  absl::StatusOr<std::string> text = ReadFile(path);
  if (!text.ok()) {
    if (absl::IsNotFound(text.status())) return store;
    return text.status();
  }
  absl::StatusOr<std::map<PodAttachmentKey, PodAttachment>> records = Decode(*text, max_records);
  if (!records.ok()) {
    return absl::FailedPreconditionError(absl::StrCat(
        path, " is not a valid pod attachment file (", records.status().message(),
        "): repair it, or move it away to start without the pods it recorded (their "
        "interfaces stay until the pods are deleted; the coordinator detaches them when this "
        "agent registers)"));
  }
  store.records_ = *std::move(records);
  return store;
}

const PodAttachment* PodAttachmentStore::Find(const PodAttachmentKey& key) const {
  auto it = records_.find(key);
  return it == records_.end() ? nullptr : &it->second;
}

absl::Status PodAttachmentStore::Write(
    const std::map<PodAttachmentKey, PodAttachment>& records) const {
  if (absl::Status s = WriteFileAtomically(path_, Encode(records), 0600); !s.ok()) {
    return absl::Status(s.code(),
                        absl::StrCat("recording pod attachments in ", path_, ": ", s.message()));
  }
  return absl::OkStatus();
}

absl::Status PodAttachmentStore::CheckRoom(const PodAttachmentKey& key) const {
  if (records_.count(key) == 0 && records_.size() >= max_records_) {
    return absl::ResourceExhaustedError(absl::StrCat("this agent has attached ", records_.size(),
                                                     " pods, its limit (", max_records_,
                                                     "): schedule fewer mesh pods on this node"));
  }
  return absl::OkStatus();
}

absl::Status PodAttachmentStore::Put(PodAttachment attachment) {
  const PodAttachmentKey key = attachment.key();
  if (absl::Status s = CheckRoom(key); !s.ok()) return s;
  std::map<PodAttachmentKey, PodAttachment> next = records_;
  next[key] = std::move(attachment);
  if (absl::Status s = Write(next); !s.ok()) return s;
  records_ = std::move(next);
  return absl::OkStatus();
}

absl::Status PodAttachmentStore::Remove(const PodAttachmentKey& key) {
  if (records_.count(key) == 0) return absl::OkStatus();
  std::map<PodAttachmentKey, PodAttachment> next = records_;
  next.erase(key);
  if (absl::Status s = Write(next); !s.ok()) return s;
  records_ = std::move(next);
  return absl::OkStatus();
}

std::vector<PodAttachmentKey> VanishedAttachments(
    const std::map<PodAttachmentKey, PodAttachment>& records,
    const std::function<bool(const std::string&)>& interface_exists, absl::Time now,
    absl::Duration grace) {
  std::vector<PodAttachmentKey> out;
  for (const auto& [key, a] : records) {
    if (a.detaching || now - a.attached_at < grace) continue;
    if (!interface_exists(a.host_interface)) out.push_back(key);
  }
  return out;
}

std::vector<PodAttachmentKey> InvalidAttachments(
    const std::map<PodAttachmentKey, PodAttachment>& records,
    const std::vector<cni::Attachment>& valid) {
  std::set<PodAttachmentKey> listed;
  for (const cni::Attachment& v : valid) listed.insert({v.container_id, v.if_name});
  std::vector<PodAttachmentKey> out;
  for (const auto& [key, a] : records) {
    if (!a.detaching && listed.count(key) == 0) out.push_back(key);
  }
  return out;
}

}  // namespace tunnelmesh
