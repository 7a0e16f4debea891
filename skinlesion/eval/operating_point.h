// The operating point fitted on held-out answers (calibrated probabilities with their
// labels): the decision rule's tau for balanced accuracy (FitDecisionTau), the recall
// floor's bias on top (FitRecallBias) and the malignancy-risk referral threshold for a
// target sensitivity (FitReferralPolicy). One implementation for `skinlesion
// fit-thresholds` on a partition, on the rounds' pooled out-of-fold answers, and for
// the leave-one-round-out check of the latter. LibTorch-free.
//
//   OperatingPoint op = FitOperatingPoint(labels, probs, classes, model_rule, options);
//   // A model whose rule is fitted on every round's answers: what it would have scored
//   // on each round had that round's answers not been among them.
//   absl::StatusOr<nlohmann::json> check = LeaveOneRoundOut(rounds, classes, rule, options);
#ifndef SKINLESION_EVAL_OPERATING_POINT_H_
#define SKINLESION_EVAL_OPERATING_POINT_H_

#include <optional>
#include <vector>

#include "absl/status/statusor.h"
#include "nlohmann/json.hpp"
#include "skinlesion/common/classes.h"
#include "skinlesion/common/decision.h"
#include "skinlesion/common/referral.h"
#include "skinlesion/eval/metrics.h"

namespace skinlesion::eval {

struct OperatingPointOptions {
  // Fit tau (and the floor on top). False: the given rule is kept as it is.
  bool balanced_decision = true;
  std::vector<double> prior;  // The class shares tau adjusts for (ClassPrior).
  // The recall floor: the class and the share of its images to name (none when
  // recall_class is unset or recall_target is 0).
  std::optional<int> recall_class;
  double recall_target = 0;
  // The referral rule to fit the threshold of: its target_sensitivity and
  // sensitivity_confidence say what to fit for; its other fields are kept.
  ReferralPolicy referral;
};

struct OperatingPoint {
  std::optional<DecisionFit> tau;          // nullopt: tau not fitted (the given rule kept).
  std::optional<RecallBiasFit> floor;      // nullopt: no floor fitted.
  DecisionRule decision;                   // The fitted rule, or the given one.
  std::optional<ReferralPolicy> referral;  // nullopt: the data hold no malignant case.
};

// Fits on (labels, probs) in this order: tau, then the floor on the tau-adjusted rule
// (a fitted tau replaces the given rule's prior and biases), then the referral
// threshold under the resulting rule (its close calls depend on the named class).
// Where tau cannot be fitted (no prior, or fewer than two classes) the given rule is
// kept, floor included, and no floor is fitted.
OperatingPoint FitOperatingPoint(const std::vector<int>& labels, const std::vector<Probs>& probs,
                                 const LabelSet& classes, const DecisionRule& given,
                                 const OperatingPointOptions& options);

// One cross-validation round's held-out answers (calibrated by the round's model).
struct RoundHeldOut {
  int fold = 0;
  std::vector<int> labels;
  std::vector<Probs> probs;
};

// The leave-one-round-out check of an operating point fitted on pooled rounds: for
// each round, the operating point fitted on the other rounds' answers, applied to its
// own. What a model served with the pooled operating point can expect on images from
// nowhere in the fitting data, as cross-validated figures:
//   {"method", "rounds": [{"fold", "n", "tau", "recall_bias", "risk_threshold",
//     <SummariseFolds metric paths>...}], "summary": {<metric>: {"mean", "sd", "min",
//     "max", "n"}}, "markdown": table}
// InvalidArgument for fewer than two rounds, a fold given twice, sizes that differ, or
// rounds whose others hold no malignant case.
absl::StatusOr<nlohmann::json> LeaveOneRoundOut(const std::vector<RoundHeldOut>& rounds,
                                                const LabelSet& classes, const DecisionRule& given,
                                                const OperatingPointOptions& options);

}  // namespace skinlesion::eval

#endif  // SKINLESION_EVAL_OPERATING_POINT_H_
