// CoreDNS's gRPC DnsService (proto/dns.proto: coredns.dns.DnsService/Query) for the central DNS
// server: each call carries one DNS query in wire format and gets the answer the server's TCP
// socket would give (lib/dns/responder.h, no truncation: up to 65535 bytes), from the same zones.
// A packet too short for a DNS header, or a response rather than a query, is not answered:
// INVALID_ARGUMENT names the problem. A query that does not decode gets FORMERR, as over UDP.
//
// No authentication, on purpose: the mesh's names and addresses are public within the mesh, as
// they are on the plain DNS port (and CoreDNS's grpc plugin can present no token). The service
// shares the coordinator's gRPC server, so the transport is its TLS.
//
// Threads: Query runs on gRPC's callback threads and never blocks: it reads the published zone
// set (an immutable snapshot) and answers inline. Counters are atomics.
#pragma once

#include <array>
#include <atomic>
#include <cstdint>

#include "lib/dns/responder.h"
#include "lib/dns/server.h"
#include "proto/dns.grpc.pb.h"

namespace tunnelmesh {

class DnsGrpcService final : public ::coredns::dns::DnsService::CallbackService {
 public:
  // Answers from `server`'s zones; `server` must outlive this service.
  explicit DnsGrpcService(const DnsServer* server) : server_(server) {}

  grpc::ServerUnaryReactor* Query(grpc::CallbackServerContext* context,
                                  const ::coredns::dns::DnsPacket* request,
                                  ::coredns::dns::DnsPacket* response) override;

  // Calls answered, by outcome; and calls refused with INVALID_ARGUMENT.
  uint64_t queries(dns::Outcome outcome) const {
    return outcomes_[static_cast<size_t>(outcome)].load(std::memory_order_relaxed);
  }
  uint64_t invalid() const { return invalid_.load(std::memory_order_relaxed); }

 private:
  const DnsServer* const server_;
  std::array<std::atomic<uint64_t>, dns::kOutcomeCount> outcomes_{};
  std::atomic<uint64_t> invalid_{0};
};

}  // namespace tunnelmesh
