#include "skinlesion/models/feature_ood.h"

#include <torch/torch.h>

#include <cmath>
#include <map>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "skinlesion/common/hash.h"
#include "skinlesion/common/status.h"
#include "skinlesion/models/safetensors.h"

namespace skinlesion::models {

bool HasEmbedding(const Classifier& model) { return model.HasFeatureMap(); }

LogitsAndEmbedding ForwardWithEmbedding(Classifier& model, const torch::Tensor& x,
                                        const Numerics& numerics, const torch::Device& device) {
  const torch::Tensor features = model.ForwardFeatures(PrepareInput(x, numerics, device));
  LogitsAndEmbedding out;
  out.logits = model.ForwardHead(features).to(torch::kCPU, torch::kFloat32).contiguous();
  out.embedding = features.to(torch::kFloat32).mean({2, 3}).to(torch::kCPU).contiguous();
  return out;
}

absl::StatusOr<FeatureGaussian> FeatureGaussian::Fit(const torch::Tensor& embeddings,
                                                     const std::vector<int>& labels, int num_classes,
                                                     double shrinkage) {
  if (embeddings.dim() != 2 || embeddings.size(0) != static_cast<int64_t>(labels.size())) {
    return absl::InvalidArgumentError(absl::StrCat("embeddings of shape ", c10::str(embeddings.sizes()),
                                                   " for ", labels.size(), " labels"));
  }
  if (labels.size() < 2) return absl::InvalidArgumentError("a Gaussian needs at least 2 images");
  if (!(shrinkage > 0 && shrinkage <= 1)) {
    return absl::InvalidArgumentError(absl::StrCat("shrinkage must be in (0, 1], got ", shrinkage));
  }
  const torch::Tensor e = embeddings.to(torch::kCPU, torch::kFloat64).contiguous();
  if (!torch::isfinite(e).all().item<bool>()) {
    return absl::InvalidArgumentError("the embeddings hold non-finite values");
  }
  const int64_t d = e.size(1);
  torch::Tensor means = torch::zeros({num_classes, d}, torch::kFloat64);
  std::vector<int64_t> counts(num_classes, 0);
  for (size_t i = 0; i < labels.size(); ++i) {
    if (labels[i] < 0 || labels[i] >= num_classes) {
      return absl::InvalidArgumentError(absl::StrCat("label ", labels[i], " of image ", i, " is out of range"));
    }
    means[labels[i]] += e[static_cast<int64_t>(i)];
    ++counts[labels[i]];
  }
  std::vector<int64_t> present;
  for (int k = 0; k < num_classes; ++k) {
    if (counts[k] == 0) continue;
    means[k] /= static_cast<double>(counts[k]);
    present.push_back(k);
  }
  const torch::Tensor label_index = torch::tensor(std::vector<int64_t>(labels.begin(), labels.end()));
  const torch::Tensor centred = e - means.index_select(0, label_index);
  torch::Tensor cov = centred.t().mm(centred) / static_cast<double>(labels.size());
  const double scale = cov.trace().item<double>() / static_cast<double>(d);
  cov = (1 - shrinkage) * cov + shrinkage * std::max(scale, 1e-12) * torch::eye(d, torch::kFloat64);
  torch::Tensor precision = torch::linalg::inv(cov);
  precision = (precision + precision.t()) / 2;  // Exactly symmetric.
  return FeatureGaussian(means.index_select(0, torch::tensor(present)).contiguous(), precision.contiguous(),
                         shrinkage);
}

absl::StatusOr<torch::Tensor> FeatureGaussian::Score(const torch::Tensor& embeddings) const {
  if (embeddings.dim() != 2 || embeddings.size(1) != dim()) {
    return absl::InvalidArgumentError(absl::StrCat("embeddings of shape ", c10::str(embeddings.sizes()),
                                                   " for a Gaussian of width ", dim()));
  }
  const torch::Tensor e = embeddings.to(torch::kCPU, torch::kFloat64);
  // [N, K, D] differences; (diff P) . diff summed over D.
  const torch::Tensor diff = e.unsqueeze(1) - means_.unsqueeze(0);
  const torch::Tensor d2 = (diff.matmul(precision_) * diff).sum(2);
  return std::get<0>(d2.min(1)).contiguous();
}

absl::Status FeatureGaussian::Save(const std::string& path) const {
  return WriteSafetensors(path,
                          {{"class_means", means_.to(torch::kFloat32)}, {"precision", precision_.to(torch::kFloat32)}},
                          {{"method", "mahalanobis"}, {"shrinkage", absl::StrCat(shrinkage_)}});
}

absl::StatusOr<FeatureGaussian> FeatureGaussian::Load(const std::string& path) {
  SL_ASSIGN_OR_RETURN(Safetensors file, ReadSafetensors(path));
  auto get = [&](const char* name) -> absl::StatusOr<torch::Tensor> {
    auto it = file.tensors.find(name);
    if (it == file.tensors.end()) return absl::InvalidArgumentError(absl::StrCat(path, ": no tensor \"", name, "\""));
    if (it->second.dim() != 2 || !it->second.is_floating_point()) {
      return absl::InvalidArgumentError(absl::StrCat(path, ": \"", name, "\" must be a 2-D float tensor, got ",
                                                     c10::str(it->second.sizes())));
    }
    return it->second.to(torch::kFloat64).contiguous();
  };
  SL_ASSIGN_OR_RETURN(torch::Tensor means, get("class_means"));
  SL_ASSIGN_OR_RETURN(torch::Tensor precision, get("precision"));
  if (means.size(0) < 1 || precision.size(0) != means.size(1) || precision.size(1) != means.size(1)) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": class_means ", c10::str(means.sizes()),
                                                   " and precision ", c10::str(precision.sizes()),
                                                   " disagree"));
  }
  if (!torch::isfinite(means).all().item<bool>() || !torch::isfinite(precision).all().item<bool>()) {
    return absl::DataLossError(absl::StrCat(path, ": non-finite values"));
  }
  double shrinkage = kDefaultOodShrinkage;
  if (auto it = file.metadata.find("shrinkage"); it != file.metadata.end()) {
    (void)absl::SimpleAtod(it->second, &shrinkage);
  }
  return FeatureGaussian(std::move(means), std::move(precision), shrinkage);
}

absl::StatusOr<std::optional<FeatureGaussian>> LoadOodGaussianFor(Classifier& model,
                                                                  const std::string& directory,
                                                                  const OodPolicy& policy) {
  if (policy.method != OodMethod::kMahalanobis || !policy.threshold.has_value()) return std::nullopt;
  if (!HasEmbedding(model)) {
    return absl::InvalidArgumentError(absl::StrCat(directory, ": the \"mahalanobis\" not-a-lesion check needs a "
                                                   "convolutional feature map, which ", model.architecture(),
                                                   " does not have"));
  }
  const std::string path = absl::StrCat(directory, "/", policy.features_file);
  if (!policy.features_sha256.empty()) {
    SL_ASSIGN_OR_RETURN(const std::string digest, Sha256File(path));
    if (digest != policy.features_sha256) {
      return absl::DataLossError(absl::StrCat(path, ": SHA-256 ", digest, " differs from the manifest's ",
                                              policy.features_sha256));
    }
  }
  SL_ASSIGN_OR_RETURN(FeatureGaussian gaussian, FeatureGaussian::Load(path));
  torch::NoGradGuard no_grad;
  const bool was_training = model.is_training();
  model.eval();
  int64_t width = 0;
  try {
    // The embedding's width from a tiny probe (the feature map's channels).
    const torch::Device device = model.parameters().empty() ? torch::Device(torch::kCPU)
                                                            : model.parameters().front().device();
    const torch::ScalarType dtype = model.parameters().empty() ? torch::kFloat32
                                                               : model.parameters().front().scalar_type();
    width = model.ForwardFeatures(torch::zeros({1, 3, 32, 32}, torch::TensorOptions().device(device).dtype(dtype)))
                .size(1);
  } catch (const c10::Error& e) {
    model.train(was_training);
    return absl::InvalidArgumentError(absl::StrCat(directory, ": probing the feature map: ", e.what_without_backtrace()));
  }
  model.train(was_training);
  if (width != gaussian.dim()) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": a Gaussian of width ", gaussian.dim(), " for ",
                                                   model.architecture(), "'s ", width, " features"));
  }
  return gaussian;
}

}  // namespace skinlesion::models
