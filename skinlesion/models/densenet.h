// DenseNet 121/169/201 (torchvision.models.densenet: features.conv0/norm0/
// denseblockN.denselayerK/transitionN/norm5, classifier).
#ifndef SKINLESION_MODELS_DENSENET_H_
#define SKINLESION_MODELS_DENSENET_H_

#include <cstdint>
#include <vector>

#include <torch/nn/modules/container/sequential.h>

#include "skinlesion/models/classifier.h"
#include "skinlesion/models/layers.h"

namespace skinlesion::models {

struct DenseNetOptions {
  int64_t growth_rate = 32;
  std::vector<int64_t> block_config = {6, 12, 24, 16};
  int64_t num_init_features = 64;
  int64_t bn_size = 4;
  double drop_rate = 0.0;   // Dropout after each dense layer (torchvision's drop_rate).
  double dropout = 0.0;     // Before the classifier (not in torchvision; 0 = none).
  int64_t num_classes = 1000;
  static DenseNetOptions ForDepth(int depth);  // 121, 169, 201.
};

class DenseNetImpl : public Classifier {
 public:
  DenseNetImpl(const std::string& name, const DenseNetOptions& options);
  torch::Tensor forward(const torch::Tensor& x) override;
  std::vector<std::string> HeadKeys() const override {
    return {"classifier.weight", "classifier.bias"};
  }
  bool HasFeatureMap() const override { return true; }
  torch::Tensor ForwardFeatures(const torch::Tensor& x) override;
  torch::Tensor ForwardHead(const torch::Tensor& features) override;

 private:
  DenseNetOptions options_;
  Seq features_{nullptr};
  CountedLinear classifier_{nullptr};
};
TORCH_MODULE(DenseNet);

}  // namespace skinlesion::models

#endif  // SKINLESION_MODELS_DENSENET_H_
