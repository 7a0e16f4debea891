// The LibTorch adapter served end to end: a tiny resnet18 checkpoint served from a
// DirectorySource gives the same probabilities as skinlesion::predict::Predictor.
#include "skinlesion/serving/torch_instance.h"

#include <torch/torch.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <fstream>
#include <future>
#include <sstream>
#include <thread>
#include <utility>
#include <vector>

#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "skinlesion/common/hash.h"
#include "skinlesion/common/ood.h"
#include "skinlesion/models/feature_ood.h"
#include "skinlesion/models/model_zoo.h"
#include "skinlesion/models/state_dict.h"
#include "skinlesion/predict/predictor.h"
#include "skinlesion/serving/batcher.h"
#include "skinlesion/serving/serving.h"
#include "skinlesion/serving/sources.h"
#include "skinlesion/testing/testing.h"

namespace skinlesion::serving {
namespace {

using ::skinlesion::testing::IsOk;
using ::skinlesion::testing::SourcePath;
using ::skinlesion::testing::StatusIs;
using ::skinlesion::testing::TempDir;
using ::testing::HasSubstr;

std::string ReadBytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

TEST(TorchInstanceTest, ServedProbabilitiesEqualThePredictors) {
  TempDir dir;
  const std::string model_dir = dir.Join("model");
  models::ModelOptions mo;
  mo.image_size = 32;
  auto model = models::CreateModel("resnet18", mo);
  ASSERT_THAT(model, IsOk());
  ASSERT_THAT(models::SaveCheckpoint(**model, model_dir, 32), IsOk());

  ServingOptions options;
  options.models = {{.name = "tiny"}};
  options.batching.max_batch_size = 4;
  options.batching.max_queue_delay = absl::Milliseconds(500);
  options.warmup_runs = 1;
  auto source = DirectorySource::Create(model_dir, "tiny");
  ASSERT_THAT(source, IsOk());
  // fp32 on both sides: this test pins the arithmetic, whatever this CPU's auto is.
  auto core = ServingCore::Create(
      options, std::move(*source),
      MakeTorchLoader({.threads = 1, .precision = PrecisionChoice::kFp32}));
  ASSERT_THAT(core, IsOk());
  const absl::Time until = absl::Now() + absl::Seconds(60);
  while (!(*core)->Ready() && absl::Now() < until) absl::SleepFor(absl::Milliseconds(5));
  ASSERT_TRUE((*core)->Ready()) << (*core)->Models()[0].last_error;
  EXPECT_EQ((*core)->Models()[0].numerics, "fp32");

  auto predictor = predict::Predictor::Create(model_dir, {.precision = PrecisionChoice::kFp32});
  ASSERT_THAT(predictor, IsOk());
  const std::vector<std::string> images = {"ISIC_0024693.jpg", "ISIC_0024698.jpg",
                                           "ISIC_0026769.jpg"};
  // Queued together (the delay is long) so that they run as one batch of 3: each
  // row of the batch must still match the predictor's single-image forward pass.
  std::vector<std::pair<std::string, absl::StatusOr<InferResult>>> results(
      images.size(), {"", absl::UnknownError("")});
  std::vector<std::promise<absl::StatusOr<InferResult>>> promises(images.size());
  for (size_t i = 0; i < images.size(); ++i) {
    results[i].first = ReadBytes(SourcePath("tests/fixtures/ham10000/images/" + images[i]));
    InferRequest request;
    request.encoded_image = results[i].first;
    (*core)->InferAsync(request, [&promises, i](absl::StatusOr<InferResult> r) {
      promises[i].set_value(std::move(r));
    });
  }
  for (size_t i = 0; i < images.size(); ++i) results[i].second = promises[i].get_future().get();
  for (size_t i = 0; i < images.size(); ++i) {
    ASSERT_THAT(results[i].second, IsOk()) << images[i];
    const InferResult& served = *results[i].second;
    auto expected = (*predictor)->PredictBytes(results[i].first);
    ASSERT_THAT(expected, IsOk());
    for (int k = 0; k < kHam10000NumClasses; ++k) {
      EXPECT_NEAR(served.probabilities[k], expected->probabilities[k], 1e-5)
          << images[i] << " class " << k;
    }
    EXPECT_EQ(served.top_class, expected->class_index);
    EXPECT_NEAR(served.malignancy_risk, expected->malignancy_risk, 1e-5);
    EXPECT_EQ(served.refer, expected->refer);
    EXPECT_EQ(served.refer_reason, expected->refer_reason);
    EXPECT_EQ(served.version, 1);
    EXPECT_EQ(served.batch_size, 3);
    EXPECT_EQ(served.model, "tiny");
    EXPECT_EQ(served.sha256.size(), 64u);  // Hashed: the manifest has no sha256.
  }
  (*core)->Shutdown(absl::Seconds(5));
}

TEST(TorchInstanceTest, LoaderErrors) {
  TempDir dir;
  models::ModelOptions mo;
  mo.image_size = 32;
  auto model = models::CreateModel("resnet18", mo);
  ASSERT_THAT(model, IsOk());
  ASSERT_THAT(models::SaveCheckpoint(**model, dir.path(), 32), IsOk());
  auto spec = ReadModelSpec(dir.path());
  ASSERT_THAT(spec, IsOk());

  EXPECT_THAT(MakeTorchLoader({.device = "toaster"})(*spec),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("toaster")));
  ModelSpec other = *spec;
  other.image_size = 64;
  EXPECT_THAT(MakeTorchLoader()(other),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("image_size")));
  ModelSpec missing = *spec;
  missing.directory = dir.Join("nope");
  EXPECT_FALSE(MakeTorchLoader()(missing).ok());

  auto instance = MakeTorchLoader()(*spec);
  ASSERT_THAT(instance, IsOk());
  std::vector<float> zeros(2 * 3 * 32 * 32, 0.0f);
  auto logits = (*instance)->Run(zeros.data(), 2);
  ASSERT_THAT(logits, IsOk());
  EXPECT_EQ(logits->size(), 14u);
  EXPECT_THAT((*instance)->Run(zeros.data(), 0),
              StatusIs(absl::StatusCode::kInvalidArgument, ::testing::_));
}

// Explain() on the instance: Grad-CAM for a CNN, rollout for a ViT, running beside
// Run() calls on other threads without changing either's results.
TEST(TorchInstanceTest, ExplainBesideConcurrentRuns) {
  TempDir dir;
  for (const std::string arch : {"resnet18", "vit_custom"}) {
    SCOPED_TRACE(arch);
    const std::string model_dir = dir.Join(arch);
    models::ModelOptions mo;
    mo.image_size = 64;
    mo.vit = {16, 64, 2, 4, 128};
    torch::manual_seed(5);
    auto model = models::CreateModel(arch, mo);
    ASSERT_THAT(model, IsOk());
    ASSERT_THAT(models::SaveCheckpoint(**model, model_dir, 64, {}, mo.vit), IsOk());
    auto spec = ReadModelSpec(model_dir);
    ASSERT_THAT(spec, IsOk());
    auto instance = MakeTorchLoader()(*spec);
    ASSERT_THAT(instance, IsOk());

    torch::manual_seed(6);
    const torch::Tensor image = torch::randn({1, 3, 64, 64});
    const float* input = image.data_ptr<float>();
    auto first = (*instance)->Explain(input, 2);
    ASSERT_THAT(first, IsOk());
    EXPECT_EQ(first->method, arch == "vit_custom" ? "attention-rollout" : "grad-cam");
    EXPECT_EQ(first->width, arch == "vit_custom" ? 4 : 2);
    EXPECT_EQ(first->height, first->width);
    ASSERT_EQ(first->heat.size(), static_cast<size_t>(first->width * first->height));
    for (float v : first->heat) {
      EXPECT_GE(v, 0.0f);
      EXPECT_LE(v, 1.0f);
    }
    auto logits = (*instance)->Run(input, 1);
    ASSERT_THAT(logits, IsOk());

    std::atomic<bool> stop{false};
    std::atomic<int> run_mismatches{0};
    std::vector<std::thread> runners;
    for (int t = 0; t < 2; ++t) {
      runners.emplace_back([&] {
        while (!stop.load()) {
          auto again = (*instance)->Run(input, 1);
          if (!again.ok() || *again != *logits) ++run_mismatches;
        }
      });
    }
    for (int i = 0; i < 5; ++i) {
      auto again = (*instance)->Explain(input, 2);
      ASSERT_THAT(again, IsOk());
      EXPECT_EQ(again->heat, first->heat);
    }
    stop = true;
    for (auto& r : runners) r.join();
    EXPECT_EQ(run_mismatches.load(), 0);

    EXPECT_THAT((*instance)->Explain(input, kHam10000NumClasses),
                StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("target class")));
  }
}

// A model whose outputs are far from uniform (a scaled head), saved with a golden
// set of three fixture images computed in fp32, as `skinlesion export` does.
// `permute_head`: the head's rows rotated by one class, i.e. the wrong model for
// this golden set (what a corrupt upload or a mixed-up file looks like).
std::string SaveWithGoldenSet(const TempDir& dir, const std::string& name, bool permute_head,
                              const std::string& precision_pin = "") {
  const std::string model_dir = dir.Join(name);
  models::ModelOptions mo;
  mo.image_size = 32;
  torch::manual_seed(11);
  auto model = models::CreateModel("resnet18", mo);
  EXPECT_THAT(model, IsOk());
  {
    torch::NoGradGuard no_grad;
    for (auto& p : (*model)->named_parameters()) {
      if (p.key() == "fc.weight") p.value().mul_(40.0);
    }
  }
  EXPECT_THAT(models::SaveCheckpoint(**model, model_dir, 32), IsOk());
  const std::vector<std::string> images = {"ISIC_0024693.jpg", "ISIC_0026769.jpg",
                                           "ISIC_0031270.jpg"};
  auto predictor = predict::Predictor::Create(model_dir, {.precision = PrecisionChoice::kFp32});
  EXPECT_THAT(predictor, IsOk());
  nlohmann::json items = nlohmann::json::array();
  for (size_t i = 0; i < images.size(); ++i) {
    const std::string file = "golden_" + std::to_string(i) + ".jpg";
    const std::string bytes = ReadBytes(SourcePath("tests/fixtures/ham10000/images/" + images[i]));
    std::ofstream(model_dir + "/" + file, std::ios::binary) << bytes;
    auto p = (*predictor)->PredictBytes(bytes);
    EXPECT_THAT(p, IsOk());
    items.push_back({{"file", file},
                     {"probabilities", std::vector<float>(p->probabilities.begin(),
                                                          p->probabilities.end())}});
  }
  if (permute_head) {
    torch::NoGradGuard no_grad;
    for (auto& p : (*model)->named_parameters()) {
      if (p.key() == "fc.weight" || p.key() == "fc.bias") p.value().copy_(p.value().roll(1, 0));
    }
    EXPECT_THAT(models::SaveCheckpoint(**model, model_dir, 32), IsOk());
  }
  nlohmann::json manifest = nlohmann::json::parse(ReadBytes(model_dir + "/manifest.json"));
  manifest["golden_set"] = {{"tolerance", kDefaultGoldenTolerance},
                            {"tolerance_bf16", kDefaultGoldenToleranceBf16},
                            {"items", items}};
  if (!precision_pin.empty()) manifest["precision"] = precision_pin;
  std::ofstream(model_dir + "/manifest.json") << manifest.dump(2);
  return model_dir;
}

TEST(TorchInstanceTest, Bf16InstancePassesItsFp32GoldenSetAndAWrongModelFails) {
  TempDir dir;
  const std::string good = SaveWithGoldenSet(dir, "good", /*permute_head=*/false);
  const std::string wrong = SaveWithGoldenSet(dir, "wrong", /*permute_head=*/true);
  for (PrecisionChoice choice : {PrecisionChoice::kFp32, PrecisionChoice::kBf16}) {
    SCOPED_TRACE(std::string(PrecisionChoiceName(choice)));
    const ModelLoader loader = MakeTorchLoader({.threads = 1, .precision = choice});
    auto spec = ReadModelSpec(good);
    ASSERT_THAT(spec, IsOk());
    auto instance = loader(*spec);
    ASSERT_THAT(instance, IsOk());
    EXPECT_EQ((*instance)->precision(),
              choice == PrecisionChoice::kBf16 ? Precision::kBf16 : Precision::kFp32);
    EXPECT_THAT(CheckGoldenSet(*spec, **instance), IsOk());

    auto wrong_spec = ReadModelSpec(wrong);
    ASSERT_THAT(wrong_spec, IsOk());
    auto wrong_instance = loader(*wrong_spec);
    ASSERT_THAT(wrong_instance, IsOk());
    EXPECT_THAT(CheckGoldenSet(*wrong_spec, **wrong_instance),
                StatusIs(absl::StatusCode::kFailedPrecondition,
                         HasSubstr(std::string(PrecisionName((*wrong_instance)->precision())))));
  }
  // The fp32 tolerance alone would reject the (correct) bf16 instance: the wider
  // tolerance is what lets it serve, and it is still far below a wrong model's error.
  auto spec = ReadModelSpec(good);
  ASSERT_THAT(spec, IsOk());
  auto bf16 = MakeTorchLoader({.threads = 1, .precision = PrecisionChoice::kBf16})(*spec);
  ASSERT_THAT(bf16, IsOk());
  spec->golden_set->tolerance_bf16 = 0;
  spec->golden_set->tolerance = 1e-6;
  EXPECT_THAT(CheckGoldenSet(*spec, **bf16), StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("bf16")));
}

TEST(TorchInstanceTest, AManifestPinDecidesUnderAutoAndAnExplicitChoiceOverridesIt) {
  TempDir dir;
  const std::string pinned = SaveWithGoldenSet(dir, "pinned", false, "fp32");
  auto spec = ReadModelSpec(pinned);
  ASSERT_THAT(spec, IsOk());
  ASSERT_TRUE(spec->precision.has_value());
  auto automatic = MakeTorchLoader({.threads = 1})(*spec);
  ASSERT_THAT(automatic, IsOk());
  EXPECT_EQ((*automatic)->precision(), Precision::kFp32);
  EXPECT_EQ((*automatic)->numerics(), "fp32");
  auto forced = MakeTorchLoader({.threads = 1, .precision = PrecisionChoice::kBf16})(*spec);
  ASSERT_THAT(forced, IsOk());
  EXPECT_EQ((*forced)->precision(), Precision::kBf16);
  EXPECT_EQ((*forced)->numerics(), "bf16, channels-last");
  // Served end to end in bf16: the version info metric and Models() say so.
  ServingOptions options;
  options.models = {{.name = "pinned"}};
  options.warmup_runs = 1;
  auto source = DirectorySource::Create(pinned, "pinned");
  ASSERT_THAT(source, IsOk());
  auto core = ServingCore::Create(
      options, std::move(*source),
      MakeTorchLoader({.threads = 1, .precision = PrecisionChoice::kBf16}));
  ASSERT_THAT(core, IsOk());
  const absl::Time until = absl::Now() + absl::Seconds(60);
  while (!(*core)->Ready() && absl::Now() < until) absl::SleepFor(absl::Milliseconds(5));
  ASSERT_TRUE((*core)->Ready()) << (*core)->Models()[0].last_error;
  EXPECT_EQ((*core)->Models()[0].numerics, "bf16, channels-last");
  InferRequest request;
  request.encoded_image = ReadBytes(SourcePath("tests/fixtures/ham10000/images/ISIC_0024698.jpg"));
  auto result = (*core)->Infer(request);
  ASSERT_THAT(result, IsOk());
  float sum = 0;
  for (float p : result->probabilities) sum += p;
  EXPECT_NEAR(sum, 1.0f, 1e-5);
  (*core)->Shutdown(absl::Seconds(5));
}

// A version with a "mahalanobis" not-a-lesion check: the instance returns the feature
// score of each image from the same forward pass, the CLI predictor gives the same
// score, and a Gaussian that does not match the file's digest or the model's width is
// refused at load.
// A manifest's "tta": served answers average the softmax of the image's views (the
// predictor's too), while the out-of-distribution scores stay the image's own.
TEST(TorchInstanceTest, TestTimeViewsAverageTheAnswerAndKeepTheImagesOwnScores) {
  TempDir dir;
  const std::string model_dir = dir.Join("tta");
  torch::manual_seed(6);
  auto model = models::CreateModel("resnet18", {.image_size = 32});
  ASSERT_THAT(model, IsOk());
  (*model)->eval();
  ASSERT_THAT(models::SaveCheckpoint(**model, model_dir, 32), IsOk());
  nlohmann::json manifest = nlohmann::json::parse(ReadBytes(model_dir + "/manifest.json"));
  manifest["tta"] = "dihedral";
  manifest["ood"] = {{"method", "energy"}, {"threshold", 0.0}, {"reject_rate", 0.01}};
  std::ofstream(model_dir + "/manifest.json") << manifest.dump(2);

  auto spec = ReadModelSpec(model_dir);
  ASSERT_THAT(spec, IsOk());
  ASSERT_EQ(spec->tta, Tta::kDihedral);
  auto instance = MakeTorchLoader({.threads = 1, .precision = PrecisionChoice::kFp32})(*spec);
  ASSERT_THAT(instance, IsOk());
  const torch::Tensor x = torch::randn({2, 3, 32, 32});
  auto run = (*instance)->RunScored(x.data_ptr<float>(), 2);
  ASSERT_THAT(run, IsOk());
  ASSERT_EQ(run->logits.size(), 2u * kHam10000NumClasses);
  ASSERT_EQ(run->feature_scores.size(), 2u) << "energy of the image's own logits";
  auto plain = (*instance)->Run(x.data_ptr<float>(), 2);
  ASSERT_THAT(plain, IsOk());
  torch::NoGradGuard no_grad;
  const torch::Tensor own = models::ForwardLogits(**model, x, {}, torch::kCPU);
  const torch::Tensor averaged = models::ForwardTta(**model, x, Tta::kDihedral, {}, torch::kCPU);
  for (int i = 0; i < 2; ++i) {
    for (int k = 0; k < kHam10000NumClasses; ++k) {
      EXPECT_NEAR(run->logits[i * kHam10000NumClasses + k], averaged[i][k].item<float>(), 1e-4);
      EXPECT_NEAR((*plain)[i * kHam10000NumClasses + k], averaged[i][k].item<float>(), 1e-4);
    }
    const double energy = EnergyScore(own[i].data_ptr<float>(), kHam10000NumClasses);
    EXPECT_NEAR(run->feature_scores[i], energy, 1e-4);
    EXPECT_GT(std::abs(energy), 1e-3) << "not the energy of a log-probability, which is 0";
  }

  // The predictor answers the same way, and its score is the image's own energy too.
  auto predictor = predict::Predictor::Create(model_dir, {.precision = PrecisionChoice::kFp32});
  ASSERT_THAT(predictor, IsOk());
  const std::string bytes =
      ReadBytes(SourcePath("tests/fixtures/ham10000/images/ISIC_0024693.jpg"));
  auto predicted = (*predictor)->PredictBytes(bytes);
  ASSERT_THAT(predicted, IsOk());
  std::vector<float> input(3 * 32 * 32);
  ASSERT_THAT(DecodeAndPreprocess(*spec, bytes, DecodeLimits{}, input.data()), IsOk());
  auto served = (*instance)->RunScored(input.data(), 1);
  ASSERT_THAT(served, IsOk());
  InferResult r;
  FillPrediction(*spec, served->logits.data(), served->feature_scores[0], r);
  for (int k = 0; k < kHam10000NumClasses; ++k) {
    EXPECT_NEAR(r.probabilities[k], predicted->probabilities[k], 1e-5) << k;
  }
  EXPECT_NEAR(r.ood_score, predicted->ood_score, 1e-4);
  EXPECT_EQ(r.out_of_distribution, predicted->out_of_distribution);

  // Without the views the answer differs (the random model is not symmetric).
  manifest.erase("tta");
  std::ofstream(model_dir + "/manifest.json") << manifest.dump(2);
  auto single = predict::Predictor::Create(model_dir, {.precision = PrecisionChoice::kFp32});
  ASSERT_THAT(single, IsOk());
  auto one_view = (*single)->PredictBytes(bytes);
  ASSERT_THAT(one_view, IsOk());
  double largest = 0;
  for (int k = 0; k < kHam10000NumClasses; ++k) {
    largest = std::max(largest, std::abs(static_cast<double>(one_view->probabilities[k] -
                                                             predicted->probabilities[k])));
  }
  EXPECT_GT(largest, 1e-4);
  EXPECT_NEAR(one_view->ood_score, predicted->ood_score, 1e-4) << "the same image's own energy";
}

TEST(TorchInstanceTest, FeatureOodScoresComeWithTheLogits) {
  TempDir dir;
  const std::string model_dir = dir.Join("ood");
  torch::manual_seed(5);
  auto model = models::CreateModel("resnet18", {.image_size = 32});
  ASSERT_THAT(model, IsOk());
  (*model)->eval();
  ASSERT_THAT(models::SaveCheckpoint(**model, model_dir, 32), IsOk());
  torch::Tensor embeddings;
  {
    torch::NoGradGuard no_grad;
    embeddings = models::ForwardWithEmbedding(**model, torch::randn({16, 3, 32, 32}), {}, torch::kCPU).embedding;
  }
  std::vector<int> labels(16);
  for (int i = 0; i < 16; ++i) labels[i] = i % 2;
  auto gaussian = models::FeatureGaussian::Fit(embeddings, labels, kHam10000NumClasses, 0.5);
  ASSERT_THAT(gaussian, IsOk());
  const std::string file = model_dir + "/" + kOodFeaturesFile;
  ASSERT_THAT(gaussian->Save(file), IsOk());
  auto digest = Sha256File(file);
  ASSERT_THAT(digest, IsOk());
  nlohmann::json manifest = nlohmann::json::parse(ReadBytes(model_dir + "/manifest.json"));
  manifest["ood"] = {{"method", "mahalanobis"},
                     {"threshold", 1e9},
                     {"reject_rate", 0.01},
                     {"features", {{"file", kOodFeaturesFile}, {"sha256", *digest}}}};
  std::ofstream(model_dir + "/manifest.json") << manifest.dump(2);

  auto spec = ReadModelSpec(model_dir);
  ASSERT_THAT(spec, IsOk());
  auto instance = MakeTorchLoader({.threads = 1, .precision = PrecisionChoice::kFp32})(*spec);
  ASSERT_THAT(instance, IsOk());
  const torch::Tensor x = torch::randn({2, 3, 32, 32});
  auto run = (*instance)->RunScored(x.data_ptr<float>(), 2);
  ASSERT_THAT(run, IsOk());
  ASSERT_EQ(run->logits.size(), 2u * kHam10000NumClasses);
  ASSERT_EQ(run->feature_scores.size(), 2u);
  torch::NoGradGuard no_grad;
  const models::LogitsAndEmbedding direct = models::ForwardWithEmbedding(**model, x, {}, torch::kCPU);
  auto expected = gaussian->Score(direct.embedding);
  ASSERT_THAT(expected, IsOk());
  for (int i = 0; i < 2; ++i) {
    EXPECT_NEAR(run->feature_scores[i], (*expected)[i].item<double>(), 1e-3 * (*expected)[i].item<double>());
    EXPECT_GT(run->feature_scores[i], 0);
  }
  // Plain Run() is unchanged.
  auto plain = (*instance)->Run(x.data_ptr<float>(), 2);
  ASSERT_THAT(plain, IsOk());
  EXPECT_EQ(*plain, run->logits);

  // The CLI predictor reads the same policy and Gaussian.
  auto predictor = predict::Predictor::Create(model_dir, {.precision = PrecisionChoice::kFp32});
  ASSERT_THAT(predictor, IsOk());
  auto p = (*predictor)->PredictFile(SourcePath("tests/fixtures/ood/cat.jpg"));
  ASSERT_THAT(p, IsOk());
  EXPECT_GT(p->ood_score, 0);
  EXPECT_FALSE(p->out_of_distribution) << "threshold 1e9";

  // Tampered file: refused.
  std::ofstream(file, std::ios::app) << "x";
  EXPECT_THAT(MakeTorchLoader({.threads = 1})(*spec), StatusIs(absl::StatusCode::kDataLoss, HasSubstr("SHA-256")));
  EXPECT_THAT(predict::Predictor::Create(model_dir, {}), StatusIs(absl::StatusCode::kDataLoss, ::testing::_));
  // A Gaussian of another width: refused.
  auto narrow = models::FeatureGaussian::Fit(torch::randn({8, 4}), {0, 1, 0, 1, 0, 1, 0, 1}, kHam10000NumClasses);
  ASSERT_THAT(narrow, IsOk());
  ASSERT_THAT(narrow->Save(file), IsOk());
  spec->ood.features_sha256.clear();
  EXPECT_THAT(MakeTorchLoader({.threads = 1})(*spec),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("width 4")));
}

}  // namespace
}  // namespace skinlesion::serving
