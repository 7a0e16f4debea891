#include "skinlesion/train/losses.h"

#include <torch/torch.h>

#include <cmath>

#include "gtest/gtest.h"

namespace skinlesion::train {
namespace {

TEST(LossesTest, CrossEntropyByHand) {
  const auto logits = torch::tensor({{2.0f, 0.0f, 0.0f}, {0.0f, 1.0f, 0.0f}});
  const auto targets = torch::tensor({0, 2}, torch::kInt64);
  LossOptions o;
  o.kind = LossOptions::Kind::kCrossEntropy;
  const double l0 = -std::log(std::exp(2.0) / (std::exp(2.0) + 2));
  const double l1 = -std::log(1 / (2 + std::exp(1.0)));
  EXPECT_NEAR(ComputeLoss(logits, targets, o).item<double>(), (l0 + l1) / 2, 1e-6);
  // Class weights: weighted mean.
  o.kind = LossOptions::Kind::kWeightedCrossEntropy;
  o.class_weights = {1.0, 1.0, 3.0};
  EXPECT_NEAR(ComputeLoss(logits, targets, o).item<double>(), (l0 + 3 * l1) / 4, 1e-6);
  // Plain CE ignores the weights.
  o.kind = LossOptions::Kind::kCrossEntropy;
  EXPECT_NEAR(ComputeLoss(logits, targets, o).item<double>(), (l0 + l1) / 2, 1e-6);
}

TEST(LossesTest, LabelSmoothingByHand) {
  const auto logits = torch::tensor({{1.0f, 0.0f}});
  const auto targets = torch::tensor({0}, torch::kInt64);
  LossOptions o;
  o.kind = LossOptions::Kind::kCrossEntropy;
  o.label_smoothing = 0.2;
  const double lse = std::log(std::exp(1.0) + 1);
  const double lp0 = 1 - lse, lp1 = -lse;
  // q = (0.9, 0.1)
  EXPECT_NEAR(ComputeLoss(logits, targets, o).item<double>(), -(0.9 * lp0 + 0.1 * lp1), 1e-6);
}

TEST(LossesTest, FocalReducesToCrossEntropyAtGammaZero) {
  torch::manual_seed(0);
  const auto logits = torch::randn({16, 7});
  const auto targets = torch::randint(0, 7, {16}, torch::kInt64);
  LossOptions ce;
  ce.kind = LossOptions::Kind::kWeightedCrossEntropy;
  ce.class_weights = {1, 2, 3, 4, 5, 6, 7};
  LossOptions focal = ce;
  focal.kind = LossOptions::Kind::kFocal;
  focal.focal_gamma = 0;
  EXPECT_NEAR(ComputeLoss(logits, targets, focal).item<double>(),
              ComputeLoss(logits, targets, ce).item<double>(), 1e-5);
  ce.label_smoothing = focal.label_smoothing = 0.1;
  ce.class_weights = focal.class_weights = {};
  EXPECT_NEAR(ComputeLoss(logits, targets, focal).item<double>(),
              ComputeLoss(logits, targets, ce).item<double>(), 1e-5);
}

TEST(LossesTest, FocalByHandAndDownweightsEasyExamples) {
  const auto logits = torch::tensor({{3.0f, 0.0f}});
  const auto targets = torch::tensor({0}, torch::kInt64);
  LossOptions o;
  o.kind = LossOptions::Kind::kFocal;
  o.focal_gamma = 2;
  const double p = std::exp(3.0) / (std::exp(3.0) + 1);
  EXPECT_NEAR(ComputeLoss(logits, targets, o).item<double>(), -std::pow(1 - p, 2) * std::log(p), 1e-6);
  LossOptions ce;
  ce.kind = LossOptions::Kind::kCrossEntropy;
  EXPECT_LT(ComputeLoss(logits, targets, o).item<double>(),
            0.01 * ComputeLoss(logits, targets, ce).item<double>());
}

TEST(LossesTest, GradientsFlow) {
  auto logits = torch::randn({4, 7}, torch::requires_grad());
  const auto targets = torch::tensor({0, 1, 2, 3}, torch::kInt64);
  LossOptions o;
  o.kind = LossOptions::Kind::kFocal;
  ComputeLoss(logits, targets, o).backward();
  EXPECT_TRUE(logits.grad().defined());
  EXPECT_GT(logits.grad().abs().sum().item<double>(), 0);
}

// Logit adjustment by hand: CE of logits + tau * log(prior). A rare class's logit is
// pushed down during training, so its loss is larger than plain CE for the same logits.
TEST(LossesTest, LogitAdjustedByHand) {
  const auto logits = torch::tensor({{1.0f, 2.0f}, {0.5f, -0.5f}});
  const auto targets = torch::tensor({0, 1}, torch::kInt64);
  LossOptions o;
  o.kind = LossOptions::Kind::kLogitAdjusted;
  o.log_prior = {std::log(0.9), std::log(0.1)};
  o.logit_adjust_tau = 1.0;
  double expected = 0;
  const double z[2][2] = {{1.0 + std::log(0.9), 2.0 + std::log(0.1)}, {0.5 + std::log(0.9), -0.5 + std::log(0.1)}};
  const int y[2] = {0, 1};
  for (int i = 0; i < 2; ++i) {
    expected += -(z[i][y[i]] - std::log(std::exp(z[i][0]) + std::exp(z[i][1])));
  }
  EXPECT_NEAR(ComputeLoss(logits, targets, o).item<double>(), expected / 2, 1e-5);
  // tau = 0 is plain cross-entropy.
  o.logit_adjust_tau = 0;
  LossOptions ce;
  ce.kind = LossOptions::Kind::kCrossEntropy;
  EXPECT_NEAR(ComputeLoss(logits, targets, o).item<double>(),
              ComputeLoss(logits, targets, ce).item<double>(), 1e-6);
  // A prior of the wrong size is a programming error, reported by LibTorch.
  o.log_prior = {0.0};
  EXPECT_THROW(ComputeLoss(logits, targets, o), c10::Error);
}

TEST(LossesTest, ParseNames) {
  EXPECT_EQ(*ParseLossKind("focal"), LossOptions::Kind::kFocal);
  EXPECT_EQ(*ParseLossKind("logit_adjusted"), LossOptions::Kind::kLogitAdjusted);
  EXPECT_EQ(LossKindName(LossOptions::Kind::kLogitAdjusted), "logit_adjusted");
  EXPECT_EQ(LossKindName(*ParseLossKind("weighted_ce")), "weighted_ce");
  EXPECT_FALSE(ParseLossKind("mse").ok());
}

}  // namespace
}  // namespace skinlesion::train
