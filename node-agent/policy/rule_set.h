// The agent's side of PeerPolicy: turns the rules the coordinator compiled for this member
// (coord::FilterRules in the network map) into lib/filter's RuleSet, and the pieces of
// `tunnelmesh-agent explain`: parsing its arguments, the control-socket request that carries them,
// and the answer in JSON and for people.
//
// Nothing here does I/O or holds state; the agent calls it on its control thread (conversion) and
// on the control socket's thread or in the CLI (explain).
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"
#include "lib/filter/filter.h"
#include "nlohmann/json.hpp"
#include "proto/coordinator.pb.h"

namespace tunnelmesh::policy {

namespace coord = ::tunnelmesh::coordinator::v1;

// The most rules, policies and prefixes one rule set may carry: a map larger than this is refused
// (the coordinator never compiles one that big for a member; a bigger one is a bug or an attack).
inline constexpr size_t kMaxRules = 100000;
inline constexpr size_t kMaxPrefixesPerRule = 65536;

// Checks and converts. Errors name the bad field, e.g. "filter.rules[3].sources[1]: ...".
[[nodiscard]] absl::StatusOr<filter::RuleSet> RuleSetFromProto(const coord::FilterRules& rules);

const char* ActionName(filter::Action action);        // "allow", "deny"
const char* ProtocolName(filter::Protocol protocol);  // "any", "tcp", "udp", "icmp"
filter::Protocol ProtocolFromProto(coord::FilterProtocol protocol);
coord::FilterProtocol ProtocolToProto(filter::Protocol protocol);

// What `explain SRC DST:PORT/PROTO` asks. SRC and DST are member names or mesh IPs, as typed.
struct ExplainQuery {
  std::string source;
  std::string destination;
  filter::Protocol protocol = filter::Protocol::kTcp;
  uint16_t port = 0;  // TCP and UDP only.
};

// Parses the command line's SRC and DST:PORT/PROTO (PROTO tcp, udp or icmp in any case;
// `DST/icmp` takes no port; an IPv6 DST with a port is written [fd99::1]:22/tcp). Errors say what
// to write instead.
[[nodiscard]] absl::StatusOr<ExplainQuery> ParseExplainArgs(std::string_view source,
                                                            std::string_view destination);

// The control-socket request line ("explain {...}") and its parser (the agent's side; the line is
// untrusted, so a bad one is an error, never a crash).
std::string ExplainRequestLine(const ExplainQuery& query);
[[nodiscard]] absl::StatusOr<ExplainQuery> ParseExplainRequestLine(std::string_view line);

struct ExplainAnswer {
  filter::Action action = filter::Action::kDeny;
  std::string policy;       // Empty: the Mesh's default decided.
  std::string enforced_by;  // The member whose filter enforces the flow.
  bool local = false;       // This agent enforces it (answered from its own filter).
  std::string source_ip;
  std::string destination_ip;
};

nlohmann::json ExplainAnswerJson(const ExplainAnswer& answer);
// Parses what ExplainAnswerJson wrote; errors when the agent sent {"error": ...} or garbage.
[[nodiscard]] absl::StatusOr<ExplainAnswer> ExplainAnswerFromJson(std::string_view text);
// "deny 10.99.0.2 -> 10.99.0.4 tcp/5432 by the Mesh default (Deny), enforced by db".
std::string FormatExplainAnswer(const ExplainQuery& query, const ExplainAnswer& answer);

}  // namespace tunnelmesh::policy
