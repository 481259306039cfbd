#include "operator/api/peer_policy.h"

#include <cctype>
#include <string_view>

#include "operator/api/known_fields.h"

namespace tunnelmesh {
namespace {

bool IsLabelPart(std::string_view s, bool allow_empty) {
  if (s.empty()) return allow_empty;
  if (s.size() > 63 || !std::isalnum(static_cast<unsigned char>(s.front())) ||
      !std::isalnum(static_cast<unsigned char>(s.back()))) {
    return false;
  }
  for (char c : s) {
    if (!std::isalnum(static_cast<unsigned char>(c)) && c != '-' && c != '_' && c != '.') {
      return false;
    }
  }
  return true;
}

// e[key] if it is a string, else "" (objects from the cluster may hold any shape).
std::string StringField(const nlohmann::json& e, const char* key) {
  auto it = e.find(key);
  return it != e.end() && it->is_string() ? it->get<std::string>() : "";
}

absl::Status Invalid(const std::string& field, const std::string& what) {
  return absl::InvalidArgumentError(field + ": " + what);
}

absl::StatusOr<LabelSelector> ParseSelector(const nlohmann::json& j, const std::string& field) {
  if (!j.is_object()) return Invalid(field, "must be an object");
  LabelSelector selector;
  if (auto labels = j.find("matchLabels"); labels != j.end()) {
    if (!labels->is_object()) return Invalid(field + ".matchLabels", "must be a map");
    for (const auto& [k, v] : labels->items()) {
      if (!v.is_string()) return Invalid(field + ".matchLabels." + k, "must be a string");
      if (absl::Status s = CheckLabel(k, v.get<std::string>()); !s.ok()) {
        return Invalid(field + ".matchLabels", std::string(s.message()));
      }
      selector.match_labels[k] = v.get<std::string>();
    }
  }
  if (auto expressions = j.find("matchExpressions"); expressions != j.end()) {
    if (!expressions->is_array()) return Invalid(field + ".matchExpressions", "must be a list");
    for (size_t i = 0; i < expressions->size(); ++i) {
      const nlohmann::json& e = (*expressions)[i];
      const std::string where = field + ".matchExpressions[" + std::to_string(i) + "]";
      if (!e.is_object()) return Invalid(where, "must be an object");
      LabelRequirement r;
      r.key = StringField(e, "key");
      r.op = StringField(e, "operator");
      if (absl::Status s = CheckLabel(r.key, ""); !s.ok()) {
        return Invalid(where + ".key", std::string(s.message()));
      }
      if (auto values = e.find("values"); values != e.end() && values->is_array()) {
        for (const nlohmann::json& v : *values) {
          if (!v.is_string() || !IsLabelPart(v.get<std::string>(), true)) {
            return Invalid(where + ".values", "every value must be a label value");
          }
          r.values.push_back(v.get<std::string>());
        }
      }
      if (r.op == "In" || r.op == "NotIn") {
        if (r.values.empty()) return Invalid(where, "operator " + r.op + " needs values");
      } else if (r.op == "Exists" || r.op == "DoesNotExist") {
        if (!r.values.empty()) return Invalid(where, "operator " + r.op + " takes no values");
      } else {
        return Invalid(where + ".operator", "must be In, NotIn, Exists or DoesNotExist");
      }
      selector.match_expressions.push_back(std::move(r));
    }
  }
  return selector;
}

constexpr size_t kMaxListEntries = 256;

absl::StatusOr<std::vector<std::string>> ParseStringList(const nlohmann::json& j,
                                                         const std::string& field) {
  if (!j.is_array()) return Invalid(field, "must be a list of strings");
  if (j.size() > kMaxListEntries) return Invalid(field, "has more than 256 entries");
  std::vector<std::string> out;
  for (size_t i = 0; i < j.size(); ++i) {
    if (!j[i].is_string() || j[i].get<std::string>().empty()) {
      return Invalid(field + "[" + std::to_string(i) + "]", "must be a non-empty string");
    }
    out.push_back(j[i].get<std::string>());
  }
  return out;
}

absl::StatusOr<IpBlock> ParseIpBlock(const nlohmann::json& j, const std::string& field) {
  if (!j.is_object()) return Invalid(field, "must be an object {cidr, except}");
  IpBlock block;
  const std::string cidr = StringField(j, "cidr");
  absl::StatusOr<Prefix> prefix = Prefix::Parse(cidr);
  if (cidr.empty() || !prefix.ok()) {
    return Invalid(field + ".cidr", "\"" + cidr + "\" must be a prefix such as 10.0.0.0/8");
  }
  block.cidr = *prefix;
  if (auto except = j.find("except"); except != j.end()) {
    if (!except->is_array()) return Invalid(field + ".except", "must be a list of prefixes");
    if (except->size() > kMaxListEntries) return Invalid(field + ".except", "has over 256 entries");
    for (size_t i = 0; i < except->size(); ++i) {
      const std::string where = field + ".except[" + std::to_string(i) + "]";
      const std::string text = (*except)[i].is_string() ? (*except)[i].get<std::string>() : "";
      absl::StatusOr<Prefix> e = Prefix::Parse(text);
      if (!e.ok()) return Invalid(where, "\"" + text + "\" must be a prefix");
      if (e->address().is_v4() != block.cidr.address().is_v4() ||
          e->length() < block.cidr.length() || !block.cidr.Contains(e->address())) {
        return Invalid(where, e->ToString() + " must lie inside cidr " + block.cidr.ToString());
      }
      block.except.push_back(*e);
    }
  }
  return block;
}

absl::StatusOr<std::vector<PeerSelectorTerm>> ParseTerms(const nlohmann::json& spec,
                                                         const std::string& field) {
  auto list = spec.find(field);
  // No entries select every member.
  if (list == spec.end() || list->is_null()) return std::vector<PeerSelectorTerm>();
  if (!list->is_array()) return Invalid("spec." + field, "must be a list");
  if (list->size() > kMaxListEntries) return Invalid("spec." + field, "has over 256 entries");
  std::vector<PeerSelectorTerm> terms;
  for (size_t i = 0; i < list->size(); ++i) {
    const std::string where = "spec." + field + "[" + std::to_string(i) + "]";
    const nlohmann::json& t = (*list)[i];
    if (!t.is_object()) return Invalid(where, "must be an object");
    PeerSelectorTerm term;
    const std::pair<const char*, std::optional<LabelSelector>*> parts[] = {
        {"peerSelector", &term.peer},
        {"namespaceSelector", &term.namespace_selector},
        {"podSelector", &term.pod}};
    for (const auto& [key, slot] : parts) {
      auto it = t.find(key);
      if (it == t.end()) continue;
      absl::StatusOr<LabelSelector> selector = ParseSelector(*it, where + "." + key);
      if (!selector.ok()) return selector.status();
      *slot = *std::move(selector);
    }
    if (auto it = t.find("names"); it != t.end()) {
      absl::StatusOr<std::vector<std::string>> names = ParseStringList(*it, where + ".names");
      if (!names.ok()) return names.status();
      term.names = *std::move(names);
    }
    if (auto it = t.find("kinds"); it != t.end()) {
      absl::StatusOr<std::vector<std::string>> kinds = ParseStringList(*it, where + ".kinds");
      if (!kinds.ok()) return kinds.status();
      for (size_t k = 0; k < kinds->size(); ++k) {
        const std::string& kind = (*kinds)[k];
        if (kind != "Node" && kind != "Pod" && kind != "External") {
          return Invalid(where + ".kinds[" + std::to_string(k) + "]",
                         "\"" + kind + "\" must be Node, Pod or External");
        }
      }
      term.kinds = *std::move(kinds);
    }
    if (auto it = t.find("ipBlock"); it != t.end()) {
      absl::StatusOr<IpBlock> block = ParseIpBlock(*it, where + ".ipBlock");
      if (!block.ok()) return block.status();
      term.ip_block = *std::move(block);
    }
    if (auto it = t.find("internet"); it != t.end()) {
      if (field != "to") {
        return Invalid(where + ".internet",
                       "is a destination: it belongs in spec.to (the members allowed to use an "
                       "exit peer go in spec.from)");
      }
      if (!it->is_object())
        return Invalid(where + ".internet", "must be an object ({} for any exit)");
      InternetTerm internet;
      if (auto selector = it->find("exitSelector"); selector != it->end()) {
        absl::StatusOr<LabelSelector> parsed =
            ParseSelector(*selector, where + ".internet.exitSelector");
        if (!parsed.ok()) return parsed.status();
        internet.exit_selector = *std::move(parsed);
      }
      term.internet = std::move(internet);
    }
    const bool member_fields = term.peer || term.namespace_selector || term.pod ||
                               !term.names.empty() || !term.kinds.empty();
    if (!member_fields && !term.ip_block && !term.internet) {
      return Invalid(where,
                     "needs peerSelector, names, kinds, ipBlock, internet, or podSelector and/or "
                     "namespaceSelector (peerSelector: {} selects all)");
    }
    if (term.ip_block && (member_fields || term.internet)) {
      return Invalid(where + ".ipBlock",
                     "stands alone in its entry: move the other fields to an entry of their own");
    }
    if (term.internet && member_fields) {
      return Invalid(where + ".internet",
                     "stands alone in its entry: pick the exit peers with internet.exitSelector");
    }
    if (term.peer && (term.namespace_selector || term.pod)) {
      return Invalid(where,
                     "peerSelector selects MeshPeers and cannot be combined with "
                     "podSelector or namespaceSelector in one entry; use two entries");
    }
    terms.push_back(std::move(term));
  }
  return terms;
}

}  // namespace

absl::Status CheckLabel(const std::string& key, const std::string& value) {
  std::string_view name = key;
  if (size_t slash = key.find('/'); slash != std::string::npos) {
    std::string_view prefix = std::string_view(key).substr(0, slash);
    name = std::string_view(key).substr(slash + 1);
    if (prefix.empty() || prefix.size() > 253 || !IsLabelPart(prefix, false)) {
      return absl::InvalidArgumentError("label \"" + key +
                                        "\": the prefix before '/' must be "
                                        "a DNS subdomain");
    }
  }
  if (!IsLabelPart(name, false)) {
    return absl::InvalidArgumentError("label \"" + key +
                                      "\": a key is at most 63 letters, "
                                      "digits, '-', '_' or '.', starting and ending alphanumeric");
  }
  if (!IsLabelPart(value, true)) {
    return absl::InvalidArgumentError("label \"" + key + "=" + value +
                                      "\": a value is empty or "
                                      "at most 63 letters, digits, '-', '_' or '.', starting and "
                                      "ending alphanumeric");
  }
  return absl::OkStatus();
}

absl::StatusOr<PeerPolicySpec> ParsePeerPolicy(const nlohmann::json& object) {
  if (!object.is_object()) return absl::InvalidArgumentError("a PeerPolicy must be an object");
  // A misspelt field would otherwise be ignored and the policy select more or less than meant.
  if (absl::Status s = CheckKnownFields(object, PeerPolicyObjectFields()); !s.ok()) return s;
  PeerPolicySpec policy;
  auto metadata = object.find("metadata");
  if (metadata != object.end() && metadata->is_object()) {
    policy.name = StringField(*metadata, "name");
  }
  auto spec_it = object.find("spec");
  if (spec_it == object.end() || !spec_it->is_object()) {
    return absl::InvalidArgumentError("spec is missing");
  }
  const nlohmann::json& spec = *spec_it;
  const nlohmann::json mesh = spec.value("mesh", nlohmann::json());
  if (!mesh.is_string() || mesh.get<std::string>().empty())
    return Invalid("spec.mesh", "is required");
  policy.mesh = mesh.get<std::string>();
  const nlohmann::json action = spec.value("action", nlohmann::json());
  if (action != "Allow" && action != "Deny") return Invalid("spec.action", "must be Allow or Deny");
  policy.deny = action == "Deny";
  absl::StatusOr<std::vector<PeerSelectorTerm>> from = ParseTerms(spec, "from");
  if (!from.ok()) return from.status();
  policy.from = *std::move(from);
  absl::StatusOr<std::vector<PeerSelectorTerm>> to = ParseTerms(spec, "to");
  if (!to.ok()) return to.status();
  policy.to = *std::move(to);
  if (auto ports = spec.find("ports"); ports != spec.end()) {
    if (!ports->is_array()) return Invalid("spec.ports", "must be a list");
    if (ports->size() > kMaxListEntries) return Invalid("spec.ports", "has over 256 entries");
    for (size_t i = 0; i < ports->size(); ++i) {
      const std::string where = "spec.ports[" + std::to_string(i) + "]";
      const nlohmann::json& p = (*ports)[i];
      if (!p.is_object()) return Invalid(where, "must be an object");
      PortRule rule;
      const nlohmann::json protocol = p.value("protocol", nlohmann::json());
      if (protocol != "TCP" && protocol != "UDP" && protocol != "ICMP" && protocol != "Any") {
        return Invalid(where + ".protocol", "must be TCP, UDP, ICMP or Any");
      }
      rule.protocol = protocol.get<std::string>();
      for (const auto& [key, slot] :
           {std::pair<const char*, uint16_t*>{"port", &rule.port}, {"endPort", &rule.end_port}}) {
        auto it = p.find(key);
        if (it == p.end()) continue;
        if (!it->is_number_integer() || *it < 1 || *it > 65535) {
          return Invalid(where + "." + key, "must be a port from 1 to 65535");
        }
        *slot = static_cast<uint16_t>(it->get<int>());
      }
      if ((rule.protocol == "ICMP" || rule.protocol == "Any") &&
          (rule.port != 0 || rule.end_port != 0)) {
        return Invalid(where,
                       rule.protocol + " has no ports: remove port and endPort, or use TCP or UDP");
      }
      if (rule.end_port != 0 && rule.port == 0) return Invalid(where + ".endPort", "needs port");
      if (rule.end_port != 0 && rule.end_port < rule.port) {
        return Invalid(where + ".endPort", "must not be below port");
      }
      policy.ports.push_back(rule);
    }
  }
  return policy;
}

}  // namespace tunnelmesh
