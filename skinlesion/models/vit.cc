#include "skinlesion/models/vit.h"

#include <cmath>

#include <torch/torch.h>
#include <torch/version.h>

#include "absl/strings/str_cat.h"
#include "skinlesion/common/logging.h"

namespace skinlesion::models {
namespace {

namespace F = torch::nn::functional;

// nn.MultiheadAttention(batch_first=True) with torchvision's parameter names.
class SelfAttentionImpl : public torch::nn::Module {
 public:
  SelfAttentionImpl(int64_t dim, int64_t heads, double dropout)
      : dim_(dim), heads_(heads), dropout_(dropout) {
    SL_CHECK(dim % heads == 0) << "hidden_dim " << dim << " not divisible by heads " << heads;
    in_proj_weight_ = register_parameter("in_proj_weight", torch::empty({3 * dim, dim}));
    in_proj_bias_ = register_parameter("in_proj_bias", torch::zeros({3 * dim}));
    out_proj_ = register_module("out_proj", CountedLinear(dim, dim));
    torch::NoGradGuard no_grad;
    torch::nn::init::xavier_uniform_(in_proj_weight_);
    out_proj_->bias.zero_();
  }

  torch::Tensor forward(const torch::Tensor& x) {
    const int64_t n = x.size(0), l = x.size(1), head_dim = dim_ / heads_;
    torch::Tensor qkv = at::linear(x, in_proj_weight_, in_proj_bias_);
    const double p = is_training() ? dropout_ : 0.0;
#if TORCH_VERSION_MAJOR >= 2
    qkv = qkv.reshape({n, l, 3, heads_, head_dim}).permute({2, 0, 3, 1, 4});
    torch::Tensor out = at::scaled_dot_product_attention(qkv[0], qkv[1], qkv[2], {}, p);
    out = out.transpose(1, 2).reshape({n, l, dim_});
#else
    // Contiguous [N*heads, L, d] operands and bmm, as PyTorch's own attention does:
    // faster on CPU than matmul over strided 4-D views (bench/reference/README.md).
    const std::vector<torch::Tensor> parts = qkv.chunk(3, -1);
    auto heads_first = [&](const torch::Tensor& t) {
      return t.reshape({n, l, heads_, head_dim}).transpose(1, 2).reshape({n * heads_, l, head_dim});
    };
    const torch::Tensor q = heads_first(parts[0]) * (1.0 / std::sqrt(static_cast<double>(head_dim)));
    torch::Tensor attn = torch::bmm(q, heads_first(parts[1]).transpose(1, 2)).softmax(-1);
    if (p > 0) attn = F::dropout(attn, F::DropoutFuncOptions().p(p).training(true));
    torch::Tensor out = torch::bmm(attn, heads_first(parts[2]))
                            .reshape({n, heads_, l, head_dim})
                            .transpose(1, 2)
                            .reshape({n, l, dim_});
#endif
    if (FlopCounter::Active()) {
      FlopCounter::Add(n * l * dim_ * 3 * dim_);         // in_proj
      FlopCounter::Add(2 * n * heads_ * l * l * head_dim);  // q.k^T and attn.v
    }
    return out_proj_(out);
  }

  // The same in eval mode (no dropout), with softmax(q.k^T / sqrt(d)) computed
  // explicitly and returned in *probabilities as [N, heads, L, L].
  torch::Tensor ForwardWithProbabilities(const torch::Tensor& x, torch::Tensor* probabilities) {
    const int64_t n = x.size(0), l = x.size(1), head_dim = dim_ / heads_;
    const std::vector<torch::Tensor> parts = at::linear(x, in_proj_weight_, in_proj_bias_).chunk(3, -1);
    auto heads_first = [&](const torch::Tensor& t) {
      return t.reshape({n, l, heads_, head_dim}).transpose(1, 2).reshape({n * heads_, l, head_dim});
    };
    const torch::Tensor q = heads_first(parts[0]) * (1.0 / std::sqrt(static_cast<double>(head_dim)));
    const torch::Tensor attn = torch::bmm(q, heads_first(parts[1]).transpose(1, 2)).softmax(-1);
    *probabilities = attn.reshape({n, heads_, l, l});
    const torch::Tensor out = torch::bmm(attn, heads_first(parts[2]))
                                  .reshape({n, heads_, l, head_dim})
                                  .transpose(1, 2)
                                  .reshape({n, l, dim_});
    return out_proj_(out);
  }

 private:
  int64_t dim_, heads_;
  double dropout_;
  torch::Tensor in_proj_weight_, in_proj_bias_;
  CountedLinear out_proj_{nullptr};
};
TORCH_MODULE(SelfAttention);

class EncoderBlockImpl : public torch::nn::Module {
 public:
  explicit EncoderBlockImpl(const VitOptions& o) : dropout_(o.dropout) {
    ln_1_ = register_module("ln_1", torch::nn::LayerNorm(
                                        torch::nn::LayerNormOptions({o.hidden_dim}).eps(1e-6)));
    self_attention_ = register_module("self_attention",
                                      SelfAttention(o.hidden_dim, o.num_heads, o.attention_dropout));
    ln_2_ = register_module("ln_2", torch::nn::LayerNorm(
                                        torch::nn::LayerNormOptions({o.hidden_dim}).eps(1e-6)));
    Seq mlp;
    CountedLinear fc1(o.hidden_dim, o.mlp_dim), fc2(o.mlp_dim, o.hidden_dim);
    mlp->push_back("0", fc1);
    mlp->push_back("1", torch::nn::GELU());
    mlp->push_back("2", torch::nn::Dropout(torch::nn::DropoutOptions(o.dropout)));
    mlp->push_back("3", fc2);
    mlp->push_back("4", torch::nn::Dropout(torch::nn::DropoutOptions(o.dropout)));
    mlp_ = register_module("mlp", mlp);
    torch::NoGradGuard no_grad;
    for (auto* fc : {fc1.get(), fc2.get()}) {
      torch::nn::init::xavier_uniform_(fc->weight);
      fc->bias.normal_(0, 1e-6);
    }
  }
  torch::Tensor forward(const torch::Tensor& input) {
    torch::Tensor x = self_attention_(ln_1_(input));
    x = F::dropout(x, F::DropoutFuncOptions().p(dropout_).training(is_training() && dropout_ > 0));
    x = x + input;
    return x + mlp_->forward(ln_2_(x));
  }
  // forward() in eval mode, also returning the attention probabilities.
  torch::Tensor ForwardWithAttention(const torch::Tensor& input, torch::Tensor* probabilities) {
    torch::Tensor x = self_attention_->ForwardWithProbabilities(ln_1_(input), probabilities) + input;
    return x + mlp_->forward(ln_2_(x));
  }

 private:
  double dropout_;
  torch::nn::LayerNorm ln_1_{nullptr}, ln_2_{nullptr};
  SelfAttention self_attention_{nullptr};
  Seq mlp_{nullptr};
};
TORCH_MODULE(EncoderBlock);

int64_t SquareSide(int64_t n) {
  const auto side = static_cast<int64_t>(std::llround(std::sqrt(static_cast<double>(n))));
  return side * side == n ? side : -1;
}

}  // namespace

VitOptions VitOptions::Tiny16() {
  VitOptions o;
  o.hidden_dim = 192, o.num_layers = 12, o.num_heads = 3, o.mlp_dim = 768;
  return o;
}
VitOptions VitOptions::Small16() {
  VitOptions o;
  o.hidden_dim = 384, o.num_layers = 12, o.num_heads = 6, o.mlp_dim = 1536;
  return o;
}
VitOptions VitOptions::Base16() { return VitOptions(); }
VitOptions VitOptions::Large16() {
  VitOptions o;
  o.hidden_dim = 1024, o.num_layers = 24, o.num_heads = 16, o.mlp_dim = 4096;
  return o;
}

absl::StatusOr<torch::Tensor> InterpolatePositionEmbedding(const torch::Tensor& pos, int64_t grid_h,
                                                           int64_t grid_w) {
  if (pos.dim() != 3 || pos.size(0) != 1 || pos.size(1) < 2) {
    return absl::InvalidArgumentError(
        absl::StrCat("unexpected position embedding shape ", c10::str(pos.sizes())));
  }
  const int64_t seq = pos.size(1) - 1, dim = pos.size(2);
  if (seq == grid_h * grid_w) return pos;
  const int64_t side = SquareSide(seq);
  if (side < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("position embedding of ", seq, " patches is not a square grid"));
  }
  torch::Tensor token = pos.slice(1, 0, 1);
  torch::Tensor img = pos.slice(1, 1).permute({0, 2, 1}).reshape({1, dim, side, side});
  img = F::interpolate(img, F::InterpolateFuncOptions()
                                .size(std::vector<int64_t>{grid_h, grid_w})
                                .mode(torch::kBicubic)
                                .align_corners(true));
  img = img.reshape({1, dim, grid_h * grid_w}).permute({0, 2, 1});
  return torch::cat({token, img}, 1);
}

VisionTransformerImpl::VisionTransformerImpl(const std::string& name, const VitOptions& o)
    : Classifier(name), options_(o) {
  SL_CHECK(o.patch_size > 0 && o.image_size % o.patch_size == 0)
      << "image size " << o.image_size << " not divisible by patch size " << o.patch_size;
  num_classes_ = o.num_classes;
  conv_proj_ = register_module("conv_proj", MakeConv(3, o.hidden_dim, o.patch_size, o.patch_size, 0, true));
  class_token_ = register_parameter("class_token", torch::zeros({1, 1, o.hidden_dim}));
  const int64_t grid = o.image_size / o.patch_size;
  encoder_ = register_module("encoder", std::make_shared<torch::nn::Module>("Encoder"));
  pos_embedding_ = encoder_->register_parameter(
      "pos_embedding", torch::empty({1, grid * grid + 1, o.hidden_dim}).normal_(0, 0.02));
  layers_ = encoder_->register_module("layers", Seq());
  for (int64_t i = 0; i < o.num_layers; ++i) {
    layers_->push_back("encoder_layer_" + std::to_string(i), EncoderBlock(o));
  }
  ln_ = encoder_->register_module(
      "ln", torch::nn::LayerNorm(torch::nn::LayerNormOptions({o.hidden_dim}).eps(1e-6)));
  heads_ = register_module("heads", Seq());
  CountedLinear head(o.hidden_dim, o.num_classes);
  heads_->push_back("head", head);

  torch::NoGradGuard no_grad;
  const double fan_in = 3.0 * o.patch_size * o.patch_size;
  conv_proj_->weight.normal_(0, std::sqrt(1.0 / fan_in)).clamp_(-2.0, 2.0);
  conv_proj_->bias.zero_();
  head->weight.zero_();
  head->bias.zero_();
}

torch::Tensor VisionTransformerImpl::forward(const torch::Tensor& input) {
  torch::Tensor x = Embed(input);
  x = ln_(layers_->forward(x));
  return heads_->forward(x.select(1, 0));
}

torch::Tensor VisionTransformerImpl::ForwardWithAttention(const torch::Tensor& input,
                                                          std::vector<torch::Tensor>* attention) {
  TORCH_CHECK(!is_training(), "ForwardWithAttention needs eval mode");
  attention->clear();
  torch::Tensor x = Embed(input);
  for (size_t i = 0; i < layers_->size(); ++i) {
    torch::Tensor probabilities;
    x = layers_->ptr<EncoderBlockImpl>(i)->ForwardWithAttention(x, &probabilities);
    attention->push_back(std::move(probabilities));
  }
  return heads_->forward(ln_(x).select(1, 0));
}

torch::Tensor VisionTransformerImpl::Embed(const torch::Tensor& input) {
  const int64_t n = input.size(0);
  torch::Tensor x = conv_proj_(input);  // [N, D, gh, gw]
  const int64_t gh = x.size(2), gw = x.size(3);
  x = x.reshape({n, options_.hidden_dim, gh * gw}).permute({0, 2, 1});
  x = torch::cat({class_token_.expand({n, -1, -1}), x}, 1);
  torch::Tensor pos = pos_embedding_;
  if (pos.size(1) != gh * gw + 1) {
    auto interpolated = InterpolatePositionEmbedding(pos, gh, gw);
    SL_CHECK(interpolated.ok()) << interpolated.status();
    pos = *interpolated;
  }
  x = x + pos;
  return F::dropout(x, F::DropoutFuncOptions().p(options_.dropout).training(is_training() && options_.dropout > 0));
}

absl::Status VisionTransformerImpl::AdaptStateDict(TensorMap& state) const {
  auto it = state.find("encoder.pos_embedding");
  if (it == state.end() || it->second.sizes() == pos_embedding_.sizes()) return absl::OkStatus();
  const int64_t grid = options_.image_size / options_.patch_size;
  if (it->second.dim() != 3 || it->second.size(2) != pos_embedding_.size(2)) {
    return absl::OkStatus();  // Reported as a shape mismatch by the loader.
  }
  auto interpolated = InterpolatePositionEmbedding(it->second.to(torch::kFloat), grid, grid);
  if (!interpolated.ok()) return interpolated.status();
  SL_LOG(INFO) << "interpolated encoder.pos_embedding from " << it->second.sizes() << " to "
               << interpolated->sizes();
  it->second = *interpolated;
  return absl::OkStatus();
}

}  // namespace skinlesion::models
