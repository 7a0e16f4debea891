// Classification losses for class-imbalanced training.
//
//   CrossEntropy: torch's cross-entropy with optional per-class weights and label
//                 smoothing (weighted mean: sum_i w[y_i] l_i / sum_i w[y_i]).
//   Focal:        Lin et al. 2017, FL = -alpha[y] (1 - p_y)^gamma log p_y, averaged
//                 like the weighted cross-entropy (alpha plays the class weights);
//                 gamma = 0 and alpha = 1 is plain cross-entropy.
//   LogitAdjusted: Menon et al. 2021 ("Long-tail learning via logit adjustment";
//                 with tau = 1 the balanced softmax of Ren et al. 2020): cross-entropy
//                 of logits + tau * log(prior), prior = the training class frequencies.
//                 The model's plain logits then estimate the class-balanced posterior,
//                 which is what balanced accuracy rewards; nothing changes at inference.
//   Distillation: a teacher's answers as soft targets (DistillationLoss), added to one
//                 of the above by the trainer (config distill_*).
#ifndef SKINLESION_TRAIN_LOSSES_H_
#define SKINLESION_TRAIN_LOSSES_H_

#include <string>
#include <vector>

#include <ATen/core/Tensor.h>

#include "skinlesion/train/choices.h"

namespace skinlesion::train {

struct LossOptions {
  using Kind = LossKind;  // Parsed by ParseLossKind (choices.h).
  Kind kind = Kind::kWeightedCrossEntropy;
  double label_smoothing = 0.0;  // [0, 1)
  double focal_gamma = 2.0;
  // Per-class weights (size = number of classes) for weighted CE and focal alpha;
  // empty = all 1. Typically data::ClassWeights(train labels, inverse or sqrt).
  std::vector<double> class_weights;
  // kLogitAdjusted: log of the training class frequencies (size = classes) and tau.
  std::vector<double> log_prior;
  double logit_adjust_tau = 1.0;
};

// logits [N, K] (any floating dtype), targets [N] int64. Returns a scalar.
at::Tensor ComputeLoss(const at::Tensor& logits, const at::Tensor& targets,
                       const LossOptions& options);

// Knowledge distillation (Hinton et al. 2015, "Distilling the Knowledge in a Neural
// Network"): T^2 * mean_i KL(q_i^T || softmax(z_i / T)), where q [N, K] are a teacher's
// probabilities (rows summing to 1; zeros allowed) and q^T = softmax(log q / T) softens
// them as the logits are softened; T^2 keeps the gradients' scale as T changes. Zero where
// the logits equal log q up to a constant per row. A scalar in fp32.
at::Tensor DistillationLoss(const at::Tensor& logits, const at::Tensor& teacher_probs,
                            double temperature);

}  // namespace skinlesion::train

#endif  // SKINLESION_TRAIN_LOSSES_H_
