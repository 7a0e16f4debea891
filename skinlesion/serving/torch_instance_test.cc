// The LibTorch adapter served end to end: a tiny resnet18 checkpoint served from a
// DirectorySource gives the same probabilities as skinlesion::predict::Predictor.
#include "skinlesion/serving/torch_instance.h"

#include <atomic>
#include <fstream>
#include <future>
#include <sstream>
#include <thread>
#include <utility>
#include <vector>

#include <torch/torch.h>

#include "gtest/gtest.h"
#include "skinlesion/models/model_zoo.h"
#include "skinlesion/models/state_dict.h"
#include "skinlesion/predict/predictor.h"
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
  auto core = ServingCore::Create(options, std::move(*source), MakeTorchLoader({.threads = 1}));
  ASSERT_THAT(core, IsOk());
  const absl::Time until = absl::Now() + absl::Seconds(60);
  while (!(*core)->Ready() && absl::Now() < until) absl::SleepFor(absl::Milliseconds(5));
  ASSERT_TRUE((*core)->Ready()) << (*core)->Models()[0].last_error;

  auto predictor = predict::Predictor::Create(model_dir);
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
    for (int k = 0; k < kNumClasses; ++k) {
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

    EXPECT_THAT((*instance)->Explain(input, kNumClasses),
                StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("target class")));
  }
}

}  // namespace
}  // namespace skinlesion::serving
