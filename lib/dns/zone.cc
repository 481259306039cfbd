#include "lib/dns/zone.h"

#include <algorithm>
#include <string>
#include <utility>

#include "absl/strings/str_cat.h"

namespace tunnelmesh::dns {
namespace {

// The EDNS0 payload size this server offers: DNS Flag Day 2020's 1232 bytes, which fits an IPv6
// minimum MTU without fragmentation.
constexpr uint16_t kServerUdpSize = 1232;

// SOA timers. Nothing transfers this zone (each server builds it from the map), so only `minimum`
// has an effect; the others are the conventional values a secondary would see.
constexpr uint32_t kSoaRefresh = 300;
constexpr uint32_t kSoaRetry = 60;
constexpr uint32_t kSoaExpire = 86400;

// A member name or alias as the zone takes it: one label of letters, digits, '-' and '_'.
bool ValidLabel(std::string_view label) {
  if (label.empty() || label.size() > 63) return false;
  for (char c : label) {
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                    c == '-' || c == '_';
    if (!ok) return false;
  }
  return true;
}

// A member's name: one label, or dotted labels for a pod ("web-1.shop.pod").
bool ValidMemberName(std::string_view name) {
  if (name.size() > 200) return false;
  for (size_t start = 0;;) {
    const size_t dot = name.find('.', start);
    if (!ValidLabel(name.substr(start, dot == std::string_view::npos ? dot : dot - start))) {
      return false;
    }
    if (dot == std::string_view::npos) return true;
    start = dot + 1;
  }
}

// The reverse zone apex that holds `range`: its whole octets (IPv4) or nibbles (IPv6), reversed,
// under in-addr.arpa or ip6.arpa. A range that is not octet- or nibble-aligned gets the apex of
// the aligned range around it.
std::string ReverseApex(const Prefix& range) {
  const IpAddress& a = range.address();
  std::string out;
  if (a.is_v4()) {
    for (int i = range.length() / 8 - 1; i >= 0; --i) absl::StrAppend(&out, a.bytes()[i], ".");
    return out + "in-addr.arpa";
  }
  static constexpr char kHex[] = "0123456789abcdef";
  for (int i = range.length() / 4 - 1; i >= 0; --i) {
    const uint8_t byte = a.bytes()[i / 2];
    out += kHex[i % 2 == 0 ? byte >> 4 : byte & 0xF];
    out += '.';
  }
  return out + "ip6.arpa";
}

}  // namespace

Zone::Zone(ZoneConfig config, const std::vector<ZoneMember>& members)
    : config_(std::move(config)), apex_(CanonicalName(config_.domain)) {
  if (config_.server_name.empty()) config_.server_name = absl::StrCat("ns.", config_.domain);
  // `dotted`: a member's name, which may be dotted labels (a pod); aliases are single labels.
  auto add_name = [&](const std::string& label, const std::vector<IpAddress>& addresses,
                      const char* what, bool dotted) {
    if (!(dotted ? ValidMemberName(label) : ValidLabel(label))) {
      skipped_.push_back(absl::StrCat(what, " '", label, "': not a DNS label"));
      return false;
    }
    const std::string full = absl::StrCat(CanonicalName(label), ".", apex_);
    if (!forward_.try_emplace(full, Owner{addresses}).second) {
      skipped_.push_back(absl::StrCat(what, " '", label, "': the name is taken"));
      return false;
    }
    // The names between a dotted member and the apex ("shop.pod.mesh", "pod.mesh") exist without
    // records: NODATA, not NXDOMAIN.
    for (size_t dot = full.find('.');
         dot != std::string::npos && full.size() - dot - 1 > apex_.size();
         dot = full.find('.', dot + 1)) {
      forward_nonterminals_.insert(full.substr(dot + 1));
    }
    for (const IpAddress& address : addresses) {
      const std::string reverse = CanonicalName(ReverseName(address));
      if (!reverse_.try_emplace(reverse, full).second) continue;  // A name, not an alias, owns it.
      // Every name between the PTR owner and the top is an empty non-terminal: NODATA, not
      // NXDOMAIN (RFC 8020 says a resolver may prune below an NXDOMAIN).
      for (size_t dot = reverse.find('.'); dot != std::string::npos;
           dot = reverse.find('.', dot + 1)) {
        reverse_nonterminals_.insert(reverse.substr(dot + 1));
      }
    }
    return true;
  };
  for (const ZoneMember& m : members) add_name(m.name, m.addresses, "member", /*dotted=*/true);
  // Aliases in the order of their members' names, not the map's (which puts each agent itself
  // first): two servers of one mesh then give a contested alias to the same member.
  std::vector<const ZoneMember*> by_name;
  by_name.reserve(members.size());
  for (const ZoneMember& m : members) by_name.push_back(&m);
  std::sort(by_name.begin(), by_name.end(), [](const ZoneMember* a, const ZoneMember* b) {
    return CanonicalName(a->name) < CanonicalName(b->name);
  });
  for (const ZoneMember* m : by_name) {
    for (const std::string& alias : m->aliases)
      add_name(alias, m->addresses, "alias", /*dotted=*/false);
  }
  const std::string server = CanonicalName(config_.server_name);
  if (!config_.server_addresses.empty() && NameInZone(server, apex_) && server != apex_) {
    forward_.try_emplace(server, Owner{config_.server_addresses});
  }
  for (const Prefix& range : config_.ranges) {
    reverse_apexes_.push_back(CanonicalName(ReverseApex(range)));
  }
}

bool Zone::Covers(std::string_view name) const { return !ApexOf(CanonicalName(name)).empty(); }

std::string Zone::ApexOf(const std::string& canonical) const {
  if (NameInZone(canonical, apex_)) return apex_;
  for (const std::string& apex : reverse_apexes_) {
    if (NameInZone(canonical, apex)) return apex;
  }
  return "";
}

Record Zone::SoaRecord(std::string_view apex) const {
  Soa soa;
  soa.mname = config_.server_name;
  soa.rname = absl::StrCat("hostmaster.", config_.domain);
  soa.serial = serial();
  soa.refresh = kSoaRefresh;
  soa.retry = kSoaRetry;
  soa.expire = kSoaExpire;
  soa.minimum = config_.negative_ttl;
  // RFC 2308 section 3: the SOA in a negative answer carries the lesser of its TTL and minimum.
  return Record{std::string(apex), kTypeSoa, kClassIn, config_.negative_ttl, soa};
}

void Zone::AddAddresses(const std::string& owner, const std::vector<IpAddress>& addresses,
                        uint16_t type, std::vector<Record>* out) const {
  for (const IpAddress& a : addresses) {
    const bool wanted =
        type == kTypeAny || (type == kTypeA && a.is_v4()) || (type == kTypeAaaa && a.is_v6());
    if (wanted) out->push_back({owner, a.is_v4() ? kTypeA : kTypeAaaa, kClassIn, config_.ttl, a});
  }
}

bool Zone::Answer(const Message& query, Message* response) const {
  Message r;
  r.header.id = query.header.id;
  r.header.qr = true;
  r.header.opcode = query.header.opcode;
  r.header.rd = query.header.rd;
  r.header.cd = query.header.cd;
  if (query.edns.has_value()) r.edns = Edns{kServerUdpSize, 0, false};
  auto finish = [&](Rcode rcode) {
    r.header.rcode = rcode;
    *response = std::move(r);
    return true;
  };
  if (query.header.qr) return finish(Rcode::kFormErr);
  if (query.header.opcode != kOpcodeQuery) return finish(Rcode::kNotImp);
  if (query.questions.size() != 1) return finish(Rcode::kFormErr);
  const Question& q = query.questions[0];
  const std::string name = CanonicalName(q.name);
  const std::string apex = ApexOf(name);
  if (apex.empty()) return false;
  r.questions.push_back(q);
  // RFC 6891 6.1.3: a version this server does not implement gets BADVERS.
  if (query.edns.has_value() && query.edns->version != 0) return finish(Rcode::kBadVers);
  if (q.qclass != kClassIn && q.qclass != kTypeAny) return finish(Rcode::kRefused);
  r.header.aa = true;
  if (q.type == kTypeOpt) return finish(Rcode::kFormErr);

  auto nodata = [&] {
    r.authority.push_back(SoaRecord(apex));
    return finish(Rcode::kNoError);
  };
  if (name == apex) {
    if (q.type == kTypeSoa || q.type == kTypeAny) r.answers.push_back(SoaRecord(apex));
    if (q.type == kTypeNs || q.type == kTypeAny) {
      r.answers.push_back({q.name, kTypeNs, kClassIn, config_.ttl, config_.server_name});
      if (const auto it = forward_.find(CanonicalName(config_.server_name)); it != forward_.end()) {
        AddAddresses(config_.server_name, it->second.addresses, kTypeAny, &r.additional);
      }
    }
    if (r.answers.empty()) return nodata();
    // The answer's owner is the question's spelling (the SOA was built with the apex's).
    for (Record& rec : r.answers) rec.name = q.name;
    return finish(Rcode::kNoError);
  }
  if (apex == apex_) {
    const auto it = forward_.find(name);
    if (it == forward_.end() && forward_nonterminals_.contains(name)) return nodata();
    if (it == forward_.end()) {
      r.authority.push_back(SoaRecord(apex));
      return finish(Rcode::kNxDomain);
    }
    AddAddresses(q.name, it->second.addresses, q.type, &r.answers);
    if (r.answers.empty()) return nodata();
    return finish(Rcode::kNoError);
  }
  // A reverse zone.
  if (const auto it = reverse_.find(name); it != reverse_.end()) {
    if (q.type != kTypePtr && q.type != kTypeAny) return nodata();
    r.answers.push_back({q.name, kTypePtr, kClassIn, config_.ttl, it->second});
    return finish(Rcode::kNoError);
  }
  if (reverse_nonterminals_.contains(name)) return nodata();
  r.authority.push_back(SoaRecord(apex));
  return finish(Rcode::kNxDomain);
}

}  // namespace tunnelmesh::dns
