// The mesh's authoritative zone, built from a network map: A and AAAA for every member
// (`<name>.<domain>`) and its aliases, PTR for mesh addresses in the reverse zones of the Mesh's
// ranges, SOA and NS at the apex. Answers follow RFC 1034 4.3.2 and RFC 2308: NODATA (NOERROR, no
// answer, the SOA in the authority section) for a name that exists with other types, NXDOMAIN with
// the SOA for a name that does not; the SOA's minimum, and its TTL, is the negative TTL (RFC 2308
// section 5). Names compare case-insensitively; answers keep the question's spelling.
//
// A Zone is immutable once built: the agent builds a new one per network map and swaps it in
// (std::shared_ptr<const Zone>), so answering needs no lock.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "lib/dns/message.h"
#include "lib/net/ip.h"

namespace tunnelmesh::dns {

struct ZoneMember {
  std::string name;  // A label ("bob"), or dotted labels for a pod ("web.shop.pod").
  std::vector<std::string> aliases;  // More single labels answering with the same addresses.
  std::vector<IpAddress> addresses;  // Its mesh IPs (v4 and v6).
};

struct ZoneConfig {
  std::string domain = "mesh";  // The zone's apex, without the trailing dot.
  uint32_t ttl = 5;             // Of positive answers.
  uint32_t negative_ttl = 5;    // The SOA minimum and the SOA record's own TTL.
  // The map's version; the SOA serial is its low 32 bits (serial arithmetic, RFC 1982).
  uint64_t version = 0;
  std::vector<Prefix> ranges;  // The Mesh's address ranges: their reverse zones are served too.
  // The NS target and SOA MNAME: the server answering (e.g. "ns.mesh"); with `server_addresses`
  // it gets A/AAAA records (glue in the additional section of NS answers).
  std::string server_name;
  std::vector<IpAddress> server_addresses;
};

class Zone {
 public:
  // Members whose name or alias is not a valid label, or clashes with one already taken (names
  // first, in map order; then aliases, by their members' names), are left out and listed in
  // skipped().
  Zone(ZoneConfig config, const std::vector<ZoneMember>& members);

  // Whether `name` is at or under the apex or one of the reverse zones (so this zone answers it).
  bool Covers(std::string_view name) const;

  // Fills `*response` for `query` (header, question echoed, answer/authority/additional) and
  // returns true when its question is in the zone; returns false, touching nothing, when it is
  // not (the caller refuses it or forwards it). Queries that are not a standard query with
  // exactly one question of class IN (or ANY) get FORMERR/NOTIMP here too (true).
  bool Answer(const Message& query, Message* response) const;

  uint32_t serial() const { return static_cast<uint32_t>(config_.version); }
  const ZoneConfig& config() const { return config_; }
  const std::vector<std::string>& skipped() const { return skipped_; }
  size_t name_count() const { return forward_.size(); }

 private:
  struct Owner {
    std::vector<IpAddress> addresses;
  };

  // The apex (canonical) of the zone `canonical` is in, or "" when none.
  std::string ApexOf(const std::string& canonical) const;
  Record SoaRecord(std::string_view apex) const;
  // Appends `owner`'s A and/or AAAA records as `type` asks (kTypeAny: both).
  void AddAddresses(const std::string& owner, const std::vector<IpAddress>& addresses,
                    uint16_t type, std::vector<Record>* out) const;

  ZoneConfig config_;
  std::string apex_;  // CanonicalName(config_.domain).
  // By canonical full name ("bob.mesh"), members, aliases and the server name.
  absl::flat_hash_map<std::string, Owner> forward_;
  // By canonical reverse name ("7.0.64.100.in-addr.arpa"): the member's full name.
  absl::flat_hash_map<std::string, std::string> reverse_;
  // The names between those and their reverse apex (empty non-terminals: NODATA).
  absl::flat_hash_set<std::string> reverse_nonterminals_;
  absl::flat_hash_set<std::string> forward_nonterminals_;
  std::vector<std::string> reverse_apexes_;  // Canonical, one per range.
  std::vector<std::string> skipped_;
};

}  // namespace tunnelmesh::dns
