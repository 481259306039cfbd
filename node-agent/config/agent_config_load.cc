// The parts of the agent's configuration that touch the host: resolving Endpoint host names
// (getaddrinfo) and reading the config file (size, type and permission checks). The parsing
// itself is pure (agent_config.cc).
#include <netdb.h>
#include <sys/socket.h>
#include <sys/stat.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <memory>
#include <string>

#include "absl/strings/str_cat.h"
#include "lib/base/log.h"
#include "lib/base/status_macros.h"
#include "node-agent/config/agent_config.h"
#include "node-agent/config/agent_config_syntax.h"

namespace tunnelmesh {
namespace {

using config_syntax::Quote;

// A config file is a few kilobytes; anything this large is the wrong file.
constexpr size_t kMaxConfigBytes = 1 << 20;

// Closes a FILE* on scope exit.
struct FileCloser {
  void operator()(std::FILE* file) const { std::fclose(file); }
};

}  // namespace

absl::StatusOr<IpAddress> ResolveHostName(const std::string& host) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_DGRAM;
  hints.ai_protocol = IPPROTO_UDP;
  addrinfo* result = nullptr;
  int rc = getaddrinfo(host.c_str(), nullptr, &hints, &result);
  if (rc != 0) {
    // A name that does not exist is the config's fault; anything else may pass with time.
    bool permanent = rc == EAI_NONAME || rc == EAI_NODATA || rc == EAI_FAMILY;
    return absl::Status(
        permanent ? absl::StatusCode::kInvalidArgument : absl::StatusCode::kUnavailable,
        absl::StrCat("cannot resolve host ", Quote(host), ": ", gai_strerror(rc),
                     permanent ? "" : " (check the network and DNS, then retry)"));
  }
  std::unique_ptr<addrinfo, decltype(&freeaddrinfo)> owned(result, &freeaddrinfo);
  for (const addrinfo* info = result; info != nullptr; info = info->ai_next) {
    absl::StatusOr<Endpoint> endpoint = Endpoint::FromSockaddr(info->ai_addr, info->ai_addrlen);
    if (endpoint.ok()) return endpoint->address();
  }
  return absl::InvalidArgumentError(
      absl::StrCat("cannot resolve host ", Quote(host), ": it has no IPv4 or IPv6 address"));
}

absl::StatusOr<AgentConfig> LoadAgentConfig(const std::string& path,
                                            const HostResolver& resolve_host) {
  std::unique_ptr<std::FILE, FileCloser> file(std::fopen(path.c_str(), "rbe"));
  if (file == nullptr) {
    int error = errno;
    absl::StatusCode code = error == ENOENT ? absl::StatusCode::kNotFound
                            : error == EACCES || error == EPERM
                                ? absl::StatusCode::kPermissionDenied
                                : absl::StatusCode::kFailedPrecondition;
    return absl::Status(code,
                        absl::StrCat("cannot open config file ", path, ": ", std::strerror(error)));
  }
  struct stat info {};
  if (fstat(fileno(file.get()), &info) != 0) {
    return absl::FailedPreconditionError(
        absl::StrCat("cannot stat config file ", path, ": ", std::strerror(errno)));
  }
  if (!S_ISREG(info.st_mode)) {
    return absl::InvalidArgumentError(absl::StrCat("config file ", path, " is not a regular file"));
  }
  std::string text;
  char buffer[8192];
  size_t n;
  while ((n = std::fread(buffer, 1, sizeof(buffer), file.get())) > 0) {
    text.append(buffer, n);
    if (text.size() > kMaxConfigBytes) {
      return absl::InvalidArgumentError(
          absl::StrCat("config file ", path, " is larger than ", kMaxConfigBytes,
                       " bytes; a WireGuard config is a few kilobytes (is this the right file?)"));
    }
  }
  if (std::ferror(file.get())) {
    return absl::FailedPreconditionError(
        absl::StrCat("cannot read config file ", path, ": ", std::strerror(errno)));
  }
  ASSIGN_OR_RETURN(AgentConfig config, ParseAgentConfig(text, path, resolve_host));
  if ((info.st_mode & (S_IROTH | S_IWOTH)) != 0) {
    config.warnings.push_back(absl::StrCat(
        path, ": is accessible to every user but holds the private key (chmod 600 ", path, ")"));
  }
  for (const std::string& warning : config.warnings) TM_LOG_WARN("{}", warning);
  return config;
}

}  // namespace tunnelmesh
