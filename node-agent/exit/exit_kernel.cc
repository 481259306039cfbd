#include "node-agent/exit/exit_kernel.h"

#include <fcntl.h>
#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "lib/base/log.h"

namespace tunnelmesh {
namespace {

constexpr auto kCommandTimeout = std::chrono::milliseconds(5000);

// Identifiers for nft: letters, digits and '_' only.
std::string NftSafe(const std::string& name) {
  std::string out;
  for (char c : name) out += std::isalnum(static_cast<unsigned char>(c)) ? c : '_';
  return out;
}

std::string Hex(uint32_t value) {
  char text[16];
  std::snprintf(text, sizeof(text), "0x%x", value);
  return text;
}

std::string HostPrefix(const IpAddress& address) {
  return Prefix(address, address.bit_length()).ToString();
}

// Writes `text` to `path` (mode 0600).
absl::Status WriteScratch(const std::string& path, const std::string& text) {
  const int fd = open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) return absl::UnavailableError("cannot write " + path);
  size_t done = 0;
  while (done < text.size()) {
    const ssize_t n = write(fd, text.data() + done, text.size() - done);
    if (n <= 0) {
      close(fd);
      return absl::UnavailableError("cannot write " + path);
    }
    done += static_cast<size_t>(n);
  }
  close(fd);
  return absl::OkStatus();
}

absl::Status RunChecked(CommandRunner* runner, const std::vector<std::string>& argv,
                        const std::string& what) {
  absl::StatusOr<CommandResult> result = runner->Run(argv, kCommandTimeout);
  if (!result.ok()) {
    return absl::Status(result.status().code(),
                        absl::StrCat(what, ": ", argv[0], ": ", result.status().message()));
  }
  if (result->exit_code != 0) {
    std::string output = result->output;
    while (!output.empty() && (output.back() == '\n' || output.back() == ' ')) output.pop_back();
    return absl::InternalError(absl::StrCat(what, ": `", absl::StrJoin(argv, " "), "` exited ",
                                            result->exit_code, ": ", output));
  }
  return absl::OkStatus();
}

absl::Status RunNft(CommandRunner* runner, const std::string& scratch, const std::string& script,
                    const std::string& what) {
  if (absl::Status s = WriteScratch(scratch, script); !s.ok()) return s;
  absl::Status s = RunChecked(runner, {"nft", "-f", scratch}, what);
  unlink(scratch.c_str());
  return s;
}

// "table inet NAME" deleted if present (nft has no "delete if exists" before 1.0.8: create it
// empty first, then delete, in one transaction).
std::string DeleteTable(const std::string& table) {
  return absl::StrCat("table inet ", table, " {}\ndelete table inet ", table, "\n");
}

std::string Elements(const std::vector<std::string>& items) {
  return absl::StrCat("{ ", absl::StrJoin(items, ", "), " }");
}

}  // namespace

ExitKernelIds ExitKernelIdsFor(const std::string& interface_name) {
  // FNV-1a of the name, folded into 10 bits: 1024 slots of 4 priorities each.
  uint32_t hash = 2166136261u;
  for (char c : interface_name) {
    hash ^= static_cast<uint8_t>(c);
    hash *= 16777619u;
  }
  const uint32_t slot = (hash ^ (hash >> 10) ^ (hash >> 20)) & 0x3ff;
  ExitKernelIds ids;
  ids.table = 0x544d0000u + slot;  // "TM" in the high bits, clear of wg-quick's 51820.
  ids.fwmark = ids.table;
  ids.priority = 20000 + slot * 4;  // Below the main table's 32766.
  return ids;
}

std::string ExitTableName(const std::string& interface_name) {
  return "tunnelmesh_exit_" + NftSafe(interface_name);
}

std::string ExitDnsTableName(const std::string& interface_name) {
  return "tunnelmesh_exitdns_" + NftSafe(interface_name);
}

std::vector<std::string> ClientRuleSpecs(const ClientRoutes& routes, const ExitKernelIds& ids,
                                         IpAddress::Family family) {
  std::vector<std::string> specs;
  if (!routes.route_all) return specs;
  const std::string table = std::to_string(ids.table);
  for (const IpAddress& address : routes.bypass) {
    if (address.family() != family) continue;
    specs.push_back(
        absl::StrCat("to ", HostPrefix(address), " lookup main priority ", ids.priority));
  }
  for (const Prefix& lan : routes.lan) {
    if (lan.address().family() != family) continue;
    for (const char* protocol : {"udp", "tcp"}) {
      specs.push_back(absl::StrCat("to ", lan.ToString(), " ipproto ", protocol,
                                   " dport 53 lookup ", table, " priority ", ids.priority + 1));
    }
    specs.push_back(
        absl::StrCat("to ", lan.ToString(), " lookup main priority ", ids.priority + 2));
  }
  specs.push_back(absl::StrCat("not fwmark ", Hex(ids.fwmark), " lookup ", table, " priority ",
                               ids.priority + 3));
  return specs;
}

std::string ClientDnsScript(const std::string& interface_name, const ClientRoutes& routes) {
  if (!routes.route_all || !routes.dns.has_value()) return "";
  std::vector<std::string> skip4 = {"127.0.0.0/8"};
  std::vector<std::string> skip6 = {"::1/128"};
  for (const Prefix& cidr : routes.mesh_cidrs) {
    (cidr.address().is_v4() ? skip4 : skip6).push_back(cidr.ToString());
  }
  const IpAddress& dns = *routes.dns;
  const std::string family = dns.is_v4() ? "ip" : "ip6";
  const std::string to = dns.is_v4() ? dns.ToString() : "[" + dns.ToString() + "]";
  const ExitKernelIds ids = ExitKernelIdsFor(interface_name);
  std::ostringstream out;
  out << "table inet " << ExitDnsTableName(interface_name) << " {\n"
      << "  chain output {\n"
      << "    type nat hook output priority -100; policy accept;\n"
      << "    meta mark " << Hex(ids.fwmark) << " return\n"
      << "    ip daddr " << Elements(skip4) << " return\n"
      << "    ip6 daddr " << Elements(skip6) << " return\n"
      << "    meta nfproto " << (dns.is_v4() ? "ipv4" : "ipv6") << " udp dport 53 counter dnat "
      << family << " to " << to << ":53\n"
      << "    meta nfproto " << (dns.is_v4() ? "ipv4" : "ipv6") << " tcp dport 53 counter dnat "
      << family << " to " << to << ":53\n"
      << "  }\n"
      << "}\n";
  return out.str();
}

std::string ExitForwardScript(const std::string& interface_name,
                              const std::vector<Prefix>& client_prefixes,
                              const std::vector<Prefix>& mesh_cidrs) {
  std::vector<std::string> clients4, clients6, mesh4, mesh6;
  for (const Prefix& p : client_prefixes) {
    (p.address().is_v4() ? clients4 : clients6).push_back(p.ToString());
  }
  for (const Prefix& p : mesh_cidrs) (p.address().is_v4() ? mesh4 : mesh6).push_back(p.ToString());
  const std::string table = ExitTableName(interface_name);
  const std::string iif = "\"" + interface_name + "\"";
  std::ostringstream out;
  out << DeleteTable(table) << "table inet " << table << " {\n";
  auto set = [&](const char* name, const char* type, const std::vector<std::string>& items) {
    out << "  set " << name << " {\n    type " << type << "; flags interval;\n";
    if (!items.empty()) out << "    elements = " << Elements(items) << "\n";
    out << "  }\n";
  };
  set("clients4", "ipv4_addr", clients4);
  set("clients6", "ipv6_addr", clients6);
  set("mesh4", "ipv4_addr", mesh4);
  set("mesh6", "ipv6_addr", mesh6);
  out << "  chain forward {\n"
      << "    type filter hook forward priority 0; policy accept;\n"
      // Forwarding inside the mesh (pods behind this node) is not the exit's business.
      << "    iifname " << iif << " ip daddr @mesh4 accept\n"
      << "    iifname " << iif
      << " ip6 daddr @mesh6 accept\n"
      // Back into the tunnel (a static peer's prefixes): not the internet either.
      << "    iifname " << iif << " oifname " << iif << " accept\n"
      << "    iifname " << iif << " ip saddr @clients4 counter accept\n"
      << "    iifname " << iif << " ip6 saddr @clients6 counter accept\n"
      << "    iifname " << iif << " counter drop comment \"not a client of this exit\"\n"
      << "  }\n"
      << "  chain postrouting {\n"
      << "    type nat hook postrouting priority srcnat; policy accept;\n"
      << "    oifname != " << iif << " ip saddr @clients4 ip daddr != @mesh4 masquerade\n"
      << "    oifname != " << iif << " ip6 saddr @clients6 ip6 daddr != @mesh6 masquerade\n"
      << "  }\n"
      << "}\n";
  return out.str();
}

// ---------------------------------------------------------------------------------------------

ExitClientKernel::ExitClientKernel(std::string interface_name, CommandRunner* runner,
                                   std::string scratch)
    : interface_name_(std::move(interface_name)),
      runner_(runner),
      scratch_(std::move(scratch)),
      ids_(ExitKernelIdsFor(interface_name_)) {}

absl::Status ExitClientKernel::Ip(IpAddress::Family family, const std::vector<std::string>& lines) {
  if (lines.empty()) return absl::OkStatus();
  if (absl::Status s = WriteScratch(scratch_, absl::StrJoin(lines, "\n") + "\n"); !s.ok()) {
    return s;
  }
  absl::Status s = RunChecked(
      runner_, {"ip", family == IpAddress::Family::kV4 ? "-4" : "-6", "-batch", scratch_},
      "exit routing on " + interface_name_);
  unlink(scratch_.c_str());
  return s;
}

absl::Status ExitClientKernel::SetSysctl(const std::string& path, const std::string& value) {
  std::ofstream out(path);
  out << value << "\n";
  out.close();
  if (!out) return absl::UnavailableError("cannot write " + path);
  return absl::OkStatus();
}

absl::Status ExitClientKernel::PurgeStale() {
  for (IpAddress::Family family : {IpAddress::Family::kV4, IpAddress::Family::kV6}) {
    const char* flag = family == IpAddress::Family::kV4 ? "-4" : "-6";
    absl::StatusOr<CommandResult> shown =
        runner_->Run({"ip", flag, "rule", "show"}, kCommandTimeout);
    if (!shown.ok()) return shown.status();
    std::vector<std::string> deletes;
    std::istringstream lines(shown->output);
    std::string line;
    while (std::getline(lines, line)) {
      const size_t colon = line.find(':');
      if (colon == std::string::npos) continue;
      const std::string priority = line.substr(0, colon);
      for (uint32_t p = ids_.priority; p < ids_.priority + 4; ++p) {
        if (priority == std::to_string(p)) deletes.push_back("rule del priority " + priority);
      }
    }
    // Flushing a table that has no routes fails harmlessly.
    (void)runner_->Run({"ip", flag, "route", "flush", "table", std::to_string(ids_.table)},
                       kCommandTimeout);
    if (!deletes.empty()) {
      TM_LOG_INFO("exit routing: removing {} rules a previous run of {} left", deletes.size(),
                  interface_name_);
      if (absl::Status s = Ip(family, deletes); !s.ok()) return s;
    }
  }
  return RunNft(runner_, scratch_, DeleteTable(ExitDnsTableName(interface_name_)),
                "removing the exit DNS table");
}

absl::Status ExitClientKernel::Apply(const ClientRoutes& routes) {
  if (routes == applied_) return absl::OkStatus();
  const std::string table = std::to_string(ids_.table);
  if (routes.route_all && !table_routes_) {
    (void)SetSysctl("/proc/sys/net/ipv4/conf/all/src_valid_mark", "1");
  }
  // The table's routes first, so the catch-all rule never points at an empty table.
  if (routes.route_all && (!table_routes_ || routes.ipv6 != applied_.ipv6)) {
    if (absl::Status s = Ip(IpAddress::Family::kV4,
                            {"route replace default dev " + interface_name_ + " table " + table});
        !s.ok()) {
      return s;
    }
    const std::string v6 = routes.ipv6 ? "route replace default dev " + interface_name_
                                       : std::string("route replace unreachable default");
    if (absl::Status s = Ip(IpAddress::Family::kV6, {v6 + " table " + table}); !s.ok()) return s;
    table_routes_ = true;
  }
  for (IpAddress::Family family : {IpAddress::Family::kV4, IpAddress::Family::kV6}) {
    std::vector<std::string>& installed = family == IpAddress::Family::kV4 ? rules4_ : rules6_;
    const std::vector<std::string> wanted = ClientRuleSpecs(routes, ids_, family);
    std::vector<std::string> adds, dels;
    for (const std::string& spec : wanted) {
      if (std::find(installed.begin(), installed.end(), spec) == installed.end()) {
        adds.push_back("rule add " + spec);
      }
    }
    for (const std::string& spec : installed) {
      if (std::find(wanted.begin(), wanted.end(), spec) == wanted.end()) {
        dels.push_back("rule del " + spec);
      }
    }
    if (absl::Status s = Ip(family, adds); !s.ok()) return s;
    if (absl::Status s = Ip(family, dels); !s.ok()) {
      TM_LOG_WARN("{}", std::string(s.message()));
    }
    installed = wanted;
  }
  if (!routes.route_all && table_routes_) {
    for (IpAddress::Family family : {IpAddress::Family::kV4, IpAddress::Family::kV6}) {
      (void)runner_->Run(
          {"ip", family == IpAddress::Family::kV4 ? "-4" : "-6", "route", "flush", "table", table},
          kCommandTimeout);
    }
    table_routes_ = false;
  }
  const std::string dns = ClientDnsScript(interface_name_, routes);
  if (dns != ClientDnsScript(interface_name_, applied_)) {
    const std::string script = DeleteTable(ExitDnsTableName(interface_name_)) + dns;
    if (absl::Status s = RunNft(runner_, scratch_, script, "the exit DNS redirect"); !s.ok()) {
      return s;
    }
    dns_table_ = !dns.empty();
  }
  applied_ = routes;
  return absl::OkStatus();
}

absl::Status ExitClientKernel::Remove() { return Apply(ClientRoutes{}); }

// ---------------------------------------------------------------------------------------------

ExitForwarder::ExitForwarder(std::string interface_name, CommandRunner* runner, std::string scratch,
                             std::string proc_sys)
    : interface_name_(std::move(interface_name)),
      runner_(runner),
      scratch_(std::move(scratch)),
      proc_sys_(std::move(proc_sys)) {}

std::string ExitForwarder::MarkerPath(const std::string& key) const {
  std::string name = key;
  for (char& c : name) c = c == '/' ? '_' : c;
  return scratch_ + "." + name + ".on";
}

absl::Status ExitForwarder::PurgeStale() {
  // A run that turned forwarding on and then crashed left a marker: turn it off again (Apply
  // turns it on again when this run serves clients).
  for (const char* key : {"net/ipv4/ip_forward", "net/ipv6/conf/all/forwarding"}) {
    if (access(MarkerPath(key).c_str(), F_OK) != 0) continue;
    std::ofstream(proc_sys_ + "/" + key) << "0\n";
    unlink(MarkerPath(key).c_str());
    TM_LOG_INFO("exit: turned {} off again (a previous run turned it on)", key);
  }
  return RunNft(runner_, scratch_, DeleteTable(ExitTableName(interface_name_)),
                "removing the exit table");
}

absl::Status ExitForwarder::EnableForwarding(const std::string& key, bool* changed) {
  const std::string path = proc_sys_ + "/" + key;
  std::ifstream in(path);
  std::string value;
  in >> value;
  if (!in) return absl::UnavailableError("cannot read " + path);
  if (value == "1") return absl::OkStatus();
  std::ofstream out(path);
  out << "1\n";
  out.close();
  if (!out) {
    return absl::FailedPreconditionError(
        absl::StrCat("cannot turn forwarding on in ", path,
                     " (the agent needs CAP_NET_ADMIN and a writable /proc/sys)"));
  }
  *changed = true;
  // Remembered on disk, so that a crashed run's setting is undone by the next start.
  if (absl::Status s = WriteScratch(MarkerPath(key), "1\n"); !s.ok()) {
    TM_LOG_WARN("exit: {}", std::string(s.message()));
  }
  TM_LOG_INFO("exit: turned {} on (it is turned off again when the agent stops)", key);
  return absl::OkStatus();
}

absl::Status ExitForwarder::Apply(const std::vector<Prefix>& client_prefixes,
                                  const std::vector<Prefix>& mesh_cidrs) {
  if (client_prefixes.empty()) return Remove();
  if (active_ && client_prefixes == applied_) return absl::OkStatus();
  bool v6 = false;
  for (const Prefix& p : client_prefixes) v6 = v6 || p.address().is_v6();
  bool changed = false;
  if (absl::Status s = EnableForwarding("net/ipv4/ip_forward", &changed); !s.ok()) return s;
  enabled_v4_ = enabled_v4_ || changed;
  if (v6) {
    changed = false;
    // IPv4 still works without it (a container's /proc/sys is read-only): warn, do not fail.
    if (absl::Status s = EnableForwarding("net/ipv6/conf/all/forwarding", &changed); !s.ok()) {
      TM_LOG_WARN("exit: {}; the exit forwards IPv4 only", std::string(s.message()));
    }
    enabled_v6_ = enabled_v6_ || changed;
  }
  if (absl::Status s =
          RunNft(runner_, scratch_, ExitForwardScript(interface_name_, client_prefixes, mesh_cidrs),
                 "the exit's nftables table");
      !s.ok()) {
    return s;
  }
  if (!active_) {
    TM_LOG_INFO("exit: forwarding and masquerading the internet traffic of {} client prefixes",
                client_prefixes.size());
  }
  active_ = true;
  applied_ = client_prefixes;
  return absl::OkStatus();
}

absl::Status ExitForwarder::Remove() {
  absl::Status result = absl::OkStatus();
  if (active_) {
    result = RunNft(runner_, scratch_, DeleteTable(ExitTableName(interface_name_)),
                    "removing the exit table");
    TM_LOG_INFO("exit: no longer forwarding for clients");
  }
  active_ = false;
  applied_.clear();
  auto restore = [this](const std::string& key, bool* enabled) {
    if (!*enabled) return;
    std::ofstream out(proc_sys_ + "/" + key);
    out << "0\n";
    unlink(MarkerPath(key).c_str());
    *enabled = false;
  };
  restore("net/ipv4/ip_forward", &enabled_v4_);
  restore("net/ipv6/conf/all/forwarding", &enabled_v6_);
  return result;
}

}  // namespace tunnelmesh
