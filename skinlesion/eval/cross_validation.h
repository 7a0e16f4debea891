// Cross-validation summaries: the test metrics of each round of a k-fold run
// (`skinlesion cv`), and their mean, sample standard deviation and range, so a recipe
// is judged by how it does across lesion-disjoint folds, not on one split.
#ifndef SKINLESION_EVAL_CROSS_VALIDATION_H_
#define SKINLESION_EVAL_CROSS_VALIDATION_H_

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "nlohmann/json.hpp"

namespace skinlesion::eval {

// One finished round: its fold, the metrics JSON of its test fold (WriteReport's) and
// what its training cost.
struct FoldResult {
  int fold = 0;
  nlohmann::json metrics;
  // The run's epochs' median duration times their number: what the round costs on a
  // machine doing nothing else, even when other work shared it for a while. 0: unknown
  // (a round whose training log is not there, e.g. one run on another machine).
  double train_minutes = 0;
  double logged_minutes = 0;  // The epochs' durations as logged, summed.
};

// The metrics summarised, as JSON paths into a round's metrics ("a/b/c"), in table order.
const std::vector<std::string>& CrossValidationMetrics();

// {"folds": [{"fold", "train_minutes", "logged_minutes", "<metric>": value...}...], "summary": {"<metric>":
// {"mean", "sd", "min", "max", "n"}}, "train_minutes": {...}}. sd is the sample standard
// deviation (n - 1), 0 for one fold. A metric missing from a round (e.g. no referral
// threshold) is left out of that round and summarised over the others; so is an unknown
// cost (train_minutes 0: null in its row, "train_minutes" null when no round has one).
// InvalidArgument for no rounds or a fold given twice.
absl::StatusOr<nlohmann::json> SummariseFolds(const std::vector<FoldResult>& folds);

// The rounds' subgroup results (metrics "subgroups": age band, sex, body site, source)
// pooled: every test image is in one round's test fold, so the pooled groups cover the
// whole pool, each image predicted by a model that never saw it. Per kind, per group:
//   {"group", "rounds", "n" (images, summed), "balanced_accuracy": {"mean", "min", "max",
//    "rounds"} over the rounds where the group had >= 2 classes, "melanoma_recall" and
//    "malignant_referred": {"k", "n", "value", "ci95"} summed over the rounds (95% Wilson)}
// sorted by n, largest first. {} when no round has subgroups.
nlohmann::json PoolSubgroups(const std::vector<FoldResult>& folds);

// A Markdown table of the summary: one row per round, then "mean ± sd"; then, when
// the summary has "subgroups" (PoolSubgroups), one table per kind.
std::string CrossValidationMarkdown(const nlohmann::json& summary);

}  // namespace skinlesion::eval

#endif  // SKINLESION_EVAL_CROSS_VALIDATION_H_
