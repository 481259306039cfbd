// The Corefile editing of coredns_config.h on Corefiles as kubeadm and people write them.
#include "operator/dns/coredns_config.h"

#include <random>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace tunnelmesh::coredns {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;

constexpr char kRelease[] = "tunnelmesh/tunnelmesh";
constexpr char kUpstream[] = "10.96.0.20:53";

// The Corefile kubeadm (1.20 to 1.30) installs.
constexpr char kKubeadm[] = R"(.:53 {
    errors
    health {
       lameduck 5s
    }
    ready
    kubernetes cluster.local in-addr.arpa ip6.arpa {
       pods insecure
       fallthrough in-addr.arpa ip6.arpa
       ttl 30
    }
    prometheus :9153
    forward . /etc/resolv.conf {
       max_concurrent 1000
    }
    cache 30
    loop
    reload
    loadbalance
}
)";

// What the operator appends for one Mesh 10.99.0.0/16 with domain "mesh".
constexpr char kRegion[] =
    "# BEGIN tunnelmesh release tunnelmesh/tunnelmesh: managed by tunnelmesh-operator "
    "(dns.configureCoreDNS), edits between these lines are replaced\n"
    "mesh:53 99.10.in-addr.arpa:53 {\n"
    "    errors\n"
    "    cache 5\n"
    "    forward . 10.96.0.20:53\n"
    "}\n"
    "# END tunnelmesh release tunnelmesh/tunnelmesh\n";

Prefix P(const char* text) { return *Prefix::Parse(text); }

std::vector<ServerBlock> MeshBlocks() { return PlanServerBlocks({{"mesh", {P("10.99.0.0/16")}}}); }

std::string Apply(std::string_view corefile, const std::vector<ServerBlock>& blocks,
                  std::string_view upstream = kUpstream) {
  absl::StatusOr<CorefileEdit> edit = ApplyMarkedRegion(corefile, kRelease, blocks, upstream);
  EXPECT_TRUE(edit.ok()) << edit.status();
  return edit.ok() ? edit->corefile : "";
}

std::string Remove(std::string_view corefile) {
  absl::StatusOr<CorefileEdit> edit = RemoveMarkedRegion(corefile, kRelease);
  EXPECT_TRUE(edit.ok()) << edit.status();
  return edit.ok() ? edit->corefile : "";
}

TEST(ReverseZoneTest, RoundsDownToWholeLabels) {
  EXPECT_EQ(ReverseZone(P("10.99.0.0/16")), "99.10.in-addr.arpa");
  EXPECT_EQ(ReverseZone(P("10.99.0.0/20")), "99.10.in-addr.arpa");
  EXPECT_EQ(ReverseZone(P("10.99.7.0/24")), "7.99.10.in-addr.arpa");
  EXPECT_EQ(ReverseZone(P("100.64.0.0/10")), "100.in-addr.arpa");
  EXPECT_EQ(ReverseZone(P("10.1.2.3/32")), "3.2.1.10.in-addr.arpa");
  EXPECT_EQ(ReverseZone(P("fd99:99::/48")), "0.0.0.0.9.9.0.0.9.9.d.f.ip6.arpa");
  EXPECT_EQ(ReverseZone(P("fd99:99::/50")), "0.0.0.0.9.9.0.0.9.9.d.f.ip6.arpa");
  EXPECT_EQ(ReverseZone(P("fd00::/8")), "d.f.ip6.arpa");
  EXPECT_EQ(ReverseZone(P("f000::/4")), "f.ip6.arpa");
}

TEST(ReverseZoneTest, NeverAllOfTheReverseTree) {
  EXPECT_EQ(ReverseZone(P("10.0.0.0/7")), std::nullopt);
  EXPECT_EQ(ReverseZone(P("0.0.0.0/0")), std::nullopt);
  EXPECT_EQ(ReverseZone(P("fc00::/3")), std::nullopt);
}

TEST(PlanServerBlocksTest, OneBlockPerDomainWithItsReverseZones) {
  std::vector<ServerBlock> blocks = PlanServerBlocks({
      {"corp.example", {P("10.98.0.0/16"), P("fd98::/16")}},
      {"", {P("10.99.0.0/16")}},  // the default domain
      {"Mesh.", {P("10.99.128.0/17"), P("10.97.0.0/16")}},
  });
  ASSERT_EQ(blocks.size(), 2u);
  EXPECT_THAT(blocks[0].zones,
              ElementsAre("corp.example", "98.10.in-addr.arpa", "8.9.d.f.ip6.arpa"));
  // 10.99.128.0/17 rounds to the zone 10.99.0.0/16 has already: listed once.
  EXPECT_THAT(blocks[1].zones, ElementsAre("mesh", "97.10.in-addr.arpa", "99.10.in-addr.arpa"));
}

TEST(PlanServerBlocksTest, AZoneIsNeverInTwoBlocks) {
  std::vector<ServerBlock> blocks =
      PlanServerBlocks({{"a", {P("10.99.0.0/16")}}, {"b", {P("10.99.0.0/17")}}});
  ASSERT_EQ(blocks.size(), 2u);
  EXPECT_THAT(blocks[0].zones, ElementsAre("a", "99.10.in-addr.arpa"));
  EXPECT_THAT(blocks[1].zones, ElementsAre("b"));
  EXPECT_THAT(PlanServerBlocks({}), IsEmpty());
}

TEST(ApplyTest, AppendsTheRegionToAKubeadmCorefile) {
  absl::StatusOr<CorefileEdit> edit =
      ApplyMarkedRegion(kKubeadm, kRelease, MeshBlocks(), kUpstream);
  ASSERT_TRUE(edit.ok()) << edit.status();
  EXPECT_TRUE(edit->changed);
  EXPECT_THAT(edit->skipped, IsEmpty());
  EXPECT_EQ(edit->corefile, std::string(kKubeadm) + kRegion);
}

TEST(ApplyTest, IsIdempotent) {
  const std::string once = Apply(kKubeadm, MeshBlocks());
  absl::StatusOr<CorefileEdit> twice = ApplyMarkedRegion(once, kRelease, MeshBlocks(), kUpstream);
  ASSERT_TRUE(twice.ok());
  EXPECT_FALSE(twice->changed);
  EXPECT_EQ(twice->corefile, once);
}

TEST(ApplyTest, RemoveGivesBackTheOriginalByteForByte) {
  EXPECT_EQ(Remove(Apply(kKubeadm, MeshBlocks())), kKubeadm);
  absl::StatusOr<CorefileEdit> none = RemoveMarkedRegion(kKubeadm, kRelease);
  ASSERT_TRUE(none.ok());
  EXPECT_FALSE(none->changed);
  EXPECT_EQ(none->corefile, kKubeadm);
}

TEST(ApplyTest, ReplacesTheRegionWhereItStandsAndKeepsEverythingElse) {
  // The user moved our region to the top and added a block and comments around it.
  const std::string user_before = "# cluster DNS, edited by hand\n\n";
  const std::string user_after =
      "\nexample.org:53 {\n    forward . 192.0.2.53   # our resolver\n}\n";
  const std::string corefile =
      user_before + kRegion + user_after + std::string(kKubeadm) + "  \n";  // odd trailing blanks
  const std::vector<ServerBlock> two =
      PlanServerBlocks({{"mesh", {P("10.99.0.0/16")}}, {"corp", {P("10.98.0.0/16")}}});
  const std::string updated = Apply(corefile, two, "10.96.7.7:53");
  ASSERT_TRUE(updated.starts_with(user_before + "# BEGIN tunnelmesh release"));
  EXPECT_TRUE(updated.ends_with("# END tunnelmesh release tunnelmesh/tunnelmesh\n" + user_after +
                                kKubeadm + "  \n"))
      << updated;
  EXPECT_THAT(updated, HasSubstr("corp:53 98.10.in-addr.arpa:53 {\n    errors\n    cache 5\n"
                                 "    forward . 10.96.7.7:53\n}\nmesh:53 99.10.in-addr.arpa:53 {"));
  EXPECT_EQ(Remove(updated), user_before + user_after + kKubeadm + "  \n");
}

TEST(ApplyTest, NoBlocksRemovesTheRegion) {
  const std::string with = Apply(kKubeadm, MeshBlocks());
  EXPECT_EQ(Apply(with, {}), kKubeadm);
  absl::StatusOr<CorefileEdit> nothing = ApplyMarkedRegion(kKubeadm, kRelease, {}, kUpstream);
  ASSERT_TRUE(nothing.ok());
  EXPECT_FALSE(nothing->changed);
}

TEST(ApplyTest, TextWithoutAFinalLineBreakGetsOne) {
  const std::string corefile = ".:53 {\n    forward . 8.8.8.8\n}";
  const std::string applied = Apply(corefile, MeshBlocks());
  EXPECT_EQ(applied, corefile + "\n" + kRegion);
  EXPECT_EQ(Remove(applied), corefile + "\n");
  EXPECT_EQ(Apply("", MeshBlocks()), kRegion);
}

TEST(ApplyTest, KeepsWindowsLineBreaks) {
  const std::string corefile = ".:53 {\r\n    forward . 8.8.8.8\r\n}\r\n";
  const std::string applied = Apply(corefile, MeshBlocks());
  EXPECT_THAT(applied, HasSubstr("}\r\n# END tunnelmesh release tunnelmesh/tunnelmesh\r\n"));
  EXPECT_EQ(applied.find("\n"), applied.find("\r\n") + 1);
  EXPECT_EQ(Remove(applied), corefile);
  EXPECT_EQ(Apply(applied, MeshBlocks()), applied);
}

TEST(ApplyTest, OtherReleasesRegionsAreUserText) {
  // Release "tunnelmesh/tunnel" is not "tunnelmesh/tunnelmesh", and "other/tunnelmesh" neither.
  const std::string theirs =
      "# BEGIN tunnelmesh release tunnelmesh/tunnel\ncorp:53 {\n    forward . 10.96.1.1:53\n}\n"
      "# END tunnelmesh release tunnelmesh/tunnel\n"
      "# BEGIN tunnelmesh release other/tunnelmesh\n# END tunnelmesh release other/tunnelmesh\n";
  const std::string corefile = std::string(kKubeadm) + theirs;
  const std::string applied = Apply(corefile, MeshBlocks());
  EXPECT_EQ(applied, corefile + kRegion);
  EXPECT_EQ(Remove(applied), corefile);
}

TEST(ApplyTest, BrokenMarkersAreLeftForAPerson) {
  const std::string begin = BeginMarker(kRelease) + "\n";
  const std::string end = EndMarker(kRelease) + "\n";
  const std::string block = "mesh:53 {\n    forward . 10.96.0.20:53\n}\n";
  for (const std::string& corefile : {
           std::string(kKubeadm) + begin + block,               // END deleted
           std::string(kKubeadm) + block + end,                 // BEGIN deleted
           std::string(kKubeadm) + end + block + begin,         // swapped
           std::string(kKubeadm) + begin + begin + block + end  // pasted twice
       }) {
    absl::StatusOr<CorefileEdit> applied =
        ApplyMarkedRegion(corefile, kRelease, MeshBlocks(), kUpstream);
    ASSERT_FALSE(applied.ok()) << corefile;
    EXPECT_EQ(applied.status().code(), absl::StatusCode::kFailedPrecondition);
    EXPECT_THAT(std::string(applied.status().message()),
                HasSubstr("\"# BEGIN tunnelmesh release tunnelmesh/tunnelmesh\""));
    EXPECT_THAT(std::string(applied.status().message()), HasSubstr("fix the markers by hand"));
    EXPECT_EQ(RemoveMarkedRegion(corefile, kRelease).status().code(),
              absl::StatusCode::kFailedPrecondition);
  }
}

TEST(ApplyTest, MarkersMayBeIndentedAndFollowedByAComment) {
  const std::string corefile = std::string(kKubeadm) +
                               "  # BEGIN tunnelmesh release tunnelmesh/tunnelmesh  \n"
                               "mesh:53 {\n}\n"
                               "\t# END tunnelmesh release tunnelmesh/tunnelmesh: old comment\n";
  EXPECT_EQ(Apply(corefile, MeshBlocks()), std::string(kKubeadm) + kRegion);
}

TEST(ApplyTest, ARegionInsideABlockIsRefused) {
  const std::string corefile = std::string(".:53 {\n    errors\n") + kRegion + "}\n";
  absl::StatusOr<CorefileEdit> edit =
      ApplyMarkedRegion(corefile, kRelease, MeshBlocks(), kUpstream);
  ASSERT_FALSE(edit.ok());
  EXPECT_EQ(edit.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(std::string(edit.status().message()), HasSubstr("inside a block"));
  // Nor is one appended after a block that is never closed.
  edit = ApplyMarkedRegion(".:53 {\n    errors\n", kRelease, MeshBlocks(), kUpstream);
  ASSERT_FALSE(edit.ok());
  EXPECT_THAT(std::string(edit.status().message()), HasSubstr("not closed"));
}

TEST(ApplyTest, ZonesTheUserServesAreLeftOut) {
  const std::string corefile = std::string(kKubeadm) +
                               "Mesh.:53 {\n    forward . 10.96.9.9\n}\n"
                               "10.99.0.0/16 {\n    whoami\n}\n";
  absl::StatusOr<CorefileEdit> edit = ApplyMarkedRegion(
      corefile, kRelease,
      PlanServerBlocks({{"mesh", {P("10.99.0.0/16"), P("fd99::/16")}}, {"corp", {}}}), kUpstream);
  ASSERT_TRUE(edit.ok()) << edit.status();
  EXPECT_THAT(edit->skipped, ElementsAre("mesh", "99.10.in-addr.arpa"));
  EXPECT_THAT(edit->corefile, HasSubstr("\ncorp:53 {\n"));
  EXPECT_THAT(edit->corefile, HasSubstr("\n9.9.d.f.ip6.arpa:53 {\n"));
  // Every zone taken: no region at all.
  absl::StatusOr<CorefileEdit> none =
      ApplyMarkedRegion(corefile, kRelease, MeshBlocks(), kUpstream);
  ASSERT_TRUE(none.ok());
  EXPECT_FALSE(none->changed);
  EXPECT_THAT(none->skipped, ElementsAre("mesh", "99.10.in-addr.arpa"));
}

TEST(TopLevelZonesTest, KeysAsCoreDnsReadsThem) {
  EXPECT_THAT(TopLevelZones(kKubeadm), ElementsAre("."));
  const char* corefile = R"(# mesh:53 { is a comment
(snippet) {
    errors
}
import snippet
a.example:53, B.Example.:53 {
}
dns://c.example c.example:1053 tls://d.example:53 grpc://e.example {
    kubernetes f.example {
    }
}
"g.example" # comment {
h.example,
  i.example {
}
10.1.0.0/16:53 10.2.0.0/17 fd00::/8 fd01::/9:53 {
}
j.example: {
}
)";
  EXPECT_THAT(TopLevelZones(corefile),
              ElementsAre("a.example", "b.example", "c.example", "h.example", "i.example",
                          "1.10.in-addr.arpa", "d.f.ip6.arpa"));
}

TEST(TopLevelZonesTest, SurvivesGarbage) {
  for (const char* text :
       {"", "{", "}", "}}}{", "\"unterminated {", "`x", "a {\n b {\n", "#", "\\\"", ":53 {}",
        "::: {", "/ {", "a:99999999999999999999 {", "[::1]:53 {"}) {
    (void)TopLevelZones(text);
  }
}

// Random Corefiles built from the tokens that matter: the invariants of the header hold.
TEST(ApplyTest, InvariantsOnRandomCorefiles) {
  const std::vector<std::string> pieces = {".:53 {\n",
                                           "mesh:53 {\n",
                                           "corp {\n",
                                           "}\n",
                                           "    forward . 8.8.8.8\n",
                                           "# c\n",
                                           "\n",
                                           "\"q {\"\n",
                                           "a,\n",
                                           "b {\n",
                                           "\r\n",
                                           BeginMarker(kRelease) + "\n",
                                           EndMarker(kRelease) + "\n",
                                           "x"};
  std::mt19937 rng(7);
  const std::vector<ServerBlock> blocks =
      PlanServerBlocks({{"mesh", {P("10.99.0.0/16")}}, {"corp", {P("fd00::/16")}}});
  for (int i = 0; i < 3000; ++i) {
    std::string corefile;
    const int n = rng() % 12;
    for (int j = 0; j < n; ++j) corefile += pieces[rng() % pieces.size()];
    absl::StatusOr<CorefileEdit> edit = ApplyMarkedRegion(corefile, kRelease, blocks, kUpstream);
    if (!edit.ok()) {
      EXPECT_EQ(edit.status().code(), absl::StatusCode::kFailedPrecondition) << corefile;
      continue;
    }
    absl::StatusOr<CorefileEdit> again =
        ApplyMarkedRegion(edit->corefile, kRelease, blocks, kUpstream);
    ASSERT_TRUE(again.ok()) << edit->corefile;
    EXPECT_FALSE(again->changed) << corefile;
    const bool had_region = corefile.find(BeginMarker(kRelease)) != std::string::npos;
    if (!had_region && (corefile.empty() || corefile.back() == '\n')) {
      EXPECT_EQ(Remove(edit->corefile), corefile);
    }
  }
}

}  // namespace
}  // namespace tunnelmesh::coredns
