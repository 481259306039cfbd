#include "operator/dns/coredns_config.h"

#include <algorithm>
#include <map>
#include <set>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "lib/dns/message.h"

namespace tunnelmesh::coredns {
namespace {

// Concatenation of std::string_views (Debian's abseil has its own string_view, which StrCat
// takes but std::string_view does not convert to).
template <typename... Parts>
std::string Cat(const Parts&... parts) {
  std::string out;
  (out.append(std::string_view(parts)), ...);
  return out;
}

bool IsBlank(char c) { return absl::ascii_isspace(static_cast<unsigned char>(c)); }

std::string_view TrimBlanks(std::string_view s) {
  while (!s.empty() && IsBlank(s.front())) s.remove_prefix(1);
  while (!s.empty() && IsBlank(s.back())) s.remove_suffix(1);
  return s;
}

constexpr std::string_view kMarkerTail =
    ": managed by tunnelmesh-operator (dns.configureCoreDNS), edits between these lines are "
    "replaced";

std::string BeginPrefix(std::string_view release) {
  return Cat("# BEGIN tunnelmesh release ", release);
}
std::string EndPrefix(std::string_view release) {
  return Cat("# END tunnelmesh release ", release);
}

// A domain as CoreDNS compares zones: lower case, no final dot; "" stays the root, ".".
std::string NormalizeZone(std::string_view zone) {
  std::string out = absl::AsciiStrToLower(std::string(zone));
  while (out.size() > 1 && out.back() == '.') out.pop_back();
  return out.empty() ? "." : out;
}

// `line` (without its line break) is the marker `prefix`, maybe followed by a comment of ours:
// leading and trailing blanks are ignored, and the prefix must end the line or be followed by ':'
// or a blank, so that release "ns/a" does not match "ns/ab".
bool IsMarkerLine(std::string_view line, std::string_view prefix) {
  line = TrimBlanks(line);
  if (!line.starts_with(prefix)) return false;
  if (line.size() == prefix.size()) return true;
  const char next = line[prefix.size()];
  return next == ':' || next == ' ' || next == '\t';
}

struct Region {
  bool found = false;
  size_t begin = 0;   // Offset of the BEGIN line.
  size_t end = 0;     // Offset just past the END line and its line break.
  bool crlf = false;  // The BEGIN line ends with "\r\n".
};

absl::StatusOr<Region> FindRegion(std::string_view text, std::string_view release) {
  const std::string begin_prefix = BeginPrefix(release);
  const std::string end_prefix = EndPrefix(release);
  std::vector<size_t> begins, ends;  // line starts; for ENDs, the offset after the line
  bool crlf = false;
  size_t start = 0;
  while (start < text.size()) {
    size_t eol = text.find('\n', start);
    const size_t next = eol == std::string_view::npos ? text.size() : eol + 1;
    if (eol == std::string_view::npos) eol = text.size();
    const std::string_view line = text.substr(start, eol - start);
    if (IsMarkerLine(line, begin_prefix)) {
      begins.push_back(start);
      crlf = eol < text.size() && eol > start && text[eol - 1] == '\r';
    }
    if (IsMarkerLine(line, end_prefix)) ends.push_back(next);
    start = next;
  }
  Region region;
  if (begins.empty() && ends.empty()) return region;
  if (begins.size() == 1 && ends.size() == 1 && begins[0] < ends[0]) {
    region.found = true;
    region.begin = begins[0];
    region.end = ends[0];
    region.crlf = crlf;
    return region;
  }
  return absl::FailedPreconditionError(
      Cat("the Corefile has ", std::to_string(begins.size()), " line(s) \"", begin_prefix,
          "\" and ", std::to_string(ends.size()), " line(s) \"", end_prefix,
          "\"; the operator edits only one BEGIN line followed by one END line: fix the "
          "markers by hand (keep one pair, or delete both and what is between them)"));
}

// "\r\n" when the text's first line ends so, else "\n".
std::string_view NewlineOf(std::string_view text) {
  const size_t eol = text.find('\n');
  return eol != std::string_view::npos && eol > 0 && text[eol - 1] == '\r' ? "\r\n" : "\n";
}

// Scans Caddyfile text the way CoreDNS's lexer splits it, as far as the top-level server block
// keys need: tokens separated by blanks, "quoted" and `quoted` tokens (which may span lines), '#'
// outside quotes starting a comment to the end of the line, and the tokens "{" and "}" nesting.
// At depth 0, the tokens on the line before a "{" (or on earlier lines ending in ',') are the
// keys of a server block; other top-level lines (import, snippets' contents) are not.
struct Scan {
  std::vector<std::string> keys;  // In order, as written (commas split off).
  int final_depth = 0;            // Unclosed "{" at the end.
};

Scan ScanCorefile(std::string_view text) {
  Scan scan;
  std::vector<std::string> pending;  // Top-level tokens of the current statement.
  const size_t n = text.size();
  size_t i = 0;
  auto end_line = [&] {
    if (scan.final_depth == 0 && !pending.empty() && !pending.back().ends_with(",")) {
      pending.clear();
    }
  };
  while (i < n) {
    const char c = text[i];
    if (c == '\n') {
      end_line();
      ++i;
      continue;
    }
    if (IsBlank(c)) {
      ++i;
      continue;
    }
    if (c == '#') {
      while (i < n && text[i] != '\n') ++i;
      continue;
    }
    std::string token;
    bool quoted = false;
    if (c == '"' || c == '`') {
      quoted = true;
      ++i;
      while (i < n && text[i] != c) {
        if (c == '"' && text[i] == '\\' && i + 1 < n && text[i + 1] == '"') ++i;
        token.push_back(text[i]);
        ++i;
      }
      if (i < n) ++i;  // the closing quote
    } else {
      while (i < n && !IsBlank(text[i]) && text[i] != '#') {
        token.push_back(text[i]);
        ++i;
      }
    }
    if (!quoted && token == "{") {
      if (scan.final_depth == 0) {
        for (const std::string& t : pending) {
          for (absl::string_view key : absl::StrSplit(t, ',', absl::SkipEmpty())) {
            scan.keys.emplace_back(key);
          }
        }
        pending.clear();
      }
      ++scan.final_depth;
    } else if (!quoted && token == "}") {
      if (scan.final_depth > 0) --scan.final_depth;
    } else if (scan.final_depth == 0) {
      pending.push_back(std::move(token));
    }
  }
  return scan;
}

// The zone a server block key serves on port 53 over plain DNS, if any (see TopLevelZones).
std::optional<std::string> ZoneOfKey(std::string_view key) {
  std::string k = absl::AsciiStrToLower(std::string(key));
  if (k.empty() || k[0] == '(') return std::nullopt;  // a snippet
  if (const size_t scheme = k.find("://"); scheme != std::string::npos) {
    if (k.substr(0, scheme) != "dns") return std::nullopt;
    k.erase(0, scheme + 3);
  }
  // CoreDNS takes a final ":DIGITS" as the port; an IPv6 CIDR ("fd00::/8") has none.
  if (const size_t colon = k.rfind(':'); colon != std::string::npos) {
    const std::string_view tail = std::string_view(k).substr(colon + 1);
    if (tail.empty()) return std::nullopt;
    if (std::all_of(tail.begin(), tail.end(), [](char ch) { return absl::ascii_isdigit(ch); })) {
      int port = 0;
      if (tail.size() > 5 ||
          !absl::SimpleAtoi(absl::string_view(tail.data(), tail.size()), &port) || port != 53) {
        return std::nullopt;
      }
      k.erase(colon);
    }
  }
  if (k.find('/') != std::string::npos) {
    absl::StatusOr<Prefix> prefix = Prefix::Parse(k);
    if (!prefix.ok()) return std::nullopt;
    // CoreDNS splits other lengths into several classful zones, none of which can equal ours
    // unless it is octet or nibble aligned.
    const int unit = prefix->address().is_v4() ? 8 : 4;
    if (prefix->length() % unit != 0) return std::nullopt;
    return ReverseZone(*prefix);
  }
  return NormalizeZone(k);
}

}  // namespace

std::optional<std::string> ReverseZone(const Prefix& range) {
  const bool v4 = range.address().is_v4();
  const int labels = v4 ? 4 : 32;
  const int keep = v4 ? range.length() / 8 : range.length() / 4;
  if (keep == 0) return std::nullopt;
  std::string name = dns::ReverseName(range.address());
  size_t cut = 0;
  for (int dropped = 0; dropped < labels - keep; ++dropped) cut = name.find('.', cut) + 1;
  return name.substr(cut);
}

std::vector<ServerBlock> PlanServerBlocks(const std::vector<MeshZones>& meshes) {
  std::map<std::string, std::set<Prefix>> by_domain;
  for (const MeshZones& mesh : meshes) {
    std::set<Prefix>& ranges = by_domain[NormalizeZone(mesh.domain.empty() ? "mesh" : mesh.domain)];
    ranges.insert(mesh.ranges.begin(), mesh.ranges.end());
  }
  std::set<std::string> seen;
  std::vector<ServerBlock> blocks;
  for (const auto& [domain, ranges] : by_domain) {
    ServerBlock block;
    if (seen.insert(domain).second) block.zones.push_back(domain);
    for (const Prefix& range : ranges) {
      std::optional<std::string> zone = ReverseZone(range);
      if (zone && seen.insert(*zone).second) block.zones.push_back(*zone);
    }
    if (!block.zones.empty()) blocks.push_back(std::move(block));
  }
  return blocks;
}

std::string BeginMarker(std::string_view release) { return Cat(BeginPrefix(release), kMarkerTail); }

std::string EndMarker(std::string_view release) { return EndPrefix(release); }

std::string RenderRegion(std::string_view release, const std::vector<ServerBlock>& blocks,
                         std::string_view upstream, std::string_view newline) {
  if (blocks.empty()) return "";
  std::string out = Cat(BeginMarker(release), newline);
  for (const ServerBlock& block : blocks) {
    std::vector<std::string> keys;
    for (const std::string& zone : block.zones) keys.push_back(zone + ":53");
    out += Cat(absl::StrJoin(keys, " "), " {", newline, "    errors", newline, "    cache 5",
               newline, "    forward . ", upstream, newline, "}", newline);
  }
  out += Cat(EndMarker(release), newline);
  return out;
}

std::vector<std::string> TopLevelZones(std::string_view corefile) {
  std::vector<std::string> zones;
  for (const std::string& key : ScanCorefile(corefile).keys) {
    std::optional<std::string> zone = ZoneOfKey(key);
    if (zone && std::find(zones.begin(), zones.end(), *zone) == zones.end()) {
      zones.push_back(*zone);
    }
  }
  return zones;
}

absl::StatusOr<CorefileEdit> ApplyMarkedRegion(std::string_view corefile, std::string_view release,
                                               const std::vector<ServerBlock>& blocks,
                                               std::string_view upstream) {
  absl::StatusOr<Region> region = FindRegion(corefile, release);
  if (!region.ok()) return region.status();
  const std::string_view before = region->found ? corefile.substr(0, region->begin) : corefile;
  const std::string_view after = region->found ? corefile.substr(region->end) : "";
  if (region->found && ScanCorefile(before).final_depth != 0) {
    return absl::FailedPreconditionError(
        Cat("the line \"", BeginPrefix(release),
            "\" is inside a block of the Corefile; the operator's server blocks must be "
            "at the top level: move the marked lines out of the block"));
  }
  if (!region->found && ScanCorefile(corefile).final_depth != 0) {
    return absl::FailedPreconditionError(
        "the Corefile ends inside a block (a \"{\" is not closed); the operator does not append "
        "its server blocks to it: fix the Corefile");
  }
  const std::vector<std::string> taken = TopLevelZones(Cat(before, after));
  CorefileEdit edit;
  std::vector<ServerBlock> kept;
  for (const ServerBlock& block : blocks) {
    ServerBlock ours;
    for (const std::string& zone : block.zones) {
      if (std::find(taken.begin(), taken.end(), NormalizeZone(zone)) != taken.end()) {
        edit.skipped.push_back(zone);
      } else {
        ours.zones.push_back(zone);
      }
    }
    if (!ours.zones.empty()) kept.push_back(std::move(ours));
  }
  // A region keeps its own line breaks (so that applying twice changes nothing); a new one takes
  // those of the text's first line.
  const std::string_view newline =
      region->found ? (region->crlf ? "\r\n" : "\n") : NewlineOf(corefile);
  const std::string text = RenderRegion(release, kept, upstream, newline);
  if (region->found) {
    edit.corefile = Cat(before, text, after);
  } else if (text.empty()) {
    edit.corefile = std::string(corefile);
  } else {
    const bool needs_break = !corefile.empty() && corefile.back() != '\n';
    edit.corefile = Cat(corefile, needs_break ? newline : "", text);
  }
  edit.changed = edit.corefile != corefile;
  return edit;
}

absl::StatusOr<CorefileEdit> RemoveMarkedRegion(std::string_view corefile,
                                                std::string_view release) {
  absl::StatusOr<Region> region = FindRegion(corefile, release);
  if (!region.ok()) return region.status();
  CorefileEdit edit;
  if (!region->found) {
    edit.corefile = std::string(corefile);
    return edit;
  }
  edit.corefile = Cat(corefile.substr(0, region->begin), corefile.substr(region->end));
  edit.changed = true;
  return edit;
}

}  // namespace tunnelmesh::coredns
