#include "skinlesion/explain/explain.h"

#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <string>

#include "gtest/gtest.h"
#include "skinlesion/common/logging.h"
#include "skinlesion/models/model_zoo.h"
#include "skinlesion/testing/testing.h"

namespace skinlesion::explain {
namespace {

using ::skinlesion::testing::IsOk;
using ::skinlesion::testing::StatusIs;

std::shared_ptr<models::Classifier> Make(const std::string& arch, int64_t image_size = 64) {
  torch::manual_seed(3);
  models::ModelOptions options;
  options.image_size = image_size;
  options.vit = {16, 64, 2, 4, 128};
  auto model = models::CreateModel(arch, options);
  SL_CHECK(model.ok()) << model.status();
  (*model)->eval();
  return *model;
}

torch::Tensor Input(int64_t size) {
  torch::manual_seed(1);
  return torch::randn({1, 3, size, size});
}

void ExpectValidHeat(const Heatmap& h, int height, int width) {
  EXPECT_EQ(h.height, height);
  EXPECT_EQ(h.width, width);
  ASSERT_EQ(h.heat.size(), static_cast<size_t>(height * width));
  for (float v : h.heat) {
    EXPECT_TRUE(std::isfinite(v));
    EXPECT_GE(v, 0.0f);
    EXPECT_LE(v, 1.0f);
  }
}

class ExplainTest : public ::testing::Test {
 protected:
  void SetUp() override { torch::set_num_threads(2); }
};

TEST_F(ExplainTest, FeatureSplitReproducesForward) {
  for (const std::string arch : {"resnet18", "densenet121", "efficientnet_b0", "vgg16_bn"}) {
    SCOPED_TRACE(arch);
    auto model = Make(arch);
    ASSERT_TRUE(model->HasFeatureMap());
    torch::NoGradGuard no_grad;
    const torch::Tensor x = torch::randn({2, 3, 64, 64});
    const torch::Tensor split = model->ForwardHead(model->ForwardFeatures(x));
    EXPECT_TRUE(torch::allclose(split, model->forward(x), 1e-5, 1e-5));
  }
  EXPECT_FALSE(Make("vit_custom")->HasFeatureMap());
}

// The map is at the feature-grid resolution: 1/32 of the input, 1/16 for VGG (its
// last ReLU is before the last max-pool).
TEST_F(ExplainTest, GradCamShapeAndRangeForEveryCnnFamily) {
  for (const std::string arch : {"resnet18", "densenet121", "efficientnet_b0", "vgg16_bn"}) {
    SCOPED_TRACE(arch);
    const int side = arch == "vgg16_bn" ? 6 : 3;
    auto model = Make(arch);
    const torch::Tensor x = Input(96);
    bool any_nonzero = false;
    for (int t = 0; t < 7; ++t) {
      absl::StatusOr<Heatmap> h = GradCam(*model, x, t);
      ASSERT_THAT(h, IsOk());
      EXPECT_EQ(h->method, kGradCam);
      ExpectValidHeat(*h, side, side);
      const float max = *std::max_element(h->heat.begin(), h->heat.end());
      if (max > 0) {
        any_nonzero = true;
        EXPECT_FLOAT_EQ(max, 1.0f);
      }
      EXPECT_EQ(h->logits.size(), 7u);
    }
    EXPECT_TRUE(any_nonzero);
  }
}

TEST_F(ExplainTest, ResNet50At224GivesSevenBySeven) {
  auto model = Make("resnet50");
  absl::StatusOr<Heatmap> h = GradCam(*model, Input(224), 2);
  ASSERT_THAT(h, IsOk());
  ExpectValidHeat(*h, 7, 7);
}

TEST_F(ExplainTest, TargetClassChangesTheMap) {
  auto model = Make("resnet18");
  const torch::Tensor x = Input(128);
  std::vector<std::vector<float>> maps;
  for (int t = 0; t < 7; ++t) {
    absl::StatusOr<Heatmap> h = GradCam(*model, x, t);
    ASSERT_THAT(h, IsOk());
    maps.push_back(h->heat);
  }
  std::sort(maps.begin(), maps.end());
  EXPECT_GE(std::unique(maps.begin(), maps.end()) - maps.begin(), 3);
}

TEST_F(ExplainTest, DeterministicAndLeavesTheModelUntouched) {
  for (const std::string arch : {"resnet18", "vit_custom"}) {
    SCOPED_TRACE(arch);
    auto model = Make(arch);
    const torch::Tensor x = Input(64);
    torch::Tensor logits;
    {
      torch::NoGradGuard no_grad;
      logits = model->forward(x);
    }
    absl::StatusOr<Heatmap> a = Explain(*model, x, 1);
    absl::StatusOr<Heatmap> b = Explain(*model, x, 1);
    ASSERT_THAT(a, IsOk());
    ASSERT_THAT(b, IsOk());
    EXPECT_EQ(a->heat, b->heat);
    for (const auto& p : model->parameters()) EXPECT_FALSE(p.grad().defined());
    for (int k = 0; k < 7; ++k) EXPECT_NEAR(a->logits[k], logits[0][k].item<float>(), 1e-4);
  }
}

TEST_F(ExplainTest, ZeroGradientGivesAZeroMapNotNaN) {
  auto model = Make("resnet18");
  {
    torch::NoGradGuard no_grad;
    for (auto& p : model->named_parameters()) {
      if (p.key().rfind("fc.", 0) == 0) p.value().zero_();
    }
  }
  absl::StatusOr<Heatmap> h = GradCam(*model, Input(64), 0);
  ASSERT_THAT(h, IsOk());
  ExpectValidHeat(*h, 2, 2);
  for (float v : h->heat) EXPECT_EQ(v, 0.0f);
}

TEST_F(ExplainTest, ViTAttentionIsARowStochasticMatrixAndForwardIsUnchanged) {
  auto model = Make("vit_custom", 64);
  auto* vit = dynamic_cast<models::VisionTransformerImpl*>(model.get());
  ASSERT_NE(vit, nullptr);
  torch::NoGradGuard no_grad;
  const torch::Tensor x = torch::randn({2, 3, 64, 64});
  std::vector<torch::Tensor> attention;
  const torch::Tensor logits = vit->ForwardWithAttention(x, &attention);
  EXPECT_TRUE(torch::allclose(logits, vit->forward(x), 1e-5, 1e-5));
  ASSERT_EQ(attention.size(), 2u);
  for (const torch::Tensor& a : attention) {
    EXPECT_EQ(a.sizes(), torch::IntArrayRef({2, 4, 17, 17}));
    EXPECT_TRUE(torch::allclose(a.sum(-1), torch::ones({2, 4, 17}), 1e-5, 1e-5));
  }
}

TEST_F(ExplainTest, AttentionRolloutShapeAndRange) {
  auto model = Make("vit_custom", 96);
  absl::StatusOr<Heatmap> h = Explain(*model, Input(96), 4);
  ASSERT_THAT(h, IsOk());
  EXPECT_EQ(h->method, kAttentionRollout);
  ExpectValidHeat(*h, 6, 6);
  EXPECT_FLOAT_EQ(*std::max_element(h->heat.begin(), h->heat.end()), 1.0f);
  EXPECT_FLOAT_EQ(*std::min_element(h->heat.begin(), h->heat.end()), 0.0f);
  // Another input, another map.
  absl::StatusOr<Heatmap> other = Explain(*model, torch::randn({1, 3, 96, 96}), 4);
  ASSERT_THAT(other, IsOk());
  EXPECT_NE(h->heat, other->heat);
}

TEST_F(ExplainTest, BadRequestsAreErrorsNotCrashes) {
  auto cnn = Make("resnet18");
  auto vit = Make("vit_custom");
  EXPECT_THAT(GradCam(*cnn, torch::randn({2, 3, 64, 64}), 0), StatusIs(absl::StatusCode::kInvalidArgument, ::testing::_));
  EXPECT_THAT(GradCam(*cnn, torch::randn({1, 1, 64, 64}), 0), StatusIs(absl::StatusCode::kInvalidArgument, ::testing::_));
  EXPECT_THAT(GradCam(*cnn, torch::randn({3, 64, 64}), 0), StatusIs(absl::StatusCode::kInvalidArgument, ::testing::_));
  EXPECT_THAT(GradCam(*cnn, torch::Tensor(), 0), StatusIs(absl::StatusCode::kInvalidArgument, ::testing::_));
  EXPECT_THAT(GradCam(*cnn, Input(64), 7), StatusIs(absl::StatusCode::kInvalidArgument, ::testing::_));
  EXPECT_THAT(GradCam(*cnn, Input(64), -1), StatusIs(absl::StatusCode::kInvalidArgument, ::testing::_));
  EXPECT_THAT(GradCam(*vit, Input(64), 0), StatusIs(absl::StatusCode::kInvalidArgument, ::testing::_));
  EXPECT_THAT(Explain(*vit, Input(64), 9), StatusIs(absl::StatusCode::kInvalidArgument, ::testing::_));
  EXPECT_THAT(Explain(*vit, torch::randn({1, 3, 72, 64}), 0),
              StatusIs(absl::StatusCode::kInvalidArgument, ::testing::_));
  {
    c10::InferenceMode guard;
    EXPECT_THAT(GradCam(*cnn, torch::randn({1, 3, 64, 64}), 0),
                StatusIs(absl::StatusCode::kFailedPrecondition, ::testing::_));
  }
  cnn->train();
  EXPECT_THAT(GradCam(*cnn, Input(64), 0), StatusIs(absl::StatusCode::kFailedPrecondition, ::testing::_));
}

}  // namespace
}  // namespace skinlesion::explain
