// Checks the kube client library against a real kube-apiserver (run by
// e2e/cluster/kube_client.sh): TLS verification, CRUD and error codes, paging, watch stop,
// informers across watch restarts and 410 relists, Events, leader election, and a token without
// permissions. Prints a PASS or FAIL line per check; exits 1 if any failed.
#include <atomic>
#include <chrono>
#include <cstdio>
#include <functional>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "CLI/CLI.hpp"
#include "absl/strings/match.h"
#include "absl/time/clock.h"
#include "lib/base/log.h"
#include "operator/kube/config.h"
#include "operator/kube/events.h"
#include "operator/kube/http_api.h"
#include "operator/kube/informer.h"
#include "operator/kube/leader.h"

namespace tunnelmesh::kube {
namespace {

const Resource kNamespaces{"", "v1", "namespaces", false, "Namespace"};
const Resource kRoles{"rbac.authorization.k8s.io", "v1", "roles", true, "Role"};
const Resource kRoleBindings{"rbac.authorization.k8s.io", "v1", "rolebindings", true,
                             "RoleBinding"};
constexpr char kNs[] = "default";

struct Flags {
  std::string kubeconfig, kubeconfig_ca, ca_file, wrong_ca_file, nobody_token, watcher_token;
  std::string localhost_server, client_cert_file, client_key_file;
};

int failures = 0;

void Report(bool ok, const std::string& name, const std::string& detail) {
  std::printf("%s %s%s%s\n", ok ? "PASS" : "FAIL", name.c_str(), detail.empty() ? "" : ": ",
              detail.c_str());
  std::fflush(stdout);
  if (!ok) ++failures;
}

// Polls `condition` every 20 ms until it holds or `timeout` passes.
bool WaitFor(absl::Duration timeout, const std::function<bool()>& condition) {
  const absl::Time deadline = absl::Now() + timeout;
  while (!condition()) {
    if (absl::Now() > deadline) return false;
    absl::SleepFor(absl::Milliseconds(20));
  }
  return true;
}

nlohmann::json ConfigMap(const std::string& name, const std::string& app,
                         const std::string& value = "1") {
  return {{"apiVersion", "v1"},
          {"kind", "ConfigMap"},
          {"metadata", {{"name", name}, {"namespace", kNs}, {"labels", {{"app", app}}}}},
          {"data", {{"value", value}}}};
}

std::string Rv(const nlohmann::json& object) {
  return object["metadata"].value("resourceVersion", "");
}

std::unique_ptr<HttpApi> MustClient(ClusterConfig config, HttpApi::Options options = {}) {
  absl::StatusOr<std::unique_ptr<HttpApi>> client = HttpApi::Create(std::move(config), options);
  if (!client.ok()) {
    Report(false, "client", client.status().ToString());
    std::exit(1);
  }
  return std::move(*client);
}

void CheckTls(const ClusterConfig& base, const Flags& flags) {
  absl::StatusOr<std::string> ca = ReadWholeFile(flags.ca_file);
  absl::StatusOr<std::string> wrong = ReadWholeFile(flags.wrong_ca_file);
  if (!ca.ok() || !wrong.ok()) {
    Report(false, "tls setup", "cannot read CA files");
    return;
  }
  ClusterConfig verified = base;
  verified.insecure_skip_tls_verify = false;
  verified.ca_pem = *ca;
  absl::StatusOr<nlohmann::json> got = MustClient(verified)->Get(kNamespaces, "", kNs);
  Report(got.ok(), "tls verified with ca_pem", got.ok() ? "" : got.status().ToString());

  ClusterConfig by_name = verified;
  by_name.server = flags.localhost_server;
  got = MustClient(by_name)->Get(kNamespaces, "", kNs);
  Report(got.ok(), "tls verified with ca_pem by DNS name localhost",
         got.ok() ? "" : got.status().ToString());

  absl::StatusOr<ClusterConfig> from_file = LoadKubeconfig(flags.kubeconfig_ca);
  if (from_file.ok()) got = MustClient(*from_file)->Get(kNamespaces, "", kNs);
  Report(
      from_file.ok() && got.ok(), "tls verified with kubeconfig certificate-authority file",
      !from_file.ok() ? from_file.status().ToString() : (got.ok() ? "" : got.status().ToString()));

  ClusterConfig insecure = base;
  insecure.insecure_skip_tls_verify = true;
  insecure.ca_pem = *wrong;
  got = MustClient(insecure)->Get(kNamespaces, "", kNs);
  Report(got.ok(), "tls insecure-skip-tls-verify", got.ok() ? "" : got.status().ToString());

  ClusterConfig bad = verified;
  bad.ca_pem = *wrong;
  got = MustClient(bad)->Get(kNamespaces, "", kNs);
  Report(!got.ok() && got.status().code() == absl::StatusCode::kUnavailable &&
             absl::StrContains(got.status().message(), "certificate-authority"),
         "tls wrong CA refused with a clear error", got.status().ToString());

  // Client certificate authentication (CN=tm-certuser, O=system:masters), no token.
  absl::StatusOr<std::string> cert = ReadWholeFile(flags.client_cert_file);
  absl::StatusOr<std::string> key = ReadWholeFile(flags.client_key_file);
  ClusterConfig by_cert = verified;
  by_cert.token.clear();
  by_cert.client_cert_pem = cert.ok() ? *cert : "";
  by_cert.client_key_pem = key.ok() ? *key : "";
  got = MustClient(by_cert)->Get(kNamespaces, "", kNs);
  Report(got.ok(), "client certificate authentication", got.ok() ? "" : got.status().ToString());

  ClusterConfig garbage = verified;
  garbage.ca_pem = "not a PEM";
  absl::StatusOr<std::unique_ptr<HttpApi>> refused = HttpApi::Create(garbage);
  Report(!refused.ok() && refused.status().code() == absl::StatusCode::kInvalidArgument,
         "unusable CA PEM refused at Create", refused.status().ToString());
}

void CheckCrud(HttpApi& client) {
  (void)client.Delete(kConfigMaps, kNs, "crud");
  absl::StatusOr<nlohmann::json> created = client.Create(kConfigMaps, kNs, ConfigMap("crud", "c"));
  Report(created.ok(), "create", created.ok() ? Rv(*created) : created.status().ToString());
  if (!created.ok()) return;
  absl::StatusOr<nlohmann::json> got = client.Get(kConfigMaps, kNs, "crud");
  Report(got.ok() && (*got)["data"]["value"] == "1", "get",
         got.ok() ? "" : got.status().ToString());
  absl::StatusOr<nlohmann::json> again = client.Create(kConfigMaps, kNs, ConfigMap("crud", "c"));
  Report(absl::IsAlreadyExists(again.status()), "second create is AlreadyExists",
         again.status().ToString());

  nlohmann::json update = *created;
  update["data"]["value"] = "2";
  absl::StatusOr<nlohmann::json> updated = client.Update(kConfigMaps, kNs, update);
  Report(updated.ok() && (*updated)["data"]["value"] == "2", "update",
         updated.ok() ? "" : updated.status().ToString());
  update["data"]["value"] = "3";  // still carries the first resourceVersion
  absl::StatusOr<nlohmann::json> stale = client.Update(kConfigMaps, kNs, update);
  Report(IsConflict(stale.status()), "update with a stale resourceVersion is Aborted",
         stale.status().ToString());

  absl::StatusOr<nlohmann::json> patched =
      client.Patch(kConfigMaps, kNs, "crud", {{"data", {{"extra", "x"}}}});
  Report(patched.ok() && (*patched)["data"]["extra"] == "x" && (*patched)["data"]["value"] == "2",
         "merge patch", patched.ok() ? "" : patched.status().ToString());
  absl::StatusOr<nlohmann::json> json_patched = client.Patch(
      kConfigMaps, kNs, "crud",
      nlohmann::json::array({{{"op", "replace"}, {"path", "/data/extra"}, {"value", "y"}}}),
      PatchType::kJson);
  Report(json_patched.ok() && (*json_patched)["data"]["extra"] == "y", "json patch",
         json_patched.ok() ? "" : json_patched.status().ToString());

  absl::StatusOr<nlohmann::json> invalid =
      client.Create(kConfigMaps, kNs, ConfigMap("Not_A_Valid_Name", "c"));
  Report(invalid.status().code() == absl::StatusCode::kInvalidArgument &&
             absl::StrContains(invalid.status().message(), "metadata.name"),
         "invalid object is InvalidArgument naming the field", invalid.status().ToString());

  absl::Status wrong_uid = client.Delete(kConfigMaps, kNs, "crud", "00000000-0000-0000-0000-0");
  Report(IsConflict(wrong_uid), "delete with a wrong uid precondition is Aborted",
         wrong_uid.ToString());
  absl::Status deleted =
      client.Delete(kConfigMaps, kNs, "crud", (*created)["metadata"].value("uid", ""));
  Report(deleted.ok(), "delete with uid precondition", deleted.ToString());
  got = client.Get(kConfigMaps, kNs, "crud");
  Report(absl::IsNotFound(got.status()) && absl::StrContains(got.status().message(), "crud"),
         "get after delete is NotFound", got.status().ToString());
  absl::Status again_deleted = client.Delete(kConfigMaps, kNs, "crud");
  Report(absl::IsNotFound(again_deleted), "delete of a missing object is NotFound",
         again_deleted.ToString());
}

void CheckPaging(const ClusterConfig& config) {
  HttpApi::Options options;
  options.list_page_size = 10;
  std::unique_ptr<HttpApi> client = MustClient(config, options);
  for (int i = 0; i < 25; ++i) {
    absl::StatusOr<nlohmann::json> created =
        client->Create(kConfigMaps, kNs, ConfigMap("page-" + std::to_string(i), "paging"));
    if (!created.ok()) {
      Report(false, "paging setup", created.status().ToString());
      return;
    }
  }
  const uint64_t pages_before = client->counters().list_pages.load();
  absl::StatusOr<nlohmann::json> list = client->List(kConfigMaps, kNs, "app=paging");
  const uint64_t pages = client->counters().list_pages.load() - pages_before;
  Report(list.ok() && (*list)["items"].size() == 25 && pages == 3 && !Rv(*list).empty() &&
             !(*list)["metadata"].contains("continue"),
         "list follows continue pages",
         list.ok() ? "items=" + std::to_string((*list)["items"].size()) +
                         " pages=" + std::to_string(pages)
                   : list.status().ToString());
  absl::StatusOr<nlohmann::json> fields =
      client->List(kConfigMaps, kNs, "app=paging", "metadata.name=page-7");
  Report(fields.ok() && (*fields)["items"].size() == 1, "list with a field selector",
         fields.ok() ? "" : fields.status().ToString());
}

void CheckWatchStop(HttpApi& client) {
  std::atomic<bool> stop{false};
  std::thread stopper([&] {
    absl::SleepFor(absl::Milliseconds(300));
    stop = true;
  });
  const absl::Time start = absl::Now();
  absl::StatusOr<nlohmann::json> list = client.List(kConfigMaps, kNs);
  absl::Status status = client.Watch(
      kConfigMaps, kNs, list.ok() ? Rv(*list) : "", 60, [](const WatchEvent&) { return true; },
      &stop);
  const absl::Duration took = absl::Now() - start;
  stopper.join();
  Report(status.code() == absl::StatusCode::kCancelled && took < absl::Milliseconds(1200),
         "watch stops within 0.5 s of *stop",
         status.ToString() + " after " + absl::FormatDuration(took));

  const absl::Time ended_start = absl::Now();
  status = client.Watch(
      kConfigMaps, kNs, list.ok() ? Rv(*list) : "", 1, [](const WatchEvent&) { return true; },
      nullptr);
  Report(status.ok() && absl::Now() - ended_start < absl::Seconds(5),
         "watch ended by the server (timeoutSeconds) is OK",
         status.ToString() + " after " + absl::FormatDuration(absl::Now() - ended_start));
}

// What an informer's handlers saw.
struct Seen {
  std::mutex mu;
  std::vector<std::string> upserts, deletes;
  int synced = 0;
  Informer::Handlers Handlers() {
    return {[this](const nlohmann::json& o) {
              std::lock_guard<std::mutex> lock(mu);
              upserts.push_back(ObjectName(o) + "=" + o["data"].value("value", ""));
            },
            [this](const nlohmann::json& o) {
              std::lock_guard<std::mutex> lock(mu);
              deletes.push_back(ObjectName(o));
            },
            [this] {
              std::lock_guard<std::mutex> lock(mu);
              ++synced;
            }};
  }
  bool Upserted(const std::string& entry) {
    std::lock_guard<std::mutex> lock(mu);
    for (const std::string& u : upserts) {
      if (u == entry) return true;
    }
    return false;
  }
  bool Deleted(const std::string& name) {
    std::lock_guard<std::mutex> lock(mu);
    for (const std::string& d : deletes) {
      if (d == name) return true;
    }
    return false;
  }
};

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

void CheckForbidden(const ClusterConfig& base, const Flags& flags) {
  ClusterConfig nobody = base;
  nobody.token = flags.nobody_token;
  std::unique_ptr<HttpApi> client = MustClient(nobody);
  absl::StatusOr<nlohmann::json> got = client->Get(kConfigMaps, kNs, "anything");
  Report(got.status().code() == absl::StatusCode::kPermissionDenied &&
             absl::StrContains(got.status().message(), "cannot get resource \"configmaps\""),
         "token without permissions gets PermissionDenied naming verb and resource",
         got.status().ToString());
  ClusterConfig unknown = base;
  unknown.token = "not-a-token";
  got = MustClient(unknown)->Get(kConfigMaps, kNs, "anything");
  Report(got.status().code() == absl::StatusCode::kUnauthenticated, "bad token is Unauthenticated",
         got.status().ToString());
}

int Main(int argc, char** argv) {
  CLI::App app{"kube client checks against a real kube-apiserver"};
  Flags flags;
  app.add_option("--kubeconfig", flags.kubeconfig)->required();
  app.add_option("--kubeconfig-ca", flags.kubeconfig_ca)->required();
  app.add_option("--ca-file", flags.ca_file)->required();
  app.add_option("--wrong-ca-file", flags.wrong_ca_file)->required();
  app.add_option("--nobody-token", flags.nobody_token)->required();
  app.add_option("--watcher-token", flags.watcher_token)->required();
  app.add_option("--localhost-server", flags.localhost_server)->required();
  app.add_option("--client-cert", flags.client_cert_file)->required();
  app.add_option("--client-key", flags.client_key_file)->required();
  std::string only;
  app.add_option("--only", only,
                 "run one group: tls crud paging watch informer gone events "
                 "leader forbidden");
  CLI11_PARSE(app, argc, argv);
  InitLogging("info");

  absl::StatusOr<ClusterConfig> config = ResolveClusterConfig(flags.kubeconfig);
  if (!config.ok()) {
    Report(false, "kubeconfig", config.status().ToString());
    return 1;
  }
  std::unique_ptr<HttpApi> admin = MustClient(*config);
  const auto run = [&](const char* name, const std::function<void()>& check) {
    if (!only.empty() && only != name) return;
    const absl::Time start = absl::Now();
    check();
    std::printf("---- %s took %s\n", name, absl::FormatDuration(absl::Now() - start).c_str());
  };
  run("tls", [&] { CheckTls(*config, flags); });
  run("crud", [&] { CheckCrud(*admin); });
  run("paging", [&] { CheckPaging(*config); });
  run("watch", [&] { CheckWatchStop(*admin); });
  run("informer", [&] { CheckInformer(*admin); });
  run("gone", [&] { CheckGone(*admin, *config, flags); });
  run("events", [&] { CheckEvents(*admin); });
  run("leader", [&] { CheckLeader(*config); });
  run("forbidden", [&] { CheckForbidden(*config, flags); });
  std::printf("%s: %d failed\n", failures == 0 ? "ALL PASSED" : "FAILURES", failures);
  return failures == 0 ? 0 : 1;
}

}  // namespace
}  // namespace tunnelmesh::kube

int main(int argc, char** argv) { return tunnelmesh::kube::Main(argc, argv); }
