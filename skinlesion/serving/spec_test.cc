#include <cmath>
#include <string>

#include "gtest/gtest.h"
#include "skinlesion/common/hash.h"
#include "skinlesion/serving/batcher.h"
#include "skinlesion/serving/serving.h"
#include "skinlesion/serving/telemetry.h"
#include "skinlesion/serving/test_fakes.h"
#include "skinlesion/testing/testing.h"

namespace skinlesion::serving {
namespace {

using ::skinlesion::serving::testing::FakeModel;
using ::skinlesion::serving::testing::FakeProbabilities;
using ::skinlesion::serving::testing::PngBytes;
using ::skinlesion::testing::IsOk;
using ::skinlesion::testing::StatusIs;
using ::skinlesion::testing::TempDir;
using ::skinlesion::testing::WriteFile;
using ::testing::HasSubstr;
using json = nlohmann::json;

class SpecTest : public ::testing::Test {
 protected:
  absl::StatusOr<ModelSpec> Read(const json& manifest) {
    WriteFile(dir_.Join("manifest.json"), manifest.dump());
    return ReadModelSpec(dir_.path());
  }
  TempDir dir_;
};

TEST_F(SpecTest, AModelsOwnLabelsAndGrouping) {
  // No labels: HAM10000's 7 (manifests written before label sets existed).
  absl::StatusOr<ModelSpec> spec = Read({{"architecture", "resnet18"}});
  ASSERT_TRUE(spec.ok()) << spec.status();
  EXPECT_EQ(spec->classes, LabelSet::Ham10000());
  // A 3-class clinic model names its malignant class.
  spec = Read({{"architecture", "resnet18"},
               {"num_classes", 3},
               {"labels", {"benign", "melanoma", "other"}},
               {"malignant_classes", {"melanoma"}}});
  ASSERT_TRUE(spec.ok()) << spec.status();
  EXPECT_EQ(spec->classes.ToString(), "benign, melanoma, other");
  EXPECT_EQ(spec->classes.malignant_codes(), std::vector<std::string>{"melanoma"});
  // Without "malignant_classes" the known groups apply (ISIC 2019's scc is malignant).
  spec = Read({{"architecture", "resnet18"}, {"labels", {"mel", "nv", "scc"}}});
  ASSERT_TRUE(spec.ok()) << spec.status();
  EXPECT_EQ(spec->classes.malignant_codes(), (std::vector<std::string>{"mel", "scc"}));
  // The golden set has one probability per class of the model.
  spec = Read({{"architecture", "resnet18"},
               {"labels", {"a", "b", "c"}},
               {"golden_set", {{"items", {{{"file", "g.jpg"}, {"probabilities", {0.2, 0.3, 0.5}}}}}}}});
  ASSERT_TRUE(spec.ok()) << spec.status();
  EXPECT_EQ(spec->golden_set->items[0].probabilities.size(), 3u);
  EXPECT_THAT(Read({{"architecture", "resnet18"},
                    {"labels", {"a", "b", "c"}},
                    {"golden_set", {{"items", {{{"file", "g.jpg"}, {"probabilities", {0.2, 0.8}}}}}}}}),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("must be an array of 3 numbers")));
}

TEST_F(SpecTest, ReadsEveryField) {
  WriteFile(dir_.Join("model.safetensors"), "weights");
  const json m = {
      {"model", "ham"},
      {"version", 3},
      {"architecture", "resnet18"},
      {"image_size", 32},
      {"num_classes", 7},
      {"labels", {"akiec", "bcc", "bkl", "df", "mel", "nv", "vasc"}},
      {"preprocessing",
       {{"size", 32},
        {"resize", "resize"},
        {"mean", {0.5, 0.5, 0.5}},
        {"std", {0.25, 0.5, 1}},
        {"colour_constancy", {{"method", "shades_of_gray"}, {"p", 6}}}}},
      {"calibration", {{"temperature", 1.7}, {"fitted_on", "val"}}},
      {"refer",
       {{"min_confidence", 0.6},
        {"min_margin", 0.2},
        {"malignancy_risk_threshold", 0.18},
        {"target_sensitivity", 0.95}}},
      {"files", {{{"name", "model.safetensors"}, {"size", 7}, {"sha256", "abc"}}}},
      {"sha256", "def"},
      {"precision", "bf16"},
      {"golden_set",
       {{"tolerance", 0.01},
        {"tolerance_bf16", 0.03},
        {"items", {{{"file", "g.jpg"}, {"probabilities", {1, 0, 0, 0, 0, 0, 0}}}}}}}};
  auto spec = Read(m);
  ASSERT_THAT(spec, IsOk());
  EXPECT_EQ(spec->name, "ham");
  EXPECT_EQ(spec->version, 3);
  EXPECT_EQ(spec->architecture, "resnet18");
  EXPECT_EQ(spec->image_size, 32);
  EXPECT_EQ(spec->resize, "resize");
  EXPECT_EQ(spec->mean, (std::array<float, 3>{0.5f, 0.5f, 0.5f}));
  EXPECT_EQ(spec->std, (std::array<float, 3>{0.25f, 0.5f, 1.0f}));
  EXPECT_EQ(spec->shades_of_gray_p, 6);
  EXPECT_EQ(PreprocessOptionsFor(*spec).shades_of_gray_p, 6);
  EXPECT_DOUBLE_EQ(spec->temperature, 1.7);
  EXPECT_DOUBLE_EQ(spec->refer.min_confidence, 0.6);
  EXPECT_DOUBLE_EQ(spec->refer.min_margin, 0.2);
  ASSERT_TRUE(spec->refer.risk_threshold.has_value());
  EXPECT_DOUBLE_EQ(*spec->refer.risk_threshold, 0.18);
  EXPECT_DOUBLE_EQ(spec->refer.target_sensitivity, 0.95);
  EXPECT_EQ(spec->sha256, "abc");  // The registry's files entry wins.
  EXPECT_EQ(spec->directory, dir_.path());
  EXPECT_EQ(spec->manifest["calibration"]["fitted_on"], "val");
  ASSERT_TRUE(spec->golden_set.has_value());
  EXPECT_DOUBLE_EQ(spec->golden_set->tolerance, 0.01);
  EXPECT_DOUBLE_EQ(spec->golden_set->tolerance_bf16, 0.03);
  EXPECT_DOUBLE_EQ(spec->golden_set->ToleranceFor(Precision::kFp32), 0.01);
  EXPECT_DOUBLE_EQ(spec->golden_set->ToleranceFor(Precision::kBf16), 0.03);
  ASSERT_TRUE(spec->precision.has_value());
  EXPECT_EQ(*spec->precision, Precision::kBf16);
  ASSERT_EQ(spec->golden_set->items.size(), 1u);
  EXPECT_EQ(spec->golden_set->items[0].file, "g.jpg");
  EXPECT_EQ(spec->golden_set->items[0].probabilities[0], 1.0f);
}

TEST_F(SpecTest, DefaultsAndSha256Fallbacks) {
  auto spec = Read({{"architecture", "resnet18"}});
  ASSERT_THAT(spec, IsOk());
  EXPECT_EQ(spec->image_size, 224);
  EXPECT_EQ(spec->resize, "shorter_side_center_crop");
  EXPECT_EQ(spec->mean, (std::array<float, 3>{0.485f, 0.456f, 0.406f}));
  EXPECT_DOUBLE_EQ(spec->temperature, 1.0);
  EXPECT_DOUBLE_EQ(spec->refer.min_confidence, 0.5);
  EXPECT_DOUBLE_EQ(spec->refer.min_margin, 0.1);
  EXPECT_FALSE(spec->golden_set.has_value());
  EXPECT_FALSE(spec->precision.has_value());
  EXPECT_EQ(spec->sha256, "");  // No weights file, nothing to hash.
  EXPECT_EQ(spec->version, 0);

  WriteFile(dir_.Join("model.safetensors"), "weights");
  EXPECT_EQ(Read({{"architecture", "x"}})->sha256, Sha256Hex("weights"));
  EXPECT_EQ(Read({{"architecture", "x"}, {"sha256", "given"}})->sha256, "given");
  EXPECT_EQ(Read({{"architecture", "x"}, {"preprocessing", {{"size", 64}}}})->image_size, 64);
  EXPECT_THAT(Read({{"architecture", "x"}, {"labels", json::array()}}),
              IsOk());  // SaveCheckpoint's "none".
}

TEST_F(SpecTest, MalformedFieldsAreNamed) {
  const json base = {{"architecture", "resnet18"}};
  struct Case {
    json patch;
    std::string field;
  };
  const std::vector<Case> cases = {
      {{{"architecture", 3}}, "\"architecture\" must be a string"},
      {{{"image_size", "big"}}, "\"image_size\" must be an integer"},
      {{{"image_size", 0}}, "\"image_size\" must be in [1, 16384]"},
      {{{"num_classes", 8}}, "\"labels\" is required for a model of 8 classes"},
      {{{"num_classes", 1}}, "\"num_classes\" must be in [2, 1000]"},
      {{{"labels", {"a", "b"}}, {"num_classes", 7}}, "\"num_classes\" differs from the 2 labels"},
      {{{"labels", {"a", "A"}}}, "\"labels\" class code 'a' appears twice"},
      {{{"labels", {"a", 3}}}, "\"labels[1]\" must be a string"},
      {{{"labels", "mel,nv"}}, "\"labels\" must be an array"},
      {{{"malignant_classes", {"scc"}}}, "malignant class 'scc' is not one of the labels"},
      {{{"malignant_classes", "mel"}}, "\"malignant_classes\" must be an array"},
      {{{"version", 0}}, "\"version\" must be >= 1"},
      {{{"preprocessing", 1}}, "\"preprocessing\" must be an object"},
      {{{"preprocessing", {{"resize", "stretch"}}}}, "\"preprocessing.resize\""},
      {{{"preprocessing", {{"mean", {1, 2}}}}}, "\"preprocessing.mean\" must be an array of 3"},
      {{{"preprocessing", {{"mean", {1, "x", 2}}}}}, "\"preprocessing.mean[1]\" must be a number"},
      {{{"preprocessing", {{"std", {1, 0, 1}}}}}, "\"preprocessing.std\" must be > 0"},
      {{{"preprocessing", {{"colour_constancy", {{"method", "retinex"}, {"p", 6}}}}}},
       "\"preprocessing.colour_constancy.method\" must be \"shades_of_gray\""},
      {{{"preprocessing", {{"colour_constancy", {{"method", "shades_of_gray"}, {"p", 0}}}}}},
       "\"preprocessing.colour_constancy.p\" must be in [1, 16]"},
      {{{"image_size", 32}, {"preprocessing", {{"size", 64}}}},
       "\"preprocessing.size\" differs from image_size 32"},
      {{{"calibration", {{"temperature", 0}}}}, "\"calibration.temperature\" must be > 0"},
      {{{"calibration", {{"temperature", "hot"}}}}, "\"calibration.temperature\" must be a number"},
      {{{"refer", {{"min_confidence", 2}}}}, "\"refer.min_confidence\" must be in [0, 1]"},
      {{{"refer", {{"min_margin", -0.1}}}}, "\"refer.min_margin\" must be in [0, 1]"},
      {{{"refer", {{"malignancy_risk_threshold", 1.5}}}},
       "\"refer.malignancy_risk_threshold\" must be in [0, 1]"},
      {{{"refer", {{"target_sensitivity", 0}}}}, "\"refer.target_sensitivity\" must be in (0, 1]"},
      {{{"files", "all"}}, "\"files\" must be an array"},
      {{{"files", {{{"name", "model.safetensors"}}}}}, "\"files[0].sha256\" must be a string"},
      {{{"sha256", 5}}, "\"sha256\" must be a string"},
      {{{"golden_set", {{"items", 1}}}}, "\"golden_set.items\" must be an array"},
      {{{"golden_set", {{"tolerance", -1}, {"items", json::array()}}}},
       "\"golden_set.tolerance\" must be >= 0"},
      {{{"golden_set", {{"tolerance_bf16", "wide"}, {"items", json::array()}}}},
       "\"golden_set.tolerance_bf16\" must be a number"},
      {{{"precision", "fp16"}}, "\"precision\" must be \"fp32\" or \"bf16\""},
      {{{"precision", 16}}, "\"precision\" must be a string"},
      {{{"golden_set",
         {{"items", {{{"file", "../x.jpg"}, {"probabilities", {1, 0, 0, 0, 0, 0, 0}}}}}}}},
       "\"golden_set.items[0].file\" must be a file name"},
      {{{"golden_set", {{"items", {{{"file", "a.jpg"}, {"probabilities", {1, 0}}}}}}}},
       "\"golden_set.items[0].probabilities\" must be an array of 7"},
      {{{"ood", {{"method", "knn"}}}}, "\"ood.method\" must be \"mahalanobis\" or \"energy\""},
      {{{"ood", {{"threshold", "high"}}}}, "\"ood.threshold\" must be a number"},
      {{{"ood", {{"reject_rate", 1}}}}, "\"ood.reject_rate\" must be in [0, 1)"},
      {{{"ood", {{"method", "mahalanobis"}, {"threshold", 400}}}}, "\"ood.features\" must be an object"},
      {{{"ood", {{"method", "mahalanobis"}, {"threshold", 400}, {"features", {{"file", "../g.safetensors"}}}}}},
       "\"ood.features.file\" must be a file name in the model directory"},
  };
  for (const Case& c : cases) {
    json m = base;
    m.update(c.patch);
    EXPECT_THAT(Read(m), StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr(c.field)))
        << c.patch.dump();
  }
  EXPECT_THAT(Read({{"image_size", 32}}),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("missing \"architecture\"")));
}

// The not-a-lesion check: the feature Gaussian's policy, and manifests written before
// it (energy, "energy_threshold") read as they were.
TEST_F(SpecTest, ReadsBothOutOfDistributionMethods) {
  auto spec = Read({{"architecture", "resnet18"},
                    {"ood",
                     {{"method", "mahalanobis"},
                      {"threshold", 492.5},
                      {"reject_rate", 0.02},
                      {"features", {{"file", "ood_features.safetensors"}, {"sha256", "ab12"}}}}}});
  ASSERT_THAT(spec, IsOk());
  EXPECT_EQ(spec->ood.method, OodMethod::kMahalanobis);
  EXPECT_EQ(spec->ood.threshold, 492.5);
  EXPECT_DOUBLE_EQ(spec->ood.reject_rate, 0.02);
  EXPECT_EQ(spec->ood.features_file, "ood_features.safetensors");
  EXPECT_EQ(spec->ood.features_sha256, "ab12");
  spec = Read({{"architecture", "resnet18"}, {"ood", {{"method", "energy"}, {"energy_threshold", -3.5}}}});
  ASSERT_THAT(spec, IsOk());
  EXPECT_EQ(spec->ood.method, OodMethod::kEnergy);
  EXPECT_EQ(spec->ood.threshold, -3.5);
  spec = Read({{"architecture", "resnet18"}});
  ASSERT_THAT(spec, IsOk());
  EXPECT_FALSE(spec->ood.threshold.has_value());
}

TEST_F(SpecTest, UnreadableManifests) {
  EXPECT_THAT(ReadModelSpec(dir_.Join("nope")),
              StatusIs(absl::StatusCode::kNotFound, ::testing::_));
  WriteFile(dir_.Join("manifest.json"), "{not json");
  EXPECT_THAT(ReadModelSpec(dir_.path()),
              StatusIs(absl::StatusCode::kDataLoss, HasSubstr("not valid JSON")));
  WriteFile(dir_.Join("manifest.json"), "[1, 2]");
  EXPECT_THAT(ReadModelSpec(dir_.path()),
              StatusIs(absl::StatusCode::kDataLoss, HasSubstr("not a JSON object")));
}

class GoldenTest : public ::testing::Test {
 protected:
  void SetUp() override {
    WriteFile(dir_.Join("g0.png"), PngBytes());
    WriteFile(dir_.Join("g1.png"), PngBytes(9, 30));
    auto instance = fake_.Loader()(spec_for_loader_);
    ASSERT_THAT(instance, IsOk());
    instance_ = *instance;
  }
  absl::StatusOr<ModelSpec> Spec(const json& golden) {
    json m = {{"architecture", "fake"}, {"image_size", 8}, {"calibration", {{"temperature", 2.0}}}};
    if (!golden.is_null()) m["golden_set"] = golden;
    WriteFile(dir_.Join("manifest.json"), m.dump());
    return ReadModelSpec(dir_.path());
  }
  TempDir dir_;
  FakeModel fake_;
  ModelSpec spec_for_loader_ = [] {
    ModelSpec s;
    s.version = 3;  // Logit 0 = 3.
    s.manifest = json::object();
    return s;
  }();
  std::shared_ptr<ModelInstance> instance_;
};

TEST_F(GoldenTest, MatchesWithinTolerance) {
  auto p = FakeProbabilities(3.0f, 2.0);
  json items = {{{"file", "g0.png"}, {"probabilities", p}},
                {{"file", "g1.png"}, {"probabilities", p}}};
  auto spec = Spec({{"tolerance", 1e-5}, {"items", items}});
  ASSERT_THAT(spec, IsOk());
  EXPECT_THAT(CheckGoldenSet(*spec, *instance_), IsOk());
  EXPECT_EQ(fake_.batch_sizes(), (std::vector<int>{1, 1}));

  // Off by 0.01 in one class: outside 1e-3, inside 0.02.
  p[4] += 0.01f;
  items[1]["probabilities"] = p;
  spec = Spec({{"tolerance", 1e-3}, {"items", items}});
  EXPECT_THAT(
      CheckGoldenSet(*spec, *instance_),
      StatusIs(absl::StatusCode::kFailedPrecondition,
               ::testing::AllOf(HasSubstr("golden set mismatch on g1.png"), HasSubstr("P(mel)"))));
  spec = Spec({{"tolerance", 0.02}, {"items", items}});
  EXPECT_THAT(CheckGoldenSet(*spec, *instance_), IsOk());
}

TEST_F(GoldenTest, AbsentSetPassesAndBadFilesFail) {
  auto spec = Spec(json());
  ASSERT_THAT(spec, IsOk());
  EXPECT_THAT(CheckGoldenSet(*spec, *instance_), IsOk());
  EXPECT_TRUE(fake_.batch_sizes().empty());

  const auto p = FakeProbabilities(3.0f, 2.0);
  spec = Spec({{"items", {{{"file", "missing.png"}, {"probabilities", p}}}}});
  EXPECT_THAT(CheckGoldenSet(*spec, *instance_),
              StatusIs(absl::StatusCode::kNotFound, HasSubstr("missing.png")));
  WriteFile(dir_.Join("junk.png"), "junk");
  spec = Spec({{"items", {{{"file", "junk.png"}, {"probabilities", p}}}}});
  EXPECT_THAT(CheckGoldenSet(*spec, *instance_),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("golden file")));
}

TEST(FillPredictionTest, CalibrationRiskAndReferRule) {
  ModelSpec spec;
  spec.temperature = 2.0;
  InferResult r;
  const float logits[kHam10000NumClasses] = {0, 0, 0, 0, 8, 0, 0};  // mel
  FillPrediction(spec, logits, std::nullopt, r);
  double sum = 0;
  for (float p : r.probabilities) sum += p;
  EXPECT_NEAR(sum, 1.0, 1e-6);
  const double e = std::exp(4.0);
  EXPECT_NEAR(r.probabilities[4], e / (e + 6), 1e-6);
  EXPECT_EQ(r.top_class, 4);
  EXPECT_FLOAT_EQ(r.confidence, r.probabilities[4]);
  EXPECT_NEAR(r.malignancy_risk, r.probabilities[0] + r.probabilities[1] + r.probabilities[4],
              1e-6);
  EXPECT_FALSE(r.refer);
  EXPECT_EQ(r.refer_reason, "");

  // Two classes close together: refer for the margin.
  const float close[kHam10000NumClasses] = {0, 0, 0, 0, 5, 4.9f, 0};
  spec.temperature = 1.0;
  spec.refer.min_confidence = 0.3;
  FillPrediction(spec, close, std::nullopt, r);
  EXPECT_TRUE(r.refer);
  EXPECT_THAT(r.refer_reason, HasSubstr("mel and nv are too close"));

  // Low confidence.
  const float flat[kHam10000NumClasses] = {0, 0, 0, 0, 0.1f, 0, 0};
  FillPrediction(spec, flat, std::nullopt, r);
  EXPECT_TRUE(r.refer);
  EXPECT_EQ(r.refer_rule, ReferRule::kLowConfidence);
  EXPECT_THAT(r.refer_reason, HasSubstr("top probability"));

  // The served rule is the shared one (referral.h): mel 0.25 next to a confident nv
  // is referred for its risk once the manifest has a fitted threshold.
  const float risky[kHam10000NumClasses] = {std::log(0.01f), std::log(0.01f), std::log(0.045f),
                                    std::log(0.005f), std::log(0.25f), std::log(0.63f),
                                    std::log(0.05f)};
  FillPrediction(spec, risky, std::nullopt, r);
  EXPECT_FALSE(r.refer) << r.refer_reason;
  spec.refer.risk_threshold = 0.18;
  FillPrediction(spec, risky, std::nullopt, r);
  EXPECT_TRUE(r.refer);
  EXPECT_EQ(r.refer_rule, ReferRule::kMalignancyRisk);
  EXPECT_EQ(r.refer_reason, "malignancy risk 0.27 >= 0.18 (90% sensitivity point)");
}

// The verdict follows the version's method: the instance's feature score for
// "mahalanobis" (no score: no check), the logits' energy for "energy".
TEST(FillPredictionTest, OutOfDistributionFollowsTheMethod) {
  ModelSpec spec;
  const float logits[kHam10000NumClasses] = {0, 0, 0, 0, 8, 0, 0};
  InferResult r;
  spec.ood = {.method = OodMethod::kMahalanobis, .threshold = 500.0};
  FillPrediction(spec, logits, 900.0, r);
  EXPECT_TRUE(r.ood_checked);
  EXPECT_TRUE(r.out_of_distribution);
  EXPECT_DOUBLE_EQ(r.ood_score, 900.0);
  FillPrediction(spec, logits, 100.0, r);
  EXPECT_TRUE(r.ood_checked);
  EXPECT_FALSE(r.out_of_distribution);
  FillPrediction(spec, logits, std::nullopt, r);
  EXPECT_FALSE(r.ood_checked);
  EXPECT_FALSE(r.out_of_distribution);
  // Energy ignores any feature score: -logsumexp = about -8.0 here.
  spec.ood = {.method = OodMethod::kEnergy, .threshold = -9.0};
  FillPrediction(spec, logits, 0.0, r);
  EXPECT_NEAR(r.ood_score, EnergyScore(logits, kHam10000NumClasses), 1e-9);
  EXPECT_TRUE(r.out_of_distribution);
  spec.ood.threshold = -7.0;
  FillPrediction(spec, logits, 1e9, r);
  EXPECT_FALSE(r.out_of_distribution);
}

TEST(TelemetryTest, OutcomeLabels) {
  EXPECT_STREQ(OutcomeLabel(absl::StatusCode::kOk), "ok");
  EXPECT_STREQ(OutcomeLabel(absl::StatusCode::kInvalidArgument), "invalid_argument");
  EXPECT_STREQ(OutcomeLabel(absl::StatusCode::kNotFound), "not_found");
  EXPECT_STREQ(OutcomeLabel(absl::StatusCode::kResourceExhausted), "resource_exhausted");
  EXPECT_STREQ(OutcomeLabel(absl::StatusCode::kDeadlineExceeded), "deadline_exceeded");
  EXPECT_STREQ(OutcomeLabel(absl::StatusCode::kUnavailable), "unavailable");
  EXPECT_STREQ(OutcomeLabel(absl::StatusCode::kDataLoss), "internal");
  EXPECT_STREQ(OutcomeLabel(absl::StatusCode::kInternal), "internal");
}

TEST(TelemetryTest, VersionInfoKeepsOneSeriesPerModel) {
  prometheus::Registry registry;
  ServingMetrics metrics(registry);
  metrics.SetServingVersion("a", 1, "s1");
  metrics.SetServingVersion("b", 4, "s4");
  metrics.SetServingVersion("a", 2, "s2", "bf16");
  using testing::MetricValue;
  EXPECT_EQ(testing::SeriesCount(registry, "skinlesion_model_version_info"), 2);
  EXPECT_EQ(MetricValue(registry, "skinlesion_model_version_info",
                        {{"model", "a"}, {"version", "2"}, {"sha256", "s2"}, {"precision", "bf16"}}),
            1);
  EXPECT_EQ(MetricValue(registry, "skinlesion_model_version_info",
                        {{"model", "b"}, {"version", "4"}, {"sha256", "s4"}, {"precision", "fp32"}}),
            1);
  EXPECT_EQ(MetricValue(registry, "skinlesion_model_version_info",
                        {{"model", "a"}, {"version", "1"}, {"sha256", "s1"}}),
            -1);
  metrics.RecordLoad("a", false, 1.0);
  EXPECT_EQ(MetricValue(registry, "skinlesion_model_reloads_total",
                        {{"model", "a"}, {"result", "failure"}}),
            1);
  EXPECT_EQ(MetricValue(registry, "skinlesion_model_load_seconds", {{"model", "a"}}),
            -1);  // Failures not timed.
}

}  // namespace
}  // namespace skinlesion::serving
