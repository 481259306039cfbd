// Checks the kube client library against a real kube-apiserver (run by
// e2e/cluster/kube_client.sh): TLS verification, CRUD and error codes, paging, watch stop,
// informers across watch restarts and 410 relists, Events, leader election, and a token without
// permissions. Prints a PASS or FAIL line per check; exits 1 if any failed. This file holds the
// HTTP client's own checks and main; kube_client_check_controllers.cc those of the components
// built on it.
#include "operator/kube/kube_client_check.h"

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "CLI/CLI.hpp"
#include "absl/strings/match.h"
#include "absl/time/clock.h"
#include "lib/base/file.h"
#include "lib/base/log.h"

namespace tunnelmesh::kube::check {

namespace {
int failures = 0;
}  // namespace

void Report(bool ok, const std::string& name, const std::string& detail) {
  std::printf("%s %s%s%s\n", ok ? "PASS" : "FAIL", name.c_str(), detail.empty() ? "" : ": ",
              detail.c_str());
  std::fflush(stdout);
  if (!ok) ++failures;
}

bool WaitFor(absl::Duration timeout, const std::function<bool()>& condition) {
  const absl::Time deadline = absl::Now() + timeout;
  while (!condition()) {
    if (absl::Now() > deadline) return false;
    absl::SleepFor(absl::Milliseconds(20));
  }
  return true;
}

nlohmann::json ConfigMap(const std::string& name, const std::string& app,
                         const std::string& value) {
  return {{"apiVersion", "v1"},
          {"kind", "ConfigMap"},
          {"metadata", {{"name", name}, {"namespace", kNs}, {"labels", {{"app", app}}}}},
          {"data", {{"value", value}}}};
}

std::string Rv(const nlohmann::json& object) {
  return object["metadata"].value("resourceVersion", "");
}

std::unique_ptr<HttpApi> MustClient(ClusterConfig config, HttpApi::Options options) {
  absl::StatusOr<std::unique_ptr<HttpApi>> client = HttpApi::Create(std::move(config), options);
  if (!client.ok()) {
    Report(false, "client", client.status().ToString());
    std::exit(1);
  }
  return std::move(*client);
}

namespace {

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
}  // namespace tunnelmesh::kube::check

int main(int argc, char** argv) { return tunnelmesh::kube::check::Main(argc, argv); }
