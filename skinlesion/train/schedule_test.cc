#include "skinlesion/train/schedule.h"

#include <cmath>

#include "gtest/gtest.h"

namespace skinlesion::train {
namespace {

using Kind = ScheduleOptions::Kind;

TEST(ScheduleTest, CosineWarmRestartsMatchesTorch) {
  // torch CosineAnnealingWarmRestarts(T_0=2, T_mult=2, eta_min=0), base lr 1:
  // epochs 0..6 -> 1, .5, 1, .853553, .5, .146447, 1
  ScheduleOptions o;
  o.kind = Kind::kCosineWarmRestarts;
  o.t0 = 2;
  o.t_mult = 2;
  const double expected[] = {1, 0.5, 1, 0.8535533905932737, 0.5, 0.14644660940672627, 1};
  for (int e = 0; e < 7; ++e) EXPECT_NEAR(LearningRateFactor(o, e), expected[e], 1e-12) << e;
  o.t_mult = 1;
  o.t0 = 4;
  EXPECT_NEAR(LearningRateFactor(o, 2), 0.5, 1e-12);
  EXPECT_NEAR(LearningRateFactor(o, 4), 1.0, 1e-12);
  EXPECT_NEAR(LearningRateFactor(o, 6), 0.5, 1e-12);
  o.min_factor = 0.1;
  EXPECT_NEAR(LearningRateFactor(o, 2), 0.55, 1e-12);
}

TEST(ScheduleTest, WarmupCosine) {
  ScheduleOptions o;
  o.kind = Kind::kWarmupCosine;
  o.warmup_epochs = 2;
  o.warmup_start_factor = 0.0;
  o.total_epochs = 12;
  EXPECT_NEAR(LearningRateFactor(o, 0), 0.0, 1e-12);
  EXPECT_NEAR(LearningRateFactor(o, 1), 0.5, 1e-12);
  EXPECT_NEAR(LearningRateFactor(o, 2), 1.0, 1e-12);
  EXPECT_NEAR(LearningRateFactor(o, 7), 0.5, 1e-12);
  EXPECT_NEAR(LearningRateFactor(o, 12), 0.0, 1e-12);
  EXPECT_NEAR(LearningRateFactor(o, 20), 0.0, 1e-12);
}

TEST(ScheduleTest, StepAndConstant) {
  ScheduleOptions o;
  o.kind = Kind::kStep;
  o.step_epochs = 3;
  o.gamma = 0.5;
  EXPECT_DOUBLE_EQ(LearningRateFactor(o, 2.9), 1.0);
  EXPECT_DOUBLE_EQ(LearningRateFactor(o, 3), 0.5);
  EXPECT_DOUBLE_EQ(LearningRateFactor(o, 7), 0.25);
  o.kind = Kind::kConstant;
  EXPECT_DOUBLE_EQ(LearningRateFactor(o, 100), 1.0);
}

TEST(ScheduleTest, ParseAndValidate) {
  EXPECT_EQ(*ParseScheduleKind("warmup_cosine"), Kind::kWarmupCosine);
  EXPECT_FALSE(ParseScheduleKind("linear").ok());
  for (Kind k : {Kind::kConstant, Kind::kCosineWarmRestarts, Kind::kWarmupCosine, Kind::kStep}) {
    EXPECT_EQ(*ParseScheduleKind(ScheduleKindName(k)), k);
  }
  ScheduleOptions o;
  o.t_mult = 0.5;
  EXPECT_FALSE(ValidateSchedule(o).ok());
  o = ScheduleOptions{};
  o.kind = Kind::kWarmupCosine;
  o.warmup_epochs = 40;
  EXPECT_FALSE(ValidateSchedule(o).ok());
  EXPECT_TRUE(ValidateSchedule(ScheduleOptions{}).ok());
}

}  // namespace
}  // namespace skinlesion::train
