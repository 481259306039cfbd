#include "node-agent/tun/linux_tun_device.h"

#include <fcntl.h>
#include <linux/capability.h>
#include <net/if.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdint>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "node-agent/tun/testing/network_namespace.h"

namespace tunnelmesh {
namespace {

using ::testing::HasSubstr;
using ::testing::StartsWith;

// Every test runs in its own network namespace, so names never clash with the host or other tests.
class LinuxTunDeviceTest : public ::testing::Test {
 protected:
  void SetUp() override {
    absl::Status entered = EnterNewNetworkNamespace();
    if (entered.code() == absl::StatusCode::kPermissionDenied) GTEST_SKIP() << entered;
    ASSERT_TRUE(entered.ok()) << entered;
  }
};

TEST_F(LinuxTunDeviceTest, CreatesNonBlockingInterfaceThatVanishesWithTheObject) {
  absl::StatusOr<std::unique_ptr<LinuxTunDevice>> tun = LinuxTunDevice::Create("tm0");
  ASSERT_TRUE(tun.ok()) << tun.status();
  EXPECT_EQ((*tun)->name(), "tm0");
  EXPECT_NE(if_nametoindex("tm0"), 0u);
  int flags = fcntl((*tun)->fd(), F_GETFL);
  EXPECT_NE(flags & O_NONBLOCK, 0);
  EXPECT_NE(fcntl((*tun)->fd(), F_GETFD) & FD_CLOEXEC, 0);

  // Nothing routed into the interface yet: 0, not an error.
  std::vector<uint8_t> buffer(2048);
  absl::StatusOr<size_t> n = (*tun)->Read(absl::MakeSpan(buffer));
  ASSERT_TRUE(n.ok()) << n.status();
  EXPECT_EQ(*n, 0u);

  tun->reset();
  EXPECT_EQ(if_nametoindex("tm0"), 0u);
}

TEST_F(LinuxTunDeviceTest, EmptyNameLetsTheKernelPick) {
  absl::StatusOr<std::unique_ptr<LinuxTunDevice>> tun = LinuxTunDevice::Create("");
  ASSERT_TRUE(tun.ok()) << tun.status();
  EXPECT_THAT((*tun)->name(), StartsWith("tun"));
  EXPECT_NE(if_nametoindex((*tun)->name().c_str()), 0u);
}

TEST_F(LinuxTunDeviceTest, NameHeldByAnotherDeviceIsAlreadyExists) {
  absl::StatusOr<std::unique_ptr<LinuxTunDevice>> first = LinuxTunDevice::Create("tm0");
  ASSERT_TRUE(first.ok()) << first.status();
  absl::StatusOr<std::unique_ptr<LinuxTunDevice>> second = LinuxTunDevice::Create("tm0");
  ASSERT_FALSE(second.ok());
  EXPECT_EQ(second.status().code(), absl::StatusCode::kAlreadyExists);
  EXPECT_THAT(std::string(second.status().message()),
              StartsWith("creating TUN interface \"tm0\" (TUNSETIFF): Device or resource busy "
                         "(another process already holds this interface"));
}

TEST_F(LinuxTunDeviceTest, NameOfANonTunInterfaceIsInvalid) {
  absl::StatusOr<std::unique_ptr<LinuxTunDevice>> tun = LinuxTunDevice::Create("lo");
  ASSERT_FALSE(tun.ok());
  EXPECT_EQ(tun.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(tun.status().message()), HasSubstr("exists and is not a TUN device"));
}

TEST_F(LinuxTunDeviceTest, WriteWhileDownIsUnavailable) {
  absl::StatusOr<std::unique_ptr<LinuxTunDevice>> tun = LinuxTunDevice::Create("tm0");
  ASSERT_TRUE(tun.ok()) << tun.status();
  // A minimal IPv4 header; the kernel refuses it before looking, because the link is down.
  std::vector<uint8_t> packet = {0x45, 0, 0,  20, 0, 0, 0,  0, 64, 17,
                                 0,    0, 10, 0,  0, 2, 10, 0, 0,  1};
  absl::Status written = (*tun)->Write(packet);
  EXPECT_EQ(written.code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(std::string(written.message()), "writing to TUN interface tm0: the link is down");
}

TEST_F(LinuxTunDeviceTest, WithoutCapNetAdminTheErrorSaysSo) {
  pid_t child = fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    // Drop CAP_NET_ADMIN from the effective set, then try.
    __user_cap_header_struct header{_LINUX_CAPABILITY_VERSION_3, 0};
    __user_cap_data_struct data[2] = {};
    if (syscall(SYS_capget, &header, data) != 0) _exit(10);
    data[CAP_NET_ADMIN / 32].effective &= ~(1u << (CAP_NET_ADMIN % 32));
    if (syscall(SYS_capset, &header, data) != 0) _exit(11);
    absl::StatusOr<std::unique_ptr<LinuxTunDevice>> tun = LinuxTunDevice::Create("tm1");
    if (tun.ok()) _exit(12);
    if (tun.status().code() != absl::StatusCode::kPermissionDenied) _exit(13);
    if (std::string(tun.status().message()).find("needs CAP_NET_ADMIN") == std::string::npos) {
      _exit(14);
    }
    _exit(0);
  }
  int status = 0;
  ASSERT_EQ(waitpid(child, &status, 0), child);
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 0) << "10/11: capget/capset failed, 12: created anyway, "
                                       "13: wrong code, 14: message lacks the hint";
}

TEST(LinuxTunDeviceNameTest, InvalidNamesAreRejectedBeforeTouchingTheKernel) {
  struct Case {
    std::string name;
    std::string message;
  };
  for (const Case& c : std::vector<Case>{
           {"tunnelmesh-agent0",
            "TUN interface name \"tunnelmesh-agent0\" has 17 characters (at "
            "most 15 allowed)"},
           {"tm/0",
            "TUN interface name \"tm/0\" may not contain \"/\", \":\", \"%\", spaces or "
            "control characters"},
           {"tm 0",
            "TUN interface name \"tm 0\" may not contain \"/\", \":\", \"%\", spaces or "
            "control characters"},
           {"tm%d",
            "TUN interface name \"tm%d\" may not contain \"/\", \":\", \"%\", spaces or "
            "control characters"},
           {"..", "TUN interface name \"..\" is reserved"},
       }) {
    absl::StatusOr<std::unique_ptr<LinuxTunDevice>> tun = LinuxTunDevice::Create(c.name);
    ASSERT_FALSE(tun.ok()) << c.name;
    EXPECT_EQ(tun.status().code(), absl::StatusCode::kInvalidArgument) << c.name;
    EXPECT_EQ(std::string(tun.status().message()), c.message);
  }
}

}  // namespace
}  // namespace tunnelmesh
