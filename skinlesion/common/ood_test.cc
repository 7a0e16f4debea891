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

TEST(OodTest, MethodNamesRoundTrip) {
  for (OodMethod m : {OodMethod::kEnergy, OodMethod::kMahalanobis}) {
    EXPECT_EQ(ParseOodMethod(OodMethodName(m)), m);
  }
  EXPECT_FALSE(ParseOodMethod("knn").has_value());
}

}  // namespace
}  // namespace skinlesion
