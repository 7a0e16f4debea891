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

TEST(DecisionTest, AClassBiasAddsToTheScore) {
  // mel 0.30 vs nv 0.55: log(0.55 / 0.30) = 0.606, so a melanoma bias above it names mel.
  const std::vector<float> p = {0.01f, 0.01f, 0.05f, 0.01f, 0.30f, 0.55f, 0.07f};
  EXPECT_EQ(Decide(p, {.bias = {0, 0, 0, 0, 0.55, 0, 0}}), 5);
  EXPECT_EQ(Decide(p, {.bias = {0, 0, 0, 0, 0.65, 0, 0}}), 4);
  // With tau: mel needs 0.606 - tau * log(0.67 / 0.11) = 0.606 - 0.2 * 1.807 = 0.245.
  EXPECT_EQ(Decide(p, {.tau = 0.2, .prior = kPrior, .bias = {0, 0, 0, 0, 0.2, 0, 0}}), 5);
  EXPECT_EQ(Decide(p, {.tau = 0.2, .prior = kPrior, .bias = {0, 0, 0, 0, 0.3, 0, 0}}), 4);
  // A bias of the wrong size is ignored; an all-zero bias is no bias.
  EXPECT_EQ(Decide(p, {.bias = {0, 2}}), 5);
  EXPECT_FALSE((DecisionRule{.bias = {0, 0, 0}}).Adjusted());
  EXPECT_TRUE((DecisionRule{.bias = {0, 0.1, 0}}).Adjusted());
  EXPECT_EQ(WithClassBias({.tau = 0.2, .prior = kPrior}, 7, 4, 0.3).bias,
            (std::vector<double>{0, 0, 0, 0, 0.3, 0, 0}));
  EXPECT_TRUE(WithClassBias({}, 7, 4, 0).bias.empty());
}

// The screening case: a model that names too few melanomas.
TEST(DecisionTest, FitRecallBiasFindsTheSmallestBiasThatReachesTheTarget) {
  // 10 melanomas at P(mel) 0.10, 0.12, ..., 0.28 (the rest nv), 40 naevi at P(mel)
  // 0.02-0.21: plain names no melanoma; a bias b names a melanoma when
  // log(q / (1 - q)) + b > 0.
  std::vector<int> labels;
  std::vector<std::vector<float>> probs;
  auto add = [&](int label, float q) {
    labels.push_back(label);
    probs.push_back({0, 0, 0, 0, q, 1 - q, 0});
  };
  for (int i = 0; i < 10; ++i) add(4, 0.10f + 0.02f * i);
  for (int i = 0; i < 40; ++i) add(5, 0.02f + 0.005f * i);
  // Half of them: the 5th largest (q 0.20) must be named, b > log(0.8 / 0.2) = 1.386,
  // so the grid's 1.40.
  const auto half = FitRecallBias(labels, probs, {}, 4, 0.5);
  ASSERT_TRUE(half.has_value());
  EXPECT_TRUE(half->reached);
  EXPECT_EQ(half->cases, 10);
  EXPECT_DOUBLE_EQ(half->recall_before, 0.0);
  EXPECT_DOUBLE_EQ(half->balanced_accuracy_before, 0.5);
  EXPECT_NEAR(half->bias, 1.40, 1e-9);
  EXPECT_DOUBLE_EQ(half->recall, 0.5);
  EXPECT_GT(half->balanced_accuracy, half->balanced_accuracy_before);
  // 70% needs q 0.16 named: b > log(0.84 / 0.16) = 1.658, past the grid's cap; the fit
  // says so and stops at the cap.
  const auto out_of_reach = FitRecallBias(labels, probs, {}, 4, 0.7);
  ASSERT_TRUE(out_of_reach.has_value());
  EXPECT_FALSE(out_of_reach->reached);
  EXPECT_NEAR(out_of_reach->bias, kMaxRecallBias, 1e-9);
  EXPECT_DOUBLE_EQ(out_of_reach->recall, 0.5);
  DecisionRule rule = WithClassBias({}, 7, 4, half->bias);
  int named = 0;
  for (size_t i = 0; i < 10; ++i) named += Decide(probs[i], rule) == 4;
  EXPECT_EQ(named, 5);
  // Already reached: no bias.
  const auto zero = FitRecallBias(labels, probs, {}, 4, 0.0);
  ASSERT_TRUE(zero.has_value());
  EXPECT_EQ(zero->bias, 0);
  // Unusable: no image of the class, a class out of range, sizes that do not match.
  EXPECT_FALSE(FitRecallBias({5, 5}, {probs[10], probs[11]}, {}, 4, 0.7).has_value());
  EXPECT_FALSE(FitRecallBias(labels, probs, {}, 7, 0.7).has_value());
  EXPECT_FALSE(FitRecallBias({4}, probs, {}, 4, 0.7).has_value());
}

}  // namespace
}  // namespace skinlesion
