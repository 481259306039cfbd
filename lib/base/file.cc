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

absl::Status WriteFileAtomically(const std::string& path, const std::string& contents, int mode) {
  const std::filesystem::path target(path);
  const std::string dir = target.has_parent_path() ? target.parent_path().string() : ".";
  std::error_code ec;
  if (!std::filesystem::exists(dir, ec)) {
    std::filesystem::create_directories(dir, ec);
    if (ec) return ErrnoStatus(ec.value(), "creating directory " + dir);
    std::filesystem::permissions(dir, std::filesystem::perms::owner_all, ec);
  }
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
