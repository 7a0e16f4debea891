// The common base of every image classifier in the model zoo.
//
// Each architecture (ResNet, DenseNet, EfficientNet, VGG, ViT) derives from
// Classifier, so trainers and servers can hold a std::shared_ptr<Classifier> and
// call forward() without knowing which one it is. Parameter and buffer names are
// exactly torchvision 0.14's state_dict keys.
#ifndef SKINLESION_MODELS_CLASSIFIER_H_
#define SKINLESION_MODELS_CLASSIFIER_H_

#include <map>
#include <string>
#include <vector>

#include <torch/nn/module.h>

#include "absl/status/status.h"

namespace skinlesion::models {

// Name -> tensor, in torchvision naming (as returned by StateDict()).
using TensorMap = std::map<std::string, torch::Tensor>;

class Classifier : public torch::nn::Module {
 public:
  explicit Classifier(std::string architecture)
      : torch::nn::Module(architecture), architecture_(std::move(architecture)) {}
  ~Classifier() override = default;

  // x: [N, 3, H, W] float, normalised. Returns logits [N, num_classes].
  virtual torch::Tensor forward(const torch::Tensor& x) = 0;

  // Keys of the final classification layer (weight first, then bias), e.g.
  // {"fc.weight", "fc.bias"}. LoadStateDict replaces these when class counts differ.
  virtual std::vector<std::string> HeadKeys() const = 0;

  // Rewrites a checkpoint's tensors before loading into this module, e.g. a ViT
  // interpolates position embeddings of another image size. Default: nothing.
  virtual absl::Status AdaptStateDict(TensorMap& state) const { return absl::OkStatus(); }

  // For explanations (skinlesion/explain, Grad-CAM): a CNN splits forward() at its
  // last convolutional feature map, so that
  //   forward(x) == ForwardHead(ForwardFeatures(x)).
  // The map is the one torchvision users hook: ResNet layer4, DenseNet features
  // after the final norm + ReLU, EfficientNet features' last block, VGG features'
  // last ReLU. HasFeatureMap() is false for models without one (ViT); calling the
  // two others on them throws c10::Error.
  virtual bool HasFeatureMap() const { return false; }
  // x: [N, 3, H, W] -> the feature map [N, C, h, w].
  virtual torch::Tensor ForwardFeatures(const torch::Tensor& x) {
    TORCH_CHECK(false, architecture_, " has no convolutional feature map");
    return {};
  }
  // ForwardFeatures' output -> logits [N, num_classes].
  virtual torch::Tensor ForwardHead(const torch::Tensor& features) {
    TORCH_CHECK(false, architecture_, " has no convolutional feature map");
    return {};
  }

  const std::string& architecture() const { return architecture_; }
  int64_t num_classes() const { return num_classes_; }

 protected:
  int64_t num_classes_ = 0;

 private:
  std::string architecture_;
};

}  // namespace skinlesion::models

#endif  // SKINLESION_MODELS_CLASSIFIER_H_
