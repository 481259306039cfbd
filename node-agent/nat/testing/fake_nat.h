// FakeNat: a NAT between a private FakeNetwork (a LAN) and the public one, for unit tests of hole
// punching and path fallback, after Tailscale's natlab. It implements the behaviours of RFC 4787:
//
// - Mapping (section 4.1): which outbound flows share one public port.
//   kEndpointIndependent: one mapping per internal endpoint, whatever the destination (REQ-1).
//   kAddressDependent: one per internal endpoint and destination address.
//   kAddressAndPortDependent: one per internal endpoint and destination endpoint ("symmetric").
// - Filtering (section 5): which inbound datagrams to a mapping's public port get through.
//   kEndpointIndependent: any source.
//   kAddressDependent: sources at an address the mapping has sent to.
//   kAddressAndPortDependent: sources at an endpoint the mapping has sent to.
// - Mapping refresh (section 4.3): a mapping expires `mapping_timeout` after its last outbound
//   datagram (REQ-6: outbound refreshes; inbound refreshes only with `inbound_refresh`). Time comes
//   from the networks' clock, so tests expire mappings by advancing a FakeClock.
// - Port allocation: public ports drawn from [1024, 65535] by a generator seeded with `seed`, never
//   two live mappings on one port.
//
// Thread-safe (one mutex); no lock is held while a datagram is forwarded into a network.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <random>
#include <set>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "lib/net/ip.h"
#include "node-agent/transport/testing/fake_network.h"

namespace tunnelmesh {

enum class NatMapping : uint8_t {
  kEndpointIndependent,
  kAddressDependent,
  kAddressAndPortDependent
};
enum class NatFiltering : uint8_t {
  kEndpointIndependent,
  kAddressDependent,
  kAddressAndPortDependent,
};

struct FakeNatOptions {
  NatMapping mapping = NatMapping::kEndpointIndependent;
  NatFiltering filtering = NatFiltering::kAddressAndPortDependent;
  // RFC 4787 REQ-5 asks for at least 2 minutes.
  Duration mapping_timeout = std::chrono::seconds(120);
  bool inbound_refresh = false;
  uint64_t seed = 1;
};

struct FakeNatStats {
  uint64_t mappings_created = 0;
  uint64_t mappings_expired = 0;
  uint64_t outbound = 0;         // Translated and sent to the public network.
  uint64_t inbound = 0;          // Translated and sent into the LAN.
  uint64_t no_mapping = 0;       // Inbound to a public port with no live mapping.
  uint64_t filtered = 0;         // Inbound refused by the filtering behaviour.
  uint64_t ports_exhausted = 0;  // Outbound dropped: no free public port.
};

class FakeNat final : public FakeNetworkReceiver {
 public:
  // Becomes the default route of `inside` and the owner of `public_address` on `outside`; both
  // networks must outlive the NAT and share one clock.
  FakeNat(FakeNetwork* inside, FakeNetwork* outside, const IpAddress& public_address,
          FakeNatOptions options);
  ~FakeNat() override;
  FakeNat(const FakeNat&) = delete;
  FakeNat& operator=(const FakeNat&) = delete;

  const IpAddress& public_address() const { return public_address_; }

  void Arrive(FakeNetwork* network, const Endpoint& from, const Endpoint& to,
              absl::Span<const uint8_t> bytes) override;

  // Live mappings now (expired ones are removed first).
  size_t mappings();
  // The public endpoint `internal` is mapped to for traffic to `remote`, if a mapping is live.
  std::optional<Endpoint> PublicEndpointFor(const Endpoint& internal, const Endpoint& remote);
  FakeNatStats stats() const;

 private:
  struct Mapping {
    Endpoint internal;
    uint16_t public_port = 0;
    MonoTime last_refresh;
    std::set<IpAddress> sent_to_addresses;
    std::set<Endpoint, EndpointLess> sent_to_endpoints;
  };
  // What distinguishes mappings: the internal endpoint, plus the destination (or its address)
  // for the dependent behaviours.
  struct Key {
    Endpoint internal;
    Endpoint remote;
  };
  struct KeyLess {
    bool operator()(const Key& a, const Key& b) const {
      EndpointLess less;
      if (!(a.internal == b.internal)) return less(a.internal, b.internal);
      return less(a.remote, b.remote);
    }
  };

  Key KeyFor(const Endpoint& internal, const Endpoint& remote) const;
  void ExpireLocked(MonoTime now) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void Outbound(const Endpoint& from, const Endpoint& to, absl::Span<const uint8_t> bytes);
  void Inbound(const Endpoint& from, const Endpoint& to, absl::Span<const uint8_t> bytes);

  FakeNetwork* const inside_;
  FakeNetwork* const outside_;
  const IpAddress public_address_;
  const FakeNatOptions options_;

  mutable absl::Mutex mu_;
  std::map<Key, Mapping, KeyLess> mappings_ ABSL_GUARDED_BY(mu_);
  std::map<uint16_t, Key> by_port_ ABSL_GUARDED_BY(mu_);
  std::mt19937_64 random_ ABSL_GUARDED_BY(mu_);
  FakeNatStats stats_ ABSL_GUARDED_BY(mu_);
};

}  // namespace tunnelmesh
