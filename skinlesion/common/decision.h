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
// refers it (its margin is negative).
//
// A per-class bias is added to those scores on top: a recall floor for one class
// (FitRecallBias). A screening aid should not trade melanomas for naevi the way
// balanced accuracy alone allows, so training fits the smallest melanoma bias that
// names at least a target share of the validation melanomas (config
// `recall_target`, default 0.7): the Bayes decision when missing that class costs
// more than a false alarm. LibTorch-free.
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

// The grid FitRecallBias searches: 0, 0.05, ..., kMaxRecallBias (a bias of 1.5 weighs
// the class's probability 4.5 times). Capped: on the cross-validation folds
// (docs/results.md, "A melanoma recall floor") balanced accuracy fell past ~1.
inline constexpr double kMaxRecallBias = 1.5;
inline constexpr double kRecallBiasStep = 0.05;

struct DecisionRule {
  double tau = 0;             // 0: the most probable class.
  std::vector<double> prior;  // One share per class, each > 0 (needed when tau > 0).
  std::vector<double> bias;   // Empty, or one per class: added to the class's score.
  bool HasBias() const;
  bool Adjusted() const { return (tau > 0 && !prior.empty()) || HasBias(); }
  bool operator==(const DecisionRule&) const = default;
};

// The class `rule` names for `probabilities` (ties: the lower index): the largest
// log p_c - tau * log prior_c + bias_c. A prior or bias whose size is not
// probabilities.size() is ignored.
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

struct RecallBiasFit {
  double bias = 0;           // For the target class; 0 when the rule already reaches it.
  bool reached = false;      // False: the target is out of reach, bias is kMaxRecallBias.
  int cases = 0;             // Images of the target class in the fitting data.
  double recall_before = 0;  // Its recall under `rule` as given.
  double recall = 0;         // ... with the bias.
  double balanced_accuracy_before = 0;
  double balanced_accuracy = 0;
};

// The smallest bias of the grid for class `target_class` that makes `rule` name at
// least `target_recall` of that class's images in (labels, probabilities), keeping the
// rule's tau, prior and other biases. nullopt when the data hold no image of the class,
// the class is out of range or the sizes do not match.
std::optional<RecallBiasFit> FitRecallBias(const std::vector<int>& labels,
                                           const std::vector<std::vector<float>>& probabilities,
                                           const DecisionRule& rule, int target_class,
                                           double target_recall);

// `rule` with `bias` for class `k` (the other classes' biases kept, or 0).
DecisionRule WithClassBias(DecisionRule rule, int num_classes, int k, double bias);

// `rule` without its class biases (the recall floor): tau and prior only.
DecisionRule WithoutBias(DecisionRule rule);

}  // namespace skinlesion

#endif  // SKINLESION_COMMON_DECISION_H_
