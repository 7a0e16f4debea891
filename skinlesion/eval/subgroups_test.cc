#include "skinlesion/eval/subgroups.h"

#include <gtest/gtest.h>

namespace skinlesion::eval {
namespace {

Probs OneHot(int k, float p = 0.9f) {
  Probs out(kHam10000NumClasses, (1 - p) / (kHam10000NumClasses - 1));
  out[k] = p;
  return out;
}

TEST(SubgroupsTest, AgeBands) {
  EXPECT_EQ(AgeBand(std::nullopt), "unknown");
  EXPECT_EQ(AgeBand(5), "<30");
  EXPECT_EQ(AgeBand(30), "30-44");
  EXPECT_EQ(AgeBand(59.5), "45-59");
  EXPECT_EQ(AgeBand(74), "60-74");
  EXPECT_EQ(AgeBand(85), "75+");
}

// Group "a" is classified perfectly, group "b" misses every melanoma: the tables
// must show it, and the intervals must contain the estimates.
TEST(SubgroupsTest, FindsTheGroupTheModelFails) {
  std::vector<int> labels;
  std::vector<Probs> probs;
  std::vector<std::string> site;
  const int mel = 4, nv = 5;
  for (int i = 0; i < 40; ++i) {
    const bool is_mel = i % 4 == 0;
    labels.push_back(is_mel ? mel : nv);
    const bool in_b = i >= 20;
    site.push_back(in_b ? "b" : "a");
    probs.push_back(OneHot(is_mel && in_b ? nv : labels.back()));
  }
  ReferralPolicy policy;
  policy.risk_threshold = 0.5;
  const auto result = ComputeSubgroups(labels, probs, {{"site", site}}, policy, LabelSet::Ham10000(), {.bootstrap = 100, .seed = 1});
  ASSERT_EQ(result.size(), 1u);
  const auto& rows = result.at("site");
  ASSERT_EQ(rows.size(), 2u);
  EXPECT_EQ(rows[0].name, "a");
  EXPECT_EQ(rows[0].n, 20);
  EXPECT_DOUBLE_EQ(rows[0].balanced_accuracy, 1.0);
  EXPECT_DOUBLE_EQ(rows[0].melanoma_recall.value, 1.0);
  EXPECT_EQ(rows[0].malignant_referred.k, 5);  // risk 0.9 >= 0.5
  EXPECT_EQ(rows[1].name, "b");
  EXPECT_DOUBLE_EQ(rows[1].balanced_accuracy, 0.5);  // nv 1.0, mel 0.0
  EXPECT_EQ(rows[1].melanoma_recall.k, 0);
  EXPECT_EQ(rows[1].melanoma_recall.n, 5);
  EXPECT_EQ(rows[1].classes_present, 2);
  for (const GroupResult& g : rows) {
    EXPECT_LE(g.ba_lower, g.balanced_accuracy + 1e-12) << g.name;
    EXPECT_GE(g.ba_upper, g.balanced_accuracy - 1e-12) << g.name;
  }
  // Deterministic for a seed.
  const auto again = ComputeSubgroups(labels, probs, {{"site", site}}, policy, LabelSet::Ham10000(), {.bootstrap = 100, .seed = 1});
  EXPECT_DOUBLE_EQ(again.at("site")[1].ba_lower, rows[1].ba_lower);
  const nlohmann::json j = SubgroupsToJson(result);
  EXPECT_EQ(j["site"][1]["group"], "b");
  EXPECT_EQ(j["site"][1]["balanced_accuracy_ci95"].size(), 2u);
  // A grouping of the wrong length is skipped, not misread.
  EXPECT_TRUE(ComputeSubgroups(labels, probs, {{"short", {"a"}}}, policy, LabelSet::Ham10000()).empty());
}

}  // namespace
}  // namespace skinlesion::eval
