// Whole-file reads and atomic writes, the only file I/O helpers in the project. Secrets (keys,
// tokens, CA keys) are written with WriteFileAtomically at mode 0600: the temporary file is created
// with that mode (never world-readable, not even for a moment), written, fsynced, renamed over the
// target, and the directory is fsynced, so a crash leaves either the old or the new contents.
#pragma once

#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace tunnelmesh {

// The whole file. NotFound when it does not exist, PermissionDenied when it may not be read,
// otherwise Unavailable; the message names the path.
[[nodiscard]] absl::StatusOr<std::string> ReadFile(const std::string& path);

// The file without leading and trailing whitespace (tokens, keys, hashes pasted with a newline).
[[nodiscard]] absl::StatusOr<std::string> ReadTrimmedFile(const std::string& path);

// Creates directory `path` and its missing parents, each with mode 0700 whatever the umask: the
// state directories and tls/ hold keys. Directories that exist keep their mode (an admin may have
// chosen it). Errors name the directory: FailedPrecondition when a component is not a directory,
// otherwise the codes ReadFile uses.
[[nodiscard]] absl::Status CreatePrivateDirectories(const std::string& path);

// Replaces `path` with `contents` atomically; `mode` applies from the first byte written. Creates
// missing parent directories as CreatePrivateDirectories does.
[[nodiscard]] absl::Status WriteFileAtomically(const std::string& path, const std::string& contents,
                                               int mode = 0600);

}  // namespace tunnelmesh
