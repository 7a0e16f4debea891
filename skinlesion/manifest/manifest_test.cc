#include "skinlesion/manifest/manifest.h"

#include <array>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "skinlesion/common/hash.h"
#include "skinlesion/testing/testing.h"

namespace skinlesion {
namespace {

using ::skinlesion::testing::IsOk;
using ::skinlesion::testing::StatusIs;
using ::skinlesion::testing::TempDir;
using ::skinlesion::testing::WriteFile;
using ::testing::HasSubstr;
using json = nlohmann::json;

class ManifestTest : public ::testing::Test {
 protected:
  absl::StatusOr<ModelManifest> Read(const json& manifest) {
    WriteFile(dir_.Join("manifest.json"), manifest.dump());
    return ReadModelManifest(dir_.path());
  }
  TempDir dir_;
};

TEST_F(ManifestTest, AModelsOwnLabelsAndGrouping) {
  // No labels: HAM10000's 7 (manifests written before label sets existed).
  absl::StatusOr<ModelManifest> manifest = Read({{"architecture", "resnet18"}});
  ASSERT_TRUE(manifest.ok()) << manifest.status();
  EXPECT_EQ(manifest->classes, LabelSet::Ham10000());
  // ... nor a confidence for their sensitivity target (the point estimate).
  EXPECT_EQ(manifest->refer.sensitivity_confidence, 0.0);
  // A 3-class clinic model names its malignant class.
  manifest = Read({{"architecture", "resnet18"},
               {"num_classes", 3},
               {"labels", {"benign", "melanoma", "other"}},
               {"malignant_classes", {"melanoma"}}});
  ASSERT_TRUE(manifest.ok()) << manifest.status();
  EXPECT_EQ(manifest->classes.ToString(), "benign, melanoma, other");
  EXPECT_EQ(manifest->classes.malignant_codes(), std::vector<std::string>{"melanoma"});
  // Without "malignant_classes" the known groups apply (ISIC 2019's scc is malignant).
  manifest = Read({{"architecture", "resnet18"}, {"labels", {"mel", "nv", "scc"}}});
  ASSERT_TRUE(manifest.ok()) << manifest.status();
  EXPECT_EQ(manifest->classes.malignant_codes(), (std::vector<std::string>{"mel", "scc"}));
  // The golden set has one probability per class of the model.
  manifest = Read({{"architecture", "resnet18"},
               {"labels", {"a", "b", "c"}},
               {"golden_set", {{"items", {{{"file", "g.jpg"}, {"probabilities", {0.2, 0.3, 0.5}}}}}}}});
  ASSERT_TRUE(manifest.ok()) << manifest.status();
  EXPECT_EQ(manifest->golden_set->items[0].probabilities.size(), 3u);
  EXPECT_THAT(Read({{"architecture", "resnet18"},
                    {"labels", {"a", "b", "c"}},
                    {"golden_set", {{"items", {{{"file", "g.jpg"}, {"probabilities", {0.2, 0.8}}}}}}}}),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("must be an array of 3 numbers")));
}

TEST_F(ManifestTest, ReadsEveryField) {
  WriteFile(dir_.Join("model.safetensors"), "weights");
  const json m = {{"model", "ham"},
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
                    {"target_sensitivity", 0.95},
                    {"sensitivity_confidence", 0.9}}},
                  {"files", {{{"name", "model.safetensors"}, {"size", 7}, {"sha256", "abc"}}}},
                  {"sha256", "def"},
                  {"precision", "bf16"},
                  {"tta", "dihedral"},
                  {"golden_set",
                   {{"tolerance", 0.01},
                    {"tolerance_bf16", 0.03},
                    {"items", {{{"file", "g.jpg"}, {"probabilities", {1, 0, 0, 0, 0, 0, 0}}}}}}}};
  auto manifest = Read(m);
  ASSERT_THAT(manifest, IsOk());
  EXPECT_EQ(manifest->name, "ham");
  EXPECT_EQ(manifest->version, 3);
  EXPECT_EQ(manifest->architecture, "resnet18");
  EXPECT_EQ(manifest->image_size, 32);
  EXPECT_EQ(manifest->resize, "resize");
  EXPECT_EQ(manifest->mean, (std::array<float, 3>{0.5f, 0.5f, 0.5f}));
  EXPECT_EQ(manifest->std, (std::array<float, 3>{0.25f, 0.5f, 1.0f}));
  EXPECT_EQ(manifest->shades_of_gray_p, 6);
  EXPECT_DOUBLE_EQ(manifest->temperature, 1.7);
  EXPECT_DOUBLE_EQ(manifest->refer.min_confidence, 0.6);
  EXPECT_DOUBLE_EQ(manifest->refer.min_margin, 0.2);
  ASSERT_TRUE(manifest->refer.risk_threshold.has_value());
  EXPECT_DOUBLE_EQ(*manifest->refer.risk_threshold, 0.18);
  EXPECT_DOUBLE_EQ(manifest->refer.target_sensitivity, 0.95);
  EXPECT_DOUBLE_EQ(manifest->refer.sensitivity_confidence, 0.9);
  EXPECT_EQ(manifest->sha256, "abc");  // The registry's files entry wins.
  EXPECT_EQ(manifest->document["calibration"]["fitted_on"], "val");
  ASSERT_TRUE(manifest->golden_set.has_value());
  EXPECT_DOUBLE_EQ(manifest->golden_set->tolerance, 0.01);
  EXPECT_DOUBLE_EQ(manifest->golden_set->tolerance_bf16, 0.03);
  EXPECT_DOUBLE_EQ(manifest->golden_set->ToleranceFor(Precision::kFp32), 0.01);
  EXPECT_DOUBLE_EQ(manifest->golden_set->ToleranceFor(Precision::kBf16), 0.03);
  ASSERT_TRUE(manifest->precision.has_value());
  EXPECT_EQ(*manifest->precision, Precision::kBf16);
  EXPECT_EQ(manifest->tta, Tta::kDihedral);
  ASSERT_EQ(manifest->golden_set->items.size(), 1u);
  EXPECT_EQ(manifest->golden_set->items[0].file, "g.jpg");
  EXPECT_EQ(manifest->golden_set->items[0].probabilities[0], 1.0f);
}

TEST_F(ManifestTest, DefaultsAndSha256Fallbacks) {
  auto manifest = Read({{"architecture", "resnet18"}});
  ASSERT_THAT(manifest, IsOk());
  EXPECT_EQ(manifest->image_size, 224);
  EXPECT_EQ(manifest->resize, "shorter_side_center_crop");
  EXPECT_EQ(manifest->mean, (std::array<float, 3>{0.485f, 0.456f, 0.406f}));
  EXPECT_DOUBLE_EQ(manifest->temperature, 1.0);
  EXPECT_DOUBLE_EQ(manifest->refer.min_confidence, 0.5);
  EXPECT_DOUBLE_EQ(manifest->refer.min_margin, 0.1);
  EXPECT_FALSE(manifest->golden_set.has_value());
  EXPECT_FALSE(manifest->precision.has_value());
  EXPECT_EQ(manifest->tta, Tta::kNone);
  EXPECT_EQ(manifest->sha256, "");  // No weights file, nothing to hash.
  EXPECT_EQ(manifest->version, 0);

  WriteFile(dir_.Join("model.safetensors"), "weights");
  EXPECT_EQ(Read({{"architecture", "x"}})->sha256, Sha256Hex("weights"));
  EXPECT_EQ(Read({{"architecture", "x"}, {"sha256", "given"}})->sha256, "given");
  EXPECT_EQ(Read({{"architecture", "x"}, {"preprocessing", {{"size", 64}}}})->image_size, 64);
  EXPECT_THAT(Read({{"architecture", "x"}, {"labels", json::array()}}),
              IsOk());  // SaveCheckpoint's "none".
}

TEST_F(ManifestTest, MalformedFieldsAreNamed) {
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
      {{{"vit", 1}}, "\"vit\" must be an object"},
      {{{"decision", 1}}, "\"decision\" must be an object"},
      {{{"decision", {{"rule", "bayes"}}}},
       "\"decision.rule\" must be \"plain\" or \"prior_adjusted\""},
      {{{"decision", {{"prior", {0.5, 0.5}}}}}, "\"decision.tau\" is required"},
      {{{"decision", {{"tau", 5}}}}, "\"decision.tau\" must be in [0, 4]"},
      {{{"decision", {{"tau", 0.3}}}}, "\"decision.prior\" must be an array of 7 class shares"},
      {{{"decision", {{"tau", 0.3}, {"prior", {0.1, 0.1, 0.1, 0.1, 0.1, 0.4, 0}}}}},
       "\"decision.prior[6]\" must be in (0, 1]"},
      {{{"decision", {{"tau", 0}, {"bias", {0, 0, 0, 0, 0.5, 0}}}}},
       "\"decision.bias\" must be an array of 7 numbers"},
      {{{"decision", {{"tau", 0}, {"bias", {0, 0, 0, 0, 5, 0, 0}}}}},
       "\"decision.bias[4]\" must be in [-4, 4]"},
      {{{"decision", {{"rule", "plain"}, {"bias", {0, 0, 0, 0, 0.5, 0, 0}}}}},
       "\"decision.bias\" needs rule \"prior_adjusted\""},
      {{{"vit", {{"patch_size", 8}}}}, "\"vit.hidden_dim\" is required"},
      {{{"vit",
         {{"patch_size", 8},
          {"hidden_dim", 16},
          {"num_layers", 1},
          {"num_heads", 0},
          {"mlp_dim", 32}}}},
       "\"vit.num_heads\" must be in [1, 65536]"},
      {{{"vit",
         {{"patch_size", 8},
          {"hidden_dim", 1e9},
          {"num_layers", 1},
          {"num_heads", 2},
          {"mlp_dim", 32}}}},
       "\"vit.hidden_dim\" must be an integer"},
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
      {{{"refer", {{"sensitivity_confidence", 1}}}},
       "\"refer.sensitivity_confidence\" must be in [0, 1)"},
      {{{"refer", {{"sensitivity_confidence", -0.5}}}},
       "\"refer.sensitivity_confidence\" must be in [0, 1)"},
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
      {{{"tta", "rot90"}}, "\"tta\" must be \"none\", \"flips\" or \"dihedral\""},
      {{{"tta", true}}, "\"tta\" must be a string"},
      {{{"golden_set",
         {{"items", {{{"file", "../x.jpg"}, {"probabilities", {1, 0, 0, 0, 0, 0, 0}}}}}}}},
       "\"golden_set.items[0].file\" must be a file name"},
      {{{"golden_set", {{"items", {{{"file", "a.jpg"}, {"probabilities", {1, 0}}}}}}}},
       "\"golden_set.items[0].probabilities\" must be an array of 7"},
      {{{"ood", {{"method", "knn"}}}}, "\"ood.method\" must be \"mahalanobis\" or \"energy\""},
      {{{"ood", {{"threshold", "high"}}}}, "\"ood.threshold\" must be a number"},
      {{{"ood", {{"reject_rate", 1}}}}, "\"ood.reject_rate\" must be in [0, 1)"},
      {{{"ood", {{"method", "mahalanobis"}, {"threshold", 400}}}},
       "\"ood.features\" must be an object"},
      {{{"ood",
         {{"method", "mahalanobis"},
          {"threshold", 400},
          {"features", {{"file", "../g.safetensors"}}}}}},
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
TEST_F(ManifestTest, ReadsBothOutOfDistributionMethods) {
  auto manifest = Read({{"architecture", "resnet18"},
                    {"ood",
                     {{"method", "mahalanobis"},
                      {"threshold", 492.5},
                      {"reject_rate", 0.02},
                      {"features", {{"file", "ood_features.safetensors"}, {"sha256", "ab12"}}}}}});
  ASSERT_THAT(manifest, IsOk());
  EXPECT_EQ(manifest->ood.method, OodMethod::kMahalanobis);
  EXPECT_EQ(manifest->ood.threshold, 492.5);
  EXPECT_DOUBLE_EQ(manifest->ood.reject_rate, 0.02);
  EXPECT_EQ(manifest->ood.features_file, "ood_features.safetensors");
  EXPECT_EQ(manifest->ood.features_sha256, "ab12");
  manifest = Read({{"architecture", "resnet18"}, {"ood", {{"method", "energy"}, {"energy_threshold", -3.5}}}});
  ASSERT_THAT(manifest, IsOk());
  EXPECT_EQ(manifest->ood.method, OodMethod::kEnergy);
  EXPECT_EQ(manifest->ood.threshold, -3.5);
  manifest = Read({{"architecture", "resnet18"}});
  ASSERT_THAT(manifest, IsOk());
  EXPECT_FALSE(manifest->ood.threshold.has_value());
}

TEST_F(ManifestTest, UnreadableManifests) {
  EXPECT_THAT(ReadModelManifest(dir_.Join("nope")),
              StatusIs(absl::StatusCode::kNotFound, ::testing::_));
  WriteFile(dir_.Join("manifest.json"), "{not json");
  EXPECT_THAT(ReadModelManifest(dir_.path()),
              StatusIs(absl::StatusCode::kDataLoss, HasSubstr("not valid JSON")));
  WriteFile(dir_.Join("manifest.json"), "[1, 2]");
  EXPECT_THAT(ReadModelManifest(dir_.path()),
              StatusIs(absl::StatusCode::kDataLoss, HasSubstr("not a JSON object")));
}


// A manifest written by a newer layout is refused, not misread.
TEST_F(ManifestTest, FormatIsChecked) {
  EXPECT_THAT(Read({{"architecture", "resnet18"}, {"format", kManifestFormat}}), IsOk());
  EXPECT_THAT(Read({{"architecture", "resnet18"}, {"format", "skinlesion.checkpoint.v2"}}),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("\"format\" must be \"skinlesion.checkpoint.v1\"")));
  EXPECT_THAT(Read({{"architecture", "resnet18"}, {"format", 1}}),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("\"format\" must be a string")));
}

// "decision" (the prior-adjusted decision rule) is typed; provenance beside it is kept.
TEST_F(ManifestTest, DecisionRule) {
  auto plain = Read({{"architecture", "resnet18"}});
  ASSERT_THAT(plain, IsOk());
  EXPECT_FALSE(plain->decision.Adjusted());
  EXPECT_FALSE(plain->ToJson().contains("decision"));
  const std::vector<double> prior = {0.03, 0.05, 0.11, 0.01, 0.11, 0.67, 0.02};
  auto adjusted =
      Read({{"architecture", "resnet18"},
            {"decision",
             {{"rule", "prior_adjusted"}, {"tau", 0.35}, {"prior", prior}, {"fitted_on", "val"}}}});
  ASSERT_THAT(adjusted, IsOk());
  EXPECT_TRUE(adjusted->decision.Adjusted());
  EXPECT_DOUBLE_EQ(adjusted->decision.tau, 0.35);
  EXPECT_EQ(adjusted->decision.prior, prior);
  const json written = adjusted->ToJson();
  EXPECT_EQ(written["decision"]["fitted_on"], "val");
  auto again = ModelManifest::Parse(written, "again");
  ASSERT_THAT(again, IsOk());
  EXPECT_EQ(again->decision, adjusted->decision);
  // A fitted tau of 0 is written as the plain rule and stays plain, with its prior.
  adjusted->decision.tau = 0;
  auto zero = ModelManifest::Parse(adjusted->ToJson(), "zero");
  ASSERT_THAT(zero, IsOk());
  EXPECT_EQ(adjusted->ToJson()["decision"]["rule"], "plain");
  EXPECT_FALSE(zero->decision.Adjusted());
  EXPECT_EQ(zero->ToJson(), adjusted->ToJson());
  // A class bias (the melanoma recall floor) is read, written and read back, with or
  // without tau; all-zero biases are no bias.
  adjusted->decision.bias = {0, 0, 0, 0, 0.45, 0, 0};
  const json biased = adjusted->ToJson();
  EXPECT_EQ(biased["decision"]["rule"], "prior_adjusted");
  EXPECT_EQ(biased["decision"]["bias"].size(), 7u);
  auto with_bias = ModelManifest::Parse(biased, "bias");
  ASSERT_THAT(with_bias, IsOk());
  EXPECT_EQ(with_bias->decision, adjusted->decision);
  EXPECT_TRUE(with_bias->decision.Adjusted());
  adjusted->decision.bias = {0, 0, 0, 0, 0, 0, 0};
  EXPECT_FALSE(adjusted->ToJson()["decision"].contains("bias"));
  EXPECT_EQ(adjusted->ToJson()["decision"]["rule"], "plain");
}

// "vit" (the shape of a vit_custom) is typed: read, written back, absent by default.
TEST_F(ManifestTest, VitShape) {
  auto plain = Read({{"architecture", "resnet18"}});
  ASSERT_THAT(plain, IsOk());
  EXPECT_FALSE(plain->vit.has_value());
  EXPECT_FALSE(plain->ToJson().contains("vit"));
  auto vit = Read({{"architecture", "vit_custom"},
                   {"vit",
                    {{"patch_size", 8},
                     {"hidden_dim", 16},
                     {"num_layers", 1},
                     {"num_heads", 2},
                     {"mlp_dim", 32}}}});
  ASSERT_THAT(vit, IsOk());
  ASSERT_TRUE(vit->vit.has_value());
  EXPECT_EQ(*vit->vit, (models::VitConfig{8, 16, 1, 2, 32}));
  auto again = ModelManifest::Parse(vit->ToJson(), "again");
  ASSERT_THAT(again, IsOk());
  EXPECT_EQ(again->vit, vit->vit);
  vit->vit.reset();
  EXPECT_FALSE(vit->ToJson().contains("vit"));
}

// ToJson writes every typed field so that Parse gives the same manifest back, and keeps
// the keys it does not type (provenance) as they were.
TEST_F(ManifestTest, RoundTripKeepsTypedFieldsAndProvenance) {
  ModelManifest m;
  m.name = "clinic";
  m.version = 4;
  m.sha256 = "abc";
  m.architecture = "efficientnet_b0";
  m.image_size = 160;
  m.resize = kResizeDirect;
  m.classes = *LabelSet::Create({"benign", "melanoma", "other"}, std::vector<std::string>{"melanoma"});
  m.mean = {0.5f, 0.25f, 0.125f};
  m.std = {0.5f, 0.5f, 0.25f};
  m.shades_of_gray_p = 6;
  m.temperature = 1.25;
  m.refer.min_confidence = 0.6;
  m.refer.min_margin = 0.2;
  m.refer.risk_threshold = 0.125;
  m.refer.target_sensitivity = 0.95;
  m.refer.sensitivity_confidence = 0.95;
  m.ood.method = OodMethod::kMahalanobis;
  m.ood.threshold = 400.5;
  m.ood.reject_rate = 0.02;
  m.ood.features_file = "ood_features.safetensors";
  m.ood.features_sha256 = "ff00";
  m.precision = Precision::kBf16;
  m.tta = Tta::kFlips;
  m.golden_set = GoldenSet{.tolerance = 0.002, .tolerance_bf16 = 0.04,
                           .items = {{"g.jpg", {0.25f, 0.5f, 0.25f}, "melanoma"}}};
  m.document = {{"metrics", {{"balanced_accuracy", 0.5}}},
                {"calibration", {{"fitted_on", "val"}}},
                {"refer", {{"validation_sensitivity", 0.9}}}};
  const json j = m.ToJson();
  EXPECT_EQ(j["format"], kManifestFormat);
  EXPECT_EQ(j["metrics"]["balanced_accuracy"], 0.5);
  EXPECT_EQ(j["calibration"]["fitted_on"], "val");
  EXPECT_EQ(j["refer"]["validation_sensitivity"], 0.9);
  absl::StatusOr<ModelManifest> back = ModelManifest::Parse(j, "round trip");
  ASSERT_THAT(back, IsOk());
  EXPECT_EQ(back->name, m.name);
  EXPECT_EQ(back->version, m.version);
  EXPECT_EQ(back->sha256, m.sha256);
  EXPECT_EQ(back->architecture, m.architecture);
  EXPECT_EQ(back->image_size, m.image_size);
  EXPECT_EQ(back->resize, m.resize);
  EXPECT_EQ(back->classes, m.classes);
  EXPECT_EQ(back->mean, m.mean);
  EXPECT_EQ(back->std, m.std);
  EXPECT_EQ(back->shades_of_gray_p, 6);
  EXPECT_DOUBLE_EQ(back->temperature, 1.25);
  EXPECT_DOUBLE_EQ(back->refer.min_confidence, 0.6);
  EXPECT_DOUBLE_EQ(back->refer.min_margin, 0.2);
  EXPECT_EQ(back->refer.risk_threshold, 0.125);
  EXPECT_DOUBLE_EQ(back->refer.target_sensitivity, 0.95);
  EXPECT_DOUBLE_EQ(back->refer.sensitivity_confidence, 0.95);
  EXPECT_EQ(j["refer"]["sensitivity_confidence"], 0.95);
  EXPECT_EQ(back->ood.method, OodMethod::kMahalanobis);
  EXPECT_EQ(back->ood.threshold, 400.5);
  EXPECT_DOUBLE_EQ(back->ood.reject_rate, 0.02);
  EXPECT_EQ(back->ood.features_file, "ood_features.safetensors");
  EXPECT_EQ(back->ood.features_sha256, "ff00");
  EXPECT_EQ(back->precision, Precision::kBf16);
  EXPECT_EQ(j["tta"], "flips");
  EXPECT_EQ(back->tta, Tta::kFlips);
  ASSERT_TRUE(back->golden_set.has_value());
  EXPECT_DOUBLE_EQ(back->golden_set->tolerance, 0.002);
  EXPECT_DOUBLE_EQ(back->golden_set->tolerance_bf16, 0.04);
  ASSERT_EQ(back->golden_set->items.size(), 1u);
  EXPECT_EQ(back->golden_set->items[0].probabilities, (std::vector<float>{0.25f, 0.5f, 0.25f}));
  EXPECT_EQ(back->golden_set->items[0].top_class, "melanoma");
  EXPECT_EQ(back->ToJson(), j);  // A second round changes nothing.

  // Cleared optional fields leave the document; an old "energy_threshold" is renamed.
  ModelManifest plain = *back;
  plain.precision.reset();
  plain.tta = Tta::kNone;
  plain.golden_set.reset();
  plain.refer.risk_threshold.reset();
  plain.shades_of_gray_p = 0;
  plain.ood = OodPolicy{};
  const json k = plain.ToJson();
  EXPECT_FALSE(k.contains("precision"));
  EXPECT_FALSE(k.contains("tta")) << "none is the default and is not written";
  EXPECT_FALSE(k.contains("golden_set"));
  EXPECT_FALSE(k["refer"].contains("malignancy_risk_threshold"));
  EXPECT_FALSE(k["preprocessing"].contains("colour_constancy"));
  EXPECT_FALSE(k["ood"].contains("threshold"));
  absl::StatusOr<ModelManifest> old = ModelManifest::Parse(
      {{"architecture", "resnet18"}, {"ood", {{"method", "energy"}, {"energy_threshold", -3.5}}}}, "old");
  ASSERT_THAT(old, IsOk());
  const json renamed = old->ToJson();
  EXPECT_FALSE(renamed["ood"].contains("energy_threshold"));
  EXPECT_EQ(renamed["ood"]["threshold"], -3.5);
  // A version stored in a registry keeps its weights' hash in "files".
  absl::StatusOr<ModelManifest> stored = ModelManifest::Parse(
      {{"architecture", "resnet18"}, {"files", {{{"name", "model.safetensors"}, {"sha256", "aa"}}}}}, "stored");
  ASSERT_THAT(stored, IsOk());
  stored->sha256 = "bb";
  EXPECT_EQ(stored->ToJson()["files"][0]["sha256"], "bb");
  EXPECT_FALSE(stored->ToJson().contains("sha256"));
}

TEST_F(ManifestTest, WriteThenRead) {
  ModelManifest m;
  m.architecture = "resnet18";
  m.temperature = 0.5;
  m.document = {{"created", "2026-12-02T00:00:00Z"}};
  ASSERT_THAT(WriteModelManifest(dir_.path(), m), IsOk());
  absl::StatusOr<ModelManifest> back = ReadModelManifest(dir_.path());
  ASSERT_THAT(back, IsOk());
  EXPECT_EQ(back->architecture, "resnet18");
  EXPECT_DOUBLE_EQ(back->temperature, 0.5);
  EXPECT_EQ(back->document["created"], "2026-12-02T00:00:00Z");
  EXPECT_EQ(back->classes, LabelSet::Ham10000());
}

}  // namespace
}  // namespace skinlesion
