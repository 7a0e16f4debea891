// VGG16-BN and VGG19-BN (torchvision.models.vgg: numbered features, avgpool to
// 7x7, classifier.0/3/6).
#ifndef SKINLESION_MODELS_VGG_H_
#define SKINLESION_MODELS_VGG_H_

#include <cstdint>

#include <torch/nn/modules/container/sequential.h>

#include "skinlesion/models/classifier.h"
#include "skinlesion/models/layers.h"

namespace skinlesion::models {

struct VggOptions {
  int depth = 16;          // 16 or 19, always with batch norm.
  double dropout = 0.5;
  int64_t num_classes = 1000;
};

class VggImpl : public Classifier {
 public:
  VggImpl(const std::string& name, const VggOptions& options);
  torch::Tensor forward(const torch::Tensor& x) override;
  std::vector<std::string> HeadKeys() const override {
    return {"classifier.6.weight", "classifier.6.bias"};
  }
  bool HasFeatureMap() const override { return true; }
  torch::Tensor ForwardFeatures(const torch::Tensor& x) override;
  torch::Tensor ForwardHead(const torch::Tensor& features) override;

 private:
  Seq features_{nullptr};
  Seq classifier_{nullptr};
};
TORCH_MODULE(Vgg);

}  // namespace skinlesion::models

#endif  // SKINLESION_MODELS_VGG_H_
