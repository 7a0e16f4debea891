#include "skinlesion/train/mix.h"

#include <torch/torch.h>

#include <cmath>

#include "gtest/gtest.h"

namespace skinlesion::train {
namespace {

// Image i is filled with the value i + 1, so every pixel names its source image.
torch::Tensor Labelled(int64_t n, int64_t h = 20, int64_t w = 30) {
  return torch::arange(1, n + 1, torch::kFloat32)
      .view({n, 1, 1, 1})
      .expand({n, 3, h, w})
      .contiguous();
}

TEST(MixTest, BetaDrawsHaveTheRightMean) {
  for (double a : {0.2, 0.4, 1.0, 2.0}) {
    Rng rng(7);
    double sum = 0, sum_sq = 0;
    const int n = 20000;
    for (int i = 0; i < n; ++i) {
      const double x = SampleSymmetricBeta(a, rng);
      ASSERT_GE(x, 0.0);
      ASSERT_LE(x, 1.0);
      sum += x;
      sum_sq += x * x;
    }
    const double mean = sum / n, var = sum_sq / n - mean * mean;
    EXPECT_NEAR(mean, 0.5, 0.01) << "alpha " << a;
    // Var of Beta(a, a) = 1 / (4 (2a + 1)).
    EXPECT_NEAR(var, 1.0 / (4 * (2 * a + 1)), 0.01) << "alpha " << a;
  }
}

TEST(MixTest, DisabledOrSingleImageLeavesTheBatchAlone) {
  Rng rng(1);
  const auto x = Labelled(4);
  const auto y = torch::tensor({0, 1, 2, 3}, torch::kInt64);
  MixedBatch b = MixBatch(x, y, MixOptions{}, rng);
  EXPECT_EQ(b.kind, MixKind::kNone);
  EXPECT_TRUE(b.images.equal(x));
  MixOptions o{.mixup_alpha = 0.4};
  b = MixBatch(x.slice(0, 0, 1), y.slice(0, 0, 1), o, rng);
  EXPECT_EQ(b.kind, MixKind::kNone);
  o.prob = 0;
  EXPECT_EQ(MixBatch(x, y, o, rng).kind, MixKind::kNone);
}

TEST(MixTest, MixupBlendsEachImageWithItsPartner) {
  Rng rng(3);
  const auto x = Labelled(8);
  const auto y = torch::arange(8, torch::kInt64);
  const MixedBatch b = MixBatch(x, y, MixOptions{.mixup_alpha = 0.4}, rng);
  ASSERT_EQ(b.kind, MixKind::kMixup);
  ASSERT_GE(b.lambda, 0.0);
  ASSERT_LE(b.lambda, 1.0);
  for (int64_t i = 0; i < 8; ++i) {
    const int64_t partner = b.partner_targets[i].item<int64_t>();
    const double expected = b.lambda * (i + 1) + (1 - b.lambda) * (partner + 1);
    EXPECT_NEAR(b.images[i].min().item<double>(), expected, 1e-5);
    EXPECT_NEAR(b.images[i].max().item<double>(), expected, 1e-5);
  }
  // The partners are a permutation of the batch.
  EXPECT_TRUE(std::get<0>(b.partner_targets.sort()).equal(y));
  EXPECT_TRUE(x.equal(Labelled(8))) << "the input batch must not be modified";
}

TEST(MixTest, CutMixPastesOneBoxAndLambdaIsTheShareLeft) {
  for (uint64_t seed = 0; seed < 20; ++seed) {
    Rng rng(seed);
    const int64_t n = 6, h = 20, w = 30;
    const auto x = Labelled(n, h, w);
    const auto y = torch::arange(n, torch::kInt64);
    const MixedBatch b = MixBatch(x, y, MixOptions{.cutmix_alpha = 1.0}, rng);
    ASSERT_EQ(b.kind, MixKind::kCutMix);
    for (int64_t i = 0; i < n; ++i) {
      const int64_t partner = b.partner_targets[i].item<int64_t>();
      const auto img = b.images[i];
      const auto own = img.eq(static_cast<float>(i + 1));
      const auto pasted = img.eq(static_cast<float>(partner + 1));
      // Every pixel comes from the image or its partner.
      EXPECT_TRUE(own.logical_or(pasted).all().item<bool>());
      if (partner == i) continue;
      const double own_share = own.to(torch::kFloat64).mean().item<double>();
      EXPECT_NEAR(own_share, b.lambda, 1e-9) << "seed " << seed;
      // The pasted pixels form one rectangle, the same in every channel.
      const auto mask = pasted[0];
      const auto rows = mask.any(1).nonzero(), cols = mask.any(0).nonzero();
      if (rows.numel() == 0) continue;
      const int64_t y0 = rows.min().item<int64_t>(), y1 = rows.max().item<int64_t>() + 1;
      const int64_t x0 = cols.min().item<int64_t>(), x1 = cols.max().item<int64_t>() + 1;
      EXPECT_EQ(mask.sum().item<int64_t>(), (y1 - y0) * (x1 - x0));
      EXPECT_TRUE(pasted[1].equal(mask));
    }
  }
}

TEST(MixTest, ChannelsLastBatchesMixLikeContiguousOnes) {
  const auto x = Labelled(4, 16, 16);
  const auto y = torch::arange(4, torch::kInt64);
  for (const MixOptions o : {MixOptions{.mixup_alpha = 0.4}, MixOptions{.cutmix_alpha = 1.0}}) {
    Rng a(5), b(5);
    const MixedBatch plain = MixBatch(x, y, o, a);
    const MixedBatch nhwc = MixBatch(x.contiguous(torch::MemoryFormat::ChannelsLast), y, o, b);
    ASSERT_NE(plain.kind, MixKind::kNone);
    EXPECT_TRUE(nhwc.images.equal(plain.images));
    EXPECT_EQ(nhwc.lambda, plain.lambda);
  }
}

TEST(MixTest, SameSeedSameMix) {
  const auto x = Labelled(8);
  const auto y = torch::arange(8, torch::kInt64);
  const MixOptions o{.mixup_alpha = 0.4, .cutmix_alpha = 1.0};
  Rng a(11), b(11);
  for (int i = 0; i < 5; ++i) {
    const MixedBatch m = MixBatch(x, y, o, a), n = MixBatch(x, y, o, b);
    EXPECT_EQ(m.kind, n.kind);
    EXPECT_EQ(m.lambda, n.lambda);
    EXPECT_TRUE(m.images.equal(n.images));
  }
}

// The draws of the trainer's mixing steps (seed 42, epoch 0), pinned: the Python
// reference (bench/reference/train_reference.py mix_batch) pins the same values in
// tools/cli_ml_test.sh, so the two trainers mix the same batches the same way.
TEST(MixTest, DrawsArePinnedForThePythonReference) {
  const auto x = Labelled(8);
  const auto y = torch::arange(8, torch::kInt64);
  const MixOptions o{.mixup_alpha = 0.2, .cutmix_alpha = 1.0, .prob = 0.5};
  auto mix = [&](uint64_t step) {
    Rng rng(DeriveSeed({42, 0x6D6978, 0, step, 0}));
    return MixBatch(x, y, o, rng);
  };
  const MixedBatch cut = mix(0);
  ASSERT_EQ(cut.kind, MixKind::kCutMix);
  EXPECT_TRUE(cut.partner_targets.equal(torch::tensor({4, 5, 7, 0, 1, 3, 6, 2}, torch::kInt64)));
  EXPECT_DOUBLE_EQ(cut.lambda, 0.525);
  // Image 0 holds its partner's pixels in rows 0-14, columns 11-29 of 20 x 30.
  const auto box = cut.images[0][0].ne(1).nonzero();
  EXPECT_TRUE(box.amin(0).equal(torch::tensor({0, 11}, torch::kInt64)));
  EXPECT_TRUE(box.amax(0).equal(torch::tensor({14, 29}, torch::kInt64)));
  EXPECT_EQ(mix(2).kind, MixKind::kNone);
  const MixedBatch blend = mix(3);
  ASSERT_EQ(blend.kind, MixKind::kMixup);
  EXPECT_TRUE(blend.partner_targets.equal(torch::tensor({6, 2, 1, 7, 4, 3, 0, 5}, torch::kInt64)));
  EXPECT_DOUBLE_EQ(blend.lambda, 0.0004579783919513169);
}

TEST(MixTest, BothMethodsAreUsedAndProbabilityIsRespected) {
  const auto x = Labelled(4);
  const auto y = torch::arange(4, torch::kInt64);
  Rng rng(9);
  int counts[3] = {0, 0, 0};
  const int n = 2000;
  for (int i = 0; i < n; ++i) {
    ++counts[static_cast<int>(
        MixBatch(x, y, {.mixup_alpha = 0.4, .cutmix_alpha = 1.0, .prob = 0.5}, rng).kind)];
  }
  EXPECT_NEAR(counts[0] / static_cast<double>(n), 0.5, 0.05);
  EXPECT_NEAR(counts[1] / static_cast<double>(n), 0.25, 0.04);
  EXPECT_NEAR(counts[2] / static_cast<double>(n), 0.25, 0.04);
}

TEST(MixTest, MixedLossIsTheLambdaWeightedSum) {
  torch::manual_seed(0);
  const auto logits = torch::randn({4, 7});
  const auto y = torch::tensor({0, 1, 2, 3}, torch::kInt64);
  const auto partners = torch::tensor({3, 2, 1, 0}, torch::kInt64);
  LossOptions o;
  o.kind = LossOptions::Kind::kWeightedCrossEntropy;
  o.class_weights = {1, 2, 3, 4, 5, 6, 7};
  o.label_smoothing = 0.1;
  MixedBatch b;
  EXPECT_NEAR(MixedLoss(logits, y, b, o).item<double>(), ComputeLoss(logits, y, o).item<double>(),
              1e-6);
  b.kind = MixKind::kMixup;
  b.partner_targets = partners;
  b.lambda = 0.3;
  EXPECT_NEAR(MixedLoss(logits, y, b, o).item<double>(),
              0.3 * ComputeLoss(logits, y, o).item<double>() +
                  0.7 * ComputeLoss(logits, partners, o).item<double>(),
              1e-6);
  // Gradients flow to the logits.
  const auto l = logits.clone().requires_grad_(true);
  MixedLoss(l, y, b, o).backward();
  EXPECT_GT(l.grad().abs().sum().item<double>(), 0);
}

// A teacher's answers follow the images: each row mixed with its partner's by lambda.
TEST(MixTest, TeacherAnswersAreMixedAsTheImages) {
  const auto q = torch::tensor({{1.0f, 0.0f}, {0.0f, 1.0f}, {0.5f, 0.5f}});
  MixedBatch none;
  EXPECT_TRUE(torch::equal(MixedTeacher(q, none), q));
  MixOptions o;
  o.mixup_alpha = 0.4;
  Rng rng(11);
  const auto images = torch::arange(3, torch::kFloat32).view({3, 1, 1, 1});
  const MixedBatch b = MixBatch(images, torch::tensor({0, 1, 0}, torch::kInt64), o, rng);
  ASSERT_EQ(b.kind, MixKind::kMixup);
  const auto mixed = MixedTeacher(q, b);
  for (int64_t i = 0; i < 3; ++i) {
    const int64_t j = b.partner_index[i].item<int64_t>();
    // The same lambda and partner as the image: image i is lambda i + (1 - lambda) j.
    EXPECT_NEAR(b.images[i].item<double>(), b.lambda * i + (1 - b.lambda) * j, 1e-6);
    for (int64_t k = 0; k < 2; ++k) {
      EXPECT_NEAR(mixed[i][k].item<double>(),
                  b.lambda * q[i][k].item<double>() + (1 - b.lambda) * q[j][k].item<double>(),
                  1e-6);
    }
  }
  EXPECT_NEAR(mixed.sum().item<double>(), 3.0, 1e-5);
}

}  // namespace
}  // namespace skinlesion::train
