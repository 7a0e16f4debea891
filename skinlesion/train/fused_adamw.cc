#include "skinlesion/train/fused_adamw.h"

#include <ATen/Parallel.h>
#include <c10/util/string_utils.h>
#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <memory>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

namespace skinlesion::train {
namespace {

// LibTorch 1.13 keys optimizer state by the TensorImpl's address printed as a string,
// 2.x by the address itself.
template <typename Map>
typename Map::key_type StateKey(const Map&, const torch::Tensor& p) {
  if constexpr (std::is_same_v<typename Map::key_type, std::string>) {
    return c10::guts::to_string(p.unsafeGetTensorImpl());
  } else {
    return static_cast<typename Map::key_type>(p.unsafeGetTensorImpl());
  }
}

// Whether b's elements lie in memory in a's order, densely, so that one linear pass
// over both visits the same elements. Strides of size-1 dimensions do not matter (a
// 1x1 conv weight's gradient may come back with other strides there: LibTorch's
// layout contract for gradients ignores them too).
bool SameDenseLayout(const torch::Tensor& a, const torch::Tensor& b) {
  if (!b.defined() || !b.device().is_cpu() || b.scalar_type() != torch::kFloat32 ||
      b.sizes() != a.sizes() || !b.is_non_overlapping_and_dense()) {
    return false;
  }
  for (int64_t d = 0; d < a.dim(); ++d) {
    if (a.size(d) != 1 && a.stride(d) != b.stride(d)) return false;
  }
  return true;
}

struct Scalars {
  float grad_scale;  // The clip coefficient (1: none)
  float decay;       // 1 - lr * weight_decay (1: none)
  float beta1, one_minus_beta1;
  float beta2, one_minus_beta2;
  float bias_correction2_sqrt;
  float eps;
  float neg_step_size;  // -lr / (1 - beta1^step)
};

// One element, in AdamW's order (after clipping's g *= grad_scale): p *= decay; m = m * b1 + (1 -
// b1) g; v = v * b2 + (1 - b2) g g; p += -step_size * m / (sqrt(v) / sqrt(bc2) + eps).
inline void UpdateOne(const Scalars& s, float& p, float g_raw, float& m, float& v) {
  const float g = g_raw * s.grad_scale;
  p = p * s.decay;
  m = m * s.beta1 + s.one_minus_beta1 * g;
  v = v * s.beta2 + s.one_minus_beta2 * g * g;
  const float denom = std::sqrt(v) / s.bias_correction2_sqrt + s.eps;
  p = p + s.neg_step_size * (m / denom);
}

void UpdateRange(const Scalars& s, float* p, const float* g, float* m, float* v, int64_t begin,
                 int64_t end) {
  int64_t i = begin;
#if defined(__SSE2__)
  const __m128 grad_scale = _mm_set1_ps(s.grad_scale);
  const __m128 decay = _mm_set1_ps(s.decay), b1 = _mm_set1_ps(s.beta1),
               omb1 = _mm_set1_ps(s.one_minus_beta1), b2 = _mm_set1_ps(s.beta2),
               omb2 = _mm_set1_ps(s.one_minus_beta2), bc2 = _mm_set1_ps(s.bias_correction2_sqrt),
               eps = _mm_set1_ps(s.eps), nss = _mm_set1_ps(s.neg_step_size);
  for (; i + 4 <= end; i += 4) {
    const __m128 gv = _mm_mul_ps(_mm_loadu_ps(g + i), grad_scale);
    __m128 pv = _mm_mul_ps(_mm_loadu_ps(p + i), decay);
    const __m128 mv = _mm_add_ps(_mm_mul_ps(_mm_loadu_ps(m + i), b1), _mm_mul_ps(omb1, gv));
    const __m128 vv =
        _mm_add_ps(_mm_mul_ps(_mm_loadu_ps(v + i), b2), _mm_mul_ps(_mm_mul_ps(omb2, gv), gv));
    const __m128 denom = _mm_add_ps(_mm_div_ps(_mm_sqrt_ps(vv), bc2), eps);
    pv = _mm_add_ps(pv, _mm_mul_ps(nss, _mm_div_ps(mv, denom)));
    _mm_storeu_ps(p + i, pv);
    _mm_storeu_ps(m + i, mv);
    _mm_storeu_ps(v + i, vv);
  }
#endif
  for (; i < end; ++i) UpdateOne(s, p[i], g[i], m[i], v[i]);
}

// The parameters of `optimizer` that have a gradient.
std::vector<torch::Tensor> ParamsWithGradients(torch::optim::Optimizer& optimizer) {
  std::vector<torch::Tensor> params;
  for (auto& group : optimizer.param_groups()) {
    for (auto& p : group.params()) {
      if (p.grad().defined()) params.push_back(p);
    }
  }
  return params;
}

}  // namespace

bool FusedAdamW::CanFuse() {
  for (auto& group : param_groups()) {
    if (static_cast<const torch::optim::AdamWOptions&>(group.options()).amsgrad()) return false;
    for (auto& p : group.params()) {
      const torch::Tensor& grad = p.grad();
      if (!grad.defined()) continue;
      if (!p.device().is_cpu() || p.scalar_type() != torch::kFloat32 ||
          !p.is_non_overlapping_and_dense() || grad.is_sparse() || !SameDenseLayout(p, grad)) {
        return false;
      }
      const torch::optim::AdamWParamState* st = AdamWStateOf(*this, p);
      if (st != nullptr &&
          (!SameDenseLayout(p, st->exp_avg()) || !SameDenseLayout(p, st->exp_avg_sq()))) {
        return false;
      }
    }
  }
  return true;
}

double FusedAdamW::ClipGradNorm(double max_norm) {
  pending_grad_scale_ = 1.0f;
  const std::vector<torch::Tensor> params = ParamsWithGradients(*this);
  if (!CanFuse()) return torch::nn::utils::clip_grad_norm_(params, max_norm);
  if (params.empty()) return 0.0;
  double sum_squares = 0;
  for (const auto& p : params) {
    const float* g = p.grad().data_ptr<float>();
    sum_squares += at::parallel_reduce(
        int64_t{0}, p.numel(), /*grain_size=*/32768, 0.0,
        [&](int64_t begin, int64_t end, double acc) {
          double a[4] = {0, 0, 0, 0};  // Four chains, so the adds overlap.
          int64_t i = begin;
          for (; i + 4 <= end; i += 4) {
            for (int k = 0; k < 4; ++k) a[k] += static_cast<double>(g[i + k]) * g[i + k];
          }
          for (; i < end; ++i) a[0] += static_cast<double>(g[i]) * g[i];
          return acc + ((a[0] + a[1]) + (a[2] + a[3]));
        },
        std::plus<double>());
  }
  const double total_norm = std::sqrt(sum_squares);
  // clip_grad_norm_'s coefficient, clamped at 1 and applied as an fp32 multiply.
  pending_grad_scale_ = static_cast<float>(std::min(1.0, max_norm / (total_norm + 1e-6)));
  return total_norm;
}

torch::Tensor FusedAdamW::step(LossClosure closure) {
  last_step_fused_ = false;
  const float grad_scale = std::exchange(pending_grad_scale_, 1.0f);
  torch::NoGradGuard no_grad;
  torch::Tensor loss = {};
  if (closure != nullptr) {
    // Before the layout check: the closure writes the gradients that are read.
    at::AutoGradMode enable_grad(true);
    loss = closure();
  }
  if (!CanFuse()) {
    // A clip coefficient ClipGradNorm left for the fused pass (the gradients changed
    // layout since) is applied here, so the step is still clip_grad_norm_'s.
    if (grad_scale != 1.0f) {
      for (torch::Tensor& p : ParamsWithGradients(*this)) p.mutable_grad().mul_(grad_scale);
    }
    torch::optim::AdamW::step();
    return loss;
  }
  for (auto& group : param_groups()) {
    const auto& options = static_cast<const torch::optim::AdamWOptions&>(group.options());
    for (auto& p : group.params()) {
      if (!p.grad().defined()) continue;
      const auto key = StateKey(state(), p);
      auto it = state().find(key);
      if (it == state().end()) {
        auto fresh = std::make_unique<torch::optim::AdamWParamState>();
        fresh->step(0);
        fresh->exp_avg(torch::zeros_like(p, torch::MemoryFormat::Preserve));
        fresh->exp_avg_sq(torch::zeros_like(p, torch::MemoryFormat::Preserve));
        it = state().emplace(key, std::move(fresh)).first;
      }
      auto& st = static_cast<torch::optim::AdamWParamState&>(*it->second);
      st.step(st.step() + 1);
      const double beta1 = std::get<0>(options.betas()), beta2 = std::get<1>(options.betas());
      const double bias_correction1 = 1 - std::pow(beta1, st.step());
      const double bias_correction2 = 1 - std::pow(beta2, st.step());
      Scalars s;
      s.grad_scale = grad_scale;
      s.decay = static_cast<float>(
          options.weight_decay() != 0 ? 1 - options.lr() * options.weight_decay() : 1.0);
      s.beta1 = static_cast<float>(beta1);
      s.one_minus_beta1 = static_cast<float>(1 - beta1);
      s.beta2 = static_cast<float>(beta2);
      s.one_minus_beta2 = static_cast<float>(1 - beta2);
      s.bias_correction2_sqrt = static_cast<float>(std::sqrt(bias_correction2));
      s.eps = static_cast<float>(options.eps());
      s.neg_step_size = static_cast<float>(-(options.lr() / bias_correction1));
      float* pd = p.data_ptr<float>();
      const float* gd = p.grad().data_ptr<float>();
      float* md = st.exp_avg().data_ptr<float>();
      float* vd = st.exp_avg_sq().data_ptr<float>();
      at::parallel_for(0, p.numel(), /*grain_size=*/32768, [&](int64_t begin, int64_t end) {
        UpdateRange(s, pd, gd, md, vd, begin, end);
      });
    }
  }
  last_step_fused_ = true;
  return loss;
}

torch::optim::AdamWParamState* AdamWStateOf(torch::optim::Optimizer& optimizer,
                                            const torch::Tensor& p) {
  auto it = optimizer.state().find(StateKey(optimizer.state(), p));
  if (it == optimizer.state().end()) return nullptr;
  return static_cast<torch::optim::AdamWParamState*>(it->second.get());
}

void ClearGradients(torch::optim::Optimizer& optimizer) {
  for (torch::Tensor& p : ParamsWithGradients(optimizer)) p.mutable_grad().reset();
}

}  // namespace skinlesion::train
