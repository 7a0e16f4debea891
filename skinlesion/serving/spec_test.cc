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

// The manifest's own fields are tested in skinlesion/manifest/manifest_test.cc: here,
// what ReadModelSpec adds (the directory, the serving path's preprocessing check) and
// that the typed fields come through.
TEST_F(SpecTest, ReadsTheManifestAndKnowsWhereTheFilesAre) {
  absl::StatusOr<ModelSpec> spec = Read({{"architecture", "resnet18"},
                                         {"labels", {"benign", "melanoma", "other"}},
                                         {"malignant_classes", {"melanoma"}},
                                         {"preprocessing", {{"size", 32}, {"colour_constancy", {{"method", "shades_of_gray"}, {"p", 6}}}}},
                                         {"calibration", {{"temperature", 1.7}, {"fitted_on", "val"}}}});
  ASSERT_THAT(spec, IsOk());
  EXPECT_EQ(spec->directory, dir_.path());
  EXPECT_EQ(spec->classes.ToString(), "benign, melanoma, other");
  EXPECT_EQ(spec->image_size, 32);
  EXPECT_EQ(PreprocessOptionsFor(*spec).shades_of_gray_p, 6);
  EXPECT_EQ(PreprocessOptionsFor(*spec).size, 32);
  EXPECT_DOUBLE_EQ(spec->temperature, 1.7);
  EXPECT_EQ(spec->document["calibration"]["fitted_on"], "val");
  EXPECT_THAT(Read({{"architecture", 3}}),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("\"architecture\" must be a string")));
  EXPECT_THAT(ReadModelSpec(dir_.Join("nope")), StatusIs(absl::StatusCode::kNotFound, ::testing::_));
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
    s.document = json::object();
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

  // The served class is the manifest's decision rule's (decision.h): prior-adjusted,
  // the same output names mel (0.25 against nv's 0.63 and a 6x rarer class).
  EXPECT_EQ(r.top_class, 5);
  spec.decision = {.tau = 0.7, .prior = {0.03, 0.05, 0.11, 0.01, 0.11, 0.67, 0.02}};
  FillPrediction(spec, risky, std::nullopt, r);
  EXPECT_EQ(r.top_class, 4);
  EXPECT_NEAR(r.confidence, 0.25f, 1e-6);
  EXPECT_NEAR(r.probabilities[5], 0.63f, 1e-6);  // The probabilities are not changed.
}

// The verdict follows the version's method: the instance's feature score for
// "mahalanobis" (no score: no check), the logits' energy for "energy" (under test-time
// views the instance's energy of the image's own logits).
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
  // Under test-time views the logits are a log-probability: the instance's score of the
  // image's own logits is the energy (none given: no check).
  spec.tta = Tta::kFlips;
  FillPrediction(spec, logits, -6.5, r);
  EXPECT_DOUBLE_EQ(r.ood_score, -6.5);
  EXPECT_TRUE(r.ood_checked);
  EXPECT_TRUE(r.out_of_distribution);
  FillPrediction(spec, logits, std::nullopt, r);
  EXPECT_FALSE(r.ood_checked);
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
