#include "operator/dns/dns_grpc_service.h"

#include <string>

#include "absl/strings/str_cat.h"

namespace tunnelmesh {

grpc::ServerUnaryReactor* DnsGrpcService::Query(grpc::CallbackServerContext* context,
                                                const ::coredns::dns::DnsPacket* request,
                                                ::coredns::dns::DnsPacket* response) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  const std::string& msg = request->msg();
  const auto query = absl::MakeConstSpan(reinterpret_cast<const uint8_t*>(msg.data()), msg.size());
  // gRPC frames the message, so this is TCP's case: one whole message, no size limit to fit.
  const std::shared_ptr<const dns::ZoneSet> zones = server_->zones();
  dns::Reply reply = dns::RespondFromZones(*zones, query, dns::Transport::kTcp, false);
  if (reply.bytes.empty()) {
    // Respond answers every query; it drops only what is no query (too short for a header, or a
    // response), so that two servers cannot make each other loop.
    invalid_.fetch_add(1, std::memory_order_relaxed);
    constexpr size_t kHeaderSize = 12;
    std::string why;
    if (msg.size() < kHeaderSize) {
      why = absl::StrCat("DnsPacket.msg holds ", msg.size(),
                         " bytes: a DNS query (RFC 1035 4.1) has a 12-byte header at least");
    } else if ((static_cast<uint8_t>(msg[2]) & 0x80) != 0) {
      why = "DnsPacket.msg is a DNS response (QR set), not a query";
    } else {
      why = "DnsPacket.msg could not be answered";
    }
    reactor->Finish(grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, why));
    return reactor;
  }
  outcomes_[static_cast<size_t>(reply.outcome)].fetch_add(1, std::memory_order_relaxed);
  response->set_msg(reply.bytes.data(), reply.bytes.size());
  reactor->Finish(grpc::Status::OK);
  return reactor;
}

}  // namespace tunnelmesh
