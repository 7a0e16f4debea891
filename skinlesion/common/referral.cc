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
    s.refer_reason = absl::StrFormat(
        "malignancy risk %.2f >= %.2f (%.0f%% sensitivity point%s)", risk, *policy.risk_threshold,
        100 * policy.target_sensitivity,
        policy.sensitivity_confidence > 0
            ? absl::StrFormat(", %.0f%% confidence", 100 * policy.sensitivity_confidence)
            : "");
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

double OneSidedZ(double confidence) {
  if (!(confidence > 0 && confidence < 1)) return 0;
  // Bisection on the upper tail 0.5 erfc(z / sqrt 2), decreasing in z.
  double lo = -40, hi = 40;
  for (int i = 0; i < 200; ++i) {
    const double mid = 0.5 * (lo + hi);
    if (0.5 * std::erfc(mid / std::sqrt(2.0)) > 1 - confidence) {
      lo = mid;
    } else {
      hi = mid;
    }
  }
  return 0.5 * (lo + hi);
}

std::pair<double, double> WilsonBounds(int k, int n, double z) {
  if (n <= 0) return {0, 0};
  const double nn = n, phat = static_cast<double>(k) / nn, z2 = z * z;
  const double centre = (phat + z2 / (2 * nn)) / (1 + z2 / nn);
  const double half = z * std::sqrt(phat * (1 - phat) / nn + z2 / (4 * nn * nn)) / (1 + z2 / nn);
  return {std::max(0.0, centre - half), std::min(1.0, centre + half)};
}

std::optional<double> FitRiskThreshold(const std::vector<int>& labels,
                                       const std::vector<double>& risks, double target_sensitivity,
                                       const LabelSet& classes, double confidence) {
  if (!(target_sensitivity > 0 && target_sensitivity <= 1) || labels.size() != risks.size() ||
      !(confidence >= 0 && confidence < 1)) {
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
  // smallest count whose share (or its lower bound) reaches the target.
  std::sort(malignant.begin(), malignant.end(), std::greater<>());
  const size_t n = malignant.size();
  size_t k = static_cast<size_t>(std::ceil(target_sensitivity * static_cast<double>(n) - 1e-9));
  k = std::clamp<size_t>(k, 1, n);
  if (confidence > 0) {
    const double z = OneSidedZ(confidence);
    while (k < n && WilsonBounds(static_cast<int>(k), static_cast<int>(n), z).first <
                        target_sensitivity - 1e-12) {
      ++k;
    }
  }
  return malignant[k - 1];
}

}  // namespace skinlesion
