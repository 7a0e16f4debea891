#include "skinlesion/common/referral.h"

#include <gtest/gtest.h>

namespace skinlesion {
namespace {

const LabelSet& kHam = LabelSet::Ham10000();

// Index order: akiec, bcc, bkl, df, mel, nv, vasc.
TEST(ReferralTest, AOneInFourMelanomaIsReferredForItsRisk) {
  // The website case: nv 63%, mel 25%: confident enough, clear margin, yet risky.
  const std::vector<float> p = {0.01f, 0.01f, 0.045f, 0.005f, 0.25f, 0.63f, 0.05f};
  ReferralPolicy policy;
  Summary plain = Summarize(p, kHam, policy);  // No risk threshold: only the uncertainty rules.
  EXPECT_FALSE(plain.refer);
  EXPECT_EQ(plain.refer_rule, ReferRule::kNone);
  EXPECT_EQ(plain.top_class, 5);
  EXPECT_NEAR(plain.malignancy_risk, 0.27f, 1e-6);

  policy.risk_threshold = 0.18;
  Summary s = Summarize(p, kHam, policy);
  EXPECT_TRUE(s.refer);
  EXPECT_EQ(s.refer_rule, ReferRule::kMalignancyRisk);
  EXPECT_EQ(ReferRuleName(s.refer_rule), "malignancy_risk");
  EXPECT_EQ(s.refer_reason, "malignancy risk 0.27 >= 0.18 (90% sensitivity point)");
}

TEST(ReferralTest, UncertaintyRulesStillApplyBelowTheRiskThreshold) {
  ReferralPolicy policy;
  policy.risk_threshold = 0.5;
  policy.target_sensitivity = 0.95;
  // Low confidence.
  Summary s = Summarize(std::vector<float>{0.05f, 0.05f, 0.3f, 0.1f, 0.05f, 0.35f, 0.1f}, kHam, policy);
  EXPECT_EQ(s.refer_rule, ReferRule::kLowConfidence);
  EXPECT_EQ(s.refer_reason, "top probability 0.35 is under 0.50");
  // Close call between two benign classes.
  policy.min_confidence = 0.3;
  s = Summarize(std::vector<float>{0.0f, 0.0f, 0.46f, 0.0f, 0.04f, 0.5f, 0.0f}, kHam, policy);
  EXPECT_EQ(s.refer_rule, ReferRule::kCloseCall);
  EXPECT_EQ(s.refer_reason, "nv and bkl are too close (margin 0.04 < 0.10)");
  // Risk first when several rules fire; the target is quoted.
  s = Summarize(std::vector<float>{0.3f, 0.2f, 0.0f, 0.0f, 0.1f, 0.4f, 0.0f}, kHam, policy);
  EXPECT_EQ(s.refer_rule, ReferRule::kMalignancyRisk);
  EXPECT_EQ(s.refer_reason, "malignancy risk 0.60 >= 0.50 (95% sensitivity point)");
  // Confident, benign, far from the threshold: not referred.
  s = Summarize(std::vector<float>{0.0f, 0.0f, 0.02f, 0.0f, 0.03f, 0.95f, 0.0f}, kHam, policy);
  EXPECT_FALSE(s.refer);
  EXPECT_TRUE(s.refer_reason.empty());
  EXPECT_EQ(s.order[0], 5);
  EXPECT_EQ(s.order[1], 4);
}

TEST(ReferralTest, FitRiskThresholdReachesTheTargetSensitivity) {
  // Malignant labels: 0 (akiec), 1 (bcc), 4 (mel); benign: 2, 3, 5, 6.
  const std::vector<int> labels = {4, 4, 1, 0, 4, 5, 5, 2, 6, 4};
  const std::vector<double> risks = {0.9, 0.2, 0.6, 0.4, 0.05, 0.3, 0.01, 0.5, 0.1, 0.7};
  // Malignant risks, descending: 0.9, 0.7, 0.6, 0.4, 0.2, 0.05 (6 cases).
  EXPECT_DOUBLE_EQ(*FitRiskThreshold(labels, risks, 0.5, kHam), 0.6);  // 3 of 6
  EXPECT_DOUBLE_EQ(*FitRiskThreshold(labels, risks, 0.8, kHam), 0.2);  // ceil(4.8) = 5 of 6
  EXPECT_DOUBLE_EQ(*FitRiskThreshold(labels, risks, 1.0, kHam), 0.05);
  EXPECT_DOUBLE_EQ(*FitRiskThreshold(labels, risks, 0.01, kHam), 0.9);
  // The fitted threshold reaches the target on the data it was fitted on.
  for (double target : {0.3, 0.5, 0.66, 0.9, 1.0}) {
    const double t = *FitRiskThreshold(labels, risks, target, kHam);
    int caught = 0, malignant = 0;
    for (size_t i = 0; i < labels.size(); ++i) {
      if (!kHam.IsMalignant(labels[i])) continue;
      ++malignant;
      caught += risks[i] >= t;
    }
    EXPECT_GE(static_cast<double>(caught) / malignant, target) << target;
  }
  EXPECT_FALSE(FitRiskThreshold({5, 2}, {0.1, 0.2}, 0.9, kHam).has_value());  // No malignant case.
  EXPECT_FALSE(FitRiskThreshold(labels, risks, 0.0, kHam).has_value());
  EXPECT_FALSE(FitRiskThreshold(labels, risks, 1.5, kHam).has_value());
  EXPECT_FALSE(FitRiskThreshold({4}, {0.1, 0.2}, 0.9, kHam).has_value());  // Sizes differ.
}

TEST(ReferralTest, AConfidentTargetNeedsMoreThanTheTargetOnValidation) {
  EXPECT_NEAR(OneSidedZ(0.95), 1.6448536, 1e-6);
  EXPECT_NEAR(OneSidedZ(0.975), kZ95TwoSided, 1e-6);
  EXPECT_NEAR(OneSidedZ(0.5), 0.0, 1e-9);
  EXPECT_EQ(OneSidedZ(0.0), 0.0);
  EXPECT_EQ(OneSidedZ(1.0), 0.0);
  // Wilson bounds of 95 of 100 at z 1.96 (a textbook value: 0.888-0.978).
  const auto [lower, upper] = WilsonBounds(95, 100, kZ95TwoSided);
  EXPECT_NEAR(lower, 0.8883, 1e-4);
  EXPECT_NEAR(upper, 0.9785, 1e-4);
  EXPECT_EQ(WilsonBounds(0, 0, 1.96), std::make_pair(0.0, 0.0));

  // 100 malignant cases with risks 1.00, 0.99, ..., 0.01 and 100 benign ones.
  std::vector<int> labels;
  std::vector<double> risks;
  for (int i = 0; i < 100; ++i) {
    labels.push_back(i % 3 == 0 ? 1 : 4);
    risks.push_back((100 - i) / 100.0);
    labels.push_back(5);
    risks.push_back(0.5);
  }
  // The point estimate: 90 of 100 at or above the threshold.
  EXPECT_DOUBLE_EQ(*FitRiskThreshold(labels, risks, 0.9, kHam), (100 - 89) / 100.0);
  EXPECT_DOUBLE_EQ(*FitRiskThreshold(labels, risks, 0.9, kHam, 0.0), (100 - 89) / 100.0);
  // 95% confidence: 94 of 100 has a one-sided Wilson lower bound of 0.888, 95 of 100
  // 0.901; so 95 cases must be at or above the threshold.
  const double z = OneSidedZ(0.95);
  EXPECT_LT(WilsonBounds(94, 100, z).first, 0.9);
  EXPECT_GE(WilsonBounds(95, 100, z).first, 0.9);
  EXPECT_DOUBLE_EQ(*FitRiskThreshold(labels, risks, 0.9, kHam, 0.95), (100 - 94) / 100.0);
  // Higher confidence, lower threshold.
  EXPECT_LT(*FitRiskThreshold(labels, risks, 0.9, kHam, 0.99),
            *FitRiskThreshold(labels, risks, 0.9, kHam, 0.95));
  // Six malignant cases cannot show 90% at 95% confidence (25 would be needed): every
  // malignant case is referred, the lowest malignant risk is the threshold.
  EXPECT_DOUBLE_EQ(
      *FitRiskThreshold({4, 4, 1, 0, 4, 5, 5, 2, 6, 4},
                        {0.9, 0.2, 0.6, 0.4, 0.05, 0.3, 0.01, 0.5, 0.1, 0.7}, 0.9, kHam, 0.95),
      0.05);
  EXPECT_FALSE(FitRiskThreshold(labels, risks, 0.9, kHam, 1.0).has_value());
  EXPECT_FALSE(FitRiskThreshold(labels, risks, 0.9, kHam, -0.1).has_value());

  // The reason quotes the confidence when there is one.
  ReferralPolicy policy;
  policy.risk_threshold = 0.18;
  policy.sensitivity_confidence = 0.95;
  const std::vector<float> p = {0.01f, 0.01f, 0.045f, 0.005f, 0.25f, 0.63f, 0.05f};
  EXPECT_EQ(Summarize(p, kHam, policy).refer_reason,
            "malignancy risk 0.27 >= 0.18 (90% sensitivity point, 95% confidence)");
}

TEST(ReferralTest, AModelsOwnClassesAndGroupingDecideTheRisk) {
  // A 3-class clinic model whose manifest names "melanoma" malignant.
  const LabelSet classes =
      *LabelSet::Create({"benign", "melanoma", "other"}, std::vector<std::string>{"melanoma"});
  ReferralPolicy policy;
  policy.risk_threshold = 0.2;
  Summary s = Summarize(std::vector<float>{0.7f, 0.25f, 0.05f}, classes, policy);
  EXPECT_NEAR(s.malignancy_risk, 0.25f, 1e-6);
  EXPECT_EQ(s.refer_rule, ReferRule::kMalignancyRisk);
  EXPECT_EQ(s.order, (std::vector<int>{0, 1, 2}));
  // The close-call reason names the model's codes.
  policy.risk_threshold.reset();
  s = Summarize(std::vector<float>{0.52f, 0.0f, 0.48f}, classes, policy);
  EXPECT_EQ(s.refer_reason, "benign and other are too close (margin 0.04 < 0.10)");
  // The threshold is fitted on the set's own malignant class (index 1).
  EXPECT_DOUBLE_EQ(*FitRiskThreshold({1, 1, 0, 2}, {0.8, 0.3, 0.9, 0.9}, 1.0, classes), 0.3);
  // Without malignant classes (a binary model without grouping) there is no risk.
  const LabelSet plain = *LabelSet::Create({"a", "b"});
  EXPECT_EQ(MalignancyRisk(std::vector<float>{0.4f, 0.6f}, plain), 0.0);
  EXPECT_FALSE(FitRiskThreshold({0, 1}, {0.1, 0.2}, 0.9, plain).has_value());
}

}  // namespace
}  // namespace skinlesion
