// The mesh zone's answers: positive (A, AAAA, aliases, PTR, SOA and NS at the apex), NODATA and
// NXDOMAIN with the SOA (RFC 2308), case-insensitivity, TTLs and the serial from the config,
// names outside the zone left to the caller, and members whose names cannot be served.
#include "lib/dns/zone.h"

#include <string>
#include <vector>

#include "gtest/gtest.h"

namespace tunnelmesh::dns {
namespace {

IpAddress Ip(const char* text) { return IpAddress::Parse(text).value(); }

ZoneConfig Config() {
  ZoneConfig c;
  c.domain = "mesh";
  c.ttl = 7;
  c.negative_ttl = 3;
  c.version = (uint64_t{1} << 32) + 42;
  c.ranges = {Prefix::Parse("100.64.0.0/10").value(), Prefix::Parse("fd7a:115c:a1e0::/48").value()};
  c.server_name = "ns.mesh";
  c.server_addresses = {Ip("100.64.0.1")};
  return c;
}

std::vector<ZoneMember> Members() {
  return {
      {"alice", {"git", "registry"}, {Ip("100.64.0.7"), Ip("fd7a:115c:a1e0::7")}},
      {"bob", {}, {Ip("100.64.1.9")}},
      {"bad..name", {}, {Ip("100.64.0.8")}},        // An empty label: not served.
      {"web-1.shop.pod", {}, {Ip("100.64.0.11")}},  // A pod: dotted labels.
      {"Alice", {}, {Ip("100.64.0.9")}},            // Clashes with alice.
      {"carol", {"bob"}, {Ip("100.64.0.10")}},      // Its alias clashes with a member.
  };
}

Message Query(std::string name, uint16_t type, bool edns = true) {
  Message q;
  q.header.id = 0x1234;
  q.header.rd = true;
  q.questions.push_back({std::move(name), type, kClassIn});
  if (edns) q.edns = Edns{4096, 0, false};
  return q;
}

class ZoneTest : public ::testing::Test {
 protected:
  Message Ask(std::string name, uint16_t type) {
    Message r;
    EXPECT_TRUE(zone_.Answer(Query(name, type), &r)) << name;
    EXPECT_EQ(r.header.id, 0x1234);
    EXPECT_TRUE(r.header.qr);
    EXPECT_TRUE(r.header.rd);
    EXPECT_FALSE(r.header.ra);
    EXPECT_EQ(r.questions.size(), 1u);
    return r;
  }
  // A negative answer: the SOA of `apex` in authority, with the negative TTL as TTL and minimum.
  void ExpectSoaAuthority(const Message& r, const std::string& apex) {
    ASSERT_EQ(r.authority.size(), 1u);
    EXPECT_EQ(r.authority[0].type, kTypeSoa);
    EXPECT_EQ(r.authority[0].name, apex);
    EXPECT_EQ(r.authority[0].ttl, 3u);
    const Soa& soa = std::get<Soa>(r.authority[0].data);
    EXPECT_EQ(soa.minimum, 3u);
    EXPECT_EQ(soa.serial, 42u);
    EXPECT_EQ(soa.mname, "ns.mesh");
  }

  Zone zone_{Config(), Members()};
};

TEST_F(ZoneTest, MembersAndAliasesHaveAddressRecords) {
  Message r = Ask("alice.mesh", kTypeA);
  EXPECT_EQ(r.header.rcode, Rcode::kNoError);
  EXPECT_TRUE(r.header.aa);
  ASSERT_EQ(r.answers.size(), 1u);
  EXPECT_EQ(r.answers[0], (Record{"alice.mesh", kTypeA, kClassIn, 7, Ip("100.64.0.7")}));
  EXPECT_TRUE(r.authority.empty());
  ASSERT_TRUE(r.edns.has_value());

  r = Ask("alice.mesh", kTypeAaaa);
  ASSERT_EQ(r.answers.size(), 1u);
  EXPECT_EQ(r.answers[0].data, RData(Ip("fd7a:115c:a1e0::7")));

  r = Ask("REGISTRY.Mesh", kTypeAny);  // Any case; ANY gives both families.
  ASSERT_EQ(r.answers.size(), 2u);
  EXPECT_EQ(r.answers[0].name, "REGISTRY.Mesh");  // The question's spelling.
  EXPECT_EQ(r.answers[1].type, kTypeAaaa);

  r = Ask("bob.mesh", kTypeA);
  ASSERT_EQ(r.answers.size(), 1u);
  EXPECT_EQ(r.answers[0].data, RData(Ip("100.64.1.9")));  // Not carol's alias.
}

TEST_F(ZoneTest, ExistingNamesOfOtherTypesAreNodata) {
  // bob has no IPv6 address: AAAA must not be NXDOMAIN, or caches hide its A record too.
  Message r = Ask("bob.mesh", kTypeAaaa);
  EXPECT_EQ(r.header.rcode, Rcode::kNoError);
  EXPECT_TRUE(r.header.aa);
  EXPECT_TRUE(r.answers.empty());
  ExpectSoaAuthority(r, "mesh");
  r = Ask("alice.mesh", kTypeTxt);
  EXPECT_EQ(r.header.rcode, Rcode::kNoError);
  ExpectSoaAuthority(r, "mesh");
  r = Ask("mesh", kTypeA);
  EXPECT_EQ(r.header.rcode, Rcode::kNoError);
  EXPECT_TRUE(r.answers.empty());
  ExpectSoaAuthority(r, "mesh");
}

TEST_F(ZoneTest, PodNamesAndTheNamesAboveThem) {
  Message r = Ask("web-1.shop.pod.mesh", kTypeA);
  EXPECT_EQ(r.header.rcode, Rcode::kNoError);
  ASSERT_EQ(r.answers.size(), 1u);
  EXPECT_EQ(r.answers[0].data, RData(Ip("100.64.0.11")));
  // The names between the pod and the apex exist without records.
  for (const char* name : {"shop.pod.mesh", "pod.mesh"}) {
    r = Ask(name, kTypeA);
    EXPECT_EQ(r.header.rcode, Rcode::kNoError) << name;
    EXPECT_TRUE(r.answers.empty());
    ExpectSoaAuthority(r, "mesh");
  }
  r = Ask("web-2.shop.pod.mesh", kTypeA);
  EXPECT_EQ(r.header.rcode, Rcode::kNxDomain);
}

TEST_F(ZoneTest, UnknownNamesAreNxdomainWithTheSoa) {
  for (const char* name : {"dave.mesh", "x.alice.mesh", "bad.name.mesh", "name.mesh"}) {
    Message r = Ask(name, kTypeA);
    EXPECT_EQ(r.header.rcode, Rcode::kNxDomain) << name;
    EXPECT_TRUE(r.header.aa);
    EXPECT_TRUE(r.answers.empty());
    ExpectSoaAuthority(r, "mesh");
  }
}

TEST_F(ZoneTest, ApexHasSoaAndNsWithGlue) {
  Message r = Ask("Mesh", kTypeSoa);
  ASSERT_EQ(r.answers.size(), 1u);
  EXPECT_EQ(r.answers[0].name, "Mesh");
  EXPECT_EQ(std::get<Soa>(r.answers[0].data).serial, 42u);
  EXPECT_EQ(std::get<Soa>(r.answers[0].data).rname, "hostmaster.mesh");

  r = Ask("mesh", kTypeNs);
  ASSERT_EQ(r.answers.size(), 1u);
  EXPECT_EQ(r.answers[0].data, RData(std::string("ns.mesh")));
  ASSERT_EQ(r.additional.size(), 1u);
  EXPECT_EQ(r.additional[0], (Record{"ns.mesh", kTypeA, kClassIn, 7, Ip("100.64.0.1")}));
  r = Ask("ns.mesh", kTypeA);
  ASSERT_EQ(r.answers.size(), 1u);
}

TEST_F(ZoneTest, ReverseZonesOfTheRanges) {
  Message r = Ask("7.0.64.100.in-addr.arpa", kTypePtr);
  EXPECT_EQ(r.header.rcode, Rcode::kNoError);
  ASSERT_EQ(r.answers.size(), 1u);
  EXPECT_EQ(r.answers[0],
            (Record{"7.0.64.100.in-addr.arpa", kTypePtr, kClassIn, 7, std::string("alice.mesh")}));
  r = Ask(ReverseName(Ip("fd7a:115c:a1e0::7")), kTypePtr);
  ASSERT_EQ(r.answers.size(), 1u);
  EXPECT_EQ(r.answers[0].data, RData(std::string("alice.mesh")));
  // 100.64.0.0/10 is served from the /8's apex.
  r = Ask("100.in-addr.arpa", kTypeSoa);
  ASSERT_EQ(r.answers.size(), 1u);
  // An address nobody has; a name between a PTR owner and the apex; another type.
  r = Ask("8.0.64.100.in-addr.arpa", kTypePtr);
  EXPECT_EQ(r.header.rcode, Rcode::kNxDomain);
  ExpectSoaAuthority(r, "100.in-addr.arpa");
  r = Ask("0.64.100.in-addr.arpa", kTypePtr);
  EXPECT_EQ(r.header.rcode, Rcode::kNoError);
  EXPECT_TRUE(r.answers.empty());
  r = Ask("7.0.64.100.in-addr.arpa", kTypeA);
  EXPECT_EQ(r.header.rcode, Rcode::kNoError);
  EXPECT_TRUE(r.answers.empty());
  ExpectSoaAuthority(r, "100.in-addr.arpa");
}

TEST_F(ZoneTest, NamesOutsideTheZoneAreLeftToTheCaller) {
  for (const char* name : {"example.com", "xmesh", "mesh.example", "7.0.0.10.in-addr.arpa",
                           "1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0."
                           "2.ip6.arpa"}) {
    Message r;
    r.header.id = 99;
    EXPECT_FALSE(zone_.Answer(Query(name, kTypeA), &r)) << name;
    EXPECT_EQ(r.header.id, 99) << "untouched";
    EXPECT_FALSE(zone_.Covers(name));
  }
  EXPECT_TRUE(zone_.Covers("anything.MESH"));
}

TEST_F(ZoneTest, MalformedQueries) {
  Message q = Query("alice.mesh", kTypeA);
  q.questions.push_back(q.questions[0]);
  Message r;
  ASSERT_TRUE(zone_.Answer(q, &r));
  EXPECT_EQ(r.header.rcode, Rcode::kFormErr);
  q = Query("alice.mesh", kTypeA);
  q.header.opcode = 2;  // STATUS
  ASSERT_TRUE(zone_.Answer(q, &r));
  EXPECT_EQ(r.header.rcode, Rcode::kNotImp);
  q = Query("alice.mesh", kTypeA);
  q.edns->version = 1;
  ASSERT_TRUE(zone_.Answer(q, &r));
  EXPECT_EQ(r.header.rcode, Rcode::kBadVers);
  ASSERT_TRUE(r.edns.has_value());
  q = Query("alice.mesh", kTypeA, /*edns=*/false);
  q.questions[0].qclass = 3;  // CHAOS
  ASSERT_TRUE(zone_.Answer(q, &r));
  EXPECT_EQ(r.header.rcode, Rcode::kRefused);
  EXPECT_FALSE(r.edns.has_value());
}

TEST_F(ZoneTest, SkippedMembersAreListed) {
  ASSERT_EQ(zone_.skipped().size(), 3u);
  EXPECT_NE(zone_.skipped()[0].find("bad..name"), std::string::npos);
  EXPECT_NE(zone_.skipped()[1].find("Alice"), std::string::npos);
  EXPECT_NE(zone_.skipped()[2].find("alias 'bob'"), std::string::npos);
  // alice, git, registry, bob, carol, the pod and the server name.
  EXPECT_EQ(zone_.name_count(), 7u);
}

TEST(ZoneAliasTest, AContestedAliasGoesToTheSameMemberWhateverTheMapOrder) {
  // Each agent lists itself first: dave's server and erin's must still agree on "db".
  const ZoneMember dave{"dave", {"db"}, {Ip("100.64.0.20")}};
  const ZoneMember erin{"erin", {"db"}, {Ip("100.64.0.21")}};
  for (const std::vector<ZoneMember>& members :
       {std::vector<ZoneMember>{erin, dave}, std::vector<ZoneMember>{dave, erin}}) {
    const Zone zone(Config(), members);
    Message r;
    ASSERT_TRUE(zone.Answer(Query("db.mesh", kTypeA), &r));
    ASSERT_EQ(r.answers.size(), 1u);
    EXPECT_EQ(r.answers[0].data, RData(Ip("100.64.0.20")));  // dave sorts first.
    ASSERT_EQ(zone.skipped().size(), 1u);
    EXPECT_NE(zone.skipped()[0].find("alias 'db'"), std::string::npos);
  }
}

TEST_F(ZoneTest, ResponsesSurviveTheWire) {
  for (uint16_t type : {kTypeA, kTypeAaaa, kTypeSoa, kTypeNs, kTypeTxt}) {
    Message r = Ask(type == kTypeSoa || type == kTypeNs ? "mesh" : "alice.mesh", type);
    absl::StatusOr<std::vector<uint8_t>> bytes = Encode(r, kClassicUdpSize);
    ASSERT_TRUE(bytes.ok()) << bytes.status();
    absl::StatusOr<Message> back = Decode(*bytes);
    ASSERT_TRUE(back.ok()) << back.status();
    EXPECT_EQ(*back, r) << TypeName(type);
  }
}

}  // namespace
}  // namespace tunnelmesh::dns
