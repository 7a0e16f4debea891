#include "skinlesion/common/ood.h"

#include <cmath>

#include <gtest/gtest.h>

namespace skinlesion {
namespace {

TEST(OodTest, EnergyIsMinusLogSumExp) {
  const float z[3] = {1.0f, 2.0f, 3.0f};
  EXPECT_NEAR(EnergyScore(z, 3), -std::log(std::exp(1.0) + std::exp(2.0) + std::exp(3.0)), 1e-12);
  // Stable for large logits; a confident (large) logit lowers the energy.
  const float big[2] = {1000.0f, 0.0f};
  EXPECT_NEAR(EnergyScore(big, 2), -1000.0, 1e-9);
  const float flat[2] = {0.0f, 0.0f};
  EXPECT_GT(EnergyScore(flat, 2), EnergyScore(big, 2));
  const float bad[2] = {NAN, 0.0f};
  EXPECT_FALSE(IsOutOfDistribution(EnergyScore(bad, 2), {}));  // no threshold: no check
  EXPECT_TRUE(IsOutOfDistribution(EnergyScore(bad, 2), {.threshold = 0.0}));
}

TEST(OodTest, ThresholdRejectsAtMostTheRateOfInDistributionImages) {
  std::vector<double> scores;
  for (int i = 0; i < 200; ++i) scores.push_back(-10.0 + 0.05 * i);  // -10 .. -0.05
  const double t = *FitOodThreshold(scores, 0.02);
  int rejected = 0;
  for (double s : scores) rejected += IsOutOfDistribution(s, {.threshold = t});
  EXPECT_EQ(rejected, 4);  // floor(0.02 * 200)
  EXPECT_DOUBLE_EQ(*FitOodThreshold(scores, 0.0), scores.back());  // nothing rejected
  EXPECT_FALSE(FitOodThreshold({}, 0.01).has_value());
  EXPECT_FALSE(FitOodThreshold(scores, 1.0).has_value());
  EXPECT_FALSE(IsOutOfDistribution(-100.0, {.threshold = t}));
  EXPECT_TRUE(IsOutOfDistribution(5.0, {.threshold = t}));
}

// A threshold in units of each model's own training scores carries over between
// models whose scores differ by scale and offset.
TEST(OodTest, ScoreScaleCarriesAThresholdBetweenModels) {
  std::vector<double> a_train, b_train;
  for (int i = 0; i <= 100; ++i) {
    a_train.push_back(i);             // median 50, IQR 50
    b_train.push_back(10 + 3.0 * i);  // the same images on another model's scale
  }
  a_train.push_back(NAN);  // ignored
  const auto a = OodScoreScale::Of(a_train);
  const auto b = OodScoreScale::Of(b_train);
  ASSERT_TRUE(a.has_value() && b.has_value());
  EXPECT_DOUBLE_EQ(a->median, 50);
  EXPECT_DOUBLE_EQ(a->spread, 50);
  EXPECT_DOUBLE_EQ(b->median, 160);
  EXPECT_DOUBLE_EQ(b->spread, 150);
  EXPECT_DOUBLE_EQ(a->ToUnits(125), 1.5);
  EXPECT_DOUBLE_EQ(b->FromUnits(a->ToUnits(125)), 10 + 3.0 * 125);
  EXPECT_DOUBLE_EQ(b->ToUnits(b->FromUnits(-0.3)), -0.3);
  // Even quantiles interpolate: {1, 2, 3, 4}: median 2.5, IQR 3.25 - 1.75.
  const auto even = OodScoreScale::Of({4, 1, 3, 2});
  EXPECT_DOUBLE_EQ(even->median, 2.5);
  EXPECT_DOUBLE_EQ(even->spread, 1.5);
  EXPECT_DOUBLE_EQ(OodScoreScale::Of({7, 7, 7})->spread, 1.0);  // no spread: units of 1
  EXPECT_FALSE(OodScoreScale::Of({}).has_value());
  EXPECT_FALSE(OodScoreScale::Of({NAN, INFINITY}).has_value());
}

TEST(OodTest, MethodNamesRoundTrip) {
  for (OodMethod m : {OodMethod::kEnergy, OodMethod::kMahalanobis}) {
    EXPECT_EQ(ParseOodMethod(OodMethodName(m)), m);
  }
  EXPECT_FALSE(ParseOodMethod("knn").has_value());
}

}  // namespace
}  // namespace skinlesion
