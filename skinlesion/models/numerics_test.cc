#include "skinlesion/models/numerics.h"

#include <torch/torch.h>

#include "gtest/gtest.h"
#include "skinlesion/models/model_zoo.h"

namespace skinlesion::models {
namespace {

std::shared_ptr<Classifier> MakeModel(const std::string& arch, int64_t size) {
  torch::manual_seed(0);
  ModelOptions options;
  options.image_size = size;
  auto model = CreateModel(arch, options);
  EXPECT_TRUE(model.ok()) << model.status();
  (*model)->eval();
  return *model;
}

TEST(NumericsTest, AutoFollowsTheCpuAndCnnsGoChannelsLastOnlyInBf16) {
  auto cnn = MakeModel("resnet18", 32);
  auto vit = MakeModel("vit_custom", 32);
  Numerics n = ChooseNumerics(PrecisionChoice::kAuto, *cnn, torch::kCPU, {}, /*native_bf16=*/true);
  EXPECT_EQ(n.precision, Precision::kBf16);
  EXPECT_TRUE(n.channels_last);
  EXPECT_EQ(n.Describe(), "bf16, channels-last");
  n = ChooseNumerics(PrecisionChoice::kAuto, *cnn, torch::kCPU, {}, /*native_bf16=*/false);
  EXPECT_EQ(n.precision, Precision::kFp32);
  EXPECT_FALSE(n.channels_last);
  EXPECT_EQ(n.Describe(), "fp32");
  n = ChooseNumerics(PrecisionChoice::kAuto, *vit, torch::kCPU, {}, /*native_bf16=*/true);
  EXPECT_EQ(n.precision, Precision::kBf16);
  EXPECT_FALSE(n.channels_last) << "the ViT has no 4-D activations to reorder";
  n = ChooseNumerics(PrecisionChoice::kAuto, *cnn, torch::kCPU, Precision::kFp32, true);
  EXPECT_EQ(n.precision, Precision::kFp32) << "a manifest pin wins over auto";
}

TEST(NumericsTest, PrepareConvertsWeightsOnceAndForwardReturnsFp32Logits) {
  auto model = MakeModel("resnet18", 32);
  const torch::Tensor x = torch::randn({3, 3, 32, 32});
  torch::Tensor reference;
  {
    torch::InferenceMode guard;
    reference = model->forward(x);
  }
  Numerics n;
  n.precision = Precision::kBf16;
  n.channels_last = true;
  PrepareModel(*model, n);
  for (const auto& p : model->named_parameters()) {
    EXPECT_EQ(p.value().scalar_type(), torch::kBFloat16) << p.key();
    if (p.value().dim() == 4) {
      EXPECT_TRUE(p.value().is_contiguous(torch::MemoryFormat::ChannelsLast)) << p.key();
    }
  }
  for (const auto& b : model->named_buffers()) {
    if (b.value().is_floating_point()) {
      EXPECT_EQ(b.value().scalar_type(), torch::kBFloat16) << b.key();
    }
  }
  torch::Tensor logits;
  {
    torch::InferenceMode guard;
    logits = ForwardLogits(*model, x, n, torch::kCPU);
  }
  EXPECT_EQ(logits.scalar_type(), torch::kFloat32);
  EXPECT_TRUE(logits.is_contiguous());
  ASSERT_EQ(logits.sizes(), reference.sizes());
  // bf16 keeps 8 significant bits: close to the fp32 logits, not equal.
  const double scale = reference.abs().max().item<double>();
  const double diff = (logits - reference).abs().max().item<double>();
  EXPECT_LT(diff, 0.05 * scale + 0.05) << "scale " << scale;
  EXPECT_GT(diff, 0.0) << "bf16 should not be bit-exact with fp32";
}

TEST(NumericsTest, Bf16VitRunsAndAgreesWithFp32) {
  auto model = MakeModel("vit_custom", 32);
  const torch::Tensor x = torch::randn({2, 3, 32, 32});
  torch::Tensor reference, logits;
  {
    torch::InferenceMode guard;
    reference = model->forward(x);
  }
  Numerics n;
  n.precision = Precision::kBf16;
  PrepareModel(*model, n);
  {
    torch::InferenceMode guard;
    logits = ForwardLogits(*model, x, n, torch::kCPU);
  }
  EXPECT_EQ(logits.scalar_type(), torch::kFloat32);
  const double scale = reference.abs().max().item<double>();
  EXPECT_LT((logits - reference).abs().max().item<double>(), 0.05 * scale + 0.05);
}

TEST(NumericsTest, ChannelsLastTrainingKeepsFp32MasterWeights) {
  auto model = MakeModel("resnet18", 32);
  model->train();
  ToChannelsLast(*model);
  for (const auto& p : model->named_parameters()) {
    EXPECT_EQ(p.value().scalar_type(), torch::kFloat32) << p.key();
  }
  torch::Tensor loss;
  {
    AutocastGuard autocast(/*cuda=*/false, /*fp16=*/false, /*bf16=*/true);
    loss = model->forward(torch::randn({2, 3, 32, 32}).contiguous(torch::MemoryFormat::ChannelsLast))
               .to(torch::kFloat32)
               .sum();
  }
  loss.backward();
  for (const auto& p : model->named_parameters()) {
    ASSERT_TRUE(p.value().grad().defined()) << p.key();
    EXPECT_EQ(p.value().grad().scalar_type(), torch::kFloat32) << p.key();
    EXPECT_TRUE(torch::isfinite(p.value().grad()).all().item<bool>()) << p.key();
  }
}

}  // namespace
}  // namespace skinlesion::models
