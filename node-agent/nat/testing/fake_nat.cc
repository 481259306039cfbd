#include "node-agent/nat/testing/fake_nat.h"

#include <vector>

namespace tunnelmesh {

FakeNat::FakeNat(FakeNetwork* inside, FakeNetwork* outside, const IpAddress& public_address,
                 FakeNatOptions options)
    : inside_(inside),
      outside_(outside),
      public_address_(public_address),
      options_(options),
      random_(options.seed) {
  inside_->SetDefaultRoute(this);
  outside_->AttachAddress(public_address_, this);
}

FakeNat::~FakeNat() {
  inside_->Detach(this);
  outside_->Detach(this);
}

FakeNat::Key FakeNat::KeyFor(const Endpoint& internal, const Endpoint& remote) const {
  switch (options_.mapping) {
    case NatMapping::kEndpointIndependent:
      return Key{internal, Endpoint()};
    case NatMapping::kAddressDependent:
      return Key{internal, Endpoint(remote.address(), 0)};
    case NatMapping::kAddressAndPortDependent:
      break;
  }
  return Key{internal, remote};
}

void FakeNat::ExpireLocked(MonoTime now) {
  for (auto it = mappings_.begin(); it != mappings_.end();) {
    if (now - it->second.last_refresh >= options_.mapping_timeout) {
      by_port_.erase(it->second.public_port);
      it = mappings_.erase(it);
      ++stats_.mappings_expired;
    } else {
      ++it;
    }
  }
}

void FakeNat::Arrive(FakeNetwork* network, const Endpoint& from, const Endpoint& to,
                     absl::Span<const uint8_t> bytes) {
  if (network == inside_) {
    Outbound(from, to, bytes);
  } else {
    Inbound(from, to, bytes);
  }
}

void FakeNat::Outbound(const Endpoint& from, const Endpoint& to, absl::Span<const uint8_t> bytes) {
  Endpoint translated;
  {
    absl::MutexLock lock(&mu_);
    const MonoTime now = inside_->clock()->Now();
    ExpireLocked(now);
    const Key key = KeyFor(from, to);
    auto it = mappings_.find(key);
    if (it == mappings_.end()) {
      if (by_port_.size() >= 65535 - 1024 + 1) {
        ++stats_.ports_exhausted;
        return;
      }
      std::uniform_int_distribution<uint32_t> ports(1024, 65535);
      uint16_t port = 0;
      do {
        port = static_cast<uint16_t>(ports(random_));
      } while (by_port_.count(port) > 0);
      Mapping mapping;
      mapping.internal = from;
      mapping.public_port = port;
      it = mappings_.emplace(key, std::move(mapping)).first;
      by_port_.emplace(port, key);
      ++stats_.mappings_created;
    }
    Mapping& mapping = it->second;
    mapping.last_refresh = now;
    mapping.sent_to_addresses.insert(to.address());
    mapping.sent_to_endpoints.insert(to);
    translated = Endpoint(public_address_, mapping.public_port);
    ++stats_.outbound;
  }
  outside_->Send(translated, to, bytes);
}

void FakeNat::Inbound(const Endpoint& from, const Endpoint& to, absl::Span<const uint8_t> bytes) {
  Endpoint internal;
  {
    absl::MutexLock lock(&mu_);
    const MonoTime now = outside_->clock()->Now();
    ExpireLocked(now);
    auto port = by_port_.find(to.port());
    if (port == by_port_.end()) {
      ++stats_.no_mapping;
      return;
    }
    Mapping& mapping = mappings_.at(port->second);
    bool allowed = true;
    switch (options_.filtering) {
      case NatFiltering::kEndpointIndependent:
        break;
      case NatFiltering::kAddressDependent:
        allowed = mapping.sent_to_addresses.count(from.address()) > 0;
        break;
      case NatFiltering::kAddressAndPortDependent:
        allowed = mapping.sent_to_endpoints.count(from) > 0;
        break;
    }
    if (!allowed) {
      ++stats_.filtered;
      return;
    }
    if (options_.inbound_refresh) mapping.last_refresh = now;
    internal = mapping.internal;
    ++stats_.inbound;
  }
  inside_->Send(from, internal, bytes);
}

size_t FakeNat::mappings() {
  absl::MutexLock lock(&mu_);
  ExpireLocked(inside_->clock()->Now());
  return mappings_.size();
}

std::optional<Endpoint> FakeNat::PublicEndpointFor(const Endpoint& internal,
                                                   const Endpoint& remote) {
  absl::MutexLock lock(&mu_);
  ExpireLocked(inside_->clock()->Now());
  auto it = mappings_.find(KeyFor(internal, remote));
  if (it == mappings_.end()) return std::nullopt;
  return Endpoint(public_address_, it->second.public_port);
}

FakeNatStats FakeNat::stats() const {
  absl::MutexLock lock(&mu_);
  return stats_;
}

}  // namespace tunnelmesh
