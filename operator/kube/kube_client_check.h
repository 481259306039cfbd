// Shared by kube_client_check's two files (kube_client_check.cc: the HTTP client's own checks and
// main; kube_client_check_controllers.cc: informers, Events and leader election over it): the
// objects they use, the PASS/FAIL report and polling. A tool run by e2e/cluster/kube_client.sh,
// single-threaded but for the informers' handlers.
#pragma once

#include <functional>
#include <memory>
#include <string>

#include "absl/time/time.h"
#include "nlohmann/json.hpp"
#include "operator/kube/config.h"
#include "operator/kube/http_api.h"
#include "operator/kube/resource.h"

namespace tunnelmesh::kube::check {

inline const Resource kNamespaces{"", "v1", "namespaces", false, "Namespace"};
inline const Resource kRoles{"rbac.authorization.k8s.io", "v1", "roles", true, "Role"};
inline const Resource kRoleBindings{"rbac.authorization.k8s.io", "v1", "rolebindings", true,
                                    "RoleBinding"};
inline constexpr char kNs[] = "default";

struct Flags {
  std::string kubeconfig, kubeconfig_ca, ca_file, wrong_ca_file, nobody_token, watcher_token;
  std::string localhost_server, client_cert_file, client_key_file;
};

// Prints a PASS or FAIL line; a FAIL makes the tool exit 1 at the end.
void Report(bool ok, const std::string& name, const std::string& detail);
// Polls `condition` every 20 ms until it holds or `timeout` passes.
bool WaitFor(absl::Duration timeout, const std::function<bool()>& condition);
// A ConfigMap in kNs labelled app=`app` with data.value = `value`.
nlohmann::json ConfigMap(const std::string& name, const std::string& app,
                         const std::string& value = "1");
std::string Rv(const nlohmann::json& object);
// A client for `config`, or a FAIL report and exit 1.
std::unique_ptr<HttpApi> MustClient(ClusterConfig config, HttpApi::Options options = {});

// kube_client_check_controllers.cc.
void CheckInformer(HttpApi& client);
void CheckGone(HttpApi& admin, const ClusterConfig& base, const Flags& flags);
void CheckEvents(HttpApi& client);
void CheckLeader(const ClusterConfig& config);

}  // namespace tunnelmesh::kube::check
