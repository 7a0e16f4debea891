// Explanation heatmaps for the model zoo (docs/inference.md, "Explanations"):
//
//  - GradCam (Selvaraju et al. 2017) for the CNNs (ResNet, DenseNet, EfficientNet,
//    VGG) on the last convolutional feature map A [C, h, w] (Classifier::
//    ForwardFeatures): g = d logit[target] / dA, w_c = mean over (h, w) of g_c,
//    map = ReLU(sum_c w_c A_c), divided by its maximum (an all-zero map stays zero).
//  - AttentionRollout (Abnar & Zuidema 2020) for the ViT: per block, the attention
//    probabilities averaged over heads, plus the identity, rows re-normalised to 1;
//    multiplied through the blocks (R = A_l ... A_1); the class token's row over the
//    patch tokens as the patch grid, min-max normalised to [0, 1] (a constant map
//    becomes zero).
//
// Heat is at the feature-grid resolution (7x7 for ResNet-50 at 224, 14x14 for
// ViT-B/16 at 224), row-major, every value in [0, 1].
//
// Thread-safe with respect to concurrent forward() calls on the same module: the
// module is not mutated (no parameter gradients are accumulated). The module must
// be in eval mode. Must not run under torch::InferenceMode (Grad-CAM needs autograd).
#ifndef SKINLESION_EXPLAIN_EXPLAIN_H_
#define SKINLESION_EXPLAIN_EXPLAIN_H_

#include <cstdint>
#include <string>
#include <vector>

#include <torch/types.h>

#include "absl/status/statusor.h"
#include "skinlesion/models/classifier.h"
#include "skinlesion/models/vit.h"

namespace skinlesion::explain {

inline constexpr char kGradCam[] = "grad-cam";
inline constexpr char kAttentionRollout[] = "attention-rollout";

struct Heatmap {
  std::string method;  // kGradCam or kAttentionRollout.
  int width = 0;
  int height = 0;
  std::vector<float> heat;  // height * width values in [0, 1], row-major.
  std::vector<float> logits;  // The forward pass's logits [num_classes] (same run).
};

// input: [1, 3, H, W] float on the model's device. InvalidArgument for another
// shape, a target outside [0, num_classes), a model without a feature map;
// FailedPrecondition in training mode or under InferenceMode; Internal for a
// LibTorch error or a non-finite map.
absl::StatusOr<Heatmap> GradCam(models::Classifier& model, const torch::Tensor& input,
                                int64_t target_class);

// input: [1, 3, H, W] (sides multiples of the patch size). Errors as GradCam.
absl::StatusOr<Heatmap> AttentionRollout(models::VisionTransformerImpl& vit,
                                         const torch::Tensor& input);

// The method that fits `model`: AttentionRollout for a ViT (target_class is
// checked but does not change the map), GradCam for a model with a feature map,
// InvalidArgument otherwise.
absl::StatusOr<Heatmap> Explain(models::Classifier& model, const torch::Tensor& input,
                                int64_t target_class);

}  // namespace skinlesion::explain

#endif  // SKINLESION_EXPLAIN_EXPLAIN_H_
