// The referral rule (skinlesion/common/referral.h) measured on labelled data: what
// share of cases it sends to a specialist and how many malignant lesions and
// melanomas it catches, with 95% Wilson score intervals. LibTorch-free.
//
//   ReferralPolicy policy = ...;  // thresholds from the manifest, or fitted on val
//   ReferralEvaluation e = EvaluateReferral(labels, calibrated_probs, policy, classes);
//   nlohmann::json j = ReferralToJson(e);   // metrics.json "referral" (docs/metrics.md)
#ifndef SKINLESION_EVAL_REFERRAL_EVAL_H_
#define SKINLESION_EVAL_REFERRAL_EVAL_H_

#include <optional>
#include <string>
#include <vector>

#include "nlohmann/json.hpp"
#include "skinlesion/common/referral.h"
#include "skinlesion/eval/metrics.h"

namespace skinlesion::eval {

// A proportion k / n with its 95% Wilson score interval (0, 0, 0 when n == 0).
struct Proportion {
  int k = 0, n = 0;
  double value = 0, lower = 0, upper = 0;
};
Proportion WilsonInterval(int k, int n, double z = kZ95TwoSided);

struct ReferralEvaluation {
  ReferralPolicy policy;
  int n = 0;
  // The whole rule (risk, low confidence or close call).
  Proportion refer_rate;              // referred / all
  Proportion malignant_sensitivity;   // referred malignant / malignant
  Proportion benign_specificity;      // not referred benign / benign
  Proportion melanoma_sensitivity;    // referred melanomas / melanomas
  // The malignancy-risk rule alone (absent without a threshold).
  bool has_risk_rule = false;
  Proportion risk_rule_refer_rate;
  Proportion risk_rule_malignant_sensitivity;
  Proportion risk_rule_benign_specificity;
  Proportion risk_rule_melanoma_sensitivity;
};

// `policy` with its malignancy-risk threshold fitted on (labels, calibrated probs) for
// policy.target_sensitivity at policy.sensitivity_confidence (FitRiskThreshold);
// nullopt without a malignant case.
std::optional<ReferralPolicy> FitReferralPolicy(const std::vector<int>& labels,
                                                const std::vector<Probs>& probs,
                                                ReferralPolicy policy, const LabelSet& classes);

// The melanoma proportions are 0 of 0 for a label set without "mel".
// `decision` names each answer's class (its close-call margin depends on it).
ReferralEvaluation EvaluateReferral(const std::vector<int>& labels, const std::vector<Probs>& probs,
                                    const ReferralPolicy& policy, const LabelSet& classes,
                                    const DecisionRule& decision = {});

// {"value", "ci95": [lower, upper], "k", "n"}.
nlohmann::json ProportionToJson(const Proportion& p);
// The "referral" object of metrics.json: policy (min_confidence, min_margin,
// malignancy_risk_threshold or null, target_sensitivity, sensitivity_confidence) and
// every proportion above.
nlohmann::json ReferralToJson(const ReferralEvaluation& e);

}  // namespace skinlesion::eval

#endif  // SKINLESION_EVAL_REFERRAL_EVAL_H_
