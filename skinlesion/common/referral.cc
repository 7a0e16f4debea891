#include "skinlesion/common/referral.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "absl/strings/str_format.h"
#include "skinlesion/common/logging.h"

namespace skinlesion {

absl::string_view ReferRuleName(ReferRule rule) {
  switch (rule) {
    case ReferRule::kNone:
      return "";
    case ReferRule::kMalignancyRisk:
      return "malignancy_risk";
    case ReferRule::kLowConfidence:
      return "low_confidence";
    case ReferRule::kCloseCall:
      return "close_call";
  }
  return "";
}

double MalignancyRisk(absl::Span<const float> p, const LabelSet& classes) {
  SL_CHECK(static_cast<int>(p.size()) == classes.size())
      << p.size() << " probabilities for " << classes.size() << " classes";
  double risk = 0;
  for (int k = 0; k < classes.size(); ++k) {
    if (classes.IsMalignant(k)) risk += p[k];
  }
  return risk;
}

Summary Summarize(absl::Span<const float> p, const LabelSet& classes, const ReferralPolicy& policy,
                  const DecisionRule& decision) {
  Summary s;
  s.order.resize(p.size());
  std::iota(s.order.begin(), s.order.end(), 0);
  std::stable_sort(s.order.begin(), s.order.end(), [&](int a, int b) { return p[a] > p[b]; });
  s.top_class = Decide(p, decision);  // Plain: order[0] (the first of equal maxima).
  s.second_class = s.order[0] == s.top_class ? s.order[1] : s.order[0];
  s.confidence = p[s.top_class];
  s.margin = p[s.top_class] - p[s.second_class];
  const double risk = MalignancyRisk(p, classes);
  s.malignancy_risk = static_cast<float>(risk);
  if (policy.risk_threshold.has_value() && risk >= *policy.risk_threshold) {
    s.refer_rule = ReferRule::kMalignancyRisk;
    s.refer_reason = absl::StrFormat("malignancy risk %.2f >= %.2f (%.0f%% sensitivity point)", risk,
                                     *policy.risk_threshold, 100 * policy.target_sensitivity);
  } else if (s.confidence < policy.min_confidence) {
    s.refer_rule = ReferRule::kLowConfidence;
    s.refer_reason = absl::StrFormat("top probability %.2f is under %.2f", s.confidence,
                                     policy.min_confidence);
  } else if (s.margin < policy.min_margin) {
    s.refer_rule = ReferRule::kCloseCall;
    s.refer_reason = absl::StrFormat("%s and %s are too close (margin %.2f < %.2f)",
                                     classes.at(s.top_class).code,
                                     classes.at(s.second_class).code, s.margin,
                                     policy.min_margin);
  }
  s.refer = s.refer_rule != ReferRule::kNone;
  return s;
}

std::optional<double> FitRiskThreshold(const std::vector<int>& labels,
                                       const std::vector<double>& risks, double target_sensitivity,
                                       const LabelSet& classes) {
  if (!(target_sensitivity > 0 && target_sensitivity <= 1) || labels.size() != risks.size()) {
    return std::nullopt;
  }
  std::vector<double> malignant;
  for (size_t i = 0; i < labels.size(); ++i) {
    if (labels[i] >= 0 && labels[i] < classes.size() && classes.IsMalignant(labels[i]) &&
        std::isfinite(risks[i])) {
      malignant.push_back(risks[i]);
    }
  }
  if (malignant.empty()) return std::nullopt;
  // Highest risks first: the threshold is the k-th highest malignant risk, with k the
  // smallest count that reaches the target share.
  std::sort(malignant.begin(), malignant.end(), std::greater<>());
  const size_t n = malignant.size();
  size_t k = static_cast<size_t>(std::ceil(target_sensitivity * static_cast<double>(n) - 1e-9));
  k = std::clamp<size_t>(k, 1, n);
  return malignant[k - 1];
}

}  // namespace skinlesion
