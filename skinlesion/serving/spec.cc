// ReadModelSpec and CheckGoldenSet.
#include <algorithm>
#include <cmath>
#include <filesystem>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "skinlesion/common/csv.h"
#include "skinlesion/common/hash.h"
#include "skinlesion/common/logging.h"
#include "skinlesion/common/status.h"
#include "skinlesion/image/preprocess.h"
#include "skinlesion/serving/batcher.h"
#include "skinlesion/serving/preprocessing.h"
#include "skinlesion/serving/serving.h"

namespace skinlesion::serving {
namespace {

using json = nlohmann::json;

constexpr char kWeightsFile[] = "model.safetensors";

// Errors name the manifest and the field ("preprocessing.mean").
absl::Status FieldError(const std::string& manifest_path, const std::string& field,
                        const std::string& what, const json& value) {
  return absl::InvalidArgumentError(
      absl::StrCat(manifest_path, ": \"", field, "\" ", what, ", got ", value.dump()));
}

absl::StatusOr<double> Number(const std::string& path, const std::string& field, const json& v) {
  if (!v.is_number()) return FieldError(path, field, "must be a number", v);
  const double d = v.get<double>();
  if (!std::isfinite(d)) return FieldError(path, field, "must be finite", v);
  return d;
}

absl::StatusOr<int64_t> Integer(const std::string& path, const std::string& field, const json& v) {
  if (!v.is_number_integer()) return FieldError(path, field, "must be an integer", v);
  return v.get<int64_t>();
}

absl::StatusOr<std::string> String(const std::string& path, const std::string& field,
                                   const json& v) {
  if (!v.is_string()) return FieldError(path, field, "must be a string", v);
  return v.get<std::string>();
}

absl::Status Object(const std::string& path, const std::string& field, const json& v) {
  if (!v.is_object()) return FieldError(path, field, "must be an object", v);
  return absl::OkStatus();
}

template <size_t N>
absl::Status FloatArray(const std::string& path, const std::string& field, const json& v,
                        std::array<float, N>& out) {
  if (!v.is_array() || v.size() != N) {
    return FieldError(path, field, absl::StrCat("must be an array of ", N, " numbers"), v);
  }
  for (size_t i = 0; i < N; ++i) {
    SL_ASSIGN_OR_RETURN(const double d, Number(path, absl::StrCat(field, "[", i, "]"), v[i]));
    out[i] = static_cast<float>(d);
  }
  return absl::OkStatus();
}

absl::Status FloatVector(const std::string& path, const std::string& field, const json& v, size_t n,
                         std::vector<float>& out) {
  if (!v.is_array() || v.size() != n) {
    return FieldError(path, field, absl::StrCat("must be an array of ", n, " numbers (one per class)"), v);
  }
  out.resize(n);
  for (size_t i = 0; i < n; ++i) {
    SL_ASSIGN_OR_RETURN(const double d, Number(path, absl::StrCat(field, "[", i, "]"), v[i]));
    out[i] = static_cast<float>(d);
  }
  return absl::OkStatus();
}

// The manifest's "labels" (+ "num_classes", "malignant_classes") as a label set.
absl::StatusOr<LabelSet> ParseLabels(const std::string& path, const json& m) {
  std::optional<int64_t> num_classes;
  if (m.contains("num_classes")) {
    SL_ASSIGN_OR_RETURN(num_classes, Integer(path, "num_classes", m["num_classes"]));
    if (*num_classes < 2 || *num_classes > kMaxClasses) {
      return FieldError(path, "num_classes", absl::StrCat("must be in [2, ", kMaxClasses, "]"), m["num_classes"]);
    }
  }
  std::vector<std::string> codes;
  // SaveCheckpoint writes "labels": [] when it was given none.
  if (m.contains("labels") && !(m["labels"].is_array() && m["labels"].empty())) {
    const json& labels = m["labels"];
    if (!labels.is_array() || labels.size() > static_cast<size_t>(kMaxClasses)) {
      return FieldError(path, "labels", "must be an array of class codes in logit order", labels);
    }
    for (size_t i = 0; i < labels.size(); ++i) {
      SL_ASSIGN_OR_RETURN(std::string code, String(path, absl::StrCat("labels[", i, "]"), labels[i]));
      codes.push_back(std::move(code));
    }
  } else if (num_classes.has_value() && *num_classes != kHam10000NumClasses) {
    return FieldError(path, "labels", absl::StrCat("is required for a model of ", *num_classes,
                                                   " classes (the default is HAM10000's 7)"), json());
  } else {
    codes = LabelSet::Ham10000().codes();
  }
  if (num_classes.has_value() && static_cast<size_t>(*num_classes) != codes.size()) {
    return FieldError(path, "num_classes", absl::StrCat("differs from the ", codes.size(), " labels"),
                      m["num_classes"]);
  }
  std::optional<std::vector<std::string>> malignant;
  if (m.contains("malignant_classes")) {
    const json& v = m["malignant_classes"];
    if (!v.is_array()) return FieldError(path, "malignant_classes", "must be an array of class codes", v);
    malignant.emplace();
    for (size_t i = 0; i < v.size(); ++i) {
      SL_ASSIGN_OR_RETURN(std::string code, String(path, absl::StrCat("malignant_classes[", i, "]"), v[i]));
      malignant->push_back(std::move(code));
    }
  }
  absl::StatusOr<LabelSet> classes = LabelSet::Create(codes, malignant);
  if (!classes.ok()) {
    return FieldError(path, "labels", std::string(classes.status().message()), m.value("labels", json()));
  }
  return classes;
}

absl::Status ParseGoldenSet(const std::string& path, const json& g, ModelSpec& spec) {
  SL_RETURN_IF_ERROR(Object(path, "golden_set", g));
  GoldenSet set;
  if (g.contains("tolerance")) {
    SL_ASSIGN_OR_RETURN(set.tolerance, Number(path, "golden_set.tolerance", g["tolerance"]));
    if (!(set.tolerance >= 0)) {
      return FieldError(path, "golden_set.tolerance", "must be >= 0", g["tolerance"]);
    }
  }
  if (g.contains("tolerance_bf16")) {
    SL_ASSIGN_OR_RETURN(set.tolerance_bf16,
                        Number(path, "golden_set.tolerance_bf16", g["tolerance_bf16"]));
    if (!(set.tolerance_bf16 >= 0)) {
      return FieldError(path, "golden_set.tolerance_bf16", "must be >= 0", g["tolerance_bf16"]);
    }
  }
  if (!g.contains("items") || !g["items"].is_array()) {
    return FieldError(path, "golden_set.items", "must be an array",
                      g.contains("items") ? g["items"] : json());
  }
  for (size_t i = 0; i < g["items"].size(); ++i) {
    const json& item = g["items"][i];
    const std::string field = absl::StrCat("golden_set.items[", i, "]");
    SL_RETURN_IF_ERROR(Object(path, field, item));
    GoldenItem golden;
    SL_ASSIGN_OR_RETURN(
        golden.file, String(path, field + ".file", item.contains("file") ? item["file"] : json()));
    if (golden.file.empty() || golden.file.find('/') != std::string::npos ||
        golden.file[0] == '.') {
      return FieldError(path, field + ".file", "must be a file name in the version directory",
                        item["file"]);
    }
    SL_RETURN_IF_ERROR(FloatVector(path, field + ".probabilities",
                                   item.contains("probabilities") ? item["probabilities"] : json(),
                                   static_cast<size_t>(spec.classes.size()), golden.probabilities));
    set.items.push_back(std::move(golden));
  }
  spec.golden_set = std::move(set);
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<ModelSpec> ReadModelSpec(const std::string& directory) {
  const std::string path = directory + "/manifest.json";
  SL_ASSIGN_OR_RETURN(const std::string text, ReadFileToString(path, 16 << 20));
  json m = json::parse(text, nullptr, false);
  if (m.is_discarded()) return absl::DataLossError(absl::StrCat(path, " is not valid JSON"));
  if (!m.is_object()) return absl::DataLossError(absl::StrCat(path, " is not a JSON object"));

  ModelSpec spec;
  spec.directory = directory;
  if (m.contains("model")) {
    SL_ASSIGN_OR_RETURN(spec.name, String(path, "model", m["model"]));
  }
  if (m.contains("version")) {
    SL_ASSIGN_OR_RETURN(spec.version, Integer(path, "version", m["version"]));
    if (spec.version < 1) return FieldError(path, "version", "must be >= 1", m["version"]);
  }
  if (!m.contains("architecture")) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": missing \"architecture\""));
  }
  SL_ASSIGN_OR_RETURN(spec.architecture, String(path, "architecture", m["architecture"]));
  if (spec.architecture.empty()) {
    return FieldError(path, "architecture", "must not be empty", m["architecture"]);
  }
  SL_ASSIGN_OR_RETURN(spec.classes, ParseLabels(path, m));
  bool has_size = false;
  if (m.contains("image_size")) {
    SL_ASSIGN_OR_RETURN(const int64_t s, Integer(path, "image_size", m["image_size"]));
    if (s < 1 || s > 16384)
      return FieldError(path, "image_size", "must be in [1, 16384]", m["image_size"]);
    spec.image_size = static_cast<int>(s);
    has_size = true;
  }
  if (m.contains("preprocessing")) {
    const json& p = m["preprocessing"];
    SL_RETURN_IF_ERROR(Object(path, "preprocessing", p));
    if (p.contains("size")) {
      SL_ASSIGN_OR_RETURN(const int64_t s, Integer(path, "preprocessing.size", p["size"]));
      if (s < 1 || s > 16384)
        return FieldError(path, "preprocessing.size", "must be in [1, 16384]", p["size"]);
      if (has_size && s != spec.image_size) {
        return FieldError(path, "preprocessing.size",
                          absl::StrCat("differs from image_size ", spec.image_size), p["size"]);
      }
      spec.image_size = static_cast<int>(s);
    }
    if (p.contains("resize")) {
      SL_ASSIGN_OR_RETURN(spec.resize, String(path, "preprocessing.resize", p["resize"]));
      if (spec.resize != "shorter_side_center_crop" && spec.resize != "resize") {
        return FieldError(path, "preprocessing.resize",
                          "must be \"shorter_side_center_crop\" or \"resize\"", p["resize"]);
      }
    }
    if (p.contains("mean")) {
      SL_RETURN_IF_ERROR(FloatArray(path, "preprocessing.mean", p["mean"], spec.mean));
    }
    if (p.contains("colour_constancy")) {
      const json& cc = p["colour_constancy"];
      SL_RETURN_IF_ERROR(Object(path, "preprocessing.colour_constancy", cc));
      SL_ASSIGN_OR_RETURN(const std::string method,
                          String(path, "preprocessing.colour_constancy.method",
                                 cc.contains("method") ? cc["method"] : json()));
      if (method != "shades_of_gray") {
        return FieldError(path, "preprocessing.colour_constancy.method",
                          "must be \"shades_of_gray\"", cc["method"]);
      }
      SL_ASSIGN_OR_RETURN(const int64_t norm, Integer(path, "preprocessing.colour_constancy.p",
                                                      cc.contains("p") ? cc["p"] : json()));
      if (norm < 1 || norm > 16) {
        return FieldError(path, "preprocessing.colour_constancy.p", "must be in [1, 16]", cc["p"]);
      }
      spec.shades_of_gray_p = static_cast<int>(norm);
    }
    if (p.contains("std")) {
      SL_RETURN_IF_ERROR(FloatArray(path, "preprocessing.std", p["std"], spec.std));
      for (float s : spec.std) {
        if (!(s > 0)) return FieldError(path, "preprocessing.std", "must be > 0", p["std"]);
      }
    }
  }
  SL_RETURN_IF_ERROR(ValidatePreprocessOptions(PreprocessOptionsFor(spec)));
  if (m.contains("calibration")) {
    const json& c = m["calibration"];
    SL_RETURN_IF_ERROR(Object(path, "calibration", c));
    if (c.contains("temperature")) {
      SL_ASSIGN_OR_RETURN(spec.temperature,
                          Number(path, "calibration.temperature", c["temperature"]));
      if (!(spec.temperature > 0)) {
        return FieldError(path, "calibration.temperature", "must be > 0", c["temperature"]);
      }
    }
  }
  if (m.contains("refer")) {
    const json& r = m["refer"];
    SL_RETURN_IF_ERROR(Object(path, "refer", r));
    auto unit = [&](const char* key, double& out, bool open_low) -> absl::Status {
      if (!r.contains(key)) return absl::OkStatus();
      const std::string field = absl::StrCat("refer.", key);
      SL_ASSIGN_OR_RETURN(out, Number(path, field, r[key]));
      if (out < 0 || out > 1 || (open_low && out == 0)) {
        return FieldError(path, field, open_low ? "must be in (0, 1]" : "must be in [0, 1]", r[key]);
      }
      return absl::OkStatus();
    };
    SL_RETURN_IF_ERROR(unit("min_confidence", spec.refer.min_confidence, false));
    SL_RETURN_IF_ERROR(unit("min_margin", spec.refer.min_margin, false));
    SL_RETURN_IF_ERROR(unit("target_sensitivity", spec.refer.target_sensitivity, true));
    if (r.contains("malignancy_risk_threshold")) {
      double t = 0;
      SL_RETURN_IF_ERROR(unit("malignancy_risk_threshold", t, false));
      spec.refer.risk_threshold = t;
    }
  }
  if (m.contains("ood")) {
    const json& o = m["ood"];
    SL_RETURN_IF_ERROR(Object(path, "ood", o));
    if (o.contains("method")) {
      SL_ASSIGN_OR_RETURN(const std::string method, String(path, "ood.method", o["method"]));
      const std::optional<OodMethod> parsed = ParseOodMethod(method);
      if (!parsed) {
        return FieldError(path, "ood.method", "must be \"mahalanobis\" or \"energy\"", o["method"]);
      }
      spec.ood.method = *parsed;
    }
    // "energy_threshold": the key of manifests written before the feature score.
    for (const char* key : {"threshold", "energy_threshold"}) {
      if (!o.contains(key)) continue;
      SL_ASSIGN_OR_RETURN(const double t, Number(path, absl::StrCat("ood.", key), o[key]));
      spec.ood.threshold = t;
    }
    if (o.contains("reject_rate")) {
      SL_ASSIGN_OR_RETURN(spec.ood.reject_rate, Number(path, "ood.reject_rate", o["reject_rate"]));
      if (spec.ood.reject_rate < 0 || spec.ood.reject_rate >= 1) {
        return FieldError(path, "ood.reject_rate", "must be in [0, 1)", o["reject_rate"]);
      }
    }
    if (spec.ood.method == OodMethod::kMahalanobis && spec.ood.threshold.has_value()) {
      if (!o.contains("features") || !o["features"].is_object()) {
        return FieldError(path, "ood.features", "must be an object naming the fitted Gaussian's file",
                          o.value("features", json()));
      }
      const json& f = o["features"];
      SL_ASSIGN_OR_RETURN(spec.ood.features_file, String(path, "ood.features.file", f.value("file", json())));
      if (spec.ood.features_file.empty() || spec.ood.features_file.find('/') != std::string::npos ||
          spec.ood.features_file.find("..") != std::string::npos) {
        return FieldError(path, "ood.features.file", "must be a file name in the model directory", f["file"]);
      }
      if (f.contains("sha256")) {
        SL_ASSIGN_OR_RETURN(spec.ood.features_sha256, String(path, "ood.features.sha256", f["sha256"]));
      }
    }
  }
  if (m.contains("precision")) {
    SL_ASSIGN_OR_RETURN(const std::string text, String(path, "precision", m["precision"]));
    absl::StatusOr<Precision> pinned = ParsePrecision(text);
    if (!pinned.ok()) return FieldError(path, "precision", "must be \"fp32\" or \"bf16\"", m["precision"]);
    spec.precision = *pinned;
  }

  // The weights' identity.
  if (m.contains("files")) {
    if (!m["files"].is_array()) return FieldError(path, "files", "must be an array", m["files"]);
    for (size_t i = 0; i < m["files"].size(); ++i) {
      const json& f = m["files"][i];
      const std::string field = absl::StrCat("files[", i, "]");
      SL_RETURN_IF_ERROR(Object(path, field, f));
      SL_ASSIGN_OR_RETURN(const std::string name,
                          String(path, field + ".name", f.contains("name") ? f["name"] : json()));
      if (name == kWeightsFile) {
        SL_ASSIGN_OR_RETURN(spec.sha256, String(path, field + ".sha256",
                                                f.contains("sha256") ? f["sha256"] : json()));
      }
    }
  }
  if (spec.sha256.empty() && m.contains("sha256")) {
    SL_ASSIGN_OR_RETURN(spec.sha256, String(path, "sha256", m["sha256"]));
  }
  if (spec.sha256.empty()) {
    const std::string weights = directory + "/" + kWeightsFile;
    std::error_code ec;
    if (std::filesystem::exists(weights, ec)) {
      SL_ASSIGN_OR_RETURN(spec.sha256, Sha256File(weights));
    }
  }
  if (m.contains("golden_set")) {
    SL_RETURN_IF_ERROR(ParseGoldenSet(path, m["golden_set"], spec));
  }
  spec.manifest = std::move(m);
  return spec;
}

absl::Status CheckGoldenSet(const ModelSpec& spec, ModelInstance& instance) {
  const std::string what = absl::StrCat(spec.name, " v", spec.version);
  if (!spec.golden_set.has_value()) {
    SL_LOG(INFO) << "serving: " << what << " has no golden_set: nothing to check";
    return absl::OkStatus();
  }
  const GoldenSet& golden = *spec.golden_set;
  const double tolerance = golden.ToleranceFor(instance.precision());
  const size_t per = 3 * static_cast<size_t>(spec.image_size) * spec.image_size;
  std::vector<float> input(per);
  for (const GoldenItem& item : golden.items) {
    const std::string path = spec.directory + "/" + item.file;
    SL_ASSIGN_OR_RETURN(const std::string bytes, ReadFileToString(path, size_t{64} << 20));
    SL_RETURN_IF_ERROR(Annotate(DecodeAndPreprocess(spec, bytes, DecodeLimits{}, input.data()),
                                "golden file ", path));
    SL_ASSIGN_OR_RETURN(const ScoredRun run, instance.RunScored(input.data(), 1));
    if (run.logits.size() != static_cast<size_t>(spec.classes.size())) {
      return absl::InternalError(absl::StrCat(what, ": the model returned ", run.logits.size(),
                                              " logits for golden file ", item.file));
    }
    InferResult r;
    FillPrediction(spec, run.logits.data(), std::nullopt, r);
    int worst = 0;
    double worst_diff = -1;
    for (int k = 0; k < spec.classes.size(); ++k) {
      const double d = std::fabs(static_cast<double>(r.probabilities[k]) - item.probabilities[k]);
      if (!(d <= worst_diff)) {  // NaN counts as the worst.
        worst = k;
        worst_diff = d;
      }
    }
    if (!(worst_diff <= tolerance)) {
      return absl::FailedPreconditionError(
          absl::StrFormat("%s: golden set mismatch on %s: P(%s) = %.6f, expected %.6f (|diff| %.3g "
                          "> tolerance %.3g for %s)",
                          what, item.file, spec.classes.at(worst).code, r.probabilities[worst],
                          item.probabilities[worst], worst_diff, tolerance,
                          std::string(PrecisionName(instance.precision()))));
    }
  }
  SL_LOG(INFO) << "serving: " << what << " matches its golden set (" << golden.items.size()
               << " items, tolerance " << tolerance << " for "
               << PrecisionName(instance.precision()) << ")";
  return absl::OkStatus();
}

PreprocessOptions PreprocessOptionsFor(const ModelSpec& spec) {
  PreprocessOptions options;
  options.size = spec.image_size;
  options.mode = spec.resize == "resize" ? ResizeMode::kDirectResize
                                         : ResizeMode::kResizeShorterThenCenterCrop;
  options.mean = spec.mean;
  options.std = spec.std;
  options.shades_of_gray_p = spec.shades_of_gray_p;
  return options;
}

DecodeLimits DecodeLimitsFor(const ModelSpec& spec, DecodeLimits base) {
  base.reduce_to_side = ReducedDecodeSide(PreprocessOptionsFor(spec));
  return base;
}

uint64_t DecodePixelBudget(const ModelSpec& spec, int factor, int64_t min_pixels) {
  if (factor <= 0) return 0;
  const uint64_t input = uint64_t(spec.image_size) * uint64_t(spec.image_size);
  return std::max<uint64_t>(uint64_t(factor) * input, static_cast<uint64_t>(std::max<int64_t>(min_pixels, 0)));
}

}  // namespace skinlesion::serving
