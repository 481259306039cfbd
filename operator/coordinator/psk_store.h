// The mesh-wide WireGuard preshared keys the coordinator holds (one random 32-byte key per Mesh,
// never derived from the join token) and where they are kept: STATE_DIR/preshared-keys.json
// standalone (mode 0600, rewritten atomically), a key per mesh in the operator's keys Secret in
// Kubernetes (operator/kube_mode.cc). A record also says how far a rollover got, so that a
// coordinator restarted in the middle of one resumes at the same step (docs/protocol.md,
// "Preshared key").
//
// Thread-compatible: the Coordinator calls a store from one thread at a time (under its
// preshared-key lock, never under its state lock).
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"
#include "lib/crypto/keys.h"

namespace tunnelmesh {

// Where a mesh is in a preshared-key rollover. Members get one step at a time, a grace period
// apart, so that any two members are at most one step apart and every responder's key is one the
// initiator accepts.
enum class PresharedKeyStep {
  kStable,     // Use `key` only.
  kAcceptNew,  // (a) Use `previous`, also accept `key`.
  kUseNew,     // (b) Use `key`, also accept `previous`.
};

struct MeshPresharedKey {
  // The Mesh's spec.presharedKeyGeneration `key` was made for.
  uint64_t generation = 0;
  SecretKey key;
  // During a rollover: the key rolled away from, and its generation.
  std::optional<SecretKey> previous;
  uint64_t previous_generation = 0;
  PresharedKeyStep step = PresharedKeyStep::kStable;

  MeshPresharedKey Clone() const;
  bool operator==(const MeshPresharedKey& other) const;
};

// Mesh name -> its record.
using PresharedKeyRecords = std::map<std::string, MeshPresharedKey>;
PresharedKeyRecords CloneRecords(const PresharedKeyRecords& records);

// One record as JSON text ({"generation", "key" (base64), "previous", "previous_generation",
// "step"}), and back; `where` names the file or Secret key in errors.
std::string EncodePresharedKey(const MeshPresharedKey& record);
[[nodiscard]] absl::StatusOr<MeshPresharedKey> DecodePresharedKey(std::string_view text,
                                                                  const std::string& where);

class PresharedKeyStore {
 public:
  virtual ~PresharedKeyStore() = default;
  // Every record kept (empty on a first start). A record that does not parse is an error naming
  // where it is: it is never silently replaced (members would lose their tunnels' key).
  [[nodiscard]] virtual absl::StatusOr<PresharedKeyRecords> Load() = 0;
  // Makes `records` durable (all of them, replacing what was kept).
  [[nodiscard]] virtual absl::Status Save(const PresharedKeyRecords& records) = 0;
};

// STATE_DIR/preshared-keys.json: {"meshes": {"NAME": RECORD, ...}}, mode 0600.
class FilePresharedKeyStore final : public PresharedKeyStore {
 public:
  explicit FilePresharedKeyStore(std::string dir) : dir_(std::move(dir)) {}
  [[nodiscard]] absl::StatusOr<PresharedKeyRecords> Load() override;
  [[nodiscard]] absl::Status Save(const PresharedKeyRecords& records) override;
  std::string path() const { return dir_ + "/preshared-keys.json"; }

 private:
  const std::string dir_;
};

}  // namespace tunnelmesh
