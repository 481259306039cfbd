#include "operator/policy/compiler.h"

#include <algorithm>
#include <utility>

#include "proto/member_kind.h"

namespace tunnelmesh::policy {
namespace {

bool Overlaps(const Prefix& a, const Prefix& b) {
  if (a.address().is_v4() != b.address().is_v4()) return false;
  return a.Contains(b.address()) || b.Contains(a.address());
}

// Whether `outer` covers all of `inner`.
bool Covers(const Prefix& outer, const Prefix& inner) {
  return outer.address().is_v4() == inner.address().is_v4() && outer.length() <= inner.length() &&
         outer.Contains(inner.address());
}

// The two halves of a prefix one bit longer.
std::pair<Prefix, Prefix> Halves(const Prefix& p) {
  const int length = p.length() + 1;
  const Prefix low(p.address(), length);
  uint8_t bytes[16] = {};
  const IpAddress& a = p.address();
  std::copy_n(a.bytes(), a.byte_length(), bytes);
  const int bit = p.length();  // Index of the bit that tells the halves apart.
  bytes[bit / 8] = static_cast<uint8_t>(bytes[bit / 8] | (0x80 >> (bit % 8)));
  const IpAddress high_address = a.is_v4() ? IpAddress::V4(bytes) : IpAddress::V6(bytes);
  return {low, Prefix(high_address, length)};
}

bool PortMatches(const coord::FilterRule& rule, coord::FilterProtocol protocol, uint16_t port) {
  if (rule.protocol() != coord::FILTER_PROTOCOL_ANY && rule.protocol() != protocol) return false;
  if (rule.ports().empty()) return true;
  if (protocol != coord::FILTER_PROTOCOL_TCP && protocol != coord::FILTER_PROTOCOL_UDP) {
    return false;
  }
  for (const coord::PortRange& r : rule.ports()) {
    if (port >= r.first() && port <= r.last()) return true;
  }
  return false;
}

bool AnyContains(const google::protobuf::RepeatedPtrField<std::string>& prefixes,
                 const IpAddress& ip) {
  if (prefixes.empty()) return true;
  for (const std::string& text : prefixes) {
    absl::StatusOr<Prefix> p = Prefix::Parse(text);
    if (p.ok() && p->address().is_v4() == ip.is_v4() && p->Contains(ip)) return true;
  }
  return false;
}

}  // namespace

bool SelectorMatches(const LabelSelector& selector,
                     const std::map<std::string, std::string>& labels) {
  for (const auto& [key, value] : selector.match_labels) {
    auto it = labels.find(key);
    if (it == labels.end() || it->second != value) return false;
  }
  for (const LabelRequirement& r : selector.match_expressions) {
    auto it = labels.find(r.key);
    const bool present = it != labels.end();
    const bool listed =
        present && std::find(r.values.begin(), r.values.end(), it->second) != r.values.end();
    if (r.op == "In" && !listed) return false;
    if (r.op == "NotIn" && listed) return false;
    if (r.op == "Exists" && !present) return false;
    if (r.op == "DoesNotExist" && present) return false;
  }
  return true;
}

bool TermSelects(const PeerSelectorTerm& term, const Member& member) {
  if (term.ip_block || term.internet) return false;
  if (!term.names.empty() &&
      std::find(term.names.begin(), term.names.end(), member.name) == term.names.end()) {
    return false;
  }
  if (!term.kinds.empty() && std::find(term.kinds.begin(), term.kinds.end(),
                                       MemberKindName(member.kind)) == term.kinds.end()) {
    return false;
  }
  if (term.peer && !SelectorMatches(*term.peer, member.labels)) return false;
  if (term.namespace_selector || term.pod) {
    if (member.kind != coord::MEMBER_KIND_POD) return false;
    if (term.pod && !SelectorMatches(*term.pod, member.labels)) return false;
    if (term.namespace_selector) {
      std::map<std::string, std::string> ns = member.namespace_labels;
      ns.emplace(kNamespaceNameLabel, member.namespace_name);
      if (!SelectorMatches(*term.namespace_selector, ns)) return false;
    }
  }
  return true;
}

bool SideSelects(const std::vector<PeerSelectorTerm>& side, const Member& member) {
  if (side.empty()) return true;
  for (const PeerSelectorTerm& term : side) {
    if (TermSelects(term, member)) return true;
  }
  return false;
}

std::vector<Prefix> SideBlocks(const std::vector<PeerSelectorTerm>& side) {
  std::vector<Prefix> out;
  for (const PeerSelectorTerm& term : side) {
    if (!term.ip_block) continue;
    std::vector<Prefix> parts = Subtract(term.ip_block->cidr, term.ip_block->except);
    out.insert(out.end(), parts.begin(), parts.end());
  }
  Normalize(&out);
  return out;
}

bool InternetThrough(const std::vector<PeerSelectorTerm>& side, const Member& member) {
  if (!member.exit) return false;
  for (const PeerSelectorTerm& term : side) {
    if (!term.internet) continue;
    const std::optional<LabelSelector>& selector = term.internet->exit_selector;
    if (!selector || SelectorMatches(*selector, member.labels)) return true;
  }
  return false;
}

std::vector<Prefix> InternetPrefixes(const std::vector<Prefix>& mesh_ranges) {
  std::vector<Prefix> v4, v6;
  for (const Prefix& range : mesh_ranges) (range.address().is_v4() ? v4 : v6).push_back(range);
  std::vector<Prefix> out = Subtract(*Prefix::Parse("0.0.0.0/0"), v4);
  std::vector<Prefix> six = Subtract(*Prefix::Parse("::/0"), v6);
  out.insert(out.end(), six.begin(), six.end());
  Normalize(&out);
  return out;
}

std::string EnforcerOf(const Member& member) {
  if (member.kind == coord::MEMBER_KIND_POD && !member.host.empty()) return member.host;
  return member.runs_agent ? member.name : "";
}

std::vector<Prefix> Subtract(const Prefix& prefix, const std::vector<Prefix>& except) {
  for (const Prefix& e : except) {
    if (Covers(e, prefix)) return {};
  }
  bool split = false;
  for (const Prefix& e : except) split = split || Overlaps(e, prefix);
  if (!split) return {prefix};
  // Some except lies strictly inside: halve and recurse. Depth is bounded by the address length,
  // and only halves that touch an except split further, so the output is at most
  // (address bits) x (excepts) prefixes.
  auto [low, high] = Halves(prefix);
  std::vector<Prefix> out = Subtract(low, except);
  std::vector<Prefix> rest = Subtract(high, except);
  out.insert(out.end(), rest.begin(), rest.end());
  return out;
}

std::vector<Prefix> Intersect(const std::vector<Prefix>& a, const std::vector<Prefix>& b) {
  std::vector<Prefix> out;
  for (const Prefix& x : a) {
    for (const Prefix& y : b) {
      if (Covers(x, y)) {
        out.push_back(y);
      } else if (Covers(y, x)) {
        out.push_back(x);
      }
    }
  }
  Normalize(&out);
  return out;
}

void Normalize(std::vector<Prefix>* prefixes) {
  std::sort(prefixes->begin(), prefixes->end());
  prefixes->erase(std::unique(prefixes->begin(), prefixes->end()), prefixes->end());
  // Sorted by address then length: a covering prefix comes before what it covers.
  std::vector<Prefix> kept;
  for (const Prefix& p : *prefixes) {
    if (kept.empty() || !Covers(kept.back(), p)) kept.push_back(p);
  }
  *prefixes = std::move(kept);
}

Decision Evaluate(const coord::FilterRules& rules, const IpAddress& source,
                  const IpAddress& destination, coord::FilterProtocol protocol, uint16_t port) {
  Decision decision;
  decision.action = rules.default_action();
  bool allowed = false;
  for (const coord::FilterRule& rule : rules.rules()) {
    if (!PortMatches(rule, protocol, port) || !AnyContains(rule.sources(), source) ||
        !AnyContains(rule.destinations(), destination)) {
      continue;
    }
    const std::string name = rule.policy() < static_cast<uint32_t>(rules.policies_size())
                                 ? rules.policies(static_cast<int>(rule.policy()))
                                 : "";
    if (rule.action() == coord::FILTER_ACTION_DENY) return {coord::FILTER_ACTION_DENY, name};
    if (!allowed) {
      allowed = true;
      decision = {coord::FILTER_ACTION_ALLOW, name};
    }
  }
  return decision;
}

}  // namespace tunnelmesh::policy
