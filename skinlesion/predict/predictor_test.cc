#include "skinlesion/predict/predictor.h"

#include <torch/torch.h>

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <numeric>

#include "gtest/gtest.h"
#include "skinlesion/common/csv.h"
#include "skinlesion/image/preprocess.h"
#include "skinlesion/models/model_zoo.h"
#include "skinlesion/models/state_dict.h"
#include "skinlesion/testing/testing.h"

namespace skinlesion::predict {
namespace {

using ::skinlesion::testing::SourcePath;
using ::skinlesion::testing::StatusIs;
using ::skinlesion::testing::TempDir;
using ::testing::HasSubstr;

std::string MakeModelDir(const TempDir& dir, double temperature) {
  torch::manual_seed(3);
  models::ModelOptions mo;
  mo.image_size = 32;
  auto model = models::CreateModel("resnet18", mo);
  EXPECT_TRUE(model.ok());
  const std::string path = dir.Join("model");
  EXPECT_TRUE(models::SaveCheckpoint(**model, path, 32).ok());
  auto text = ReadFileToString(path + "/manifest.json", 1 << 20);
  nlohmann::json m = nlohmann::json::parse(*text);
  m["calibration"] = {{"temperature", temperature}};
  m["refer"] = {{"min_confidence", 0.9}, {"min_margin", 0.05}};
  EXPECT_TRUE(WriteFileAtomically(path + "/manifest.json", m.dump()).ok());
  return path;
}

// The manifest's decision rule names the class; the probabilities and their ranking
// stay as they are, and the flip is referred as a close call.
TEST(MakePredictionTest, TheDecisionRuleNamesTheClass) {
  const std::vector<float> p = {0.01f, 0.01f, 0.05f, 0.01f, 0.30f, 0.55f, 0.07f};
  const ReferralPolicy refer{.min_confidence = 0.2, .min_margin = 0.1};
  const DecisionRule rule{.tau = 0.5, .prior = {0.03, 0.05, 0.11, 0.01, 0.11, 0.67, 0.02}};
  const Prediction plain = MakePrediction(p, LabelSet::Ham10000(), refer);
  EXPECT_EQ(plain.code, "nv");
  EXPECT_FALSE(plain.refer);
  const Prediction adjusted = MakePrediction(p, LabelSet::Ham10000(), refer, rule);
  EXPECT_EQ(adjusted.code, "mel");
  EXPECT_FLOAT_EQ(adjusted.confidence, 0.30f);
  EXPECT_EQ(adjusted.top[0].first, 5);  // Still ranked by probability.
  EXPECT_EQ(adjusted.probabilities, p);
  EXPECT_TRUE(adjusted.refer);
  EXPECT_THAT(adjusted.refer_reason, HasSubstr("mel and nv are too close"));
}

TEST(MakePredictionTest, TopClassRiskAndReferral) {
  std::vector<float> p = {0.05f, 0.05f, 0.05f, 0.05f, 0.6f, 0.15f, 0.05f};
  const Prediction a = MakePrediction(p, LabelSet::Ham10000(), {.min_confidence = 0.5, .min_margin = 0.1});
  EXPECT_EQ(a.code, "mel");
  EXPECT_EQ(a.name, "Melanoma");
  EXPECT_FLOAT_EQ(a.confidence, 0.6f);
  EXPECT_NEAR(a.malignancy_risk, 0.7f, 1e-6);  // akiec + bcc + mel
  ASSERT_EQ(a.top.size(), 3u);
  EXPECT_EQ(a.top[1].first, 5);
  EXPECT_FALSE(a.refer);
  const Prediction b = MakePrediction(p, LabelSet::Ham10000(), {.min_confidence = 0.7, .min_margin = 0.1});
  EXPECT_TRUE(b.refer);
  EXPECT_THAT(b.refer_reason, HasSubstr("under 0.70"));
  std::vector<float> close = {0, 0, 0, 0, 0.52f, 0.48f, 0};
  const Prediction c = MakePrediction(close, LabelSet::Ham10000(), {.min_confidence = 0.5, .min_margin = 0.1});
  EXPECT_TRUE(c.refer);
  EXPECT_THAT(c.refer_reason, HasSubstr("mel and nv are too close"));
  const auto j = a.ToJson();
  EXPECT_EQ(j["class"], "mel");
  EXPECT_EQ(j["malignancy_group"], "malignant");
  EXPECT_EQ(j["probabilities"].size(), 7u);
}

TEST(PredictorTest, PredictsCalibratedProbabilities) {
  TempDir dir;
  auto p1 = Predictor::Create(MakeModelDir(dir, 1.0), {.threads = 1, .precision = PrecisionChoice::kFp32});
  ASSERT_TRUE(p1.ok()) << p1.status();
  EXPECT_EQ((*p1)->architecture(), "resnet18");
  EXPECT_EQ((*p1)->image_size(), 32);
  const std::string image = SourcePath("tests/fixtures/ham10000/images/ISIC_0024698.jpg");
  auto a = (*p1)->PredictFile(image);
  ASSERT_TRUE(a.ok()) << a.status();
  const float sum = std::accumulate(a->probabilities.begin(), a->probabilities.end(), 0.0f);
  EXPECT_NEAR(sum, 1.0f, 1e-5);
  // Same answer for the same bytes, alone or in a batch.
  std::ifstream f(image, std::ios::binary);
  const std::string bytes((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  auto b = (*p1)->PredictBytes(bytes);
  ASSERT_TRUE(b.ok());
  EXPECT_EQ(a->probabilities, b->probabilities);
  auto decoded = DecodeImage(bytes);
  auto batch = (*p1)->PredictBatch({*decoded, *decoded});
  ASSERT_TRUE(batch.ok());
  for (int k = 0; k < kHam10000NumClasses; ++k) EXPECT_NEAR((*batch)[1].probabilities[k], a->probabilities[k], 1e-5);
  // A higher temperature flattens the distribution, keeping the argmax.
  TempDir dir2;
  auto p3 = Predictor::Create(MakeModelDir(dir2, 3.0), {.threads = 1, .precision = PrecisionChoice::kFp32});
  ASSERT_TRUE(p3.ok());
  auto c = (*p3)->PredictFile(image);
  ASSERT_TRUE(c.ok());
  EXPECT_EQ(c->class_index, a->class_index);
  EXPECT_LT(c->confidence, a->confidence);
  EXPECT_TRUE(c->refer);  // min_confidence 0.9 in the manifest.
}

// The manifest's preprocessing (resize mode, mean, std) is what the Predictor feeds
// the model, as the inference service does, not the ImageNet defaults.
TEST(PredictorTest, PreprocessesAsTheManifestSays) {
  TempDir dir;
  const std::string path = MakeModelDir(dir, 1.0);
  auto text = ReadFileToString(path + "/manifest.json", 1 << 20);
  nlohmann::json m = nlohmann::json::parse(*text);
  m["preprocessing"] = {{"size", 32}, {"resize", "resize"}, {"mean", {0.5, 0.5, 0.5}},
                        {"std", {0.25, 0.25, 0.25}}};
  ASSERT_TRUE(WriteFileAtomically(path + "/manifest.json", m.dump()).ok());
  auto p = Predictor::Create(path, {.threads = 1, .precision = PrecisionChoice::kFp32});
  ASSERT_TRUE(p.ok()) << p.status();
  auto rgb = DecodeImageFile(SourcePath("tests/fixtures/ham10000/images/ISIC_0024698.jpg"), {});
  ASSERT_TRUE(rgb.ok());
  cv::Mat wide;  // Not square, so the resize mode matters.
  cv::hconcat(*rgb, (*rgb)(cv::Rect(0, 0, rgb->cols / 2, rgb->rows)), wide);
  auto got = (*p)->Predict(wide);
  ASSERT_TRUE(got.ok()) << got.status();

  auto expected_with = [&](const PreprocessOptions& pre) {
    auto model = models::LoadCheckpoint(path);
    EXPECT_TRUE(model.ok());
    model->model->eval();
    torch::Tensor x = torch::empty({1, 3, 32, 32});
    PreprocessInto(wide, pre, x.data_ptr<float>());
    torch::InferenceMode guard;
    return torch::softmax(model->model->forward(x), 1);
  };
  PreprocessOptions manifest_pre;
  manifest_pre.size = 32;
  manifest_pre.mode = ResizeMode::kDirectResize;
  manifest_pre.mean = {0.5f, 0.5f, 0.5f};
  manifest_pre.std = {0.25f, 0.25f, 0.25f};
  const torch::Tensor want = expected_with(manifest_pre);
  PreprocessOptions defaults;
  defaults.size = 32;
  const torch::Tensor with_defaults = expected_with(defaults);
  double diff_to_defaults = 0;
  for (int k = 0; k < kHam10000NumClasses; ++k) {
    EXPECT_NEAR(got->probabilities[k], want[0][k].item<float>(), 1e-5) << k;
    diff_to_defaults += std::abs(got->probabilities[k] - with_defaults[0][k].item<float>());
  }
  EXPECT_GT(diff_to_defaults, 1e-3) << "the test must tell the two preprocessings apart";
  auto e = (*p)->Explain(wide);
  ASSERT_TRUE(e.ok());
  EXPECT_EQ(e->covers, "full-image");
}

TEST(PredictorTest, ClearErrors) {
  TempDir dir;
  EXPECT_THAT(Predictor::Create(dir.Join("nope")), StatusIs(absl::StatusCode::kNotFound, HasSubstr("nope")));
  auto p = Predictor::Create(MakeModelDir(dir, 1.0), {.threads = 1});
  ASSERT_TRUE(p.ok());
  EXPECT_THAT((*p)->PredictBytes("not an image"), StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("unsupported")));
  EXPECT_FALSE((*p)->PredictFile(dir.Join("missing.jpg")).ok());
  EXPECT_THAT((*p)->Predict(cv::Mat()), StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("RGB")));
}

// resnet18 at 32 px (the manifest's size, whatever the image's): a 1x1 Grad-CAM map.
TEST(PredictorTest, ExplainsThePredictedClassAndDrawsAnOverlay) {
  TempDir dir;
  auto p = Predictor::Create(MakeModelDir(dir, 1.0), {.threads = 1});
  ASSERT_TRUE(p.ok());
  auto rgb = DecodeImageFile(SourcePath("tests/fixtures/ham10000/images/ISIC_0024698.jpg"), {});
  ASSERT_TRUE(rgb.ok()) << rgb.status();
  auto predicted = (*p)->Predict(*rgb);
  ASSERT_TRUE(predicted.ok());
  auto e = (*p)->Explain(*rgb);
  ASSERT_TRUE(e.ok()) << e.status();
  EXPECT_EQ(e->method, "grad-cam");
  EXPECT_EQ(e->target_class, predicted->class_index);
  EXPECT_EQ(e->width, 1);
  EXPECT_EQ(e->height, 1);
  ASSERT_EQ(e->heat.size(), 1u);
  EXPECT_THAT((*p)->Explain(*rgb, 7), StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("target class")));
  EXPECT_THAT((*p)->Explain(cv::Mat()), StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("RGB")));

  // The overlay: the image's size; the covered centred square coloured (hot in the
  // middle of a 3x3 map: red), the rest darkened.
  Explanation hot{.method = "grad-cam", .target_class = 0, .width = 3, .height = 3,
                  .heat = {0, 0, 0, 0, 1, 0, 0, 0, 0}};
  cv::Mat grey(40, 60, CV_8UC3, cv::Scalar(100, 100, 100));
  auto overlay = HeatmapOverlay(grey, hot, 1.0);
  ASSERT_TRUE(overlay.ok()) << overlay.status();
  EXPECT_EQ(overlay->size(), grey.size());
  EXPECT_EQ(overlay->type(), CV_8UC3);
  const cv::Vec3b centre = overlay->at<cv::Vec3b>(20, 30);
  EXPECT_GT(centre[0], 100);  // R
  EXPECT_LT(centre[2], 50);   // B
  const cv::Vec3b corner = overlay->at<cv::Vec3b>(20, 12);  // Inside the square, cold: blue.
  EXPECT_GT(corner[2], corner[0]);
  EXPECT_EQ(overlay->at<cv::Vec3b>(20, 2), cv::Vec3b(50, 50, 50));  // Outside: darkened.
  hot.heat.pop_back();
  EXPECT_THAT(HeatmapOverlay(grey, hot), StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("3x3")));
}

// The shipped model in bf16 against fp32 on every fixture image: the same answer
// wherever fp32 is not itself on a knife edge, and probabilities within the golden
// set's bf16 tolerance (docs/performance.md has the same on the 895-image test split).
TEST(PredictorTest, Bf16AgreesWithFp32OnTheFixtureImages) {
  const std::string bundled = SourcePath("models/bundled");
  auto fp32 = Predictor::Create(bundled, {.threads = 2, .precision = PrecisionChoice::kFp32});
  ASSERT_TRUE(fp32.ok()) << fp32.status();
  auto bf16 = Predictor::Create(bundled, {.threads = 2, .precision = PrecisionChoice::kBf16});
  ASSERT_TRUE(bf16.ok()) << bf16.status();
  EXPECT_EQ((*fp32)->precision(), Precision::kFp32);
  EXPECT_EQ((*bf16)->precision(), Precision::kBf16);
  EXPECT_EQ((*bf16)->numerics(), "bf16, channels-last");  // The bundled model is a ResNet.
  std::vector<std::string> images;
  for (const auto& entry :
       std::filesystem::directory_iterator(SourcePath("tests/fixtures/ham10000/images"))) {
    images.push_back(entry.path().string());
  }
  ASSERT_GE(images.size(), 10u);
  int agree = 0;
  double worst = 0;
  for (const std::string& image : images) {
    auto a = (*fp32)->PredictFile(image);
    auto b = (*bf16)->PredictFile(image);
    ASSERT_TRUE(a.ok() && b.ok()) << image;
    for (int k = 0; k < kHam10000NumClasses; ++k) {
      worst = std::max(worst, static_cast<double>(std::fabs(a->probabilities[k] - b->probabilities[k])));
    }
    const double margin = a->top[0].second - a->top[1].second;
    if (a->class_index == b->class_index) {
      ++agree;
    } else {
      EXPECT_LT(margin, 0.05) << image << ": bf16 says " << b->code << ", fp32 " << a->code
                              << " with margin " << margin;
    }
  }
  EXPECT_LE(worst, 0.05) << "largest probability difference bf16 vs fp32";
  EXPECT_GE(agree, static_cast<int>(images.size()) - 1) << agree << " of " << images.size();
  std::printf("bf16 vs fp32 on %zu fixture images: %d agree, largest |dP| %.4f\n", images.size(),
              agree, worst);
}

// Grad-CAM differentiates through the model: in bf16 the gradients carry 8 bits.
// Measured on the shipped model and every fixture image: the heatmaps must keep their
// shape (Pearson correlation with fp32) and the values their scale.
TEST(PredictorTest, Bf16GradCamMatchesFp32) {
  const std::string bundled = SourcePath("models/bundled");
  auto fp32 = Predictor::Create(bundled, {.threads = 2, .precision = PrecisionChoice::kFp32});
  auto bf16 = Predictor::Create(bundled, {.threads = 2, .precision = PrecisionChoice::kBf16});
  ASSERT_TRUE(fp32.ok() && bf16.ok());
  double worst_corr = 1, worst_diff = 0;
  for (const auto& entry :
       std::filesystem::directory_iterator(SourcePath("tests/fixtures/ham10000/images"))) {
    auto rgb = DecodeImageFile(entry.path().string(), {});
    ASSERT_TRUE(rgb.ok());
    auto a = (*fp32)->Explain(*rgb);
    ASSERT_TRUE(a.ok()) << a.status();
    auto b = (*bf16)->Explain(*rgb, a->target_class);
    ASSERT_TRUE(b.ok()) << b.status();
    ASSERT_EQ(a->heat.size(), b->heat.size());
    const size_t n = a->heat.size();
    double ma = 0, mb = 0;
    for (size_t i = 0; i < n; ++i) {
      ma += a->heat[i] / n;
      mb += b->heat[i] / n;
      worst_diff = std::max(worst_diff, static_cast<double>(std::fabs(a->heat[i] - b->heat[i])));
    }
    double sab = 0, saa = 0, sbb = 0;
    for (size_t i = 0; i < n; ++i) {
      sab += (a->heat[i] - ma) * (b->heat[i] - mb);
      saa += (a->heat[i] - ma) * (a->heat[i] - ma);
      sbb += (b->heat[i] - mb) * (b->heat[i] - mb);
    }
    if (saa > 1e-12 && sbb > 1e-12) worst_corr = std::min(worst_corr, sab / std::sqrt(saa * sbb));
  }
  std::printf("Grad-CAM bf16 vs fp32 on the fixtures: lowest correlation %.4f, largest |d heat| %.4f\n",
              worst_corr, worst_diff);
  EXPECT_GT(worst_corr, 0.95);
  EXPECT_LT(worst_diff, 0.15);
}

}  // namespace
}  // namespace skinlesion::predict
