#include "skinlesion/models/resnet.h"

#include <torch/torch.h>

#include "skinlesion/common/logging.h"

namespace skinlesion::models {
namespace {

namespace F = torch::nn::functional;

Seq Downsample(int64_t in, int64_t out, int64_t stride) {
  Seq seq;
  seq->push_back("0", MakeConv(in, out, 1, stride, 0, false));
  seq->push_back("1", torch::nn::BatchNorm2d(out));
  return seq;
}

class BasicBlockImpl : public torch::nn::Module {
 public:
  static constexpr int64_t kExpansion = 1;
  BasicBlockImpl(int64_t inplanes, int64_t planes, int64_t stride) {
    conv1_ = register_module("conv1", MakeConv(inplanes, planes, 3, stride, 1, false));
    bn1_ = register_module("bn1", torch::nn::BatchNorm2d(planes));
    conv2_ = register_module("conv2", MakeConv(planes, planes, 3, 1, 1, false));
    bn2_ = register_module("bn2", torch::nn::BatchNorm2d(planes));
    if (stride != 1 || inplanes != planes * kExpansion) {
      downsample_ = register_module("downsample", Downsample(inplanes, planes * kExpansion, stride));
    }
  }
  // ReLU in place on fresh batch-norm outputs, as torchvision's ReLU(inplace=True):
  // one allocation (and its page faults) less per activation.
  torch::Tensor forward(const torch::Tensor& x) {
    torch::Tensor out = bn1_(conv1_(x)).relu_();
    out = bn2_(conv2_(out));
    out += downsample_ ? downsample_->forward(x) : x;
    return torch::relu_(out);
  }

 private:
  CountedConv2d conv1_{nullptr}, conv2_{nullptr};
  torch::nn::BatchNorm2d bn1_{nullptr}, bn2_{nullptr};
  Seq downsample_{nullptr};
};
TORCH_MODULE(BasicBlock);

class BottleneckImpl : public torch::nn::Module {
 public:
  static constexpr int64_t kExpansion = 4;
  BottleneckImpl(int64_t inplanes, int64_t planes, int64_t stride) {
    conv1_ = register_module("conv1", MakeConv(inplanes, planes, 1, 1, 0, false));
    bn1_ = register_module("bn1", torch::nn::BatchNorm2d(planes));
    conv2_ = register_module("conv2", MakeConv(planes, planes, 3, stride, 1, false));
    bn2_ = register_module("bn2", torch::nn::BatchNorm2d(planes));
    conv3_ = register_module("conv3", MakeConv(planes, planes * kExpansion, 1, 1, 0, false));
    bn3_ = register_module("bn3", torch::nn::BatchNorm2d(planes * kExpansion));
    if (stride != 1 || inplanes != planes * kExpansion) {
      downsample_ = register_module("downsample", Downsample(inplanes, planes * kExpansion, stride));
    }
  }
  torch::Tensor forward(const torch::Tensor& x) {
    torch::Tensor out = bn1_(conv1_(x)).relu_();
    out = bn2_(conv2_(out)).relu_();
    out = bn3_(conv3_(out));
    out += downsample_ ? downsample_->forward(x) : x;
    return torch::relu_(out);
  }

 private:
  CountedConv2d conv1_{nullptr}, conv2_{nullptr}, conv3_{nullptr};
  torch::nn::BatchNorm2d bn1_{nullptr}, bn2_{nullptr}, bn3_{nullptr};
  Seq downsample_{nullptr};
};
TORCH_MODULE(Bottleneck);

}  // namespace

ResNetOptions ResNetOptions::ForDepth(int depth) {
  ResNetOptions o;
  switch (depth) {
    case 18: o.layers = {2, 2, 2, 2}; break;
    case 34: o.layers = {3, 4, 6, 3}; break;
    case 50: o.layers = {3, 4, 6, 3}; o.bottleneck = true; break;
    case 101: o.layers = {3, 4, 23, 3}; o.bottleneck = true; break;
    case 152: o.layers = {3, 8, 36, 3}; o.bottleneck = true; break;
    default: SL_CHECK(false) << "unsupported ResNet depth " << depth;
  }
  return o;
}

ResNetImpl::ResNetImpl(const std::string& name, const ResNetOptions& options)
    : Classifier(name), options_(options) {
  SL_CHECK(options.layers.size() == 4) << "ResNet needs 4 stages";
  num_classes_ = options.num_classes;
  conv1_ = register_module("conv1", MakeConv(3, 64, 7, 2, 3, false));
  bn1_ = register_module("bn1", torch::nn::BatchNorm2d(64));
  const int64_t expansion = options.bottleneck ? BottleneckImpl::kExpansion : BasicBlockImpl::kExpansion;
  int64_t inplanes = 64;
  auto make_layer = [&](int64_t planes, int64_t blocks, int64_t stride) {
    Seq seq;
    for (int64_t i = 0; i < blocks; ++i) {
      const int64_t s = i == 0 ? stride : 1;
      if (options.bottleneck) {
        seq->push_back(std::to_string(i), Bottleneck(inplanes, planes, s));
      } else {
        seq->push_back(std::to_string(i), BasicBlock(inplanes, planes, s));
      }
      inplanes = planes * expansion;
    }
    return seq;
  };
  layer1_ = register_module("layer1", make_layer(64, options.layers[0], 1));
  layer2_ = register_module("layer2", make_layer(128, options.layers[1], 2));
  layer3_ = register_module("layer3", make_layer(256, options.layers[2], 2));
  layer4_ = register_module("layer4", make_layer(512, options.layers[3], 2));
  fc_ = register_module("fc", CountedLinear(512 * expansion, options.num_classes));
  InitConvKaimingNormalFanOut(*this);
  InitBatchNormOnesZeros(*this);
}

torch::Tensor ResNetImpl::forward(const torch::Tensor& x) { return ForwardHead(ForwardFeatures(x)); }

torch::Tensor ResNetImpl::ForwardFeatures(const torch::Tensor& x) {
  torch::Tensor y = bn1_(conv1_(x)).relu_();
  y = F::max_pool2d(y, F::MaxPool2dFuncOptions(3).stride(2).padding(1));
  return layer4_->forward(layer3_->forward(layer2_->forward(layer1_->forward(y))));
}

torch::Tensor ResNetImpl::ForwardHead(const torch::Tensor& features) {
  torch::Tensor y = F::adaptive_avg_pool2d(features, F::AdaptiveAvgPool2dFuncOptions(1)).flatten(1);
  if (options_.dropout > 0) y = F::dropout(y, F::DropoutFuncOptions().p(options_.dropout).training(is_training()));
  return fc_(y);
}

}  // namespace skinlesion::models
