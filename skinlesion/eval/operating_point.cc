#include "skinlesion/eval/operating_point.h"

#include <algorithm>
#include <set>
#include <string>

#include "absl/strings/str_cat.h"
#include "skinlesion/common/status.h"
#include "skinlesion/eval/cross_validation.h"
#include "skinlesion/eval/referral_eval.h"

namespace skinlesion::eval {

OperatingPoint FitOperatingPoint(const std::vector<int>& labels, const std::vector<Probs>& probs,
                                 const LabelSet& classes, const DecisionRule& given,
                                 const OperatingPointOptions& options) {
  OperatingPoint op;
  op.decision = given;
  if (options.balanced_decision) {
    if (!options.prior.empty()) {
      op.tau = FitDecisionTau(labels, probs, options.prior);
      if (op.tau) op.decision = {.tau = op.tau->tau, .prior = options.prior};
    }
    if (op.tau && options.recall_class && options.recall_target > 0) {
      op.floor =
          FitRecallBias(labels, probs, op.decision, *options.recall_class, options.recall_target);
      if (op.floor) {
        op.decision =
            WithClassBias(op.decision, classes.size(), *options.recall_class, op.floor->bias);
      }
    }
  }
  op.referral = FitReferralPolicy(labels, probs, options.referral, classes);
  return op;
}

absl::StatusOr<nlohmann::json> LeaveOneRoundOut(const std::vector<RoundHeldOut>& rounds,
                                                const LabelSet& classes, const DecisionRule& given,
                                                const OperatingPointOptions& options) {
  if (rounds.size() < 2) {
    return absl::InvalidArgumentError("leaving one round out needs at least two rounds");
  }
  std::set<int> folds;
  for (const RoundHeldOut& r : rounds) {
    if (!folds.insert(r.fold).second) {
      return absl::InvalidArgumentError(absl::StrCat("round ", r.fold, " is given twice"));
    }
    if (r.labels.size() != r.probs.size() || r.labels.empty()) {
      return absl::InvalidArgumentError(absl::StrCat("round ", r.fold, ": ", r.labels.size(),
                                                     " labels for ", r.probs.size(), " answers"));
    }
  }
  std::vector<FoldResult> results;
  nlohmann::json fitted = nlohmann::json::array();
  for (const RoundHeldOut& held : rounds) {
    std::vector<int> labels;
    std::vector<Probs> probs;
    for (const RoundHeldOut& other : rounds) {
      if (other.fold == held.fold) continue;
      labels.insert(labels.end(), other.labels.begin(), other.labels.end());
      probs.insert(probs.end(), other.probs.begin(), other.probs.end());
    }
    const OperatingPoint op = FitOperatingPoint(labels, probs, classes, given, options);
    if (!op.referral) {
      return absl::InvalidArgumentError(absl::StrCat(
          "the rounds other than ", held.fold, " hold no malignant case to fit a threshold on"));
    }
    SL_ASSIGN_OR_RETURN(const Metrics m,
                        ComputeMetrics(held.labels, held.probs, classes, op.decision));
    nlohmann::json metrics = MetricsToJson(m);
    metrics["referral"] = ReferralToJson(
        EvaluateReferral(held.labels, held.probs, *op.referral, classes, op.decision));
    if (op.decision.HasBias()) {
      SL_ASSIGN_OR_RETURN(
          metrics["decision"]["without_floor"],
          DecisionSummaryJson(held.labels, held.probs, classes, WithoutBias(op.decision)));
    }
    results.push_back({.fold = held.fold, .metrics = std::move(metrics)});
    fitted.push_back({{"fold", held.fold},
                      {"fitted_on_images", labels.size()},
                      {"tau", op.decision.tau},
                      {"recall_bias", op.floor ? nlohmann::json(op.floor->bias) : nlohmann::json()},
                      {"risk_threshold", *op.referral->risk_threshold}});
  }
  SL_ASSIGN_OR_RETURN(nlohmann::json summary, SummariseFolds(results));
  // SummariseFolds sorts its rows by fold; so are the fitted values.
  std::sort(fitted.begin(), fitted.end(),
            [](const nlohmann::json& a, const nlohmann::json& b) { return a["fold"] < b["fold"]; });
  nlohmann::json out_rounds = summary["folds"];
  for (size_t i = 0; i < out_rounds.size(); ++i) {
    for (const auto& [key, value] : fitted[i].items()) out_rounds[i][key] = value;
    out_rounds[i].erase("train_minutes");
    out_rounds[i].erase("logged_minutes");
  }
  summary.erase("train_minutes");
  return nlohmann::json{
      {"method",
       "each round's answers scored at the operating point (tau, recall floor, referral "
       "threshold) fitted on the other rounds' answers"},
      {"rounds", out_rounds},
      {"summary", summary["summary"]},
      {"markdown", CrossValidationMarkdown(summary)}};
}

}  // namespace skinlesion::eval
