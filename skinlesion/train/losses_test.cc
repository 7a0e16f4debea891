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

TEST(LossesTest, DistillationByHand) {
  // One row, two classes: KL(q^T || softmax(z / T)) * T^2 written out.
  const auto logits = torch::tensor({{1.0f, -1.0f}});
  const auto q = torch::tensor({{0.2f, 0.8f}});
  for (const double t : {1.0, 2.0, 4.0}) {
    const double a = std::pow(0.2, 1 / t), b = std::pow(0.8, 1 / t);
    const double q0 = a / (a + b), q1 = b / (a + b);
    const double lse = std::log(std::exp(1 / t) + std::exp(-1 / t));
    const double p0 = 1 / t - lse, p1 = -1 / t - lse;
    const double kl = q0 * (std::log(q0) - p0) + q1 * (std::log(q1) - p1);
    EXPECT_NEAR(DistillationLoss(logits, q, t).item<double>(), kl * t * t, 1e-5) << "T " << t;
  }
  // The same value pinned for the Python reference's distillation_loss (cli_ml_test.sh).
  EXPECT_NEAR(DistillationLoss(logits, q, 2.0).item<double>(), 1.3736567435603062, 1e-5);
}

TEST(LossesTest, DistillationIsZeroOnTheTeachersLogitsAndPullsTowardsThem) {
  torch::manual_seed(3);
  const auto teacher_logits = torch::randn({5, 7});
  auto q = torch::softmax(teacher_logits, 1);
  q.index_put_({0, 2}, 0.0f);  // A teacher sure a class is absent: finite, not NaN.
  q = q / q.sum(1, true);
  EXPECT_NEAR(DistillationLoss(torch::log(q.clamp_min(1e-12)) + 5.0, q, 2.0).item<double>(), 0,
              1e-5);
  const auto student = torch::zeros({5, 7}, torch::requires_grad());
  const auto loss = DistillationLoss(student, q, 2.0);
  EXPECT_TRUE(std::isfinite(loss.item<double>()));
  EXPECT_GT(loss.item<double>(), 0);
  loss.backward();
  // From uniform logits the gradient step raises what the teacher favours most.
  const auto step = -student.grad();
  EXPECT_TRUE(torch::equal(step.argmax(1), q.argmax(1)));
  EXPECT_THROW(DistillationLoss(student, q.narrow(1, 0, 6), 2.0), c10::Error);
  EXPECT_THROW(DistillationLoss(student, q, 0.0), c10::Error);
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
