// WireGuard's AllowedIPs table: maps IPv4 and IPv6 prefixes to an owner (a peer) and answers
// longest-prefix-match lookups. The data plane uses it twice per packet: TUN -> which peer gets
// this destination, and peer -> TUN, does this inner source address belong to the peer that sent it
// (cryptokey routing, WireGuard whitepaper section 2).
//
// The table is a path-compressed binary trie, one per address family, whose nodes live in one
// vector and point at each other by index: copying a table is a plain vector copy, and lookups walk
// at most one node per distinct prefix length on the path. Lookup never allocates.
//
// Threads and ownership: not thread-safe. The control thread builds or edits a table and publishes
// it as an immutable snapshot (std::shared_ptr<const AllowedIps<T>>); data-plane threads call only
// the const member functions of a published snapshot. Pointers returned by Lookup stay valid until
// the table is modified or destroyed.
#pragma once

#include <algorithm>
#include <bit>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <utility>
#include <vector>

#include "lib/net/ip.h"

namespace tunnelmesh {

// `T` is the owner of a prefix, e.g. a peer id or a pointer; it must be copyable and equality
// comparable.
template <typename T>
class AllowedIps {
 public:
  AllowedIps() = default;

  // Makes `value` the owner of `prefix`. Re-inserting a prefix that is already present replaces its
  // owner, as in WireGuard (the prefix moves to the new peer).
  void Insert(const Prefix& prefix, const T& value);

  // Removes `prefix` exactly (not the prefixes inside it); returns whether it was present.
  bool Remove(const Prefix& prefix);

  // Removes every prefix owned by `value`; returns how many were removed.
  size_t RemoveByValue(const T& value);

  // The owner of the longest prefix containing `address`, or nullptr if none does. Does not
  // allocate.
  const T* Lookup(const IpAddress& address) const;

  // The prefixes owned by `value`: IPv4 before IPv6, then by address, shorter before longer.
  std::vector<Prefix> PrefixesOf(const T& value) const;

  // Calls `fn(const Prefix&, const T&)` for every entry, in the order PrefixesOf uses.
  template <typename Fn>
  void ForEach(Fn&& fn) const;

  // The number of prefixes in the table.
  size_t size() const { return size_; }
  bool empty() const { return size_ == 0; }
  void Clear();

 private:
  // An address as a 128-bit big-endian number; IPv4 addresses occupy the top 32 bits, so that bit
  // `i` means the same thing for both families.
  struct Key {
    uint64_t hi = 0;
    uint64_t lo = 0;
  };

  static constexpr uint32_t kNone = UINT32_MAX;

  // A trie node covers `key`/`cidr`. Nodes with a value are table entries; nodes without one are
  // branch points created where two entries' paths diverge. Every node without a value has two
  // children (that is the path compression: no chains of single-child nodes).
  struct Node {
    Key key;
    uint8_t cidr = 0;
    uint32_t child[2] = {kNone, kNone};
    std::optional<T> value;
  };

  static Key KeyOf(const IpAddress& address);
  static IpAddress AddressOf(const Key& key, bool v6);
  // The first `cidr` bits of `key`, the rest zero.
  static Key Masked(const Key& key, int cidr);
  // Whether `a` and `b` agree on their first `cidr` bits.
  static bool SamePrefix(const Key& a, const Key& b, int cidr);
  // The number of leading bits on which `a` and `b` agree (0..128).
  static int CommonBits(const Key& a, const Key& b);
  // Bit `i` (from the most significant) of `key`; 0 <= i < 128.
  static int Bit(const Key& key, int i);

  uint32_t& Root(bool v6) { return v6 ? root_v6_ : root_v4_; }
  uint32_t NewNode(const Key& key, int cidr);
  // Finds the node for exactly `key`/`cidr` (with or without a value), or kNone.
  uint32_t Find(uint32_t root, const Key& key, int cidr) const;
  // Drops nodes that no longer carry a value and are not needed as branch points, then rebuilds
  // the node vector so that it holds only live nodes, in depth-first order.
  void Compact();
  uint32_t Prune(uint32_t index);
  uint32_t CopyInto(std::vector<Node>& out, uint32_t index) const;
  template <typename Fn>
  void Walk(uint32_t index, bool v6, Fn& fn) const;

  std::vector<Node> nodes_;
  uint32_t root_v4_ = kNone;
  uint32_t root_v6_ = kNone;
  size_t size_ = 0;
};

// ---- Implementation ----------------------------------------------------------------------------

template <typename T>
typename AllowedIps<T>::Key AllowedIps<T>::KeyOf(const IpAddress& address) {
  const uint8_t* bytes = address.bytes();
  Key key;
  for (int i = 0; i < 8; ++i) key.hi = (key.hi << 8) | bytes[i];
  if (address.is_v6()) {
    for (int i = 8; i < 16; ++i) key.lo = (key.lo << 8) | bytes[i];
  } else {
    key.hi &= 0xffffffff00000000ull;
  }
  return key;
}

template <typename T>
IpAddress AllowedIps<T>::AddressOf(const Key& key, bool v6) {
  uint8_t bytes[16];
  for (int i = 0; i < 8; ++i) {
    bytes[i] = static_cast<uint8_t>(key.hi >> (56 - 8 * i));
    bytes[8 + i] = static_cast<uint8_t>(key.lo >> (56 - 8 * i));
  }
  return v6 ? IpAddress::V6(bytes) : IpAddress::V4(bytes);
}

template <typename T>
typename AllowedIps<T>::Key AllowedIps<T>::Masked(const Key& key, int cidr) {
  Key out;
  if (cidr >= 64) {
    out.hi = key.hi;
    out.lo = cidr >= 128 ? key.lo : (cidr == 64 ? 0 : key.lo & (~0ull << (128 - cidr)));
  } else {
    out.hi = cidr == 0 ? 0 : key.hi & (~0ull << (64 - cidr));
  }
  return out;
}

template <typename T>
bool AllowedIps<T>::SamePrefix(const Key& a, const Key& b, int cidr) {
  return CommonBits(a, b) >= cidr;
}

template <typename T>
int AllowedIps<T>::CommonBits(const Key& a, const Key& b) {
  const uint64_t hi = a.hi ^ b.hi;
  if (hi != 0) return std::countl_zero(hi);
  const uint64_t lo = a.lo ^ b.lo;
  if (lo != 0) return 64 + std::countl_zero(lo);
  return 128;
}

template <typename T>
int AllowedIps<T>::Bit(const Key& key, int i) {
  return i < 64 ? static_cast<int>((key.hi >> (63 - i)) & 1)
                : static_cast<int>((key.lo >> (127 - i)) & 1);
}

template <typename T>
uint32_t AllowedIps<T>::NewNode(const Key& key, int cidr) {
  Node node;
  node.key = key;
  node.cidr = static_cast<uint8_t>(cidr);
  nodes_.push_back(std::move(node));
  return static_cast<uint32_t>(nodes_.size() - 1);
}

template <typename T>
void AllowedIps<T>::Insert(const Prefix& prefix, const T& value) {
  const bool v6 = prefix.address().is_v6();
  const int cidr = prefix.length();
  const Key key = Masked(KeyOf(prefix.address()), cidr);

  // `parent`/`side` name the slot being examined: a child link, or the root when parent is kNone.
  // Slots are re-read through indices after every push_back, which may move the nodes.
  uint32_t parent = kNone;
  int side = 0;
  auto slot = [&]() -> uint32_t& {
    return parent == kNone ? Root(v6) : nodes_[parent].child[side];
  };

  while (true) {
    const uint32_t current = slot();
    if (current == kNone) {
      const uint32_t leaf = NewNode(key, cidr);
      nodes_[leaf].value = value;
      slot() = leaf;
      ++size_;
      return;
    }
    const Key current_key = nodes_[current].key;
    const int current_cidr = nodes_[current].cidr;
    const int common = std::min({CommonBits(current_key, key), current_cidr, cidr});

    if (common == current_cidr && current_cidr == cidr) {
      // The same prefix: replace its owner (or give a branch point one).
      if (!nodes_[current].value.has_value()) ++size_;
      nodes_[current].value = value;
      return;
    }
    if (common == current_cidr) {
      // The current node covers the new prefix: descend.
      parent = current;
      side = Bit(key, current_cidr);
      continue;
    }
    if (common == cidr) {
      // The new prefix covers the current node: insert it above.
      const uint32_t added = NewNode(key, cidr);
      nodes_[added].value = value;
      nodes_[added].child[Bit(current_key, cidr)] = current;
      slot() = added;
      ++size_;
      return;
    }
    // The paths diverge below both: add a branch point at the common prefix with both below it.
    const uint32_t leaf = NewNode(key, cidr);
    nodes_[leaf].value = value;
    const uint32_t branch = NewNode(Masked(key, common), common);
    nodes_[branch].child[Bit(key, common)] = leaf;
    nodes_[branch].child[Bit(current_key, common)] = current;
    slot() = branch;
    ++size_;
    return;
  }
}

template <typename T>
uint32_t AllowedIps<T>::Find(uint32_t index, const Key& key, int cidr) const {
  while (index != kNone) {
    const Node& node = nodes_[index];
    if (node.cidr > cidr || !SamePrefix(node.key, key, node.cidr)) return kNone;
    if (node.cidr == cidr) return index;
    index = node.child[Bit(key, node.cidr)];
  }
  return kNone;
}

template <typename T>
bool AllowedIps<T>::Remove(const Prefix& prefix) {
  const bool v6 = prefix.address().is_v6();
  const int cidr = prefix.length();
  const uint32_t index =
      Find(v6 ? root_v6_ : root_v4_, Masked(KeyOf(prefix.address()), cidr), cidr);
  if (index == kNone || !nodes_[index].value.has_value()) return false;
  nodes_[index].value.reset();
  --size_;
  Compact();
  return true;
}

template <typename T>
size_t AllowedIps<T>::RemoveByValue(const T& value) {
  size_t removed = 0;
  for (Node& node : nodes_) {
    if (node.value.has_value() && *node.value == value) {
      node.value.reset();
      ++removed;
    }
  }
  if (removed > 0) {
    size_ -= removed;
    Compact();
  }
  return removed;
}

template <typename T>
const T* AllowedIps<T>::Lookup(const IpAddress& address) const {
  const Key key = KeyOf(address);
  const int max_cidr = address.bit_length();
  const T* best = nullptr;
  uint32_t index = address.is_v6() ? root_v6_ : root_v4_;
  while (index != kNone) {
    const Node& node = nodes_[index];
    if (!SamePrefix(node.key, key, node.cidr)) break;
    if (node.value.has_value()) best = &*node.value;
    if (node.cidr >= max_cidr) break;
    index = node.child[Bit(key, node.cidr)];
  }
  return best;
}

template <typename T>
template <typename Fn>
void AllowedIps<T>::Walk(uint32_t index, bool v6, Fn& fn) const {
  // Recursion depth is bounded by the number of distinct prefix lengths on a path (at most 129).
  if (index == kNone) return;
  const Node& node = nodes_[index];
  if (node.value.has_value()) fn(Prefix(AddressOf(node.key, v6), node.cidr), *node.value);
  Walk(node.child[0], v6, fn);
  Walk(node.child[1], v6, fn);
}

template <typename T>
template <typename Fn>
void AllowedIps<T>::ForEach(Fn&& fn) const {
  Walk(root_v4_, false, fn);
  Walk(root_v6_, true, fn);
}

template <typename T>
std::vector<Prefix> AllowedIps<T>::PrefixesOf(const T& value) const {
  std::vector<Prefix> out;
  ForEach([&](const Prefix& prefix, const T& owner) {
    if (owner == value) out.push_back(prefix);
  });
  return out;
}

template <typename T>
void AllowedIps<T>::Clear() {
  nodes_.clear();
  root_v4_ = kNone;
  root_v6_ = kNone;
  size_ = 0;
}

template <typename T>
uint32_t AllowedIps<T>::Prune(uint32_t index) {
  if (index == kNone) return kNone;
  Node& node = nodes_[index];
  const uint32_t left = Prune(node.child[0]);
  const uint32_t right = Prune(node.child[1]);
  // Prune never adds nodes, so `node` still refers to live storage after the recursive calls.
  node.child[0] = left;
  node.child[1] = right;
  if (node.value.has_value() || (left != kNone && right != kNone)) return index;
  return left != kNone ? left : right;
}

template <typename T>
uint32_t AllowedIps<T>::CopyInto(std::vector<Node>& out, uint32_t index) const {
  if (index == kNone) return kNone;
  const Node& node = nodes_[index];
  const uint32_t copied = static_cast<uint32_t>(out.size());
  out.push_back(node);
  const uint32_t left = CopyInto(out, node.child[0]);
  const uint32_t right = CopyInto(out, node.child[1]);
  out[copied].child[0] = left;
  out[copied].child[1] = right;
  return copied;
}

template <typename T>
void AllowedIps<T>::Compact() {
  root_v4_ = Prune(root_v4_);
  root_v6_ = Prune(root_v6_);
  std::vector<Node> live;
  live.reserve(nodes_.size());
  const uint32_t v4 = CopyInto(live, root_v4_);
  const uint32_t v6 = CopyInto(live, root_v6_);
  live.shrink_to_fit();
  nodes_ = std::move(live);
  root_v4_ = v4;
  root_v6_ = v6;
}

}  // namespace tunnelmesh
