// An evaluation report on disk: metrics JSON and the plots a person looks at.
//
//   <dir>/metrics.json         eval::MetricsToJson of the calibrated predictions, plus
//                              "uncalibrated" (the same keys before temperature scaling),
//                              "temperature", "decision" (the decision rule, fitted or
//                              given, and what the plain rule scores), "tta", "n_val",
//                              "referral" (the operating
//                              point of the refer rule), "subgroups" and caller-supplied
//                              "context"
//   <dir>/confusion_matrix.png
//   <dir>/roc_curves.png
//   <dir>/reliability.png      after calibration
//   <dir>/reliability_uncalibrated.png
//   <dir>/test_examples.png    a grid of random test images with true and predicted labels
#ifndef SKINLESION_EVAL_REPORT_H_
#define SKINLESION_EVAL_REPORT_H_

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "nlohmann/json.hpp"
#include "skinlesion/common/decision.h"
#include "skinlesion/common/ood.h"
#include "skinlesion/common/referral.h"
#include "skinlesion/eval/metrics.h"

namespace skinlesion::eval {

struct ReportInput {
  // The model's classes: what the labels and logits index.
  LabelSet classes = LabelSet::Ham10000();
  // Test predictions (logits) and labels.
  std::vector<int> labels;
  std::vector<Probs> logits;
  // Validation predictions to fit the temperature on; empty: use `temperature`.
  std::vector<int> val_labels;
  std::vector<Probs> val_logits;
  double temperature = 1.0;
  // Image paths of the test samples (same order), for the example grid; may be empty.
  std::vector<std::string> image_paths;
  int grid_examples = 16;
  uint64_t seed = 0;
  // Anything the caller wants recorded (model, data, command...).
  nlohmann::json context;
  // The referral rule to measure (metrics.json "referral", skinlesion/eval/
  // referral_eval.h), e.g. the model manifest's. With fit_risk_threshold and
  // validation logits, its malignancy-risk threshold is first fitted on the
  // calibrated validation probabilities for referral.target_sensitivity
  // (FitRiskThreshold), and the validation operating point is recorded too.
  ReferralPolicy referral;
  bool fit_risk_threshold = false;
  // Which class an answer names (skinlesion/common/decision.h): every predicted class
  // in the report (confusion matrix, accuracy, balanced accuracy, subgroups, the
  // referral's close calls) is this rule's. With fit_decision, validation logits and a
  // prior (the training class shares, ClassPrior), tau is first fitted on the
  // calibrated validation probabilities for balanced accuracy (FitDecisionTau).
  DecisionRule decision;
  bool fit_decision = false;
  // With fit_decision and recall_target > 0, a recall floor for class
  // recall_target_class (an index of `classes`; < 0: none) is then fitted on top
  // (FitRecallBias) and recorded in metrics.json "decision.recall_floor".
  int recall_target_class = -1;
  double recall_target = 0;
  // Subgroups of the test samples (dimension -> group name per sample, e.g. "sex"),
  // reported per group in metrics.json "subgroups" (skinlesion/eval/subgroups.h).
  std::map<std::string, std::vector<std::string>> subgroups;
  // The out-of-distribution check (skinlesion/common/ood.h): with a threshold,
  // metrics.json "ood" records it and the share of these (real lesion) images it
  // wrongly rejects, with a Wilson interval. The scores are `ood_scores` (one per test
  // image; the model runtime's, required for "mahalanobis"), else the logits' energies.
  OodPolicy ood;
  std::vector<double> ood_scores;
};

// metrics.json's "decision.recall_floor" (docs/metrics.md) for a fitted floor of class
// `code` at `target`.
nlohmann::json RecallFloorToJson(const RecallBiasFit& fit, const std::string& code, double target);

// Writes the report into `dir` (created) and returns metrics.json's content.
absl::StatusOr<nlohmann::json> WriteReport(const ReportInput& input, const std::string& dir);

}  // namespace skinlesion::eval

#endif  // SKINLESION_EVAL_REPORT_H_
