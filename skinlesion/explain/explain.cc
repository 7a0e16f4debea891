#include "skinlesion/explain/explain.h"

#include <torch/torch.h>

#include <utility>

#include "absl/strings/str_cat.h"

namespace skinlesion::explain {
namespace {

absl::Status CheckCommon(const models::Classifier& model, const torch::Tensor& input,
                         int64_t target_class) {
  if (!input.defined() || input.dim() != 4 || input.size(0) != 1 || input.size(1) != 3) {
    return absl::InvalidArgumentError(absl::StrCat(
        "explanations take one image [1, 3, H, W], got ",
        input.defined() ? c10::str(input.sizes()) : std::string("an undefined tensor")));
  }
  if (!input.is_floating_point()) {
    return absl::InvalidArgumentError("explanations take a floating-point input");
  }
  if (target_class < 0 || target_class >= model.num_classes()) {
    return absl::InvalidArgumentError(absl::StrCat("target class ", target_class, " is outside [0, ",
                                                   model.num_classes(), ")"));
  }
  if (model.is_training()) {
    return absl::FailedPreconditionError("explanations need the model in eval mode");
  }
  if (c10::InferenceMode::is_enabled()) {
    return absl::FailedPreconditionError("explanations cannot run under torch::InferenceMode");
  }
  return absl::OkStatus();
}

// map [h, w] (finite, >= 0 for Grad-CAM) -> Heatmap with values in [0, 1].
absl::StatusOr<Heatmap> ToHeatmap(std::string method, torch::Tensor map, const torch::Tensor& logits) {
  map = map.to(torch::kCPU, torch::kFloat32).contiguous();
  if (!torch::isfinite(map).all().item<bool>()) {
    return absl::InternalError(absl::StrCat(method, ": the map has non-finite values"));
  }
  Heatmap out;
  out.method = std::move(method);
  out.height = static_cast<int>(map.size(0));
  out.width = static_cast<int>(map.size(1));
  const float* p = map.data_ptr<float>();
  out.heat.assign(p, p + map.numel());
  const torch::Tensor l = logits.detach().to(torch::kCPU, torch::kFloat32).contiguous().reshape({-1});
  out.logits.assign(l.data_ptr<float>(), l.data_ptr<float>() + l.numel());
  return out;
}

template <typename Fn>
absl::StatusOr<Heatmap> Guarded(const char* method, Fn&& fn) {
  try {
    return fn();
  } catch (const c10::Error& e) {
    return absl::InternalError(absl::StrCat(method, ": LibTorch: ", e.what_without_backtrace()));
  } catch (const std::exception& e) {
    return absl::InternalError(absl::StrCat(method, ": ", e.what()));
  }
}

}  // namespace

absl::StatusOr<Heatmap> GradCam(models::Classifier& model, const torch::Tensor& input,
                                int64_t target_class) {
  if (!model.HasFeatureMap()) {
    return absl::InvalidArgumentError(
        absl::StrCat(model.architecture(), " has no convolutional feature map for Grad-CAM"));
  }
  if (absl::Status s = CheckCommon(model, input, target_class); !s.ok()) return s;
  return Guarded(kGradCam, [&]() -> absl::StatusOr<Heatmap> {
    // Only d logit / d features is needed: the backbone runs without a graph, and
    // autograd::grad (unlike backward()) leaves the parameters' .grad untouched.
    torch::Tensor features;
    {
      torch::NoGradGuard no_grad;
      features = model.ForwardFeatures(input);
    }
    TORCH_CHECK(features.dim() == 4 && features.size(0) == 1, "feature map of shape ",
                features.sizes());
    torch::AutoGradMode grad_mode(true);
    features = features.detach().requires_grad_(true);
    const torch::Tensor logits = model.ForwardHead(features);
    TORCH_CHECK(logits.dim() == 2 && logits.size(1) == model.num_classes(), "logits of shape ",
                logits.sizes());
    const torch::Tensor grad = torch::autograd::grad({logits[0][target_class]}, {features})[0];
    torch::NoGradGuard no_grad;
    const torch::Tensor weights = grad[0].mean({1, 2});                   // [C]
    torch::Tensor cam = (weights.view({-1, 1, 1}) * features[0]).sum(0);  // [h, w]
    cam = cam.relu();
    const torch::Tensor max = cam.max();
    if (max.item<double>() > 0) cam = cam / max;
    return ToHeatmap(kGradCam, cam, logits);
  });
}

absl::StatusOr<Heatmap> AttentionRollout(models::VisionTransformerImpl& vit,
                                         const torch::Tensor& input) {
  if (absl::Status s = CheckCommon(vit, input, 0); !s.ok()) return s;
  const int64_t patch = vit.options().patch_size;
  if (input.size(2) % patch != 0 || input.size(3) % patch != 0) {
    return absl::InvalidArgumentError(absl::StrCat("image sides ", input.size(2), "x", input.size(3),
                                                   " are not multiples of the patch size ", patch));
  }
  return Guarded(kAttentionRollout, [&]() -> absl::StatusOr<Heatmap> {
    torch::NoGradGuard no_grad;
    std::vector<torch::Tensor> attention;
    const torch::Tensor logits = vit.ForwardWithAttention(input, &attention);
    const int64_t gh = input.size(2) / patch, gw = input.size(3) / patch, l = gh * gw + 1;
    torch::Tensor rollout = torch::eye(l, input.options().dtype(torch::kFloat32));
    for (const torch::Tensor& probabilities : attention) {
      TORCH_CHECK(probabilities.dim() == 4 && probabilities.size(2) == l && probabilities.size(3) == l,
                  "attention of shape ", probabilities.sizes());
      torch::Tensor a = probabilities[0].to(torch::kFloat32).mean(0) + torch::eye(l, rollout.options());
      a = a / a.sum(-1, /*keepdim=*/true);
      rollout = torch::matmul(a, rollout);
    }
    torch::Tensor map = rollout[0].slice(0, 1).reshape({gh, gw});
    const torch::Tensor min = map.min(), range = map.max() - min;
    map = range.item<double>() > 0 ? (map - min) / range : torch::zeros_like(map);
    return ToHeatmap(kAttentionRollout, map, logits);
  });
}

absl::StatusOr<Heatmap> Explain(models::Classifier& model, const torch::Tensor& input,
                                int64_t target_class) {
  if (auto* vit = dynamic_cast<models::VisionTransformerImpl*>(&model)) {
    if (absl::Status s = CheckCommon(model, input, target_class); !s.ok()) return s;
    return AttentionRollout(*vit, input);
  }
  return GradCam(model, input, target_class);
}

}  // namespace skinlesion::explain
