#include "skinlesion/models/feature_ood.h"

#include <torch/torch.h>

#include "gtest/gtest.h"
#include "skinlesion/models/model_zoo.h"
#include "skinlesion/models/safetensors.h"
#include "skinlesion/testing/testing.h"

namespace skinlesion::models {
namespace {

using ::skinlesion::testing::IsOk;
using ::skinlesion::testing::StatusIs;
using ::skinlesion::testing::TempDir;
using ::testing::HasSubstr;

// Two classes in 3-D: class 0 around (0, 0, 0), class 1 around (10, 0, 0), unit
// spread on every axis.
torch::Tensor TwoClusters(std::vector<int>& labels) {
  torch::manual_seed(3);
  const torch::Tensor a = torch::randn({200, 3}, torch::kFloat64);
  torch::Tensor b = torch::randn({200, 3}, torch::kFloat64);
  b.select(1, 0) += 10;
  labels.assign(200, 0);
  labels.insert(labels.end(), 200, 1);
  return torch::cat({a, b});
}

TEST(FeatureGaussianTest, ScoresTheDistanceToTheNearestClassMean) {
  std::vector<int> labels;
  const torch::Tensor e = TwoClusters(labels);
  auto g = FeatureGaussian::Fit(e, labels, /*num_classes=*/7, /*shrinkage=*/0.01);
  ASSERT_THAT(g, IsOk());
  EXPECT_EQ(g->classes(), 2) << "classes without images get no mean";
  EXPECT_EQ(g->dim(), 3);
  const torch::Tensor probes = torch::tensor({{0.0, 0.0, 0.0}, {10.0, 0.0, 0.0}, {5.0, 0.0, 0.0},
                                              {0.0, 0.0, 4.0}, {0.0, 40.0, 0.0}},
                                             torch::kFloat64);
  auto s = g->Score(probes);
  ASSERT_THAT(s, IsOk());
  const auto v = s->accessor<double, 1>();
  // At a class mean: about 0. Unit spread: a point 4 sd away scores about 16.
  EXPECT_LT(v[0], 0.1);
  EXPECT_LT(v[1], 0.1);
  EXPECT_NEAR(v[3], 16.0, 3.0);
  EXPECT_GT(v[4], 1000.0);
  // Between the classes, 5 sd from each.
  EXPECT_NEAR(v[2], 25.0, 5.0);
  // The score is the minimum over classes of (e - mu)^T P (e - mu): with shrinkage 1 the
  // precision is D / tr(C) times the identity.
  auto iso = FeatureGaussian::Fit(e, labels, 7, /*shrinkage=*/1.0);
  ASSERT_THAT(iso, IsOk());
  auto si = iso->Score(probes.slice(0, 3, 4));
  ASSERT_THAT(si, IsOk());
  const torch::Tensor mean0 = e.slice(0, 0, 200).mean(0);
  const torch::Tensor mean1 = e.slice(0, 200, 400).mean(0);
  const torch::Tensor centred = torch::cat({e.slice(0, 0, 200) - mean0, e.slice(0, 200, 400) - mean1});
  const double trace = (centred.t().mm(centred) / 400).trace().item<double>();
  const double expected = 3.0 / trace * (probes[3] - mean0).pow(2).sum().item<double>();
  EXPECT_NEAR(si->item<double>(), expected, 1e-9);
}

TEST(FeatureGaussianTest, SavesAndLoadsTheSameScores) {
  std::vector<int> labels;
  const torch::Tensor e = TwoClusters(labels);
  auto g = FeatureGaussian::Fit(e, labels, 7);
  ASSERT_THAT(g, IsOk());
  TempDir dir;
  const std::string path = dir.path() + "/ood.safetensors";
  ASSERT_THAT(g->Save(path), IsOk());
  auto back = FeatureGaussian::Load(path);
  ASSERT_THAT(back, IsOk());
  EXPECT_DOUBLE_EQ(back->shrinkage(), g->shrinkage());
  auto a = g->Score(e.slice(0, 0, 20));
  auto b = back->Score(e.slice(0, 0, 20));
  ASSERT_THAT(a, IsOk());
  ASSERT_THAT(b, IsOk());
  EXPECT_TRUE(torch::allclose(*a, *b, 1e-4, 1e-4));
  EXPECT_THAT(g->Score(torch::zeros({2, 4})), StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("width 3")));
}

TEST(FeatureGaussianTest, RefusesBadInputAndMalformedFiles) {
  std::vector<int> labels;
  const torch::Tensor e = TwoClusters(labels);
  EXPECT_THAT(FeatureGaussian::Fit(e.slice(0, 0, 10), labels, 7), StatusIs(absl::StatusCode::kInvalidArgument, ::testing::_));
  EXPECT_THAT(FeatureGaussian::Fit(e, labels, 7, 0.0), StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("shrinkage")));
  std::vector<int> bad = labels;
  bad[5] = 9;
  EXPECT_THAT(FeatureGaussian::Fit(e, bad, 7), StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("out of range")));
  torch::Tensor nan = e.clone();
  nan[0][0] = NAN;
  EXPECT_THAT(FeatureGaussian::Fit(nan, labels, 7), StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("non-finite")));

  TempDir dir;
  const std::string missing = dir.path() + "/missing.safetensors";
  ASSERT_THAT(WriteSafetensors(missing, {{"class_means", torch::zeros({2, 3})}}), IsOk());
  EXPECT_THAT(FeatureGaussian::Load(missing), StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("precision")));
  const std::string shapes = dir.path() + "/shapes.safetensors";
  ASSERT_THAT(WriteSafetensors(shapes, {{"class_means", torch::zeros({2, 3})}, {"precision", torch::eye(4)}}), IsOk());
  EXPECT_THAT(FeatureGaussian::Load(shapes), StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("disagree")));
  const std::string inf = dir.path() + "/inf.safetensors";
  ASSERT_THAT(WriteSafetensors(inf, {{"class_means", torch::full({2, 3}, INFINITY)}, {"precision", torch::eye(3)}}),
              IsOk());
  EXPECT_THAT(FeatureGaussian::Load(inf), StatusIs(absl::StatusCode::kDataLoss, ::testing::_));
}

TEST(FeatureGaussianTest, EmbeddingComesFromTheSameForwardAsTheLogits) {
  torch::manual_seed(0);
  auto cnn = CreateModel("resnet18", {.image_size = 32});
  auto vit = CreateModel("vit_custom", {.image_size = 32});
  ASSERT_THAT(cnn, IsOk());
  ASSERT_THAT(vit, IsOk());
  EXPECT_TRUE(HasEmbedding(**cnn));
  EXPECT_FALSE(HasEmbedding(**vit));
  (*cnn)->eval();
  torch::NoGradGuard no_grad;
  const torch::Tensor x = torch::randn({3, 3, 32, 32});
  const Numerics fp32;
  const LogitsAndEmbedding out = ForwardWithEmbedding(**cnn, x, fp32, torch::kCPU);
  EXPECT_TRUE(torch::allclose(out.logits, ForwardLogits(**cnn, x, fp32, torch::kCPU), 1e-5, 1e-5));
  EXPECT_EQ(out.embedding.sizes(), (std::vector<int64_t>{3, 512}));
  EXPECT_EQ(out.embedding.scalar_type(), torch::kFloat32);
  EXPECT_THROW(ForwardWithEmbedding(**vit, x, fp32, torch::kCPU), c10::Error);
}

}  // namespace
}  // namespace skinlesion::models
