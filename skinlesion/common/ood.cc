#include "skinlesion/common/ood.h"

#include <algorithm>
#include <cmath>
#include <limits>

namespace skinlesion {

double EnergyScore(const float* logits, int n) {
  if (n <= 0) return std::numeric_limits<double>::infinity();
  double m = -std::numeric_limits<double>::infinity();
  for (int k = 0; k < n; ++k) m = std::max(m, static_cast<double>(logits[k]));
  if (!std::isfinite(m)) return std::numeric_limits<double>::infinity();
  double sum = 0;
  for (int k = 0; k < n; ++k) sum += std::exp(static_cast<double>(logits[k]) - m);
  return -(m + std::log(sum));
}

const char* OodMethodName(OodMethod method) {
  switch (method) {
    case OodMethod::kEnergy: return "energy";
    case OodMethod::kMahalanobis: return "mahalanobis";
  }
  return "?";
}

std::optional<OodMethod> ParseOodMethod(std::string_view name) {
  if (name == "energy") return OodMethod::kEnergy;
  if (name == "mahalanobis") return OodMethod::kMahalanobis;
  return std::nullopt;
}

bool IsOutOfDistribution(double score, const OodPolicy& policy) {
  // A NaN score (broken logits or features) is not trusted either.
  return policy.threshold.has_value() && !(score <= *policy.threshold);
}

std::optional<double> FitOodThreshold(std::vector<double> scores, double reject_rate) {
  scores.erase(std::remove_if(scores.begin(), scores.end(), [](double s) { return !std::isfinite(s); }),
               scores.end());
  if (scores.empty() || !(reject_rate >= 0 && reject_rate < 1)) return std::nullopt;
  std::sort(scores.begin(), scores.end());
  const size_t n = scores.size();
  // Allow floor(rate * n) scores above the threshold.
  const size_t above = static_cast<size_t>(std::floor(reject_rate * static_cast<double>(n) + 1e-9));
  return scores[n - 1 - std::min(above, n - 1)];
}

std::optional<OodScoreScale> OodScoreScale::Of(std::vector<double> scores) {
  scores.erase(
      std::remove_if(scores.begin(), scores.end(), [](double s) { return !std::isfinite(s); }),
      scores.end());
  if (scores.empty()) return std::nullopt;
  std::sort(scores.begin(), scores.end());
  // Linear interpolation between order statistics (numpy's default quantile).
  auto quantile = [&](double q) {
    const double pos = q * static_cast<double>(scores.size() - 1);
    const size_t lo = static_cast<size_t>(std::floor(pos));
    const size_t hi = std::min(lo + 1, scores.size() - 1);
    return scores[lo] + (pos - static_cast<double>(lo)) * (scores[hi] - scores[lo]);
  };
  OodScoreScale scale;
  scale.median = quantile(0.5);
  const double iqr = quantile(0.75) - quantile(0.25);
  scale.spread = iqr > 0 ? iqr : 1.0;
  return scale;
}

}  // namespace skinlesion
