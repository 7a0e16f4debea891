// Classify lesion images with a trained model: the C++ counterpart of the
// Python `SkinLesionClassifier(model_path).predict(image)` API.
//
//   SL_ASSIGN_OR_RETURN(auto predictor, Predictor::Create("models/bundled"));
//   SL_ASSIGN_OR_RETURN(Prediction p, predictor->PredictFile("lesion.jpg"));
//   std::cout << p.code << " " << p.confidence;
//
// A model directory holds model.safetensors and manifest.json (architecture,
// image size, labels; optionally "calibration": {"temperature": T} and "refer":
// {"min_confidence", "min_margin", "malignancy_risk_threshold", ...}). Probabilities
// are softmax(logits / T). `refer` follows skinlesion/common/referral.h, the rule the
// inference service applies: the malignancy risk at or above the fitted threshold, or
// an unsure answer (top probability under min_confidence, margin under min_margin).
//
// Thread-safe: Predict* may be called concurrently (inference runs under
// torch::InferenceMode; the module is not mutated).
#ifndef SKINLESION_PREDICT_PREDICTOR_H_
#define SKINLESION_PREDICT_PREDICTOR_H_

#include <array>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include <opencv2/core.hpp>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "nlohmann/json.hpp"
#include "skinlesion/common/classes.h"
#include "skinlesion/common/ood.h"
#include "skinlesion/common/precision.h"
#include "skinlesion/common/referral.h"
#include "skinlesion/image/decode.h"
#include "skinlesion/image/preprocess.h"
#include "skinlesion/manifest/manifest.h"

namespace skinlesion::models {
class Classifier;
class FeatureGaussian;
struct Numerics;
}

namespace skinlesion::predict {

struct Prediction {
  int class_index = -1;
  std::string code;         // "mel"
  std::string name;         // "Melanoma"
  float confidence = 0;     // Probability of the top class.
  LabelSet classes = LabelSet::Ham10000();  // The model's: what the indices mean.
  std::vector<float> probabilities;         // One per class, index order.
  std::vector<std::pair<int, float>> top;   // (class, probability), top 3 (fewer classes: all).
  float malignancy_risk = 0;  // Sum over the malignant group (mel, bcc, akiec for HAM10000).
  bool refer = false;
  ReferRule refer_rule = ReferRule::kNone;  // skinlesion/common/referral.h
  std::string refer_reason;
  // skinlesion/common/ood.h: the score of the model's method (feature distance or
  // energy) and whether it is above the model's threshold (false when the manifest
  // has none).
  double ood_score = 0;
  bool out_of_distribution = false;
  nlohmann::json ToJson() const;
};

// An explanation heatmap of one image (skinlesion/explain; docs/inference.md,
// "Explanations"): Grad-CAM for CNNs, attention rollout for ViTs, on the model's
// feature grid. The grid covers what the model saw: the centred square of side
// min(image width, height) for a shorter-side resize + centre crop (the default),
// the whole image for a model whose manifest says "resize": "resize".
struct Explanation {
  std::string method;  // "grad-cam" or "attention-rollout".
  int target_class = 0;
  int width = 0, height = 0;
  std::string covers = "center-square";  // Or "full-image".
  std::vector<float> heat;  // height * width values in [0, 1], row-major.
};

// The heatmap drawn over `rgb` (CV_8UC3): upsampled bilinearly onto the region it
// covers (see Explanation), e.g. the centred
// square it covers, coloured (JET: blue low, red high) and blended with weight
// `alpha`; outside the square the image is darkened. InvalidArgument for an empty
// or non-RGB image, a size mismatch, alpha outside [0, 1].
absl::StatusOr<cv::Mat> HeatmapOverlay(const cv::Mat& rgb, const Explanation& explanation,
                                       double alpha = 0.5);

struct PredictorOptions {
  std::string device = "cpu";
  int threads = 0;  // > 0: set LibTorch intra-op threads.
  DecodeLimits decode_limits;
  // skinlesion/common/precision.h; kAuto follows the manifest's "precision" pin.
  PrecisionChoice precision = PrecisionChoice::kAuto;
};


class Predictor {
 public:
  // Loads the model directory. NotFound / InvalidArgument / DataLoss with the path.
  static absl::StatusOr<std::unique_ptr<Predictor>> Create(const std::string& model_dir,
                                                           const PredictorOptions& options = {});
  ~Predictor();

  absl::StatusOr<Prediction> PredictFile(const std::string& path) const;
  absl::StatusOr<Prediction> PredictBytes(absl::string_view encoded) const;
  // An RGB uint8 image of any size.
  absl::StatusOr<Prediction> Predict(const cv::Mat& rgb) const;
  // Several images in one forward pass.
  absl::StatusOr<std::vector<Prediction>> PredictBatch(const std::vector<cv::Mat>& rgb) const;
  // The explanation heatmap of `target_class` (-1: the predicted class) for an RGB
  // uint8 image. InvalidArgument for a bad image or class.
  absl::StatusOr<Explanation> Explain(const cv::Mat& rgb, int target_class = -1) const;

  // The model's manifest (skinlesion/manifest/manifest.h), as the inference service reads it.
  const ModelManifest& manifest() const { return manifest_; }
  const LabelSet& classes() const { return manifest_.classes; }
  const ReferralPolicy& referral_policy() const { return manifest_.refer; }
  const OodPolicy& ood_policy() const { return manifest_.ood; }
  const std::string& architecture() const { return architecture_; }
  int64_t image_size() const { return image_size_; }
  double temperature() const { return manifest_.temperature; }
  // The precision the model runs in and why ("bf16, channels-last", "auto: bf16
  // (native bf16 on this CPU)"): reports and model cards record both.
  Precision precision() const { return precision_; }
  const std::string& numerics() const { return numerics_; }
  const std::string& numerics_reason() const { return numerics_reason_; }
  // What PredictFile/PredictBytes decode with (large JPEGs at reduced scale, as the
  // inference service): decode images for Explain/PredictBatch with it too.
  const DecodeLimits& decode_limits() const { return limits_; }

 private:
  Predictor() = default;
  models::Numerics Numerics() const;
  std::shared_ptr<models::Classifier> model_;
  ModelManifest manifest_;
  std::string architecture_;
  std::string device_;
  int64_t image_size_ = 224;
  PreprocessOptions preprocess_;  // The manifest's "preprocessing".
  Precision precision_ = Precision::kFp32;
  bool channels_last_ = false;
  std::string numerics_, numerics_reason_;
  std::shared_ptr<const models::FeatureGaussian> ood_gaussian_;  // For "mahalanobis".
  DecodeLimits limits_;
};

// Turns calibrated probabilities (one per class of `classes`) into a Prediction: the
// class `decision` names (skinlesion/common/decision.h), the top 3 by probability and
// the referral.
Prediction MakePrediction(std::vector<float> probabilities, const LabelSet& classes,
                          const ReferralPolicy& refer, const DecisionRule& decision = {});

}  // namespace skinlesion::predict

#endif  // SKINLESION_PREDICT_PREDICTOR_H_
