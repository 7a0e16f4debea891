#include "skinlesion/predict/predictor.h"

#include <torch/torch.h>

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "skinlesion/common/csv.h"
#include "opencv2/imgproc.hpp"
#include "skinlesion/common/status.h"
#include "skinlesion/explain/explain.h"
#include "skinlesion/image/preprocess.h"
#include "skinlesion/models/feature_ood.h"
#include "skinlesion/models/numerics.h"
#include "skinlesion/models/state_dict.h"
#include "skinlesion/serving/preprocessing.h"

namespace skinlesion::predict {

nlohmann::json Prediction::ToJson() const {
  nlohmann::json probs = nlohmann::json::object();
  for (const ClassInfo& c : classes) probs[c.code] = probabilities[c.index];
  nlohmann::json top_json = nlohmann::json::array();
  for (const auto& [k, p] : top) top_json.push_back({{"code", classes.at(k).code}, {"probability", p}});
  return {{"class", code},
          {"name", name},
          {"confidence", confidence},
          {"malignancy_group", std::string(MalignancyGroupName(classes.at(class_index).group))},
          {"malignancy_risk", malignancy_risk},
          {"refer", refer},
          {"refer_rule", std::string(ReferRuleName(refer_rule))},
          {"refer_reason", refer_reason},
          {"out_of_distribution", out_of_distribution},
          {"ood_score", ood_score},
          {"top", top_json},
          {"probabilities", probs}};
}

Prediction MakePrediction(std::vector<float> probabilities, const LabelSet& classes,
                          const ReferralPolicy& refer, const DecisionRule& decision) {
  const Summary summary = Summarize(probabilities, classes, refer, decision);
  Prediction p;
  p.classes = classes;
  p.probabilities = std::move(probabilities);
  p.class_index = summary.top_class;
  p.code = classes.at(p.class_index).code;
  p.name = classes.at(p.class_index).name;
  p.confidence = summary.confidence;
  for (int i = 0; i < std::min(3, classes.size()); ++i) {
    p.top.emplace_back(summary.order[i], p.probabilities[summary.order[i]]);
  }
  p.malignancy_risk = summary.malignancy_risk;
  p.refer = summary.refer;
  p.refer_rule = summary.refer_rule;
  p.refer_reason = summary.refer_reason;
  return p;
}

Predictor::~Predictor() = default;

models::Numerics Predictor::Numerics() const {
  models::Numerics n;
  n.precision = precision_;
  n.channels_last = channels_last_;
  n.reason = numerics_reason_;
  return n;
}

absl::StatusOr<std::unique_ptr<Predictor>> Predictor::Create(const std::string& model_dir,
                                                             const PredictorOptions& options) {
  if (options.threads > 0) torch::set_num_threads(options.threads);
  SL_ASSIGN_OR_RETURN(models::Checkpoint checkpoint, models::LoadCheckpoint(model_dir));
  std::unique_ptr<Predictor> p(new Predictor());
  p->architecture_ = checkpoint.manifest.architecture;
  p->image_size_ = checkpoint.manifest.image_size;
  // Size, resize mode, mean and std as the manifest says (and as the inference
  // service reads them), not the ImageNet defaults.
  SL_ASSIGN_OR_RETURN(const serving::ModelSpec spec, serving::ReadModelSpec(model_dir));
  // Preprocessing, calibration, referral and OOD check as the inference service reads them.
  p->manifest_ = spec;
  p->preprocess_ = serving::PreprocessOptionsFor(spec);
  std::optional<torch::Device> device;
  try {
    device.emplace(options.device);
    checkpoint.model->to(*device);
  } catch (const c10::Error& e) {
    return absl::InvalidArgumentError(absl::StrCat("device '", options.device, "': ", e.what_without_backtrace()));
  }
  checkpoint.model->eval();
  SL_ASSIGN_OR_RETURN(const models::Numerics numerics,
                      models::PrepareForInference(*checkpoint.model, options.precision, *device, spec.precision));
  p->precision_ = numerics.precision;
  p->channels_last_ = numerics.channels_last;
  p->numerics_ = numerics.Describe();
  p->numerics_reason_ = numerics.reason;
  SL_ASSIGN_OR_RETURN(std::optional<models::FeatureGaussian> gaussian,
                      models::LoadOodGaussianFor(*checkpoint.model, model_dir, spec.ood));
  if (gaussian) p->ood_gaussian_ = std::make_shared<const models::FeatureGaussian>(*std::move(gaussian));
  p->model_ = checkpoint.model;
  p->device_ = options.device;
  // Large JPEGs decode at reduced scale exactly as the inference service does them,
  // so the CLI and the service give one image the same answer.
  p->limits_ = serving::DecodeLimitsFor(spec, options.decode_limits);
  return p;
}

absl::StatusOr<Prediction> Predictor::PredictFile(const std::string& path) const {
  SL_ASSIGN_OR_RETURN(const cv::Mat rgb, DecodeImageFile(path, limits_));
  return Predict(rgb);
}

absl::StatusOr<Prediction> Predictor::PredictBytes(absl::string_view encoded) const {
  SL_ASSIGN_OR_RETURN(const cv::Mat rgb, DecodeImage(encoded, limits_));
  return Predict(rgb);
}

absl::StatusOr<Prediction> Predictor::Predict(const cv::Mat& rgb) const {
  SL_ASSIGN_OR_RETURN(std::vector<Prediction> out, PredictBatch({rgb}));
  return std::move(out[0]);
}

absl::StatusOr<Explanation> Predictor::Explain(const cv::Mat& rgb, int target_class) const {
  if (rgb.empty() || rgb.type() != CV_8UC3) return absl::InvalidArgumentError("expected an RGB uint8 image");
  if (target_class < -1 || target_class >= manifest_.classes.size()) {
    return absl::InvalidArgumentError(
        absl::StrCat("target class ", target_class, " is outside [0, ", manifest_.classes.size(), ")"));
  }
  torch::Tensor input = torch::empty({1, 3, image_size_, image_size_}, torch::kFloat32);
  PreprocessInto(rgb, preprocess_, input.data_ptr<float>());
  input = models::PrepareInput(input, Numerics(), torch::Device(device_));
  int target = target_class;
  if (target < 0) {
    try {
      torch::InferenceMode guard;
      target = static_cast<int>(model_->forward(input).argmax(1).item<int64_t>());
    } catch (const c10::Error& e) {
      return absl::InternalError(absl::StrCat("inference failed: ", e.what_without_backtrace()));
    }
  }
  SL_ASSIGN_OR_RETURN(explain::Heatmap heatmap, explain::Explain(*model_, input, target));
  Explanation out;
  out.method = std::move(heatmap.method);
  out.target_class = target;
  out.width = heatmap.width;
  out.height = heatmap.height;
  out.covers = preprocess_.mode == ResizeMode::kDirectResize ? "full-image" : "center-square";
  out.heat = std::move(heatmap.heat);
  return out;
}

absl::StatusOr<cv::Mat> HeatmapOverlay(const cv::Mat& rgb, const Explanation& explanation, double alpha) {
  if (rgb.empty() || rgb.type() != CV_8UC3) return absl::InvalidArgumentError("expected an RGB uint8 image");
  if (explanation.width < 1 || explanation.height < 1 ||
      explanation.heat.size() != static_cast<size_t>(explanation.width) * explanation.height) {
    return absl::InvalidArgumentError(absl::StrCat("a ", explanation.width, "x", explanation.height,
                                                   " heatmap with ", explanation.heat.size(), " values"));
  }
  if (!(alpha >= 0 && alpha <= 1)) return absl::InvalidArgumentError("alpha must be in [0, 1]");
  const int side = std::min(rgb.cols, rgb.rows);
  const cv::Rect square = explanation.covers == "full-image"
                              ? cv::Rect(0, 0, rgb.cols, rgb.rows)
                              : cv::Rect((rgb.cols - side) / 2, (rgb.rows - side) / 2, side, side);
  cv::Mat heat(explanation.height, explanation.width, CV_32F, const_cast<float*>(explanation.heat.data()));
  cv::Mat big;
  cv::resize(heat, big, square.size(), 0, 0, cv::INTER_LINEAR);
  cv::Mat heat8;
  big.convertTo(heat8, CV_8U, 255.0);
  cv::Mat colour;
  cv::applyColorMap(heat8, colour, cv::COLORMAP_JET);  // BGR
  cv::cvtColor(colour, colour, cv::COLOR_BGR2RGB);
  cv::Mat out = rgb * 0.5;  // Outside the covered square: darkened.
  cv::Mat blended;
  cv::addWeighted(rgb(square), 1.0 - alpha, colour, alpha, 0.0, blended);
  blended.copyTo(out(square));
  return out;
}

absl::StatusOr<std::vector<Prediction>> Predictor::PredictBatch(const std::vector<cv::Mat>& images) const {
  if (images.empty()) return std::vector<Prediction>{};
  const int64_t n = static_cast<int64_t>(images.size());
  torch::Tensor batch = torch::empty({n, 3, image_size_, image_size_}, torch::kFloat32);
  for (int64_t i = 0; i < n; ++i) {
    if (images[i].empty() || images[i].type() != CV_8UC3) {
      return absl::InvalidArgumentError("expected an RGB uint8 image");
    }
    PreprocessInto(images[i], preprocess_, batch[i].data_ptr<float>());
  }
  torch::Tensor probs, logits, feature_scores;
  try {
    torch::InferenceMode guard;
    if (ood_gaussian_ != nullptr) {
      const models::LogitsAndEmbedding out =
          models::ForwardWithEmbedding(*model_, batch, Numerics(), torch::Device(device_));
      logits = out.logits;
      SL_ASSIGN_OR_RETURN(feature_scores, ood_gaussian_->Score(out.embedding));
    } else {
      logits = models::ForwardLogits(*model_, batch, Numerics(), torch::Device(device_));
    }
    // `logits` stay the image's own (the energy score below needs them); the answer
    // averages the manifest's test-time views.
    const torch::Tensor answer = models::ForwardTta(*model_, batch, manifest_.tta, Numerics(),
                                                    torch::Device(device_), logits);
    probs = torch::softmax(answer / manifest_.temperature, 1).contiguous();
  } catch (const c10::Error& e) {
    return absl::InternalError(absl::StrCat("inference failed: ", e.what_without_backtrace()));
  }
  std::vector<Prediction> out;
  const auto acc = probs.accessor<float, 2>();
  for (int64_t i = 0; i < n; ++i) {
    std::vector<float> p(&acc[i][0], &acc[i][0] + probs.size(1));
    out.push_back(
        MakePrediction(std::move(p), manifest_.classes, manifest_.refer, manifest_.decision));
    out.back().ood_score = feature_scores.defined()
                               ? feature_scores[i].item<double>()
                               : EnergyScore(logits[i].data_ptr<float>(), static_cast<int>(logits.size(1)));
    // A "mahalanobis" policy is only checked with its Gaussian (Create loads it).
    const bool checked = manifest_.ood.method != OodMethod::kMahalanobis || feature_scores.defined();
    out.back().out_of_distribution = checked && IsOutOfDistribution(out.back().ood_score, manifest_.ood);
  }
  return out;
}

}  // namespace skinlesion::predict
