#include "skinlesion/eval/report.h"

#include <cairo.h>

#include <algorithm>
#include <filesystem>
#include <opencv2/imgproc.hpp>
#include <optional>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "skinlesion/common/csv.h"
#include "skinlesion/common/rng.h"
#include "skinlesion/common/status.h"
#include "skinlesion/eval/operating_point.h"
#include "skinlesion/eval/plots.h"
#include "skinlesion/eval/referral_eval.h"
#include "skinlesion/eval/subgroups.h"
#include "skinlesion/image/decode.h"

namespace skinlesion::eval {
namespace {

// A grid of test images, each captioned "true → predicted (p)", green when right.
absl::Status PlotExamples(const ReportInput& in, const std::vector<Probs>& probs,
                          const DecisionRule& decision, const std::string& path) {
  const int n = static_cast<int>(in.image_paths.size());
  std::vector<int> order(n);
  for (int i = 0; i < n; ++i) order[i] = i;
  Rng rng(DeriveSeed({in.seed, 0xe4a3}));
  for (int i = n - 1; i > 0; --i) std::swap(order[i], order[rng.UniformInt(i + 1)]);
  const int count = std::min(n, in.grid_examples);
  const int cols = 4, rows = (count + cols - 1) / cols, tile = 200, caption = 36;
  cairo_surface_t* surface =
      cairo_image_surface_create(CAIRO_FORMAT_RGB24, cols * tile, rows * (tile + caption) + 40);
  cairo_t* cr = cairo_create(surface);
  cairo_set_source_rgb(cr, 1, 1, 1);
  cairo_paint(cr);
  cairo_select_font_face(cr, "DejaVu Sans", CAIRO_FONT_SLANT_NORMAL, CAIRO_FONT_WEIGHT_BOLD);
  cairo_set_font_size(cr, 16);
  cairo_set_source_rgb(cr, 0.1, 0.1, 0.1);
  cairo_move_to(cr, 10, 26);
  cairo_show_text(cr, "Random test images: true -> predicted (probability)");
  cairo_select_font_face(cr, "DejaVu Sans", CAIRO_FONT_SLANT_NORMAL, CAIRO_FONT_WEIGHT_NORMAL);
  for (int k = 0; k < count; ++k) {
    const int i = order[k];
    const int x = (k % cols) * tile, y = 40 + (k / cols) * (tile + caption);
    auto img = DecodeImageFile(in.image_paths[i]);
    if (img.ok()) {
      cv::Mat small, bgra;
      cv::resize(*img, small, cv::Size(tile - 8, tile - 8), 0, 0, cv::INTER_AREA);
      cv::cvtColor(small, bgra, cv::COLOR_RGB2BGRA);  // Cairo RGB24 is BGRX in memory.
      cairo_surface_t* pic = cairo_image_surface_create_for_data(
          bgra.data, CAIRO_FORMAT_RGB24, bgra.cols, bgra.rows, static_cast<int>(bgra.step));
      cairo_set_source_surface(cr, pic, x + 4, y + 4);
      cairo_paint(cr);
      cairo_surface_destroy(pic);
    }
    const int pred = Decide(probs[i], decision);
    const bool right = pred == in.labels[i];
    right ? cairo_set_source_rgb(cr, 0.0, 0.5, 0.2) : cairo_set_source_rgb(cr, 0.75, 0.1, 0.1);
    cairo_set_font_size(cr, 14);
    cairo_move_to(cr, x + 6, y + tile + 20);
    const std::string text = absl::StrFormat("%s -> %s (%.2f)", in.classes.at(in.labels[i]).code,
                                             in.classes.at(pred).code, probs[i][pred]);
    cairo_show_text(cr, text.c_str());
  }
  cairo_surface_flush(surface);
  const cairo_status_t st = cairo_surface_write_to_png(surface, path.c_str());
  cairo_destroy(cr);
  cairo_surface_destroy(surface);
  if (st != CAIRO_STATUS_SUCCESS) {
    return absl::InternalError(absl::StrCat("cannot write ", path, ": ", cairo_status_to_string(st)));
  }
  return absl::OkStatus();
}

}  // namespace

nlohmann::json RecallFloorToJson(const RecallBiasFit& fit, const std::string& code, double target) {
  return {{"class", code},
          {"target_recall", target},
          {"bias", fit.bias},
          {"reached", fit.reached},
          {"validation",
           {{"cases", fit.cases},
            {"recall_before", fit.recall_before},
            {"recall", fit.recall},
            {"balanced_accuracy_before", fit.balanced_accuracy_before},
            {"balanced_accuracy", fit.balanced_accuracy}}}};
}

absl::StatusOr<nlohmann::json> WriteReport(const ReportInput& in, const std::string& dir) {
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) return absl::InternalError(absl::StrCat("cannot create ", dir, ": ", ec.message()));
  double temperature = in.temperature;
  if (!in.val_logits.empty()) {
    SL_ASSIGN_OR_RETURN(temperature, FitTemperature(in.val_labels, in.val_logits));
  }
  const std::vector<Probs> raw = Softmax(in.logits, 1.0);
  const std::vector<Probs> calibrated = Softmax(in.logits, temperature);
  // The calibrated validation probabilities the decision rule and the referral
  // threshold are fitted on (empty without validation logits).
  const std::vector<Probs> val_probs = Softmax(in.val_logits, temperature);
  // The decision rule: given, or its tau (and the recall floor on top) fitted on the
  // calibrated validation probabilities for balanced accuracy; the referral threshold
  // likewise (below).
  const bool fit = !in.val_logits.empty();
  const OperatingPoint op = FitOperatingPoint(
      in.val_labels, val_probs, in.classes, in.decision,
      {.balanced_decision = fit && in.fit_decision,
       .prior = in.decision.prior,
       .recall_class =
           in.recall_target_class >= 0 ? std::optional<int>(in.recall_target_class) : std::nullopt,
       .recall_target = in.recall_target,
       .referral = in.referral});
  const DecisionRule& decision = op.decision;
  nlohmann::json decision_json = {{"source", in.decision.Adjusted() ? "given" : "none"}};
  if (op.tau) {
    decision_json["source"] = "fitted_on_val";
    decision_json["validation"] = {{"balanced_accuracy_plain", op.tau->balanced_accuracy_plain},
                                   {"balanced_accuracy", op.tau->balanced_accuracy}};
  }
  if (op.floor) {
    decision_json["source"] = "fitted_on_val";
    decision_json["recall_floor"] =
        RecallFloorToJson(*op.floor, in.classes.at(in.recall_target_class).code, in.recall_target);
  }
  decision_json["rule"] = decision.Adjusted() ? "prior_adjusted" : "plain";
  decision_json["tau"] = decision.Adjusted() ? decision.tau : 0.0;
  if (!decision.prior.empty()) decision_json["prior"] = decision.prior;
  if (decision.HasBias()) decision_json["bias"] = decision.bias;
  SL_ASSIGN_OR_RETURN(const Metrics before, ComputeMetrics(in.labels, raw, in.classes, decision));
  SL_ASSIGN_OR_RETURN(const Metrics after,
                      ComputeMetrics(in.labels, calibrated, in.classes, decision));
  nlohmann::json j = MetricsToJson(after);
  j["temperature"] = temperature;
  j["decision"] = decision_json;
  if (decision.Adjusted()) {
    // What the most probable class alone would have scored, for comparison.
    SL_ASSIGN_OR_RETURN(j["decision"]["plain"],
                        DecisionSummaryJson(in.labels, calibrated, in.classes, {}));
  }
  if (decision.HasBias()) {
    // What the rule without the recall floor (its bias) would have scored.
    SL_ASSIGN_OR_RETURN(
        j["decision"]["without_floor"],
        DecisionSummaryJson(in.labels, calibrated, in.classes, WithoutBias(decision)));
  }
  j["n_val"] = in.val_labels.size();
  nlohmann::json uncalibrated = MetricsToJson(before);
  j["uncalibrated"] = {{"ece", uncalibrated["ece"]}, {"nll", uncalibrated["nll"]},
                       {"brier", uncalibrated["brier"]}, {"accuracy", uncalibrated["accuracy"]}};
  ReferralPolicy policy = in.referral;
  std::string source = policy.risk_threshold ? "given" : "none";
  nlohmann::json validation;
  if (in.fit_risk_threshold && fit && op.referral) {
    policy = *op.referral;
    source = "fitted_on_val";
    validation =
        ReferralToJson(EvaluateReferral(in.val_labels, val_probs, policy, in.classes, decision));
  }
  j["referral"] =
      ReferralToJson(EvaluateReferral(in.labels, calibrated, policy, in.classes, decision));
  j["referral"]["threshold_source"] = source;
  if (!validation.is_null()) j["referral"]["validation"] = validation;
  if (in.ood.threshold.has_value()) {
    std::vector<double> scores = in.ood_scores;
    if (scores.empty() && in.ood.method == OodMethod::kEnergy) {
      for (const Probs& z : in.logits) scores.push_back(EnergyScore(z.data(), static_cast<int>(z.size())));
    }
    if (scores.size() != in.logits.size()) {
      return absl::InvalidArgumentError(absl::StrCat(OodMethodName(in.ood.method), " not-a-lesion check: ",
                                                     scores.size(), " scores for ", in.logits.size(), " images"));
    }
    int rejected = 0;
    for (double score : scores) rejected += IsOutOfDistribution(score, in.ood);
    j["ood"] = {{"method", OodMethodName(in.ood.method)},
                {"threshold", *in.ood.threshold},
                {"reject_rate", in.ood.reject_rate},
                {"lesions_rejected", ProportionToJson(WilsonInterval(rejected, static_cast<int>(scores.size())))}};
  }
  if (!in.subgroups.empty()) {
    j["subgroups"] =
        SubgroupsToJson(ComputeSubgroups(in.labels, calibrated, in.subgroups, policy, in.classes,
                                         {.seed = in.seed, .decision = decision}));
  }
  j["context"] = in.context;
  SL_RETURN_IF_ERROR(PlotConfusionMatrix(after, dir + "/confusion_matrix.png"));
  SL_RETURN_IF_ERROR(PlotRocCurves(after, dir + "/roc_curves.png"));
  SL_RETURN_IF_ERROR(PlotReliability(after, dir + "/reliability.png"));
  SL_RETURN_IF_ERROR(PlotReliability(before, dir + "/reliability_uncalibrated.png"));
  if (!in.image_paths.empty()) {
    if (in.image_paths.size() != in.labels.size()) {
      return absl::InvalidArgumentError("report: image_paths and labels differ in size");
    }
    SL_RETURN_IF_ERROR(PlotExamples(in, calibrated, decision, dir + "/test_examples.png"));
  }
  SL_RETURN_IF_ERROR(WriteFileAtomically(dir + "/metrics.json", j.dump(2) + "\n"));
  return j;
}

}  // namespace skinlesion::eval
