#include "operator/kube/conditions.h"

#include "gtest/gtest.h"

namespace tunnelmesh::kube {
namespace {

const absl::Time kT0 = absl::FromUnixSeconds(1795000000);

TEST(SetCondition, AddsThenKeepsTransitionTimeWhileStatusHolds) {
  nlohmann::json status;
  EXPECT_TRUE(SetCondition(&status, "Ready", true, "Reconciled", "all good", 3, kT0));
  const nlohmann::json* ready = FindCondition(status, "Ready");
  ASSERT_NE(ready, nullptr);
  EXPECT_EQ((*ready)["status"], "True");
  EXPECT_EQ((*ready)["reason"], "Reconciled");
  EXPECT_EQ((*ready)["observedGeneration"], 3);
  EXPECT_EQ((*ready)["lastTransitionTime"], FormatRfc3339(kT0));

  // Same status, new message and generation: the transition time stays.
  EXPECT_TRUE(
      SetCondition(&status, "Ready", true, "Reconciled", "still good", 4, kT0 + absl::Minutes(1)));
  ready = FindCondition(status, "Ready");
  EXPECT_EQ((*ready)["message"], "still good");
  EXPECT_EQ((*ready)["lastTransitionTime"], FormatRfc3339(kT0));
  // Nothing new: no change reported.
  EXPECT_FALSE(
      SetCondition(&status, "Ready", true, "Reconciled", "still good", 4, kT0 + absl::Minutes(2)));

  // A flip moves the transition time; other conditions are left alone.
  EXPECT_TRUE(SetCondition(&status, "Degraded", ConditionStatus::kUnknown, "Probing", "", 4, kT0));
  EXPECT_TRUE(SetCondition(&status, "Ready", false, "Failed", "broken", 5, kT0 + absl::Minutes(3)));
  ready = FindCondition(status, "Ready");
  EXPECT_EQ((*ready)["status"], "False");
  EXPECT_EQ((*ready)["lastTransitionTime"], FormatRfc3339(kT0 + absl::Minutes(3)));
  EXPECT_EQ(status["conditions"].size(), 2u);
  EXPECT_EQ((*FindCondition(status, "Degraded"))["status"], "Unknown");
  EXPECT_EQ(FindCondition(status, "Missing"), nullptr);
}

TEST(SetCondition, RepairsMalformedStatus) {
  nlohmann::json status = {{"conditions", "garbage"}, {"meshIPs", {"10.99.0.1"}}};
  EXPECT_TRUE(SetCondition(&status, "Ready", true, "R", "m", 1, kT0));
  EXPECT_EQ(status["conditions"].size(), 1u);
  EXPECT_EQ(status["meshIPs"][0], "10.99.0.1");
}

TEST(Times, FormatsAndParses) {
  const absl::Time t = absl::FromUnixMicros(1795000000123456);
  EXPECT_EQ(FormatMicroTime(t), "2026-11-18T11:06:40.123456Z");
  EXPECT_EQ(FormatRfc3339(t), "2026-11-18T11:06:40Z");
  ASSERT_TRUE(ParseRfc3339("2026-11-18T11:06:40.123456Z").has_value());
  EXPECT_EQ(*ParseRfc3339("2026-11-18T11:06:40.123456Z"), t);
  EXPECT_EQ(*ParseRfc3339("2026-11-18T12:06:40+01:00"), absl::FromUnixSeconds(1795000000));
  EXPECT_FALSE(ParseRfc3339("yesterday").has_value());
  EXPECT_EQ(NowRfc3339().size(), 20u);
}

}  // namespace
}  // namespace tunnelmesh::kube
