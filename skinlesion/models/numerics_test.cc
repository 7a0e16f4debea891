#include "skinlesion/models/numerics.h"

#include <torch/torch.h>

#include <algorithm>
#include <vector>

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

TEST(NumericsTest, DihedralViewsAreTheEightSymmetriesOfTheSquare) {
  const torch::Tensor x = torch::arange(2 * 3 * 4 * 4, torch::kFloat32).reshape({2, 3, 4, 4});
  EXPECT_TRUE(torch::equal(TtaView(x, Tta::kNone, 0), x));
  EXPECT_TRUE(torch::equal(TtaView(x, Tta::kFlips, 1), x.flip({3})));
  EXPECT_TRUE(torch::equal(TtaView(x, Tta::kFlips, 2), x.flip({2})));
  std::vector<torch::Tensor> views;
  for (int v = 0; v < TtaViewCount(Tta::kDihedral); ++v) {
    views.push_back(TtaView(x, Tta::kDihedral, v));
    // The first three are the flips' views.
    if (v < 3) {
      EXPECT_TRUE(torch::equal(views.back(), TtaView(x, Tta::kFlips, v))) << v;
    }
  }
  for (size_t a = 0; a < views.size(); ++a) {
    for (size_t b = a + 1; b < views.size(); ++b)
      EXPECT_FALSE(torch::equal(views[a], views[b])) << a << " " << b;
  }
  // Each rotation by 90 degrees is one of them.
  for (int k = 1; k < 4; ++k) {
    const torch::Tensor rotated = torch::rot90(x, k, {2, 3});
    EXPECT_TRUE(std::any_of(views.begin(), views.end(),
                            [&](const torch::Tensor& v) { return torch::equal(v, rotated); }))
        << "rot90 x" << k;
  }
  EXPECT_THROW(TtaView(torch::zeros({1, 3, 4, 6}), Tta::kDihedral, 4), c10::Error);
  EXPECT_THROW(TtaView(x, Tta::kFlips, 3), c10::Error);
}

TEST(NumericsTest, ForwardTtaAveragesTheViewsSoftmax) {
  auto model = MakeModel("resnet18", 32);
  const torch::Tensor x = torch::randn({2, 3, 32, 32});
  const Numerics fp32;
  torch::InferenceMode guard;
  const torch::Tensor own = ForwardLogits(*model, x, fp32, torch::kCPU);
  EXPECT_TRUE(torch::equal(ForwardTta(*model, x, Tta::kNone, fp32, torch::kCPU), own));
  for (const Tta tta : {Tta::kFlips, Tta::kDihedral}) {
    torch::Tensor mean = torch::zeros_like(own);
    for (int v = 0; v < TtaViewCount(tta); ++v) {
      mean += torch::softmax(ForwardLogits(*model, TtaView(x, tta, v), fp32, torch::kCPU), 1);
    }
    mean /= TtaViewCount(tta);
    const torch::Tensor got = ForwardTta(*model, x, tta, fp32, torch::kCPU);
    EXPECT_TRUE(torch::allclose(got, torch::log(mean), 1e-5, 1e-6)) << TtaName(tta);
    EXPECT_TRUE(torch::allclose(got.exp().sum(1), torch::ones({2}), 1e-5, 1e-6))
        << "log-probabilities";
    // The caller's own logits stand in for view 0.
    EXPECT_TRUE(
        torch::allclose(ForwardTta(*model, x, tta, fp32, torch::kCPU, own), got, 1e-6, 1e-6));
    EXPECT_FALSE(torch::allclose(got, torch::log_softmax(own, 1), 1e-3, 1e-3))
        << "the views differ";
  }
  // A batch the symmetries leave unchanged gives the image's own softmax.
  const torch::Tensor symmetric = torch::ones({1, 3, 32, 32});
  EXPECT_TRUE(torch::allclose(
      ForwardTta(*model, symmetric, Tta::kDihedral, fp32, torch::kCPU),
      torch::log_softmax(ForwardLogits(*model, symmetric, fp32, torch::kCPU), 1), 1e-5, 1e-5));
}

}  // namespace
}  // namespace skinlesion::models
