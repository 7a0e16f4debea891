#include "skinlesion/models/efficientnet.h"

#include <cmath>

#include <torch/torch.h>

#include "skinlesion/common/logging.h"

namespace skinlesion::models {
namespace {

namespace F = torch::nn::functional;

class SqueezeExcitationImpl : public torch::nn::Module {
 public:
  SqueezeExcitationImpl(int64_t channels, int64_t squeeze) {
    fc1_ = register_module("fc1", MakeConv(channels, squeeze, 1, 1, 0, true));
    fc2_ = register_module("fc2", MakeConv(squeeze, channels, 1, 1, 0, true));
  }
  torch::Tensor forward(const torch::Tensor& x) {
    torch::Tensor s = F::adaptive_avg_pool2d(x, F::AdaptiveAvgPool2dFuncOptions(1));
    s = torch::sigmoid(fc2_(torch::silu(fc1_(s))));
    return s * x;
  }

 private:
  CountedConv2d fc1_{nullptr}, fc2_{nullptr};
};
TORCH_MODULE(SqueezeExcitation);

struct BlockConfig {
  double expand_ratio;
  int64_t kernel, stride, in, out, layers;
};

class MBConvImpl : public torch::nn::Module {
 public:
  MBConvImpl(const BlockConfig& c, double sd_prob) : sd_prob_(sd_prob) {
    use_res_ = c.stride == 1 && c.in == c.out;
    const int64_t expanded = MakeDivisible(c.in * c.expand_ratio);
    Seq block;
    int index = 0;
    if (expanded != c.in) {
      block->push_back(std::to_string(index++),
                       ConvNormActivation(c.in, expanded, 1, 1, 1, Activation::kSiLU));
    }
    block->push_back(std::to_string(index++), ConvNormActivation(expanded, expanded, c.kernel, c.stride,
                                                                 expanded, Activation::kSiLU));
    block->push_back(std::to_string(index++),
                     SqueezeExcitation(expanded, std::max<int64_t>(1, c.in / 4)));
    block->push_back(std::to_string(index++),
                     ConvNormActivation(expanded, c.out, 1, 1, 1, Activation::kNone));
    block_ = register_module("block", block);
  }
  torch::Tensor forward(const torch::Tensor& x) {
    torch::Tensor y = block_->forward(x);
    if (use_res_) {
      y = StochasticDepth(y, sd_prob_, is_training());
      y = y + x;
    }
    return y;
  }

 private:
  bool use_res_;
  double sd_prob_;
  Seq block_{nullptr};
};
TORCH_MODULE(MBConv);

}  // namespace

int64_t MakeDivisible(double v, int64_t divisor) {
  int64_t new_v = std::max<int64_t>(divisor, static_cast<int64_t>(v + divisor / 2.0) / divisor * divisor);
  if (new_v < 0.9 * v) new_v += divisor;
  return new_v;
}

EfficientNetOptions EfficientNetOptions::ForVariant(int b) {
  EfficientNetOptions o;
  switch (b) {
    case 0: o.width_mult = 1.0; o.depth_mult = 1.0; o.dropout = 0.2; break;
    case 1: o.width_mult = 1.0; o.depth_mult = 1.1; o.dropout = 0.2; break;
    case 2: o.width_mult = 1.1; o.depth_mult = 1.2; o.dropout = 0.3; break;
    case 3: o.width_mult = 1.2; o.depth_mult = 1.4; o.dropout = 0.3; break;
    case 4: o.width_mult = 1.4; o.depth_mult = 1.8; o.dropout = 0.4; break;
    default: SL_CHECK(false) << "unsupported EfficientNet variant b" << b;
  }
  return o;
}

EfficientNetImpl::EfficientNetImpl(const std::string& name, const EfficientNetOptions& options)
    : Classifier(name), options_(options) {
  num_classes_ = options.num_classes;
  auto ch = [&](int64_t c) { return MakeDivisible(c * options.width_mult); };
  auto depth = [&](int64_t n) { return static_cast<int64_t>(std::ceil(n * options.depth_mult)); };
  const std::vector<BlockConfig> settings = {
      {1, 3, 1, ch(32), ch(16), depth(1)},   {6, 3, 2, ch(16), ch(24), depth(2)},
      {6, 5, 2, ch(24), ch(40), depth(2)},   {6, 3, 2, ch(40), ch(80), depth(3)},
      {6, 5, 1, ch(80), ch(112), depth(3)},  {6, 5, 2, ch(112), ch(192), depth(4)},
      {6, 3, 1, ch(192), ch(320), depth(1)},
  };
  Seq features;
  features->push_back("0", ConvNormActivation(3, settings[0].in, 3, 2, 1, Activation::kSiLU));
  int64_t total_blocks = 0;
  for (const auto& s : settings) total_blocks += s.layers;
  int64_t block_id = 0;
  int stage_index = 1;
  for (const auto& s : settings) {
    Seq stage;
    for (int64_t i = 0; i < s.layers; ++i) {
      BlockConfig c = s;
      if (i > 0) {
        c.in = c.out;
        c.stride = 1;
      }
      const double sd = options.stochastic_depth_prob * static_cast<double>(block_id) / total_blocks;
      stage->push_back(std::to_string(i), MBConv(c, sd));
      ++block_id;
    }
    features->push_back(std::to_string(stage_index++), stage);
  }
  const int64_t last_in = settings.back().out;
  const int64_t last_out = 4 * last_in;
  features->push_back(std::to_string(stage_index),
                      ConvNormActivation(last_in, last_out, 1, 1, 1, Activation::kSiLU));
  features_ = register_module("features", features);
  Seq classifier;
  classifier->push_back("0", torch::nn::Dropout(torch::nn::DropoutOptions(options.dropout)));
  classifier->push_back("1", CountedLinear(last_out, options.num_classes));
  classifier_ = register_module("classifier", classifier);

  InitConvKaimingNormalFanOut(*this);
  InitBatchNormOnesZeros(*this);
  torch::NoGradGuard no_grad;
  for (auto& m : modules(false)) {
    if (auto* linear = m->as<torch::nn::LinearImpl>()) {
      const double range = 1.0 / std::sqrt(static_cast<double>(linear->options.out_features()));
      linear->weight.uniform_(-range, range);
      linear->bias.zero_();
    }
  }
}

torch::Tensor EfficientNetImpl::forward(const torch::Tensor& x) { return ForwardHead(ForwardFeatures(x)); }

torch::Tensor EfficientNetImpl::ForwardFeatures(const torch::Tensor& x) { return features_->forward(x); }

torch::Tensor EfficientNetImpl::ForwardHead(const torch::Tensor& features) {
  torch::Tensor y = F::adaptive_avg_pool2d(features, F::AdaptiveAvgPool2dFuncOptions(1)).flatten(1);
  return classifier_->forward(y);
}

}  // namespace skinlesion::models
