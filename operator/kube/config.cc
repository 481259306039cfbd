#include "operator/kube/config.h"

#include <cstdlib>
#include <string>

#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "lib/base/file.h"
#include "lib/base/status_macros.h"
#include "yaml-cpp/yaml.h"

namespace tunnelmesh::kube {

absl::StatusOr<std::string> ReadWholeFile(const std::string& path) {
  absl::StatusOr<std::string> text = ReadFile(path);
  if (!text.ok()) return absl::Status(text.status().code(), "cannot read " + path);
  return text;
}

namespace {

std::string Scalar(const YAML::Node& node) {
  return node && node.IsScalar() ? node.Scalar() : std::string();
}

// The `field` map of the entry named `name` in the list `list` (clusters, users, contexts).
YAML::Node FindNamed(const YAML::Node& list, const std::string& name, const char* field) {
  if (!list || !list.IsSequence()) return YAML::Node();
  for (const YAML::Node& entry : list) {
    if (entry.IsMap() && Scalar(entry["name"]) == name) return entry[field];
  }
  return YAML::Node();
}

// Parsing state for one kubeconfig: names the file and resolves the files it names.
struct KubeconfigReader {
  const std::string& path;
  const ReadFileFunction& read_file;
  std::string dir;

  absl::Status Error(absl::StatusCode code, const std::string& field, const std::string& what) {
    return absl::Status(code, "kubeconfig " + path + ": " + field + ": " + what);
  }

  std::string Resolve(const std::string& file) const {
    if (file.empty() || file[0] == '/' || dir.empty()) return file;
    return dir + "/" + file;
  }

  // PEM from `<key>-data` (base64) or from the file `<key>`; empty when neither is set.
  absl::StatusOr<std::string> Pem(const YAML::Node& map, const std::string& prefix,
                                  const std::string& key) {
    const std::string data = Scalar(map[key + "-data"]);
    if (!data.empty()) {
      std::string decoded;
      if (!absl::Base64Unescape(data, &decoded)) {
        return Error(absl::StatusCode::kInvalidArgument, prefix + key + "-data",
                     "not valid base64");
      }
      return decoded;
    }
    const std::string file = Scalar(map[key]);
    if (file.empty()) return std::string();
    absl::StatusOr<std::string> contents = read_file(Resolve(file));
    if (!contents.ok()) {
      return Error(absl::StatusCode::kInvalidArgument, prefix + key,
                   std::string(contents.status().message()));
    }
    return *contents;
  }

  absl::StatusOr<ClusterConfig> Parse(const YAML::Node& root) {
    if (!root.IsMap()) {
      return absl::InvalidArgumentError("kubeconfig " + path + ": not a YAML map");
    }
    ClusterConfig config;
    const std::string context_name = Scalar(root["current-context"]);
    if (context_name.empty()) {
      return Error(absl::StatusCode::kInvalidArgument, "current-context",
                   "not set (kubectl config use-context NAME)");
    }
    const YAML::Node context = FindNamed(root["contexts"], context_name, "context");
    if (!context || !context.IsMap()) {
      return Error(absl::StatusCode::kInvalidArgument, "current-context",
                   "context \"" + context_name + "\" is not in contexts");
    }
    config.namespace_name = Scalar(context["namespace"]);

    const std::string cluster_name = Scalar(context["cluster"]);
    const std::string cluster_field = "clusters[" + cluster_name + "].cluster.";
    const YAML::Node cluster = FindNamed(root["clusters"], cluster_name, "cluster");
    if (!cluster || !cluster.IsMap()) {
      return Error(absl::StatusCode::kInvalidArgument,
                   "contexts[" + context_name + "].context.cluster",
                   "cluster \"" + cluster_name + "\" is not in clusters");
    }
    config.server = Scalar(cluster["server"]);
    if (!absl::StartsWith(config.server, "https://") &&
        !absl::StartsWith(config.server, "http://")) {
      return Error(absl::StatusCode::kInvalidArgument, cluster_field + "server",
                   "\"" + config.server + "\" is not an https:// URL");
    }
    while (config.server.back() == '/') config.server.pop_back();
    if (const YAML::Node insecure = cluster["insecure-skip-tls-verify"]; insecure) {
      bool value = false;
      if (!YAML::convert<bool>::decode(insecure, value)) {
        return Error(absl::StatusCode::kInvalidArgument, cluster_field + "insecure-skip-tls-verify",
                     "not true or false");
      }
      config.insecure_skip_tls_verify = value;
    }
    ASSIGN_OR_RETURN(config.ca_pem, Pem(cluster, cluster_field, "certificate-authority"));

    // A context without a user authenticates with nothing (anonymous).
    const std::string user_name = Scalar(context["user"]);
    if (user_name.empty()) return config;
    const std::string user_field = "users[" + user_name + "].user.";
    const YAML::Node user = FindNamed(root["users"], user_name, "user");
    if (!user || !user.IsMap()) {
      return Error(absl::StatusCode::kInvalidArgument,
                   "contexts[" + context_name + "].context.user",
                   "user \"" + user_name + "\" is not in users");
    }
    config.token = std::string(absl::StripAsciiWhitespace(Scalar(user["token"])));
    const std::string token_file = Scalar(user["tokenFile"]);
    if (!token_file.empty()) {
      config.token_file = Resolve(token_file);
      absl::StatusOr<std::string> token = read_file(config.token_file);
      if (!token.ok()) {
        return Error(absl::StatusCode::kInvalidArgument, user_field + "tokenFile",
                     std::string(token.status().message()));
      }
    }
    ASSIGN_OR_RETURN(config.client_cert_pem, Pem(user, user_field, "client-certificate"));
    ASSIGN_OR_RETURN(config.client_key_pem, Pem(user, user_field, "client-key"));
    if (config.client_cert_pem.empty() != config.client_key_pem.empty()) {
      return Error(
          absl::StatusCode::kInvalidArgument,
          user_field + (config.client_cert_pem.empty() ? "client-certificate" : "client-key"),
          "a client certificate needs both client-certificate and client-key");
    }
    const bool has_credentials =
        !config.token.empty() || !config.token_file.empty() || !config.client_cert_pem.empty();
    for (const char* plugin : {"exec", "auth-provider"}) {
      if (!has_credentials && user[plugin]) {
        return Error(absl::StatusCode::kUnimplemented, user_field + plugin,
                     "credential plugins are not supported; use a token, tokenFile or client "
                     "certificate");
      }
    }
    return config;
  }
};

std::string Trimmed(std::string text) { return std::string(absl::StripAsciiWhitespace(text)); }

}  // namespace

absl::StatusOr<ClusterConfig> ParseKubeconfig(std::string_view text, const std::string& path,
                                              const ReadFileFunction& read_file) {
  const size_t slash = path.rfind('/');
  KubeconfigReader reader{path, read_file,
                          slash == std::string::npos ? std::string() : path.substr(0, slash)};
  if (slash == 0) reader.dir = "/";
  try {
    return reader.Parse(YAML::Load(std::string(text)));
  } catch (const YAML::Exception& e) {
    return absl::InvalidArgumentError("kubeconfig " + path + ": not valid YAML: " + e.what());
  } catch (const std::exception& e) {
    return absl::InvalidArgumentError("kubeconfig " + path + ": " + e.what());
  }
}

absl::StatusOr<ClusterConfig> LoadKubeconfig(const std::string& path) {
  absl::StatusOr<std::string> text = ReadWholeFile(path);
  if (!text.ok()) {
    return absl::Status(text.status().code(),
                        "kubeconfig: " + std::string(text.status().message()));
  }
  return ParseKubeconfig(*text, path, ReadWholeFile);
}

absl::StatusOr<ClusterConfig> InClusterConfig(const std::string& serviceaccount_dir) {
  const char* host = std::getenv("KUBERNETES_SERVICE_HOST");
  const char* port = std::getenv("KUBERNETES_SERVICE_PORT");
  if (host == nullptr || port == nullptr || *host == '\0' || *port == '\0') {
    return absl::FailedPreconditionError(
        "not running in a pod: KUBERNETES_SERVICE_HOST and KUBERNETES_SERVICE_PORT are not set");
  }
  ClusterConfig config;
  const std::string host_text(host);
  const bool ipv6 = host_text.find(':') != std::string::npos;
  config.server = "https://" + (ipv6 ? "[" + host_text + "]" : host_text) + ":" + port;
  config.token_file = serviceaccount_dir + "/token";
  absl::StatusOr<std::string> token = ReadWholeFile(config.token_file);
  if (!token.ok()) {
    return absl::FailedPreconditionError("in-cluster service account token: " +
                                         std::string(token.status().message()));
  }
  absl::StatusOr<std::string> ca = ReadWholeFile(serviceaccount_dir + "/ca.crt");
  if (!ca.ok()) {
    return absl::FailedPreconditionError("in-cluster API server CA: " +
                                         std::string(ca.status().message()));
  }
  config.ca_pem = *ca;
  if (absl::StatusOr<std::string> ns = ReadWholeFile(serviceaccount_dir + "/namespace"); ns.ok()) {
    config.namespace_name = Trimmed(*ns);
  }
  return config;
}

absl::StatusOr<ClusterConfig> ResolveClusterConfig(const std::string& kubeconfig_flag) {
  if (!kubeconfig_flag.empty()) {
    absl::StatusOr<ClusterConfig> config = LoadKubeconfig(kubeconfig_flag);
    if (!config.ok()) return Annotate(config.status(), "--kubeconfig");
    return config;
  }
  if (const char* env = std::getenv("KUBECONFIG"); env != nullptr && *env != '\0') {
    // kubectl merges a colon-separated list; we take the first file.
    const std::string first(std::string_view(env).substr(0, std::string_view(env).find(':')));
    absl::StatusOr<ClusterConfig> config = LoadKubeconfig(first);
    if (!config.ok()) return Annotate(config.status(), "$KUBECONFIG");
    return config;
  }
  absl::StatusOr<ClusterConfig> config = InClusterConfig();
  if (!config.ok()) {
    return absl::FailedPreconditionError(
        "no Kubernetes API server configured: pass --kubeconfig FILE, set $KUBECONFIG, or run in "
        "a pod with a service account (in-cluster: " +
        std::string(config.status().message()) +
        "); to run without Kubernetes, pass --standalone --manifests DIR --state-dir DIR");
  }
  return config;
}

}  // namespace tunnelmesh::kube
