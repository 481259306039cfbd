// RecordingRunner: a CommandRunner for the exit tests that records each command line and, for
// `ip -batch FILE` and `nft -f FILE`, the file's text as it was when the command ran.
#pragma once

#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_join.h"
#include "node-agent/dns/resolved.h"

namespace tunnelmesh {

// `ip rule show` answers `rule_show`; a command containing `fail_on` exits 2.
class RecordingRunner final : public CommandRunner {
 public:
  absl::StatusOr<CommandResult> Run(const std::vector<std::string>& argv,
                                    std::chrono::milliseconds) override {
    std::string line = absl::StrJoin(argv, " ");
    if (argv.size() >= 2 && (argv[argv.size() - 2] == "-batch" || argv[argv.size() - 2] == "-f")) {
      std::ifstream in(argv.back());
      std::stringstream text;
      text << in.rdbuf();
      line += "\n" + text.str();
    }
    commands.push_back(line);
    CommandResult result;
    if (absl::StrContains(line, "rule show")) result.output = rule_show;
    if (fail_on != "" && absl::StrContains(line, fail_on)) {
      result.exit_code = 2;
      result.output = "RTNETLINK answers: Operation not permitted\n";
    }
    return result;
  }
  std::string All() const { return absl::StrJoin(commands, "\n---\n"); }
  std::vector<std::string> commands;
  std::string rule_show;
  std::string fail_on;
};

}  // namespace tunnelmesh
