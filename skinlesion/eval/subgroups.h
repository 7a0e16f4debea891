// Accuracy by subgroup: for each grouping of the samples (age band, sex, body site,
// image source), per group the count, balanced accuracy with a 95% bootstrap
// interval, melanoma recall and the referral rule's malignant sensitivity with 95%
// Wilson intervals. A model that looks fine on average may fail one group; these
// tables are how a reader finds out (metrics.json "subgroups", the model card).
// LibTorch-free.
#ifndef SKINLESION_EVAL_SUBGROUPS_H_
#define SKINLESION_EVAL_SUBGROUPS_H_

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "nlohmann/json.hpp"
#include "skinlesion/common/referral.h"
#include "skinlesion/eval/metrics.h"
#include "skinlesion/eval/referral_eval.h"

namespace skinlesion::eval {

// "<30", "30-44", "45-59", "60-74", "75+", "unknown".
std::string AgeBand(std::optional<double> age);

struct GroupResult {
  std::string name;
  int n = 0;
  int classes_present = 0;
  double balanced_accuracy = 0, ba_lower = 0, ba_upper = 0;  // Bootstrap 95% (2.5/97.5 pct).
  Proportion melanoma_recall;       // argmax == mel among melanomas
  Proportion malignant_referred;    // referral rule's sensitivity among malignant
};

struct SubgroupOptions {
  int bootstrap = 200;   // Resamples for the balanced-accuracy interval (0: none).
  uint64_t seed = 0;
  int min_group_size = 1;  // Smaller groups are listed with n only.
  DecisionRule decision;   // Which class a prediction names (default: the most probable).
};

// groups: dimension -> the group name of every sample (same order as labels).
// Groups within a dimension are sorted by name.
std::map<std::string, std::vector<GroupResult>> ComputeSubgroups(
    const std::vector<int>& labels, const std::vector<Probs>& probs,
    const std::map<std::string, std::vector<std::string>>& groups, const ReferralPolicy& policy,
    const LabelSet& classes, const SubgroupOptions& options = {});

// {"<dimension>": [{"group", "n", "classes_present", "balanced_accuracy",
//   "balanced_accuracy_ci95", "melanoma_recall": {...}, "malignant_referred": {...}}]}
nlohmann::json SubgroupsToJson(const std::map<std::string, std::vector<GroupResult>>& result);

}  // namespace skinlesion::eval

#endif  // SKINLESION_EVAL_SUBGROUPS_H_
