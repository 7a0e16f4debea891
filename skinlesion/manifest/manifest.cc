// ModelManifest: Parse, ToJson, Read and Write.
#include "skinlesion/manifest/manifest.h"

#include <cmath>
#include <filesystem>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "skinlesion/common/csv.h"
#include "skinlesion/common/hash.h"
#include "skinlesion/common/status.h"

namespace skinlesion {
namespace {

using json = nlohmann::json;

// Reads fields of one document, naming the source and the field in every error.
class FieldReader {
 public:
  explicit FieldReader(absl::string_view source) : source_(source) {}

  absl::Status Error(const std::string& field, absl::string_view what, const json& value) const {
    return absl::InvalidArgumentError(
        absl::StrCat(source_, ": \"", field, "\" ", what, ", got ", value.dump()));
  }

  absl::StatusOr<double> Number(const std::string& field, const json& v) const {
    if (!v.is_number()) return Error(field, "must be a number", v);
    const double d = v.get<double>();
    if (!std::isfinite(d)) return Error(field, "must be finite", v);
    return d;
  }

  absl::StatusOr<int64_t> Integer(const std::string& field, const json& v) const {
    if (!v.is_number_integer()) return Error(field, "must be an integer", v);
    return v.get<int64_t>();
  }

  absl::StatusOr<std::string> String(const std::string& field, const json& v) const {
    if (!v.is_string()) return Error(field, "must be a string", v);
    return v.get<std::string>();
  }

  absl::Status Object(const std::string& field, const json& v) const {
    if (!v.is_object()) return Error(field, "must be an object", v);
    return absl::OkStatus();
  }

  absl::StatusOr<std::vector<std::string>> Strings(const std::string& field, const json& v,
                                                   absl::string_view what) const {
    if (!v.is_array() || v.size() > static_cast<size_t>(kMaxClasses)) return Error(field, what, v);
    std::vector<std::string> out;
    for (size_t i = 0; i < v.size(); ++i) {
      SL_ASSIGN_OR_RETURN(std::string s, String(absl::StrCat(field, "[", i, "]"), v[i]));
      out.push_back(std::move(s));
    }
    return out;
  }

  absl::Status Floats(const std::string& field, const json& v, size_t n, absl::string_view what,
                      float* out) const {
    if (!v.is_array() || v.size() != n) return Error(field, what, v);
    for (size_t i = 0; i < n; ++i) {
      SL_ASSIGN_OR_RETURN(const double d, Number(absl::StrCat(field, "[", i, "]"), v[i]));
      out[i] = static_cast<float>(d);
    }
    return absl::OkStatus();
  }

  // Which end of [0, 1] a Unit field excludes.
  enum class Open { kNeither, kLow, kHigh };
  // A number in [0, 1] ((0, 1] with Open::kLow, [0, 1) with Open::kHigh) at key of
  // object o, when present.
  absl::Status Unit(const std::string& prefix, const json& o, const char* key, Open open,
                    double& out) const {
    if (!o.contains(key)) return absl::OkStatus();
    const std::string field = absl::StrCat(prefix, key);
    SL_ASSIGN_OR_RETURN(out, Number(field, o[key]));
    if (out < 0 || out > 1 || (open == Open::kLow && out == 0) ||
        (open == Open::kHigh && out == 1)) {
      return Error(field,
                   open == Open::kLow    ? "must be in (0, 1]"
                   : open == Open::kHigh ? "must be in [0, 1)"
                                         : "must be in [0, 1]",
                   o[key]);
    }
    return absl::OkStatus();
  }

 private:
  std::string source_;
};

json Field(const json& o, const char* key) { return o.contains(key) ? o[key] : json(); }

bool IsFileName(const std::string& name) {
  return !name.empty() && name.find('/') == std::string::npos && name.find("..") == std::string::npos &&
         name[0] != '.';
}

absl::StatusOr<LabelSet> ParseLabels(const FieldReader& r, const json& m) {
  std::optional<int64_t> num_classes;
  if (m.contains("num_classes")) {
    SL_ASSIGN_OR_RETURN(num_classes, r.Integer("num_classes", m["num_classes"]));
    if (*num_classes < 2 || *num_classes > kMaxClasses) {
      return r.Error("num_classes", absl::StrCat("must be in [2, ", kMaxClasses, "]"), m["num_classes"]);
    }
  }
  std::vector<std::string> codes;
  // SaveCheckpoint writes "labels": [] when it was given none.
  if (m.contains("labels") && !(m["labels"].is_array() && m["labels"].empty())) {
    SL_ASSIGN_OR_RETURN(codes, r.Strings("labels", m["labels"], "must be an array of class codes in logit order"));
  } else if (num_classes.has_value() && *num_classes != kHam10000NumClasses) {
    return r.Error("labels", absl::StrCat("is required for a model of ", *num_classes,
                                          " classes (the default is HAM10000's 7)"), json());
  } else {
    codes = LabelSet::Ham10000().codes();
  }
  if (num_classes.has_value() && static_cast<size_t>(*num_classes) != codes.size()) {
    return r.Error("num_classes", absl::StrCat("differs from the ", codes.size(), " labels"), m["num_classes"]);
  }
  std::optional<std::vector<std::string>> malignant;
  if (m.contains("malignant_classes")) {
    SL_ASSIGN_OR_RETURN(malignant, r.Strings("malignant_classes", m["malignant_classes"],
                                             "must be an array of class codes"));
  }
  absl::StatusOr<LabelSet> classes = LabelSet::Create(codes, malignant);
  if (!classes.ok()) return r.Error("labels", classes.status().message(), Field(m, "labels"));
  return classes;
}

absl::Status ParsePreprocessing(const FieldReader& r, const json& p, bool has_size, ModelManifest& out) {
  SL_RETURN_IF_ERROR(r.Object("preprocessing", p));
  if (p.contains("size")) {
    SL_ASSIGN_OR_RETURN(const int64_t s, r.Integer("preprocessing.size", p["size"]));
    if (s < 1 || s > 16384) return r.Error("preprocessing.size", "must be in [1, 16384]", p["size"]);
    if (has_size && s != out.image_size) {
      return r.Error("preprocessing.size", absl::StrCat("differs from image_size ", out.image_size), p["size"]);
    }
    out.image_size = static_cast<int>(s);
  }
  if (p.contains("resize")) {
    SL_ASSIGN_OR_RETURN(out.resize, r.String("preprocessing.resize", p["resize"]));
    if (!IsResizeMode(out.resize)) {
      return r.Error("preprocessing.resize", "must be \"shorter_side_center_crop\" or \"resize\"", p["resize"]);
    }
  }
  if (p.contains("mean")) {
    SL_RETURN_IF_ERROR(r.Floats("preprocessing.mean", p["mean"], 3, "must be an array of 3 numbers",
                                out.mean.data()));
  }
  if (p.contains("std")) {
    SL_RETURN_IF_ERROR(r.Floats("preprocessing.std", p["std"], 3, "must be an array of 3 numbers",
                                out.std.data()));
    for (float s : out.std) {
      if (!(s > 0)) return r.Error("preprocessing.std", "must be > 0", p["std"]);
    }
  }
  if (p.contains("colour_constancy")) {
    const json& cc = p["colour_constancy"];
    SL_RETURN_IF_ERROR(r.Object("preprocessing.colour_constancy", cc));
    SL_ASSIGN_OR_RETURN(const std::string method,
                        r.String("preprocessing.colour_constancy.method", Field(cc, "method")));
    if (method != "shades_of_gray") {
      return r.Error("preprocessing.colour_constancy.method", "must be \"shades_of_gray\"", cc["method"]);
    }
    SL_ASSIGN_OR_RETURN(const int64_t norm, r.Integer("preprocessing.colour_constancy.p", Field(cc, "p")));
    if (norm < 1 || norm > 16) {
      return r.Error("preprocessing.colour_constancy.p", "must be in [1, 16]", cc["p"]);
    }
    out.shades_of_gray_p = static_cast<int>(norm);
  }
  return absl::OkStatus();
}

// "decision": {"rule": "plain" | "prior_adjusted" (default), "tau" in [0, 4] (read
// for prior_adjusted only), "prior": one share per class, each in (0, 1]; required
// when tau > 0, "bias": one number per class in [-4, 4] (prior_adjusted only)}.
absl::StatusOr<DecisionRule> ParseDecision(const FieldReader& r, const json& d, int num_classes) {
  SL_RETURN_IF_ERROR(r.Object("decision", d));
  DecisionRule rule;
  std::string name = "prior_adjusted";
  if (d.contains("rule")) {
    SL_ASSIGN_OR_RETURN(name, r.String("decision.rule", d["rule"]));
    if (name != "plain" && name != "prior_adjusted") {
      return r.Error("decision.rule", "must be \"plain\" or \"prior_adjusted\"", d["rule"]);
    }
  }
  if (name == "prior_adjusted") {
    if (!d.contains("tau")) return r.Error("decision.tau", "is required", json());
    SL_ASSIGN_OR_RETURN(rule.tau, r.Number("decision.tau", d["tau"]));
    if (rule.tau < 0 || rule.tau > 4) return r.Error("decision.tau", "must be in [0, 4]", d["tau"]);
  }
  if (d.contains("prior") || rule.tau > 0) {
    const json& prior = Field(d, "prior");
    if (!prior.is_array() || static_cast<int>(prior.size()) != num_classes) {
      return r.Error("decision.prior",
                     absl::StrCat("must be an array of ", num_classes, " class shares"), prior);
    }
    for (size_t i = 0; i < prior.size(); ++i) {
      SL_ASSIGN_OR_RETURN(const double q,
                          r.Number(absl::StrCat("decision.prior[", i, "]"), prior[i]));
      if (!(q > 0 && q <= 1))
        return r.Error(absl::StrCat("decision.prior[", i, "]"), "must be in (0, 1]", prior[i]);
      rule.prior.push_back(q);
    }
  }
  if (d.contains("bias")) {
    const json& bias = d["bias"];
    if (name != "prior_adjusted")
      return r.Error("decision.bias", "needs rule \"prior_adjusted\"", bias);
    if (!bias.is_array() || static_cast<int>(bias.size()) != num_classes) {
      return r.Error("decision.bias", absl::StrCat("must be an array of ", num_classes, " numbers"),
                     bias);
    }
    for (size_t i = 0; i < bias.size(); ++i) {
      SL_ASSIGN_OR_RETURN(const double b,
                          r.Number(absl::StrCat("decision.bias[", i, "]"), bias[i]));
      if (!(b >= -4 && b <= 4))
        return r.Error(absl::StrCat("decision.bias[", i, "]"), "must be in [-4, 4]", bias[i]);
      rule.bias.push_back(b);
    }
    if (!rule.HasBias()) rule.bias.clear();
  }
  return rule;
}

absl::Status ParseRefer(const FieldReader& r, const json& o, ReferralPolicy& refer) {
  SL_RETURN_IF_ERROR(r.Object("refer", o));
  using Open = FieldReader::Open;
  SL_RETURN_IF_ERROR(r.Unit("refer.", o, "min_confidence", Open::kNeither, refer.min_confidence));
  SL_RETURN_IF_ERROR(r.Unit("refer.", o, "min_margin", Open::kNeither, refer.min_margin));
  SL_RETURN_IF_ERROR(
      r.Unit("refer.", o, "target_sensitivity", Open::kLow, refer.target_sensitivity));
  SL_RETURN_IF_ERROR(
      r.Unit("refer.", o, "sensitivity_confidence", Open::kHigh, refer.sensitivity_confidence));
  if (o.contains("malignancy_risk_threshold")) {
    double t = 0;
    SL_RETURN_IF_ERROR(r.Unit("refer.", o, "malignancy_risk_threshold", Open::kNeither, t));
    refer.risk_threshold = t;
  }
  return absl::OkStatus();
}

absl::Status ParseOod(const FieldReader& r, const json& o, OodPolicy& ood) {
  SL_RETURN_IF_ERROR(r.Object("ood", o));
  if (o.contains("method")) {
    SL_ASSIGN_OR_RETURN(const std::string method, r.String("ood.method", o["method"]));
    const std::optional<OodMethod> parsed = ParseOodMethod(method);
    if (!parsed) return r.Error("ood.method", "must be \"mahalanobis\" or \"energy\"", o["method"]);
    ood.method = *parsed;
  }
  // "energy_threshold": the key of manifests written before the feature score.
  for (const char* key : {"threshold", "energy_threshold"}) {
    if (!o.contains(key)) continue;
    SL_ASSIGN_OR_RETURN(const double t, r.Number(absl::StrCat("ood.", key), o[key]));
    ood.threshold = t;
  }
  SL_RETURN_IF_ERROR(r.Unit("ood.", o, "reject_rate", FieldReader::Open::kHigh, ood.reject_rate));
  if (ood.method == OodMethod::kMahalanobis && ood.threshold.has_value()) {
    if (!o.contains("features") || !o["features"].is_object()) {
      return r.Error("ood.features", "must be an object naming the fitted Gaussian's file", Field(o, "features"));
    }
    const json& f = o["features"];
    SL_ASSIGN_OR_RETURN(ood.features_file, r.String("ood.features.file", Field(f, "file")));
    if (!IsFileName(ood.features_file)) {
      return r.Error("ood.features.file", "must be a file name in the model directory", f["file"]);
    }
    if (f.contains("sha256")) {
      SL_ASSIGN_OR_RETURN(ood.features_sha256, r.String("ood.features.sha256", f["sha256"]));
    }
  }
  return absl::OkStatus();
}

// "vit": the vit_custom shape, five positive integers (bounded so that a hostile
// manifest cannot ask for a model that does not fit in memory).
absl::StatusOr<models::VitConfig> ParseVit(const FieldReader& r, const json& v) {
  SL_RETURN_IF_ERROR(r.Object("vit", v));
  models::VitConfig vit;
  const std::pair<const char*, int64_t*> fields[] = {{"patch_size", &vit.patch_size},
                                                     {"hidden_dim", &vit.hidden_dim},
                                                     {"num_layers", &vit.num_layers},
                                                     {"num_heads", &vit.num_heads},
                                                     {"mlp_dim", &vit.mlp_dim}};
  for (const auto& [key, out] : fields) {
    const std::string field = absl::StrCat("vit.", key);
    if (!v.contains(key)) return r.Error(field, "is required", json());
    SL_ASSIGN_OR_RETURN(*out, r.Integer(field, v[key]));
    if (*out < 1 || *out > kMaxVitDimension) {
      return r.Error(field, absl::StrCat("must be in [1, ", kMaxVitDimension, "]"), v[key]);
    }
  }
  return vit;
}

absl::StatusOr<GoldenSet> ParseGoldenSet(const FieldReader& r, const json& g, int num_classes) {
  SL_RETURN_IF_ERROR(r.Object("golden_set", g));
  GoldenSet set;
  for (auto [key, out] : {std::pair{"tolerance", &set.tolerance}, std::pair{"tolerance_bf16", &set.tolerance_bf16}}) {
    if (!g.contains(key)) continue;
    const std::string field = absl::StrCat("golden_set.", key);
    SL_ASSIGN_OR_RETURN(*out, r.Number(field, g[key]));
    if (!(*out >= 0)) return r.Error(field, "must be >= 0", g[key]);
  }
  if (!g.contains("items") || !g["items"].is_array()) {
    return r.Error("golden_set.items", "must be an array", Field(g, "items"));
  }
  for (size_t i = 0; i < g["items"].size(); ++i) {
    const json& item = g["items"][i];
    const std::string field = absl::StrCat("golden_set.items[", i, "]");
    SL_RETURN_IF_ERROR(r.Object(field, item));
    GoldenItem golden;
    SL_ASSIGN_OR_RETURN(golden.file, r.String(field + ".file", Field(item, "file")));
    if (!IsFileName(golden.file)) {
      return r.Error(field + ".file", "must be a file name in the version directory", item["file"]);
    }
    golden.probabilities.resize(static_cast<size_t>(num_classes));
    SL_RETURN_IF_ERROR(r.Floats(field + ".probabilities", Field(item, "probabilities"), golden.probabilities.size(),
                                absl::StrCat("must be an array of ", num_classes, " numbers (one per class)"),
                                golden.probabilities.data()));
    if (item.contains("top_class") && item["top_class"].is_string()) golden.top_class = item["top_class"];
    set.items.push_back(std::move(golden));
  }
  return set;
}

absl::StatusOr<std::string> ParseSha256(const FieldReader& r, const json& m) {
  std::string sha256;
  if (m.contains("files")) {
    if (!m["files"].is_array()) return r.Error("files", "must be an array", m["files"]);
    for (size_t i = 0; i < m["files"].size(); ++i) {
      const json& f = m["files"][i];
      const std::string field = absl::StrCat("files[", i, "]");
      SL_RETURN_IF_ERROR(r.Object(field, f));
      SL_ASSIGN_OR_RETURN(const std::string name, r.String(field + ".name", Field(f, "name")));
      if (name == kWeightsFile) {
        SL_ASSIGN_OR_RETURN(sha256, r.String(field + ".sha256", Field(f, "sha256")));
      }
    }
  }
  if (sha256.empty() && m.contains("sha256")) {
    SL_ASSIGN_OR_RETURN(sha256, r.String("sha256", m["sha256"]));
  }
  return sha256;
}

// The object at key (created when absent or not an object).
json& ObjectAt(json& j, const char* key) {
  if (!j.contains(key) || !j[key].is_object()) j[key] = json::object();
  return j[key];
}

}  // namespace

bool IsResizeMode(absl::string_view mode) {
  return mode == kResizeShorterSideCenterCrop || mode == kResizeDirect;
}

std::string ResizeModeProblem(absl::string_view what, absl::string_view mode) {
  if (IsResizeMode(mode)) return "";
  return absl::StrCat(what, " must be ", kResizeShorterSideCenterCrop, " or ", kResizeDirect,
                      ", got '", mode, "'");
}

absl::StatusOr<ModelManifest> ModelManifest::Parse(const json& m, absl::string_view source) {
  const FieldReader r(source);
  if (!m.is_object()) return absl::InvalidArgumentError(absl::StrCat(source, " is not a JSON object"));
  ModelManifest out;
  if (m.contains("format")) {
    SL_ASSIGN_OR_RETURN(const std::string format, r.String("format", m["format"]));
    if (format != kManifestFormat) {
      return r.Error("format", absl::StrCat("must be \"", kManifestFormat,
                                            "\" (a manifest of another layout: a newer skinlesion wrote it?)"),
                     m["format"]);
    }
  }
  if (m.contains("model")) {
    SL_ASSIGN_OR_RETURN(out.name, r.String("model", m["model"]));
  }
  if (m.contains("version")) {
    SL_ASSIGN_OR_RETURN(out.version, r.Integer("version", m["version"]));
    if (out.version < 1) return r.Error("version", "must be >= 1", m["version"]);
  }
  if (!m.contains("architecture")) return absl::InvalidArgumentError(absl::StrCat(source, ": missing \"architecture\""));
  SL_ASSIGN_OR_RETURN(out.architecture, r.String("architecture", m["architecture"]));
  if (out.architecture.empty()) return r.Error("architecture", "must not be empty", m["architecture"]);
  SL_ASSIGN_OR_RETURN(out.classes, ParseLabels(r, m));
  bool has_size = false;
  if (m.contains("image_size")) {
    SL_ASSIGN_OR_RETURN(const int64_t s, r.Integer("image_size", m["image_size"]));
    if (s < 1 || s > 16384) return r.Error("image_size", "must be in [1, 16384]", m["image_size"]);
    out.image_size = static_cast<int>(s);
    has_size = true;
  }
  if (m.contains("preprocessing")) SL_RETURN_IF_ERROR(ParsePreprocessing(r, m["preprocessing"], has_size, out));
  if (m.contains("vit")) {
    SL_ASSIGN_OR_RETURN(out.vit, ParseVit(r, m["vit"]));
  }
  if (m.contains("calibration")) {
    const json& c = m["calibration"];
    SL_RETURN_IF_ERROR(r.Object("calibration", c));
    if (c.contains("temperature")) {
      SL_ASSIGN_OR_RETURN(out.temperature, r.Number("calibration.temperature", c["temperature"]));
      if (!(out.temperature > 0)) return r.Error("calibration.temperature", "must be > 0", c["temperature"]);
    }
  }
  if (m.contains("refer")) SL_RETURN_IF_ERROR(ParseRefer(r, m["refer"], out.refer));
  if (m.contains("decision")) {
    SL_ASSIGN_OR_RETURN(out.decision, ParseDecision(r, m["decision"], out.classes.size()));
  }
  if (m.contains("ood")) SL_RETURN_IF_ERROR(ParseOod(r, m["ood"], out.ood));
  if (m.contains("precision")) {
    SL_ASSIGN_OR_RETURN(const std::string text, r.String("precision", m["precision"]));
    absl::StatusOr<Precision> pinned = ParsePrecision(text);
    if (!pinned.ok()) return r.Error("precision", "must be \"fp32\" or \"bf16\"", m["precision"]);
    out.precision = *pinned;
  }
  if (m.contains("tta")) {
    SL_ASSIGN_OR_RETURN(const std::string text, r.String("tta", m["tta"]));
    absl::StatusOr<Tta> tta = ParseTta(text);
    if (!tta.ok()) return r.Error("tta", "must be \"none\", \"flips\" or \"dihedral\"", m["tta"]);
    out.tta = *tta;
  }
  SL_ASSIGN_OR_RETURN(out.sha256, ParseSha256(r, m));
  if (m.contains("golden_set")) {
    SL_ASSIGN_OR_RETURN(out.golden_set, ParseGoldenSet(r, m["golden_set"], out.classes.size()));
  }
  out.document = m;
  return out;
}

absl::StatusOr<LabelSet> ParseManifestLabels(const json& document, absl::string_view source) {
  if (!document.is_object()) return absl::InvalidArgumentError(absl::StrCat(source, " is not a JSON object"));
  return ParseLabels(FieldReader(source), document);
}

absl::StatusOr<ModelManifest> ModelManifest::ParseText(absl::string_view text, absl::string_view source) {
  const json m = json::parse(text.begin(), text.end(), nullptr, /*allow_exceptions=*/false);
  if (m.is_discarded()) return absl::DataLossError(absl::StrCat(source, " is not valid JSON"));
  if (!m.is_object()) return absl::DataLossError(absl::StrCat(source, " is not a JSON object"));
  return Parse(m, source);
}

json ModelManifest::ToJson() const {
  json j = document.is_object() ? document : json::object();
  j["format"] = kManifestFormat;
  if (!name.empty()) j["model"] = name;
  if (version > 0) j["version"] = version;
  j["architecture"] = architecture;
  j["image_size"] = image_size;
  j["num_classes"] = classes.size();
  j["labels"] = classes.codes();
  j["malignant_classes"] = classes.malignant_codes();
  if (vit.has_value()) {
    j["vit"] = {{"patch_size", vit->patch_size},
                {"hidden_dim", vit->hidden_dim},
                {"num_layers", vit->num_layers},
                {"num_heads", vit->num_heads},
                {"mlp_dim", vit->mlp_dim}};
  } else {
    j.erase("vit");
  }
  json& p = ObjectAt(j, "preprocessing");
  p["size"] = image_size;
  p["resize"] = resize;
  p["mean"] = mean;
  p["std"] = std;
  if (shades_of_gray_p > 0) {
    p["colour_constancy"] = {{"method", "shades_of_gray"}, {"p", shades_of_gray_p}};
  } else {
    p.erase("colour_constancy");
  }
  ObjectAt(j, "calibration")["temperature"] = temperature;
  json& r = ObjectAt(j, "refer");
  r["min_confidence"] = refer.min_confidence;
  r["min_margin"] = refer.min_margin;
  r["target_sensitivity"] = refer.target_sensitivity;
  if (refer.sensitivity_confidence > 0) {
    r["sensitivity_confidence"] = refer.sensitivity_confidence;
  } else {
    r.erase("sensitivity_confidence");
  }
  if (refer.risk_threshold.has_value()) {
    r["malignancy_risk_threshold"] = *refer.risk_threshold;
  } else {
    r.erase("malignancy_risk_threshold");
  }
  if (decision.Adjusted() || j.contains("decision")) {
    json& d = ObjectAt(j, "decision");
    d["rule"] = decision.Adjusted() ? "prior_adjusted" : "plain";
    d["tau"] = decision.Adjusted() ? decision.tau : 0.0;
    if (decision.prior.empty()) {
      d.erase("prior");
    } else {
      d["prior"] = decision.prior;
    }
    if (decision.HasBias()) {
      d["bias"] = decision.bias;
    } else {
      d.erase("bias");
    }
  }
  if (ood.threshold.has_value() || j.contains("ood")) {
    json& o = ObjectAt(j, "ood");
    o["method"] = OodMethodName(ood.method);
    o.erase("energy_threshold");
    o["reject_rate"] = ood.reject_rate;
    if (ood.threshold.has_value()) {
      o["threshold"] = *ood.threshold;
    } else {
      o.erase("threshold");
    }
    if (!ood.features_file.empty()) {
      json& f = ObjectAt(o, "features");
      f["file"] = ood.features_file;
      if (!ood.features_sha256.empty()) f["sha256"] = ood.features_sha256;
    }
  }
  if (precision.has_value()) {
    j["precision"] = std::string(PrecisionName(*precision));
  } else {
    j.erase("precision");
  }
  if (tta != Tta::kNone) {
    j["tta"] = std::string(TtaName(tta));
  } else {
    j.erase("tta");
  }
  if (golden_set.has_value()) {
    json items = json::array();
    for (const GoldenItem& item : golden_set->items) {
      json entry = {{"file", item.file}, {"probabilities", item.probabilities}};
      if (!item.top_class.empty()) entry["top_class"] = item.top_class;
      items.push_back(std::move(entry));
    }
    j["golden_set"] = {{"tolerance", golden_set->tolerance},
                       {"tolerance_bf16", golden_set->tolerance_bf16},
                       {"items", std::move(items)}};
  } else {
    j.erase("golden_set");
  }
  // The weights' hash lives in "files" (a registry version) or "sha256".
  bool in_files = false;
  if (j.contains("files") && j["files"].is_array()) {
    for (json& f : j["files"]) {
      if (f.is_object() && f.value("name", "") == kWeightsFile && !sha256.empty()) {
        f["sha256"] = sha256;
        in_files = true;
      }
    }
  }
  if (!in_files && !sha256.empty()) j["sha256"] = sha256;
  return j;
}

absl::StatusOr<ModelManifest> ReadModelManifest(const std::string& directory) {
  const std::string path = absl::StrCat(directory, "/", kManifestFile);
  SL_ASSIGN_OR_RETURN(const std::string text, ReadFileToString(path, size_t{16} << 20));
  SL_ASSIGN_OR_RETURN(ModelManifest manifest, ModelManifest::ParseText(text, path));
  if (manifest.sha256.empty()) {
    const std::string weights = absl::StrCat(directory, "/", kWeightsFile);
    std::error_code ec;
    if (std::filesystem::exists(weights, ec)) {
      SL_ASSIGN_OR_RETURN(manifest.sha256, Sha256File(weights));
    }
  }
  return manifest;
}

absl::Status WriteModelManifest(const std::string& directory, const ModelManifest& manifest) {
  return WriteFileAtomically(absl::StrCat(directory, "/", kManifestFile), manifest.ToJson().dump(2) + "\n");
}

}  // namespace skinlesion
