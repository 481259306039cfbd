#include "lib/base/file.h"

#include <errno.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>

#include "absl/strings/ascii.h"

namespace tunnelmesh {
namespace {

absl::Status ErrnoStatus(int error, const std::string& what) {
  const std::string message = what + ": " + std::strerror(error);
  switch (error) {
    case ENOENT:
      return absl::NotFoundError(message);
    case EACCES:
    case EPERM:
      return absl::PermissionDeniedError(message);
    default:
      return absl::UnavailableError(message);
  }
}

// Closes the descriptor on every path out.
class Fd {
 public:
  explicit Fd(int fd) : fd_(fd) {}
  ~Fd() {
    if (fd_ >= 0) close(fd_);
  }
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  int get() const { return fd_; }
  int Release() {
    const int fd = fd_;
    fd_ = -1;
    return fd;
  }

 private:
  int fd_;
};

}  // namespace

absl::StatusOr<std::string> ReadFile(const std::string& path) {
  Fd fd(open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (fd.get() < 0) return ErrnoStatus(errno, "reading " + path);
  std::string contents;
  char buffer[8192];
  while (true) {
    const ssize_t n = read(fd.get(), buffer, sizeof(buffer));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return ErrnoStatus(errno, "reading " + path);
    if (n == 0) break;
    contents.append(buffer, static_cast<size_t>(n));
  }
  return contents;
}

absl::StatusOr<std::string> ReadTrimmedFile(const std::string& path) {
  absl::StatusOr<std::string> contents = ReadFile(path);
  if (!contents.ok()) return contents.status();
  return std::string(absl::StripAsciiWhitespace(*contents));
}

absl::Status CreatePrivateDirectories(const std::string& path) {
  std::filesystem::path prefix;
  for (const std::filesystem::path& part : std::filesystem::path(path)) {
    prefix /= part;
    if (part.empty() || part == "." || part == "..") continue;
    const std::string dir = prefix.string();
    // std::filesystem::create_directories would use 0777 minus the umask (0755 with the usual
    // 022). mkdir with 0700 can only lose bits to the umask; chmod gives exactly 0700 back.
    if (mkdir(dir.c_str(), 0700) == 0) {
      if (chmod(dir.c_str(), 0700) != 0) return ErrnoStatus(errno, "setting mode 0700 on " + dir);
      continue;
    }
    const int error = errno;
    struct stat st {};
    if (error != EEXIST) return ErrnoStatus(error, "creating directory " + dir);
    if (stat(dir.c_str(), &st) != 0 || !S_ISDIR(st.st_mode)) {
      return absl::FailedPreconditionError(
          "creating directory " + dir +
          ": it exists and is not a directory (move it away, or choose "
          "another path)");
    }
  }
  return absl::OkStatus();
}

absl::Status WriteFileAtomically(const std::string& path, const std::string& contents, int mode) {
  const std::filesystem::path target(path);
  const std::string dir = target.has_parent_path() ? target.parent_path().string() : ".";
  if (absl::Status s = CreatePrivateDirectories(dir); !s.ok()) return s;
  const std::string tmp = path + ".tmp";
  // O_EXCL after unlinking a leftover: the mode given here is the file's mode from its creation.
  unlink(tmp.c_str());
  Fd fd(open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode));
  if (fd.get() < 0) return ErrnoStatus(errno, "creating " + tmp);
  // The umask may have cleared bits the caller asked for: the file gets exactly `mode`.
  if (fchmod(fd.get(), static_cast<mode_t>(mode)) != 0) {
    return ErrnoStatus(errno, "setting the mode of " + tmp);
  }
  size_t done = 0;
  while (done < contents.size()) {
    const ssize_t n = write(fd.get(), contents.data() + done, contents.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      const absl::Status s = ErrnoStatus(errno, "writing " + tmp);
      unlink(tmp.c_str());
      return s;
    }
    done += static_cast<size_t>(n);
  }
  if (fsync(fd.get()) != 0) {
    const absl::Status s = ErrnoStatus(errno, "fsync " + tmp);
    unlink(tmp.c_str());
    return s;
  }
  close(fd.Release());
  if (rename(tmp.c_str(), path.c_str()) != 0) {
    const absl::Status s = ErrnoStatus(errno, "renaming " + tmp + " to " + path);
    unlink(tmp.c_str());
    return s;
  }
  Fd dir_fd(open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (dir_fd.get() >= 0) (void)fsync(dir_fd.get());
  return absl::OkStatus();
}

}  // namespace tunnelmesh
