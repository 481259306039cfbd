// The filter's connection table: flows keyed by their 5-tuple in a canonical orientation (so a
// packet and its reply find the same entry with one lookup), each remembering who started it,
// its protocol state and when it expires. Bounded by Options::max_flows: when full, expired
// entries are reclaimed first, else the new flow is refused (the caller counts kTableFull).
//
// Threads: sharded; each shard is one absl::Mutex over one hash map, so the inbound and the
// outbound data-plane threads rarely meet. A caller holds at most one shard lock at a time (the
// reclaim sweep takes them one after another), so there is no lock order to get wrong. Entries are
// read and changed by the caller under the shard's lock (Find returns a pointer valid until it is
// released). No clock is read: every call takes `now`.
#pragma once

#include <array>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/synchronization/mutex.h"
#include "lib/base/clock.h"
#include "lib/filter/filter.h"
#include "lib/filter/l4.h"

namespace tunnelmesh::filter {

enum class Origin : uint8_t {
  kInbound,   // Admitted by the rules when its first packet came from the mesh.
  kOutbound,  // Started by this member.
};

// RFC 9293's states folded to what a filter needs: a handshake seen from one side, both sides
// seen, and closing (FIN or RST seen: the short timeout applies).
enum class TcpState : uint8_t { kSynSent, kEstablished, kClosing };

// A tuple in canonical orientation: the (address, port) side that orders first is `low`.
struct ConnKey {
  std::array<uint8_t, 16> low{};
  std::array<uint8_t, 16> high{};
  uint16_t low_port = 0;
  uint16_t high_port = 0;
  uint8_t ip_protocol = 0;
  bool v6 = false;

  friend bool operator==(const ConnKey&, const ConnKey&) = default;
  template <typename H>
  friend H AbslHashValue(H h, const ConnKey& k) {
    return H::combine(std::move(h), k.low, k.high, k.low_port, k.high_port, k.ip_protocol, k.v6);
  }
};

// The key of `t`; `*forward` says whether t's source is the key's low side.
ConnKey KeyOf(const Tuple& t, bool* forward);
// The tuple of the packet that goes from the low side (forward) or the high side.
Tuple TupleOf(const ConnKey& key, bool forward);

// Not counted under any policy: flows this member started towards members that filter
// themselves.
inline constexpr uint32_t kUncounted = Verdict::kDefault - 1;

struct Conn {
  MonoTime expires;
  uint64_t generation = 0;       // Of the rule set that last decided (or saw) it.
  uint32_t policy = kUncounted;  // That rule set's deciding policy index, or Verdict::kDefault.
  Origin origin = Origin::kOutbound;
  bool originator_forward = true;  // The first packet went from the key's low side.
  bool reply_seen = false;
  // Denied by a rule set swapped in after it started (`policy` is then the denying one): every
  // packet of it is dropped, in both directions, and refreshes the entry, so that neither side
  // revives the flow as a new one while the other still sends.
  bool cut = false;
  Protocol protocol = Protocol::kAny;
  TcpState tcp = TcpState::kSynSent;
};

class ConnTable {
 public:
  static constexpr size_t kShards = 16;

  struct Shard {
    absl::Mutex mu;
    absl::flat_hash_map<ConnKey, Conn> map ABSL_GUARDED_BY(mu);
  };

  explicit ConnTable(size_t max_flows);

  Shard& ShardFor(const ConnKey& key);

  // The live entry of `key`, or null; an expired entry is erased. Valid while shard.mu is held.
  Conn* Find(Shard& shard, const ConnKey& key, MonoTime now)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(shard.mu);
  void Erase(Shard& shard, const ConnKey& key) ABSL_EXCLUSIVE_LOCKS_REQUIRED(shard.mu);

  enum class InsertResult { kInserted, kExists, kFull };
  // Adds `conn` unless a live entry exists (kExists: another thread started the same flow). When
  // full, sweeps expired entries (at most once until the earliest expiry it knows has passed, so a
  // flood of new flows into a full table of live ones does not sweep per packet) and retries.
  // Takes the shard locks itself: call it holding none.
  InsertResult Insert(const ConnKey& key, const Conn& conn, MonoTime now);

  // Erases every expired entry; returns how many. Call holding no shard lock.
  size_t Reclaim(MonoTime now);
  // Erases every entry. Call holding no shard lock.
  void Clear();
  size_t size() const { return size_.load(std::memory_order_relaxed); }
  // Moves on whenever an entry is erased (expired, reclaimed, cleared): a pointer-free summary of
  // "this entry is still there" for callers that remember a flow without holding its lock.
  uint64_t removals() const { return removals_.load(std::memory_order_acquire); }

 private:
  const size_t max_flows_;
  std::array<Shard, kShards> shards_;
  std::atomic<size_t> size_{0};
  std::atomic<uint64_t> removals_{0};
  // No entry expires before this (nanoseconds of MonoTime); lowered on insert, set by a sweep.
  std::atomic<int64_t> no_expiry_before_{INT64_MAX};
};

}  // namespace tunnelmesh::filter
