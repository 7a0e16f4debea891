#include "skinlesion/serving/torch_instance.h"

#include <torch/torch.h>

#include <memory>
#include <optional>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "skinlesion/common/logging.h"
#include "skinlesion/common/ood.h"
#include "skinlesion/common/status.h"
#include "skinlesion/common/tta.h"
#include "skinlesion/explain/explain.h"
#include "skinlesion/models/feature_ood.h"
#include "skinlesion/models/numerics.h"
#include "skinlesion/models/state_dict.h"

namespace skinlesion::serving {
namespace {

class TorchInstance final : public ModelInstance {
 public:
  TorchInstance(std::shared_ptr<models::Classifier> model, torch::Device device, int64_t image_size,
                models::Numerics numerics, std::optional<models::FeatureGaussian> ood, Tta tta)
      : model_(std::move(model)),
        device_(device),
        image_size_(image_size),
        numerics_(std::move(numerics)),
        ood_(std::move(ood)),
        tta_(tta),
        num_classes_(model_->num_classes()) {}

  Precision precision() const override { return numerics_.precision; }
  std::string numerics() const override { return numerics_.Describe(); }

  absl::StatusOr<std::vector<float>> Run(const float* input, int n) override {
    if (n < 1) return absl::InvalidArgumentError(absl::StrCat("batch of ", n));
    try {
      torch::InferenceMode guard;
      // from_blob does not copy; the model never writes its input.
      torch::Tensor batch = torch::from_blob(const_cast<float*>(input),
                                             {n, 3, image_size_, image_size_}, torch::kFloat32);
      torch::Tensor logits = models::ForwardTta(*model_, batch, tta_, numerics_, device_);
      if (logits.dim() != 2 || logits.size(0) != n || logits.size(1) != num_classes_) {
        return absl::InternalError(absl::StrCat("the model returned logits of shape ",
                                                c10::str(logits.sizes()), " for a batch of ", n));
      }
      const float* p = logits.data_ptr<float>();
      return std::vector<float>(p, p + static_cast<size_t>(n) * num_classes_);
    } catch (const c10::Error& e) {
      return absl::InternalError(absl::StrCat("LibTorch: ", e.what_without_backtrace()));
    } catch (const std::exception& e) {
      return absl::InternalError(absl::StrCat("LibTorch: ", e.what()));
    }
  }

  // With a fitted Gaussian: the image's own forward pass gives the logits and the
  // embedding the feature score is computed from. Under test-time augmentation without
  // one: the energy of the image's own logits (the averaged output is a
  // log-probability, whose energy says nothing).
  absl::StatusOr<ScoredRun> RunScored(const float* input, int n) override {
    if (!ood_.has_value() && tta_ == Tta::kNone) return ModelInstance::RunScored(input, n);
    if (n < 1) return absl::InvalidArgumentError(absl::StrCat("batch of ", n));
    try {
      torch::InferenceMode guard;
      torch::Tensor batch = torch::from_blob(const_cast<float*>(input),
                                             {n, 3, image_size_, image_size_}, torch::kFloat32);
      torch::Tensor own, scores;
      if (ood_.has_value()) {
        const models::LogitsAndEmbedding out =
            models::ForwardWithEmbedding(*model_, batch, numerics_, device_);
        own = out.logits;
        SL_ASSIGN_OR_RETURN(scores, ood_->Score(out.embedding));
      } else {
        own = models::ForwardLogits(*model_, batch, numerics_, device_);
      }
      if (own.dim() != 2 || own.size(0) != n || own.size(1) != num_classes_) {
        return absl::InternalError(absl::StrCat("the model returned logits of shape ",
                                                c10::str(own.sizes()), " for a batch of ", n));
      }
      const torch::Tensor logits =
          models::ForwardTta(*model_, batch, tta_, numerics_, device_, own);
      ScoredRun run;
      const float* p = logits.data_ptr<float>();
      run.logits.assign(p, p + static_cast<size_t>(n) * num_classes_);
      if (scores.defined()) {
        const double* q = scores.data_ptr<double>();
        run.feature_scores.assign(q, q + n);
      } else {
        for (int64_t i = 0; i < n; ++i) {
          run.feature_scores.push_back(
              EnergyScore(own[i].data_ptr<float>(), static_cast<int>(num_classes_)));
        }
      }
      return run;
    } catch (const c10::Error& e) {
      return absl::InternalError(absl::StrCat("LibTorch: ", e.what_without_backtrace()));
    } catch (const std::exception& e) {
      return absl::InternalError(absl::StrCat("LibTorch: ", e.what()));
    }
  }

  // Grad-CAM (CNNs) or attention rollout (ViT) in grad mode, not InferenceMode:
  // Grad-CAM differentiates the target logit with respect to the feature map.
  // Thread-safe with Run(): nothing of the module is written (no .grad).
  absl::StatusOr<Explanation> Explain(const float* input, int target_class) override {
    absl::StatusOr<explain::Heatmap> heatmap;
    try {
      torch::Tensor image = torch::from_blob(const_cast<float*>(input),
                                             {1, 3, image_size_, image_size_}, torch::kFloat32);
      heatmap = explain::Explain(*model_, models::PrepareInput(image, numerics_, device_),
                                 target_class);
    } catch (const c10::Error& e) {
      return absl::InternalError(absl::StrCat("LibTorch: ", e.what_without_backtrace()));
    } catch (const std::exception& e) {
      return absl::InternalError(absl::StrCat("LibTorch: ", e.what()));
    }
    if (!heatmap.ok()) return heatmap.status();
    Explanation out;
    out.method = std::move(heatmap->method);
    out.width = heatmap->width;
    out.height = heatmap->height;
    out.heat = std::move(heatmap->heat);
    return out;
  }

 private:
  std::shared_ptr<models::Classifier> model_;
  torch::Device device_;
  int64_t image_size_;
  models::Numerics numerics_;
  std::optional<models::FeatureGaussian> ood_;  // The manifest's "mahalanobis" Gaussian.
  Tta tta_;                                     // The manifest's test-time views.
  int64_t num_classes_;
};

}  // namespace

ModelLoader MakeTorchLoader(TorchLoaderOptions options) {
  if (options.threads > 0) torch::set_num_threads(options.threads);
  return [options](const ModelSpec& spec) -> absl::StatusOr<std::shared_ptr<ModelInstance>> {
    std::optional<torch::Device> device;
    try {
      device.emplace(options.device);
    } catch (const c10::Error& e) {
      return absl::InvalidArgumentError(
          absl::StrCat("device '", options.device, "': ", e.what_without_backtrace()));
    }
    SL_ASSIGN_OR_RETURN(models::Checkpoint checkpoint, models::LoadCheckpoint(spec.directory));
    if (checkpoint.manifest.classes.size() != spec.classes.size()) {
      return absl::InvalidArgumentError(absl::StrCat(
          spec.directory, ": the model has ", checkpoint.manifest.classes.size(), " outputs but ",
          spec.classes.size(), " labels (", spec.classes.ToString(), ")"));
    }
    if (checkpoint.manifest.image_size != spec.image_size) {
      return absl::InvalidArgumentError(absl::StrCat(
          spec.directory, ": the checkpoint's image_size ", checkpoint.manifest.image_size,
          " differs from the serving spec's ", spec.image_size));
    }
    try {
      checkpoint.model->to(*device);
    } catch (const c10::Error& e) {
      return absl::InvalidArgumentError(
          absl::StrCat("device '", options.device, "': ", e.what_without_backtrace()));
    }
    checkpoint.model->eval();
    SL_ASSIGN_OR_RETURN(models::Numerics numerics,
                        models::PrepareForInference(*checkpoint.model, options.precision, *device,
                                                    spec.precision));
    SL_ASSIGN_OR_RETURN(std::optional<models::FeatureGaussian> ood,
                        models::LoadOodGaussianFor(*checkpoint.model, spec.directory, spec.ood));
    SL_LOG(INFO) << "serving: loaded " << spec.architecture << " from " << spec.directory << " on "
                 << options.device << " in " << numerics.Describe() << " (" << numerics.reason
                 << ")" << (ood ? ", not-a-lesion check: mahalanobis" : "")
                 << (spec.tta != Tta::kNone ? absl::StrCat(", test-time views: ", TtaName(spec.tta))
                                            : "");
    return std::shared_ptr<ModelInstance>(
        std::make_shared<TorchInstance>(std::move(checkpoint.model), *device, spec.image_size,
                                        std::move(numerics), std::move(ood), spec.tta));
  };
}

}  // namespace skinlesion::serving
