// The pods this agent attached to the mesh for tunnelmesh-cni (docs/pods.md): one record per
// attachment (the runtime's container ID and interface name, the pod, its member name and mesh
// addresses, the host end of its veth), kept in STATE_DIR/INTERFACE.pods.json beside the control
// socket, so that an agent restart keeps its pods (it states them to the coordinator again with
// SyncPods after registering, and gets the same addresses).
//
// The file is rewritten whole and atomically (lib/base/file.h, mode 0600) after every change; a
// file that does not parse is an error naming it when the agent starts, never silently dropped.
// The number of records is bounded (kMaxPodAttachments): one more is refused with an error.
//
// Also the pure decisions of garbage collection: which records to detach because their host
// interface vanished (the pod's network namespace went away, and the veth pair with it), and which
// because a CNI GC did not list them.
//
// Threads: none of its own and no locks; PodAttacher's thread owns the store.
#pragma once

#include <cstddef>
#include <functional>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "node-agent/cni/attach_protocol.h"

namespace tunnelmesh {

// Pods one agent attaches at most (a node runs far fewer; the bound keeps the file and the
// SyncPods message small).
inline constexpr size_t kMaxPodAttachments = 1024;

// An attachment is known by the runtime's (container ID, interface name), as CNI names it.
using PodAttachmentKey = std::pair<std::string, std::string>;

struct PodAttachment {
  std::string container_id;
  std::string if_name;
  std::string netns;
  std::string pod_namespace;
  std::string pod_name;
  std::string pod_uid;  // Kubernetes: metadata.uid; outside Kubernetes: the container ID.
  std::string name;     // The member name, "<pod>.<namespace>.pod".
  std::vector<std::string> addresses;
  std::string host_interface;  // cni::HostInterfaceName(container_id).
  absl::Time attached_at = absl::InfinitePast();
  // DEL or GC forgot it, but the coordinator has not confirmed the detach yet (it was
  // unreachable): retried on the GC timer, left out of SyncPods (which detaches it too).
  bool detaching = false;

  PodAttachmentKey key() const { return {container_id, if_name}; }
  bool operator==(const PodAttachment&) const = default;
};

class PodAttachmentStore {
 public:
  // An empty store that writes `path`, holding `max_records` at most (tests lower it).
  explicit PodAttachmentStore(std::string path, size_t max_records = kMaxPodAttachments)
      : path_(std::move(path)), max_records_(max_records) {}

  // Reads `path`: a missing file is an empty store; a file that does not parse, or holds more than
  // `max_records` records, is an error naming the file and what to do.
  [[nodiscard]] static absl::StatusOr<PodAttachmentStore> Load(
      const std::string& path, size_t max_records = kMaxPodAttachments);

  const std::string& path() const { return path_; }
  size_t max_records() const { return max_records_; }
  const PodAttachment* Find(const PodAttachmentKey& key) const;
  const std::map<PodAttachmentKey, PodAttachment>& records() const { return records_; }
  size_t size() const { return records_.size(); }

  // ResourceExhausted (saying what to do) when a record of `key` would be one too many.
  [[nodiscard]] absl::Status CheckRoom(const PodAttachmentKey& key) const;
  // Adds or replaces the record of `attachment.key()` and writes the file. A new record beyond
  // max_records() is ResourceExhausted; a write error (naming the file) leaves the store as
  // it was.
  [[nodiscard]] absl::Status Put(PodAttachment attachment);
  // Removes the record (none: nothing to do) and writes the file; a write error leaves the store
  // as it was.
  [[nodiscard]] absl::Status Remove(const PodAttachmentKey& key);

  // The file's contents for `records` (JSON), and back; exposed for tests.
  static std::string Encode(const std::map<PodAttachmentKey, PodAttachment>& records);
  [[nodiscard]] static absl::StatusOr<std::map<PodAttachmentKey, PodAttachment>> Decode(
      const std::string& text, size_t max_records = kMaxPodAttachments);

 private:
  absl::Status Write(const std::map<PodAttachmentKey, PodAttachment>& records) const;

  std::string path_;
  size_t max_records_;
  std::map<PodAttachmentKey, PodAttachment> records_;
};

// STATE_DIR/INTERFACE.pods.json.
std::string PodAttachmentsPath(const std::string& state_dir, const std::string& interface_name);

// Records whose host interface no longer exists (`interface_exists` false), attached at least
// `grace` before `now` (the plugin makes the veth after the agent answered ADD, so a young record
// without one is still being set up). Records already detaching are not listed.
std::vector<PodAttachmentKey> VanishedAttachments(
    const std::map<PodAttachmentKey, PodAttachment>& records,
    const std::function<bool(const std::string&)>& interface_exists, absl::Time now,
    absl::Duration grace);

// Records a CNI GC did not list in `valid` (cni.dev/valid-attachments), detaching ones excluded.
std::vector<PodAttachmentKey> InvalidAttachments(
    const std::map<PodAttachmentKey, PodAttachment>& records,
    const std::vector<cni::Attachment>& valid);

}  // namespace tunnelmesh
