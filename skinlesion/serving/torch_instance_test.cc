// The LibTorch adapter served end to end: a tiny resnet18 checkpoint served from a
// DirectorySource gives the same probabilities as skinlesion::predict::Predictor.
#include "skinlesion/serving/torch_instance.h"

#include <fstream>
#include <future>
#include <sstream>
#include <thread>
#include <utility>
#include <vector>

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

}  // namespace
}  // namespace skinlesion::serving
