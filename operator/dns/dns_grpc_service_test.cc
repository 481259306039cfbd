// CoreDNS's DnsService as the operator serves it: registered on the coordinator's gRPC server
// (TLS, 127.0.0.1, a free port) beside the Coordinator service, asked through a client stub
// generated from proto/dns.proto, as CoreDNS's grpc plugin asks it. Answers from both meshes'
// zones, REFUSED outside them, FORMERR for a query that does not decode, INVALID_ARGUMENT for
// what is no query, and no authentication needed.
#include "operator/dns/dns_grpc_service.h"

#include <grpcpp/grpcpp.h>

#include <memory>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "lib/crypto/x509.h"
#include "operator/coordinator/grpc_service.h"
#include "operator/dns/testing/central_dns_fixture.h"
#include "proto/dns.grpc.pb.h"

namespace tunnelmesh {
namespace {

using dns::Message;

class DnsGrpcServiceTest : public CentralDnsTest {
 protected:
  void SetUp() override {
    CentralDnsTest::SetUp();
    if (HasFatalFailure()) return;
    absl::StatusOr<PemPair> ca = MakeCa();
    ASSERT_TRUE(ca.ok()) << ca.status();
    absl::StatusOr<PemPair> cert = IssueServerCert(*ca);
    ASSERT_TRUE(cert.ok()) << cert.status();
    const TlsIdentity tls{ca->cert_pem, cert->cert_pem + ca->cert_pem, cert->key_pem};
    absl::StatusOr<std::unique_ptr<CoordinatorServer>> server = CoordinatorServer::Start(
        coordinator_.get(), tls, "127.0.0.1", 0, {central_->grpc_service()});
    ASSERT_TRUE(server.ok()) << server.status();
    grpc_ = *std::move(server);
    grpc::SslCredentialsOptions ssl;
    ssl.pem_root_certs = ca->cert_pem;
    grpc::ChannelArguments args;
    args.SetSslTargetNameOverride(kCoordinatorServerName);
    stub_ = ::coredns::dns::DnsService::NewStub(grpc::CreateCustomChannel(
        "127.0.0.1:" + std::to_string(grpc_->port()), grpc::SslCredentials(ssl), args));
  }

  void TearDown() override {
    // The gRPC server goes before the DNS server whose service it calls.
    if (grpc_ != nullptr) grpc_->Shutdown();
  }

  // One Query call with `msg` as the packet; the reply's bytes in *reply.
  grpc::Status Query(const std::vector<uint8_t>& msg, std::vector<uint8_t>* reply) {
    ::coredns::dns::DnsPacket request;
    request.set_msg(msg.data(), msg.size());
    ::coredns::dns::DnsPacket response;
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
    const grpc::Status status = stub_->Query(&context, request, &response);
    reply->assign(response.msg().begin(), response.msg().end());
    return status;
  }

  Message QueryName(const std::string& name, uint16_t type = dns::kTypeA) {
    std::vector<uint8_t> reply;
    const grpc::Status status = Query(dns::testing::QueryBytes(++next_id_, name, type), &reply);
    EXPECT_TRUE(status.ok()) << status.error_message();
    absl::StatusOr<Message> decoded = dns::Decode(reply);
    EXPECT_TRUE(decoded.ok()) << decoded.status();
    return decoded.value_or(Message{});
  }

  std::unique_ptr<CoordinatorServer> grpc_;
  std::unique_ptr<::coredns::dns::DnsService::Stub> stub_;
};

TEST_F(DnsGrpcServiceTest, AnswersBothMeshesThroughTheGeneratedStub) {
  const std::vector<std::string> alice = Join("alice", kDemoToken, {"web"});
  const std::vector<std::string> bob = Join("bob", kCorpToken);
  ASSERT_TRUE(Eventually([&] { return QueryName("bob.corp.example").answers.size() == 1; }));

  Message r = QueryName("alice.mesh");
  EXPECT_EQ(r.header.id, next_id_);
  EXPECT_TRUE(r.header.aa);
  ASSERT_EQ(r.answers.size(), 1u);
  EXPECT_EQ(r.answers[0].data, dns::RData(IpAddress::Parse(alice[0]).value()));
  r = QueryName("web.mesh", dns::kTypeAaaa);
  ASSERT_EQ(r.answers.size(), 1u);
  EXPECT_EQ(r.answers[0].data, dns::RData(IpAddress::Parse(alice[1]).value()));
  r = QueryName(dns::ReverseName(IpAddress::Parse(bob[0]).value()), dns::kTypePtr);
  ASSERT_EQ(r.answers.size(), 1u);
  EXPECT_EQ(r.answers[0].data, dns::RData(std::string("bob.corp.example")));
  r = QueryName("nobody.corp.example");
  EXPECT_EQ(r.header.rcode, dns::Rcode::kNxDomain);
  ASSERT_EQ(r.authority.size(), 1u);
  EXPECT_EQ(r.authority[0].name, "corp.example");
  EXPECT_EQ(QueryName("example.com").header.rcode, dns::Rcode::kRefused);

  const CentralDnsStats stats = central_->stats();
  EXPECT_GE(stats.grpc_queries[static_cast<size_t>(dns::Outcome::kAnswered)], 4u);
  EXPECT_EQ(stats.grpc_queries[static_cast<size_t>(dns::Outcome::kRefused)], 1u);
  // Nothing went over the UDP/TCP sockets.
  EXPECT_EQ(stats.queries[static_cast<size_t>(dns::Outcome::kAnswered)], 0u);
}

TEST_F(DnsGrpcServiceTest, MalformedPacketsGetFormErrOrInvalidArgument) {
  // A header announcing a question that is not there: FORMERR, under the query's ID.
  std::vector<uint8_t> truncated = dns::testing::QueryBytes(0x4d2, "alice.mesh");
  truncated.resize(12 + 3);
  std::vector<uint8_t> reply;
  grpc::Status status = Query(truncated, &reply);
  ASSERT_TRUE(status.ok()) << status.error_message();
  absl::StatusOr<Message> decoded = dns::Decode(reply);
  ASSERT_TRUE(decoded.ok()) << decoded.status();
  EXPECT_EQ(decoded->header.id, 0x4d2);
  EXPECT_EQ(decoded->header.rcode, dns::Rcode::kFormErr);

  // Too short for a header: no DNS answer is possible.
  status = Query({0x01, 0x02, 0x03}, &reply);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_NE(status.error_message().find("12-byte header"), std::string::npos)
      << status.error_message();
  status = Query({}, &reply);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);

  // A response sent back: not answered (two servers must not loop).
  std::vector<uint8_t> response = dns::testing::QueryBytes(7, "alice.mesh");
  response[2] |= 0x80;
  status = Query(response, &reply);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_NE(status.error_message().find("QR set"), std::string::npos) << status.error_message();

  // The server still answers afterwards.
  EXPECT_EQ(QueryName("nobody.mesh").header.rcode, dns::Rcode::kNxDomain);
  const CentralDnsStats stats = central_->stats();
  EXPECT_EQ(stats.grpc_invalid, 3u);
  EXPECT_EQ(stats.grpc_queries[static_cast<size_t>(dns::Outcome::kFormErr)], 1u);
}

}  // namespace
}  // namespace tunnelmesh
