// tunnelmesh-cni: the chained CNI plugin. The container runtime runs it with CNI_* environment
// variables and the network configuration on stdin; it prints the result or a CNI error on stdout
// (plugin.h). It takes no flags.
#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <iterator>
#include <string>

#include "node-agent/cni/plugin.h"

int main(int argc, char** /*argv*/) {
  if (argc > 1) {
    std::fprintf(stderr,
                 "tunnelmesh-cni is a CNI plugin: the container runtime runs it with CNI_COMMAND "
                 "and the other CNI_* variables set and the network configuration on stdin; it "
                 "takes no arguments (see docs/configuration.md, \"tunnelmesh-cni\")\n");
    return 2;
  }
  std::string input;
  // VERSION, GC and STATUS may come without a configuration worth reading; ADD, DEL and CHECK
  // always have one. Read stdin whole in every case (it is small).
  input.assign(std::istreambuf_iterator<char>(std::cin), std::istreambuf_iterator<char>());
  tunnelmesh::cni::PluginOutput out =
      tunnelmesh::cni::RunPlugin([](const char* name) { return std::getenv(name); }, input);
  if (!out.stderr_text.empty()) std::fputs(out.stderr_text.c_str(), stderr);
  if (!out.stdout_text.empty()) std::printf("%s\n", out.stdout_text.c_str());
  return out.exit_code;
}
