// kube_client_check (see kube_client_check.cc): the checks of the components built on the HTTP
// client, against a real kube-apiserver: informers across watch restarts and 410 relists, Events,
// Lease leader election.
#include <algorithm>
#include <atomic>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/strings/match.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "lib/base/log.h"
#include "operator/kube/events.h"
#include "operator/kube/informer.h"
#include "operator/kube/kube_client_check.h"
#include "operator/kube/leader.h"

namespace tunnelmesh::kube::check {
namespace {

// What an informer's handlers saw: written on the informer's thread, read by the check's.
struct Seen {
  absl::Mutex mu;
  std::vector<std::string> upserts ABSL_GUARDED_BY(mu);
  std::vector<std::string> deletes ABSL_GUARDED_BY(mu);
  int synced ABSL_GUARDED_BY(mu) = 0;
  Informer::Handlers Handlers() {
    return {[this](const nlohmann::json& o) {
              absl::MutexLock lock(&mu);
              upserts.push_back(ObjectName(o) + "=" + o["data"].value("value", ""));
            },
            [this](const nlohmann::json& o) {
              absl::MutexLock lock(&mu);
              deletes.push_back(ObjectName(o));
            },
            [this] {
              absl::MutexLock lock(&mu);
              ++synced;
            }};
  }
  bool Upserted(const std::string& entry) ABSL_LOCKS_EXCLUDED(mu) {
    absl::MutexLock lock(&mu);
    return std::find(upserts.begin(), upserts.end(), entry) != upserts.end();
  }
  bool Deleted(const std::string& name) ABSL_LOCKS_EXCLUDED(mu) {
    absl::MutexLock lock(&mu);
    return std::find(deletes.begin(), deletes.end(), name) != deletes.end();
  }
};

}  // namespace

void CheckInformer(HttpApi& client) {
  Seen seen;
  Informer::Options options;
  options.ns = kNs;
  options.label_selector = "app=informer";
  options.watch_timeout_seconds = 2;
  options.resync = absl::ZeroDuration();
  Informer informer(&client, kConfigMaps, seen.Handlers(), options);
  (void)client.Create(kConfigMaps, kNs, ConfigMap("inf-pre", "informer", "p"));
  informer.Start();
  Report(
      WaitFor(absl::Seconds(5), [&] { return informer.HasSynced(); }) && seen.Upserted("inf-pre=p"),
      "informer lists and syncs", "");

  (void)client.Create(kConfigMaps, kNs, ConfigMap("inf-a", "informer", "1"));
  absl::Time t0 = absl::Now();
  bool ok = WaitFor(absl::Seconds(1), [&] { return seen.Upserted("inf-a=1"); });
  Report(ok, "informer sees ADDED within 1 s", absl::FormatDuration(absl::Now() - t0));
  (void)client.Patch(kConfigMaps, kNs, "inf-a", {{"data", {{"value", "2"}}}});
  t0 = absl::Now();
  ok = WaitFor(absl::Seconds(1), [&] { return seen.Upserted("inf-a=2"); }) &&
       (*informer.Find(kNs, "inf-a"))["data"]["value"] == "2";
  Report(ok, "informer sees MODIFIED within 1 s", absl::FormatDuration(absl::Now() - t0));
  (void)client.Delete(kConfigMaps, kNs, "inf-a");
  t0 = absl::Now();
  ok = WaitFor(absl::Seconds(1), [&] { return seen.Deleted("inf-a"); }) &&
       !informer.Find(kNs, "inf-a").has_value();
  Report(ok, "informer sees DELETED within 1 s", absl::FormatDuration(absl::Now() - t0));

  ok = WaitFor(absl::Seconds(6), [&] { return informer.counters().watch_restarts >= 2; });
  (void)client.Create(kConfigMaps, kNs, ConfigMap("inf-b", "informer", "3"));
  t0 = absl::Now();
  ok = ok && WaitFor(absl::Seconds(1), [&] { return seen.Upserted("inf-b=3"); });
  Report(ok && informer.counters().lists == 1,
         "informer keeps working across watches the server ends",
         "watch_restarts=" + std::to_string(informer.counters().watch_restarts.load()) +
             " lists=" + std::to_string(informer.counters().lists.load()));
  const auto snapshot = informer.Snapshot();
  Report(snapshot.size() == 2, "informer cache holds exactly the live objects",
         "size=" + std::to_string(snapshot.size()));
  informer.Stop();
  (void)client.Delete(kConfigMaps, kNs, "inf-pre");
  (void)client.Delete(kConfigMaps, kNs, "inf-b");
}

namespace {

// Waits until the etcd compaction has passed `rv`: a watch from it is then 410.
absl::Status WaitForCompaction(HttpApi& client, const std::string& rv) {
  absl::Status last;
  for (int i = 0; i < 60; ++i) {
    (void)client.Patch(kConfigMaps, kNs, "churn", {{"data", {{"i", std::to_string(i)}}}});
    last = client.Watch(
        kConfigMaps, kNs, rv, 1, [](const WatchEvent&) { return false; }, nullptr);
    if (IsGone(last)) return last;
    absl::SleepFor(absl::Milliseconds(500));
  }
  return absl::DeadlineExceededError("no compaction past " + rv + ": " + last.ToString());
}

nlohmann::json WatcherBinding() {
  return {
      {"apiVersion", "rbac.authorization.k8s.io/v1"},
      {"kind", "RoleBinding"},
      {"metadata", {{"name", "tm-watcher"}, {"namespace", kNs}}},
      {"roleRef",
       {{"apiGroup", "rbac.authorization.k8s.io"}, {"kind", "Role"}, {"name", "tm-watcher"}}},
      {"subjects",
       {{{"apiGroup", "rbac.authorization.k8s.io"}, {"kind", "User"}, {"name", "tm-watcher"}}}}};
}

}  // namespace

void CheckGone(HttpApi& admin, const ClusterConfig& base, const Flags& flags) {
  (void)admin.Create(kConfigMaps, kNs, ConfigMap("churn", "churn"));
  absl::Status old = WaitForCompaction(admin, "1");
  Report(IsGone(old), "watch from a compacted resourceVersion is OutOfRange", old.ToString());

  // The watcher's informer loses its permission (so it is not watching), an object goes away
  // meanwhile and compaction passes its resourceVersion; with the permission back, its watch
  // gets 410 and it relists, reporting the vanished object as deleted.
  const nlohmann::json role = {{"apiVersion", "rbac.authorization.k8s.io/v1"},
                               {"kind", "Role"},
                               {"metadata", {{"name", "tm-watcher"}, {"namespace", kNs}}},
                               {"rules",
                                {{{"apiGroups", {""}},
                                  {"resources", {"configmaps"}},
                                  {"verbs", {"get", "list", "watch"}}}}}};
  absl::StatusOr<nlohmann::json> made = admin.Create(kRoles, kNs, role);
  if (made.ok()) made = admin.Create(kRoleBindings, kNs, WatcherBinding());
  if (!made.ok()) {
    Report(false, "relist setup (RBAC)", made.status().ToString());
    return;
  }
  (void)admin.Create(kConfigMaps, kNs, ConfigMap("gone-a", "gone", "a"));
  (void)admin.Create(kConfigMaps, kNs, ConfigMap("gone-b", "gone", "b"));
  ClusterConfig watcher_config = base;
  watcher_config.token = flags.watcher_token;
  std::unique_ptr<HttpApi> watcher = MustClient(watcher_config);
  Seen seen;
  Informer::Options options;
  options.ns = kNs;
  options.label_selector = "app=gone";
  options.watch_timeout_seconds = 1;
  options.min_backoff = absl::Milliseconds(100);
  options.max_backoff = absl::Milliseconds(500);
  options.resync = absl::ZeroDuration();
  Informer informer(watcher.get(), kConfigMaps, seen.Handlers(), options);
  informer.Start();
  if (!WaitFor(absl::Seconds(5), [&] { return informer.Snapshot().size() == 2; })) {
    Report(false, "relist setup (informer sync)", "");
    return;
  }
  (void)admin.Delete(kRoleBindings, kNs, "tm-watcher");
  const uint64_t errors = informer.counters().errors;
  const bool forbidden =
      WaitFor(absl::Seconds(10), [&] { return informer.counters().errors > errors; });
  (void)admin.Delete(kConfigMaps, kNs, "gone-a");
  absl::Status compacted = WaitForCompaction(admin, informer.resource_version());
  (void)admin.Create(kRoleBindings, kNs, WatcherBinding());
  const absl::Time t0 = absl::Now();
  const bool relisted = WaitFor(absl::Seconds(15), [&] {
    return informer.counters().relists_after_gone >= 1 && seen.Deleted("gone-a");
  });
  Report(
      forbidden && IsGone(compacted) && relisted && !informer.Find(kNs, "gone-a") &&
          informer.Find(kNs, "gone-b") && informer.counters().lists >= 2,
      "informer relists after 410 Gone and reports the vanished object",
      "forbidden_seen=" + std::to_string(forbidden) + " compaction=" + compacted.ToString() +
          " relists_after_gone=" + std::to_string(informer.counters().relists_after_gone.load()) +
          " after " + absl::FormatDuration(absl::Now() - t0));
  informer.Stop();
  (void)admin.Delete(kConfigMaps, kNs, "gone-b");
}

namespace {

// The Events in `ns` about the object named `name`.
std::vector<nlohmann::json> EventsAbout(HttpApi& client, const std::string& ns,
                                        const std::string& name) {
  std::vector<nlohmann::json> out;
  absl::StatusOr<nlohmann::json> list = client.List(kEvents, ns, "", "involvedObject.name=" + name);
  if (list.ok()) {
    for (const nlohmann::json& e : (*list)["items"]) out.push_back(e);
  }
  return out;
}

}  // namespace

void CheckEvents(HttpApi& client) {
  absl::StatusOr<nlohmann::json> object =
      client.Create(kConfigMaps, kNs, ConfigMap("evented", "events"));
  if (!object.ok()) {
    Report(false, "events setup", object.status().ToString());
    return;
  }
  (*object)["apiVersion"] = "v1";
  (*object)["kind"] = "ConfigMap";
  EventRecorder recorder(&client, "tunnelmesh-operator", "tunnelmesh");
  recorder.Normal(*object, "Reconciled", "all good");
  recorder.Normal(*object, "Reconciled", "all good");
  recorder.Warning(*object, "Broken", "something else");
  recorder.Flush();
  std::vector<nlohmann::json> events = EventsAbout(client, kNs, "evented");
  int reconciled_count = -1;
  bool fields_ok = false;
  for (const nlohmann::json& e : events) {
    if (e.value("reason", "") != "Reconciled") continue;
    reconciled_count = e.value("count", 0);
    fields_ok = e["involvedObject"].value("kind", "") == "ConfigMap" &&
                e["involvedObject"].value("uid", "") == (*object)["metadata"].value("uid", "") &&
                e["source"].value("component", "") == "tunnelmesh-operator" &&
                e.value("type", "") == "Normal" && !e.value("firstTimestamp", "").empty();
  }
  Report(events.size() == 2 && reconciled_count == 2 && fields_ok &&
             recorder.counters().created == 2 && recorder.counters().bumped == 1,
         "events recorded; a repeat bumps count",
         "events=" + std::to_string(events.size()) + " count=" + std::to_string(reconciled_count));

  // A cluster-scoped object (the namespace "default").
  absl::StatusOr<nlohmann::json> ns_object = client.Get(kNamespaces, "", kNs);
  (void)client.Create(kNamespaces, "", {{"metadata", {{"name", "tunnelmesh"}}}});
  if (ns_object.ok()) {
    (*ns_object)["apiVersion"] = "v1";
    (*ns_object)["kind"] = "Namespace";
    recorder.Warning(*ns_object, "Checked", "cluster-scoped");
    recorder.Flush();
  }
  std::vector<nlohmann::json> cluster_events = EventsAbout(client, "", kNs);
  std::string where;
  for (const nlohmann::json& e : cluster_events) {
    if (e.value("reason", "") == "Checked") where = ObjectNamespace(e);
  }
  Report(where == "default", "event about a cluster-scoped object (server allows only default)",
         "written in namespace " + where);
  (void)client.Delete(kConfigMaps, kNs, "evented");
}

void CheckLeader(const ClusterConfig& config) {
  std::unique_ptr<HttpApi> client = MustClient(config);
  const auto options = [](const std::string& identity) {
    LeaderElector::Options o;
    o.ns = kNs;
    o.lease_name = "tm-check";
    o.identity = identity;
    o.lease_duration = absl::Seconds(2);
    o.renew_deadline = absl::Milliseconds(1500);
    o.retry_period = absl::Milliseconds(300);
    return o;
  };
  auto a = std::make_unique<LeaderElector>(client.get(), options("candidate-a"));
  auto b = std::make_unique<LeaderElector>(client.get(), options("candidate-b"));
  auto c = std::make_unique<LeaderElector>(client.get(), options("candidate-c"));
  std::atomic<bool> stop_all{false};
  std::atomic<int> winners{0};
  std::atomic<bool> a_lost{false};
  absl::Status a_status = a->Acquire(&stop_all);
  a->StartRenewing([&] { a_lost = true; });
  // b and c compete while a renews: neither may win during a few lease durations.
  std::atomic<bool> b_won{false}, c_won{false};
  std::thread tb([&] {
    if (b->Acquire(&stop_all).ok()) {
      b_won = true;
      ++winners;
    }
  });
  std::thread tc([&] {
    if (c->Acquire(&stop_all).ok()) {
      c_won = true;
      ++winners;
    }
  });
  absl::SleepFor(absl::Seconds(5));
  Report(a_status.ok() && a->IsLeader() && winners == 0 && !a_lost,
         "leader: exactly one of three leads while it renews", "");

  // a releases: one successor takes over at once (within a retry period or two).
  absl::Time t0 = absl::Now();
  a->Release();
  bool took = WaitFor(absl::Seconds(2), [&] { return winners >= 1; });
  absl::SleepFor(absl::Milliseconds(700));
  Report(took && winners == 1 && !a->IsLeader(), "leader: a successor takes over after Release",
         absl::FormatDuration(absl::Now() - t0 - absl::Milliseconds(700)));

  // The new leader stops renewing without releasing (destroyed): the third takes over once the
  // lease expires, within lease duration + retry period (+ request slack).
  std::unique_ptr<LeaderElector>& next = b_won ? b : c;
  std::unique_ptr<LeaderElector>& last = b_won ? c : b;
  std::atomic<bool>& last_won = b_won ? c_won : b_won;
  next->StartRenewing([] {});
  absl::SleepFor(absl::Seconds(1));
  t0 = absl::Now();
  next.reset();  // stops renewing; the lease stays held until it expires
  took = WaitFor(absl::Seconds(4), [&] { return last_won.load(); });
  const absl::Duration takeover = absl::Now() - t0;
  Report(took && takeover <= absl::Seconds(2) + absl::Milliseconds(300) + absl::Milliseconds(700),
         "leader: takeover after the leader stops renewing",
         absl::FormatDuration(takeover) + " (lease 2s + retry 0.3s)");
  absl::StatusOr<nlohmann::json> lease = client->Get(kLeases, kNs, "tm-check");
  Report(lease.ok() && (*lease)["spec"].value("leaseTransitions", 0) >= 2 &&
             (*lease)["spec"].value("renewTime", "").size() == 27,
         "leader: leaseTransitions counted, MicroTime renewTime",
         lease.ok() ? (*lease)["spec"].dump() : lease.status().ToString());
  (void)a_lost.load();
  stop_all = true;
  tb.join();
  tc.join();
  last->Release();
}

}  // namespace tunnelmesh::kube::check
