// Which class a prediction names: the decision rule, one implementation for serving,
// the predictor, the CLI and evaluation (beside the referral rule, referral.h).
//
// Plain (the default, tau 0): the most probable class. Prior-adjusted: the class with
// the largest log p_c - tau * log prior_c, where prior_c is the share of class c in the
// training data. With tau 1 that is the Bayes decision for a population in which every
// class is equally common, which is what balanced accuracy (the ISIC challenge metric)
// scores; tau is fitted on validation data (FitDecisionTau), since a model trained
// with class weights is already partly adjusted. The probabilities themselves are not
// changed: they stay calibrated for the population the model was trained on, so a
// prior-adjusted answer may name a class that is not the most probable one (for
// example mel at 0.30 next to nv at 0.55), and the referral rule's close-call check then
// refers it (its margin is negative). LibTorch-free.
//
//   DecisionRule rule{.tau = 0.35, .prior = {0.03, 0.05, 0.11, 0.01, 0.1, 0.68, 0.02}};
//   int k = Decide(probabilities, rule);
#ifndef SKINLESION_COMMON_DECISION_H_
#define SKINLESION_COMMON_DECISION_H_

#include <cstddef>
#include <optional>
#include <vector>

#include "absl/types/span.h"

namespace skinlesion {

// The grid FitDecisionTau searches: 0, 0.05, ..., kMaxDecisionTau. Capped at 0.5: on
// held-out folds (docs/results.md, "Decision rule") every tau in (0, 0.5] raised balanced
// accuracy over the plain rule, while above it the gain turned into a loss on one round
// and accuracy fell fast (nv answers given away), yet a validation set of a few rare
// cases (9 df, 12 vasc in the bundled model's) can still prefer 0.7 by noise.
inline constexpr double kMaxDecisionTau = 0.5;
inline constexpr double kDecisionTauStep = 0.05;

struct DecisionRule {
  double tau = 0;             // 0: the most probable class.
  std::vector<double> prior;  // One share per class, each > 0 (needed when tau > 0).
  bool Adjusted() const { return tau > 0 && !prior.empty(); }
  bool operator==(const DecisionRule&) const = default;
};

// The class `rule` names for `probabilities` (ties: the lower index). When the rule
// is adjusted, prior.size() must be probabilities.size().
int Decide(absl::Span<const float> probabilities, const DecisionRule& rule);

// Class shares of `labels` (each in [0, num_classes)), with a class that does not occur
// counted as half an image so that its log stays finite.
std::vector<double> ClassPrior(const std::vector<int>& labels, int num_classes);

// Mean recall over the classes present among the samples `indices` names (all samples
// when null): balanced accuracy. -1 when no class is present; `present` (optional)
// receives their number. labels[i] must be in [0, num_classes).
double BalancedAccuracy(const std::vector<int>& labels, const std::vector<int>& predicted,
                        int num_classes, const std::vector<size_t>* indices = nullptr,
                        int* present = nullptr);

struct DecisionFit {
  double tau = 0;
  double balanced_accuracy_plain = 0;  // On the fitting data, tau 0.
  double balanced_accuracy = 0;        // On the fitting data, the fitted tau.
};

// The tau of the grid that maximises the balanced accuracy of Decide on (labels,
// probabilities) (ties: the smaller tau, so plain wins a tie). nullopt when the data
// have fewer than two classes or the sizes do not match.
std::optional<DecisionFit> FitDecisionTau(const std::vector<int>& labels,
                                          const std::vector<std::vector<float>>& probabilities,
                                          const std::vector<double>& prior);

}  // namespace skinlesion

#endif  // SKINLESION_COMMON_DECISION_H_
