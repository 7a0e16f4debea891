#include "skinlesion/train/losses.h"

#include <torch/torch.h>

#include "absl/strings/str_cat.h"

namespace skinlesion::train {

using Kind = LossOptions::Kind;

at::Tensor ComputeLoss(const at::Tensor& logits, const at::Tensor& targets,
                       const LossOptions& options) {
  namespace F = torch::nn::functional;
  at::Tensor z = logits.to(torch::kFloat32);
  if (options.kind == Kind::kLogitAdjusted) {
    TORCH_CHECK(static_cast<int64_t>(options.log_prior.size()) == z.size(1),
                "logit_adjusted needs a log prior per class (", z.size(1), "), got ",
                options.log_prior.size());
    const torch::Tensor shift = torch::tensor(options.log_prior, torch::kFloat64).to(z.options());
    auto o = F::CrossEntropyFuncOptions().label_smoothing(options.label_smoothing);
    return F::cross_entropy(z + options.logit_adjust_tau * shift, targets, o);
  }
  torch::Tensor weights;
  if (options.kind != Kind::kCrossEntropy && !options.class_weights.empty()) {
    weights = torch::tensor(options.class_weights, torch::kFloat64).to(z.options());
  }
  if (options.kind != Kind::kFocal) {
    auto o = F::CrossEntropyFuncOptions().label_smoothing(options.label_smoothing);
    if (weights.defined()) o.weight(weights);
    return F::cross_entropy(z, targets, o);
  }
  const torch::Tensor log_p = torch::log_softmax(z, 1);
  const torch::Tensor log_pt = log_p.gather(1, targets.unsqueeze(1)).squeeze(1);
  const torch::Tensor pt = log_pt.exp();
  torch::Tensor loss = -torch::pow(1 - pt, options.focal_gamma) * log_pt;
  if (options.label_smoothing > 0) {
    // Smooth towards the uniform distribution, as torch does for cross-entropy.
    const double eps = options.label_smoothing;
    loss = (1 - eps) * loss - eps * torch::pow(1 - pt, options.focal_gamma) * log_p.mean(1);
  }
  if (weights.defined()) {
    const torch::Tensor w = weights.index_select(0, targets);
    return (loss * w).sum() / w.sum();
  }
  return loss.mean();
}

at::Tensor DistillationLoss(const at::Tensor& logits, const at::Tensor& teacher_probs,
                            double temperature) {
  TORCH_CHECK(temperature > 0, "distillation temperature must be > 0, got ", temperature);
  TORCH_CHECK(logits.sizes() == teacher_probs.sizes(), "teacher answers ", teacher_probs.sizes(),
              " do not match the logits ", logits.sizes());
  const at::Tensor z = logits.to(torch::kFloat32) / temperature;
  // A probability of 0 (a teacher sure of a class) softens to 0, not to NaN.
  const at::Tensor log_q = torch::log_softmax(
      torch::log(teacher_probs.to(torch::kFloat32).clamp_min(1e-12)) / temperature, 1);
  const at::Tensor kl = (log_q.exp() * (log_q - torch::log_softmax(z, 1))).sum(1);
  return kl.mean() * (temperature * temperature);
}

}  // namespace skinlesion::train
