#include "node-agent/nat/endpoint_reporter.h"

#include <ifaddrs.h>
#include <net/if.h>
#include <netinet/in.h>

#include <algorithm>

#include "lib/base/log.h"
#include "lib/crypto/aead.h"

namespace tunnelmesh {

EndpointReporter::EndpointReporter(PathTransport* transport, TxIdGenerator tx_ids)
    : transport_(transport), tx_ids_(std::move(tx_ids)) {}

void EndpointReporter::SendStunRequest(const Endpoint& server) {
  if (tx_ids_) {
    txid_ = tx_ids_();
  } else {
    RandomBytes(absl::Span<uint8_t>(txid_.data(), txid_.size()));
  }
  stun_pending_ = true;
  uint8_t request[stun::kMaxEncodedSize];
  const size_t size = stun::EncodeBindingRequest(txid_, stun::EncodeOptions{},
                                                 absl::Span<uint8_t>(request, sizeof(request)));
  if (size > 0) transport_->SendDatagram(absl::Span<const uint8_t>(request, size), server);
}

bool EndpointReporter::OnStunDatagram(absl::Span<const uint8_t> datagram) {
  if (!stun_pending_) return false;
  stun::BindingResponse response;
  if (stun::ParseBindingResponse(datagram, txid_, &response) != stun::ParseResult::kOk ||
      response.message_class != stun::MessageClass::kSuccessResponse) {
    return false;
  }
  stun_pending_ = false;
  if (reflexive_ && *reflexive_ == response.mapped_address) return false;
  reflexive_ = response.mapped_address;
  dirty_ = true;
  TM_LOG_INFO("endpoint found: {} (STUN)", reflexive_->ToString());
  return true;
}

void EndpointReporter::SetPaths(std::vector<ReportedPath> paths) {
  if (paths == paths_) return;
  paths_ = std::move(paths);
  dirty_ = true;
}

EndpointReport EndpointReporter::TakeReport(absl::Span<const IpAddress> local_addresses,
                                            uint16_t port) {
  dirty_ = false;
  EndpointReport report;
  for (const ReportedPath& p : paths_) {
    if (p.kind == disco::PathKind::kDirect) ++report.direct;
    if (p.kind == disco::PathKind::kRelay) ++report.relayed;
    if (p.kind == disco::PathKind::kSsh) ++report.ssh;
    if (report.paths.size() < kMaxReportedPaths) report.paths.push_back(p);
  }
  if (reflexive_) report.endpoints.push_back(reflexive_->ToString());
  for (const IpAddress& ip : local_addresses) {
    if (report.endpoints.size() >= kMaxReportedEndpoints) break;
    std::string e = Endpoint(ip, port).ToString();
    if (std::find(report.endpoints.begin(), report.endpoints.end(), e) == report.endpoints.end()) {
      report.endpoints.push_back(std::move(e));
    }
  }
  return report;
}

void EndpointReporter::ReportDone(const EndpointReport& report, bool ok) {
  if (ok) {
    reported_ = report.endpoints;
  } else {
    dirty_ = true;
  }
}

std::vector<IpAddress> LocalAddresses(const std::string& own_interface) {
  std::vector<IpAddress> out;
  ifaddrs* list = nullptr;
  if (getifaddrs(&list) != 0) return out;
  for (ifaddrs* a = list; a != nullptr; a = a->ifa_next) {
    if (a->ifa_addr == nullptr || !(a->ifa_flags & IFF_UP) || (a->ifa_flags & IFF_LOOPBACK)) {
      continue;
    }
    if (own_interface == a->ifa_name) continue;
    if (a->ifa_addr->sa_family != AF_INET && a->ifa_addr->sa_family != AF_INET6) continue;
    const socklen_t len =
        a->ifa_addr->sa_family == AF_INET ? sizeof(sockaddr_in) : sizeof(sockaddr_in6);
    absl::StatusOr<Endpoint> e = Endpoint::FromSockaddr(a->ifa_addr, len);
    if (!e.ok()) continue;
    const uint8_t* b = e->address().bytes();
    if (e->address().is_v6() && b[0] == 0xfe && (b[1] & 0xc0) == 0x80) continue;  // Link-local.
    out.push_back(e->address());
  }
  freeifaddrs(list);
  return out;
}

}  // namespace tunnelmesh
