// Matcher: packet classification by equivalence classes and a precomputed cross product (the
// scheme of Recursive Flow Classification, Gupta and McKeown, SIGCOMM 1999), so a decision never
// scans the rules.
//
// Rules get bit positions: deny rules first, then allow rules, each group in rule-set order, so
// "deny wins, else the first allow" is "the lowest set bit" of the matching rules' bitset.
//
// Three dimensions: source address, destination address, and protocol+destination port (one
// 18-bit key: protocol code * 65536 + port). In each address dimension the rules' prefixes cut
// the key space into elementary intervals; a sweep over the interval boundaries gives each
// interval the bitset of rules it matches, and intervals with equal bitsets share one equivalence
// class. A lookup:
//   1. source and destination classes: a search over the sorted interval starts (a sampled index
//      first, then one cache line), IPv4 and IPv6 in their own tables;
//   2. (source class, destination class) -> pair class, one read of a precomputed table; a pair
//      class's bitset is the AND of both;
//   3. the pair class's own port-key intervals, built at compile time from the rules of that pair
//      class only, each holding the deciding rule: a search over a list whose length depends on
//      how many rules share those sources and destinations, not on the rule count.
// When the pair table or the port lists would exceed MatcherLimits::max_table_cells (rule sets
// whose sources and destinations are both large and unrelated, or thousands of rules over the
// same addresses), the per-dimension class bitsets are kept instead (the port key then has classes
// too) and a lookup ANDs three bitsets word by word until the first set bit: rules / 64 words at
// most, still no per-rule work.
//
// Figures (build time, table size, decision time at 10, 1,000 and 10,000 rules): see
// docs/benchmarks.md, "Packet filter decision time".
#include <algorithm>
#include <cstring>
#include <map>
#include <utility>

#include "absl/container/flat_hash_map.h"
#include "lib/filter/filter.h"

namespace tunnelmesh::filter {
namespace {

using U128 = unsigned __int128;

constexpr uint32_t kNoRule = 0;  // Phase-2 cells hold the deciding bit + 1, or kNoRule.

uint32_t V4Key(const IpAddress& a) {
  const uint8_t* b = a.bytes();
  return uint32_t{b[0]} << 24 | uint32_t{b[1]} << 16 | uint32_t{b[2]} << 8 | b[3];
}

U128 V6Key(const IpAddress& a) {
  U128 k = 0;
  for (int i = 0; i < 16; ++i) k = k << 8 | a.bytes()[i];
  return k;
}

// Inclusive key range of a prefix.
template <typename K>
std::pair<K, K> RangeOf(K network, int length, int bits) {
  if (length <= 0) return {0, ~K{0}};
  const K host_mask = length >= bits ? K{0} : (~K{0} >> length);
  return {network & ~host_mask, network | host_mask};
}

// The port dimension's protocol codes.
constexpr uint32_t kProtoOther = 0;
constexpr uint32_t kProtoTcp = 1;
constexpr uint32_t kProtoUdp = 2;
constexpr uint32_t kProtoIcmp = 3;
constexpr uint32_t kPortKeyMax = 4 * 65536 - 1;

uint32_t ProtoCode(Protocol p) {
  switch (p) {
    case Protocol::kTcp:
      return kProtoTcp;
    case Protocol::kUdp:
      return kProtoUdp;
    case Protocol::kIcmp:
      return kProtoIcmp;
    case Protocol::kAny:
      break;
  }
  return kProtoOther;
}

uint32_t PortKey(const FlowKey& flow) {
  const uint32_t code = ProtoCode(flow.protocol);
  const bool has_port = code == kProtoTcp || code == kProtoUdp;
  return code * 65536 + (has_port ? flow.destination_port : 0);
}

// Index of the first element of [first, last) greater than `key` (std::upper_bound), without
// data-dependent branches: on the data plane the comparisons are unpredictable, and a
// mispredicted branch per step cost more than the loads.
template <typename K>
size_t UpperBound(const K* first, size_t n, K key) {
  if (n == 0) return 0;
  const K* base = first;
  while (n > 1) {
    const size_t half = n / 2;
    base = base[half] <= key ? base + half : base;
    n -= half;
  }
  return static_cast<size_t>(base - first) + (*base <= key ? 1 : 0);
}

// Assigns class ids to bitsets (rules / 64 words each), deduplicating equal ones.
class ClassSet {
 public:
  explicit ClassSet(size_t words) : words_(words) {}

  uint32_t Intern(const std::vector<uint64_t>& bits) {
    auto [it, inserted] = ids_.try_emplace(bits, static_cast<uint32_t>(ids_.size()));
    if (inserted) all_.insert(all_.end(), bits.begin(), bits.end());
    return it->second;
  }
  size_t size() const { return ids_.size(); }
  size_t words() const { return words_; }
  const uint64_t* bits(uint32_t id) const { return all_.data() + id * words_; }
  std::vector<uint64_t> TakeBits() { return std::move(all_); }

 private:
  size_t words_;
  absl::flat_hash_map<std::vector<uint64_t>, uint32_t> ids_;
  std::vector<uint64_t> all_;  // Class id * words_ -> its bitset.
};

// One dimension over keys of type K: intervals given as (first, last, bit), swept into sorted
// interval starts and their class ids.
//
// The lookup searches a sample of every kStride-th start first (small enough to stay in the
// fastest cache), then one cache line of `starts`: two or three cache misses instead of one per
// step of a binary search over tens of thousands of starts.
template <typename K>
struct Dimension {
  static constexpr size_t kStride = 64 / sizeof(K);
  std::vector<K> starts;      // starts[0] == 0; interval i is [starts[i], starts[i+1]).
  std::vector<uint32_t> ids;  // Class of interval i.
  std::vector<K> index;       // starts[0], starts[kStride], starts[2 * kStride], ...

  void BuildIndex() {
    index.clear();
    for (size_t i = 0; i < starts.size(); i += kStride) index.push_back(starts[i]);
  }

  uint32_t Lookup(K key) const {
    const size_t block = UpperBound(index.data(), index.size(), key) - 1;
    const size_t first = block * kStride;
    const size_t count = std::min(kStride, starts.size() - first);
    return ids[first + UpperBound(starts.data() + first, count, key) - 1];
  }
};

template <typename K>
struct Span3 {
  K first;
  K last;
  uint32_t bit;
};

template <typename K>
Dimension<K> Sweep(const std::vector<Span3<K>>& spans, size_t rule_count, ClassSet& classes) {
  // Rule bits are below rule_count; the bitset has the class set's width (at least one word).
  struct Event {
    K at;
    int delta;
    uint32_t bit;
  };
  std::vector<Event> events;
  events.reserve(spans.size() * 2);
  for (const auto& s : spans) {
    events.push_back({s.first, +1, s.bit});
    if (s.last != ~K{0}) events.push_back({static_cast<K>(s.last + 1), -1, s.bit});
  }
  std::sort(events.begin(), events.end(),
            [](const Event& a, const Event& b) { return a.at < b.at; });
  std::vector<uint32_t> count(rule_count, 0);
  std::vector<uint64_t> bits(classes.words(), 0);
  Dimension<K> d;
  size_t i = 0;
  K at = 0;
  while (true) {
    while (i < events.size() && events[i].at == at) {
      const Event& e = events[i++];
      uint32_t& c = count[e.bit];
      c += e.delta;
      if (c == 0) {
        bits[e.bit / 64] &= ~(uint64_t{1} << (e.bit % 64));
      } else {
        bits[e.bit / 64] |= uint64_t{1} << (e.bit % 64);
      }
    }
    const uint32_t id = classes.Intern(bits);
    if (d.ids.empty() || d.ids.back() != id) {
      d.starts.push_back(at);
      d.ids.push_back(id);
    }
    if (i == events.size()) break;
    at = events[i].at;
  }
  d.BuildIndex();
  return d;
}

// Lowest bit set in all of a, b (and c, when given); -1 when none.
int64_t FirstCommon(const uint64_t* a, const uint64_t* b, const uint64_t* c, size_t words) {
  for (size_t w = 0; w < words; ++w) {
    uint64_t x = a[w] & b[w];
    if (c != nullptr) x &= c[w];
    if (x != 0) return static_cast<int64_t>(w * 64 + __builtin_ctzll(x));
  }
  return -1;
}

// Sorted, merged inclusive ranges; membership by binary search.
template <typename K>
struct RangeSet {
  std::vector<std::pair<K, K>> ranges;

  void Build() {
    std::sort(ranges.begin(), ranges.end());
    std::vector<std::pair<K, K>> merged;
    for (const auto& r : ranges) {
      if (!merged.empty() &&
          (merged.back().second == ~K{0} || r.first <= merged.back().second + 1)) {
        merged.back().second = std::max(merged.back().second, r.second);
      } else {
        merged.push_back(r);
      }
    }
    ranges = std::move(merged);
  }
  bool Contains(K key) const {
    auto it = std::upper_bound(ranges.begin(), ranges.end(), std::pair<K, K>{key, ~K{0}});
    if (it == ranges.begin()) return false;
    --it;
    return key >= it->first && key <= it->second;
  }
};

}  // namespace

struct Matcher::Tables {
  RuleSet rules;
  std::vector<Verdict> verdicts;  // Bit -> what the rule decides.
  size_t words = 0;

  Dimension<uint32_t> source_v4;
  Dimension<U128> source_v6;
  Dimension<uint32_t> destination_v4;
  Dimension<U128> destination_v6;
  Dimension<uint32_t> port;
  size_t source_classes = 0;
  size_t destination_classes = 0;
  size_t port_classes = 0;

  bool cross_product = false;
  std::vector<uint32_t> pair_table;  // source class * destination_classes + destination class.
  size_t pair_classes = 0;
  // Phase 2: per pair class, its own sorted port-key intervals (the first starts at 0) and the
  // deciding bit + 1 (or kNoRule) of each; entries [offsets[c], offsets[c + 1]).
  std::vector<uint32_t> port_offsets;
  std::vector<uint32_t> port_starts;
  std::vector<uint32_t> port_results;

  // The fallback's per-dimension class bitsets.
  std::vector<uint64_t> source_bits;
  std::vector<uint64_t> destination_bits;
  std::vector<uint64_t> port_bits;

  RangeSet<uint32_t> egress_v4;
  RangeSet<U128> egress_v6;

  bool BuildPortLists(const ClassSet& pairs,
                      const std::vector<std::vector<Span3<uint32_t>>>& rule_ports, size_t budget);
};

namespace {

// Adds `prefixes` (all addresses when empty) of rule bit `bit` to the v4 and v6 span lists.
void AddPrefixes(const std::vector<Prefix>& prefixes, uint32_t bit,
                 std::vector<Span3<uint32_t>>& v4, std::vector<Span3<U128>>& v6) {
  if (prefixes.empty()) {
    v4.push_back({0, ~uint32_t{0}, bit});
    v6.push_back({0, ~U128{0}, bit});
    return;
  }
  for (const Prefix& p : prefixes) {
    if (p.address().is_v4()) {
      auto [first, last] = RangeOf<uint32_t>(V4Key(p.address()), p.length(), 32);
      v4.push_back({first, last, bit});
    } else {
      auto [first, last] = RangeOf<U128>(V6Key(p.address()), p.length(), 128);
      v6.push_back({first, last, bit});
    }
  }
}

void AddPorts(const Rule& rule, uint32_t bit, std::vector<Span3<uint32_t>>& spans) {
  auto whole = [&](uint32_t code) { spans.push_back({code * 65536, code * 65536 + 65535, bit}); };
  auto ranges = [&](uint32_t code) {
    if (rule.ports.empty()) return whole(code);
    for (const PortRange& r : rule.ports) {
      if (r.first > r.last) continue;
      spans.push_back({code * 65536 + r.first, code * 65536 + r.last, bit});
    }
  };
  switch (rule.protocol) {
    case Protocol::kAny:
      if (rule.ports.empty()) {
        spans.push_back({0, kPortKeyMax, bit});
      } else {
        whole(kProtoOther);
        ranges(kProtoTcp);
        ranges(kProtoUdp);
        whole(kProtoIcmp);
      }
      break;
    case Protocol::kTcp:
      ranges(kProtoTcp);
      break;
    case Protocol::kUdp:
      ranges(kProtoUdp);
      break;
    case Protocol::kIcmp:
      whole(kProtoIcmp);
      break;
  }
}

}  // namespace

// Phase 2 of the tables: for each pair class, a port-key interval list over the rules of that
// class only, each interval holding the lowest rule bit active there. False (tables abandoned for
// the bitset fallback) when the lists exceed `budget` entries or the events swept to build them
// `budget` / 4 (which keeps the worst build near a second).
bool Matcher::Tables::BuildPortLists(const ClassSet& pairs,
                                     const std::vector<std::vector<Span3<uint32_t>>>& rule_ports,
                                     size_t budget) {
  Tables& t = *this;
  struct Event {
    uint32_t at;
    int delta;
    uint32_t bit;
  };
  std::vector<Event> events;
  std::map<uint32_t, uint32_t> active;  // Bit -> how many of its spans cover the sweep point.
  size_t work = 0;
  t.port_offsets.reserve(t.pair_classes + 1);
  for (uint32_t c = 0; c < t.pair_classes; ++c) {
    t.port_offsets.push_back(static_cast<uint32_t>(t.port_starts.size()));
    events.clear();
    const uint64_t* bits = pairs.bits(c);
    for (size_t w = 0; w < t.words; ++w) {
      for (uint64_t x = bits[w]; x != 0; x &= x - 1) {
        const uint32_t bit = static_cast<uint32_t>(w * 64 + __builtin_ctzll(x));
        for (const auto& span : rule_ports[bit]) {
          events.push_back({span.first, +1, bit});
          if (span.last != kPortKeyMax) events.push_back({span.last + 1, -1, bit});
        }
      }
    }
    work += events.size() + 1;
    if (work > budget / 4) return false;
    std::sort(events.begin(), events.end(),
              [](const Event& a, const Event& b) { return a.at < b.at; });
    active.clear();
    size_t i = 0;
    uint32_t at = 0;
    const size_t first = t.port_starts.size();
    while (true) {
      for (; i < events.size() && events[i].at == at; ++i) {
        const Event& e = events[i];
        if (e.delta > 0) {
          ++active[e.bit];
        } else if (--active[e.bit] == 0) {
          active.erase(e.bit);
        }
      }
      const uint32_t result = active.empty() ? kNoRule : active.begin()->first + 1;
      if (t.port_starts.size() == first || t.port_results.back() != result) {
        t.port_starts.push_back(at);
        t.port_results.push_back(result);
      }
      if (i == events.size()) break;
      at = events[i].at;
    }
    if (t.port_starts.size() > budget) return false;
  }
  t.port_offsets.push_back(static_cast<uint32_t>(t.port_starts.size()));
  return true;
}

Matcher::Matcher(RuleSet rules) : Matcher(std::move(rules), MatcherLimits{}) {}

Matcher::Matcher(RuleSet rules, const MatcherLimits& limits) {
  auto t = std::make_unique<Tables>();
  t->rules = std::move(rules);
  const std::vector<Rule>& all = t->rules.rules;
  const size_t n = all.size();
  t->words = std::max<size_t>(1, (n + 63) / 64);

  // Bit order: deny rules, then allow rules, each in rule-set order.
  std::vector<uint32_t> order;
  order.reserve(n);
  for (uint32_t i = 0; i < n; ++i) {
    if (all[i].action == Action::kDeny) order.push_back(i);
  }
  for (uint32_t i = 0; i < n; ++i) {
    if (all[i].action != Action::kDeny) order.push_back(i);
  }
  std::vector<Span3<uint32_t>> src4, dst4, ports;
  std::vector<Span3<U128>> src6, dst6;
  std::vector<std::vector<Span3<uint32_t>>> rule_ports(n);  // By bit.
  t->verdicts.reserve(n);
  for (uint32_t bit = 0; bit < n; ++bit) {
    const Rule& r = all[order[bit]];
    t->verdicts.push_back({r.action, r.policy});
    AddPrefixes(r.sources, bit, src4, src6);
    AddPrefixes(r.destinations, bit, dst4, dst6);
    AddPorts(r, bit, rule_ports[bit]);
    ports.insert(ports.end(), rule_ports[bit].begin(), rule_ports[bit].end());
  }

  ClassSet source_classes(t->words), destination_classes(t->words), port_classes(t->words);
  t->source_v4 = Sweep(src4, n, source_classes);
  t->source_v6 = Sweep(src6, n, source_classes);
  t->destination_v4 = Sweep(dst4, n, destination_classes);
  t->destination_v6 = Sweep(dst6, n, destination_classes);
  t->port = Sweep(ports, n, port_classes);
  t->source_classes = source_classes.size();
  t->destination_classes = destination_classes.size();
  t->port_classes = port_classes.size();

  const size_t pair_cells = t->source_classes * t->destination_classes;
  // Build work is bounded too: the pair phase ANDs `words` per cell, and the port lists sort
  // their events (bounded by a quarter of the budget in BuildPortLists).
  if (pair_cells <= limits.max_table_cells && pair_cells * t->words <= limits.max_table_cells * 8) {
    ClassSet pairs(t->words);
    t->pair_table.resize(pair_cells);
    std::vector<uint64_t> bits(t->words);
    for (uint32_t s = 0; s < t->source_classes; ++s) {
      const uint64_t* sb = source_classes.bits(s);
      for (uint32_t d = 0; d < t->destination_classes; ++d) {
        const uint64_t* db = destination_classes.bits(d);
        for (size_t w = 0; w < t->words; ++w) bits[w] = sb[w] & db[w];
        t->pair_table[s * t->destination_classes + d] = pairs.Intern(bits);
      }
    }
    t->pair_classes = pairs.size();
    t->cross_product = t->BuildPortLists(pairs, rule_ports, limits.max_table_cells);
    if (!t->cross_product) {
      t->pair_table = {};
      t->port_offsets = {};
      t->port_starts = {};
      t->port_results = {};
    }
  }
  if (!t->cross_product) {
    t->source_bits = source_classes.TakeBits();
    t->destination_bits = destination_classes.TakeBits();
    t->port_bits = port_classes.TakeBits();
  }

  for (const Prefix& p : t->rules.egress) {
    if (p.address().is_v4()) {
      t->egress_v4.ranges.push_back(RangeOf<uint32_t>(V4Key(p.address()), p.length(), 32));
    } else {
      t->egress_v6.ranges.push_back(RangeOf<U128>(V6Key(p.address()), p.length(), 128));
    }
  }
  t->egress_v4.Build();
  t->egress_v6.Build();
  tables_ = std::move(t);
}

Matcher::~Matcher() = default;

Verdict Matcher::Decide(const FlowKey& flow) const {
  const Tables& t = *tables_;
  if (flow.source.family() != flow.destination.family()) return {t.rules.default_action};
  uint32_t s, d;
  if (flow.source.is_v4()) {
    s = t.source_v4.Lookup(V4Key(flow.source));
    d = t.destination_v4.Lookup(V4Key(flow.destination));
  } else {
    s = t.source_v6.Lookup(V6Key(flow.source));
    d = t.destination_v6.Lookup(V6Key(flow.destination));
  }
  int64_t bit;
  if (t.cross_product) {
    const uint32_t pair = t.pair_table[s * t.destination_classes + d];
    const uint32_t first = t.port_offsets[pair];
    const size_t at = first + UpperBound(t.port_starts.data() + first,
                                         t.port_offsets[pair + 1] - first, PortKey(flow));
    bit = static_cast<int64_t>(t.port_results[at - 1]) - 1;
  } else {
    const uint32_t p = t.port.Lookup(PortKey(flow));
    bit = FirstCommon(t.source_bits.data() + s * t.words, t.destination_bits.data() + d * t.words,
                      t.port_bits.data() + p * t.words, t.words);
  }
  if (bit < 0) return {t.rules.default_action};
  return t.verdicts[static_cast<size_t>(bit)];
}

const RuleSet& Matcher::rules() const { return tables_->rules; }

bool Matcher::IsEgress(const IpAddress& destination) const {
  if (destination.is_v4()) return tables_->egress_v4.Contains(V4Key(destination));
  return tables_->egress_v6.Contains(V6Key(destination));
}

bool Matcher::uses_cross_product() const { return tables_->cross_product; }

size_t Matcher::table_bytes() const {
  const Tables& t = *tables_;
  auto dim = [](const auto& d) {
    return (d.starts.size() + d.index.size()) * sizeof(d.starts[0]) +
           d.ids.size() * sizeof(uint32_t);
  };
  return dim(t.source_v4) + dim(t.source_v6) + dim(t.destination_v4) + dim(t.destination_v6) +
         dim(t.port) +
         (t.pair_table.size() + t.port_offsets.size() + t.port_starts.size() +
          t.port_results.size()) *
             4 +
         (t.source_bits.size() + t.destination_bits.size() + t.port_bits.size()) * 8 +
         t.verdicts.size() * sizeof(Verdict);
}

}  // namespace tunnelmesh::filter
