#include "skinlesion/models/vgg.h"

#include <torch/torch.h>

#include "skinlesion/common/logging.h"
#include "skinlesion/models/layers.h"

namespace skinlesion::models {

namespace F = torch::nn::functional;

VggImpl::VggImpl(const std::string& name, const VggOptions& options) : Classifier(name) {
  num_classes_ = options.num_classes;
  constexpr int M = -1;
  std::vector<int> cfg;
  if (options.depth == 16) {
    cfg = {64, 64, M, 128, 128, M, 256, 256, 256, M, 512, 512, 512, M, 512, 512, 512, M};
  } else {
    SL_CHECK(options.depth == 19) << "unsupported VGG depth " << options.depth;
    cfg = {64, 64, M, 128, 128, M, 256, 256, 256, 256, M, 512, 512, 512, 512, M, 512, 512, 512, 512, M};
  }
  Seq features;
  int64_t in = 3;
  int index = 0;
  for (int v : cfg) {
    if (v == M) {
      features->push_back(std::to_string(index++),
                          torch::nn::MaxPool2d(torch::nn::MaxPool2dOptions(2).stride(2)));
    } else {
      features->push_back(std::to_string(index++), MakeConv(in, v, 3, 1, 1, true));
      features->push_back(std::to_string(index++), torch::nn::BatchNorm2d(v));
      features->push_back(std::to_string(index++), torch::nn::ReLU(torch::nn::ReLUOptions(true)));
      in = v;
    }
  }
  features_ = register_module("features", features);
  Seq classifier;
  classifier->push_back("0", CountedLinear(512 * 7 * 7, 4096));
  classifier->push_back("1", torch::nn::ReLU(torch::nn::ReLUOptions(true)));
  classifier->push_back("2", torch::nn::Dropout(torch::nn::DropoutOptions(options.dropout)));
  classifier->push_back("3", CountedLinear(4096, 4096));
  classifier->push_back("4", torch::nn::ReLU(torch::nn::ReLUOptions(true)));
  classifier->push_back("5", torch::nn::Dropout(torch::nn::DropoutOptions(options.dropout)));
  classifier->push_back("6", CountedLinear(4096, options.num_classes));
  classifier_ = register_module("classifier", classifier);

  InitConvKaimingNormalFanOut(*this);
  InitBatchNormOnesZeros(*this);
  torch::NoGradGuard no_grad;
  for (auto& m : modules(false)) {
    if (auto* linear = m->as<torch::nn::LinearImpl>()) {
      linear->weight.normal_(0, 0.01);
      linear->bias.zero_();
    }
  }
}

torch::Tensor VggImpl::forward(const torch::Tensor& x) {
  torch::Tensor y = features_->forward(x);
  y = F::adaptive_avg_pool2d(y, F::AdaptiveAvgPool2dFuncOptions({7, 7})).flatten(1);
  return classifier_->forward(y);
}

// features_ ends with ReLU, MaxPool: the feature map is the last ReLU's output.
torch::Tensor VggImpl::ForwardFeatures(const torch::Tensor& x) {
  torch::Tensor y = x;
  auto it = features_->begin();
  for (size_t i = 0; i + 1 < features_->size(); ++i, ++it) y = it->forward<torch::Tensor>(y);
  return y;
}

torch::Tensor VggImpl::ForwardHead(const torch::Tensor& features) {
  torch::Tensor y = (features_->end() - 1)->forward<torch::Tensor>(features);
  y = F::adaptive_avg_pool2d(y, F::AdaptiveAvgPool2dFuncOptions({7, 7})).flatten(1);
  return classifier_->forward(y);
}

}  // namespace skinlesion::models
