#include "lib/filter/conntrack.h"

#include <algorithm>
#include <cstring>
#include <tuple>

namespace tunnelmesh::filter {
namespace {

int64_t Nanos(MonoTime t) {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(t.time_since_epoch()).count();
}

std::array<uint8_t, 16> BytesOf(const IpAddress& a) {
  std::array<uint8_t, 16> out{};
  std::memcpy(out.data(), a.bytes(), static_cast<size_t>(a.byte_length()));
  return out;
}

}  // namespace

ConnKey KeyOf(const Tuple& t, bool* forward) {
  ConnKey key;
  const auto source = BytesOf(t.source);
  const auto destination = BytesOf(t.destination);
  *forward = std::tie(source, t.source_port) <= std::tie(destination, t.destination_port);
  if (*forward) {
    key.low = source;
    key.low_port = t.source_port;
    key.high = destination;
    key.high_port = t.destination_port;
  } else {
    key.low = destination;
    key.low_port = t.destination_port;
    key.high = source;
    key.high_port = t.source_port;
  }
  key.ip_protocol = t.ip_protocol;
  key.v6 = t.source.is_v6();
  return key;
}

Tuple TupleOf(const ConnKey& key, bool forward) {
  auto address = [&](const std::array<uint8_t, 16>& b) {
    return key.v6 ? IpAddress::V6(b.data()) : IpAddress::V4(b.data());
  };
  Tuple t;
  t.ip_protocol = key.ip_protocol;
  if (forward) {
    t.source = address(key.low);
    t.source_port = key.low_port;
    t.destination = address(key.high);
    t.destination_port = key.high_port;
  } else {
    t.source = address(key.high);
    t.source_port = key.high_port;
    t.destination = address(key.low);
    t.destination_port = key.low_port;
  }
  return t;
}

ConnTable::ConnTable(size_t max_flows) : max_flows_(max_flows) {}

ConnTable::Shard& ConnTable::ShardFor(const ConnKey& key) {
  return shards_[absl::Hash<ConnKey>{}(key) % kShards];
}

Conn* ConnTable::Find(Shard& shard, const ConnKey& key, MonoTime now) {
  const auto it = shard.map.find(key);
  if (it == shard.map.end()) return nullptr;
  if (it->second.expires <= now) {
    shard.map.erase(it);
    size_.fetch_sub(1, std::memory_order_relaxed);
    removals_.fetch_add(1, std::memory_order_release);
    return nullptr;
  }
  return &it->second;
}

void ConnTable::Erase(Shard& shard, const ConnKey& key) {
  if (shard.map.erase(key) != 0) {
    size_.fetch_sub(1, std::memory_order_relaxed);
    removals_.fetch_add(1, std::memory_order_release);
  }
}

ConnTable::InsertResult ConnTable::Insert(const ConnKey& key, const Conn& conn, MonoTime now) {
  Shard& shard = ShardFor(key);
  for (int attempt = 0; attempt < 2; ++attempt) {
    {
      absl::MutexLock lock(&shard.mu);
      if (Find(shard, key, now) != nullptr) return InsertResult::kExists;
      if (size_.fetch_add(1, std::memory_order_relaxed) < max_flows_) {
        shard.map.emplace(key, conn);
        // Lower the sweep hint to this entry's expiry if it is earlier.
        const int64_t expires = Nanos(conn.expires);
        int64_t hint = no_expiry_before_.load(std::memory_order_relaxed);
        while (expires < hint &&
               !no_expiry_before_.compare_exchange_weak(hint, expires, std::memory_order_relaxed)) {
        }
        return InsertResult::kInserted;
      }
      size_.fetch_sub(1, std::memory_order_relaxed);
    }
    if (Nanos(now) < no_expiry_before_.load(std::memory_order_relaxed)) break;
    Reclaim(now);
  }
  return InsertResult::kFull;
}

size_t ConnTable::Reclaim(MonoTime now) {
  size_t erased = 0;
  int64_t earliest = INT64_MAX;
  for (Shard& shard : shards_) {
    absl::MutexLock lock(&shard.mu);
    for (auto it = shard.map.begin(); it != shard.map.end();) {
      if (it->second.expires <= now) {
        shard.map.erase(it++);
        ++erased;
      } else {
        earliest = std::min(earliest, Nanos(it->second.expires));
        ++it;
      }
    }
  }
  size_.fetch_sub(erased, std::memory_order_relaxed);
  if (erased != 0) removals_.fetch_add(1, std::memory_order_release);
  // An insert racing with this sweep may have lowered the hint; losing that only delays the next
  // sweep until `earliest`, which is still a bound.
  no_expiry_before_.store(earliest, std::memory_order_relaxed);
  return erased;
}

void ConnTable::Clear() {
  for (Shard& shard : shards_) {
    absl::MutexLock lock(&shard.mu);
    size_.fetch_sub(shard.map.size(), std::memory_order_relaxed);
    shard.map.clear();
    removals_.fetch_add(1, std::memory_order_release);
  }
}

}  // namespace tunnelmesh::filter
