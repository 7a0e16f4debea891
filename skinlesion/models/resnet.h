// ResNet 18/34/50/101/152 (torchvision.models.resnet, v1.5: stride on the 3x3 conv).
#ifndef SKINLESION_MODELS_RESNET_H_
#define SKINLESION_MODELS_RESNET_H_

#include <cstdint>
#include <vector>

#include <torch/nn/modules/batchnorm.h>
#include <torch/nn/modules/container/sequential.h>

#include "skinlesion/models/classifier.h"
#include "skinlesion/models/layers.h"

namespace skinlesion::models {

struct ResNetOptions {
  bool bottleneck = false;             // BasicBlock (18/34) or Bottleneck (50+).
  std::vector<int64_t> layers = {2, 2, 2, 2};
  int64_t num_classes = 1000;
  double dropout = 0.0;                // Before fc; torchvision has none (0).
  static ResNetOptions ForDepth(int depth);  // 18, 34, 50, 101, 152.
};

class ResNetImpl : public Classifier {
 public:
  ResNetImpl(const std::string& name, const ResNetOptions& options);
  torch::Tensor forward(const torch::Tensor& x) override;
  std::vector<std::string> HeadKeys() const override { return {"fc.weight", "fc.bias"}; }
  bool HasFeatureMap() const override { return true; }
  torch::Tensor ForwardFeatures(const torch::Tensor& x) override;
  torch::Tensor ForwardHead(const torch::Tensor& features) override;

 private:
  ResNetOptions options_;
  CountedConv2d conv1_{nullptr};
  torch::nn::BatchNorm2d bn1_{nullptr};
  Seq layer1_{nullptr}, layer2_{nullptr}, layer3_{nullptr}, layer4_{nullptr};
  CountedLinear fc_{nullptr};
};
TORCH_MODULE(ResNet);

}  // namespace skinlesion::models

#endif  // SKINLESION_MODELS_RESNET_H_
