// The feature out-of-distribution score (skinlesion/common/ood.h, "mahalanobis";
// Lee et al., "A Simple Unified Framework for Detecting Out-of-Distribution Samples
// and Adversarial Attacks", NeurIPS 2018): class-conditional Gaussians with one
// shared covariance over a CNN's penultimate features, fitted on the training images;
// an image's score is its smallest squared Mahalanobis distance to a class mean.
//
// The embedding is the global average of the last convolutional feature map
// (Classifier::ForwardFeatures; what ResNet's, DenseNet's and EfficientNet's heads
// pool). Models without a feature map (ViT) have no embedding here.
//
// The covariance is shrunk towards a multiple of the identity,
//   C' = (1 - a) C + a tr(C)/D I,
// so it stays invertible with fewer images than feature dimensions. Measured on the
// bundled ResNet-18 (docs/results.md): AUROC 0.99 between test lesions and the
// non-lesion fixtures, where the energy score reached 0.25.
#ifndef SKINLESION_MODELS_FEATURE_OOD_H_
#define SKINLESION_MODELS_FEATURE_OOD_H_

#include <optional>
#include <string>
#include <vector>

#include <torch/types.h>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "skinlesion/common/ood.h"
#include "skinlesion/models/classifier.h"
#include "skinlesion/models/numerics.h"

namespace skinlesion::models {

inline constexpr double kDefaultOodShrinkage = 0.1;

// True when `model` has an embedding (a convolutional feature map).
bool HasEmbedding(const Classifier& model);

// One forward pass giving both, as contiguous fp32 on the CPU: logits [N, classes]
// (identical to ForwardLogits) and the embedding [N, D]. The caller sets the grad
// mode. c10::Error for a model without a feature map.
struct LogitsAndEmbedding {
  torch::Tensor logits;
  torch::Tensor embedding;
};
LogitsAndEmbedding ForwardWithEmbedding(Classifier& model, const torch::Tensor& x,
                                        const Numerics& numerics, const torch::Device& device);

class FeatureGaussian {
 public:
  // `embeddings` [N, D] float, `labels` N class indices in [0, num_classes). Classes
  // without an image get no mean. InvalidArgument for mismatched sizes, a label out
  // of range, fewer than 2 images, non-finite features or a shrinkage outside (0, 1].
  static absl::StatusOr<FeatureGaussian> Fit(const torch::Tensor& embeddings,
                                             const std::vector<int>& labels, int num_classes,
                                             double shrinkage = kDefaultOodShrinkage);

  // The safetensors file: "class_means" [K, D] and "precision" [D, D] (float32) with
  // metadata {"method": "mahalanobis", "shrinkage"}. InvalidArgument / DataLoss for
  // a malformed file (missing tensors, shapes that disagree, non-finite values).
  static absl::StatusOr<FeatureGaussian> Load(const std::string& path);
  absl::Status Save(const std::string& path) const;

  // [N] float64: min over classes of (e - mu_k)^T P (e - mu_k). InvalidArgument for
  // an embedding of another width.
  absl::StatusOr<torch::Tensor> Score(const torch::Tensor& embeddings) const;

  int64_t dim() const { return means_.size(1); }
  int64_t classes() const { return means_.size(0); }
  double shrinkage() const { return shrinkage_; }

 private:
  FeatureGaussian(torch::Tensor means, torch::Tensor precision, double shrinkage)
      : means_(std::move(means)), precision_(std::move(precision)), shrinkage_(shrinkage) {}
  torch::Tensor means_;      // [K, D] float64.
  torch::Tensor precision_;  // [D, D] float64.
  double shrinkage_ = kDefaultOodShrinkage;
};

// The Gaussian a model directory's OOD policy names, checked against the model: none
// when the policy is not "mahalanobis" or has no threshold; else the file (its SHA-256
// when the policy records one), a model with an embedding and a Gaussian of its
// width, or an error naming what is wrong (a version that cannot run its check is
// not served).
absl::StatusOr<std::optional<FeatureGaussian>> LoadOodGaussianFor(Classifier& model,
                                                                  const std::string& directory,
                                                                  const OodPolicy& policy);

}  // namespace skinlesion::models

#endif  // SKINLESION_MODELS_FEATURE_OOD_H_
