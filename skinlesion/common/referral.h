// The "see a specialist" rule, one implementation for serving, the predictor, the
// CLI and evaluation (issue: a screening aid must flag risky answers, not only
// unsure ones).
//
// A prediction is referred when ANY of these holds, checked in this order:
//   1. malignancy risk: the summed probability of the label set's malignant classes
//      (P(mel) + P(bcc) + P(akiec) for HAM10000; calibrated) >= risk_threshold,
//      a threshold fitted on validation data so that a target share of malignant
//      lesions (default 90%) is at or above it, by default with 95% confidence (the
//      one-sided Wilson lower bound of the validation share reaches the target;
//      FitRiskThreshold);
//   2. low confidence: the top probability < min_confidence;
//   3. close call: top minus second probability < min_margin.
// The reason names the rule that fired first, with its numbers, e.g.
//   "malignancy risk 0.26 >= 0.18 (90% sensitivity point)".
// LibTorch-free.
//
//   ReferralPolicy policy = ...;  // from the manifest's "refer" object
//   Summary s = Summarize(probabilities, LabelSet::Ham10000(), policy);
//   if (s.refer) std::cout << s.refer_reason;
#ifndef SKINLESION_COMMON_REFERRAL_H_
#define SKINLESION_COMMON_REFERRAL_H_

#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/string_view.h"
#include "absl/types/span.h"
#include "skinlesion/common/classes.h"
#include "skinlesion/common/decision.h"

namespace skinlesion {

// Defaults of the manifest's "refer" object (docs/metrics.md, "Referral").
inline constexpr double kDefaultReferMinConfidence = 0.5;
inline constexpr double kDefaultReferMinMargin = 0.1;
inline constexpr double kDefaultTargetMalignantSensitivity = 0.90;

enum class ReferRule { kNone, kMalignancyRisk, kLowConfidence, kCloseCall };
// "" / "malignancy_risk" / "low_confidence" / "close_call" (API field refer_rule).
absl::string_view ReferRuleName(ReferRule rule);

struct ReferralPolicy {
  double min_confidence = kDefaultReferMinConfidence;
  double min_margin = kDefaultReferMinMargin;
  // Rule 1; absent in manifests written before it existed (then only 2 and 3 apply).
  std::optional<double> risk_threshold;
  // What risk_threshold was fitted for, and what it reached on the validation data
  // (quoted in the reason and the model card).
  double target_sensitivity = kDefaultTargetMalignantSensitivity;
  // The one-sided confidence with which the validation data must show the target
  // (FitRiskThreshold); 0: the point estimate (manifests written before it existed).
  double sensitivity_confidence = 0;
};

struct Summary {
  int top_class = 0;     // The class the decision rule names (decision.h).
  int second_class = 1;  // The most probable other class.
  float confidence = 0;  // probabilities[top_class]
  float margin = 0;      // top minus second (negative when the rule named a less probable class)
  float malignancy_risk = 0;
  bool refer = false;
  ReferRule refer_rule = ReferRule::kNone;
  std::string refer_reason;
  std::vector<int> order;  // Classes by probability, highest first (stable).
};

// The sum over the label set's malignant group (P(mel) + P(bcc) + P(akiec) for
// HAM10000; 0 for a label set without malignant classes). probabilities.size() must be
// classes.size().
double MalignancyRisk(absl::Span<const float> probabilities, const LabelSet& classes);

// Ranks `probabilities` (ties: lower index first), names the class `decision` picks,
// sums the malignant group and applies `policy`. probabilities.size() must be
// classes.size().
Summary Summarize(absl::Span<const float> probabilities, const LabelSet& classes,
                  const ReferralPolicy& policy, const DecisionRule& decision = {});

// The default one-sided confidence of a fitted sensitivity target (train's
// `referral_confidence`, fit-thresholds' --sensitivity_confidence).
inline constexpr double kDefaultSensitivityConfidence = 0.95;

// The 95% two-sided z (the Wilson intervals of docs/metrics.md).
inline constexpr double kZ95TwoSided = 1.959963984540054;
// z with P(Z > z) = 1 - confidence for a standard normal Z (1.645 at 0.95);
// confidence in (0, 1), else 0.
double OneSidedZ(double confidence);
// The Wilson score bounds {lower, upper} of the proportion k / n at z ({0, 0} for n <= 0).
std::pair<double, double> WilsonBounds(int k, int n, double z);

// The largest threshold t such that the malignant cases (classes.IsMalignant(label))
// with risk >= t show `target_sensitivity`: with `confidence` 0, their share reaches it
// (the operating point on the validation ROC); with confidence in (0, 1), the one-sided
// Wilson lower bound of their share at that confidence reaches it, so a validation set
// of n malignant cases must show more than the target (at n = 188 and 0.95: 0.936 for
// 0.90), and when even all n cannot show it (n < 25 for 0.90 at 0.95) the threshold is
// the lowest malignant risk. risks[i] is sample i's malignancy risk. nullopt without any
// malignant case, for a target outside (0, 1] or a confidence outside [0, 1).
std::optional<double> FitRiskThreshold(const std::vector<int>& labels,
                                       const std::vector<double>& risks, double target_sensitivity,
                                       const LabelSet& classes, double confidence = 0);

}  // namespace skinlesion

#endif  // SKINLESION_COMMON_REFERRAL_H_
