#include "tools/ml_commands.h"

#include <torch/torch.h>

#include <cctype>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <map>
#include <memory>
#include <optional>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "skinlesion/common/cpu_features.h"
#include "skinlesion/common/csv.h"
#include "skinlesion/common/decision.h"
#include "skinlesion/common/hash.h"
#include "skinlesion/common/json_file.h"
#include "skinlesion/common/logging.h"
#include "skinlesion/common/ood.h"
#include "skinlesion/common/precision.h"
#include "skinlesion/common/referral.h"
#include "skinlesion/common/status.h"
#include "skinlesion/data/dataset.h"
#include "skinlesion/data/ham10000.h"
#include "skinlesion/data/isic.h"
#include "skinlesion/data/split.h"
#include "skinlesion/eval/cross_validation.h"
#include "skinlesion/eval/operating_point.h"
#include "skinlesion/eval/out_of_fold.h"
#include "skinlesion/eval/plots.h"
#include "skinlesion/eval/referral_eval.h"
#include "skinlesion/eval/report.h"
#include "skinlesion/eval/subgroups.h"
#include "skinlesion/image/decode.h"
#include "skinlesion/image/grid.h"
#include "skinlesion/manifest/manifest.h"
#include "skinlesion/models/feature_ood.h"
#include "skinlesion/models/model_zoo.h"
#include "skinlesion/models/numerics.h"
#include "skinlesion/models/state_dict.h"
#include "skinlesion/predict/predictor.h"
#include "skinlesion/registry/registry.h"
#include "skinlesion/serving/preprocessing.h"
#include "skinlesion/serving/serving.h"
#include "skinlesion/train/distributed.h"
#include "skinlesion/train/trainer.h"

namespace skinlesion::cli {
namespace fs = std::filesystem;
namespace {

std::string ResolveDevice(const std::string& device) {
  if (device != "auto") return device;
  return torch::cuda::is_available() ? "cuda" : "cpu";
}

// "a=1,b=x,c=true" -> {"a": 1, "b": "x", "c": true}: values parse as JSON when
// they can, else they are strings.
absl::StatusOr<nlohmann::json> ParseOverrides(const std::string& text) {
  nlohmann::json j = nlohmann::json::object();
  if (text.empty()) return j;
  for (absl::string_view item : absl::StrSplit(text, ',', absl::SkipEmpty())) {
    const std::pair<std::string, std::string> kv = absl::StrSplit(item, absl::MaxSplits('=', 1));
    if (kv.first.empty() || item.find('=') == absl::string_view::npos) {
      return absl::InvalidArgumentError(absl::StrCat("--set: expected key=value, got '", item, "'"));
    }
    nlohmann::json v = nlohmann::json::parse(kv.second, nullptr, false);
    j[kv.first] = v.is_discarded() ? nlohmann::json(kv.second) : v;
  }
  return j;
}

absl::StatusOr<train::TrainConfig> BuildConfig(const TrainCommand& cmd) {
  train::TrainConfig config;
  if (!cmd.config_file.empty()) {
    SL_ASSIGN_OR_RETURN(const nlohmann::json j, ReadJsonObject(cmd.config_file, 1 << 20,
                                                               absl::StatusCode::kInvalidArgument));
    SL_ASSIGN_OR_RETURN(config, train::TrainConfig::FromJson(j, config));
  }
  SL_ASSIGN_OR_RETURN(const nlohmann::json overrides, ParseOverrides(cmd.overrides));
  SL_ASSIGN_OR_RETURN(config, train::TrainConfig::FromJson(overrides, config));
  SL_RETURN_IF_ERROR(config.Validate());
  return config;
}

// The "referral" block of a report: the rule and its operating point with 95% CIs.
void PrintReferral(const nlohmann::json& m) {
  if (m.contains("referral")) {
    const nlohmann::json& r = m["referral"];
    auto pct = [](const nlohmann::json& p) {
      if (p.value("n", 0) == 0) return std::string("n/a (no such cases)");
      return absl::StrFormat("%.1f%% [%.1f, %.1f]", 100 * p["value"].get<double>(),
                             100 * p["ci95"][0].get<double>(), 100 * p["ci95"][1].get<double>());
    };
    const nlohmann::json& t = r["policy"]["malignancy_risk_threshold"];
    std::printf("  referral           %s\n",
                t.is_number() ? absl::StrFormat("risk >= %.3f (%s) or uncertain", t.get<double>(),
                                                r.value("threshold_source", "")).c_str()
                              : "uncertain answers only (no risk threshold)");
    std::printf("    refer rate             %s\n", pct(r["refer_rate"]).c_str());
    std::printf("    malignant sensitivity  %s\n", pct(r["malignant_sensitivity"]).c_str());
    std::printf("    benign specificity     %s\n", pct(r["benign_specificity"]).c_str());
    std::printf("    melanoma sensitivity   %s\n", pct(r["melanoma_sensitivity"]).c_str());
  }
}

// metrics.json "subgroups" as one table per dimension.
void PrintSubgroups(const nlohmann::json& m) {
  if (!m.contains("subgroups")) return;
  for (const auto& [dimension, rows] : m["subgroups"].items()) {
    std::printf("  by %s:\n    %-22s %6s  %-24s %s\n", dimension.c_str(), "group", "n",
                "balanced accuracy [95%]", "melanoma recall [95%]");
    for (const nlohmann::json& g : rows) {
      const nlohmann::json& mel = g["melanoma_recall"];
      std::printf("    %-22s %6d  %.3f [%.3f, %.3f]     %s\n", g["group"].get<std::string>().c_str(),
                  g["n"].get<int>(), g["balanced_accuracy"].get<double>(),
                  g["balanced_accuracy_ci95"][0].get<double>(), g["balanced_accuracy_ci95"][1].get<double>(),
                  mel["n"].get<int>() == 0
                      ? "-"
                      : absl::StrFormat("%.3f [%.3f, %.3f] of %d", mel["value"].get<double>(),
                                        mel["ci95"][0].get<double>(), mel["ci95"][1].get<double>(),
                                        mel["n"].get<int>())
                            .c_str());
    }
  }
}

// A number of a metrics object, or `fallback` where it is absent or null (a metric that
// is undefined, e.g. melanoma recall of a model without "mel").
double MetricOr(const nlohmann::json& m, const char* key, double fallback = 0.0) {
  const auto it = m.find(key);
  return it != m.end() && it->is_number() ? it->get<double>() : fallback;
}

void PrintHeadline(const nlohmann::json& m) {
  std::printf("  accuracy           %.4f\n", MetricOr(m, "accuracy"));
  std::printf("  balanced accuracy  %.4f\n", MetricOr(m, "balanced_accuracy"));
  std::printf("  macro F1           %.4f\n", MetricOr(m, "macro_f1"));
  if (m.contains("macro_auc") && m["macro_auc"].is_number()) {
    std::printf("  macro AUC          %.4f\n", m["macro_auc"].get<double>());
  }
  if (m.contains("melanoma_recall") && m["melanoma_recall"].is_number()) {
    std::printf("  melanoma recall    %.4f\n", m["melanoma_recall"].get<double>());
  }
  std::printf("  ECE                %.4f (uncalibrated %.4f, T=%.3f)\n", MetricOr(m, "ece"),
              m.contains("uncalibrated") ? MetricOr(m["uncalibrated"], "ece") : 0.0,
              MetricOr(m, "temperature", 1.0));
  PrintReferral(m);
  if (m.contains("ood")) {
    const nlohmann::json& r = m["ood"]["lesions_rejected"];
    std::printf("  not-a-lesion check %s > %.3f: rejects %.1f%% [%.1f, %.1f] of these lesions\n",
                m["ood"].value("method", "?").c_str(), m["ood"]["threshold"].get<double>(),
                100 * r["value"].get<double>(),
                100 * r["ci95"][0].get<double>(), 100 * r["ci95"][1].get<double>());
  }
}

// The subgroups a report breaks results down by: age band, sex, body site and, where
// the metadata names it, the image source (HAM10000's `dataset`).
std::map<std::string, std::vector<std::string>> Subgroups(const std::vector<data::Sample>& samples) {
  std::map<std::string, std::vector<std::string>> g;
  bool has_source = false;
  for (const data::Sample& s : samples) {
    g["age_band"].push_back(eval::AgeBand(s.age));
    g["sex"].push_back(s.sex.empty() ? "unknown" : s.sex);
    g["localization"].push_back(s.localization.empty() ? "unknown" : s.localization);
    g["source"].push_back(s.dataset.empty() ? "unknown" : s.dataset);
    has_source = has_source || !s.dataset.empty();
  }
  if (!has_source) g.erase("source");
  return g;
}

// The manifest's refer rule from a report's "referral" block: the uncertainty limits
// and the malignancy-risk threshold fitted on validation data (when there were
// malignant validation cases) with its target; where it was fitted and what it reached
// there go into the document's "refer" object.
void SetRefer(const nlohmann::json& metrics, ModelManifest& manifest) {
  const nlohmann::json& r = metrics.at("referral");
  const nlohmann::json& policy = r.at("policy");
  manifest.refer.min_confidence = policy.at("min_confidence").get<double>();
  manifest.refer.min_margin = policy.at("min_margin").get<double>();
  manifest.refer.target_sensitivity = policy.at("target_sensitivity").get<double>();
  manifest.refer.sensitivity_confidence = policy.value("sensitivity_confidence", 0.0);
  manifest.refer.risk_threshold.reset();
  nlohmann::json provenance = nlohmann::json::object();
  if (policy["malignancy_risk_threshold"].is_number()) {
    manifest.refer.risk_threshold = policy["malignancy_risk_threshold"].get<double>();
    provenance["fitted_on"] = r.value("threshold_source", "");
    if (r.contains("validation")) {
      const nlohmann::json& v = r["validation"];
      provenance["validation"] = {{"malignant_sensitivity", v["malignant_sensitivity"]["value"]},
                                  {"benign_specificity", v["benign_specificity"]["value"]},
                                  {"melanoma_sensitivity", v["melanoma_sensitivity"]["value"]},
                                  {"refer_rate", v["refer_rate"]["value"]},
                                  {"n", v["n"]}};
    }
  }
  manifest.document["refer"] = std::move(provenance);
}

// The manifest's decision rule from a report's "decision" block (tau and prior typed;
// where tau was fitted and what it reached there, in the document's "decision").
void SetDecision(const nlohmann::json& metrics, ModelManifest& manifest) {
  const nlohmann::json& d = metrics.at("decision");
  manifest.decision = {};
  if (d.value("rule", "plain") == "prior_adjusted")
    manifest.decision.tau = d.at("tau").get<double>();
  if (d.contains("prior")) manifest.decision.prior = d["prior"].get<std::vector<double>>();
  if (d.contains("bias")) manifest.decision.bias = d["bias"].get<std::vector<double>>();
  nlohmann::json provenance = {{"fitted_on", d.value("source", "none")}};
  if (d.contains("validation")) provenance["validation"] = d["validation"];
  if (d.contains("recall_floor")) provenance["recall_floor"] = d["recall_floor"];
  manifest.document["decision"] = std::move(provenance);
}

// "most probable class", or "prior-adjusted decision rule, tau 0.35, mel bias 0.45".
std::string DescribeDecision(const DecisionRule& rule, const LabelSet& classes) {
  if (!rule.Adjusted()) return "most probable class";
  std::string s = absl::StrFormat("prior-adjusted decision rule, tau %.2f", rule.tau);
  for (int k = 0; k < classes.size() && k < static_cast<int>(rule.bias.size()); ++k) {
    if (rule.bias[k] != 0)
      absl::StrAppendFormat(&s, ", %s bias %.2f", classes.at(k).code, rule.bias[k]);
  }
  return s;
}

// The out-of-distribution policy of `method` whose threshold rejects `reject_rate` of
// the in-distribution images whose scores are given; `lesions_rejected`: the share it
// rejects there.
absl::StatusOr<OodPolicy> FitOod(OodMethod method, const std::vector<double>& scores, double reject_rate,
                                 double* lesions_rejected) {
  const std::optional<double> t = FitOodThreshold(scores, reject_rate);
  if (!t) return absl::FailedPreconditionError("no finite score to fit an out-of-distribution threshold on");
  int rejected = 0;
  for (double e : scores) rejected += IsOutOfDistribution(e, {.threshold = *t});
  *lesions_rejected = static_cast<double>(rejected) / scores.size();
  return OodPolicy{.method = method, .threshold = *t, .reject_rate = reject_rate};
}

std::string Now() {
  const std::time_t t = std::time(nullptr);
  tm utc;
  gmtime_r(&t, &utc);
  char buf[64];
  std::strftime(buf, sizeof(buf), "%Y-%m-%dT%H:%M:%SZ", &utc);
  return buf;
}

// Classifies the golden files `files` (names in the model directory) with the model
// exactly as a server will load it (its manifest as written: calibration, test-time
// views) and records the result in manifest["golden_set"] with `golden`'s tolerances:
// a server checks a new version against it before serving it (skinlesion/serving).
absl::Status RecordGoldenSet(const std::string& model_dir, const std::vector<std::string>& files,
                             GoldenSet golden);

// Copies `images` into the model directory as golden_<i>.<ext> and records them
// (RecordGoldenSet).
absl::Status WriteGoldenSet(const std::string& model_dir, const std::vector<std::string>& images) {
  if (images.empty()) return absl::OkStatus();
  std::vector<std::string> files;
  for (size_t i = 0; i < images.size(); ++i) {
    std::string ext = fs::path(images[i]).extension().string();
    for (char& c : ext) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    const std::string name = absl::StrCat("golden_", i, ext.empty() ? ".img" : ext);
    std::error_code ec;
    fs::copy_file(images[i], model_dir + "/" + name, fs::copy_options::overwrite_existing, ec);
    if (ec) return absl::NotFoundError(absl::StrCat("golden image ", images[i], ": ", ec.message()));
    // A copy of a read-only source stays read-only; the model directory's files are ours.
    fs::permissions(model_dir + "/" + name, fs::perms::owner_read | fs::perms::owner_write,
                    fs::perm_options::add, ec);
    files.push_back(name);
  }
  return RecordGoldenSet(model_dir, files, GoldenSet{});  // The default tolerances (manifest.h).
}

absl::Status RecordGoldenSet(const std::string& model_dir, const std::vector<std::string>& files,
                             GoldenSet golden) {
  // The reference outputs are fp32 whatever this machine would pick: a server in
  // bf16 compares with the golden set's wider bf16 tolerance.
  SL_ASSIGN_OR_RETURN(auto predictor,
                      predict::Predictor::Create(
                          model_dir, {.device = "cpu", .precision = PrecisionChoice::kFp32}));
  golden.items.clear();
  for (const std::string& name : files) {
    SL_ASSIGN_OR_RETURN(const predict::Prediction p, predictor->PredictFile(model_dir + "/" + name));
    golden.items.push_back({.file = name,
                            .probabilities = std::vector<float>(p.probabilities.begin(), p.probabilities.end()),
                            .top_class = p.code});
  }
  SL_ASSIGN_OR_RETURN(ModelManifest manifest, ReadModelManifest(model_dir));
  manifest.golden_set = std::move(golden);
  return WriteModelManifest(model_dir, manifest);
}

// Up to `n` images for a golden set: the first of each class in turn (so the set
// covers several classes), in the order of `samples`.
std::vector<std::string> PickGoldenImages(const std::vector<data::Sample>& samples, int num_classes, size_t n) {
  std::vector<std::string> picked;
  std::vector<bool> used(samples.size(), false);
  while (picked.size() < n) {
    std::vector<bool> class_seen(num_classes, false);
    bool any = false;
    for (size_t i = 0; i < samples.size() && picked.size() < n; ++i) {
      const int label = samples[i].label;
      if (used[i] || label < 0 || label >= num_classes || class_seen[label]) continue;
      class_seen[label] = true;
      used[i] = true;
      any = true;
      picked.push_back(samples[i].path);
    }
    if (!any) break;
  }
  return picked;
}

nlohmann::json CodeVersion() {
  return {{"skinlesion", SKINLESION_VERSION}, {"commit", SKINLESION_GIT_COMMIT}};
}

}  // namespace

std::string DefaultModelDir() {
  if (const char* env = std::getenv("SKINLESION_MODEL"); env != nullptr && *env) return env;
  if (fs::exists("models/bundled/manifest.json")) return "models/bundled";
  return std::string(SKINLESION_SOURCE_DIR) + "/models/bundled";
}

absl::StatusOr<std::string> ResolveRegistryModel(const std::string& registry, const std::string& reference) {
  const size_t at = reference.find('@');
  const std::string name = reference.substr(0, at);
  const std::string ref = at == std::string::npos ? "production" : reference.substr(at + 1);
  SL_ASSIGN_OR_RETURN(auto reg, registry::Registry::Create({.root = registry}));
  int64_t version = 0;
  absl::StatusOr<registry::VersionInfo> info =
      absl::SimpleAtoi(ref, &version) ? reg->GetVersion(name, version) : reg->GetAlias(name, ref);
  if (!info.ok()) return Annotate(info.status(), "model ", reference, " in registry ", registry);
  SL_RETURN_IF_ERROR(reg->Verify(name, info->version));  // DataLoss on a changed file.
  std::fprintf(stderr, "model %s -> %s v%lld (%s)\n", reference.c_str(), name.c_str(),
               static_cast<long long>(info->version), info->path.c_str());
  return info->path;
}

absl::Status RunPublish(const PublishCommand& cmd) {
  if (cmd.model_dir.empty() || cmd.registry.empty() || cmd.name.empty()) {
    return absl::InvalidArgumentError("--model (a model directory), --registry and --name are required");
  }
  SL_ASSIGN_OR_RETURN(const nlohmann::json manifest,
                      ReadJsonObject(cmd.model_dir + "/manifest.json", 16 << 20,
                                     absl::StatusCode::kInvalidArgument));
  std::map<std::string, std::string> files;
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(cmd.model_dir, ec)) {
    const std::string file = entry.path().filename().string();
    if (entry.is_regular_file() && file != "manifest.json" && file[0] != '.') files[file] = entry.path().string();
  }
  if (ec) return absl::NotFoundError(absl::StrCat(cmd.model_dir, ": ", ec.message()));
  SL_ASSIGN_OR_RETURN(auto reg, registry::Registry::Create({.root = cmd.registry}));
  SL_ASSIGN_OR_RETURN(const int64_t version, reg->Publish(cmd.name, files, manifest));
  std::printf("published %s as %s v%lld (%zu files)\n", cmd.model_dir.c_str(), cmd.name.c_str(),
              static_cast<long long>(version), files.size() + 1);
  if (!cmd.alias.empty()) {
    SL_RETURN_IF_ERROR(reg->SetAlias(cmd.name, cmd.alias, version, "skinlesion publish"));
    std::printf("%s -> v%lld\n", cmd.alias.c_str(), static_cast<long long>(version));
  }
  return absl::OkStatus();
}

absl::Status RunModels(int64_t image_size) {
  std::printf("%s", models::FormatModelTable(image_size).c_str());
  return absl::OkStatus();
}

// --progress_jsonl: one JSON object per event, appended and flushed at once so a
// supervisor tailing the file sees each line whole.
class JsonlProgressWriter : public train::ProgressListener {
 public:
  static absl::StatusOr<std::unique_ptr<JsonlProgressWriter>> Open(const std::string& path) {
    std::FILE* f = std::fopen(path.c_str(), "a");
    if (f == nullptr) return absl::InvalidArgumentError(absl::StrCat("--progress_jsonl: cannot open ", path));
    return std::unique_ptr<JsonlProgressWriter>(new JsonlProgressWriter(f));
  }
  ~JsonlProgressWriter() override { std::fclose(file_); }
  void OnProgress(const train::Progress& p) override {
    Write({{"event", "progress"}, {"phase", p.phase}, {"epoch", p.epoch}, {"epochs", p.epochs},
           {"step", p.step}, {"steps", p.steps}, {"loss", p.loss}, {"lr", p.lr},
           {"images_per_second", p.images_per_second}, {"eta_seconds", p.eta_seconds}});
  }
  void OnEpoch(const train::EpochRecord& r) override {
    nlohmann::json j = r.ToJson();
    j["event"] = "epoch";
    Write(j);
  }
  void Phase(const std::string& phase) { Write({{"event", "phase"}, {"phase", phase}}); }
  void Write(const nlohmann::json& j) {
    const std::string line = j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) + "\n";
    std::fwrite(line.data(), 1, line.size(), file_);
    std::fflush(file_);
  }

 private:
  explicit JsonlProgressWriter(std::FILE* f) : file_(f) {}
  std::FILE* file_;
};

absl::StatusOr<data::Dataset> LoadData(const std::string& data_dir, const std::string& metadata,
                                       const std::string& skip_labels, const LabelSet* model_classes) {
  if (data_dir.empty()) return absl::InvalidArgumentError("--data is required");
  data::DatasetOptions options;
  for (absl::string_view label : absl::StrSplit(skip_labels, ',', absl::SkipEmpty())) {
    options.skip_labels.insert(absl::AsciiStrToLower(absl::StripAsciiWhitespace(label)));
  }
  SL_ASSIGN_OR_RETURN(data::Dataset dataset, data::LoadDataset(data_dir, metadata, options));
  std::string skipped;
  for (const auto& [label, n] : dataset.skipped_labels) absl::StrAppend(&skipped, skipped.empty() ? "" : ", ", n, " ", label);
  std::fprintf(stderr, "[data] %s (%s): %zu images%s%s\n", dataset.source.c_str(), data::DatasetFormatName(dataset.format),
               dataset.catalogue.samples.size(),
               dataset.catalogue.rows_missing_image > 0
                   ? absl::StrCat(", ", dataset.catalogue.rows_missing_image,
                                  dataset.catalogue.rows_missing_image == 1 ? " row" : " rows", " without an image")
                         .c_str()
                   : "",
               skipped.empty() ? "" : absl::StrCat(", left out: ", skipped).c_str());
  if (model_classes != nullptr) {
    SL_RETURN_IF_ERROR(Annotate(data::RemapLabels(dataset.catalogue, *model_classes), dataset.source));
  } else if (dataset.catalogue.classes != LabelSet::Ham10000()) {
    std::fprintf(stderr, "[data] %d classes: %s\n", dataset.catalogue.classes.size(),
                 dataset.catalogue.classes.ToString().c_str());
  }
  return dataset;
}

namespace {

// The run's report on its test images (or, without them, on its validation images)
// with the temperature, decision rule and referral threshold fitted on the validation
// images; metrics.json's content.
absl::StatusOr<nlohmann::json> ReportOnHeldOut(
    const TrainCommand& cmd, const train::TrainConfig& config, const data::Split& split,
    const train::TrainResult& result, const LabelSet& classes,
    const std::vector<data::Sample>& train_set, const std::vector<data::Sample>& val_set,
    const std::vector<data::Sample>& test_set, bool report_on_val, const std::string& device) {
  SL_ASSIGN_OR_RETURN(const train::Predictions val_pred,
                      train::PredictSamples(*result.model, val_set, config.Preprocess(), device,
                                            config.batch_size, config.num_workers));
  train::Predictions test_pred = val_pred;
  if (!report_on_val) {
    SL_ASSIGN_OR_RETURN(test_pred,
                        train::PredictSamples(*result.model, test_set, config.Preprocess(), device,
                                              config.batch_size, config.num_workers));
  }
  eval::ReportInput report;
  report.classes = classes;
  report.labels = test_pred.labels;
  report.logits = test_pred.logits;
  report.val_labels = val_pred.labels;
  report.val_logits = val_pred.logits;
  for (const auto& s : test_set) report.image_paths.push_back(s.path);
  report.seed = config.seed;
  // The refer rule's operating point: fitted on the validation split for the target.
  report.fit_risk_threshold = true;
  report.referral.target_sensitivity = config.target_sensitivity;
  report.referral.sensitivity_confidence = config.referral_confidence;
  // The decision rule: tau fitted on the validation split against the training shares.
  report.fit_decision = config.balanced_decision;
  if (config.recall_target > 0) {
    if (const std::optional<int> k = classes.IndexOf(config.recall_target_class)) {
      report.recall_target_class = *k;
      report.recall_target = config.recall_target;
    } else {
      std::printf("recall floor off: the data have no class '%s'\n",
                  config.recall_target_class.c_str());
    }
  }
  {
    std::vector<int> train_labels;
    for (const data::Sample& s : train_set) train_labels.push_back(s.label);
    report.decision.prior = ClassPrior(train_labels, classes.size());
  }
  report.subgroups = Subgroups(test_set);
  // No out-of-distribution threshold here: one is only worth serving once it has been
  // checked against non-lesion images (skinlesion fit-thresholds --ood_images).
  report.context = {{"architecture", config.architecture},
                    {"split_digest", split.Digest()},
                    {"best_epoch", result.best_epoch + 1},
                    {"epochs_run", result.epochs_run},
                    {"partition", cmd.fold >= 0   ? absl::StrCat("fold", cmd.fold)
                                  : report_on_val ? "val"
                                                  : "test"},
                    {"report_on_fitting_data", report_on_val},
                    // The test report runs the fp32 master weights, whatever training used.
                    {"precision", "fp32"},
                    {"training_numerics", result.numerics}};
  return eval::WriteReport(report, cmd.out_dir + "/report");
}

// What the split's images hold, not only which they are: the SHA-256 of one line
// "<image id> <SHA-256 of its file>" per image the data has, in the split's (id) order. The
// same ids in another --data folder (a resized copy, re-encoded files) give another digest.
// Hashing the development copy's 5,984 files takes under a second.
absl::StatusOr<std::string> ImagesDigest(const data::Catalogue& catalogue,
                                         const data::Split& split) {
  std::map<std::string, const std::string*> paths;
  for (const data::Sample& s : catalogue.samples) paths[s.image_id] = &s.path;
  std::string lines;
  for (const data::Split::Entry& e : split.entries()) {
    const auto it = paths.find(e.image_id);
    // An image the split names and the data lacks is the split's problem, reported by Apply.
    if (it == paths.end() || it->second->empty()) continue;
    SL_ASSIGN_OR_RETURN(const std::string digest, Sha256File(*it->second));
    absl::StrAppend(&lines, e.image_id, " ", digest, "\n");
  }
  return Sha256Hex(lines);
}

// Which images a run trains on: its split (by digest), the partitions that train, and what
// the images hold.
absl::StatusOr<nlohmann::json> RunData(const TrainCommand& cmd, const data::Catalogue& catalogue,
                                       const data::Split& split) {
  SL_ASSIGN_OR_RETURN(const std::string images, ImagesDigest(catalogue, split));
  return nlohmann::json{{"split_digest", split.Digest()},
                        {"fold", cmd.fold},
                        {"all_folds", cmd.all_folds},
                        {"images_digest", images}};
}

// A resumed run goes on with the images it started with: --resume with another split,
// --fold or --all_folds, or with other files under the same ids, is refused, each
// difference named (the recipe is checked by the trainer). Records what a run starts with
// in <out>/run_data.json; a run started before that file existed is checked by the split it
// saved, one recorded before images_digest by the keys it has.
absl::Status CheckResumedData(const TrainCommand& cmd, const data::Catalogue& catalogue,
                              const data::Split& split) {
  const std::string file = cmd.out_dir + "/run_data.json";
  SL_ASSIGN_OR_RETURN(const nlohmann::json now, RunData(cmd, catalogue, split));
  std::error_code ec;
  const bool recorded = fs::exists(file, ec);
  if (cmd.resume) {
    // What the run started with: its record, or the split a run from before the record saved.
    nlohmann::json before = nlohmann::json::object();
    if (recorded) {
      SL_ASSIGN_OR_RETURN(before, ReadJsonObject(file, 1 << 16));
    } else if (fs::exists(cmd.out_dir + "/split.csv", ec)) {
      SL_ASSIGN_OR_RETURN(const data::Split saved, data::LoadSplit(cmd.out_dir + "/split.csv"));
      before["split_digest"] = saved.Digest();
    }
    // What the run recorded is compared: the saved split tells only the split, a record
    // from before images_digest not the files.
    const std::vector<std::string> changes =
        ChangedKeys(before, now, [&](const std::string& key) { return before.contains(key); });
    if (!changes.empty()) {
      return absl::FailedPreconditionError(absl::StrCat(
          "--resume: ", cmd.out_dir, " was started on other images (", absl::StrJoin(changes, ", "),
          "); resume with the images, split and folds it started with, or train into a new --out"));
    }
    if (recorded) return absl::OkStatus();
  }
  return WriteFileAtomically(file, now.dump(2) + "\n");
}

}  // namespace

absl::Status RunTrain(const TrainCommand& cmd) {
  if (cmd.data_dir.empty()) return absl::InvalidArgumentError("--data is required");
  if (cmd.out_dir.empty()) return absl::InvalidArgumentError("--out is required");
  if (cmd.kept_out_epoch && (!cmd.all_folds || cmd.fold >= 0)) {
    return absl::InvalidArgumentError(
        "--kept_out_epoch is for the model on every image (train --all_folds without --fold)");
  }
  SL_ASSIGN_OR_RETURN(train::TrainConfig config, BuildConfig(cmd));
  torch::set_num_threads(config.threads);
  const std::string device = ResolveDevice(cmd.device);
  SL_ASSIGN_OR_RETURN(const data::Dataset dataset, LoadData(cmd.data_dir, cmd.metadata, cmd.skip_labels));
  const data::Catalogue& catalogue = dataset.catalogue;
  // The model's classes: the data's, grouped as the config says (malignant_classes).
  LabelSet classes = catalogue.classes;
  if (!config.malignant_classes.empty()) {
    std::vector<std::string> malignant;
    if (config.malignant_classes != "none") {
      for (absl::string_view code : absl::StrSplit(config.malignant_classes, ',', absl::SkipWhitespace())) {
        malignant.emplace_back(absl::StripAsciiWhitespace(code));
      }
    }
    SL_ASSIGN_OR_RETURN(classes, LabelSet::Create(classes.codes(), malignant));
  }
  std::error_code ec;
  fs::create_directories(cmd.out_dir, ec);
  absl::StatusOr<data::Split> split = cmd.split_file.empty()
                                          ? data::MakeSplit(catalogue, {.seed = cmd.split_seed})
                                          : data::LoadSplit(cmd.split_file);
  if (!split.ok()) return split.status();
  if (cmd.kept_out_epoch) {
    const int64_t images = data::KeptOutRoundImages(*split);
    if (images == 0) return absl::InvalidArgumentError("--kept_out_epoch needs a k-fold split");
    if (config.samples_per_epoch != 0 && config.samples_per_epoch != images) {
      return absl::InvalidArgumentError(
          absl::StrCat("--kept_out_epoch sets samples_per_epoch to ", images,
                       " (every image but the largest fold's); the configuration has ",
                       config.samples_per_epoch));
    }
    config.samples_per_epoch = images;
    SL_RETURN_IF_ERROR(config.Validate());
    std::fprintf(stderr,
                 "[train] %lld images drawn an epoch: every image but the largest fold's, as the "
                 "kept-out rounds train on\n",
                 static_cast<long long>(images));
  }
  SL_RETURN_IF_ERROR(CheckResumedData(cmd, catalogue, *split));
  SL_RETURN_IF_ERROR(data::SaveSplit(*split, cmd.out_dir + "/split.csv"));
  // --all_folds --fold N: every image but fold N's (the test fold), as the model to ship
  // is trained, to measure that procedure on images it never saw.
  SL_ASSIGN_OR_RETURN(const data::TrainValTest sets,
                      cmd.all_folds ? data::ApplyAllFolds(*split, catalogue, cmd.fold)
                                    : data::ApplyRound(*split, catalogue, cmd.fold));
  const std::vector<data::Sample>& train_set = sets.train;
  const std::vector<data::Sample>& val_set = sets.val;
  // A run made to ship may have no test partition (every image but the validation ones
  // trains it): its report is then on the validation images, which also chose the epoch,
  // the temperature and the referral threshold, so its figures are optimistic and say so.
  const bool report_on_val = sets.test.empty();
  // Trained on every image (--all_folds): nothing is left to report on or fit with.
  const bool no_held_out = val_set.empty();
  const std::vector<data::Sample>& test_set = report_on_val ? sets.val : sets.test;
  std::fprintf(stderr, "[train] %s on %s: %zu train / %zu val / %zu test images, split %s%s\n",
               config.architecture.c_str(), device.c_str(), train_set.size(), val_set.size(),
               sets.test.size(), split->Digest().substr(0, 12).c_str(),
               cmd.fold >= 0 ? absl::StrCat(", round ", cmd.fold).c_str() : "");

  train::TrainContext ctx;
  ctx.classes = classes;
  ctx.device = device;
  ctx.output_dir = cmd.out_dir;
  ctx.resume = cmd.resume;
  std::unique_ptr<JsonlProgressWriter> progress;
  if (!cmd.progress_jsonl.empty()) {
    SL_ASSIGN_OR_RETURN(progress, JsonlProgressWriter::Open(cmd.progress_jsonl));
    ctx.listener = progress.get();
  }
  if (!config.init_weights.empty()) {
    torch::manual_seed(config.seed);
    SL_ASSIGN_OR_RETURN(ctx.model, models::CreateModel(config.architecture,
                                                       {.num_classes = classes.size(),
                                                        .image_size = config.image_size,
                                                        .dropout = config.dropout}));
    SL_ASSIGN_OR_RETURN(const models::LoadReport report,
                        models::LoadWeightsFile(*ctx.model, config.init_weights));
    std::fprintf(stderr, "[train] loaded %d tensors from %s%s\n", report.loaded,
                 config.init_weights.c_str(), report.head_replaced ? " (new head)" : "");
  }
  // Data-parallel when launched as one of WORLD_SIZE workers (Kubernetes, torchrun style).
  std::unique_ptr<train::GradientReducer> reducer;
  auto dist = train::DistributedOptionsFromEnv([](const char* name) { return std::getenv(name); });
  if (dist.ok()) {
    SL_ASSIGN_OR_RETURN(reducer, train::CreateProcessGroupReducer(*dist));
    ctx.reducer = reducer.get();
  } else if (!absl::IsNotFound(dist.status())) {
    return dist.status();
  }
  SL_ASSIGN_OR_RETURN(train::TrainResult result, train::Train(config, train_set, val_set, ctx));
  if (reducer != nullptr && reducer->rank() != 0) return absl::OkStatus();  // Rank 0 reports.
  // Without held-out images nothing is evaluated: the model goes straight to export.
  if (progress != nullptr) progress->Phase(no_held_out ? "export" : "evaluate");
  SL_RETURN_IF_ERROR(train::LoadTrainCheckpoint(*result.model, result.best_checkpoint));
  result.model->eval();
  std::vector<data::Sample> golden_from = test_set;
  nlohmann::json metrics;
  if (no_held_out) {
    golden_from = train_set;
  } else {
    SL_ASSIGN_OR_RETURN(metrics, ReportOnHeldOut(cmd, config, *split, result, classes, train_set,
                                                 val_set, test_set, report_on_val, device));
  }

  // Export: torchvision-named safetensors + manifest with provenance.
  const std::string model_dir = cmd.out_dir + "/model";
  result.model->to(torch::kCPU);
  SL_RETURN_IF_ERROR(models::SaveCheckpoint(*result.model, model_dir,
                                            config.image_size, classes.codes()));
  SL_ASSIGN_OR_RETURN(ModelManifest manifest, ReadModelManifest(model_dir));
  manifest.classes = classes;
  if (!no_held_out) {
    manifest.temperature = metrics["temperature"].get<double>();
    SetRefer(metrics, manifest);
    SetDecision(metrics, manifest);
  }
  manifest.image_size = config.image_size;
  manifest.resize = config.resize;
  manifest.mean = kImageNetMean;
  manifest.std = kImageNetStd;
  manifest.shades_of_gray_p = config.colour_constancy_p;
  nlohmann::json& doc = manifest.document;
  if (no_held_out) {
    // Nothing held out to calibrate on: temperature 1 and no operating point until
    // fit-thresholds --from_cv fits them on the rounds' out-of-fold predictions.
    doc["calibration"] = {{"fitted_on", nullptr}};
  } else {
    doc["calibration"] = {{"fitted_on", "val"}};
    nlohmann::json test_metrics = metrics;
    test_metrics.erase("confusion_matrix_normalized");
    doc["metrics"] = test_metrics;
  }
  doc["training"] = {
      {"config", config.ToJson()},
      {"best_epoch", result.best_epoch + 1},
      {"select_epoch", config.select_epoch},
      {"monitor_best_epoch", result.monitor_best_epoch < 0
                                 ? nlohmann::json(nullptr)
                                 : nlohmann::json(result.monitor_best_epoch + 1)},
      {"epochs_run", result.epochs_run},
      {"early_stopped", result.early_stopped},
      {"device", device},
      {"numerics", result.numerics},
      {"numerics_reason", result.numerics_reason},
      {"cpu",
       {{"model", DetectCpuFeatures().model_name}, {"flags", DetectCpuFeatures().FlagList()}}},
      {"command", cmd.command_line}};
  const bool ham10000 = dataset.format == data::DatasetFormat::kHam10000;
  doc["data"] = {{"dataset", ham10000 ? std::string("HAM10000")
                                      : fs::path(dataset.source).filename().string()},
                 {"format", data::DatasetFormatName(dataset.format)},
                 {"split_digest", split->Digest()},
                 {"split_method", split->method()},
                 {"fold", cmd.all_folds   ? nlohmann::json("all")
                          : cmd.fold >= 0 ? nlohmann::json(cmd.fold)
                                          : nlohmann::json(nullptr)},
                 // --all_folds --fold N: the fold kept out of "all" (its test images).
                 {"test_fold", cmd.all_folds && cmd.fold >= 0 ? nlohmann::json(cmd.fold)
                                                              : nlohmann::json(nullptr)},
                 {"train_images", train_set.size()},
                 {"val_images", val_set.size()},
                 {"test_images", sets.test.size()},
                 {"licence", ham10000 ? "CC BY-NC 4.0 (HAM10000): non-commercial use only"
                                      : "the training data's own (not recorded here)"}};
  doc["created"] = Now();
  doc["code_version"] = CodeVersion();
  SL_ASSIGN_OR_RETURN(manifest.sha256, Sha256File(model_dir + "/" + kWeightsFile));
  SL_RETURN_IF_ERROR(WriteModelManifest(model_dir, manifest));
  SL_RETURN_IF_ERROR(WriteGoldenSet(model_dir, PickGoldenImages(golden_from, classes.size(), 4)));
  if (progress != nullptr) progress->Phase("exported");
  if (config.select_epoch == "last" && result.monitor_best_epoch >= 0) {
    std::printf(
        "trained %s: epoch %d of %d (select_epoch last; validation %s peaked at epoch %d)\n",
        config.architecture.c_str(), result.best_epoch + 1, result.epochs_run,
        config.monitor.c_str(), result.monitor_best_epoch + 1);
  } else {
    std::printf("trained %s: best epoch %d of %d%s\n", config.architecture.c_str(),
                result.best_epoch + 1, result.epochs_run,
                result.early_stopped ? " (early stop)" : "");
  }
  if (no_held_out) {
    std::printf(
        "trained on every image of the split%s (%zu): the last epoch is the model; it has no "
        "report, temperature or operating point yet: fit them on the cv rounds' out-of-fold "
        "predictions with\n"
        "  skinlesion fit-thresholds --model %s/model --from_cv CV_DIR --data ... --split %s\n",
        cmd.fold >= 0 ? absl::StrCat(" but fold", cmd.fold, "'s").c_str() : "", train_set.size(),
        cmd.out_dir.c_str(), cmd.split_file.c_str());
    if (cmd.fold >= 0) {
      std::printf(
          "(fit-thresholds leaves round %d's answers out; then skinlesion evaluate --partition "
          "fold%d scores it on its %zu test images)\n",
          cmd.fold, cmd.fold, sets.test.size());
    }
    std::printf("wrote %s/model, %s/train_log.jsonl\n", cmd.out_dir.c_str(), cmd.out_dir.c_str());
    return absl::OkStatus();
  }
  if (report_on_val) {
    std::printf("no test partition: validation split (%zu images; it also chose the epoch, "
                "temperature and threshold, so these figures are optimistic):\n", test_set.size());
  } else {
    std::printf("test split (%zu images):\n", test_set.size());
  }
  PrintHeadline(metrics);
  std::printf("wrote %s/model, %s/report, %s/train_log.jsonl\n", cmd.out_dir.c_str(),
              cmd.out_dir.c_str(), cmd.out_dir.c_str());
  return absl::OkStatus();
}

namespace {

// What a run's training cost, from its log (the last record of each epoch: a resumed
// run may log an epoch again): the epochs' median duration times their number, and
// their logged durations summed (both in minutes).
struct TrainCost {
  double median_based = 0;
  double logged = 0;
};
TrainCost TrainMinutes(const std::string& run_dir) {
  absl::StatusOr<std::string> text = ReadFileToString(run_dir + "/train_log.jsonl", size_t{64} << 20);
  if (!text.ok()) return {};
  std::map<int, double> seconds;
  for (absl::string_view line : absl::StrSplit(*text, '\n', absl::SkipEmpty())) {
    nlohmann::json r = nlohmann::json::parse(line, nullptr, false);
    if (r.is_object() && r.contains("epoch") && r.contains("seconds")) {
      seconds[r["epoch"].get<int>()] = r["seconds"].get<double>();
    }
  }
  if (seconds.empty()) return {};
  std::vector<double> s;
  for (const auto& [epoch, v] : seconds) s.push_back(v);
  std::sort(s.begin(), s.end());
  const size_t n = s.size();
  const double median = n % 2 == 1 ? s[n / 2] : (s[n / 2 - 1] + s[n / 2]) / 2;
  double total = 0;
  for (double v : s) total += v;
  return {.median_based = median * static_cast<double>(n) / 60, .logged = total / 60};
}

// The finished rounds under `out_dir` (fold<i>/report/metrics.json).
absl::StatusOr<std::vector<eval::FoldResult>> FinishedRounds(const std::string& out_dir, int k) {
  std::vector<eval::FoldResult> rounds;
  for (int fold = 0; fold < k; ++fold) {
    const std::string dir = absl::StrCat(out_dir, "/fold", fold);
    const std::string metrics_file = dir + "/report/metrics.json";
    if (!fs::exists(metrics_file)) continue;
    SL_ASSIGN_OR_RETURN(nlohmann::json metrics, ReadJsonObject(metrics_file, size_t{64} << 20));
    const TrainCost cost = TrainMinutes(dir);
    rounds.push_back({.fold = fold, .metrics = std::move(metrics), .train_minutes = cost.median_based,
                      .logged_minutes = cost.logged});
  }
  return rounds;
}

}  // namespace

namespace {

// What makes a recipe: a configuration (TrainConfig::ToJson) without the keys that only
// say how a machine runs it (a round may resume elsewhere with other thread counts).
nlohmann::json RecipeConfig(nlohmann::json config) {
  if (!config.is_object()) return config;
  for (const char* key : {"threads", "num_workers", "progress_interval_s"}) config.erase(key);
  return config;
}

// Whether a recorded recipe configuration is `now`'s. A key added to the configuration
// since it was recorded means what the recorded runs did when it has its default value.
bool SameRecipe(nlohmann::json recorded, const nlohmann::json& now) {
  if (recorded.is_object()) {
    const nlohmann::json defaults = train::TrainConfig().ToJson();
    for (const auto& [key, value] : now.items()) {
      if (!recorded.contains(key) && defaults.contains(key) && defaults[key] == value)
        recorded[key] = value;
    }
  }
  return recorded == now;
}

// samples_per_epoch sizes an epoch's draws; a round drew its training pool's size (0).
// The model on every image is trained drawing a kept-out round's pool, every image but
// one fold (docs/cv/36ep_160_balmix_oof/run.sh): the steps and schedule of the models
// that measured the recipe, so it is of the rounds' recipe. `model_config` with such an
// epoch size read as the rounds' (0); any other epoch size stays and differs.
nlohmann::json WithTheRoundsEpoch(nlohmann::json model_config, const nlohmann::json& rounds_config,
                                  const data::Split& split) {
  if (!model_config.is_object() || !rounds_config.is_object()) return model_config;
  const int64_t draws = model_config.value("samples_per_epoch", int64_t{0});
  if (draws <= 0 || rounds_config.value("samples_per_epoch", int64_t{0}) != 0) return model_config;
  const int64_t n = static_cast<int64_t>(split.entries().size());
  for (const auto& [fold, count] : data::PartitionSizes(split)) {
    if (n - count == draws) {
      std::printf(
          "the model draws %lld images an epoch, every image but %s's: the kept-out rounds' "
          "steps\n",
          static_cast<long long>(draws), fold.c_str());
      model_config["samples_per_epoch"] = 0;
      break;
    }
  }
  return model_config;
}

// A round's out-of-fold answers under `tta` (skinlesion/eval/out_of_fold.h): read from
// <cv_dir>/fold<fold>/out_of_fold_<views>.csv, or answered by the round's model and
// written there. Defined with fit-thresholds below.
absl::StatusOr<eval::RoundAnswers> RoundAnswersOf(const std::string& cv_dir, int fold,
                                                  const data::Split& split,
                                                  const data::Catalogue& catalogue, Tta tta,
                                                  OodMethod ood_method);
// The fold a model trained with --all_folds --fold N kept out (its manifest's
// data.test_fold), -1 for a model without one; an error when it is not a fold of a
// k-fold split.
absl::StatusOr<int> KeptOutFold(const nlohmann::json& manifest_doc, int k,
                                const std::string& model_dir) {
  const nlohmann::json& data_doc = manifest_doc.contains("data") && manifest_doc["data"].is_object()
                                       ? manifest_doc["data"]
                                       : nlohmann::json::object();
  const nlohmann::json test_fold = data_doc.value("test_fold", nlohmann::json());
  if (test_fold.is_null()) return -1;
  if (!test_fold.is_number_integer() || test_fold.get<int>() < 0 || test_fold.get<int>() >= k) {
    return absl::DataLossError(absl::StrCat(model_dir, "'s manifest has data.test_fold ",
                                            test_fold.dump(), ", not a fold of a ", k,
                                            "-fold split"));
  }
  return test_fold.get<int>();
}

// `ood_method` nullopt: the round model's own (DefaultOodMethod).
absl::StatusOr<std::vector<eval::RoundAnswers>> AnswerRound(const std::string& cv_dir, int fold,
                                                            const data::Split& split,
                                                            const data::Catalogue& catalogue,
                                                            const std::vector<Tta>& views,
                                                            std::optional<OodMethod> ood_method);
// The same for any model that never saw fold<fold>: a cv round's (trained on the other
// folds but its validation one) or one trained with --all_folds --fold <fold> (every
// other image; its manifest's data.test_fold). Writes <out_dir>/out_of_fold_<views>.csv.
// `training_images_allowed`: a fold the model trained on is answered too (a teacher's
// answers for distillation) instead of refused.
absl::StatusOr<std::vector<eval::RoundAnswers>> AnswerFold(const std::string& model_dir, int fold,
                                                           const data::Split& split,
                                                           const data::Catalogue& catalogue,
                                                           const std::vector<Tta>& views,
                                                           std::optional<OodMethod> ood_method,
                                                           const std::string& out_dir,
                                                           bool training_images_allowed = false);
}  // namespace

absl::Status RunCrossValidate(const CrossValidateCommand& cmd) {
  const TrainCommand& base = cmd.train;
  if (base.data_dir.empty()) return absl::InvalidArgumentError("--data is required");
  if (base.out_dir.empty()) return absl::InvalidArgumentError("--out is required");
  if (base.split_file.empty()) {
    return absl::InvalidArgumentError("--split is required: a k-fold split (skinlesion split --kfold 5)");
  }
  SL_ASSIGN_OR_RETURN(const data::Split split, data::LoadSplit(base.split_file));
  const int k = data::KFoldCount(split);
  if (k < 3) {
    return absl::InvalidArgumentError(absl::StrCat(base.split_file, " is ", split.method(),
                                                   ": cross-validation needs a k-fold split with k >= 3"));
  }
  std::vector<int> folds = cmd.folds;
  if (folds.empty()) {
    for (int f = 0; f < k; ++f) folds.push_back(f);
  }
  for (int f : folds) {
    if (f < 0 || f >= k) {
      return absl::InvalidArgumentError(absl::StrCat("fold ", f, " is out of range: the split has folds 0 to ", k - 1));
    }
  }
  // One recipe per folder: rounds of different recipes must not be averaged together.
  SL_ASSIGN_OR_RETURN(const train::TrainConfig config, BuildConfig(base));
  const nlohmann::json recipe_config = RecipeConfig(config.ToJson());
  const nlohmann::json recipe = {{"config", recipe_config}, {"split_digest", split.Digest()},
                                 {"split_method", split.method()}};
  std::error_code ec;
  fs::create_directories(base.out_dir, ec);
  const std::string recipe_file = base.out_dir + "/cv_recipe.json";
  if (fs::exists(recipe_file)) {
    SL_ASSIGN_OR_RETURN(const nlohmann::json before, ReadJsonObject(recipe_file, 1 << 20));
    const bool same = before.contains("config") && SameRecipe(before["config"], recipe_config) &&
                      before.value("split_digest", "") == recipe["split_digest"] &&
                      before.value("split_method", "") == recipe["split_method"] &&
                      before.size() == recipe.size();
    if (!same) {
      return absl::FailedPreconditionError(absl::StrCat(
          base.out_dir, " holds rounds of another recipe or split (", recipe_file,
          "): use a new --out folder for a new recipe"));
    }
  } else {
    SL_RETURN_IF_ERROR(WriteFileAtomically(recipe_file, recipe.dump(2) + "\n"));
  }

  auto write_summary = [&]() -> absl::Status {
    SL_ASSIGN_OR_RETURN(const std::vector<eval::FoldResult> rounds, FinishedRounds(base.out_dir, k));
    if (rounds.empty()) return absl::OkStatus();
    SL_ASSIGN_OR_RETURN(nlohmann::json cv, eval::SummariseFolds(rounds));
    cv["recipe"] = recipe;
    cv["k"] = k;
    const std::string md = eval::CrossValidationMarkdown(cv);
    SL_RETURN_IF_ERROR(WriteFileAtomically(base.out_dir + "/cv.json", cv.dump(2) + "\n"));
    std::vector<std::string> round_names;
    for (const eval::FoldResult& r : rounds) round_names.push_back(absl::StrCat("round ", r.fold));
    std::vector<eval::FoldColumn> columns;
    for (const auto& [path, label] : std::vector<std::pair<std::string, std::string>>{
             {"balanced_accuracy", "balanced acc."}, {"macro_auc", "macro AUC"},
             {"melanoma_recall", "mel recall"}, {"accuracy", "accuracy"},
             {"referral/malignant_sensitivity/value", "referral sens."}}) {
      eval::FoldColumn column{label, {}};
      for (const nlohmann::json& row : cv["folds"]) {
        if (row.contains(path)) column.values.push_back(row[path].get<double>());
      }
      if (column.values.size() == rounds.size()) columns.push_back(std::move(column));
    }
    SL_RETURN_IF_ERROR(eval::PlotFolds(
        absl::StrCat(config.architecture, " at ", config.image_size, " px: ", rounds.size(), " of ", k,
                     " rounds (mean, +-1 sd)"),
        round_names, columns, base.out_dir + "/cv.png"));
    SL_RETURN_IF_ERROR(WriteFileAtomically(
        base.out_dir + "/cv.md",
        absl::StrCat("# Cross-validation: ", config.architecture, " at ", config.image_size, " px, ",
                     rounds.size(), " of ", k, " rounds of ", split.method(), " (split ",
                     split.Digest().substr(0, 12), ")\n\n", md)));
    std::printf("cross-validation, %zu of %d rounds finished:\n%s", rounds.size(), k, md.c_str());
    return absl::OkStatus();
  };

  // Each round's answers on its test fold, kept beside its metrics so that a model
  // trained on every image can be fitted on them later, without the round models.
  auto WriteRoundAnswers = [&](int fold) -> absl::Status {
    const std::string dir = absl::StrCat(base.out_dir, "/fold", fold, "/");
    std::vector<Tta> missing;
    for (const Tta views : {Tta::kNone, Tta::kFlips}) {
      if (!fs::exists(dir + eval::RoundAnswersFile(TtaName(views)))) missing.push_back(views);
    }
    if (missing.empty()) return absl::OkStatus();
    if (!fs::exists(dir + "model/manifest.json")) {
      // A finished round whose model was removed (e.g. to save space): its metrics stay.
      std::fprintf(stderr, "[cv] round %d has no model left to answer its test fold again: no %s\n",
                   fold, eval::RoundAnswersFile(TtaName(missing.front())).c_str());
      return absl::OkStatus();
    }
    SL_ASSIGN_OR_RETURN(const data::Dataset dataset,
                        LoadData(base.data_dir, base.metadata, base.skip_labels));
    return AnswerRound(base.out_dir, fold, split, dataset.catalogue, missing, std::nullopt)
        .status();
  };
  for (size_t i = 0; i < folds.size(); ++i) {
    const int fold = folds[i];
    TrainCommand round = base;
    round.fold = fold;
    round.out_dir = absl::StrCat(base.out_dir, "/fold", fold);
    if (fs::exists(round.out_dir + "/report/metrics.json")) {
      std::fprintf(stderr, "[cv] round %d (fold%d) is finished: kept\n", fold, fold);
      SL_RETURN_IF_ERROR(WriteRoundAnswers(fold));  // A round finished before they were kept.
      continue;
    }
    round.resume = fs::exists(round.out_dir + "/checkpoints/last/state.json");
    std::fprintf(stderr, "[cv] round %zu of %zu: test fold%d, validate on fold%d%s\n", i + 1, folds.size(),
                 fold, (fold + 1) % k, round.resume ? ", resuming from its last checkpoint" : "");
    SL_RETURN_IF_ERROR(RunTrain(round));
    SL_RETURN_IF_ERROR(WriteRoundAnswers(fold));
    SL_RETURN_IF_ERROR(write_summary());
  }
  return write_summary();
}

absl::Status RunExport(const ExportCommand& cmd) {
  if (cmd.model_dir.empty() || cmd.out_dir.empty()) return absl::InvalidArgumentError("--model and --out are required");
  std::error_code ec;
  if (!cmd.resize.empty() && !IsResizeMode(cmd.resize)) {
    return absl::InvalidArgumentError(ResizeModeProblem("--resize", cmd.resize));
  }
  if (fs::exists(cmd.out_dir, ec) && !fs::is_empty(cmd.out_dir, ec)) {
    return absl::AlreadyExistsError(absl::StrCat(cmd.out_dir, " exists and is not empty"));
  }
  SL_ASSIGN_OR_RETURN(models::Checkpoint checkpoint, models::LoadCheckpoint(cmd.model_dir));
  const ModelManifest& source = checkpoint.manifest;
  // Golden images: the ones given, else the source's own golden files.
  std::vector<std::string> golden = cmd.golden;
  if (golden.empty() && source.golden_set.has_value()) {
    for (const GoldenItem& item : source.golden_set->items) golden.push_back(cmd.model_dir + "/" + item.file);
  }
  SL_RETURN_IF_ERROR(models::SaveCheckpoint(*checkpoint.model, cmd.out_dir, source.image_size,
                                            source.classes.codes(),
                                            source.vit.value_or(models::VitConfig{}), cmd.fp16));
  // The source's manifest (typed fields and provenance) for the new weights; the
  // golden set is recorded again below.
  ModelManifest manifest = source;
  manifest.golden_set.reset();
  manifest.document["weights_dtype"] = cmd.fp16 ? "float16" : "float32";
  manifest.document["code_version"] = CodeVersion();
  std::string source_sha256 = source.sha256;  // Absent from a bare SaveCheckpoint's manifest.
  if (source_sha256.empty()) {
    SL_ASSIGN_OR_RETURN(source_sha256, Sha256File(cmd.model_dir + "/" + kWeightsFile));
  }
  manifest.document["exported_from"] = {{"sha256", source_sha256},
                                        {"created", source.document.value("created", "")}};
  // A copy of a copy keeps the whole chain back to the weights training wrote.
  if (source.document.contains("exported_from")) {
    manifest.document["exported_from"]["exported_from"] = source.document["exported_from"];
  }
  if (!cmd.resize.empty() && cmd.resize != source.resize) {
    manifest.resize = cmd.resize;
    manifest.document["exported_from"]["resize"] = source.resize;
  }
  manifest.document.erase("sha256");
  SL_ASSIGN_OR_RETURN(manifest.sha256, Sha256File(cmd.out_dir + "/" + kWeightsFile));
  // The not-a-lesion check's fitted Gaussian travels with the weights it was fitted on.
  if (!source.ood.features_file.empty()) {
    std::error_code copy_ec;
    fs::copy_file(cmd.model_dir + "/" + source.ood.features_file, cmd.out_dir + "/" + source.ood.features_file,
                  fs::copy_options::overwrite_existing, copy_ec);
    if (copy_ec) {
      return absl::NotFoundError(absl::StrCat(cmd.model_dir, "/", source.ood.features_file, ": ", copy_ec.message()));
    }
  }
  SL_RETURN_IF_ERROR(WriteModelManifest(cmd.out_dir, manifest));
  SL_RETURN_IF_ERROR(WriteGoldenSet(cmd.out_dir, golden));
  std::printf("exported %s -> %s (%s weights, %lld bytes, golden set of %zu, preprocessing %s)\n",
              cmd.model_dir.c_str(), cmd.out_dir.c_str(), cmd.fp16 ? "float16" : "float32",
              static_cast<long long>(fs::file_size(cmd.out_dir + "/model.safetensors")),
              golden.size(), manifest.resize.c_str());
  return absl::OkStatus();
}

// Every .jpg/.jpeg/.png image in `dir`, sorted by name, as samples (label 0: unknown).
absl::StatusOr<std::vector<data::Sample>> ImagesOfFolder(const std::string& dir) {
  std::vector<data::Sample> samples;
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(dir, ec)) {
    const std::string ext = entry.path().extension().string();
    if (ext == ".jpg" || ext == ".jpeg" || ext == ".png") {
      samples.push_back({.image_id = entry.path().stem().string(), .lesion_id = entry.path().stem().string(),
                         .label = 0, .path = entry.path().string()});
    }
  }
  if (ec) return absl::NotFoundError(absl::StrCat(dir, ": ", ec.message()));
  std::sort(samples.begin(), samples.end(),
            [](const data::Sample& a, const data::Sample& b) { return a.path < b.path; });
  if (samples.empty()) return absl::NotFoundError(absl::StrCat(dir, " has no .jpg or .png image"));
  return samples;
}

// The not-a-lesion score a model gets unless told otherwise: mahalanobis where it has a
// convolutional feature map, else energy.
OodMethod DefaultOodMethod(const models::Classifier& model) {
  return models::HasEmbedding(model) ? OodMethod::kMahalanobis : OodMethod::kEnergy;
}

// The OOD scores of `pred` under `method` (the Gaussian's for mahalanobis).
absl::StatusOr<std::vector<double>> OodScores(OodMethod method, const train::Predictions& pred,
                                              const models::FeatureGaussian* gaussian) {
  std::vector<double> scores;
  if (method == OodMethod::kEnergy) {
    // The model's own logits: under test-time augmentation pred.logits are log-probabilities.
    const std::vector<eval::Probs>& logits =
        pred.plain_logits.empty() ? pred.logits : pred.plain_logits;
    for (const eval::Probs& z : logits)
      scores.push_back(EnergyScore(z.data(), static_cast<int>(z.size())));
    return scores;
  }
  if (gaussian == nullptr || !pred.embeddings.defined()) {
    return absl::InternalError("mahalanobis scores need the Gaussian and the embeddings");
  }
  SL_ASSIGN_OR_RETURN(const torch::Tensor s, gaussian->Score(pred.embeddings));
  const double* p = s.data_ptr<double>();
  return std::vector<double>(p, p + s.size(0));
}

// `flag` (--tta_views), or the model's own test-time views when it is empty.
absl::StatusOr<Tta> ChooseTta(const std::string& flag, const ModelManifest& model) {
  if (flag.empty()) return model.tta;
  return ParseTta(flag);
}

absl::Status RunEvaluate(const EvaluateCommand& cmd) {
  if (cmd.model_dir.empty() || cmd.out_dir.empty()) return absl::InvalidArgumentError("--model and --out are required");
  torch::set_num_threads(cmd.threads);
  std::string model_dir = cmd.model_dir;
  if (!cmd.registry.empty()) {
    SL_ASSIGN_OR_RETURN(model_dir, ResolveRegistryModel(cmd.registry, cmd.model_dir));
  }
  SL_ASSIGN_OR_RETURN(const serving::ModelSpec spec, serving::ReadModelSpec(model_dir));
  SL_ASSIGN_OR_RETURN(const Tta tta, ChooseTta(cmd.tta_views, spec));
  std::vector<data::Sample> samples;
  nlohmann::json context = {{"model", cmd.model_dir}, {"tta", std::string(TtaName(tta))}};
  // With --split: the data and split, kept for --answers_dir.
  std::optional<data::Dataset> dataset;
  std::optional<data::Split> split;
  if (!cmd.isic_csv.empty()) {
    if (cmd.isic_images.empty()) return absl::InvalidArgumentError("--isic_csv needs --images");
    SL_ASSIGN_OR_RETURN(const data::Dataset d, LoadData(cmd.isic_images, cmd.isic_csv, cmd.skip_labels, &spec.classes));
    const data::Catalogue& c = d.catalogue;
    samples = c.samples;
    context["ground_truth"] = cmd.isic_csv;
  } else {
    if (cmd.data_dir.empty() || cmd.split_file.empty()) {
      return absl::InvalidArgumentError("give --data with --split, or --isic_csv with --images");
    }
    SL_ASSIGN_OR_RETURN(dataset,
                        LoadData(cmd.data_dir, cmd.metadata, cmd.skip_labels, &spec.classes));
    SL_ASSIGN_OR_RETURN(split, data::LoadSplit(cmd.split_file));
    SL_ASSIGN_OR_RETURN(samples, data::Apply(*split, dataset->catalogue, cmd.partition));
    context["split_digest"] = split->Digest();
    context["partition"] = cmd.partition;
  }
  if (samples.empty()) return absl::InvalidArgumentError("no images to evaluate");
  int answers_fold = -1;
  if (!cmd.answers_dir.empty()) {
    absl::string_view partition = cmd.partition;
    if (!cmd.isic_csv.empty() || !absl::ConsumePrefix(&partition, "fold") ||
        !absl::SimpleAtoi(partition, &answers_fold) || answers_fold < 0) {
      return absl::InvalidArgumentError(
          "--answers_dir needs --split with a k-fold --partition fold<N> (the fold the model never "
          "saw)");
    }
  }
  SL_ASSIGN_OR_RETURN(models::Checkpoint checkpoint, models::LoadCheckpoint(model_dir));
  const std::string device = ResolveDevice(cmd.device);
  SL_ASSIGN_OR_RETURN(const PrecisionChoice precision, ParsePrecisionChoice(cmd.precision));
  checkpoint.model->to(torch::Device(device));
  checkpoint.model->eval();
  SL_ASSIGN_OR_RETURN(const models::Numerics numerics,
                      models::PrepareForInference(*checkpoint.model, precision, torch::Device(device),
                                                  spec.precision));
  std::printf("evaluating in %s (%s)\n", numerics.Describe().c_str(), numerics.reason.c_str());
  context["precision"] = std::string(PrecisionName(numerics.precision));
  context["numerics"] = numerics.Describe();
  context["numerics_reason"] = numerics.reason;
  context["cpu"] = {{"model", DetectCpuFeatures().model_name}, {"flags", DetectCpuFeatures().FlagList()}};
  SL_ASSIGN_OR_RETURN(const std::optional<models::FeatureGaussian> gaussian,
                      models::LoadOodGaussianFor(*checkpoint.model, model_dir, spec.ood));
  SL_ASSIGN_OR_RETURN(
      const train::Predictions pred,
      train::PredictSamples(*checkpoint.model, samples, serving::PreprocessOptionsFor(spec), device,
                            32, 2, tta, numerics, gaussian.has_value()));
  eval::ReportInput report;
  if (gaussian) {
    SL_ASSIGN_OR_RETURN(report.ood_scores, OodScores(OodMethod::kMahalanobis, pred, &*gaussian));
  }
  report.classes = spec.classes;
  report.labels = pred.labels;
  report.logits = pred.logits;
  report.temperature = spec.temperature;
  report.referral = spec.refer;  // The model's own operating points.
  report.decision = spec.decision;
  report.ood = spec.ood;
  report.subgroups = Subgroups(samples);
  for (const auto& s : samples) report.image_paths.push_back(s.path);
  report.context = context;
  SL_ASSIGN_OR_RETURN(const nlohmann::json metrics, eval::WriteReport(report, cmd.out_dir));
  std::printf("evaluated %s on %zu images:\n", cmd.model_dir.c_str(), samples.size());
  PrintHeadline(metrics);
  PrintSubgroups(metrics);
  std::printf("wrote %s/metrics.json and plots\n", cmd.out_dir.c_str());
  if (!cmd.answers_dir.empty()) {
    // The fold's answers as a cv round keeps them (single view and the model's own
    // views), so that fit-thresholds --from_cv can pool models trained this way.
    std::vector<Tta> views = {Tta::kNone};
    if (tta != Tta::kNone) views.push_back(tta);
    SL_RETURN_IF_ERROR(AnswerFold(model_dir, answers_fold, *split, dataset->catalogue, views,
                                  std::nullopt, cmd.answers_dir, cmd.answers_of_training_images)
                           .status());
  }
  return absl::OkStatus();
}

// The samples of one partition of a HAM10000 split, with the split (for its digest).
// One partition of a split, with the catalogue and split it came from so that other
// partitions of the same data are applied without loading the data again.
struct Partition {
  data::Split split;
  data::Catalogue catalogue;
  std::vector<data::Sample> samples;

  // The samples of another partition of the same split.
  absl::StatusOr<std::vector<data::Sample>> Other(const std::string& partition) const {
    SL_ASSIGN_OR_RETURN(std::vector<data::Sample> other, data::Apply(split, catalogue, partition));
    if (other.empty())
      return absl::InvalidArgumentError(absl::StrCat("partition '", partition, "' is empty"));
    return other;
  }
};
absl::StatusOr<Partition> LoadPartition(const std::string& data_dir, const std::string& metadata,
                                        const std::string& skip_labels, const std::string& split_file,
                                        const std::string& partition, const LabelSet& model_classes) {
  SL_ASSIGN_OR_RETURN(data::Dataset dataset,
                      LoadData(data_dir, metadata, skip_labels, &model_classes));
  SL_ASSIGN_OR_RETURN(data::Split split, data::LoadSplit(split_file));
  Partition part{std::move(split), std::move(dataset.catalogue), {}};
  SL_ASSIGN_OR_RETURN(part.samples, part.Other(partition));
  return part;
}

namespace {

// What fit-thresholds fits the served model's rule and thresholds on: held-out lesions
// with their calibrated probabilities and their not-a-lesion scores on the served
// model's scale, and where they came from.
struct HeldOut {
  std::vector<data::Sample> samples;  // In the order of labels (out of fold: round by round).
  std::vector<int> labels;
  std::vector<eval::Probs> probs;
  std::vector<double> ood_scores;
  std::optional<models::FeatureGaussian> gaussian;  // mahalanobis: the served model's.
  nlohmann::json gaussian_fitted_data;
  std::string name;                   // "val" (a partition) or "out_of_fold".
  nlohmann::json fitted_data;         // Provenance of the images.
  std::vector<int> prior_labels;      // The served model's training labels, where known here.
  std::optional<double> temperature;  // A new temperature (out of fold), else the model's.
  nlohmann::json calibration;
  std::vector<eval::RoundHeldOut> rounds;  // Out of fold: each round's answers on its own.
};

// The fitting choices common to both sources.
struct FitSetup {
  const FitThresholdsCommand& cmd;
  const serving::ModelSpec& spec;
  Tta tta;
  OodMethod ood_method;
  const Partition& part;
  models::Checkpoint& checkpoint;
  bool embed() const { return ood_method == OodMethod::kMahalanobis; }
};

// A model's not-a-lesion scores of `samples` (its own training images) and, for
// mahalanobis, the Gaussian fitted on them.
struct TrainingScores {
  std::optional<models::FeatureGaussian> gaussian;
  std::vector<double> scores;
};
absl::StatusOr<TrainingScores> ScoreTrainingImages(models::Classifier& model,
                                                   const serving::ModelSpec& spec,
                                                   const std::vector<data::Sample>& samples,
                                                   OodMethod method) {
  const bool embed = method == OodMethod::kMahalanobis;
  SL_ASSIGN_OR_RETURN(const train::Predictions pred,
                      train::PredictSamples(model, samples, serving::PreprocessOptionsFor(spec),
                                            "cpu", 32, 2, Tta::kNone, {}, embed));
  TrainingScores t;
  if (embed) {
    SL_ASSIGN_OR_RETURN(t.gaussian, models::FeatureGaussian::Fit(pred.embeddings, pred.labels,
                                                                 spec.classes.size()));
  }
  SL_ASSIGN_OR_RETURN(t.scores, OodScores(method, pred, t.gaussian ? &*t.gaussian : nullptr));
  return t;
}

// The served model's own predictions on a partition of the split it was trained with.
absl::StatusOr<HeldOut> HeldOutPartition(const FitSetup& f) {
  const FitThresholdsCommand& cmd = f.cmd;
  const std::vector<data::Sample>& samples = f.part.samples;
  const PreprocessOptions preprocess = serving::PreprocessOptionsFor(f.spec);
  SL_ASSIGN_OR_RETURN(const train::Predictions pred,
                      train::PredictSamples(*f.checkpoint.model, samples, preprocess, "cpu", 32, 2,
                                            f.tta, {}, f.embed()));
  HeldOut h;
  h.samples = samples;
  h.labels = pred.labels;
  h.probs = eval::Softmax(pred.logits, f.spec.temperature);
  h.name = cmd.partition;
  h.fitted_data = {{"split_digest", f.part.split.Digest()},
                   {"partition", cmd.partition},
                   {"images", samples.size()}};
  if (f.embed()) {
    // The Gaussian of the training images' embeddings.
    SL_ASSIGN_OR_RETURN(const std::vector<data::Sample> fit_samples, f.part.Other(cmd.ood_fit_on));
    std::printf("fitting the not-a-lesion Gaussian on the %zu %s images' features\n",
                fit_samples.size(), cmd.ood_fit_on.c_str());
    SL_ASSIGN_OR_RETURN(TrainingScores fitted, ScoreTrainingImages(*f.checkpoint.model, f.spec,
                                                                   fit_samples, f.ood_method));
    h.gaussian = std::move(fitted.gaussian);
    h.gaussian_fitted_data = {{"split_digest", f.part.split.Digest()},
                              {"partition", cmd.ood_fit_on},
                              {"images", fit_samples.size()}};
  }
  SL_ASSIGN_OR_RETURN(h.ood_scores,
                      OodScores(f.ood_method, pred, h.gaussian ? &*h.gaussian : nullptr));
  return h;
}

// The round model's answers on its test fold under each of `views`, written to
// <cv_dir>/fold<fold>/out_of_fold_<views>.csv; its training images are scored once.
absl::StatusOr<std::vector<eval::RoundAnswers>> AnswerRound(const std::string& cv_dir, int fold,
                                                            const data::Split& split,
                                                            const data::Catalogue& catalogue,
                                                            const std::vector<Tta>& views,
                                                            std::optional<OodMethod> method) {
  const std::string round_model = absl::StrCat(cv_dir, "/fold", fold, "/model");
  if (!fs::exists(round_model + "/manifest.json")) {
    return absl::FailedPreconditionError(
        absl::StrCat("round ", fold, " of ", cv_dir, " has neither its ",
                     eval::RoundAnswersFile(TtaName(views.front())),
                     " nor its model: every image must be answered once"));
  }
  return AnswerFold(round_model, fold, split, catalogue, views, method,
                    absl::StrCat(cv_dir, "/fold", fold));
}

absl::StatusOr<std::vector<eval::RoundAnswers>> AnswerFold(
    const std::string& round_model, int fold, const data::Split& split,
    const data::Catalogue& catalogue, const std::vector<Tta>& views,
    std::optional<OodMethod> method, const std::string& out_dir, bool training_images_allowed) {
  SL_ASSIGN_OR_RETURN(const serving::ModelSpec spec, serving::ReadModelSpec(round_model));
  SL_ASSIGN_OR_RETURN(models::Checkpoint round, models::LoadCheckpoint(round_model));
  round.model->eval();
  const OodMethod ood_method = method.value_or(DefaultOodMethod(*round.model));
  if (ood_method == OodMethod::kMahalanobis && !models::HasEmbedding(*round.model)) {
    return absl::InvalidArgumentError(
        absl::StrCat(round_model, " has no feature map for mahalanobis scores"));
  }
  // Its training images: every image but fold<fold>'s for a model trained with
  // --all_folds --fold <fold>, else the cv round's.
  SL_ASSIGN_OR_RETURN(const int test_fold,
                      KeptOutFold(spec.document, data::KFoldCount(split), round_model));
  const nlohmann::json& data_doc = spec.document.value("data", nlohmann::json::object());
  const nlohmann::json trained_fold = data_doc.value("fold", nlohmann::json());
  const bool all_but = test_fold >= 0;
  // The fold the model kept out of its training (its test fold).
  const int own_fold = all_but                            ? test_fold
                       : trained_fold.is_number_integer() ? trained_fold.get<int>()
                                                          : -1;
  if (own_fold < 0 || (own_fold != fold && !training_images_allowed)) {
    return absl::FailedPreconditionError(absl::StrCat(
        round_model, " did not keep fold", fold, " out of its training (its manifest's data: fold ",
        trained_fold.dump(), ", test_fold ", all_but ? absl::StrCat(test_fold) : "none", ")",
        own_fold >= 0 ? "; --answers_of_training_images for a teacher's answers" : ""));
  }
  // Its own training images (for the not-a-lesion units) and the fold's images answered.
  SL_ASSIGN_OR_RETURN(data::TrainValTest sets, all_but
                                                   ? data::ApplyAllFolds(split, catalogue, own_fold)
                                                   : data::ApplyRound(split, catalogue, own_fold));
  if (fold != own_fold) {
    SL_ASSIGN_OR_RETURN(sets.test, data::Apply(split, catalogue, absl::StrCat("fold", fold)));
    std::printf(
        "round %d: fold%d is among the model's training images: its answers teach, they "
        "measure nothing\n",
        fold, fold);
  }
  // The not-a-lesion scores are in units of the round model's own training scores.
  SL_ASSIGN_OR_RETURN(const TrainingScores own,
                      ScoreTrainingImages(*round.model, spec, sets.train, ood_method));
  const std::optional<OodScoreScale> scale = OodScoreScale::Of(own.scores);
  if (!scale)
    return absl::InternalError(absl::StrCat("round ", fold, ": no finite training score"));
  std::vector<eval::RoundAnswers> out;
  for (const Tta tta : views) {
    std::printf("round %d: answering its %zu test images (views %s, temperature %.3f)\n", fold,
                sets.test.size(), std::string(TtaName(tta)).c_str(), spec.temperature);
    SL_ASSIGN_OR_RETURN(
        const train::Predictions pred,
        train::PredictSamples(*round.model, sets.test, serving::PreprocessOptionsFor(spec), "cpu",
                              32, 2, tta, {}, ood_method == OodMethod::kMahalanobis));
    eval::RoundAnswers a;
    a.views = std::string(TtaName(tta));
    a.temperature = spec.temperature;
    a.ood_method = OodMethodName(ood_method);
    for (const data::Sample& sample : sets.test) a.image_ids.push_back(sample.image_id);
    a.labels = pred.labels;
    a.probs = eval::Softmax(pred.logits, spec.temperature);
    SL_ASSIGN_OR_RETURN(const std::vector<double> scores,
                        OodScores(ood_method, pred, own.gaussian ? &*own.gaussian : nullptr));
    for (double score : scores) a.ood_units.push_back(scale->ToUnits(score));
    std::error_code ec;
    fs::create_directories(out_dir, ec);
    const std::string file = absl::StrCat(out_dir, "/", eval::RoundAnswersFile(a.views));
    SL_ASSIGN_OR_RETURN(const std::string text, eval::RoundAnswersToCsv(a, catalogue.classes));
    SL_RETURN_IF_ERROR(WriteFileAtomically(file, text));
    std::printf("wrote %s\n", file.c_str());
    out.push_back(std::move(a));
  }
  return out;
}

absl::StatusOr<eval::RoundAnswers> RoundAnswersOf(const std::string& cv_dir, int fold,
                                                  const data::Split& split,
                                                  const data::Catalogue& catalogue, Tta tta,
                                                  OodMethod ood_method) {
  const std::string file =
      absl::StrCat(cv_dir, "/fold", fold, "/", eval::RoundAnswersFile(TtaName(tta)));
  if (fs::exists(file)) {
    SL_ASSIGN_OR_RETURN(eval::RoundAnswers a, eval::ReadRoundAnswers(file, catalogue.classes));
    if (a.ood_method == OodMethodName(ood_method)) return a;
    std::printf("%s holds %s scores, not %s: answering again\n", file.c_str(), a.ood_method.c_str(),
                OodMethodName(ood_method));
  }
  SL_ASSIGN_OR_RETURN(std::vector<eval::RoundAnswers> a,
                      AnswerRound(cv_dir, fold, split, catalogue, {tta}, ood_method));
  return std::move(a.front());
}

// The out-of-fold predictions of `skinlesion cv`'s rounds (cmd.from_cv) for a model
// trained on every image of the same k-fold split with the same recipe (train
// --all_folds): each round's model answers its test fold with its own temperature, so
// every image is predicted once by a model that never saw it. The served model's
// temperature is the rounds' mean; its not-a-lesion threshold is carried over in units
// of each model's own training scores (OodScoreScale).
absl::StatusOr<HeldOut> HeldOutOfRounds(const FitSetup& f) {
  const FitThresholdsCommand& cmd = f.cmd;
  const data::Split& split = f.part.split;
  const int k = data::KFoldCount(split);
  if (k < 3)
    return absl::InvalidArgumentError(
        "--from_cv needs the k-fold split the rounds ran on (--split)");
  // The rounds must be of this model's recipe and split.
  const std::string recipe_file = cmd.from_cv + "/cv_recipe.json";
  SL_ASSIGN_OR_RETURN(const nlohmann::json recipe, ReadJsonObject(recipe_file, 1 << 20));
  if (!recipe.contains("config") || !recipe.contains("split_digest")) {
    return absl::DataLossError(absl::StrCat(recipe_file, " is not a cv recipe"));
  }
  if (recipe["split_digest"] != split.Digest()) {
    return absl::FailedPreconditionError(
        absl::StrCat("the rounds in ", cmd.from_cv, " ran on another split (",
                     recipe["split_digest"].dump(), ") than ", cmd.split_file));
  }
  const nlohmann::json& doc = f.spec.document;
  if (!doc.contains("data") || doc["data"].value("split_digest", "") != split.Digest() ||
      doc["data"].value("fold", nlohmann::json()) != "all") {
    return absl::FailedPreconditionError(
        absl::StrCat(cmd.model_dir, " was not trained on every image of ", cmd.split_file,
                     " (skinlesion train --all_folds): the rounds' held-out images would be its "
                     "training images"));
  }
  // Trained with --all_folds --fold N: fold N's images are its test images, so round N's
  // answers (on those images) are left out of the fit, and its own training images are
  // every image but fold N's.
  SL_ASSIGN_OR_RETURN(const int test_fold, KeptOutFold(doc, k, cmd.model_dir));
  if (test_fold >= 0) {
    std::printf(
        "the model was trained on every image but fold%d's: round %d's answers are left out of "
        "the fit (they are its test images)\n",
        test_fold, test_fold);
  }
  const nlohmann::json config =
      RecipeConfig(doc.contains("training") ? doc["training"].value("config", nlohmann::json())
                                            : nlohmann::json());
  if (!SameRecipe(recipe["config"], WithTheRoundsEpoch(config, recipe["config"], split))) {
    return absl::FailedPreconditionError(absl::StrCat(
        cmd.model_dir, " was trained with another recipe than the rounds in ", cmd.from_cv,
        " (compare its manifest's training.config with ", recipe_file, ")"));
  }
  HeldOut h;
  h.name = "out_of_fold";
  std::vector<double> temperatures, units;
  std::vector<size_t> round_ends;  // units[round_ends[r-1] .. round_ends[r]) are round r's.
  // Rounds whose answers are of a model trained as the served one on every image but
  // the round's fold (train --all_folds --fold; evaluate --answers_dir keeps its
  // manifest as fold<N>/manifest.json), not of a cv round model.
  int kept_out_models = 0;
  absl::flat_hash_map<std::string, const data::Sample*> by_id;
  for (const data::Sample& sample : f.part.catalogue.samples) by_id[sample.image_id] = &sample;
  for (int fold = 0; fold < k; ++fold) {
    if (fold == test_fold) continue;
    SL_ASSIGN_OR_RETURN(
        const eval::RoundAnswers answers,
        RoundAnswersOf(cmd.from_cv, fold, split, f.part.catalogue, f.tta, f.ood_method));
    // Exactly the round's test fold, with the catalogue's labels.
    const int test_images = split.Count(absl::StrCat("fold", fold));
    if (static_cast<size_t>(test_images) != answers.image_ids.size()) {
      return absl::FailedPreconditionError(absl::StrCat("round ", fold, "'s answers hold ",
                                                        answers.image_ids.size(),
                                                        " images, its test fold ", test_images));
    }
    for (size_t i = 0; i < answers.image_ids.size(); ++i) {
      const auto it = by_id.find(answers.image_ids[i]);
      if (it == by_id.end() ||
          *split.PartitionOf(answers.image_ids[i]) != absl::StrCat("fold", fold) ||
          it->second->label != answers.labels[i]) {
        return absl::FailedPreconditionError(
            absl::StrCat("round ", fold, "'s answer for ", answers.image_ids[i],
                         " is not of its test fold or has another label"));
      }
      h.samples.push_back(*it->second);
    }
    h.labels.insert(h.labels.end(), answers.labels.begin(), answers.labels.end());
    h.probs.insert(h.probs.end(), answers.probs.begin(), answers.probs.end());
    units.insert(units.end(), answers.ood_units.begin(), answers.ood_units.end());
    temperatures.push_back(answers.temperature);
    round_ends.push_back(units.size());
    h.rounds.push_back({.fold = fold, .labels = answers.labels, .probs = answers.probs});
    const std::string round_dir = absl::StrCat(cmd.from_cv, "/fold", fold);
    if (fs::exists(round_dir + "/manifest.json")) {
      SL_ASSIGN_OR_RETURN(const ModelManifest round_manifest, ReadModelManifest(round_dir));
      SL_ASSIGN_OR_RETURN(const int kept_out, KeptOutFold(round_manifest.document, k, round_dir));
      if (kept_out >= 0 && kept_out != fold) {
        return absl::FailedPreconditionError(
            absl::StrCat(round_dir, "/manifest.json is of a model that kept fold", kept_out,
                         " out, not fold", fold));
      }
      kept_out_models += kept_out == fold;
    }
  }
  // Does a threshold in these units carry over to a model that did not set it? Each
  // round's model against the threshold the other rounds' held-out lesions set.
  nlohmann::json carry_over = nlohmann::json::array();
  for (size_t r = 0; r < round_ends.size(); ++r) {
    const size_t begin = r == 0 ? 0 : round_ends[r - 1];
    std::vector<double> others(units.begin(), units.begin() + static_cast<std::ptrdiff_t>(begin));
    others.insert(others.end(), units.begin() + static_cast<std::ptrdiff_t>(round_ends[r]),
                  units.end());
    const std::optional<double> t = FitOodThreshold(others, cmd.ood_reject_rate);
    if (!t) continue;
    int rejected = 0;
    for (size_t i = begin; i < round_ends[r]; ++i) rejected += units[i] > *t;
    carry_over.push_back(static_cast<double>(rejected) /
                         static_cast<double>(round_ends[r] - begin));
  }
  std::printf(
      "not-a-lesion threshold carried over to each round from the others: rejects %s of its "
      "held-out lesions (target %.3f)\n",
      carry_over.dump().c_str(), cmd.ood_reject_rate);
  // The served model: its own training images (all of them) set its scale.
  SL_ASSIGN_OR_RETURN(const data::TrainValTest every,
                      data::ApplyAllFolds(split, f.part.catalogue, test_fold));
  const std::vector<data::Sample>& all = every.train;
  std::printf("scoring the served model's %zu training images for its not-a-lesion scale\n",
              all.size());
  SL_ASSIGN_OR_RETURN(TrainingScores served,
                      ScoreTrainingImages(*f.checkpoint.model, f.spec, all, f.ood_method));
  const std::optional<OodScoreScale> scale = OodScoreScale::Of(served.scores);
  if (!scale) return absl::InternalError("no finite training score for the served model");
  for (double u : units) h.ood_scores.push_back(scale->FromUnits(u));
  h.gaussian = std::move(served.gaussian);
  h.gaussian_fitted_data = {
      {"split_digest", split.Digest()},
      {"partition", test_fold >= 0 ? absl::StrCat("all_but_fold", test_fold) : "all"},
      {"images", all.size()}};
  for (const data::Sample& s : all) h.prior_labels.push_back(s.label);
  double mean = 0;
  for (double t : temperatures) mean += t / static_cast<double>(temperatures.size());
  h.temperature = mean;
  h.calibration = {
      {"fitted_on", "out_of_fold"},
      {"method",
       "mean of the temperatures of the rounds' answers (a cv round's fitted on its validation "
       "fold, a kept-out model's carried over from cv rounds)"},
      {"rounds", temperatures}};
  h.fitted_data = {
      {"split_digest", split.Digest()},
      {"partition", "out_of_fold"},
      {"cv", cmd.from_cv},
      {"rounds", static_cast<int>(h.rounds.size())},
      {"left_out_round", test_fold >= 0 ? nlohmann::json(test_fold) : nlohmann::json()},
      {"kept_out_models", kept_out_models},
      {"images", h.labels.size()},
      {"ood_carried_over_rejects", carry_over}};
  std::printf(
      "out of fold: %zu images from %zu rounds (%d of them answered by a model trained on every "
      "image but that fold); temperature %.3f (the rounds' mean)\n",
      h.labels.size(), h.rounds.size(), kept_out_models, mean);
  return h;
}

// The rounds' own figures as `skinlesion cv` measured them (each round at the
// operating point fitted on its validation fold, single view), beside the
// leave-one-round-out check; nothing when the folder has no cv.json.
void PrintRoundsOwnOperatingPoints(const std::string& cv_dir) {
  const absl::StatusOr<nlohmann::json> read = ReadJsonObject(cv_dir + "/cv.json", 16 << 20);
  if (!read.ok()) return;
  const nlohmann::json& cv = *read;
  if (!cv.contains("summary") || !cv["summary"].is_object()) return;
  std::string line;
  for (const char* path : {"balanced_accuracy", "melanoma_recall",
                           "referral/malignant_sensitivity/value", "referral/refer_rate/value"}) {
    const nlohmann::json& s = cv["summary"].value(path, nlohmann::json());
    if (!s.is_object() || !s.contains("mean") || !s.contains("sd")) continue;
    absl::StrAppend(&line, line.empty() ? "" : ", ", path, " ",
                    absl::StrFormat("%.4f ± %.4f", s["mean"].get<double>(), s["sd"].get<double>()));
  }
  if (!line.empty()) {
    std::printf(
        "the rounds at their own operating points (%s/cv.json: each fitted on its validation "
        "fold, single view): %s\n",
        cv_dir.c_str(), line.c_str());
  }
}

}  // namespace

absl::Status RunFitThresholds(const FitThresholdsCommand& cmd) {
  if (cmd.model_dir.empty() || cmd.data_dir.empty() || cmd.split_file.empty()) {
    return absl::InvalidArgumentError("--model, --data and --split are required");
  }
  if (!(cmd.target_sensitivity > 0 && cmd.target_sensitivity <= 1)) {
    return absl::InvalidArgumentError("--target_sensitivity must be in (0, 1]");
  }
  if (!(cmd.sensitivity_confidence >= 0 && cmd.sensitivity_confidence < 1)) {
    return absl::InvalidArgumentError(
        "--sensitivity_confidence must be in [0, 1) (0: the share itself)");
  }
  if (!(cmd.sensitivity_margin >= 0 && cmd.target_sensitivity + cmd.sensitivity_margin <= 1)) {
    return absl::InvalidArgumentError(
        "--sensitivity_margin must be >= 0 and leave --target_sensitivity plus it at most 1");
  }
  if (!(cmd.ood_reject_rate >= 0 && cmd.ood_reject_rate < 1)) {
    return absl::InvalidArgumentError("--ood_reject_rate must be in [0, 1)");
  }
  torch::set_num_threads(cmd.threads);
  SL_ASSIGN_OR_RETURN(const serving::ModelSpec spec, serving::ReadModelSpec(cmd.model_dir));
  SL_ASSIGN_OR_RETURN(const Tta tta, ChooseTta(cmd.tta_views, spec));
  // From rounds, the partition is only loaded to check the split against the data.
  SL_ASSIGN_OR_RETURN(const Partition part,
                      LoadPartition(cmd.data_dir, cmd.metadata, cmd.skip_labels, cmd.split_file,
                                    cmd.from_cv.empty() ? cmd.partition : "fold0", spec.classes));
  SL_ASSIGN_OR_RETURN(models::Checkpoint checkpoint, models::LoadCheckpoint(cmd.model_dir));
  checkpoint.model->eval();
  OodMethod ood_method = DefaultOodMethod(*checkpoint.model);
  if (cmd.ood_method != "auto") {
    const std::optional<OodMethod> m = ParseOodMethod(cmd.ood_method);
    if (!m) return absl::InvalidArgumentError("--ood_method must be auto, mahalanobis or energy");
    if (*m == OodMethod::kMahalanobis && !models::HasEmbedding(*checkpoint.model)) {
      return absl::InvalidArgumentError(absl::StrCat("--ood_method mahalanobis needs a convolutional feature map; ",
                                                     checkpoint.manifest.architecture, " has none"));
    }
    ood_method = *m;
  }
  const bool embed = ood_method == OodMethod::kMahalanobis;
  const PreprocessOptions preprocess = serving::PreprocessOptionsFor(spec);
  if (tta != Tta::kNone)
    std::printf("test-time augmentation: %s (%d views)\n", std::string(TtaName(tta)).c_str(),
                TtaViewCount(tta));
  const FitSetup setup{cmd, spec, tta, ood_method, part, checkpoint};
  SL_ASSIGN_OR_RETURN(const HeldOut held,
                      cmd.from_cv.empty() ? HeldOutPartition(setup) : HeldOutOfRounds(setup));
  ModelManifest manifest = spec;
  manifest.tta = tta;  // What the rule and thresholds below are fitted under.
  if (held.temperature) {
    manifest.temperature = *held.temperature;
    manifest.document["calibration"] = held.calibration;
  }
  const nlohmann::json& fitted_data = held.fitted_data;
  const std::vector<eval::Probs>& probs = held.probs;
  const std::string& fitted_on = held.name;
  const std::vector<int>& labels = held.labels;
  const size_t n_images = labels.size();
  // The operating point: the decision rule, then the referral threshold (its close
  // calls depend on the named class).
  std::vector<double> prior = spec.decision.prior;
  std::string prior_source = "the model's training data";
  if (prior.empty() && !held.prior_labels.empty()) {
    prior = ClassPrior(held.prior_labels, spec.classes.size());
    prior_source = absl::StrCat("the model's training images (", held.prior_labels.size(), ")");
  } else if (prior.empty() && cmd.balanced_decision) {
    std::vector<int> train_labels;
    for (const absl::string_view name : absl::StrSplit(cmd.prior_from, ',', absl::SkipEmpty())) {
      SL_ASSIGN_OR_RETURN(const std::vector<data::Sample> train_samples,
                          part.Other(std::string(name)));
      for (const data::Sample& s : train_samples) train_labels.push_back(s.label);
    }
    prior = ClassPrior(train_labels, spec.classes.size());
    prior_source =
        absl::StrCat("partitions ", cmd.prior_from, " (", train_labels.size(), " images)");
  }
  eval::OperatingPointOptions options{
      .balanced_decision = cmd.balanced_decision, .prior = prior, .referral = spec.refer};
  options.referral.target_sensitivity = cmd.target_sensitivity + cmd.sensitivity_margin;
  options.referral.sensitivity_confidence = cmd.sensitivity_confidence;
  std::optional<ClassInfo> floor_class;
  if (cmd.balanced_decision && cmd.recall_target > 0) {
    SL_ASSIGN_OR_RETURN(floor_class, spec.classes.Find(cmd.recall_target_class));
    options.recall_class = floor_class->index;
    options.recall_target = cmd.recall_target;
  }
  const eval::OperatingPoint op =
      eval::FitOperatingPoint(labels, probs, spec.classes, spec.decision, options);
  if (cmd.balanced_decision && !op.tau) {
    std::printf(
        "decision rule NOT fitted: the %s images have fewer than two classes; the model's rule "
        "is kept\n",
        fitted_on.c_str());
  } else if (op.tau) {
    manifest.decision = op.decision;
    manifest.document["decision"] = {{"fitted_on", fitted_on},
                                     {"fitted_data", fitted_data},
                                     {"validation",
                                      {{"balanced_accuracy_plain", op.tau->balanced_accuracy_plain},
                                       {"balanced_accuracy", op.tau->balanced_accuracy}}}};
    std::printf(
        "decision rule fitted on %zu %s images (prior: %s): tau %.2f, balanced accuracy %.4f "
        "(plain %.4f)\n",
        n_images, fitted_on.c_str(), prior_source.c_str(), op.tau->tau, op.tau->balanced_accuracy,
        op.tau->balanced_accuracy_plain);
    // The recall floor on top (refitted, or removed with --recall_target 0).
    if (op.floor) {
      const RecallBiasFit& floor = *op.floor;
      manifest.document["decision"]["recall_floor"] =
          eval::RecallFloorToJson(floor, floor_class->code, cmd.recall_target);
      std::printf(
          "%s recall floor %.2f: bias %.2f%s, %s recall %.3f -> %.3f of %d, balanced accuracy "
          "%.4f -> %.4f\n",
          floor_class->code.c_str(), cmd.recall_target, floor.bias,
          floor.reached ? "" : " (the cap: target out of reach)", floor_class->code.c_str(),
          floor.recall_before, floor.recall, floor.cases, floor.balanced_accuracy_before,
          floor.balanced_accuracy);
    } else if (floor_class) {
      std::printf("recall floor NOT fitted: the %s images have no %s image\n", fitted_on.c_str(),
                  floor_class->code.c_str());
    }
  }

  // Referral.
  if (!op.referral) {
    return absl::FailedPreconditionError(
        absl::StrCat("the ", fitted_on, " images have no malignant case to fit a threshold on"));
  }
  // Served with the aim, not the aim plus the margin it was fitted for.
  ReferralPolicy policy = *op.referral;
  policy.target_sensitivity = cmd.target_sensitivity;
  const double threshold = *policy.risk_threshold;
  nlohmann::json fitted = {
      {"referral", eval::ReferralToJson(eval::EvaluateReferral(labels, probs, policy, spec.classes,
                                                               manifest.decision))}};
  fitted["referral"]["threshold_source"] = absl::StrCat("fitted_on_", fitted_on);
  fitted["referral"]["validation"] = fitted["referral"];
  SetRefer(fitted, manifest);
  manifest.document["refer"]["fitted_data"] = fitted_data;
  if (cmd.sensitivity_margin > 0)
    manifest.document["refer"]["sensitivity_margin"] = cmd.sensitivity_margin;
  std::printf(
      "fitted on %zu %s images: refer when malignancy risk >= %.4f (target sensitivity %.2f%s, "
      "%s)\n",
      n_images, fitted_on.c_str(), threshold, cmd.target_sensitivity,
      cmd.sensitivity_margin > 0
          ? absl::StrFormat(", fitted for %.2f: margin %.2f",
                            cmd.target_sensitivity + cmd.sensitivity_margin, cmd.sensitivity_margin)
                .c_str()
          : "",
      cmd.sensitivity_confidence > 0
          ? absl::StrFormat("shown with %.0f%% confidence", 100 * cmd.sensitivity_confidence)
                .c_str()
          : "the validation share itself");
  PrintReferral(fitted);

  // Out of distribution: the held-out lesions' scores (on the served model's scale)
  // set the threshold; for mahalanobis, the Gaussian of its training images' embeddings.
  const std::optional<models::FeatureGaussian>& gaussian = held.gaussian;
  nlohmann::json gaussian_json;
  if (gaussian) {
    gaussian_json = {{"file", kOodFeaturesFile},
                     {"dim", gaussian->dim()},
                     {"classes", gaussian->classes()},
                     {"shrinkage", gaussian->shrinkage()},
                     {"fitted_data", held.gaussian_fitted_data}};
  }
  const std::vector<double>& inside = held.ood_scores;
  double lesions_rejected = 0;
  SL_ASSIGN_OR_RETURN(manifest.ood, FitOod(ood_method, inside, cmd.ood_reject_rate, &lesions_rejected));
  nlohmann::json& ood_doc = manifest.document["ood"];
  ood_doc = {{"lesions_rejected", lesions_rejected}, {"fitted_data", fitted_data}};
  const double ood_threshold = *manifest.ood.threshold;
  std::printf("out of distribution when the %s score > %.4f (rejects %.1f%% of the %s lesions)\n",
              OodMethodName(ood_method), ood_threshold, 100 * lesions_rejected, fitted_on.c_str());
  bool keep_ood = false;
  if (!cmd.ood_images.empty()) {
    SL_ASSIGN_OR_RETURN(const std::vector<data::Sample> images, ImagesOfFolder(cmd.ood_images));
    SL_ASSIGN_OR_RETURN(
        const train::Predictions outside_pred,
        train::PredictSamples(*checkpoint.model, images, preprocess, "cpu", 32, 2, tta, {}, embed));
    SL_ASSIGN_OR_RETURN(const std::vector<double> outside,
                        OodScores(ood_method, outside_pred, gaussian ? &*gaussian : nullptr));
    std::vector<double> scores = inside;
    std::vector<bool> positive(inside.size(), false);
    int caught = 0;
    for (double e : outside) {
      scores.push_back(e);
      positive.push_back(true);
      caught += IsOutOfDistribution(e, {.threshold = ood_threshold});
    }
    const double auroc = eval::RocAuc(scores, positive);
    ood_doc["check"] = {{"images", cmd.ood_images},
                                {"n", outside.size()},
                                {"auroc_vs_lesions", auroc},
                                {"caught", static_cast<double>(caught) / outside.size()}};
    std::printf("  %zu non-lesion images in %s: AUROC %.3f vs the lesions, %d caught (%.0f%%)\n",
                outside.size(), cmd.ood_images.c_str(), auroc, caught, 100.0 * caught / outside.size());
    keep_ood = auroc >= cmd.min_ood_auroc;
  }
  const std::string gaussian_path = cmd.model_dir + "/" + kOodFeaturesFile;
  if (!keep_ood) {
    // A check that rejects real lesions without catching non-lesions does harm: serve
    // without it (the numbers above say why).
    manifest.ood = OodPolicy{};
    manifest.document.erase("ood");
    std::error_code ec;
    fs::remove(gaussian_path, ec);
    std::printf("  not-a-lesion check NOT written to the manifest: %s\n",
                cmd.ood_images.empty()
                    ? "no --ood_images to measure it on"
                    : absl::StrFormat("AUROC below --min_ood_auroc %.2f", cmd.min_ood_auroc).c_str());
  } else if (gaussian) {
    SL_RETURN_IF_ERROR(gaussian->Save(gaussian_path));
    manifest.ood.features_file = kOodFeaturesFile;
    SL_ASSIGN_OR_RETURN(manifest.ood.features_sha256, Sha256File(gaussian_path));
    ood_doc["features"] = gaussian_json;  // Its shape and provenance; ToJson adds file and sha256.
    std::printf("wrote %s (%lld x %lld class means and precision)\n", gaussian_path.c_str(),
                static_cast<long long>(gaussian->classes()), static_cast<long long>(gaussian->dim()));
  } else {
    std::error_code ec;
    fs::remove(gaussian_path, ec);
  }
  if (!cmd.from_cv.empty()) {
    // The recipe's cross-validated figures at the operating point just fitted: the
    // rounds' pooled out-of-fold answers (not this model's own; it has no held-out
    // image). They are also its manifest's "metrics" (what promotion gates compare).
    eval::ReportInput report;
    report.classes = spec.classes;
    report.labels = labels;
    for (const eval::Probs& p : probs) {
      eval::Probs log_p(p.size());
      for (size_t c = 0; c < p.size(); ++c) log_p[c] = std::log(std::max(p[c], 1e-30f));
      report.logits.push_back(std::move(log_p));
    }
    report.temperature = 1.0;  // Already calibrated, each by its own round's temperature.
    report.referral = manifest.refer;
    report.decision = manifest.decision;
    report.ood = manifest.ood;
    report.ood_scores = inside;
    report.subgroups = Subgroups(held.samples);
    for (const data::Sample& sample : held.samples) report.image_paths.push_back(sample.path);
    report.context = {{"model", cmd.model_dir},
                      {"partition", "out_of_fold"},
                      {"cv", cmd.from_cv},
                      {"split_digest", part.split.Digest()},
                      {"tta", std::string(TtaName(tta))}};
    fs::path model_path = fs::path(cmd.model_dir).lexically_normal();
    if (!model_path.has_filename()) model_path = model_path.parent_path();
    const std::string report_dir = (model_path.parent_path() / "report_out_of_fold").string();
    SL_ASSIGN_OR_RETURN(nlohmann::json metrics, eval::WriteReport(report, report_dir));
    std::printf("the rounds' out-of-fold answers at this operating point (%zu images):\n",
                n_images);
    PrintHeadline(metrics);
    std::printf("wrote %s/metrics.json and plots\n", report_dir.c_str());
    metrics.erase("confusion_matrix_normalized");
    manifest.document["metrics"] = metrics;
    manifest.document["metrics_source"] = "out_of_fold";
    // The figures above are fitted and scored on the same answers; each round scored at
    // the operating point the other rounds' answers set says what to expect elsewhere.
    // (A check that cannot run, e.g. rounds too small to hold a malignant case once
    // one is left out, does not stop the fit; the manifest then has no such figures.)
    absl::StatusOr<nlohmann::json> check =
        eval::LeaveOneRoundOut(held.rounds, spec.classes, spec.decision, options);
    if (check.ok()) {
      std::printf(
          "each round at the operating point fitted on the other rounds' answers (what to "
          "expect on images outside the fitting data):\n%s",
          (*check)["markdown"].get<std::string>().c_str());
      PrintRoundsOwnOperatingPoints(cmd.from_cv);
      check->erase("markdown");
      SL_RETURN_IF_ERROR(
          WriteFileAtomically(report_dir + "/leave_one_round_out.json", check->dump(2) + "\n"));
      std::printf("wrote %s/leave_one_round_out.json\n", report_dir.c_str());
      manifest.document["metrics_leave_one_round_out"] = *std::move(check);
    } else {
      std::printf("leave-one-round-out check NOT run: %s\n",
                  std::string(check.status().message()).c_str());
    }
  }
  SL_RETURN_IF_ERROR(WriteModelManifest(cmd.model_dir, manifest));
  std::printf("wrote %s/manifest.json\n", cmd.model_dir.c_str());
  if ((manifest.tta != spec.tta || manifest.temperature != spec.temperature) &&
      manifest.golden_set.has_value()) {
    // The served answers changed with the views or the temperature: the golden outputs
    // follow them.
    std::vector<std::string> files;
    for (const GoldenItem& item : manifest.golden_set->items) files.push_back(item.file);
    SL_RETURN_IF_ERROR(RecordGoldenSet(cmd.model_dir, files, *manifest.golden_set));
    std::printf("golden set recorded again (test-time views %s, temperature %.3f)\n",
                std::string(TtaName(manifest.tta)).c_str(), manifest.temperature);
  }
  return absl::OkStatus();
}

absl::Status RunPrecisionCheck(const PrecisionCheckCommand& cmd) {
  if (cmd.model_dir.empty() || cmd.data_dir.empty() || cmd.split_file.empty()) {
    return absl::InvalidArgumentError("--model, --data and --split are required");
  }
  torch::set_num_threads(cmd.threads);
  SL_ASSIGN_OR_RETURN(const serving::ModelSpec spec, serving::ReadModelSpec(cmd.model_dir));
  SL_ASSIGN_OR_RETURN(const Partition part, LoadPartition(cmd.data_dir, cmd.metadata, cmd.skip_labels,
                                                          cmd.split_file, cmd.partition, spec.classes));
  const data::Split& split = part.split;
  const std::vector<data::Sample>& samples = part.samples;
  const CpuFeatures& cpu = CpuFeaturesForThisProcess();
  struct Run {
    std::string numerics;
    double seconds = 0;
    std::vector<eval::Probs> probs;
    double balanced_accuracy = 0, melanoma_recall = 0;
    std::vector<int> most_probable;  // Plain top-1 per image, whatever the model's rule.
    double most_probable_balanced_accuracy = 0;
  };
  std::vector<int> labels;
  std::vector<Run> runs;
  for (const PrecisionChoice choice : {PrecisionChoice::kFp32, PrecisionChoice::kBf16}) {
    SL_ASSIGN_OR_RETURN(models::Checkpoint checkpoint, models::LoadCheckpoint(cmd.model_dir));
    checkpoint.model->eval();
    SL_ASSIGN_OR_RETURN(const models::Numerics numerics,
                        models::PrepareForInference(*checkpoint.model, choice, torch::kCPU, spec.precision));
    const auto start = std::chrono::steady_clock::now();
    SL_ASSIGN_OR_RETURN(
        const train::Predictions pred,
        train::PredictSamples(*checkpoint.model, samples, serving::PreprocessOptionsFor(spec),
                              "cpu", 32, 2, spec.tta, numerics));
    Run run;
    run.numerics = numerics.Describe();
    run.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    run.probs = eval::Softmax(pred.logits, spec.temperature);
    SL_ASSIGN_OR_RETURN(const eval::Metrics m,
                        eval::ComputeMetrics(pred.labels, run.probs, spec.classes, spec.decision));
    run.balanced_accuracy = m.balanced_accuracy;
    run.melanoma_recall = m.melanoma.has_value() ? m.per_class[*m.melanoma].recall : 0.0;
    labels = pred.labels;
    std::printf("%s: %zu images in %.1f s, balanced accuracy %.4f\n", run.numerics.c_str(), samples.size(),
                run.seconds, run.balanced_accuracy);
    runs.push_back(std::move(run));
  }
  // Agreement on the answer a user gets (the model's decision rule; the most probable
  // class when it has none) and on the most probable class; the images whose answer
  // flips are listed so that a difference can be looked at, not only counted.
  int agree = 0, agree_top = 0;
  double worst = 0;
  nlohmann::json flips = nlohmann::json::array();
  for (size_t i = 0; i < labels.size(); ++i) {
    const auto& a = runs[0].probs[i];
    const auto& b = runs[1].probs[i];
    runs[0].most_probable.push_back(Decide(a, DecisionRule{}));
    runs[1].most_probable.push_back(Decide(b, DecisionRule{}));
    agree_top += runs[0].most_probable.back() == runs[1].most_probable.back();
    const int answer_a = Decide(a, spec.decision), answer_b = Decide(b, spec.decision);
    agree += answer_a == answer_b;
    for (size_t k = 0; k < a.size(); ++k) worst = std::max(worst, static_cast<double>(std::fabs(a[k] - b[k])));
    if (answer_a != answer_b) {
      const std::string& code_a = spec.classes.at(answer_a).code;
      const std::string& code_b = spec.classes.at(answer_b).code;
      flips.push_back({{"image", samples[i].image_id},
                       {"label", spec.classes.at(labels[i]).code},
                       {"fp32", code_a},
                       {"bf16", code_b},
                       {"fp32_probability", {{code_a, a[answer_a]}, {code_b, a[answer_b]}}},
                       {"bf16_probability", {{code_a, b[answer_a]}, {code_b, b[answer_b]}}}});
    }
  }
  const double agreement = static_cast<double>(agree) / labels.size();
  for (Run& r : runs) {
    r.most_probable_balanced_accuracy =
        BalancedAccuracy(labels, r.most_probable, static_cast<int>(spec.classes.size()));
  }
  const auto run_json = [](const Run& r) {
    return nlohmann::json{{"numerics", r.numerics},
                          {"seconds", r.seconds},
                          {"balanced_accuracy", r.balanced_accuracy},
                          {"melanoma_recall", r.melanoma_recall},
                          {"most_probable_balanced_accuracy", r.most_probable_balanced_accuracy}};
  };
  const double plain_difference =
      runs[1].most_probable_balanced_accuracy - runs[0].most_probable_balanced_accuracy;
  const nlohmann::json summary = {
      {"model", cmd.model_dir},
      {"architecture", spec.architecture},
      {"images", labels.size()},
      {"partition", cmd.partition},
      {"split_digest", split.Digest()},
      {"cpu", {{"model", cpu.model_name}, {"flags", cpu.FlagList()}}},
      {"fp32", run_json(runs[0])},
      {"bf16", run_json(runs[1])},
      {"top1_agreement", agreement},
      {"most_probable_agreement", static_cast<double>(agree_top) / labels.size()},
      {"answer", DescribeDecision(spec.decision, spec.classes)},
      {"flips", flips},
      {"balanced_accuracy_difference", runs[1].balanced_accuracy - runs[0].balanced_accuracy},
      {"most_probable_balanced_accuracy_difference", plain_difference},
      {"max_probability_difference", worst}};
  std::printf(
      "answer agreement %.2f%% (%d of %zu; most probable class %d of %zu), balanced accuracy bf16 "
      "- fp32 = %+.4f (most probable class %+.4f), largest |dP| %.4f, bf16 %.2fx the fp32 time\n",
      100 * agreement, agree, labels.size(), agree_top, labels.size(),
      runs[1].balanced_accuracy - runs[0].balanced_accuracy, plain_difference, worst,
      runs[0].seconds / runs[1].seconds);
  if (!cmd.out.empty()) SL_RETURN_IF_ERROR(WriteFileAtomically(cmd.out, summary.dump(2) + "\n"));
  return absl::OkStatus();
}

absl::Status RunPredict(const PredictCommand& cmd) {
  if (cmd.images.empty()) return absl::InvalidArgumentError("give one or more image files");
  std::string dir = cmd.model_dir.empty() ? DefaultModelDir() : cmd.model_dir;
  if (!cmd.registry.empty()) {
    SL_ASSIGN_OR_RETURN(dir, ResolveRegistryModel(cmd.registry, cmd.model_dir));
  }
  SL_ASSIGN_OR_RETURN(const PrecisionChoice precision, ParsePrecisionChoice(cmd.precision));
  SL_ASSIGN_OR_RETURN(auto predictor,
                      predict::Predictor::Create(
                          dir, {.device = cmd.device, .threads = cmd.threads, .precision = precision}));
  SL_LOG(INFO) << "predicting in " << predictor->numerics() << " (" << predictor->numerics_reason() << ")";
  if (!cmd.explain_out.empty()) {
    std::error_code ec;
    std::filesystem::create_directories(cmd.explain_out, ec);
    if (ec) {
      return absl::InvalidArgumentError(
          absl::StrCat("--explain_out ", cmd.explain_out, ": ", ec.message()));
    }
  }
  // The heatmap overlay of the predicted class, written as DIR/<stem>.explain.png
  // (<stem>_<n> when two images share a stem).
  std::map<std::string, int> stems;
  auto write_explanation = [&](const std::string& path,
                               int target) -> absl::StatusOr<std::pair<predict::Explanation, std::string>> {
    SL_ASSIGN_OR_RETURN(const cv::Mat rgb, DecodeImageFile(path, predictor->decode_limits()));
    SL_ASSIGN_OR_RETURN(predict::Explanation e, predictor->Explain(rgb, target));
    SL_ASSIGN_OR_RETURN(const cv::Mat overlay, predict::HeatmapOverlay(rgb, e));
    std::string stem = std::filesystem::path(path).stem().string();
    if (const int n = stems[stem]++; n > 0) stem = absl::StrCat(stem, "_", n);
    const std::string out = (std::filesystem::path(cmd.explain_out) / (stem + ".explain.png")).string();
    SL_RETURN_IF_ERROR(WriteImage(out, overlay));
    return std::make_pair(std::move(e), out);
  };
  nlohmann::json all = nlohmann::json::array();
  absl::Status first_error;
  for (const std::string& path : cmd.images) {
    auto p = predictor->PredictFile(path);
    if (!p.ok()) {
      std::fprintf(stderr, "%s: %s\n", path.c_str(), std::string(p.status().message()).c_str());
      if (first_error.ok()) first_error = p.status();
      if (cmd.json) all.push_back({{"image", path}, {"error", std::string(p.status().message())}});
      continue;
    }
    std::optional<std::pair<predict::Explanation, std::string>> explained;
    if (!cmd.explain_out.empty()) {
      auto e = write_explanation(path, p->class_index);
      if (!e.ok()) {
        std::fprintf(stderr, "%s: explanation: %s\n", path.c_str(),
                     std::string(e.status().message()).c_str());
        if (first_error.ok()) first_error = e.status();
      } else {
        explained = *std::move(e);
      }
    }
    if (cmd.json) {
      nlohmann::json j = p->ToJson();
      j["image"] = path;
      if (explained) {
        const predict::Explanation& e = explained->first;
        j["explanation"] = {{"method", e.method}, {"class", e.target_class},  {"width", e.width},
                            {"height", e.height}, {"heat", e.heat},           {"file", explained->second}};
      }
      j["model"] = {{"architecture", predictor->architecture()},
                    {"sha256", predictor->manifest().sha256},
                    {"precision", std::string(PrecisionName(predictor->precision()))}};
      all.push_back(j);
      continue;
    }
    std::printf("%s\n  %s (%s) %.1f%%  [%s]\n", path.c_str(), p->code.c_str(), p->name.c_str(),
                100 * p->confidence,
                std::string(MalignancyGroupName(p->classes.at(p->class_index).group)).c_str());
    if (p->out_of_distribution) std::printf("  !! %s (ood score %.2f)\n", kOodMessage, p->ood_score);
    if (p->refer) std::printf("  -> see a dermatologist: %s\n", p->refer_reason.c_str());
    std::string top = "  top-3:";
    for (const auto& [k, prob] : p->top) absl::StrAppend(&top, absl::StrFormat(" %s %.1f%%", p->classes.at(k).code, 100 * prob));
    std::printf("%s\n  malignancy risk %.1f%%\n", top.c_str(), 100 * p->malignancy_risk);
    if (explained) {
      std::printf("  explanation: %s %dx%d -> %s\n", explained->first.method.c_str(),
                  explained->first.width, explained->first.height, explained->second.c_str());
    }
  }
  if (cmd.json) std::printf("%s\n", all.dump(2).c_str());
  return first_error;
}

}  // namespace skinlesion::cli
