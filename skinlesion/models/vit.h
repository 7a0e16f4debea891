// Vision Transformer (torchvision.models.vision_transformer naming: conv_proj,
// class_token, encoder.pos_embedding, encoder.layers.encoder_layer_N.{ln_1,
// self_attention.{in_proj_weight,in_proj_bias,out_proj}, ln_2, mlp.0, mlp.3},
// encoder.ln, heads.head).
//
// Any input size whose sides are multiples of the patch size works: when the
// patch grid differs from the one the position embeddings were made for, they
// are interpolated bicubically (align_corners=True, torchvision's
// interpolate_embeddings) at forward time. AdaptStateDict does the same to a
// checkpoint made at another image size, so the stored tensor matches.
#ifndef SKINLESION_MODELS_VIT_H_
#define SKINLESION_MODELS_VIT_H_

#include <cstdint>
#include <vector>

#include <torch/nn/modules/container/sequential.h>
#include <torch/nn/modules/normalization.h>

#include "absl/status/statusor.h"

#include "skinlesion/models/classifier.h"
#include "skinlesion/models/layers.h"

namespace skinlesion::models {

struct VitOptions {
  int64_t image_size = 224;
  int64_t patch_size = 16;
  int64_t num_layers = 12;
  int64_t num_heads = 12;
  int64_t hidden_dim = 768;
  int64_t mlp_dim = 3072;
  double dropout = 0.0;
  double attention_dropout = 0.0;
  int64_t num_classes = 1000;
  static VitOptions Tiny16();   // 192 wide, 12 deep, 3 heads, mlp 768.
  static VitOptions Small16();  // 384, 12, 6, 1536.
  static VitOptions Base16();   // 768, 12, 12, 3072 (torchvision vit_b_16).
  static VitOptions Large16();  // 1024, 24, 16, 4096 (torchvision vit_l_16).
};

class VisionTransformerImpl : public Classifier {
 public:
  VisionTransformerImpl(const std::string& name, const VitOptions& options);
  torch::Tensor forward(const torch::Tensor& x) override;
  std::vector<std::string> HeadKeys() const override {
    return {"heads.head.weight", "heads.head.bias"};
  }
  absl::Status AdaptStateDict(TensorMap& state) const override;
  const VitOptions& options() const { return options_; }

  // forward() in eval mode (throws c10::Error in training mode) that also returns
  // each encoder block's attention probabilities, softmax(q.k^T / sqrt(d)), as
  // [N, heads, L, L] with L = 1 + patches (the class token first), in block order.
  // For attention rollout (skinlesion/explain); slower than forward() on
  // LibTorch 2 (no fused attention).
  torch::Tensor ForwardWithAttention(const torch::Tensor& x, std::vector<torch::Tensor>* attention);

 private:
  // Patch embedding + class token + position embedding (+ dropout): [N, L, D].
  torch::Tensor Embed(const torch::Tensor& input);

  VitOptions options_;
  CountedConv2d conv_proj_{nullptr};
  torch::Tensor class_token_;
  std::shared_ptr<torch::nn::Module> encoder_;
  torch::Tensor pos_embedding_;
  Seq layers_{nullptr};
  torch::nn::LayerNorm ln_{nullptr};
  Seq heads_{nullptr};
};
TORCH_MODULE(VisionTransformer);

// torchvision's interpolate_embeddings: pos [1, 1 + g*g, D] -> [1, 1 + gh*gw, D],
// bicubic with align_corners=True. InvalidArgument when the grid is not square.
absl::StatusOr<torch::Tensor> InterpolatePositionEmbedding(const torch::Tensor& pos, int64_t grid_h,
                                                           int64_t grid_w);

}  // namespace skinlesion::models

#endif  // SKINLESION_MODELS_VIT_H_
