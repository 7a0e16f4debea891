#include "skinlesion/eval/operating_point.h"

#include <cmath>
#include <random>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "skinlesion/eval/referral_eval.h"
#include "skinlesion/testing/testing.h"

namespace skinlesion::eval {
namespace {

using ::skinlesion::testing::StatusIs;
using ::testing::HasSubstr;

constexpr int kMel = 4, kNv = 5;

// Answers of a weak model on a HAM10000-like mix (most images nv): the true class gets
// `signal` on top of noise, and nv a head start, so that the plain rule names too many
// naevi and tau, the melanoma floor and the referral threshold all have work to do.
RoundHeldOut Answers(int fold, int n, double signal, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<double> noise(0, 1);
  const std::vector<double> shares = {0.03, 0.05, 0.11, 0.01, 0.11, 0.67, 0.02};
  std::discrete_distribution<int> label_of(shares.begin(), shares.end());
  RoundHeldOut r;
  r.fold = fold;
  for (int i = 0; i < n; ++i) {
    const int label = label_of(rng);
    std::vector<double> z(7);
    for (int c = 0; c < 7; ++c)
      z[c] = noise(rng) + (c == label ? signal : 0) + (c == kNv ? 1.5 : 0);
    double sum = 0;
    for (double& v : z) sum += v = std::exp(v);
    Probs p;
    for (double v : z) p.push_back(static_cast<float>(v / sum));
    r.labels.push_back(label);
    r.probs.push_back(std::move(p));
  }
  return r;
}

OperatingPointOptions Options(const std::vector<int>& prior_labels) {
  OperatingPointOptions o;
  o.prior = ClassPrior(prior_labels, 7);
  o.recall_class = kMel;
  o.recall_target = 0.7;
  o.referral.target_sensitivity = 0.9;
  return o;
}

TEST(OperatingPointTest, FitsTauThenTheFloorThenTheReferralThreshold) {
  const LabelSet& classes = LabelSet::Ham10000();
  const RoundHeldOut a = Answers(0, 1500, 2.0, 7);
  const OperatingPointOptions o = Options(a.labels);
  const DecisionRule given{.tau = 0.1, .prior = o.prior, .bias = {0, 0, 0, 0, 0, 0, 0.5}};
  const OperatingPoint op = FitOperatingPoint(a.labels, a.probs, classes, given, o);

  // The chain by hand: tau (the given rule's prior and biases replaced), the floor on
  // the tau-adjusted rule, the threshold.
  const std::optional<DecisionFit> tau = FitDecisionTau(a.labels, a.probs, o.prior);
  ASSERT_TRUE(tau.has_value());
  ASSERT_TRUE(op.tau.has_value());
  EXPECT_GT(tau->tau, 0);  // The data make the rule work.
  EXPECT_EQ(op.tau->tau, tau->tau);
  const DecisionRule adjusted{.tau = tau->tau, .prior = o.prior};
  const std::optional<RecallBiasFit> floor = FitRecallBias(a.labels, a.probs, adjusted, kMel, 0.7);
  ASSERT_TRUE(floor.has_value());
  ASSERT_TRUE(op.floor.has_value());
  EXPECT_GT(floor->bias, 0);
  EXPECT_EQ(op.floor->bias, floor->bias);
  EXPECT_EQ(op.decision, WithClassBias(adjusted, 7, kMel, floor->bias));
  EXPECT_EQ(op.decision.bias[6], 0);  // The given vasc bias is gone.
  const std::optional<ReferralPolicy> referral =
      FitReferralPolicy(a.labels, a.probs, o.referral, classes);
  ASSERT_TRUE(op.referral.has_value());
  EXPECT_EQ(op.referral->risk_threshold, referral->risk_threshold);

  // Without the floor, the rule is tau alone; without balanced_decision, the given one.
  OperatingPointOptions no_floor = o;
  no_floor.recall_target = 0;
  EXPECT_EQ(FitOperatingPoint(a.labels, a.probs, classes, given, no_floor).decision, adjusted);
  OperatingPointOptions keep = o;
  keep.balanced_decision = false;
  const OperatingPoint kept = FitOperatingPoint(a.labels, a.probs, classes, given, keep);
  EXPECT_EQ(kept.decision, given);
  EXPECT_FALSE(kept.tau.has_value());
  EXPECT_FALSE(kept.floor.has_value());
  EXPECT_EQ(kept.referral->risk_threshold, referral->risk_threshold);
  // Nor where tau cannot be fitted: one class only.
  std::vector<int> one_class(a.labels.size(), kMel);
  const OperatingPoint single = FitOperatingPoint(one_class, a.probs, classes, given, o);
  EXPECT_FALSE(single.tau.has_value());
  EXPECT_FALSE(single.floor.has_value());
  EXPECT_EQ(single.decision, given);
}

TEST(OperatingPointTest, LeavingOneRoundOutFitsOnTheOthersOnly) {
  const LabelSet& classes = LabelSet::Ham10000();
  // Round 1's model is far weaker: were its answers among the fitting data, the
  // threshold set for the others would be lower.
  std::vector<RoundHeldOut> rounds = {Answers(0, 1200, 2.5, 1), Answers(1, 1200, 0.5, 2),
                                      Answers(2, 1200, 2.5, 3)};
  std::vector<int> all;
  for (const RoundHeldOut& r : rounds) all.insert(all.end(), r.labels.begin(), r.labels.end());
  const OperatingPointOptions o = Options(all);
  auto check = LeaveOneRoundOut(rounds, classes, {}, o);
  ASSERT_TRUE(check.ok()) << check.status();
  ASSERT_EQ((*check)["rounds"].size(), 3u);
  for (const RoundHeldOut& held : rounds) {
    std::vector<int> labels;
    std::vector<Probs> probs;
    for (const RoundHeldOut& other : rounds) {
      if (other.fold == held.fold) continue;
      labels.insert(labels.end(), other.labels.begin(), other.labels.end());
      probs.insert(probs.end(), other.probs.begin(), other.probs.end());
    }
    const OperatingPoint op = FitOperatingPoint(labels, probs, classes, {}, o);
    const nlohmann::json& row = (*check)["rounds"][held.fold];
    EXPECT_EQ(row["fold"], held.fold);
    EXPECT_EQ(row["fitted_on_images"], labels.size());
    EXPECT_DOUBLE_EQ(row["risk_threshold"].get<double>(), *op.referral->risk_threshold);
    EXPECT_DOUBLE_EQ(row["tau"].get<double>(), op.decision.tau);
    EXPECT_DOUBLE_EQ(row["recall_bias"].get<double>(), op.floor->bias);
    const Metrics m = *ComputeMetrics(held.labels, held.probs, classes, op.decision);
    EXPECT_DOUBLE_EQ(row["balanced_accuracy"].get<double>(), m.balanced_accuracy);
    EXPECT_DOUBLE_EQ(row["melanoma_recall"].get<double>(), m.per_class[kMel].recall);
    const ReferralEvaluation e =
        EvaluateReferral(held.labels, held.probs, *op.referral, classes, op.decision);
    EXPECT_DOUBLE_EQ(row["referral/malignant_sensitivity/value"].get<double>(),
                     e.malignant_sensitivity.value);
    EXPECT_DOUBLE_EQ(row["referral/refer_rate/value"].get<double>(), e.refer_rate.value);
    EXPECT_EQ(row.contains("decision/without_floor/balanced_accuracy"), op.decision.HasBias());
  }
  // Round 1's threshold was fitted without its own weak answers, so higher than the
  // pooled one; round 0's with them and without its own strong ones, so lower.
  const OperatingPoint pooled = FitOperatingPoint(
      all,
      [&] {
        std::vector<Probs> p;
        for (const RoundHeldOut& r : rounds) p.insert(p.end(), r.probs.begin(), r.probs.end());
        return p;
      }(),
      classes, {}, o);
  EXPECT_GT((*check)["rounds"][1]["risk_threshold"].get<double>(),
            *pooled.referral->risk_threshold);
  EXPECT_LT((*check)["rounds"][0]["risk_threshold"].get<double>(),
            *pooled.referral->risk_threshold);
  const nlohmann::json& summary = (*check)["summary"]["balanced_accuracy"];
  EXPECT_EQ(summary["n"], 3);
  EXPECT_GT(summary["sd"].get<double>(), 0);
  EXPECT_THAT((*check)["markdown"].get<std::string>(), HasSubstr("| mean ± sd |"));
}

TEST(OperatingPointTest, LeavingOneRoundOutRefusesWhatItCannotCheck) {
  const LabelSet& classes = LabelSet::Ham10000();
  const OperatingPointOptions o = Options({0, 1, 2, 3, 4, 5, 6});
  const RoundHeldOut a = Answers(0, 300, 2.0, 1), b = Answers(1, 300, 2.0, 2);
  EXPECT_THAT(LeaveOneRoundOut({a}, classes, {}, o),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("at least two rounds")));
  EXPECT_THAT(LeaveOneRoundOut({a, a}, classes, {}, o),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("given twice")));
  RoundHeldOut short_b = b;
  short_b.probs.pop_back();
  EXPECT_THAT(LeaveOneRoundOut({a, short_b}, classes, {}, o),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("labels for")));
  RoundHeldOut benign = b;
  for (int& label : benign.labels) label = kNv;
  EXPECT_THAT(LeaveOneRoundOut({a, benign}, classes, {}, o),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("no malignant case")));
}

}  // namespace
}  // namespace skinlesion::eval
