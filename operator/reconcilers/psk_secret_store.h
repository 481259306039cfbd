// The meshes' WireGuard preshared keys in Kubernetes mode (PresharedKeyStore, psk_store.h): one
// data entry per mesh, "psk.<mesh>", in the operator's keys Secret (--coordinator-secret), holding
// the mesh's record as JSON (EncodePresharedKey). The Secret is shared with the coordinator's TLS
// and relay keys (coordinator_identity.h): each writer changes only its own entries.
//
// Thread-compatible: the Coordinator calls Load and Save from one thread at a time (psk_store.h).
// Both block on the API server.
#pragma once

#include <string>
#include <string_view>

#include "operator/coordinator/psk_store.h"
#include "operator/kube/api.h"

namespace tunnelmesh {

class SecretPresharedKeyStore final : public PresharedKeyStore {
 public:
  static constexpr std::string_view kPrefix = "psk.";
  // Updates that meet a newer resourceVersion (another writer of the Secret) are tried again with
  // a fresh read this many times in all; then Save reports kAborted, and the coordinator retries
  // at its next tick (counting psk_save_failures).
  static constexpr int kUpdateAttempts = 3;

  // `api` must outlive the store. The Secret `ns`/`name` is created by LoadOrCreateIdentity.
  SecretPresharedKeyStore(kube::Api* api, std::string ns, std::string name)
      : api_(api), ns_(std::move(ns)), name_(std::move(name)) {}

  // Every psk.* entry of the Secret (none when the Secret does not exist yet). An entry that is
  // not base64 or not a record is kDataLoss naming the Secret and the entry.
  [[nodiscard]] absl::StatusOr<PresharedKeyRecords> Load() override;
  // Replaces the Secret's psk.* entries with `records` (read, merge, update: the chart's Role
  // grants get and update on that Secret only, no patch); other entries are kept. Writes nothing
  // when the Secret already holds exactly these. kNotFound when the Secret is missing.
  [[nodiscard]] absl::Status Save(const PresharedKeyRecords& records) override;

 private:
  std::string Where() const { return "Secret " + ns_ + "/" + name_; }
  absl::Status Context(const absl::Status& s, const std::string& doing) const;

  kube::Api* const api_;
  const std::string ns_, name_;
};

}  // namespace tunnelmesh
