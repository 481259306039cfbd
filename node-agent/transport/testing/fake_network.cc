#include "node-agent/transport/testing/fake_network.h"

#include <sys/eventfd.h>
#include <unistd.h>

#include <cstdlib>

namespace tunnelmesh {

FakeNetwork::FakeNetwork(const Clock* clock, FakeNetworkOptions options)
    : clock_(clock), options_(options), random_(options.seed) {}

void FakeNetwork::Attach(const Endpoint& endpoint, FakeNetworkReceiver* receiver) {
  absl::MutexLock lock(&mu_);
  hosts_[endpoint] = receiver;
}

void FakeNetwork::AttachAddress(const IpAddress& address, FakeNetworkReceiver* receiver) {
  absl::MutexLock lock(&mu_);
  addresses_[address] = receiver;
}

void FakeNetwork::SetDefaultRoute(FakeNetworkReceiver* receiver) {
  absl::MutexLock lock(&mu_);
  default_route_ = receiver;
}

void FakeNetwork::Detach(FakeNetworkReceiver* receiver) {
  absl::MutexLock lock(&mu_);
  std::erase_if(hosts_, [&](const auto& entry) { return entry.second == receiver; });
  std::erase_if(addresses_, [&](const auto& entry) { return entry.second == receiver; });
  if (default_route_ == receiver) default_route_ = nullptr;
}

std::pair<IpAddress, IpAddress> FakeNetwork::LinkKey(const IpAddress& a, const IpAddress& b) {
  return a < b ? std::make_pair(a, b) : std::make_pair(b, a);
}

void FakeNetwork::Cut(const IpAddress& a, const IpAddress& b) {
  absl::MutexLock lock(&mu_);
  cut_.insert(LinkKey(a, b));
}

void FakeNetwork::Restore(const IpAddress& a, const IpAddress& b) {
  absl::MutexLock lock(&mu_);
  cut_.erase(LinkKey(a, b));
}

FakeNetworkStats FakeNetwork::stats() const {
  absl::MutexLock lock(&mu_);
  return stats_;
}

FakeNetworkReceiver* FakeNetwork::Route(const Endpoint& to) {
  if (auto host = hosts_.find(to); host != hosts_.end()) return host->second;
  if (auto address = addresses_.find(to.address()); address != addresses_.end()) {
    return address->second;
  }
  return default_route_;
}

void FakeNetwork::Send(const Endpoint& from, const Endpoint& to, absl::Span<const uint8_t> bytes) {
  {
    absl::MutexLock lock(&mu_);
    ++stats_.sent;
    if (cut_.count(LinkKey(from.address(), to.address())) > 0) {
      ++stats_.cut;
      return;
    }
    if (options_.loss > 0 && std::bernoulli_distribution(options_.loss)(random_)) {
      ++stats_.lost;
      return;
    }
    if (options_.latency > Duration::zero()) {
      in_flight_.push_back(InFlight{clock_->Now() + options_.latency, from, to,
                                    std::vector<uint8_t>(bytes.begin(), bytes.end())});
      return;
    }
  }
  Deliver(from, to, bytes);
}

void FakeNetwork::Deliver(const Endpoint& from, const Endpoint& to,
                          absl::Span<const uint8_t> bytes) {
  FakeNetworkReceiver* receiver = nullptr;
  {
    absl::MutexLock lock(&mu_);
    receiver = Route(to);
    if (receiver == nullptr) {
      ++stats_.unreachable;
      return;
    }
    ++stats_.delivered;
  }
  // Receivers live as long as the test's network; no lock is held across the call.
  receiver->Arrive(this, from, to, bytes);
}

size_t FakeNetwork::DeliverDue() {
  size_t delivered = 0;
  for (;;) {
    InFlight next;
    {
      absl::MutexLock lock(&mu_);
      if (in_flight_.empty() || in_flight_.front().due > clock_->Now()) break;
      next = std::move(in_flight_.front());
      in_flight_.pop_front();
    }
    Deliver(next.from, next.to, next.bytes);
    ++delivered;
  }
  return delivered;
}

FakeUdpBind::FakeUdpBind(FakeNetwork* network, const Endpoint& local)
    : network_(network), local_(local), event_fd_(eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC)) {
  if (event_fd_ < 0) std::abort();
  network_->Attach(local_, this);
}

FakeUdpBind::~FakeUdpBind() {
  network_->Detach(this);
  close(event_fd_);
}

size_t FakeUdpBind::Send(absl::Span<const OutgoingDatagram> datagrams) {
  size_t refused = 0;
  for (const OutgoingDatagram& d : datagrams) {
    if (!d.to.is_udp()) {
      ++refused;
      continue;
    }
    network_->Send(local_, d.to.udp(), absl::Span<const uint8_t>(d.data, d.length));
  }
  return refused;
}

void FakeUdpBind::Arrive(FakeNetwork*, const Endpoint& from, const Endpoint&,
                         absl::Span<const uint8_t> bytes) {
  absl::MutexLock lock(&mu_);
  if (inbox_.size() >= kInboxLimit) {
    ++dropped_;
    return;
  }
  inbox_.push_back(Datagram{from, std::vector<uint8_t>(bytes.begin(), bytes.end())});
  if (inbox_.size() == 1) {
    const uint64_t one = 1;
    (void)!write(event_fd_, &one, sizeof(one));
  }
}

absl::StatusOr<size_t> FakeUdpBind::Receive(DatagramHandler handler) {
  handed_.clear();
  {
    absl::MutexLock lock(&mu_);
    uint64_t ignored;
    (void)!read(event_fd_, &ignored, sizeof(ignored));
    while (!inbox_.empty() && handed_.size() < kBurst) {
      handed_.push_back(std::move(inbox_.front()));
      inbox_.pop_front();
    }
    if (!inbox_.empty()) {
      const uint64_t one = 1;
      (void)!write(event_fd_, &one, sizeof(one));
    }
  }
  for (Datagram& d : handed_) handler(absl::MakeSpan(d.bytes), TransportEndpoint(d.from));
  return handed_.size();
}

uint64_t FakeUdpBind::receive_dropped() const {
  absl::MutexLock lock(&mu_);
  return dropped_;
}

size_t FakeUdpBind::pending() const {
  absl::MutexLock lock(&mu_);
  return inbox_.size();
}

}  // namespace tunnelmesh
