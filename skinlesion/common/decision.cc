#include "skinlesion/common/decision.h"

#include <algorithm>
#include <cmath>
#include <set>

namespace skinlesion {
double BalancedAccuracy(const std::vector<int>& labels, const std::vector<int>& predicted,
                        int num_classes, const std::vector<size_t>* indices, int* present) {
  std::vector<int> right(num_classes, 0), total(num_classes, 0);
  auto count = [&](size_t i) {
    ++total[labels[i]];
    right[labels[i]] += predicted[i] == labels[i];
  };
  if (indices != nullptr) {
    for (size_t i : *indices) count(i);
  } else {
    for (size_t i = 0; i < labels.size(); ++i) count(i);
  }
  double sum = 0;
  int k = 0;
  for (int c = 0; c < num_classes; ++c) {
    if (total[c] == 0) continue;
    sum += static_cast<double>(right[c]) / total[c];
    ++k;
  }
  if (present != nullptr) *present = k;
  return k == 0 ? -1 : sum / k;
}

bool DecisionRule::HasBias() const {
  for (double b : bias) {
    if (b != 0) return true;
  }
  return false;
}

int Decide(absl::Span<const float> p, const DecisionRule& rule) {
  const bool by_prior = rule.tau > 0 && rule.prior.size() == p.size();
  const bool by_bias = rule.bias.size() == p.size() && rule.HasBias();
  int best = 0;
  double best_score = -INFINITY;
  for (size_t k = 0; k < p.size(); ++k) {
    double score = static_cast<double>(p[k]);
    if (by_prior || by_bias) {
      score = std::log(std::max(score, 1e-30));
      if (by_prior) score -= rule.tau * std::log(rule.prior[k]);
      if (by_bias) score += rule.bias[k];
    }
    if (score > best_score) {
      best_score = score;
      best = static_cast<int>(k);
    }
  }
  return best;
}

std::vector<double> ClassPrior(const std::vector<int>& labels, int num_classes) {
  std::vector<double> counts(num_classes, 0.0);
  for (int y : labels) {
    if (y >= 0 && y < num_classes) counts[y] += 1;
  }
  double total = 0;
  for (double& c : counts) {
    if (c == 0) c = 0.5;
    total += c;
  }
  for (double& c : counts) c /= total;
  return counts;
}

std::optional<DecisionFit> FitDecisionTau(const std::vector<int>& labels,
                                          const std::vector<std::vector<float>>& probabilities,
                                          const std::vector<double>& prior) {
  const int num_classes = static_cast<int>(prior.size());
  if (labels.size() != probabilities.size() || num_classes < 2) return std::nullopt;
  std::set<int> present;
  for (size_t i = 0; i < labels.size(); ++i) {
    if (labels[i] < 0 || labels[i] >= num_classes || probabilities[i].size() != prior.size())
      return std::nullopt;
    present.insert(labels[i]);
  }
  for (double q : prior) {
    if (!(q > 0) || !std::isfinite(q)) return std::nullopt;
  }
  if (present.size() < 2) return std::nullopt;
  DecisionFit fit;
  std::vector<int> predicted(labels.size());
  const int steps = static_cast<int>(std::lround(kMaxDecisionTau / kDecisionTauStep));
  for (int s = 0; s <= steps; ++s) {
    const DecisionRule rule{.tau = s * kDecisionTauStep, .prior = prior};
    for (size_t i = 0; i < labels.size(); ++i) predicted[i] = Decide(probabilities[i], rule);
    const double score = BalancedAccuracy(labels, predicted, num_classes);
    if (s == 0) {
      fit.balanced_accuracy_plain = score;
      fit.balanced_accuracy = score;
    } else if (score > fit.balanced_accuracy + 1e-12) {
      fit.balanced_accuracy = score;
      fit.tau = rule.tau;
    }
  }
  return fit;
}

DecisionRule WithoutBias(DecisionRule rule) {
  rule.bias.clear();
  return rule;
}

DecisionRule WithClassBias(DecisionRule rule, int num_classes, int k, double bias) {
  rule.bias.resize(num_classes, 0.0);
  rule.bias[k] = bias;
  if (!rule.HasBias()) rule.bias.clear();
  return rule;
}

std::optional<RecallBiasFit> FitRecallBias(const std::vector<int>& labels,
                                           const std::vector<std::vector<float>>& probabilities,
                                           const DecisionRule& rule, int target_class,
                                           double target_recall) {
  if (labels.size() != probabilities.size() || probabilities.empty()) return std::nullopt;
  const int num_classes = static_cast<int>(probabilities[0].size());
  if (target_class < 0 || target_class >= num_classes) return std::nullopt;
  RecallBiasFit fit;
  for (size_t i = 0; i < labels.size(); ++i) {
    if (labels[i] < 0 || labels[i] >= num_classes ||
        static_cast<int>(probabilities[i].size()) != num_classes)
      return std::nullopt;
    fit.cases += labels[i] == target_class;
  }
  if (fit.cases == 0) return std::nullopt;
  const double base =
      rule.bias.size() == static_cast<size_t>(num_classes) ? rule.bias[target_class] : 0.0;
  std::vector<int> predicted(labels.size());
  // Recall of the target class and balanced accuracy with `extra` added to its bias.
  auto score = [&](double extra, double* balanced) {
    const DecisionRule r = WithClassBias(rule, num_classes, target_class, base + extra);
    int named = 0;
    for (size_t i = 0; i < labels.size(); ++i) {
      predicted[i] = Decide(probabilities[i], r);
      named += labels[i] == target_class && predicted[i] == target_class;
    }
    *balanced = BalancedAccuracy(labels, predicted, num_classes);
    return static_cast<double>(named) / fit.cases;
  };
  fit.recall_before = score(0, &fit.balanced_accuracy_before);
  const int steps = static_cast<int>(std::lround(kMaxRecallBias / kRecallBiasStep));
  for (int s = 0; s <= steps; ++s) {
    fit.bias = s * kRecallBiasStep;
    fit.recall = score(fit.bias, &fit.balanced_accuracy);
    if (fit.recall >= target_recall - 1e-12) {
      fit.reached = true;
      break;
    }
  }
  fit.bias += base;
  return fit;
}

}  // namespace skinlesion
