// Keeps the cluster's CoreDNS forwarding the mesh domains (and the reverse zones of the meshes'
// ranges) to the operator's DNS Service: the marked region of coredns_config.h in the Corefile of
// the ConfigMap kube-system/coredns (the chart's dns.configureCoreDNS, the operator's
// --configure-coredns). CoreDNS's `reload` plugin picks the change up within its reload interval.
//
// One key (the ConfigMap's "namespace/name"), level-triggered like the other reconcilers
// (reconcilers/controller.h). Each Reconcile reads the operator's Service (its ClusterIP and the
// port named dns-udp are the forward target), then the ConfigMap, edits the Corefile and writes it
// back carrying the resourceVersion it read, so an edit made meanwhile by anyone else makes the
// write fail with a conflict instead of being lost; the Reconcile then reads both again, up to
// Options::conflict_retries times, before it fails and the controller backs off. The key comes
// back every Options::resync_period (someone may have edited or recreated the ConfigMap, or the
// Service may have a new address) and whenever the meshes change (the caller enqueues it).
//
// It never fights the user: text outside the markers is never changed, zones a server block of the
// user already serves are left out of ours, and when the ConfigMap is missing, has no Corefile
// key, has broken markers, or may not be read or written, nothing is written: the problem is
// logged and recorded as a Warning Event on every Mesh (`kubectl describe mesh`), once per new
// problem, and looked at again after resync_period.
//
// Uninstall (RemoveCorednsConfig, the chart's pre-delete hook `tunnelmesh-operator coredns
// --remove`): the hook first sets kRemovalAnnotation on the Service, then removes the region; an
// operator that sees the annotation removes the region instead of writing it. Because a Reconcile
// reads the Service before the ConfigMap, and reads it again after each write that adds zones (and
// then removes them again), a Reconcile that raced with the hook undoes its own write.
//
// Threads: Reconcile runs on its controller's worker only and owns the reconciler's state; no lock
// is held across an API call. counters() may be read from any thread.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "nlohmann/json.hpp"
#include "operator/dns/coredns_config.h"
#include "operator/kube/api.h"
#include "operator/kube/events.h"
#include "operator/kube/informer.h"
#include "operator/reconcilers/controller.h"

namespace tunnelmesh {

// Set on the operator's Service by the uninstall hook: the CoreDNS region must go, and stay gone.
inline constexpr char kCorednsRemovalAnnotation[] = "tunnelmesh.io/coredns-removal";

// v1 Services (the operator reads its own).
extern const kube::Resource kServices;

// Where the region lives and whose it is.
struct CorednsTarget {
  std::string configmap_namespace = "kube-system";
  std::string configmap_name = "coredns";
  // "NAMESPACE/RELEASE", named by the marker lines.
  std::string release;
  // The operator's Service: CoreDNS forwards to its ClusterIP, port dns-udp.
  std::string service_namespace;
  std::string service_name;
};

struct CorednsCounters {
  std::atomic<uint64_t> writes{0};     // Corefile updates the API server took
  std::atomic<uint64_t> conflicts{0};  // writes refused for a stale resourceVersion (read again)
  std::atomic<uint64_t> unchanged{0};  // reconciles that found the Corefile as wanted
  std::atomic<uint64_t> problems{0};   // reconciles that found something to report
};

class CorednsConfigReconciler final : public Reconciler {
 public:
  struct Options {
    CorednsTarget target;
    absl::Duration resync_period = absl::Seconds(10);
    int conflict_retries = 5;
  };
  // The meshes whose domains and ranges are forwarded (what the coordinator serves).
  using MeshSource = std::function<std::vector<coredns::MeshZones>()>;

  // `api`, `events` and `meshes` (the Mesh informer: Events go to its objects; may be null) must
  // outlive the reconciler.
  CorednsConfigReconciler(kube::Api* api, kube::EventRecorder* events, const kube::Informer* meshes,
                          MeshSource source, Options options);

  // `key` is ignored: there is one ConfigMap.
  [[nodiscard]] absl::StatusOr<Result> Reconcile(const std::string& key) override;

  // The work queue key ("kube-system/coredns").
  std::string key() const;
  const CorednsCounters& counters() const { return counters_; }

 private:
  struct Problem {
    std::string reason;  // Event reason, CamelCase
    std::string message;
    bool operator==(const Problem&) const = default;
  };
  enum class Pass { kDone, kAgain };

  // One read-edit-write round; kAgain after a conflict or when the Service changed meanwhile.
  absl::StatusOr<Pass> RunPass();
  // Logs and records `problem` (or that the last one is gone, for an empty reason) once per change.
  void Report(const Problem& problem);
  // An Event on every Mesh that is not being deleted.
  void EventOnMeshes(bool warning, const std::string& reason, const std::string& message);

  kube::Api* const api_;
  kube::EventRecorder* const events_;
  const kube::Informer* const meshes_;
  const MeshSource source_;
  const Options options_;
  CorednsCounters counters_;
  Problem reported_;             // worker only: the last problem reported (empty: none)
  std::string written_summary_;  // worker only: what the last write made CoreDNS forward
};

// The uninstall hook's work: sets kCorednsRemovalAnnotation on the Service (when it exists), then
// removes the marked region of `target.release` from the Corefile. OK when there is nothing to
// remove (no ConfigMap, no Corefile, no region). kFailedPrecondition when the markers are broken
// (the message says what to fix); other errors as the API gave them (kUnavailable: try again).
[[nodiscard]] absl::Status RemoveCorednsConfig(kube::Api* api, const CorednsTarget& target,
                                               int conflict_retries = 5);

}  // namespace tunnelmesh
