#include "node-agent/policy/rule_set.h"

#include <charconv>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"

namespace tunnelmesh::policy {
namespace {

absl::Status ParsePrefixes(const google::protobuf::RepeatedPtrField<std::string>& texts,
                           std::string_view field, std::vector<Prefix>* out) {
  if (static_cast<size_t>(texts.size()) > kMaxPrefixesPerRule) {
    return absl::InvalidArgumentError(absl::StrCat(std::string(field), ": ", texts.size(),
                                                   " prefixes, more than ", kMaxPrefixesPerRule));
  }
  out->reserve(texts.size());
  for (int i = 0; i < texts.size(); ++i) {
    absl::StatusOr<Prefix> prefix = Prefix::Parse(texts[i]);
    if (!prefix.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat(std::string(field), "[", i, "]: \"", texts[i],
                       "\" is not a prefix: ", prefix.status().message()));
    }
    out->push_back(*prefix);
  }
  return absl::OkStatus();
}

absl::StatusOr<filter::Action> ActionFromProto(int value, std::string_view field) {
  switch (value) {
    case coord::FILTER_ACTION_DENY:
      return filter::Action::kDeny;
    case coord::FILTER_ACTION_ALLOW:
      return filter::Action::kAllow;
    default:
      return absl::InvalidArgumentError(
          absl::StrCat(std::string(field), ": unknown action ", value, " (want ALLOW or DENY)"));
  }
}

bool ParsePort(std::string_view text, uint16_t* port) {
  unsigned value = 0;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (ec != std::errc() || end != text.data() + text.size() || value == 0 || value > 65535) {
    return false;
  }
  *port = static_cast<uint16_t>(value);
  return true;
}

}  // namespace

absl::StatusOr<filter::RuleSet> RuleSetFromProto(const coord::FilterRules& rules) {
  filter::RuleSet out;
  if (static_cast<size_t>(rules.rules_size()) > kMaxRules) {
    return absl::InvalidArgumentError(
        absl::StrCat("filter.rules: ", rules.rules_size(), " rules, more than ", kMaxRules));
  }
  out.policies.assign(rules.policies().begin(), rules.policies().end());
  absl::StatusOr<filter::Action> default_action =
      ActionFromProto(rules.default_action(), "filter.default_action");
  if (!default_action.ok()) return default_action.status();
  out.default_action = *default_action;
  if (absl::Status s =
          ParsePrefixes(rules.egress_prefixes(), "filter.egress_prefixes", &out.egress);
      !s.ok()) {
    return s;
  }
  out.rules.reserve(rules.rules_size());
  for (int i = 0; i < rules.rules_size(); ++i) {
    const coord::FilterRule& in = rules.rules(i);
    const std::string field = absl::StrCat("filter.rules[", i, "]");
    filter::Rule rule;
    if (absl::Status s = ParsePrefixes(in.sources(), field + ".sources", &rule.sources); !s.ok()) {
      return s;
    }
    if (absl::Status s =
            ParsePrefixes(in.destinations(), field + ".destinations", &rule.destinations);
        !s.ok()) {
      return s;
    }
    switch (in.protocol()) {
      case coord::FILTER_PROTOCOL_ANY:
      case coord::FILTER_PROTOCOL_TCP:
      case coord::FILTER_PROTOCOL_UDP:
      case coord::FILTER_PROTOCOL_ICMP:
        rule.protocol = ProtocolFromProto(in.protocol());
        break;
      default:
        return absl::InvalidArgumentError(
            absl::StrCat(field, ".protocol: unknown protocol ", static_cast<int>(in.protocol())));
    }
    const bool has_ports =
        rule.protocol == filter::Protocol::kTcp || rule.protocol == filter::Protocol::kUdp;
    if (in.ports_size() > 0 && !has_ports) {
      return absl::InvalidArgumentError(absl::StrCat(field, ".ports: ports given for protocol ",
                                                     ProtocolName(rule.protocol),
                                                     " (only TCP and UDP have ports)"));
    }
    for (int p = 0; p < in.ports_size(); ++p) {
      const coord::PortRange& range = in.ports(p);
      if (range.first() == 0 || range.first() > 65535 || range.last() > 65535 ||
          range.last() < range.first()) {
        return absl::InvalidArgumentError(absl::StrCat(field, ".ports[", p, "]: ", range.first(),
                                                       "-", range.last(),
                                                       " is not a range of ports 1-65535"));
      }
      rule.ports.push_back(filter::PortRange{static_cast<uint16_t>(range.first()),
                                             static_cast<uint16_t>(range.last())});
    }
    absl::StatusOr<filter::Action> action = ActionFromProto(in.action(), field + ".action");
    if (!action.ok()) return action.status();
    rule.action = *action;
    if (in.policy() >= out.policies.size()) {
      return absl::InvalidArgumentError(absl::StrCat(field, ".policy: index ", in.policy(),
                                                     " but only ", out.policies.size(),
                                                     " policies are listed"));
    }
    rule.policy = in.policy();
    out.rules.push_back(std::move(rule));
  }
  return out;
}

const char* ActionName(filter::Action action) {
  return action == filter::Action::kAllow ? "allow" : "deny";
}

const char* ProtocolName(filter::Protocol protocol) {
  switch (protocol) {
    case filter::Protocol::kTcp:
      return "tcp";
    case filter::Protocol::kUdp:
      return "udp";
    case filter::Protocol::kIcmp:
      return "icmp";
    case filter::Protocol::kAny:
      break;
  }
  return "any";
}

filter::Protocol ProtocolFromProto(coord::FilterProtocol protocol) {
  switch (protocol) {
    case coord::FILTER_PROTOCOL_TCP:
      return filter::Protocol::kTcp;
    case coord::FILTER_PROTOCOL_UDP:
      return filter::Protocol::kUdp;
    case coord::FILTER_PROTOCOL_ICMP:
      return filter::Protocol::kIcmp;
    default:
      return filter::Protocol::kAny;
  }
}

coord::FilterProtocol ProtocolToProto(filter::Protocol protocol) {
  switch (protocol) {
    case filter::Protocol::kTcp:
      return coord::FILTER_PROTOCOL_TCP;
    case filter::Protocol::kUdp:
      return coord::FILTER_PROTOCOL_UDP;
    case filter::Protocol::kIcmp:
      return coord::FILTER_PROTOCOL_ICMP;
    case filter::Protocol::kAny:
      break;
  }
  return coord::FILTER_PROTOCOL_ANY;
}

absl::StatusOr<ExplainQuery> ParseExplainArgs(std::string_view source,
                                              std::string_view destination) {
  ExplainQuery query;
  if (source.empty()) {
    return absl::InvalidArgumentError("SRC is empty: give a member name or a mesh IP");
  }
  query.source = std::string(source);
  const size_t slash = destination.rfind('/');
  if (slash == std::string_view::npos) {
    return absl::InvalidArgumentError(
        absl::StrCat("\"", std::string(destination),
                     "\" has no protocol: write DST:PORT/tcp, DST:PORT/udp or DST/icmp"));
  }
  const std::string proto = absl::AsciiStrToLower(std::string(destination.substr(slash + 1)));
  if (proto == "tcp") {
    query.protocol = filter::Protocol::kTcp;
  } else if (proto == "udp") {
    query.protocol = filter::Protocol::kUdp;
  } else if (proto == "icmp") {
    query.protocol = filter::Protocol::kIcmp;
  } else {
    return absl::InvalidArgumentError(absl::StrCat(
        "protocol \"", std::string(destination.substr(slash + 1)), "\" is not tcp, udp or icmp"));
  }
  std::string_view host_port = destination.substr(0, slash);
  std::string_view host = host_port;
  std::string_view port;
  if (!host_port.empty() && host_port.front() == '[') {
    const size_t close = host_port.find(']');
    if (close == std::string_view::npos) {
      return absl::InvalidArgumentError(absl::StrCat(
          "\"", std::string(host_port), "\" opens '[' without ']': write [fd99::1]:22/tcp"));
    }
    host = host_port.substr(1, close - 1);
    std::string_view rest = host_port.substr(close + 1);
    if (!rest.empty()) {
      if (rest.front() != ':') {
        return absl::InvalidArgumentError(
            absl::StrCat("\"", std::string(host_port), "\": expected ':PORT' after ']'"));
      }
      port = rest.substr(1);
      if (port.empty()) return absl::InvalidArgumentError("empty port after ':'");
    }
  } else if (const size_t colon = host_port.rfind(':'); colon != std::string_view::npos) {
    if (host_port.find(':') != colon) {
      // More than one colon: a bare IPv6 address, without a port.
      host = host_port;
    } else {
      host = host_port.substr(0, colon);
      port = host_port.substr(colon + 1);
      if (port.empty()) return absl::InvalidArgumentError("empty port after ':'");
    }
  }
  if (host.empty()) {
    return absl::InvalidArgumentError("DST is empty: give a member name or a mesh IP");
  }
  query.destination = std::string(host);
  if (query.protocol == filter::Protocol::kIcmp) {
    if (!port.empty()) {
      return absl::InvalidArgumentError(
          absl::StrCat("icmp has no ports: write ", query.destination, "/icmp"));
    }
    return query;
  }
  if (port.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat("no port: write ", query.destination, ":PORT/", proto, " (PORT 1-65535)"));
  }
  if (!ParsePort(port, &query.port)) {
    return absl::InvalidArgumentError(
        absl::StrCat("port \"", std::string(port), "\" is not a number from 1 to 65535"));
  }
  return query;
}

std::string ExplainRequestLine(const ExplainQuery& query) {
  nlohmann::json j = {{"source", query.source},
                      {"destination", query.destination},
                      {"protocol", ProtocolName(query.protocol)},
                      {"port", query.port}};
  return "explain " + j.dump();
}

absl::StatusOr<ExplainQuery> ParseExplainRequestLine(std::string_view line) {
  constexpr std::string_view kVerb = "explain ";
  if (line.substr(0, kVerb.size()) != kVerb) {
    return absl::InvalidArgumentError("not an explain request");
  }
  nlohmann::json j = nlohmann::json::parse(line.substr(kVerb.size()), nullptr,
                                           /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) {
    return absl::InvalidArgumentError("the explain request is not a JSON object");
  }
  auto source = j.find("source");
  auto destination = j.find("destination");
  auto protocol = j.find("protocol");
  auto port = j.find("port");
  if (source == j.end() || !source->is_string() || destination == j.end() ||
      !destination->is_string() || protocol == j.end() || !protocol->is_string() ||
      port == j.end() || !port->is_number_unsigned() || port->get<uint64_t>() > 65535) {
    return absl::InvalidArgumentError(
        "the explain request needs source, destination, protocol (strings) and port (0-65535)");
  }
  ExplainQuery query;
  query.source = source->get<std::string>();
  query.destination = destination->get<std::string>();
  query.port = static_cast<uint16_t>(port->get<uint64_t>());
  const std::string p = protocol->get<std::string>();
  if (p == "tcp") {
    query.protocol = filter::Protocol::kTcp;
  } else if (p == "udp") {
    query.protocol = filter::Protocol::kUdp;
  } else if (p == "icmp") {
    query.protocol = filter::Protocol::kIcmp;
  } else {
    return absl::InvalidArgumentError("the explain request's protocol is not tcp, udp or icmp");
  }
  if (query.source.empty() || query.destination.empty()) {
    return absl::InvalidArgumentError("the explain request's source or destination is empty");
  }
  return query;
}

nlohmann::json ExplainAnswerJson(const ExplainAnswer& answer) {
  return {{"action", ActionName(answer.action)},
          {"policy", answer.policy},
          {"default", answer.policy.empty()},
          {"enforced_by", answer.enforced_by},
          {"local", answer.local},
          {"source_ip", answer.source_ip},
          {"destination_ip", answer.destination_ip}};
}

absl::StatusOr<ExplainAnswer> ExplainAnswerFromJson(std::string_view text) {
  nlohmann::json j = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) {
    return absl::InternalError("the agent's explain answer is not JSON");
  }
  if (auto error = j.find("error"); error != j.end()) {
    return absl::FailedPreconditionError(error->is_string() ? error->get<std::string>()
                                                            : error->dump());
  }
  ExplainAnswer answer;
  const std::string action = j.value("action", std::string());
  if (action != "allow" && action != "deny") {
    return absl::InternalError("the agent's explain answer has no action");
  }
  answer.action = action == "allow" ? filter::Action::kAllow : filter::Action::kDeny;
  answer.policy = j.value("policy", std::string());
  answer.enforced_by = j.value("enforced_by", std::string());
  answer.local = j.value("local", false);
  answer.source_ip = j.value("source_ip", std::string());
  answer.destination_ip = j.value("destination_ip", std::string());
  return answer;
}

std::string FormatExplainAnswer(const ExplainQuery& query, const ExplainAnswer& answer) {
  auto side = [](const std::string& as_typed, const std::string& ip) {
    if (ip.empty() || ip == as_typed) return as_typed;
    return as_typed + " (" + ip + ")";
  };
  std::string flow = side(query.source, answer.source_ip) + " -> " +
                     side(query.destination, answer.destination_ip) + " " +
                     ProtocolName(query.protocol);
  if (query.protocol == filter::Protocol::kTcp || query.protocol == filter::Protocol::kUdp) {
    flow += "/" + std::to_string(query.port);
  }
  std::string out = std::string(ActionName(answer.action)) + " " + flow + " ";
  if (answer.policy.empty()) {
    out += answer.action == filter::Action::kAllow ? "by the Mesh default (Allow)"
                                                   : "by the Mesh default (Deny)";
  } else {
    out += "by PeerPolicy " + answer.policy;
  }
  if (!answer.enforced_by.empty()) out += ", enforced by " + answer.enforced_by;
  return out;
}

}  // namespace tunnelmesh::policy
