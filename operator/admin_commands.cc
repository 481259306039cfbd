#include "operator/admin_commands.h"

#include <sys/stat.h>

#include <cstdio>
#include <cstring>
#include <vector>

#include "CLI/CLI.hpp"
#include "absl/strings/str_join.h"
#include "absl/time/clock.h"
#include "nlohmann/json.hpp"
#include "operator/kube_mode.h"

namespace tunnelmesh {
namespace {

constexpr const char* kAdminCommands[] = {"members", "remove", "readmit", "refused"};

std::string AdminSocketPath(const std::string& state_dir) {
  return state_dir + "/" + kAdminSocketName;
}

// Asks the coordinator serving `state_dir`; the answer's JSON, or an error that says what to
// check (exit 1), or a usage error (exit 2) for a socket path that cannot exist.
struct Answer {
  nlohmann::json doc;
  int exit_code = 0;
};
Answer Ask(const std::string& command, const std::string& state_dir,
           const nlohmann::json& request) {
  const std::string path = AdminSocketPath(state_dir);
  absl::StatusOr<std::string> response = ControlRequest(path, request.dump());
  if (!response.ok()) {
    switch (response.status().code()) {
      case absl::StatusCode::kInvalidArgument:
        return {{},
                Usage(command + ": --state-dir " + state_dir +
                      " is too long for a unix socket path: use a shorter one (or a "
                      "symbolic link to it)")};
      case absl::StatusCode::kPermissionDenied:
        return {{},
                Fail(command + ": " + path +
                     " exists but this user may not use it (permission denied): run as the "
                     "coordinator's user, e.g. with sudo")};
      default:
        return {
            {},
            Fail(command + ": no coordinator is serving --state-dir " + state_dir + " (" + path +
                 ": " + std::string(response.status().message()) +
                 "): is `tunnelmesh-operator --standalone` running with this " + "--state-dir?")};
    }
  }
  nlohmann::json doc = nlohmann::json::parse(*response, nullptr, /*allow_exceptions=*/false);
  if (doc.is_discarded() || !doc.is_object()) {
    return {{},
            Fail(command + ": the coordinator's answer on " + path +
                 " is not JSON (is this a TunnelMesh coordinator's state dir, and the same "
                 "version as this command?)")};
  }
  if (doc.contains("error")) {
    return {{}, Fail(command + ": " + doc["error"].get<std::string>())};
  }
  return {std::move(doc), 0};
}

// "now", "42s ago", "3h ago", "2d ago"; "-" for never (since the coordinator started).
std::string Ago(const nlohmann::json& when, absl::Time now) {
  if (!when.is_string()) return "-";
  absl::Time t;
  std::string error;
  if (!absl::ParseTime(absl::RFC3339_full, when.get<std::string>(), &t, &error)) return "?";
  const int64_t seconds = absl::ToInt64Seconds(now - t);
  if (seconds < 2) return "now";
  if (seconds < 120) return std::to_string(seconds) + "s ago";
  if (seconds < 2 * 3600) return std::to_string(seconds / 60) + "m ago";
  if (seconds < 2 * 86400) return std::to_string(seconds / 3600) + "h ago";
  return std::to_string(seconds / 86400) + "d ago";
}

std::string ShortKey(const std::string& base64) { return base64.substr(0, 8) + "..."; }

// Left-aligned columns, two spaces apart.
void PrintTable(const std::vector<std::vector<std::string>>& rows) {
  std::vector<size_t> widths;
  for (const auto& row : rows) {
    for (size_t i = 0; i < row.size(); ++i) {
      if (widths.size() <= i) widths.push_back(0);
      widths[i] = std::max(widths[i], row[i].size());
    }
  }
  for (const auto& row : rows) {
    std::string line;
    for (size_t i = 0; i < row.size(); ++i) {
      line += row[i];
      if (i + 1 < row.size()) line += std::string(widths[i] - row[i].size() + 2, ' ');
    }
    std::printf("%s\n", line.c_str());
  }
}

int Members(const std::string& state_dir, const std::string& mesh, bool json) {
  Answer answer = Ask("members", state_dir, {{"op", "members"}});
  if (answer.exit_code != 0) return answer.exit_code;
  nlohmann::json members = nlohmann::json::array();
  for (const nlohmann::json& m : answer.doc["members"]) {
    if (mesh.empty() || m.value("mesh", "") == mesh) members.push_back(m);
  }
  if (json) {
    std::printf("%s\n", nlohmann::json({{"members", members}}).dump(2).c_str());
    return 0;
  }
  if (members.empty()) {
    std::printf("%s\n",
                mesh.empty() ? "no members" : ("Mesh \"" + mesh + "\" has no members").c_str());
    return 0;
  }
  const absl::Time now = absl::Now();
  std::vector<std::vector<std::string>> rows = {
      {"NAME", "MESH", "KIND", "MESH IPS", "ONLINE", "LAST SEEN", "KEY"}};
  for (const nlohmann::json& m : members) {
    std::vector<std::string> ips;
    for (const nlohmann::json& ip : m["mesh_ips"]) ips.push_back(ip.get<std::string>());
    const bool online = m.value("online", false);
    rows.push_back(
        {m.value("name", ""), m.value("mesh", ""), m.value("kind", ""), absl::StrJoin(ips, ","),
         online ? "yes" : (m.value("static", false) ? "static" : "no"),
         online ? "now" : Ago(m["last_seen"], now), ShortKey(m.value("public_key", ""))});
  }
  PrintTable(rows);
  return 0;
}

int Remove(const std::string& state_dir, const std::string& member) {
  Answer answer = Ask("remove", state_dir, {{"op", "remove"}, {"member", member}});
  if (answer.exit_code != 0) return answer.exit_code;
  const nlohmann::json& r = answer.doc["removed"];
  const std::string key = r.value("public_key", "");
  const std::string readmit = "tunnelmesh-operator readmit " + key + " --state-dir " + state_dir;
  if (r.value("was_member", false)) {
    std::printf(
        "removed member \"%s\" of Mesh \"%s\" (key %s): its agent is told to stop, the other "
        "members drop it, and its key is refused until an admin runs:\n  %s\n",
        r.value("name", "").c_str(), r.value("mesh", "").c_str(), key.c_str(), readmit.c_str());
  } else {
    std::printf("key %s is no member's; it is refused from now on, until an admin runs:\n  %s\n",
                key.c_str(), readmit.c_str());
  }
  return 0;
}

int Readmit(const std::string& state_dir, const std::string& key, bool list) {
  if (list) {
    Answer answer = Ask("readmit", state_dir, {{"op", "removed"}});
    if (answer.exit_code != 0) return answer.exit_code;
    if (answer.doc["removed"].empty()) {
      std::printf("no removed keys\n");
      return 0;
    }
    std::vector<std::vector<std::string>> rows = {{"REMOVED AT", "NAME", "MESH", "KEY"}};
    for (const nlohmann::json& r : answer.doc["removed"]) {
      rows.push_back({r.value("removed_at", ""), r.value("name", ""), r.value("mesh", ""),
                      r.value("public_key", "")});
    }
    PrintTable(rows);
    return 0;
  }
  Answer answer = Ask("readmit", state_dir, {{"op", "readmit"}, {"key", key}});
  if (answer.exit_code != 0) return answer.exit_code;
  const nlohmann::json& r = answer.doc["readmitted"];
  std::printf(
      "re-admitted key %s%s: it may join again with the join token (tunnelmesh-agent join "
      "COORDINATOR --token-file FILE)\n",
      r.value("public_key", "").c_str(),
      r.value("name", "").empty() ? ""
                                  : (" (was member \"" + r.value("name", "") + "\" of Mesh \"" +
                                     r.value("mesh", "") + "\")")
                                        .c_str());
  return 0;
}

int Refused(const std::string& state_dir, bool json) {
  Answer answer = Ask("refused", state_dir, {{"op", "refused"}});
  if (answer.exit_code != 0) return answer.exit_code;
  if (json) {
    std::printf("%s\n", answer.doc.dump(2).c_str());
    return 0;
  }
  const nlohmann::json& list = answer.doc["refused"];
  const uint64_t total = answer.doc.value("total", uint64_t{0});
  if (list.empty()) {
    std::printf("no refused joins since the coordinator started\n");
    return 0;
  }
  std::vector<std::vector<std::string>> rows = {
      {"TIME", "SOURCE", "KEY", "NAME", "MESH", "REASON"}};
  for (const nlohmann::json& r : list) {
    rows.push_back({r.value("time", ""), r.value("source", ""), r.value("key", ""),
                    r.value("name", "").empty() ? "-" : r.value("name", ""),
                    r.value("mesh", "").empty() ? "-" : r.value("mesh", ""),
                    r.value("code", "") + ": " + r.value("reason", "")});
  }
  PrintTable(rows);
  std::printf("%llu refused since the coordinator started; the latest %zu are kept\n",
              static_cast<unsigned long long>(total),  // NOLINT(runtime/int)
              static_cast<size_t>(answer.doc.value("capacity", 0)));
  return 0;
}

}  // namespace

bool IsAdminCommand(int argc, char** argv) {
  if (argc < 2) return false;
  for (const char* command : kAdminCommands) {
    if (std::strcmp(argv[1], command) == 0) return true;
  }
  return false;
}

int RunAdminCommand(int argc, char** argv) {
  const std::string command = argv[1];
  CLI::App app{"tunnelmesh-operator " + command +
               ": the standalone coordinator's admin socket (STATE_DIR/admin.sock)"};
  app.name("tunnelmesh-operator " + command);
  std::string state_dir;
  std::string mesh;
  std::string target;
  bool json = false;
  bool list = false;
  app.add_option("--state-dir", state_dir, "the running coordinator's --state-dir")->required();
  if (command == "members") {
    app.description(
        "list the members: name, mesh, kind, mesh IPs, online (holds a live watch), last seen, "
        "key");
    app.add_option("--mesh", mesh, "only the members of this Mesh");
    app.add_flag("--json", json, "print JSON");
  } else if (command == "remove") {
    app.description(
        "remove a member now (a lost laptop): its agent is told to stop, the others drop it, its "
        "key is refused until `readmit`");
    app.add_option("member", target, "the member's name, its public key, or the start of it")
        ->required();
  } else if (command == "readmit") {
    app.description("let a removed key join again (with the join token)");
    app.add_option("key", target, "the removed public key (or its start, or the member's name)");
    app.add_flag("--list", list, "list the removed keys instead");
  } else {
    app.description("show the latest refused joins: time, source, key, name asked for, reason");
    app.add_flag("--json", json, "print JSON");
  }
  try {
    app.parse(argc - 1, argv + 1);
  } catch (const CLI::ParseError& e) {
    // CLI11 reports through exceptions; caught here as in main.cc.
    return app.exit(e) == 0 ? 0 : kExitUsage;
  }
  if (command == "readmit" && target.empty() && !list) {
    return Usage("readmit needs KEY (the removed key; `readmit --list --state-dir " + state_dir +
                 "` lists them)");
  }
  if (command == "members") return Members(state_dir, mesh, json);
  if (command == "remove") return Remove(state_dir, target);
  if (command == "readmit") return Readmit(state_dir, target, list);
  return Refused(state_dir, json);
}

absl::StatusOr<std::unique_ptr<ControlServer>> ServeAdminSocket(const std::string& state_dir,
                                                                AdminRequests* requests) {
  const std::string path = AdminSocketPath(state_dir);
  if (ControlRequest(path, nlohmann::json({{"op", "refused"}}).dump()).ok()) {
    return absl::AlreadyExistsError("another coordinator serves " + path +
                                    ": two coordinators must not share a --state-dir");
  }
  absl::StatusOr<std::unique_ptr<ControlServer>> server = ControlServer::Listen(
      path, [requests](std::string_view request) { return requests->Handle(request) + "\n"; });
  if (!server.ok()) {
    return absl::Status(server.status().code(),
                        "admin socket: " + std::string(server.status().message()));
  }
  // Owner only (the state dir is 0700 when the coordinator made it; the socket is 0600 anyway).
  if (chmod(path.c_str(), 0600) != 0) {
    return absl::InternalError("admin socket: chmod 0600 " + path + ": " + std::strerror(errno));
  }
  return server;
}

}  // namespace tunnelmesh
