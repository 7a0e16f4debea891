// AdamW with the update of each parameter done in one pass over its memory.
//
// torch::optim::AdamW (LibTorch 1.13 and 2.x) updates a parameter with nine
// elementwise tensor ops (decay, two moment updates, sqrt, divide, add, addcdiv),
// each a full read and write of a parameter-sized tensor plus temporaries: on a CPU
// the step is memory bound and takes ~22 passes over parameter-sized memory where
// one pass reading p, grad, exp_avg, exp_avg_sq and writing three of them is enough.
// FusedAdamW computes the same update per element (the same order of operations, in
// fp32, with the same fp32 scalars), split over LibTorch's intra-op threads.
//
// It is a torch::optim::AdamW: the same options, the same per-parameter state
// (AdamWParamState, keyed as LibTorch keys it), so checkpoints written by either
// load into the other, and torch::load / torch::save work unchanged. The fused pass
// is taken only where it applies -- every parameter with a gradient is a CPU fp32
// tensor whose gradient and moments have its strides and are dense, no amsgrad --
// and the whole step falls back to torch::optim::AdamW::step() otherwise (CUDA,
// half-precision master weights, odd layouts), so it is never wrong, only not faster.
//
// Numerics: each element's result equals AdamW's up to the rounding of its fp32
// operations (the vector kernels of ATen may contract a multiply and an add into one
// FMA where this loop does not); fused_adamw_test checks the two over many steps.
#ifndef SKINLESION_TRAIN_FUSED_ADAMW_H_
#define SKINLESION_TRAIN_FUSED_ADAMW_H_

#include <torch/optim/adamw.h>

namespace skinlesion::train {

class FusedAdamW : public torch::optim::AdamW {
 public:
  using torch::optim::AdamW::AdamW;

  torch::Tensor step(LossClosure closure = nullptr) override;

  // torch::nn::utils::clip_grad_norm_(params, max_norm) for the next step(): the total
  // 2-norm of the gradients is computed in one read of them, and the clip
  // coefficient min(1, max_norm / (norm + 1e-6)) multiplies each gradient element as
  // the fused pass reads it, instead of in a pass of its own (the gradients in memory
  // stay as backward left them). Where the fused pass does not apply, it is
  // clip_grad_norm_ itself; if the gradients change layout before step() so that the
  // step falls back, step() multiplies them by the coefficient first. Returns the
  // total norm, as clip_grad_norm_ does.
  double ClipGradNorm(double max_norm);

  // Whether the last step() took the fused pass (false: it fell back to AdamW's).
  bool last_step_fused() const { return last_step_fused_; }

 private:
  bool CanFuse();
  bool last_step_fused_ = false;
  float pending_grad_scale_ = 1.0f;  // From ClipGradNorm, for the next fused step.
};

// The AdamW state of `p` in an AdamW (or FusedAdamW) optimizer, nullptr before its first
// step (LibTorch 1.13 and 2.x key the state differently).
torch::optim::AdamWParamState* AdamWStateOf(torch::optim::Optimizer& optimizer,
                                            const torch::Tensor& p);

// Sets every parameter's gradient to undefined (PyTorch's zero_grad(set_to_none=True),
// LibTorch 2.x's default): the next backward writes the gradient instead of adding it
// to a zeroed buffer, saving a fill and an add per parameter. Optimizers, clipping and
// the reducer skip or handle undefined gradients.
void ClearGradients(torch::optim::Optimizer& optimizer);

}  // namespace skinlesion::train

#endif  // SKINLESION_TRAIN_FUSED_ADAMW_H_
