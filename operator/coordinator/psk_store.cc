#include "operator/coordinator/psk_store.h"

#include "lib/base/file.h"
#include "nlohmann/json.hpp"

namespace tunnelmesh {
namespace {

constexpr const char* kStepNames[] = {"stable", "accept-new", "use-new"};

nlohmann::json ToJson(const MeshPresharedKey& record) {
  nlohmann::json out = {{"generation", record.generation},
                        {"key", record.key.ToBase64()},
                        {"step", kStepNames[static_cast<int>(record.step)]}};
  if (record.previous) {
    out["previous"] = record.previous->ToBase64();
    out["previous_generation"] = record.previous_generation;
  }
  return out;
}

absl::StatusOr<MeshPresharedKey> FromJson(const nlohmann::json& j, const std::string& where) {
  auto bad = [&where](const std::string& why) {
    return absl::DataLossError(where + ": " + why +
                               "; restore it from a backup, or remove it to give the mesh a new "
                               "preshared key (every tunnel then re-handshakes once)");
  };
  if (!j.is_object()) return bad("not a preshared-key record");
  MeshPresharedKey record;
  if (!j.contains("generation") || !j["generation"].is_number_unsigned()) {
    return bad("\"generation\" is not an integer >= 0");
  }
  record.generation = j["generation"].get<uint64_t>();
  if (!j.contains("key") || !j["key"].is_string()) return bad("\"key\" is missing");
  absl::StatusOr<SecretKey> key = SecretKey::FromBase64(j["key"].get<std::string>());
  if (!key.ok()) return bad("\"key\" is not a base64 32-byte key");
  record.key = *std::move(key);
  const std::string step = j.value("step", std::string("stable"));
  bool known = false;
  for (int i = 0; i < 3; ++i) {
    if (step == kStepNames[i]) {
      record.step = static_cast<PresharedKeyStep>(i);
      known = true;
    }
  }
  if (!known) return bad("\"step\" \"" + step + "\" is not stable, accept-new or use-new");
  if (record.step != PresharedKeyStep::kStable) {
    if (!j.contains("previous") || !j["previous"].is_string()) {
      return bad("a rollover in progress needs \"previous\"");
    }
    absl::StatusOr<SecretKey> previous = SecretKey::FromBase64(j["previous"].get<std::string>());
    if (!previous.ok()) return bad("\"previous\" is not a base64 32-byte key");
    record.previous = *std::move(previous);
    record.previous_generation = j.value("previous_generation", uint64_t{0});
  }
  return record;
}

}  // namespace

MeshPresharedKey MeshPresharedKey::Clone() const {
  MeshPresharedKey out;
  out.generation = generation;
  out.key = key.Clone();
  if (previous) out.previous = previous->Clone();
  out.previous_generation = previous_generation;
  out.step = step;
  return out;
}

bool MeshPresharedKey::operator==(const MeshPresharedKey& other) const {
  const bool same_previous = previous.has_value() == other.previous.has_value() &&
                             (!previous || *previous == *other.previous);
  return generation == other.generation && key == other.key && same_previous &&
         previous_generation == other.previous_generation && step == other.step;
}

PresharedKeyRecords CloneRecords(const PresharedKeyRecords& records) {
  PresharedKeyRecords out;
  for (const auto& [name, record] : records) out.emplace(name, record.Clone());
  return out;
}

std::string EncodePresharedKey(const MeshPresharedKey& record) { return ToJson(record).dump(); }

absl::StatusOr<MeshPresharedKey> DecodePresharedKey(std::string_view text,
                                                    const std::string& where) {
  nlohmann::json j = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) {
    return absl::DataLossError(where +
                               " is not JSON; restore it from a backup, or remove it to "
                               "give the mesh a new preshared key");
  }
  return FromJson(j, where);
}

absl::StatusOr<PresharedKeyRecords> FilePresharedKeyStore::Load() {
  absl::StatusOr<std::string> text = ReadFile(path());
  if (absl::IsNotFound(text.status())) return PresharedKeyRecords();  // First start.
  if (!text.ok()) return text.status();
  nlohmann::json doc = nlohmann::json::parse(*text, nullptr, /*allow_exceptions=*/false);
  if (doc.is_discarded() || !doc.is_object() || !doc.contains("meshes") ||
      !doc["meshes"].is_object()) {
    return absl::DataLossError(path() +
                               " is not a preshared-key file; restore it from a backup, or move "
                               "it away to give every mesh a new preshared key");
  }
  PresharedKeyRecords records;
  for (const auto& [name, value] : doc["meshes"].items()) {
    absl::StatusOr<MeshPresharedKey> record = FromJson(value, path() + " (mesh " + name + ")");
    if (!record.ok()) return record.status();
    records.emplace(name, *std::move(record));
  }
  return records;
}

absl::Status FilePresharedKeyStore::Save(const PresharedKeyRecords& records) {
  nlohmann::json meshes = nlohmann::json::object();
  for (const auto& [name, record] : records) meshes[name] = ToJson(record);
  const nlohmann::json doc = {{"meshes", meshes}};
  // 0600 from the file's creation (WriteFileAtomically): it holds secrets.
  return WriteFileAtomically(path(), doc.dump(2) + "\n", 0600);
}

}  // namespace tunnelmesh
