#include "operator/dns/coredns_config_reconciler.h"

#include <algorithm>
#include <optional>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "lib/base/log.h"
#include "lib/base/status_macros.h"
#include "operator/kube/object.h"

namespace tunnelmesh {

const kube::Resource kServices{"", "v1", "services", true, "Service"};

namespace {

using kube::Field;
using kube::StringAt;

constexpr char kCorefileKey[] = "Corefile";

std::string ConfigMapName(const CorednsTarget& t) {
  return t.configmap_namespace + "/" + t.configmap_name;
}
std::string ServiceName(const CorednsTarget& t) {
  return t.service_namespace + "/" + t.service_name;
}

bool RemovalRequested(const nlohmann::json& service) {
  return !Field(Field(Field(service, "metadata"), "annotations"), kCorednsRemovalAnnotation)
              .is_null();
}

// "CLUSTER-IP:PORT" of the Service's port named dns-udp, or why there is none.
absl::StatusOr<std::string> UpstreamOf(const nlohmann::json& service, const CorednsTarget& t) {
  const nlohmann::json& spec = Field(service, "spec");
  const std::string ip = StringAt(spec, "clusterIP");
  if (ip.empty() || ip == "None") {
    return absl::FailedPreconditionError(
        absl::StrCat("Service ", ServiceName(t), " has no ClusterIP (spec.clusterIP \"", ip,
                     "\"): CoreDNS's forward plugin needs an address; a headless Service cannot be "
                     "the target"));
  }
  const nlohmann::json& ports = Field(spec, "ports");
  if (ports.is_array()) {
    for (const nlohmann::json& port : ports) {
      const nlohmann::json& number = Field(port, "port");
      if (StringAt(port, "name") == "dns-udp" && number.is_number_integer()) {
        const bool v6 = ip.find(':') != std::string::npos;
        return absl::StrCat(v6 ? "[" : "", ip, v6 ? "]" : "", ":", number.get<int64_t>());
      }
    }
  }
  return absl::FailedPreconditionError(
      absl::StrCat("Service ", ServiceName(t),
                   " has no port named dns-udp: upgrade the chart (its Service carries "
                   "dns-udp and dns-tcp, port 53)"));
}

// The Corefile of a ConfigMap, or nullopt when the key is missing or not a string.
std::optional<std::string> CorefileOf(const nlohmann::json& configmap) {
  const nlohmann::json& text = Field(Field(configmap, "data"), kCorefileKey);
  if (!text.is_string()) return std::nullopt;
  return text.get<std::string>();
}

std::string Summary(const std::vector<coredns::ServerBlock>& blocks,
                    const std::vector<std::string>& skipped) {
  std::vector<std::string> zones;
  for (const coredns::ServerBlock& block : blocks) {
    for (const std::string& zone : block.zones) {
      if (std::find(skipped.begin(), skipped.end(), zone) == skipped.end()) zones.push_back(zone);
    }
  }
  return absl::StrJoin(zones, ", ");
}

}  // namespace

CorednsConfigReconciler::CorednsConfigReconciler(kube::Api* api, kube::EventRecorder* events,
                                                 const kube::Informer* meshes, MeshSource source,
                                                 Options options)
    : api_(api),
      events_(events),
      meshes_(meshes),
      source_(std::move(source)),
      options_(std::move(options)) {}

std::string CorednsConfigReconciler::key() const { return ConfigMapName(options_.target); }

absl::StatusOr<Result> CorednsConfigReconciler::Reconcile(const std::string& key) {
  for (int attempt = 0; attempt <= options_.conflict_retries; ++attempt) {
    absl::StatusOr<Pass> pass = RunPass();
    if (!pass.ok()) return pass.status();
    if (*pass == Pass::kDone) return Result{options_.resync_period};
  }
  return absl::UnavailableError(absl::StrCat("ConfigMap ", key,
                                             " kept changing while the operator wrote it (",
                                             options_.conflict_retries + 1, " attempts)"));
}

absl::StatusOr<CorednsConfigReconciler::Pass> CorednsConfigReconciler::RunPass() {
  const CorednsTarget& t = options_.target;
  const std::string cm_name = ConfigMapName(t);
  // 1. The Service, before the ConfigMap (see the header on uninstall).
  bool remove = false;
  Problem problem;
  std::string upstream;
  absl::StatusOr<nlohmann::json> service =
      api_->Get(kServices, t.service_namespace, t.service_name);
  if (!service.ok()) {
    if (service.status().code() == absl::StatusCode::kPermissionDenied) {
      Report({"CoreDNSForbidden", absl::StrCat("the operator may not read its Service ",
                                               ServiceName(t), ": ", service.status().message(),
                                               " (the chart grants get on it with "
                                               "dns.configureCoreDNS=true)")});
      return Pass::kDone;
    }
    if (!absl::IsNotFound(service.status())) {
      return Annotate(service.status(), "reading the operator's Service " + ServiceName(t));
    }
    remove = true;
    problem = {"DNSServiceNotFound",
               absl::StrCat("Service ", ServiceName(t),
                            " (--dns-service) does not exist, so CoreDNS has nothing to forward "
                            "the mesh domains to; its server blocks are removed from ConfigMap ",
                            cm_name, " until the Service is back")};
  } else if (RemovalRequested(*service)) {
    remove = true;
    problem = {
        "CoreDNSRemovalRequested",
        absl::StrCat("Service ", ServiceName(t), " carries the annotation ",
                     kCorednsRemovalAnnotation,
                     " (set by the chart's uninstall hook), so the operator keeps its server "
                     "blocks out of ConfigMap ",
                     cm_name, "; remove the annotation to configure CoreDNS again")};
  } else if (absl::StatusOr<std::string> target = UpstreamOf(*service, t); target.ok()) {
    upstream = *target;
  } else {
    remove = true;
    problem = {"DNSServiceUnusable", std::string(target.status().message())};
  }

  // 2. The ConfigMap.
  absl::StatusOr<nlohmann::json> configmap =
      api_->Get(kube::kConfigMaps, t.configmap_namespace, t.configmap_name);
  if (!configmap.ok()) {
    if (absl::IsNotFound(configmap.status())) {
      Report({"CoreDNSConfigMapNotFound",
              absl::StrCat("ConfigMap ", cm_name,
                           " does not exist, so pods cannot resolve the mesh domains through the "
                           "cluster DNS; the operator looks again every ",
                           absl::FormatDuration(options_.resync_period),
                           " (a cluster whose DNS is not CoreDNS: set dns.configureCoreDNS=false "
                           "and forward the zones by hand, docs/helm.md)")});
      return Pass::kDone;
    }
    if (configmap.status().code() == absl::StatusCode::kPermissionDenied) {
      Report({"CoreDNSForbidden", absl::StrCat("the operator may not read ConfigMap ", cm_name,
                                               ": ", configmap.status().message())});
      return Pass::kDone;
    }
    return Annotate(configmap.status(), "reading ConfigMap " + cm_name);
  }
  std::optional<std::string> corefile = CorefileOf(*configmap);
  if (!corefile) {
    Report(
        {"CoreDNSCorefileMissing", absl::StrCat("ConfigMap ", cm_name, " has no key \"",
                                                kCorefileKey, "\"; the operator looks again every ",
                                                absl::FormatDuration(options_.resync_period))});
    return Pass::kDone;
  }

  // 3. The edit.
  const std::vector<coredns::ServerBlock> blocks =
      remove ? std::vector<coredns::ServerBlock>{} : coredns::PlanServerBlocks(source_());
  absl::StatusOr<coredns::CorefileEdit> edit =
      remove ? coredns::RemoveMarkedRegion(*corefile, t.release)
             : coredns::ApplyMarkedRegion(*corefile, t.release, blocks, upstream);
  if (!edit.ok()) {
    Report({"CoreDNSMarkersInvalid",
            absl::StrCat("ConfigMap ", cm_name, ": ", edit.status().message())});
    return Pass::kDone;
  }
  if (problem.reason.empty() && !edit->skipped.empty()) {
    problem = {"CoreDNSZoneTaken",
               absl::StrCat("ConfigMap ", cm_name, " already has a server block of its own for ",
                            absl::StrJoin(edit->skipped, ", "),
                            ", so the operator leaves it out of its block (CoreDNS refuses a zone "
                            "defined twice); make that block forward to ",
                            upstream, " or remove it")};
  }
  if (!edit->changed) {
    counters_.unchanged.fetch_add(1, std::memory_order_relaxed);
    Report(problem);
    return Pass::kDone;
  }

  // 4. The write, on the resourceVersion read in 2.
  nlohmann::json updated = *configmap;
  updated["data"][kCorefileKey] = edit->corefile;
  absl::StatusOr<nlohmann::json> written =
      api_->Update(kube::kConfigMaps, t.configmap_namespace, updated);
  if (!written.ok()) {
    if (kube::IsConflict(written.status()) || absl::IsNotFound(written.status())) {
      counters_.conflicts.fetch_add(1, std::memory_order_relaxed);
      return Pass::kAgain;
    }
    if (written.status().code() == absl::StatusCode::kPermissionDenied) {
      Report({"CoreDNSForbidden", absl::StrCat("the operator may not update ConfigMap ", cm_name,
                                               ": ", written.status().message())});
      return Pass::kDone;
    }
    return Annotate(written.status(), "updating ConfigMap " + cm_name);
  }
  counters_.writes.fetch_add(1, std::memory_order_relaxed);
  const std::string summary = remove ? "" : Summary(blocks, edit->skipped);
  if (summary.empty()) {
    TM_LOG_INFO("CoreDNS: removed the server blocks of release {} from ConfigMap {}", t.release,
                cm_name);
  } else {
    TM_LOG_INFO("CoreDNS: ConfigMap {} forwards {} to {}", cm_name, summary, upstream);
    if (summary != written_summary_) {
      EventOnMeshes(false, "CoreDNSConfigured",
                    absl::StrCat("ConfigMap ", cm_name, " forwards ", summary, " to ", upstream,
                                 " (Service ", ServiceName(t), ")"));
    }
  }
  written_summary_ = summary;
  Report(problem);

  // 5. A write that adds zones is checked against a removal requested meanwhile.
  if (!remove) {
    absl::StatusOr<nlohmann::json> again =
        api_->Get(kServices, t.service_namespace, t.service_name);
    if (!again.ok() || RemovalRequested(*again)) return Pass::kAgain;
  }
  return Pass::kDone;
}

void CorednsConfigReconciler::Report(const Problem& problem) {
  if (problem == reported_) return;
  if (problem.reason.empty()) {
    TM_LOG_INFO("CoreDNS: {} is over", reported_.reason);
  } else {
    counters_.problems.fetch_add(1, std::memory_order_relaxed);
    TM_LOG_WARN("CoreDNS: {}: {}", problem.reason, problem.message);
    EventOnMeshes(true, problem.reason, problem.message);
  }
  reported_ = problem;
}

void CorednsConfigReconciler::EventOnMeshes(bool warning, const std::string& reason,
                                            const std::string& message) {
  if (meshes_ == nullptr || events_ == nullptr) return;
  for (const nlohmann::json& mesh : meshes_->Snapshot()) {
    if (kube::BeingDeleted(mesh)) continue;
    if (warning) {
      events_->Warning(mesh, reason, message);
    } else {
      events_->Normal(mesh, reason, message);
    }
  }
}

absl::Status RemoveCorednsConfig(kube::Api* api, const CorednsTarget& t, int conflict_retries) {
  const std::string cm_name = ConfigMapName(t);
  absl::StatusOr<nlohmann::json> service = api->Get(kServices, t.service_namespace, t.service_name);
  if (service.ok() && !RemovalRequested(*service)) {
    const nlohmann::json patch = {
        {"metadata", {{"annotations", {{kCorednsRemovalAnnotation, "uninstall"}}}}}};
    absl::StatusOr<nlohmann::json> patched =
        api->Patch(kServices, t.service_namespace, t.service_name, patch);
    if (!patched.ok() && !absl::IsNotFound(patched.status())) {
      return Annotate(patched.status(), "annotating Service " + ServiceName(t));
    }
  } else if (!service.ok() && !absl::IsNotFound(service.status())) {
    return Annotate(service.status(), "reading Service " + ServiceName(t));
  }
  for (int attempt = 0; attempt <= conflict_retries; ++attempt) {
    absl::StatusOr<nlohmann::json> configmap =
        api->Get(kube::kConfigMaps, t.configmap_namespace, t.configmap_name);
    if (absl::IsNotFound(configmap.status())) {
      TM_LOG_INFO("CoreDNS: ConfigMap {} does not exist: nothing to remove", cm_name);
      return absl::OkStatus();
    }
    if (!configmap.ok()) return Annotate(configmap.status(), "reading ConfigMap " + cm_name);
    std::optional<std::string> corefile = CorefileOf(*configmap);
    if (!corefile) {
      TM_LOG_INFO("CoreDNS: ConfigMap {} has no {}: nothing to remove", cm_name, kCorefileKey);
      return absl::OkStatus();
    }
    absl::StatusOr<coredns::CorefileEdit> edit = coredns::RemoveMarkedRegion(*corefile, t.release);
    if (!edit.ok()) return Annotate(edit.status(), "ConfigMap " + cm_name);
    if (!edit->changed) {
      TM_LOG_INFO("CoreDNS: ConfigMap {} has no server blocks of release {}: nothing to remove",
                  cm_name, t.release);
      return absl::OkStatus();
    }
    nlohmann::json updated = *configmap;
    updated["data"][kCorefileKey] = edit->corefile;
    absl::StatusOr<nlohmann::json> written =
        api->Update(kube::kConfigMaps, t.configmap_namespace, updated);
    if (written.ok()) {
      TM_LOG_INFO("CoreDNS: removed the server blocks of release {} from ConfigMap {}", t.release,
                  cm_name);
      return absl::OkStatus();
    }
    if (!kube::IsConflict(written.status()) && !absl::IsNotFound(written.status())) {
      return Annotate(written.status(), "updating ConfigMap " + cm_name);
    }
  }
  return absl::UnavailableError(
      absl::StrCat("ConfigMap ", cm_name, " kept changing while the operator wrote it"));
}

}  // namespace tunnelmesh
