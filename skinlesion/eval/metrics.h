// Classification metrics for a model's label set (HAM10000's 7 classes or its own),
// LibTorch-free.
//
// Inputs are plain arrays: per sample the true class index and the predicted
// probabilities (or logits, for calibration). Every metric is defined as in
// scikit-learn where it has an equivalent (noted below), so numbers compare with
// published work:
//   accuracy            = mean(argmax == label)
//   balanced_accuracy   = mean over classes present of recall (sklearn
//                         balanced_accuracy_score; the ISIC 2018 challenge metric)
//   precision/recall/f1 per class; 0 where undefined (sklearn zero_division=0)
//   macro_*             = unweighted mean over classes with support > 0
//   weighted_*          = support-weighted mean
//   roc_auc per class   = one-vs-rest, Mann-Whitney with ties counted 1/2
//                         (sklearn roc_auc_score); undefined (NaN) when a class has
//                         no positive or no negative; macro_auc averages the defined ones
//   top_k accuracy      = label among the k most probable
//   malignant AUC       = AUC of the malignant group's summed probability
//                         (P(mel)+P(bcc)+P(akiec) for HAM10000); sensitivity/specificity
//                         at risk >= 0.5
//   mel_sensitivity_at_specificity_{80,90}: best melanoma recall on the melanoma
//                         ROC curve with specificity >= 0.8 / 0.9 (label sets with
//                         "mel"; the melanoma keys are null without it)
//   ece                 = 15 equal-width bins of top-1 confidence,
//                         sum_b |acc_b - conf_b| * n_b / N
//   nll                 = mean -log p(label)   (probabilities clamped at 1e-12)
//   brier               = mean sum_k (p_k - onehot_k)^2
#ifndef SKINLESION_EVAL_METRICS_H_
#define SKINLESION_EVAL_METRICS_H_

#include <optional>
#include <vector>

#include "absl/status/statusor.h"
#include "nlohmann/json.hpp"
#include "skinlesion/common/classes.h"
#include "skinlesion/common/decision.h"

namespace skinlesion::eval {

// One sample's scores (probabilities or logits), one per class of the label set.
using Probs = std::vector<float>;

struct ClassMetrics {
  double precision = 0, recall = 0, f1 = 0, auc = 0;  // auc NaN when undefined.
  int support = 0;
};

struct RocCurve {
  std::vector<double> fpr, tpr, thresholds;  // From (0,0) to (1,1).
};

struct CalibrationBin {
  double lower = 0, upper = 0, confidence = 0, accuracy = 0;
  int count = 0;
};

struct Metrics {
  int n = 0;
  double accuracy = 0, balanced_accuracy = 0;
  double macro_precision = 0, macro_recall = 0, macro_f1 = 0, macro_auc = 0;
  double weighted_precision = 0, weighted_recall = 0, weighted_f1 = 0;
  double top2_accuracy = 0, top3_accuracy = 0;
  LabelSet classes = LabelSet::Ham10000();          // What the indices below mean.
  std::vector<ClassMetrics> per_class;               // [class]
  std::vector<std::vector<int>> confusion;           // [true][pred]
  std::vector<RocCurve> roc;                         // [class]
  std::optional<int> melanoma;                       // The "mel" index, if the set has it.
  double malignant_auc = 0, malignant_sensitivity = 0, malignant_specificity = 0;
  double mel_sensitivity_at_spec80 = 0, mel_sensitivity_at_spec90 = 0;
  double ece = 0, nll = 0, brier = 0;
  std::vector<CalibrationBin> reliability;  // 15 bins.
};

// Computes every metric for `classes`. InvalidArgument when sizes differ (a sample
// without one score per class included), a label is out of range, a probability is
// not finite, or there are no samples.
// The predicted class of a sample is the one `decision` names (skinlesion/common/
// decision.h; default: the most probable); the scores (AUC, NLL, calibration) use the
// probabilities themselves.
absl::StatusOr<Metrics> ComputeMetrics(const std::vector<int>& labels,
                                       const std::vector<Probs>& probs,
                                       const LabelSet& classes = LabelSet::Ham10000(),
                                       const DecisionRule& decision = {});

// One-vs-rest ROC AUC of scores for the positives (label true). NaN when either
// class is empty.
double RocAuc(const std::vector<double>& scores, const std::vector<bool>& positive);
RocCurve ComputeRoc(const std::vector<double>& scores, const std::vector<bool>& positive);

// Expected calibration error with `bins` equal-width bins of top-1 confidence.
double ExpectedCalibrationError(const std::vector<int>& labels, const std::vector<Probs>& probs,
                                int bins = 15, std::vector<CalibrationBin>* reliability = nullptr);

// Softmax of logits / temperature.
std::vector<Probs> Softmax(const std::vector<Probs>& logits, double temperature = 1.0);

// Fits the temperature T > 0 minimising the NLL of softmax(logits / T) on a
// validation set (golden-section search on log T in [0.05, 20]).
absl::StatusOr<double> FitTemperature(const std::vector<int>& labels,
                                      const std::vector<Probs>& logits);

// The metrics as JSON with the documented keys (docs/metrics.md): accuracy,
// balanced_accuracy, macro_f1, macro_auc, per_class{code: {precision, recall, f1,
// support, auc}}, confusion_matrix, ece, nll, brier, ...
nlohmann::json MetricsToJson(const Metrics& m);

// {"balanced_accuracy", "accuracy", "melanoma_recall" (0 without "mel")} of the answers
// `decision` names: metrics.json's "decision.plain" and "decision.without_floor".
absl::StatusOr<nlohmann::json> DecisionSummaryJson(const std::vector<int>& labels,
                                                   const std::vector<Probs>& probs,
                                                   const LabelSet& classes,
                                                   const DecisionRule& decision);

}  // namespace skinlesion::eval

#endif  // SKINLESION_EVAL_METRICS_H_
