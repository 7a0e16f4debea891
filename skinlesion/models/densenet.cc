#include "skinlesion/models/densenet.h"

#include <torch/torch.h>

#include "skinlesion/common/logging.h"

namespace skinlesion::models {
namespace {

namespace F = torch::nn::functional;

class DenseLayerImpl : public torch::nn::Module {
 public:
  DenseLayerImpl(int64_t in, int64_t growth, int64_t bn_size, double drop_rate) : drop_rate_(drop_rate) {
    norm1_ = register_module("norm1", torch::nn::BatchNorm2d(in));
    conv1_ = register_module("conv1", MakeConv(in, bn_size * growth, 1, 1, 0, false));
    norm2_ = register_module("norm2", torch::nn::BatchNorm2d(bn_size * growth));
    conv2_ = register_module("conv2", MakeConv(bn_size * growth, growth, 3, 1, 1, false));
  }
  torch::Tensor forward(const torch::Tensor& x) {
    torch::Tensor y = conv1_(norm1_(x).relu_());
    y = conv2_(norm2_(y).relu_());
    if (drop_rate_ > 0) y = F::dropout(y, F::DropoutFuncOptions().p(drop_rate_).training(is_training()));
    return y;
  }

 private:
  double drop_rate_;
  torch::nn::BatchNorm2d norm1_{nullptr}, norm2_{nullptr};
  CountedConv2d conv1_{nullptr}, conv2_{nullptr};
};
TORCH_MODULE(DenseLayer);

class DenseBlockImpl : public torch::nn::Module {
 public:
  DenseBlockImpl(int64_t layers, int64_t in, int64_t growth, int64_t bn_size, double drop_rate) {
    for (int64_t i = 0; i < layers; ++i) {
      layers_.push_back(register_module("denselayer" + std::to_string(i + 1),
                                        DenseLayer(in + i * growth, growth, bn_size, drop_rate)));
    }
  }
  torch::Tensor forward(const torch::Tensor& x) {
    std::vector<torch::Tensor> features = {x};
    for (auto& layer : layers_) features.push_back(layer->forward(torch::cat(features, 1)));
    return torch::cat(features, 1);
  }

 private:
  std::vector<DenseLayer> layers_;
};
TORCH_MODULE(DenseBlock);

Seq Transition(int64_t in, int64_t out) {
  Seq seq;
  seq->push_back("norm", torch::nn::BatchNorm2d(in));
  seq->push_back("relu", torch::nn::ReLU(torch::nn::ReLUOptions(true)));
  seq->push_back("conv", MakeConv(in, out, 1, 1, 0, false));
  seq->push_back("pool", torch::nn::AvgPool2d(torch::nn::AvgPool2dOptions(2).stride(2)));
  return seq;
}

}  // namespace

DenseNetOptions DenseNetOptions::ForDepth(int depth) {
  DenseNetOptions o;
  switch (depth) {
    case 121: o.block_config = {6, 12, 24, 16}; break;
    case 169: o.block_config = {6, 12, 32, 32}; break;
    case 201: o.block_config = {6, 12, 48, 32}; break;
    default: SL_CHECK(false) << "unsupported DenseNet depth " << depth;
  }
  return o;
}

DenseNetImpl::DenseNetImpl(const std::string& name, const DenseNetOptions& options)
    : Classifier(name), options_(options) {
  num_classes_ = options.num_classes;
  Seq features;
  features->push_back("conv0", MakeConv(3, options.num_init_features, 7, 2, 3, false));
  features->push_back("norm0", torch::nn::BatchNorm2d(options.num_init_features));
  features->push_back("relu0", torch::nn::ReLU(torch::nn::ReLUOptions(true)));
  features->push_back("pool0", torch::nn::MaxPool2d(torch::nn::MaxPool2dOptions(3).stride(2).padding(1)));
  int64_t num_features = options.num_init_features;
  for (size_t i = 0; i < options.block_config.size(); ++i) {
    const int64_t layers = options.block_config[i];
    features->push_back("denseblock" + std::to_string(i + 1),
                        DenseBlock(layers, num_features, options.growth_rate, options.bn_size,
                                   options.drop_rate));
    num_features += layers * options.growth_rate;
    if (i + 1 != options.block_config.size()) {
      features->push_back("transition" + std::to_string(i + 1),
                          Transition(num_features, num_features / 2));
      num_features /= 2;
    }
  }
  features->push_back("norm5", torch::nn::BatchNorm2d(num_features));
  features_ = register_module("features", features);
  classifier_ = register_module("classifier", CountedLinear(num_features, options.num_classes));

  torch::NoGradGuard no_grad;
  for (auto& m : modules(/*include_self=*/false)) {
    if (auto* conv = m->as<torch::nn::Conv2dImpl>()) torch::nn::init::kaiming_normal_(conv->weight);
  }
  InitBatchNormOnesZeros(*this);
  classifier_->bias.zero_();
}

torch::Tensor DenseNetImpl::forward(const torch::Tensor& x) { return ForwardHead(ForwardFeatures(x)); }

torch::Tensor DenseNetImpl::ForwardFeatures(const torch::Tensor& x) { return features_->forward(x).relu_(); }

torch::Tensor DenseNetImpl::ForwardHead(const torch::Tensor& features) {
  torch::Tensor y = F::adaptive_avg_pool2d(features, F::AdaptiveAvgPool2dFuncOptions(1)).flatten(1);
  if (options_.dropout > 0) y = F::dropout(y, F::DropoutFuncOptions().p(options_.dropout).training(is_training()));
  return classifier_(y);
}

}  // namespace skinlesion::models
