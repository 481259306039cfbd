// Where the Kubernetes API server is and how to authenticate to it: from a kubeconfig file (out of
// the cluster, `--kubeconfig FILE` or $KUBECONFIG) or from the pod's service account (in-cluster).
#pragma once

#include <functional>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"

namespace tunnelmesh::kube {

struct ClusterConfig {
  std::string server;  // "https://host:port", optionally with a path prefix
  std::string ca_pem;  // trusted CA(s) for the API server (empty: the system roots)
  bool insecure_skip_tls_verify = false;
  std::string token;  // bearer token
  std::string
      token_file;  // re-read when older than 60 s (projected SA tokens rotate); wins over token
  std::string client_cert_pem, client_key_pem;
  std::string namespace_name;  // in-cluster namespace file, or the kubeconfig context's namespace
};

// Reads a whole file; errors name the path.
using ReadFileFunction = std::function<absl::StatusOr<std::string>(const std::string& path)>;
absl::StatusOr<std::string> ReadWholeFile(const std::string& path);

// Parses kubeconfig text: current-context -> cluster (server, certificate-authority / -data,
// insecure-skip-tls-verify) and user (token, tokenFile, client-certificate / -data, client-key /
// -data). Files named in it are read through `read_file`, relative paths against the folder of
// `path`; `path` also names the file in errors, which say which field is wrong.
absl::StatusOr<ClusterConfig> ParseKubeconfig(std::string_view text, const std::string& path,
                                              const ReadFileFunction& read_file);

// ParseKubeconfig of the file at `path`.
absl::StatusOr<ClusterConfig> LoadKubeconfig(const std::string& path);

inline constexpr char kServiceAccountDir[] = "/var/run/secrets/kubernetes.io/serviceaccount";

// In a pod: KUBERNETES_SERVICE_HOST / KUBERNETES_SERVICE_PORT (an IPv6 host is bracketed) and
// token, ca.crt and namespace in `serviceaccount_dir`. The token is re-read from its file as it
// rotates. kFailedPrecondition when not in a pod.
absl::StatusOr<ClusterConfig> InClusterConfig(
    const std::string& serviceaccount_dir = kServiceAccountDir);

// `kubeconfig_flag` if non-empty, else $KUBECONFIG if set (its first entry), else in-cluster. The
// error when nothing works names all three ways.
absl::StatusOr<ClusterConfig> ResolveClusterConfig(const std::string& kubeconfig_flag);

}  // namespace tunnelmesh::kube
