// tunnelmesh-cni: the chained CNI plugin. Without arguments it is the plugin: the container
// runtime runs it with CNI_* environment variables and the network configuration on stdin, and it
// prints the result or a CNI error on stdout (plugin.h). `tunnelmesh-cni install` is the installer
// the chart runs beside the agent (conflist_installer.h): it stays running, keeps the plugin in the
// node's CNI configuration and takes it out again on SIGTERM.
#include <signal.h>

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <iterator>
#include <string>

#include "CLI/CLI.hpp"
#include "lib/base/log.h"
#include "node-agent/cni/conflist_installer.h"
#include "node-agent/cni/plugin.h"

namespace {

std::atomic<bool> g_stop{false};

void RequestStop(int /*signal*/) { g_stop.store(true); }

int RunInstaller(int argc, char** argv) {
  tunnelmesh::cni::InstallOptions options;
  CLI::App app{
      "tunnelmesh-cni install: puts tunnelmesh-cni into this node's CNI configuration (the plugin "
      "chain of the first configuration in --conf-dir, and the binary into --bin-dir), keeps it "
      "there, and takes both out again on SIGTERM or SIGINT",
      "tunnelmesh-cni install"};
  app.add_option("--conf-dir", options.conf_dir, "the runtime's CNI configuration folder")
      ->capture_default_str();
  app.add_option("--bin-dir", options.bin_dir, "the runtime's CNI plugin folder (CNI_PATH)")
      ->capture_default_str();
  app.add_option("--mesh", options.mesh, "the plugin entry's \"mesh\"");
  app.add_option("--agent-socket", options.agent_socket,
                 "the plugin entry's \"agentSocket\" (the agent's STATE_DIR/INTERFACE.sock)");
  app.add_option("--pod-interface", options.pod_interface,
                 "the plugin entry's \"podInterface\" (the pod's mesh interface)");
  std::string log_level = "info";
  app.add_option("--log-level", log_level, "debug, info, warn or error")->capture_default_str();
  // CLI11 reports through exceptions; this is the one place they are caught.
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    const int rc = app.exit(e);
    return rc == 0 ? 0 : 2;
  }
  if (!tunnelmesh::InitLogging(log_level)) {
    std::fprintf(stderr,
                 "tunnelmesh-cni install: --log-level must be debug, info, warn or error\n");
    return 2;
  }
  struct sigaction action = {};
  action.sa_handler = RequestStop;
  sigemptyset(&action.sa_mask);
  sigaction(SIGTERM, &action, nullptr);
  sigaction(SIGINT, &action, nullptr);
  absl::Status status = tunnelmesh::cni::InstallAndWatch(options, g_stop);
  if (!status.ok()) {
    std::fprintf(stderr, "tunnelmesh-cni install: %s\n", std::string(status.message()).c_str());
    return 1;
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc > 1 && std::string(argv[1]) == "install") return RunInstaller(argc - 1, argv + 1);
  if (argc > 1) {
    std::fprintf(stderr,
                 "tunnelmesh-cni is a CNI plugin: the container runtime runs it with CNI_COMMAND "
                 "and the other CNI_* variables set and the network configuration on stdin, "
                 "without arguments (docs/configuration.md, \"tunnelmesh-cni\"); `tunnelmesh-cni "
                 "install --help` is the installer\n");
    return 2;
  }
  std::string input;
  // Read stdin whole in every case (it is small; VERSION may come with an empty one).
  input.assign(std::istreambuf_iterator<char>(std::cin), std::istreambuf_iterator<char>());
  tunnelmesh::cni::PluginOutput out =
      tunnelmesh::cni::RunPlugin([](const char* name) { return std::getenv(name); }, input);
  if (!out.stderr_text.empty()) std::fputs(out.stderr_text.c_str(), stderr);
  if (!out.stdout_text.empty()) std::printf("%s\n", out.stdout_text.c_str());
  return out.exit_code;
}
