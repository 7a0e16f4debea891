#include "skinlesion/eval/referral_eval.h"

#include <gtest/gtest.h>

namespace skinlesion::eval {
namespace {

TEST(WilsonTest, MatchesTheClosedForm) {
  // 8 of 10 at z = 1.96: [0.4902, 0.9433] (Wilson 1927; e.g. statsmodels proportion_confint).
  const Proportion p = WilsonInterval(8, 10);
  EXPECT_DOUBLE_EQ(p.value, 0.8);
  EXPECT_NEAR(p.lower, 0.4902, 1e-4);
  EXPECT_NEAR(p.upper, 0.9433, 1e-4);
  const Proportion all = WilsonInterval(5, 5);
  EXPECT_DOUBLE_EQ(all.upper, 1.0);
  EXPECT_LT(all.lower, 1.0);
  const Proportion none = WilsonInterval(0, 0);
  EXPECT_EQ(none.n, 0);
  EXPECT_EQ(none.value, 0);
}

Probs P(float akiec, float bcc, float bkl, float df, float mel, float nv, float vasc) {
  return {akiec, bcc, bkl, df, mel, nv, vasc};
}

TEST(ReferralEvalTest, CountsWhatTheRuleCatches) {
  // Labels: mel, mel, bcc, nv, nv, bkl.
  const std::vector<int> labels = {4, 4, 1, 5, 5, 2};
  const std::vector<Probs> probs = {
      P(0, 0, 0, 0, 0.25f, 0.75f, 0),      // melanoma that looks like nv: risk 0.25
      P(0, 0, 0, 0, 0.9f, 0.1f, 0),        // obvious melanoma
      P(0, 0.05f, 0.9f, 0, 0, 0.05f, 0),   // bcc missed: risk 0.05, confident bkl
      P(0, 0, 0, 0, 0.02f, 0.98f, 0),      // clear nv
      P(0, 0, 0, 0, 0.3f, 0.7f, 0),        // nv with risk 0.3: referred (false positive)
      P(0, 0, 0.46f, 0, 0, 0.54f, 0),      // bkl, close call: referred for the margin
  };
  ReferralPolicy policy;
  policy.risk_threshold = 0.2;
  const ReferralEvaluation e = EvaluateReferral(labels, probs, policy, LabelSet::Ham10000());
  EXPECT_EQ(e.n, 6);
  EXPECT_EQ(e.refer_rate.k, 4);  // 0, 1, 4 (risk), 5 (margin)
  EXPECT_EQ(e.malignant_sensitivity.k, 2);
  EXPECT_EQ(e.malignant_sensitivity.n, 3);
  EXPECT_EQ(e.benign_specificity.k, 1);  // only the clear nv is let go
  EXPECT_EQ(e.benign_specificity.n, 3);
  EXPECT_EQ(e.melanoma_sensitivity.k, 2);
  EXPECT_EQ(e.melanoma_sensitivity.n, 2);
  ASSERT_TRUE(e.has_risk_rule);
  EXPECT_EQ(e.risk_rule_refer_rate.k, 3);
  EXPECT_EQ(e.risk_rule_benign_specificity.k, 2);

  const nlohmann::json j = ReferralToJson(e);
  EXPECT_DOUBLE_EQ(j["policy"]["malignancy_risk_threshold"].get<double>(), 0.2);
  EXPECT_DOUBLE_EQ(j["melanoma_sensitivity"]["value"].get<double>(), 1.0);
  EXPECT_EQ(j["malignant_sensitivity"]["ci95"].size(), 2u);
  EXPECT_TRUE(j.contains("risk_rule"));

  // Without a threshold only the uncertainty rules refer: both melanomas are confident
  // answers (one of them wrong), so neither is referred; only the close call is.
  const ReferralEvaluation plain = EvaluateReferral(labels, probs, ReferralPolicy{}, LabelSet::Ham10000());
  EXPECT_FALSE(plain.has_risk_rule);
  EXPECT_EQ(plain.melanoma_sensitivity.k, 0);
  EXPECT_EQ(plain.refer_rate.k, 1);
  EXPECT_TRUE(ReferralToJson(plain)["policy"]["malignancy_risk_threshold"].is_null());
  EXPECT_FALSE(ReferralToJson(plain).contains("risk_rule"));
}

}  // namespace
}  // namespace skinlesion::eval
