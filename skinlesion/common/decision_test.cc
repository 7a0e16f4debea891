#include "skinlesion/common/decision.h"

#include <gtest/gtest.h>

#include "skinlesion/common/referral.h"

namespace skinlesion {
namespace {

// Index order: akiec, bcc, bkl, df, mel, nv, vasc; HAM10000-like shares.
const std::vector<double> kPrior = {0.033, 0.051, 0.11, 0.011, 0.11, 0.67, 0.014};

TEST(DecisionTest, PlainIsTheMostProbableClass) {
  const std::vector<float> p = {0.01f, 0.01f, 0.05f, 0.01f, 0.30f, 0.55f, 0.07f};
  EXPECT_EQ(Decide(p, {}), 5);
  EXPECT_EQ(Decide(p, {.tau = 0, .prior = kPrior}), 5);
  // Ties: the lower index.
  EXPECT_EQ(Decide(std::vector<float>{0.5f, 0.5f}, {}), 0);
}

TEST(DecisionTest, PriorAdjustmentFavoursTheRareClass) {
  // mel 0.30 vs nv 0.55: log(0.30/0.55) = -0.61; tau * log(0.67/0.11) = tau * 1.81,
  // so mel wins from tau 0.34 on.
  const std::vector<float> p = {0.01f, 0.01f, 0.05f, 0.01f, 0.30f, 0.55f, 0.07f};
  EXPECT_EQ(Decide(p, {.tau = 0.30, .prior = kPrior}), 5);
  EXPECT_EQ(Decide(p, {.tau = 0.40, .prior = kPrior}), 4);
  // A prior of the wrong size is ignored (plain), never read out of bounds.
  EXPECT_EQ(Decide(p, {.tau = 0.40, .prior = {0.5, 0.5}}), 5);
}

TEST(DecisionTest, SummarizeNamesTheDecidedClassAndRefersTheFlip) {
  const std::vector<float> p = {0.01f, 0.01f, 0.05f, 0.01f, 0.30f, 0.55f, 0.07f};
  const ReferralPolicy policy{.min_confidence = 0.2, .min_margin = 0.1};
  const Summary plain = Summarize(p, LabelSet::Ham10000(), policy);
  EXPECT_EQ(plain.top_class, 5);
  EXPECT_EQ(plain.second_class, 4);
  EXPECT_FALSE(plain.refer);
  const Summary adjusted =
      Summarize(p, LabelSet::Ham10000(), policy, {.tau = 0.5, .prior = kPrior});
  EXPECT_EQ(adjusted.top_class, 4);
  EXPECT_EQ(adjusted.second_class, 5);
  EXPECT_FLOAT_EQ(adjusted.confidence, 0.30f);
  EXPECT_NEAR(adjusted.margin, -0.25f, 1e-6);
  EXPECT_TRUE(adjusted.refer);
  EXPECT_EQ(adjusted.refer_rule, ReferRule::kCloseCall);
  EXPECT_EQ(adjusted.order[0], 5);  // The ranking stays by probability.
}

TEST(DecisionTest, ClassPriorCountsAndKeepsAbsentClassesFinite) {
  const std::vector<double> prior = ClassPrior({0, 0, 0, 1}, 3);
  ASSERT_EQ(prior.size(), 3u);
  EXPECT_DOUBLE_EQ(prior[0], 3 / 4.5);
  EXPECT_DOUBLE_EQ(prior[1], 1 / 4.5);
  EXPECT_DOUBLE_EQ(prior[2], 0.5 / 4.5);
}

TEST(DecisionTest, FitDecisionTauRaisesBalancedAccuracyOnSkewedScores) {
  // Two classes, 9:1, a model biased towards the common one: every rare case scores
  // 0.3-0.4 for its class, every common case 0.05-0.25.
  std::vector<int> labels;
  std::vector<std::vector<float>> probs;
  for (int i = 0; i < 90; ++i) {
    labels.push_back(0);
    const float q = 0.05f + 0.2f * (i % 10) / 9;
    probs.push_back({1 - q, q});
  }
  for (int i = 0; i < 10; ++i) {
    labels.push_back(1);
    const float q = 0.3f + 0.1f * i / 9;
    probs.push_back({1 - q, q});
  }
  const auto fit = FitDecisionTau(labels, probs, {0.9, 0.1});
  ASSERT_TRUE(fit.has_value());
  EXPECT_DOUBLE_EQ(fit->balanced_accuracy_plain, 0.5);  // Plain never names class 1.
  EXPECT_DOUBLE_EQ(fit->balanced_accuracy, 1.0);
  // Class 1 is named when log(q / (1 - q)) + tau log 9 > 0: every rare case from
  // tau > 0.386 (q 0.3), every common one until tau 0.5 (q 0.25); the fit takes the
  // smallest such tau of the grid.
  EXPECT_NEAR(fit->tau, 0.40, 1e-9);
  for (size_t i = 0; i < labels.size(); ++i) {
    EXPECT_EQ(Decide(probs[i], {.tau = fit->tau, .prior = {0.9, 0.1}}), labels[i]) << i;
  }
  // Already balanced scores: nothing to gain, tau stays 0.
  const auto none = FitDecisionTau({0, 1}, {{0.8f, 0.2f}, {0.2f, 0.8f}}, {0.5, 0.5});
  ASSERT_TRUE(none.has_value());
  EXPECT_EQ(none->tau, 0);
  // Unusable data.
  EXPECT_FALSE(FitDecisionTau({0, 0}, {{0.8f, 0.2f}, {0.7f, 0.3f}}, {0.5, 0.5}).has_value());
  EXPECT_FALSE(FitDecisionTau({0}, {{0.8f, 0.2f}, {0.7f, 0.3f}}, {0.5, 0.5}).has_value());
  EXPECT_FALSE(FitDecisionTau({0, 1}, {{0.8f, 0.2f}, {0.2f, 0.8f}}, {0.5, 0.0}).has_value());
}

}  // namespace
}  // namespace skinlesion
