// EfficientNet B0-B4 (torchvision.models.efficientnet, V1 MBConv blocks with
// squeeze-excitation and stochastic depth; BatchNorm eps 1e-5 as torchvision's
// b0-b4; b5+ and V2 use eps 1e-3 and are not offered).
#ifndef SKINLESION_MODELS_EFFICIENTNET_H_
#define SKINLESION_MODELS_EFFICIENTNET_H_

#include <cstdint>

#include <torch/nn/modules/container/sequential.h>

#include "skinlesion/models/classifier.h"
#include "skinlesion/models/layers.h"

namespace skinlesion::models {

struct EfficientNetOptions {
  double width_mult = 1.0;
  double depth_mult = 1.0;
  double dropout = 0.2;                 // Before the classifier.
  double stochastic_depth_prob = 0.2;   // Max; scaled linearly by block index.
  int64_t num_classes = 1000;
  static EfficientNetOptions ForVariant(int b);  // 0..4.
};

class EfficientNetImpl : public Classifier {
 public:
  EfficientNetImpl(const std::string& name, const EfficientNetOptions& options);
  torch::Tensor forward(const torch::Tensor& x) override;
  std::vector<std::string> HeadKeys() const override {
    return {"classifier.1.weight", "classifier.1.bias"};
  }
  bool HasFeatureMap() const override { return true; }
  torch::Tensor ForwardFeatures(const torch::Tensor& x) override;
  torch::Tensor ForwardHead(const torch::Tensor& features) override;

 private:
  EfficientNetOptions options_;
  Seq features_{nullptr};
  Seq classifier_{nullptr};
};
TORCH_MODULE(EfficientNet);

// torchvision's _make_divisible(v, 8).
int64_t MakeDivisible(double v, int64_t divisor = 8);

}  // namespace skinlesion::models

#endif  // SKINLESION_MODELS_EFFICIENTNET_H_
