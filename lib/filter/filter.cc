// Filter: the rules (Matcher) and the connection table (ConnTable) put together per packet.
//
// Threads and ownership:
// - The rule set is an immutable `Rules` snapshot (matcher, generation, per-policy counters),
//   published by SetRules through lib/base/snapshot.h. Each direction (Inbound, Outbound) keeps
//   its own cached pointer under its own mutex, uncontended when one thread calls each direction
//   as the data plane does, and reloads it only when the generation counter moved, so the hit
//   path never touches the snapshot's lock or reference count.
// - Connection entries live in ConnTable's shards; a packet holds one shard lock while it reads
//   and updates its entry (the Matcher is consulted under it only when a rule-set swap made the
//   entry stale). Counters are relaxed atomics.
// - The stream fast path: each direction's cache also remembers the last flow it found in the
//   table in a steady state (TCP established without SYN, FIN or RST; UDP), so the next packets of
//   a bulk transfer pass without the shard lock, the hash lookup and a shared counter per packet.
//   It holds only while the generation and the table's removal count are unchanged and for at most
//   a refresh interval shorter than the entry's timeout (then one packet takes the full path and
//   renews the entry's expiry); its allowed packets are added to the policy counter when the cache
//   moves on or a reader asks (policy_counts).
// - SetRules and the readers of counters run on any thread; SetRules calls are serialized by
//   control_mu, which no data-plane call takes.
#include "lib/filter/filter.h"

#include <algorithm>
#include <atomic>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/synchronization/mutex.h"
#include "lib/base/snapshot.h"
#include "lib/filter/conntrack.h"
#include "lib/filter/l4.h"

namespace tunnelmesh::filter {
namespace {

struct PolicyCounter {
  std::atomic<uint64_t> allowed{0};
  std::atomic<uint64_t> denied{0};
};

// One installed rule set. Immutable once published.
struct Rules {
  std::shared_ptr<const Matcher> matcher;  // Null: filtering off.
  uint64_t generation = 0;
  // By RuleSet::policies index; the counter objects live as long as their name stays in the
  // rule sets installed one after another, so counts survive swaps.
  std::vector<std::shared_ptr<PolicyCounter>> by_index;
  std::shared_ptr<PolicyCounter> by_default;
  // Each name once, in the order of first appearance (for policy_counts()).
  std::vector<std::pair<std::string, std::shared_ptr<PolicyCounter>>> named;

  PolicyCounter& CounterOf(uint32_t policy) const {
    return policy < by_index.size() ? *by_index[policy] : *by_default;
  }
};

enum class Direction { kInbound, kOutbound };

Duration TimeoutOf(const Options& o, const Conn& c) {
  switch (c.protocol) {
    case Protocol::kTcp:
      return c.tcp == TcpState::kEstablished ? o.tcp_established_timeout : o.tcp_transitory_timeout;
    case Protocol::kIcmp:
      return o.icmp_timeout;
    case Protocol::kUdp:
    case Protocol::kAny:
      break;
  }
  return c.reply_seen ? o.udp_stream_timeout : o.udp_timeout;
}

// How long the stream fast path trusts an entry before one packet renews it the full way.
constexpr Duration kStreamRefresh = std::chrono::seconds(1);

// A packet that changes no connection state once its flow is established: TCP without SYN, FIN
// or RST, and UDP.
bool Steady(const Transport& t) {
  if (t.later_fragment) return false;
  if (t.protocol == Protocol::kUdp) return true;
  return t.protocol == Protocol::kTcp && (t.tcp_flags & (kTcpSyn | kTcpFin | kTcpRst)) == 0;
}

Protocol ProtocolOfKey(const ConnKey& key) {
  if (key.ip_protocol == kIpProtoTcp) return Protocol::kTcp;
  if (key.ip_protocol == kIpProtoUdp) return Protocol::kUdp;
  if (key.ip_protocol == (key.v6 ? kIpProtoIcmpv6 : kIpProtoIcmp)) return Protocol::kIcmp;
  return Protocol::kAny;
}

}  // namespace

struct Filter::State {
  explicit State(const Options& o) : options(o), table(o.max_flows) {
    auto off = std::make_shared<Rules>();
    off->by_default = default_counter;
    rules = std::make_unique<Snapshot<Rules>>(std::move(off));
  }

  // The last steady flow of one direction (see the file comment).
  struct Stream {
    bool valid = false;
    Tuple tuple;
    uint64_t generation = 0;
    uint64_t removals = 0;
    MonoTime refresh_by;
    uint32_t policy = kUncounted;
    uint64_t pending = 0;  // Allowed packets not yet added to the policy's counter.
  };

  struct Cache {
    absl::Mutex mu;
    std::shared_ptr<const Rules> rules ABSL_GUARDED_BY(mu);
    Stream stream ABSL_GUARDED_BY(mu);
  };

  const Options options;
  const std::shared_ptr<PolicyCounter> default_counter = std::make_shared<PolicyCounter>();
  std::unique_ptr<Snapshot<Rules>> rules;
  std::atomic<uint64_t> generation{0};
  Cache inbound_cache;
  Cache outbound_cache;
  ConnTable table;
  DropCounters drops;

  absl::Mutex control_mu;
  uint64_t last_generation ABSL_GUARDED_BY(control_mu) = 0;
  absl::flat_hash_map<std::string, std::shared_ptr<PolicyCounter>> counters
      ABSL_GUARDED_BY(control_mu);

  bool Process(Cache& cache, Direction direction, absl::Span<const uint8_t> packet, MonoTime now);
  // Adds the stream's pending count to its counter (under the rules it was counted with) and
  // forgets the stream.
  static void Flush(Cache& cache) ABSL_EXCLUSIVE_LOCKS_REQUIRED(cache.mu);
  void Remember(Cache& cache, const Transport& t, const Rules& r, const Conn& conn, MonoTime now)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(cache.mu);
  bool Decide(const Rules& r, Direction direction, const Transport& t, bool egress, MonoTime now);
  bool IcmpError(const Rules& r, Direction direction, const Transport& t, bool egress,
                 MonoTime now);
  void Revalidate(const Rules& r, const ConnKey& key, Conn& conn);
  void Denied(const Rules& r, const Verdict& v);
  static void Allowed(const Rules& r, uint32_t policy);
  void Update(Conn& conn, const Transport& t, bool reply, MonoTime now) const;
};

void Filter::State::Denied(const Rules& r, const Verdict& v) {
  drops.Add(v.policy == Verdict::kDefault ? Drop::kDefaultDenied : Drop::kPolicyDenied);
  r.CounterOf(v.policy).denied.fetch_add(1, std::memory_order_relaxed);
}

void Filter::State::Allowed(const Rules& r, uint32_t policy) {
  if (policy == kUncounted) return;
  r.CounterOf(policy).allowed.fetch_add(1, std::memory_order_relaxed);
}

// A rule set other than the one that last saw `conn` is in force: decide its first packet again.
// Inbound-admitted flows, and flows this member started towards an egress destination, go on only
// if the new rules allow them (else they are cut); other flows this member started always do.
void Filter::State::Revalidate(const Rules& r, const ConnKey& key, Conn& conn) {
  const Tuple first = TupleOf(key, conn.originator_forward);
  const Matcher& m = *r.matcher;
  conn.generation = r.generation;
  conn.policy = kUncounted;
  conn.cut = false;
  if (conn.origin == Origin::kInbound || m.IsEgress(first.destination)) {
    FlowKey flow;
    flow.source = first.source;
    flow.destination = first.destination;
    flow.protocol = ProtocolOfKey(key);
    if (flow.protocol == Protocol::kTcp || flow.protocol == Protocol::kUdp) {
      flow.destination_port = first.destination_port;
    }
    const Verdict v = m.Decide(flow);
    conn.policy = v.policy;
    conn.cut = v.action == Action::kDeny;
  }
}

void Filter::State::Update(Conn& conn, const Transport& t, bool reply, MonoTime now) const {
  if (reply) conn.reply_seen = true;
  if (conn.protocol == Protocol::kTcp) {
    if (conn.cut || (t.tcp_flags & (kTcpFin | kTcpRst)) != 0) {
      conn.tcp = TcpState::kClosing;
    } else if (conn.tcp == TcpState::kSynSent && reply) {
      conn.tcp = TcpState::kEstablished;
    }
  }
  conn.expires = now + TimeoutOf(options, conn);
}

bool Filter::State::Process(Cache& cache, Direction direction, absl::Span<const uint8_t> packet,
                            MonoTime now) {
  absl::MutexLock cache_lock(&cache.mu);
  if (cache.rules == nullptr ||
      cache.rules->generation != generation.load(std::memory_order_acquire)) {
    Flush(cache);
    cache.rules = rules->Load();
  }
  const Rules& r = *cache.rules;
  if (r.matcher == nullptr) return true;
  const Matcher& m = *r.matcher;

  Transport t;
  const bool parsed = ParseTransport(packet, &t);
  if (Stream& st = cache.stream; parsed && st.valid && t.tuple == st.tuple && Steady(t) &&
                                 now < st.refresh_by && st.generation == r.generation &&
                                 st.removals == table.removals()) {
    ++st.pending;
    return true;
  }
  if (!parsed) {
    // What this member sends is checked only towards egress destinations.
    if (direction == Direction::kOutbound) {
      const auto destination = DestinationOf(packet);
      if (!destination.has_value() || !m.IsEgress(*destination)) return true;
    }
    drops.Add(Drop::kMalformed);
    return false;
  }
  if (t.later_fragment) return true;  // See l4.h.
  const bool egress = direction == Direction::kOutbound && m.IsEgress(t.tuple.destination);
  if (t.icmp == IcmpKind::kError) return IcmpError(r, direction, t, egress, now);

  bool forward = true;
  const ConnKey key = KeyOf(t.tuple, &forward);
  {
    ConnTable::Shard& shard = table.ShardFor(key);
    absl::MutexLock lock(&shard.mu);
    if (Conn* conn = table.Find(shard, key, now); conn != nullptr) {
      if (conn->generation != r.generation) Revalidate(r, key, *conn);
      Update(*conn, t, forward != conn->originator_forward, now);
      if (conn->cut) {
        Denied(r, {Action::kDeny, conn->policy});
        return false;
      }
      Allowed(r, conn->policy);
      Remember(cache, t, r, *conn, now);
      return true;
    }
  }
  return Decide(r, direction, t, egress, now);
}

void Filter::State::Flush(Cache& cache) {
  Stream& st = cache.stream;
  if (st.pending != 0 && cache.rules != nullptr) {
    const Rules& r = *cache.rules;
    if (st.policy != kUncounted) {
      r.CounterOf(st.policy).allowed.fetch_add(st.pending, std::memory_order_relaxed);
    }
  }
  st = Stream{};
}

void Filter::State::Remember(Cache& cache, const Transport& t, const Rules& r, const Conn& conn,
                             MonoTime now) {
  Flush(cache);
  if (!Steady(t) || (conn.protocol == Protocol::kTcp && conn.tcp != TcpState::kEstablished)) {
    return;
  }
  Stream& st = cache.stream;
  st.valid = true;
  st.tuple = t.tuple;
  st.generation = r.generation;
  // Read under the entry's shard lock: a later erase of it moves the count on.
  st.removals = table.removals();
  st.refresh_by = now + std::min<Duration>(kStreamRefresh, TimeoutOf(options, conn) / 2);
  st.policy = conn.policy;
}

// The first packet of a flow the table does not know.
bool Filter::State::Decide(const Rules& r, Direction direction, const Transport& t, bool egress,
                           MonoTime now) {
  uint32_t policy = kUncounted;
  if (direction == Direction::kInbound || egress) {
    const Verdict v = r.matcher->Decide(FlowKeyOf(t));
    if (v.action == Action::kDeny) {
      Denied(r, v);
      return false;
    }
    policy = v.policy;
  }
  // Packets that start nothing a reply could belong to pass untracked.
  const bool untracked = (t.protocol == Protocol::kTcp && (t.tcp_flags & kTcpRst) != 0) ||
                         (t.protocol == Protocol::kIcmp && t.icmp != IcmpKind::kEchoRequest);
  if (!untracked) {
    Conn conn;
    conn.generation = r.generation;
    conn.policy = policy;
    conn.origin = direction == Direction::kInbound ? Origin::kInbound : Origin::kOutbound;
    conn.protocol = t.protocol;
    // A TCP flow picked up without its SYN (after a restart, or a SYN-ACK) counts as established.
    const bool syn = (t.tcp_flags & (kTcpSyn | kTcpAck)) == kTcpSyn;
    conn.tcp = syn ? TcpState::kSynSent : TcpState::kEstablished;
    conn.expires = now + TimeoutOf(options, conn);
    bool forward = true;
    const ConnKey key = KeyOf(t.tuple, &forward);
    conn.originator_forward = forward;
    if (table.Insert(key, conn, now) == ConnTable::InsertResult::kFull) {
      drops.Add(Drop::kTableFull);
      return false;
    }
  }
  Allowed(r, policy);
  return true;
}

// An ICMP error passes when it quotes a tracked flow and goes back to the sender of the quoted
// packet; otherwise the rules decide it like any ICMP packet (and it is never tracked).
bool Filter::State::IcmpError(const Rules& r, Direction direction, const Transport& t, bool egress,
                              MonoTime now) {
  if (direction == Direction::kOutbound && !egress) return true;
  if (t.quoted.source == t.tuple.destination) {
    bool forward = true;
    const ConnKey key = KeyOf(t.quoted, &forward);
    ConnTable::Shard& shard = table.ShardFor(key);
    absl::MutexLock lock(&shard.mu);
    if (Conn* conn = table.Find(shard, key, now); conn != nullptr) {
      if (conn->generation != r.generation) Revalidate(r, key, *conn);
      if (conn->cut) {
        Denied(r, {Action::kDeny, conn->policy});
        return false;
      }
      Allowed(r, conn->policy);
      return true;
    }
  }
  const Verdict v = r.matcher->Decide(FlowKeyOf(t));
  if (v.action == Action::kDeny) {
    Denied(r, v);
    return false;
  }
  Allowed(r, v.policy);
  return true;
}

Filter::Filter(const Options& options) : state_(std::make_unique<State>(options)) {}

Filter::~Filter() = default;

void Filter::SetRules(std::shared_ptr<const Matcher> rules) {
  State& s = *state_;
  absl::MutexLock lock(&s.control_mu);
  auto next = std::make_shared<Rules>();
  next->generation = ++s.last_generation;
  next->by_default = s.default_counter;
  next->matcher = std::move(rules);
  absl::flat_hash_map<std::string, std::shared_ptr<PolicyCounter>> counters;
  if (next->matcher != nullptr) {
    for (const std::string& name : next->matcher->rules().policies) {
      auto [it, inserted] = counters.try_emplace(name);
      if (inserted) {
        const auto old = s.counters.find(name);
        it->second = old != s.counters.end() ? old->second : std::make_shared<PolicyCounter>();
        next->named.emplace_back(name, it->second);
      }
      next->by_index.push_back(it->second);
    }
  }
  s.counters = std::move(counters);
  const bool off = next->matcher == nullptr;
  const uint64_t generation = next->generation;
  s.rules->Store(std::move(next));
  s.generation.store(generation, std::memory_order_release);
  if (off) s.table.Clear();
}

bool Filter::enabled() const { return state_->rules->Load()->matcher != nullptr; }

bool Filter::Inbound(absl::Span<const uint8_t> packet, MonoTime now) {
  return state_->Process(state_->inbound_cache, Direction::kInbound, packet, now);
}

bool Filter::Outbound(absl::Span<const uint8_t> packet, MonoTime now) {
  return state_->Process(state_->outbound_cache, Direction::kOutbound, packet, now);
}

Explanation Filter::Explain(const FlowKey& flow) const {
  const std::shared_ptr<const Rules> r = state_->rules->Load();
  Explanation e;
  if (r->matcher == nullptr) {
    e.verdict.action = Action::kAllow;
    return e;
  }
  e.verdict = r->matcher->Decide(flow);
  const auto& policies = r->matcher->rules().policies;
  if (e.verdict.policy < policies.size()) e.policy = policies[e.verdict.policy];
  return e;
}

void Filter::ExpireFlows(MonoTime now) { state_->table.Reclaim(now); }

const DropCounters& Filter::drops() const { return state_->drops; }

std::vector<PolicyCount> Filter::policy_counts() const {
  for (State::Cache* cache : {&state_->inbound_cache, &state_->outbound_cache}) {
    absl::MutexLock lock(&cache->mu);
    State::Flush(*cache);
  }
  const std::shared_ptr<const Rules> r = state_->rules->Load();
  std::vector<PolicyCount> out;
  if (r->matcher == nullptr) return out;
  for (const auto& [name, counter] : r->named) {
    out.push_back({name, counter->allowed.load(std::memory_order_relaxed),
                   counter->denied.load(std::memory_order_relaxed)});
  }
  out.push_back({"", r->by_default->allowed.load(std::memory_order_relaxed),
                 r->by_default->denied.load(std::memory_order_relaxed)});
  return out;
}

size_t Filter::tracked_flows() const { return state_->table.size(); }

}  // namespace tunnelmesh::filter
