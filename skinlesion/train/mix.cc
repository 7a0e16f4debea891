#include "skinlesion/train/mix.h"

#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <numeric>
#include <vector>

namespace skinlesion::train {
namespace {

// Marsaglia & Tsang (2000) for shape >= 1; shape < 1 through Gamma(a + 1) * U^(1/a).
double SampleGamma(double shape, Rng& rng) {
  if (shape < 1.0) {
    double u = rng.Uniform();
    while (u <= 0.0) u = rng.Uniform();
    return SampleGamma(shape + 1.0, rng) * std::pow(u, 1.0 / shape);
  }
  const double d = shape - 1.0 / 3.0;
  const double c = 1.0 / std::sqrt(9.0 * d);
  for (;;) {
    double x, v;
    do {
      x = rng.Normal();
      v = 1.0 + c * x;
    } while (v <= 0.0);
    v = v * v * v;
    const double u = rng.Uniform();
    if (u < 1.0 - 0.0331 * x * x * x * x) return d * v;
    if (u > 0.0 && std::log(u) < 0.5 * x * x + d * (1.0 - v + std::log(v))) return d * v;
  }
}

torch::Tensor Permutation(int64_t n, Rng& rng, const torch::Device& device) {
  std::vector<int64_t> order(n);
  std::iota(order.begin(), order.end(), 0);
  Shuffle(order, rng);
  return torch::tensor(order, torch::kInt64).to(device);
}

}  // namespace

double SampleSymmetricBeta(double a, Rng& rng) {
  const double x = SampleGamma(a, rng);
  const double y = SampleGamma(a, rng);
  return x + y > 0 ? x / (x + y) : 0.5;
}

MixedBatch MixBatch(const at::Tensor& images, const at::Tensor& targets, const MixOptions& options,
                    Rng& rng) {
  MixedBatch out;
  out.images = images;
  const int64_t n = images.size(0);
  if (!options.enabled() || n < 2 || !rng.Bernoulli(options.prob)) return out;
  const bool both = options.mixup_alpha > 0 && options.cutmix_alpha > 0;
  out.kind = both ? (rng.Bernoulli(0.5) ? MixKind::kCutMix : MixKind::kMixup)
                  : (options.cutmix_alpha > 0 ? MixKind::kCutMix : MixKind::kMixup);
  const torch::Tensor perm = Permutation(n, rng, images.device());
  out.partner_targets = targets.index_select(0, perm);
  out.partner_index = perm;
  if (out.kind == MixKind::kMixup) {
    out.lambda = SampleSymmetricBeta(options.mixup_alpha, rng);
    out.images = images * out.lambda + images.index_select(0, perm) * (1.0 - out.lambda);
    return out;
  }
  // CutMix: a box of area (1 - lambda) H W centred uniformly, clipped to the image;
  // lambda is then the exact share of the image's own pixels.
  const int64_t h = images.size(2), w = images.size(3);
  const double cut = std::sqrt(1.0 - SampleSymmetricBeta(options.cutmix_alpha, rng));
  const auto ch = static_cast<int64_t>(std::llround(h * cut));
  const auto cw = static_cast<int64_t>(std::llround(w * cut));
  const auto cy = static_cast<int64_t>(rng.UniformInt(static_cast<uint64_t>(h)));
  const auto cx = static_cast<int64_t>(rng.UniformInt(static_cast<uint64_t>(w)));
  const int64_t y0 = std::clamp<int64_t>(cy - ch / 2, 0, h),
                y1 = std::clamp<int64_t>(cy + (ch - ch / 2), 0, h);
  const int64_t x0 = std::clamp<int64_t>(cx - cw / 2, 0, w),
                x1 = std::clamp<int64_t>(cx + (cw - cw / 2), 0, w);
  out.images = images.clone();
  if (y1 > y0 && x1 > x0) {
    // Only the box of the partners is gathered, not whole images.
    out.images.slice(2, y0, y1).slice(3, x0, x1).copy_(images.slice(2, y0, y1).slice(3, x0, x1).index_select(0, perm));
  }
  out.lambda = 1.0 - static_cast<double>((y1 - y0) * (x1 - x0)) / static_cast<double>(h * w);
  return out;
}

at::Tensor MixedLoss(const at::Tensor& logits, const at::Tensor& targets, const MixedBatch& batch,
                     const LossOptions& options) {
  torch::Tensor loss = ComputeLoss(logits, targets, options);
  if (batch.kind == MixKind::kNone) return loss;
  return loss * batch.lambda +
         ComputeLoss(logits, batch.partner_targets, options) * (1.0 - batch.lambda);
}

at::Tensor MixedTeacher(const at::Tensor& teacher_probs, const MixedBatch& batch) {
  if (batch.kind == MixKind::kNone) return teacher_probs;
  return teacher_probs * batch.lambda +
         teacher_probs.index_select(0, batch.partner_index) * (1.0 - batch.lambda);
}

}  // namespace skinlesion::train
