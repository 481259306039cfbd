#include "lib/routing/allowed_ips.h"

#include <atomic>
#include <cstdlib>
#include <cstring>
#include <iterator>
#include <map>
#include <memory>
#include <new>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

// Counts heap allocations made while `g_count_allocations` is set, to prove Lookup allocates
// nothing.
namespace {
std::atomic<bool> g_count_allocations{false};
std::atomic<long> g_allocations{0};
}  // namespace

// GCC flags the malloc/free pairing below as mismatched because it cannot see that these operators
// replace the global ones; they are consistent by construction.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmismatched-new-delete"
#endif
void* operator new(size_t size) {
  if (g_count_allocations.load(std::memory_order_relaxed)) g_allocations.fetch_add(1);
  if (void* p = std::malloc(size == 0 ? 1 : size)) return p;
  std::abort();
}
void* operator new[](size_t size) { return operator new(size); }
void operator delete(void* p) noexcept { std::free(p); }
void operator delete[](void* p) noexcept { std::free(p); }
void operator delete(void* p, size_t) noexcept { std::free(p); }
void operator delete[](void* p, size_t) noexcept { std::free(p); }
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif

namespace tunnelmesh {
namespace {

using ::testing::ElementsAre;
using ::testing::IsEmpty;

IpAddress Ip(std::string_view text) {
  auto ip = IpAddress::Parse(text);
  EXPECT_TRUE(ip.ok()) << ip.status();
  return ip.ok() ? *ip : IpAddress();
}

Prefix Pfx(std::string_view text) {
  auto prefix = Prefix::Parse(text);
  EXPECT_TRUE(prefix.ok()) << prefix.status();
  return prefix.ok() ? *prefix : Prefix();
}

// The owner of the longest match, or -1 for none: easier to compare than pointers.
int Owner(const AllowedIps<uint32_t>& table, std::string_view address) {
  const uint32_t* value = table.Lookup(Ip(address));
  return value == nullptr ? -1 : static_cast<int>(*value);
}

TEST(AllowedIpsTest, EmptyTableMatchesNothing) {
  AllowedIps<uint32_t> table;
  EXPECT_TRUE(table.empty());
  EXPECT_EQ(table.size(), 0u);
  EXPECT_EQ(Owner(table, "10.0.0.1"), -1);
  EXPECT_EQ(Owner(table, "::1"), -1);
  EXPECT_THAT(table.PrefixesOf(1), IsEmpty());
}

TEST(AllowedIpsTest, LongestMatchV4) {
  AllowedIps<uint32_t> table;
  table.Insert(Pfx("10.0.0.0/8"), 1);
  table.Insert(Pfx("10.1.0.0/16"), 2);
  table.Insert(Pfx("10.1.2.0/24"), 3);
  table.Insert(Pfx("10.1.2.3/32"), 4);
  table.Insert(Pfx("192.168.0.0/23"), 5);
  EXPECT_EQ(table.size(), 5u);
  EXPECT_EQ(Owner(table, "10.200.0.1"), 1);
  EXPECT_EQ(Owner(table, "10.1.200.1"), 2);
  EXPECT_EQ(Owner(table, "10.1.2.200"), 3);
  EXPECT_EQ(Owner(table, "10.1.2.3"), 4);
  EXPECT_EQ(Owner(table, "10.1.2.4"), 3);
  EXPECT_EQ(Owner(table, "192.168.1.255"), 5);
  EXPECT_EQ(Owner(table, "192.168.2.0"), -1);
  EXPECT_EQ(Owner(table, "11.0.0.0"), -1);
}

TEST(AllowedIpsTest, InsertionOrderDoesNotMatter) {
  AllowedIps<uint32_t> table;
  table.Insert(Pfx("10.1.2.3/32"), 4);
  table.Insert(Pfx("10.1.2.0/24"), 3);
  table.Insert(Pfx("10.0.0.0/8"), 1);
  table.Insert(Pfx("10.1.0.0/16"), 2);
  EXPECT_EQ(Owner(table, "10.200.0.1"), 1);
  EXPECT_EQ(Owner(table, "10.1.200.1"), 2);
  EXPECT_EQ(Owner(table, "10.1.2.200"), 3);
  EXPECT_EQ(Owner(table, "10.1.2.3"), 4);
}

TEST(AllowedIpsTest, LongestMatchV6) {
  AllowedIps<uint32_t> table;
  table.Insert(Pfx("fd00::/8"), 1);
  table.Insert(Pfx("fd00:1::/32"), 2);
  table.Insert(Pfx("fd00:1:2:3::/64"), 3);
  table.Insert(Pfx("fd00:1:2:3::99/128"), 4);
  table.Insert(Pfx("2001:db8::/127"), 5);
  EXPECT_EQ(Owner(table, "fdff::1"), 1);
  EXPECT_EQ(Owner(table, "fd00:1:ffff::1"), 2);
  EXPECT_EQ(Owner(table, "fd00:1:2:3:ffff::1"), 3);
  EXPECT_EQ(Owner(table, "fd00:1:2:3::99"), 4);
  EXPECT_EQ(Owner(table, "fd00:1:2:3::98"), 3);
  EXPECT_EQ(Owner(table, "2001:db8::1"), 5);
  EXPECT_EQ(Owner(table, "2001:db8::2"), -1);
  EXPECT_EQ(Owner(table, "fe80::1"), -1);
}

TEST(AllowedIpsTest, DefaultRoutesPerFamily) {
  AllowedIps<uint32_t> table;
  table.Insert(Pfx("0.0.0.0/0"), 1);
  EXPECT_EQ(Owner(table, "1.2.3.4"), 1);
  EXPECT_EQ(Owner(table, "255.255.255.255"), 1);
  EXPECT_EQ(Owner(table, "::1"), -1) << "an IPv4 default route must not catch IPv6";
  table.Insert(Pfx("::/0"), 2);
  EXPECT_EQ(Owner(table, "::1"), 2);
  EXPECT_EQ(Owner(table, "ffff::1"), 2);
  EXPECT_EQ(Owner(table, "::ffff:1.2.3.4"), 2);
  table.Insert(Pfx("1.2.3.0/24"), 3);
  EXPECT_EQ(Owner(table, "1.2.3.4"), 3);
  EXPECT_EQ(Owner(table, "1.2.4.4"), 1);
  EXPECT_EQ(table.size(), 3u);
}

TEST(AllowedIpsTest, HostRoutes) {
  AllowedIps<uint32_t> table;
  table.Insert(Pfx("10.0.0.1/32"), 1);
  table.Insert(Pfx("10.0.0.2/32"), 2);
  table.Insert(Pfx("fd00::1/128"), 3);
  table.Insert(Pfx("fd00::2/128"), 4);
  EXPECT_EQ(Owner(table, "10.0.0.1"), 1);
  EXPECT_EQ(Owner(table, "10.0.0.2"), 2);
  EXPECT_EQ(Owner(table, "10.0.0.3"), -1);
  EXPECT_EQ(Owner(table, "10.0.0.0"), -1);
  EXPECT_EQ(Owner(table, "fd00::1"), 3);
  EXPECT_EQ(Owner(table, "fd00::2"), 4);
  EXPECT_EQ(Owner(table, "fd00::3"), -1);
  // The v4 host 10.0.0.1 and the v6 ::a00:1 share bits but not a family.
  EXPECT_EQ(Owner(table, "::a00:1"), -1);
  EXPECT_EQ(Owner(table, "a00:1::"), -1);
}

TEST(AllowedIpsTest, ReinsertReplacesOwner) {
  AllowedIps<uint32_t> table;
  table.Insert(Pfx("10.0.0.0/24"), 1);
  table.Insert(Pfx("10.0.1.0/24"), 1);
  table.Insert(Pfx("10.0.0.0/24"), 2);
  EXPECT_EQ(table.size(), 2u);
  EXPECT_EQ(Owner(table, "10.0.0.9"), 2);
  EXPECT_THAT(table.PrefixesOf(1), ElementsAre(Pfx("10.0.1.0/24")));
  EXPECT_THAT(table.PrefixesOf(2), ElementsAre(Pfx("10.0.0.0/24")));
  // Host bits in the inserted prefix do not make it a different prefix.
  table.Insert(Prefix(Ip("10.0.0.77"), 24), 3);
  EXPECT_EQ(table.size(), 2u);
  EXPECT_EQ(Owner(table, "10.0.0.9"), 3);
}

TEST(AllowedIpsTest, BranchPointCanBecomeEntry) {
  AllowedIps<uint32_t> table;
  table.Insert(Pfx("10.0.0.0/24"), 1);
  table.Insert(Pfx("10.0.1.0/24"), 2);  // Creates an unowned branch at 10.0.0.0/23.
  EXPECT_EQ(Owner(table, "10.0.0.1"), 1);
  EXPECT_EQ(table.size(), 2u);
  table.Insert(Pfx("10.0.0.0/23"), 3);
  EXPECT_EQ(table.size(), 3u);
  EXPECT_EQ(Owner(table, "10.0.1.1"), 2);
  EXPECT_TRUE(table.RemoveByValue(2) == 1);
  EXPECT_EQ(Owner(table, "10.0.1.1"), 3);
  EXPECT_EQ(Owner(table, "10.0.0.1"), 1);
}

TEST(AllowedIpsTest, RemoveByValueRemovesAllOfAPeer) {
  AllowedIps<uint32_t> table;
  table.Insert(Pfx("10.0.0.0/8"), 1);
  table.Insert(Pfx("10.1.0.0/16"), 2);
  table.Insert(Pfx("10.1.1.0/24"), 1);
  table.Insert(Pfx("fd00::/64"), 2);
  table.Insert(Pfx("fd00::5/128"), 1);
  EXPECT_EQ(table.RemoveByValue(1), 3u);
  EXPECT_EQ(table.size(), 2u);
  EXPECT_EQ(Owner(table, "10.1.1.1"), 2) << "falls back to the next longest prefix";
  EXPECT_EQ(Owner(table, "10.2.0.0"), -1);
  EXPECT_EQ(Owner(table, "fd00::5"), 2);
  EXPECT_THAT(table.PrefixesOf(1), IsEmpty());
  EXPECT_EQ(table.RemoveByValue(1), 0u);
  EXPECT_EQ(table.RemoveByValue(2), 2u);
  EXPECT_TRUE(table.empty());
  EXPECT_EQ(Owner(table, "10.1.1.1"), -1);
  EXPECT_EQ(Owner(table, "fd00::5"), -1);
  // The table is usable again after being emptied.
  table.Insert(Pfx("10.1.0.0/16"), 7);
  EXPECT_EQ(Owner(table, "10.1.1.1"), 7);
}

TEST(AllowedIpsTest, RemoveExactPrefix) {
  AllowedIps<uint32_t> table;
  table.Insert(Pfx("10.0.0.0/8"), 1);
  table.Insert(Pfx("10.1.0.0/16"), 2);
  table.Insert(Pfx("10.2.0.0/16"), 3);
  EXPECT_FALSE(table.Remove(Pfx("10.3.0.0/16")));
  EXPECT_FALSE(table.Remove(Pfx("10.0.0.0/15"))) << "a branch point is not an entry";
  EXPECT_FALSE(table.Remove(Pfx("10.0.0.0/9")));
  EXPECT_FALSE(table.Remove(Pfx("::/0")));
  EXPECT_TRUE(table.Remove(Pfx("10.1.0.0/16")));
  EXPECT_FALSE(table.Remove(Pfx("10.1.0.0/16")));
  EXPECT_EQ(table.size(), 2u);
  EXPECT_EQ(Owner(table, "10.1.0.1"), 1);
  EXPECT_EQ(Owner(table, "10.2.0.1"), 3);
  EXPECT_TRUE(table.Remove(Pfx("10.0.0.0/8")));
  EXPECT_EQ(Owner(table, "10.1.0.1"), -1);
  EXPECT_EQ(Owner(table, "10.2.0.1"), 3);
}

TEST(AllowedIpsTest, PrefixesOfIsOrdered) {
  AllowedIps<uint32_t> table;
  table.Insert(Pfx("fd00::/64"), 1);
  table.Insert(Pfx("10.1.0.0/16"), 1);
  table.Insert(Pfx("10.0.0.0/8"), 1);
  table.Insert(Pfx("192.168.0.0/16"), 2);
  table.Insert(Pfx("9.0.0.0/8"), 1);
  table.Insert(Pfx("::/0"), 1);
  EXPECT_THAT(table.PrefixesOf(1), ElementsAre(Pfx("9.0.0.0/8"), Pfx("10.0.0.0/8"),
                                               Pfx("10.1.0.0/16"), Pfx("::/0"), Pfx("fd00::/64")));
  std::vector<std::string> all;
  table.ForEach(
      [&](const Prefix& p, uint32_t v) { all.push_back(p.ToString() + "=" + std::to_string(v)); });
  EXPECT_THAT(all, ElementsAre("9.0.0.0/8=1", "10.0.0.0/8=1", "10.1.0.0/16=1", "192.168.0.0/16=2",
                               "::/0=1", "fd00::/64=1"));
}

TEST(AllowedIpsTest, CopiesAreIndependentSnapshots) {
  AllowedIps<uint32_t> table;
  table.Insert(Pfx("10.0.0.0/8"), 1);
  table.Insert(Pfx("fd00::/8"), 1);
  auto snapshot = std::make_shared<const AllowedIps<uint32_t>>(table);
  table.RemoveByValue(1);
  table.Insert(Pfx("10.0.0.0/8"), 2);
  EXPECT_EQ(Owner(*snapshot, "10.9.9.9"), 1);
  EXPECT_EQ(Owner(*snapshot, "fd00::9"), 1);
  EXPECT_EQ(Owner(table, "10.9.9.9"), 2);
  EXPECT_EQ(Owner(table, "fd00::9"), -1);
}

TEST(AllowedIpsTest, PointerValues) {
  struct Peer {
    std::string name;
  };
  Peer a{"a"}, b{"b"};
  AllowedIps<const Peer*> table;
  table.Insert(Pfx("10.0.0.0/24"), &a);
  table.Insert(Pfx("10.0.0.128/25"), &b);
  const Peer* const* found = table.Lookup(Ip("10.0.0.200"));
  ASSERT_NE(found, nullptr);
  EXPECT_EQ((*found)->name, "b");
  found = table.Lookup(Ip("10.0.0.1"));
  ASSERT_NE(found, nullptr);
  EXPECT_EQ((*found)->name, "a");
  EXPECT_EQ(table.RemoveByValue(&b), 1u);
  EXPECT_EQ(*table.Lookup(Ip("10.0.0.200")), &a);
}

TEST(AllowedIpsTest, ClearEmptiesTable) {
  AllowedIps<uint32_t> table;
  table.Insert(Pfx("10.0.0.0/8"), 1);
  table.Insert(Pfx("::/0"), 1);
  table.Clear();
  EXPECT_TRUE(table.empty());
  EXPECT_EQ(Owner(table, "10.0.0.1"), -1);
  EXPECT_EQ(Owner(table, "::1"), -1);
}

TEST(AllowedIpsTest, LookupDoesNotAllocate) {
  AllowedIps<uint32_t> table;
  for (uint32_t i = 0; i < 256; ++i) {
    table.Insert(Prefix(IpAddress::V4(0x0a000000u | i << 8), 24), i);
    uint8_t v6[16] = {0xfd, 0, 0, 0, 0, 0, static_cast<uint8_t>(i)};
    table.Insert(Prefix(IpAddress::V6(v6), 56), i);
  }
  const IpAddress v4 = Ip("10.0.77.1");
  const IpAddress v6 = Ip("fd00:0:0:4d00::1");
  const IpAddress miss = Ip("2001:db8::1");
  long found = 0;
  g_allocations = 0;
  g_count_allocations = true;
  for (int i = 0; i < 1000; ++i) {
    found += table.Lookup(v4) != nullptr;
    found += table.Lookup(v6) != nullptr;
    found += table.Lookup(miss) != nullptr;
  }
  g_count_allocations = false;
  EXPECT_EQ(g_allocations.load(), 0);
  EXPECT_EQ(found, 2000);
  EXPECT_EQ(*table.Lookup(v4), 77u);
  EXPECT_EQ(*table.Lookup(v6), 77u);
}

// ---- Randomized comparison against a naive model ------------------------------------------------

// The obvious implementation: a map of prefixes, searched linearly for the longest containing one.
class ReferenceTable {
 public:
  void Insert(const Prefix& prefix, uint32_t value) { entries_[prefix] = value; }
  size_t RemoveByValue(uint32_t value) {
    size_t removed = 0;
    for (auto it = entries_.begin(); it != entries_.end();) {
      if (it->second == value) {
        it = entries_.erase(it);
        ++removed;
      } else {
        ++it;
      }
    }
    return removed;
  }
  bool Remove(const Prefix& prefix) { return entries_.erase(prefix) > 0; }
  std::optional<uint32_t> Lookup(const IpAddress& address) const {
    int best_length = -1;
    std::optional<uint32_t> best;
    for (const auto& [prefix, value] : entries_) {
      if (prefix.length() > best_length && prefix.Contains(address)) {
        best_length = prefix.length();
        best = value;
      }
    }
    return best;
  }
  std::vector<Prefix> PrefixesOf(uint32_t value) const {
    std::vector<Prefix> out;
    for (const auto& [prefix, owner] : entries_) {
      if (owner == value) out.push_back(prefix);
    }
    return out;  // std::map order is Prefix's operator<, the order AllowedIps documents.
  }
  size_t size() const { return entries_.size(); }
  const std::map<Prefix, uint32_t>& entries() const { return entries_; }

 private:
  std::map<Prefix, uint32_t> entries_;
};

class RandomAddresses {
 public:
  RandomAddresses(bool v6, uint32_t seed) : v6_(v6), rng_(seed) {}

  int bits() const { return v6_ ? 128 : 32; }
  std::mt19937& rng() { return rng_; }

  // Mostly variations on earlier addresses (same leading bits, random rest) so that prefixes nest
  // and overlap, sometimes entirely fresh.
  IpAddress Next() {
    uint8_t bytes[16] = {};
    int keep = 0;
    if (!pool_.empty() && rng_() % 4 != 0) {
      const IpAddress& base = pool_[rng_() % pool_.size()];
      std::memcpy(bytes, base.bytes(), base.byte_length());
      keep = static_cast<int>(rng_() % (bits() + 1));
    }
    for (int i = keep; i < bits(); ++i) {
      const uint8_t mask = static_cast<uint8_t>(0x80 >> (i % 8));
      if (rng_() & 1) {
        bytes[i / 8] |= mask;
      } else {
        bytes[i / 8] &= static_cast<uint8_t>(~mask);
      }
    }
    const IpAddress address = v6_ ? IpAddress::V6(bytes) : IpAddress::V4(bytes);
    if (pool_.size() < 512) pool_.push_back(address);
    return address;
  }

  Prefix NextPrefix() {
    // Lengths are spread over the whole range, with extra weight on /0 and host routes.
    int length;
    switch (rng_() % 10) {
      case 0:
        length = 0;
        break;
      case 1:
        length = bits();
        break;
      default:
        length = static_cast<int>(rng_() % (bits() + 1));
    }
    return Prefix(Next(), length);
  }

 private:
  bool v6_;
  std::mt19937 rng_;
  std::vector<IpAddress> pool_;
};

void CompareLookups(const AllowedIps<uint32_t>& table, const ReferenceTable& reference,
                    RandomAddresses& addresses, int queries) {
  for (int q = 0; q < queries; ++q) {
    const IpAddress address = addresses.Next();
    const uint32_t* got = table.Lookup(address);
    const std::optional<uint32_t> want = reference.Lookup(address);
    ASSERT_EQ(got != nullptr, want.has_value()) << address.ToString();
    if (got != nullptr) {
      ASSERT_EQ(*got, *want) << address.ToString();
    }
  }
  // Every entry's own (first) address must resolve like the model says.
  for (const auto& [prefix, value] : reference.entries()) {
    const uint32_t* got = table.Lookup(prefix.address());
    const std::optional<uint32_t> want = reference.Lookup(prefix.address());
    ASSERT_NE(got, nullptr) << prefix.ToString();
    ASSERT_EQ(*got, *want) << prefix.ToString();
  }
}

void CompareContents(const AllowedIps<uint32_t>& table, const ReferenceTable& reference,
                     uint32_t peers) {
  ASSERT_EQ(table.size(), reference.size());
  for (uint32_t peer = 0; peer < peers; ++peer) {
    ASSERT_EQ(table.PrefixesOf(peer), reference.PrefixesOf(peer)) << "peer " << peer;
  }
}

void RunRandomized(bool v6, uint32_t seed) {
  constexpr uint32_t kPeers = 64;
  constexpr int kPrefixes = 4000;
  constexpr int kQueries = 4000;
  RandomAddresses addresses(v6, seed);
  std::mt19937& rng = addresses.rng();
  AllowedIps<uint32_t> table;
  ReferenceTable reference;

  for (int i = 0; i < kPrefixes; ++i) {
    const Prefix prefix = addresses.NextPrefix();
    const uint32_t peer = rng() % kPeers;
    table.Insert(prefix, peer);
    reference.Insert(prefix, peer);
  }
  ASSERT_NO_FATAL_FAILURE(CompareContents(table, reference, kPeers));
  ASSERT_NO_FATAL_FAILURE(CompareLookups(table, reference, addresses, kQueries));

  // A snapshot taken now must keep answering like the model did, whatever happens to the table.
  const AllowedIps<uint32_t> snapshot = table;
  const ReferenceTable snapshot_reference = reference;

  // Churn: peers leave, single prefixes are withdrawn, new prefixes arrive (some replacing owners).
  for (int round = 0; round < 8; ++round) {
    for (int i = 0; i < 4; ++i) {
      const uint32_t peer = rng() % kPeers;
      ASSERT_EQ(table.RemoveByValue(peer), reference.RemoveByValue(peer));
    }
    for (int i = 0; i < 50; ++i) {
      // Half the removals target a present prefix, half a random (mostly absent) one.
      Prefix prefix = addresses.NextPrefix();
      if (rng() % 2 == 0 && reference.size() > 0) {
        auto it = reference.entries().begin();
        std::advance(it, rng() % reference.size());
        prefix = it->first;
      }
      ASSERT_EQ(table.Remove(prefix), reference.Remove(prefix)) << prefix.ToString();
    }
    for (int i = 0; i < 200; ++i) {
      const Prefix prefix = addresses.NextPrefix();
      const uint32_t peer = rng() % kPeers;
      table.Insert(prefix, peer);
      reference.Insert(prefix, peer);
    }
    ASSERT_NO_FATAL_FAILURE(CompareContents(table, reference, kPeers));
    ASSERT_NO_FATAL_FAILURE(CompareLookups(table, reference, addresses, kQueries / 4));
  }

  ASSERT_NO_FATAL_FAILURE(CompareContents(snapshot, snapshot_reference, kPeers));
  ASSERT_NO_FATAL_FAILURE(CompareLookups(snapshot, snapshot_reference, addresses, kQueries / 4));

  // Draining every peer leaves an empty table that matches nothing.
  for (uint32_t peer = 0; peer < kPeers; ++peer) {
    ASSERT_EQ(table.RemoveByValue(peer), reference.RemoveByValue(peer));
  }
  EXPECT_TRUE(table.empty());
  ASSERT_NO_FATAL_FAILURE(CompareLookups(table, reference, addresses, 100));
}

TEST(AllowedIpsRandomizedTest, V4MatchesReference) { RunRandomized(/*v6=*/false, 20240601); }

TEST(AllowedIpsRandomizedTest, V6MatchesReference) { RunRandomized(/*v6=*/true, 20240602); }

TEST(AllowedIpsRandomizedTest, MixedFamiliesMatchReference) {
  RandomAddresses v4(false, 7), v6(true, 8);
  std::mt19937 rng(9);
  AllowedIps<uint32_t> table;
  ReferenceTable reference;
  for (int i = 0; i < 2000; ++i) {
    const Prefix prefix = (rng() & 1) ? v4.NextPrefix() : v6.NextPrefix();
    const uint32_t peer = rng() % 16;
    table.Insert(prefix, peer);
    reference.Insert(prefix, peer);
  }
  ASSERT_NO_FATAL_FAILURE(CompareContents(table, reference, 16));
  ASSERT_NO_FATAL_FAILURE(CompareLookups(table, reference, v4, 2000));
  ASSERT_NO_FATAL_FAILURE(CompareLookups(table, reference, v6, 2000));
}

}  // namespace
}  // namespace tunnelmesh
