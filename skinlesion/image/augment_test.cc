#include "skinlesion/image/augment.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <functional>
#include <memory>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "gtest/gtest.h"
#include "opencv2/core.hpp"
#include "opencv2/imgproc.hpp"
#include "skinlesion/common/rng.h"
#include "skinlesion/image/decode.h"
#include "skinlesion/testing/testing.h"

namespace skinlesion {
namespace {

using ::skinlesion::testing::IsOk;
using ::skinlesion::testing::StatusIs;
using ::testing::HasSubstr;

// Smooth colour gradients plus per-pixel texture: every op has something to change.
cv::Mat Textured(int rows, int cols, uint64_t seed = 3) {
  cv::Mat rgb(rows, cols, CV_8UC3);
  Rng rng(seed);
  for (int y = 0; y < rows; ++y) {
    for (int x = 0; x < cols; ++x) {
      const int t = static_cast<int>(rng.UniformInt(40));
      rgb.at<cv::Vec3b>(y, x) =
          cv::Vec3b(static_cast<uint8_t>(30 + (150 * x) / cols + t),
                    static_cast<uint8_t>(40 + (120 * y) / rows + t), static_cast<uint8_t>(90 + t));
    }
  }
  return rgb;
}

cv::Mat Constant(int rows, int cols, uint8_t r, uint8_t g, uint8_t b) {
  return cv::Mat(rows, cols, CV_8UC3, cv::Scalar(r, g, b));
}

bool Same(const cv::Mat& a, const cv::Mat& b) {
  return a.size() == b.size() && a.type() == b.type() && cv::norm(a, b, cv::NORM_INF) == 0.0;
}

double MaxDiff(const cv::Mat& a, const cv::Mat& b) { return cv::norm(a, b, cv::NORM_INF); }

// The image after one op applied with the given seed.
cv::Mat Augmented(const Augmentation& op, const cv::Mat& img, uint64_t seed) {
  cv::Mat out = img.clone();
  Rng rng(seed);
  op.Apply(out, rng);
  return out;
}

std::vector<uint32_t> PixelMultiset(const cv::Mat& img) {
  std::vector<uint32_t> pixels;
  for (int y = 0; y < img.rows; ++y) {
    for (int x = 0; x < img.cols; ++x) {
      const cv::Vec3b p = img.at<cv::Vec3b>(y, x);
      pixels.push_back((uint32_t{p[0]} << 16) | (uint32_t{p[1]} << 8) | p[2]);
    }
  }
  std::sort(pixels.begin(), pixels.end());
  return pixels;
}

// Every op with p = 1 and parameters that make it do something.
std::vector<std::shared_ptr<const Augmentation>> AllOps(int output_size) {
  return {
      std::make_shared<HorizontalFlip>(1.0),
      std::make_shared<VerticalFlip>(1.0),
      std::make_shared<RandomRotate90>(1.0),
      std::make_shared<ShiftScaleRotate>(0.1, 0.2, 45.0, 1.0),
      std::make_shared<RandomResizedCrop>(output_size, output_size),
      std::make_shared<BrightnessContrast>(0.3, 0.3, 1.0),
      std::make_shared<HueSaturationValue>(20, 30, 20, 1.0),
      std::make_shared<RandomIlluminant>(0.2, 1.0),
      std::make_shared<ColorJitter>(0.2, 0.2, 20, 10, 1.0),
      std::make_shared<Clahe>(2.0, 8, 1.0),
      std::make_shared<ElasticTransform>(120.0, 6.0, 1.0),
      std::make_shared<GaussianBlur>(3, 7, 1.0),
      std::make_shared<GaussianNoise>(3.0, 7.0, 1.0),
      std::make_shared<CoarseDropout>(8, 0.1, 1, 0, 1.0),
  };
}

TEST(ImageAugmentTest, FlipTwiceIsIdentityAndKeepsThePixelMultiset) {
  const cv::Mat img = Textured(31, 47);
  for (const auto& op : std::vector<std::shared_ptr<const Augmentation>>{
           std::make_shared<HorizontalFlip>(1.0), std::make_shared<VerticalFlip>(1.0)}) {
    SCOPED_TRACE(op->Name());
    cv::Mat once = Augmented(*op, img, 1);
    EXPECT_FALSE(Same(once, img));
    EXPECT_EQ(PixelMultiset(once), PixelMultiset(img));
    cv::Mat twice = once.clone();
    Rng rng(2);
    op->Apply(twice, rng);
    EXPECT_TRUE(Same(twice, img));
  }
  const cv::Mat h = Augmented(HorizontalFlip(1.0), img, 1);
  const cv::Mat v = Augmented(VerticalFlip(1.0), img, 1);
  EXPECT_EQ(h.at<cv::Vec3b>(3, 0), img.at<cv::Vec3b>(3, 46));
  EXPECT_EQ(v.at<cv::Vec3b>(0, 5), img.at<cv::Vec3b>(30, 5));
}

TEST(ImageAugmentTest, Rotate90FourTimesIsIdentity) {
  const cv::Mat img = Textured(20, 30);
  cv::Mat r = img.clone();
  for (int i = 0; i < 4; ++i) {
    r = Rotate90(r, 1);
    if (i < 3) {
      EXPECT_FALSE(r.size() == img.size() && Same(r, img));
    }
  }
  EXPECT_TRUE(Same(r, img));
  EXPECT_EQ(Rotate90(img, 1).size(), cv::Size(20, 30));
  // Counter-clockwise: the top-right corner goes to the top-left.
  EXPECT_EQ(Rotate90(img, 1).at<cv::Vec3b>(0, 0), img.at<cv::Vec3b>(0, 29));
  EXPECT_TRUE(Same(Rotate90(img, -1), Rotate90(img, 3)));
  EXPECT_TRUE(Same(Rotate90(img, 6), Rotate90(img, 2)));
  EXPECT_TRUE(Same(Rotate90(img, 0), img));
}

TEST(ImageAugmentTest, RandomRotate90GivesEachQuarterTurn) {
  const cv::Mat img = Textured(24, 24);
  std::set<int> seen;
  for (uint64_t seed = 0; seed < 40; ++seed) {
    const cv::Mat out = Augmented(RandomRotate90(1.0), img, seed);
    int match = -1;
    for (int k = 0; k < 4; ++k) {
      if (Same(out, Rotate90(img, k))) match = k;
    }
    ASSERT_NE(match, -1) << "seed " << seed;
    seen.insert(match);
  }
  EXPECT_EQ(seen.size(), 4u);
  // Non-square: odd turns swap the sides.
  const cv::Mat wide = Textured(10, 30);
  std::set<std::pair<int, int>> sizes;
  for (uint64_t seed = 0; seed < 20; ++seed) {
    const cv::Mat out = Augmented(RandomRotate90(1.0), wide, seed);
    sizes.insert({out.cols, out.rows});
  }
  EXPECT_EQ(sizes, (std::set<std::pair<int, int>>{{30, 10}, {10, 30}}));
}

TEST(ImageAugmentTest, ShiftScaleRotateWithZeroRangesIsIdentity) {
  const cv::Mat img = Textured(40, 50);
  for (uint64_t seed = 0; seed < 5; ++seed) {
    EXPECT_TRUE(Same(Augmented(ShiftScaleRotate(0.0, 0.0, 0.0, 1.0), img, seed), img));
  }
  // A constant image stays constant under any affine map (reflected border).
  const cv::Mat flat = Constant(40, 50, 12, 34, 56);
  for (uint64_t seed = 0; seed < 5; ++seed) {
    EXPECT_TRUE(Same(Augmented(ShiftScaleRotate(0.2, 0.3, 90.0, 1.0), flat, seed), flat));
  }
  EXPECT_FALSE(Same(Augmented(ShiftScaleRotate(0.1, 0.1, 30.0, 1.0), img, 1), img));
}

TEST(ImageAugmentTest, RandomResizedCropYieldsTheRequestedSize) {
  const RandomResizedCrop op(48, 64);
  for (const cv::Size size :
       {cv::Size(100, 80), cv::Size(30, 300), cv::Size(1, 1), cv::Size(500, 3), cv::Size(64, 48)}) {
    for (uint64_t seed = 0; seed < 10; ++seed) {
      const cv::Mat out = Augmented(op, Textured(size.height, size.width), seed);
      ASSERT_EQ(out.size(), cv::Size(64, 48)) << size;
      ASSERT_EQ(out.type(), CV_8UC3);
    }
  }
  // Even when the probability draw fails, the output has the configured size.
  const cv::Mat skipped =
      Augmented(RandomResizedCrop(32, 32, 0.08, 1.0, 0.75, 4.0 / 3, 0.0), Textured(50, 70), 1);
  EXPECT_EQ(skipped.size(), cv::Size(32, 32));
  // Full scale and ratio 1 on a square image: just a resize.
  const cv::Mat square = Textured(60, 60);
  cv::Mat resized;
  cv::resize(square, resized, cv::Size(30, 30), 0, 0, cv::INTER_LINEAR);
  EXPECT_TRUE(Same(Augmented(RandomResizedCrop(30, 30, 1.0, 1.0, 1.0, 1.0), square, 4), resized));
}

TEST(ImageAugmentTest, BrightnessContrastZeroIsIdentityAndBrightnessIsMonotone) {
  const cv::Mat img = Textured(30, 30);
  for (uint64_t seed = 0; seed < 5; ++seed) {
    EXPECT_TRUE(Same(Augmented(BrightnessContrast(0.0, 0.0, 1.0), img, seed), img));
  }
  cv::Mat ramp(1, 256, CV_8UC3);
  for (int v = 0; v < 256; ++v) ramp.at<cv::Vec3b>(0, v) = cv::Vec3b::all(static_cast<uint8_t>(v));
  cv::Mat previous;
  for (double beta = -100; beta <= 100; beta += 12.5) {
    cv::Mat out = ramp.clone();
    AdjustBrightnessContrast(out, 1.0, beta);
    for (int v = 1; v < 256; ++v) {  // Monotone in the input value...
      ASSERT_GE(out.at<cv::Vec3b>(0, v)[0], out.at<cv::Vec3b>(0, v - 1)[0]);
    }
    if (!previous.empty()) {  // ...and in the brightness shift.
      for (int v = 0; v < 256; ++v) {
        ASSERT_GE(out.at<cv::Vec3b>(0, v)[0], previous.at<cv::Vec3b>(0, v)[0]);
      }
    }
    previous = out;
  }
  cv::Mat brighter = img.clone();
  AdjustBrightnessContrast(brighter, 1.0, 20.0);
  EXPECT_NEAR(cv::mean(brighter)[0], cv::mean(img)[0] + 20.0, 0.5);
  cv::Mat contrast = Constant(1, 2, 100, 100, 100);
  contrast.at<cv::Vec3b>(0, 1) = cv::Vec3b::all(200);
  AdjustBrightnessContrast(contrast, 1.5, 0.0);
  EXPECT_EQ(contrast.at<cv::Vec3b>(0, 0), cv::Vec3b::all(150));
  EXPECT_EQ(contrast.at<cv::Vec3b>(0, 1), cv::Vec3b::all(255));  // Saturated.
}

TEST(ImageAugmentTest, HueSaturationJitterKeepsGrayPixelsGray) {
  cv::Mat gray(16, 16, CV_8UC3);
  for (int y = 0; y < 16; ++y) {
    for (int x = 0; x < 16; ++x) gray.at<cv::Vec3b>(y, x) = cv::Vec3b::all(uint8_t(y * 16 + x));
  }
  for (uint64_t seed = 0; seed < 10; ++seed) {
    // Hue and saturation only: a gray image is unchanged.
    EXPECT_TRUE(Same(Augmented(HueSaturationValue(20, 30, 0, 1.0), gray, seed), gray)) << seed;
    // With value too it stays gray.
    const cv::Mat out = Augmented(HueSaturationValue(20, 30, 20, 1.0), gray, seed);
    for (int y = 0; y < 16; ++y) {
      for (int x = 0; x < 16; ++x) {
        const cv::Vec3b p = out.at<cv::Vec3b>(y, x);
        ASSERT_TRUE(p[0] == p[1] && p[1] == p[2]) << p;
      }
    }
  }
  // Colour does change, and zero shifts change nothing.
  const cv::Mat img = Textured(20, 20);
  cv::Mat shifted = img.clone();
  ShiftHueSaturationValue(shifted, 30, 0, 0);
  EXPECT_GT(MaxDiff(shifted, img), 20);
  cv::Mat unchanged = img.clone();
  ShiftHueSaturationValue(unchanged, 0, 0, 0);
  EXPECT_TRUE(Same(unchanged, img));
  // Hue wraps: +90 twice is +180 = the identity in OpenCV units (up to rounding).
  cv::Mat red = Constant(2, 2, 200, 30, 30);
  ShiftHueSaturationValue(red, 90, 0, 0);
  ShiftHueSaturationValue(red, 90, 0, 0);
  EXPECT_LE(MaxDiff(red, Constant(2, 2, 200, 30, 30)), 2);
}

TEST(ImageAugmentTest, ClahePreservesShapeAndConstantImages) {
  const cv::Mat img = Textured(64, 48);
  const cv::Mat out = Augmented(Clahe(2.0, 8, 1.0), img, 1);
  EXPECT_EQ(out.size(), img.size());
  EXPECT_EQ(out.type(), CV_8UC3);
  // 256 x 256: 32 x 32 tiles, large enough for the clip limit to mean something.
  for (const uint8_t level : {60, 128, 190}) {
    const cv::Mat flat = Constant(256, 256, level, level, level);
    const cv::Mat flat_out = Augmented(Clahe(2.0, 8, 1.0), flat, 1);
    EXPECT_LE(MaxDiff(flat_out, flat), 4) << int{level};
  }
  // Low contrast gets stretched (a high clip limit: plain equalisation per tile).
  cv::Mat dull(64, 64, CV_8UC3);
  for (int y = 0; y < 64; ++y) {
    for (int x = 0; x < 64; ++x) dull.at<cv::Vec3b>(y, x) = cv::Vec3b::all(uint8_t(110 + x / 4));
  }
  cv::Scalar mean_in, std_in, mean_out, std_out;
  cv::meanStdDev(dull, mean_in, std_in);
  cv::meanStdDev(Augmented(Clahe(40.0, 2, 1.0), dull, 1), mean_out, std_out);
  EXPECT_GT(std_out[0], std_in[0] * 1.5);
}

TEST(ImageAugmentTest, ElasticWithAlphaZeroIsIdentity) {
  const cv::Mat img = Textured(40, 56);
  EXPECT_TRUE(Same(Augmented(ElasticTransform(0.0, 6.0, 1.0), img, 3), img));
  const cv::Mat flat = Constant(40, 56, 9, 99, 199);
  EXPECT_TRUE(Same(Augmented(ElasticTransform(120.0, 6.0, 1.0), flat, 3), flat));
  EXPECT_GT(MaxDiff(Augmented(ElasticTransform(120.0, 6.0, 1.0), img, 3), img), 10);
}

TEST(ImageAugmentTest, BlurKeepsAConstantImageAndSmoothsTexture) {
  const cv::Mat flat = Constant(33, 17, 5, 128, 250);
  const cv::Mat img = Textured(33, 17);
  for (uint64_t seed = 0; seed < 6; ++seed) {
    EXPECT_TRUE(Same(Augmented(GaussianBlur(3, 7, 1.0), flat, seed), flat));
    cv::Scalar m0, s0, m1, s1;
    cv::meanStdDev(img, m0, s0);
    cv::meanStdDev(Augmented(GaussianBlur(3, 7, 1.0), img, seed), m1, s1);
    EXPECT_LT(s1[2], s0[2]);  // B is pure texture.
  }
  // Kernel 1 only: identity.
  EXPECT_TRUE(Same(Augmented(GaussianBlur(1, 1, 1.0), img, 1), img));
}

TEST(ImageAugmentTest, NoiseHasZeroMeanAndTheConfiguredSpread) {
  const cv::Mat flat = Constant(128, 128, 128, 128, 128);
  for (uint64_t seed = 0; seed < 4; ++seed) {
    const cv::Mat out = Augmented(GaussianNoise(5.0, 5.0, 1.0), flat, seed);
    cv::Mat diff;
    out.convertTo(diff, CV_32F);
    diff -= cv::Scalar::all(128);
    cv::Scalar mean, stddev;
    cv::meanStdDev(diff.reshape(1), mean, stddev);
    EXPECT_NEAR(mean[0], 0.0, 0.1);
    EXPECT_NEAR(stddev[0], 5.0, 0.2);  // Rounding adds 1/12 variance.
  }
}

TEST(ImageAugmentTest, DropoutChangesAtMostTheAllowedArea) {
  const cv::Mat img = Constant(50, 80, 200, 150, 100);
  const CoarseDropout op(8, 0.1, 1, 0, 1.0);
  const int max_h = op.MaxHoleHeight(50);
  const int max_w = op.MaxHoleWidth(80);
  EXPECT_EQ(max_h, 5);
  EXPECT_EQ(max_w, 8);
  for (uint64_t seed = 0; seed < 20; ++seed) {
    const cv::Mat out = Augmented(op, img, seed);
    int changed = 0;
    for (int y = 0; y < 50; ++y) {
      for (int x = 0; x < 80; ++x) {
        const cv::Vec3b p = out.at<cv::Vec3b>(y, x);
        if (p != img.at<cv::Vec3b>(y, x)) {
          ++changed;
          ASSERT_EQ(p, cv::Vec3b(0, 0, 0));
        }
      }
    }
    EXPECT_GT(changed, 0);
    EXPECT_LE(changed, op.max_holes() * max_h * max_w);
  }
}

TEST(ImageAugmentTest, SameSeedSameOutputDifferentSeedsDiffer) {
  const cv::Mat img = Textured(48, 48);
  for (const auto& op : AllOps(40)) {
    SCOPED_TRACE(op->Name());
    EXPECT_TRUE(Same(Augmented(*op, img, 11), Augmented(*op, img, 11)));
    const bool deterministic = op->Name().find("Flip") != std::string::npos ||
                               op->Name().find("Clahe") != std::string::npos;
    if (deterministic) continue;  // No random parameters beyond p.
    std::set<std::vector<uint8_t>> distinct;
    for (uint64_t seed = 0; seed < 6; ++seed) {
      const cv::Mat out = Augmented(*op, img, seed);
      distinct.insert(std::vector<uint8_t>(out.datastart, out.dataend));
    }
    EXPECT_GE(distinct.size(), 2u);
  }
}

TEST(ImageAugmentTest, EveryOpKeepsTypeAndSize) {
  for (const cv::Size size : {cv::Size(40, 40), cv::Size(57, 31), cv::Size(3, 2), cv::Size(1, 1)}) {
    const cv::Mat img = Textured(size.height, size.width);
    for (const auto& op : AllOps(40)) {
      SCOPED_TRACE(op->Name());
      for (uint64_t seed = 0; seed < 4; ++seed) {
        const cv::Mat out = Augmented(*op, img, seed);
        ASSERT_EQ(out.type(), CV_8UC3);
        if (op->Name().find("RandomResizedCrop") != std::string::npos) {
          ASSERT_EQ(out.size(), cv::Size(40, 40));
        } else if (op->Name().find("RandomRotate90") != std::string::npos) {
          ASSERT_TRUE(out.size() == size || out.size() == cv::Size(size.height, size.width));
        } else {
          ASSERT_EQ(out.size(), size) << "seed " << seed;
        }
      }
    }
  }
}

TEST(ImageAugmentTest, ProbabilityIsHonoured) {
  const cv::Mat img = Textured(8, 8);
  int applied = 0;
  const HorizontalFlip op(0.3);
  for (uint64_t seed = 0; seed < 2000; ++seed) applied += !Same(Augmented(op, img, seed), img);
  EXPECT_NEAR(applied / 2000.0, 0.3, 0.04);
  for (const auto& never : {std::make_shared<GaussianNoise>(3.0, 7.0, 0.0)}) {
    EXPECT_TRUE(Same(Augmented(*never, img, 1), img));
  }
}

TEST(ImageAugmentTest, ColorJitterZeroIsIdentity) {
  const cv::Mat img = Textured(20, 20);
  EXPECT_TRUE(Same(Augmented(ColorJitter(0.0, 0.0, 0, 0, 1.0), img, 5), img));
}

TEST(ImageAugmentTest, ScaleChannelsMultipliesEachChannelAndSaturates) {
  cv::Mat img(2, 2, CV_8UC3, cv::Scalar(100, 200, 50));
  img.at<cv::Vec3b>(1, 1) = cv::Vec3b(0, 255, 9);
  const cv::Mat before = img.clone();
  ScaleChannels(img, {1.0, 1.0, 1.0});
  EXPECT_TRUE(Same(img, before));
  ScaleChannels(img, {1.5, 0.5, 1.1});
  EXPECT_EQ(img.at<cv::Vec3b>(0, 0), cv::Vec3b(150, 100, 55));
  EXPECT_EQ(img.at<cv::Vec3b>(1, 1), cv::Vec3b(0, 128, 10));  // 127.5 and 9.9 round up.
  ScaleChannels(img, {2.0, 1.0, 1.0});
  EXPECT_EQ(img.at<cv::Vec3b>(0, 0)[0], 255);  // 300 saturates.
}

// The illuminant changes the colour of the light, not its brightness: the three
// channel gains multiply to 1 (checked on a mid-gray image, away from saturation and
// with rounding of at most half a level per channel), the gains vary between draws
// within exp(+-2 * limit), and gray pixels become the illuminant's colour.
TEST(ImageAugmentTest, RandomIlluminantKeepsTheGainsProductAtOne) {
  const RandomIlluminant op(0.2, 1.0);
  std::set<std::vector<uint8_t>> distinct;
  for (uint64_t seed = 0; seed < 32; ++seed) {
    cv::Mat img(4, 4, CV_8UC3, cv::Scalar(128, 128, 128));
    Rng rng(seed);
    op.Apply(img, rng);
    const cv::Vec3b px = img.at<cv::Vec3b>(2, 3);
    EXPECT_TRUE(Same(img, cv::Mat(4, 4, CV_8UC3, cv::Scalar(px[0], px[1], px[2]))));
    double log_product = 0.0;
    for (int c = 0; c < 3; ++c) {
      const double gain = px[c] / 128.0;
      EXPECT_GT(gain, std::exp(-0.4) - 0.01);
      EXPECT_LT(gain, std::exp(0.4) + 0.01);
      log_product += std::log(gain);
    }
    EXPECT_NEAR(log_product, 0.0, 3 * 0.5 / 110.0);
    distinct.insert({px[0], px[1], px[2]});
  }
  EXPECT_GT(distinct.size(), 24u);
  const cv::Mat textured = Textured(20, 20);
  EXPECT_TRUE(Same(Augmented(RandomIlluminant(0.0, 1.0), textured, 3), textured));
}

TEST(ImageAugmentTest, PresetsAreBuiltAndUnknownNamesListTheValidOnes) {
  EXPECT_EQ(PresetNames(),
            (std::vector<std::string>{"none", "light", "medical", "medical_illuminant"}));
  auto none = MakePreset("none", 224);
  ASSERT_THAT(none, IsOk());
  EXPECT_TRUE(none->empty());
  EXPECT_EQ(none->Describe(), "(none)");
  auto light = MakePreset("light", 224);
  ASSERT_THAT(light, IsOk());
  EXPECT_EQ(light->size(), 4u);
  auto medical = MakePreset("medical", 96);
  ASSERT_THAT(medical, IsOk());
  EXPECT_EQ(medical->size(), 12u);
  EXPECT_THAT(medical->Describe(), HasSubstr("RandomResizedCrop(96x96"));
  EXPECT_THAT(medical->Describe(), HasSubstr("CoarseDropout"));

  EXPECT_THAT(MakePreset("heavy", 224),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("'heavy'; valid presets: none, light, medical, "
                                 "medical_illuminant")));
  auto illuminant = MakePreset("medical_illuminant", 96);
  ASSERT_THAT(illuminant, IsOk());
  EXPECT_EQ(illuminant->size(), 13u);
  EXPECT_THAT(illuminant->Describe(),
              HasSubstr("BrightnessContrast(brightness=0.2, contrast=0.2, p=0.5), "
                        "RandomIlluminant(log_gain=0.2, p=0.7), HueSaturationValue"));
  EXPECT_THAT(MakePreset("medical", 0), StatusIs(absl::StatusCode::kInvalidArgument, ::testing::_));
}

TEST(ImageAugmentTest, MedicalPresetOnARealImage) {
  auto rgb =
      DecodeImageFile(testing::SourcePath("tests/fixtures/ham10000/images/ISIC_0024693.jpg"));
  ASSERT_THAT(rgb, IsOk());
  cv::Mat wide;
  cv::hconcat(*rgb, rgb->colRange(0, 76), wide);  // 300 x 224.
  auto medical = MakePreset("medical", 128);
  ASSERT_THAT(medical, IsOk());
  std::set<std::vector<uint8_t>> distinct;
  for (uint64_t index = 0; index < 8; ++index) {
    cv::Mat img = wide.clone();
    Rng rng(DeriveSeed({42, 0, index}));
    medical->Apply(img, rng);
    ASSERT_EQ(img.size(), cv::Size(128, 128));
    ASSERT_EQ(img.type(), CV_8UC3);
    distinct.insert(std::vector<uint8_t>(img.datastart, img.dataend));

    cv::Mat again = wide.clone();
    Rng rng2(DeriveSeed({42, 0, index}));
    medical->Apply(again, rng2);
    EXPECT_TRUE(Same(img, again));
  }
  EXPECT_EQ(distinct.size(), 8u);
  // Light keeps the size.
  auto light = MakePreset("light", 128);
  ASSERT_THAT(light, IsOk());
  cv::Mat img = wide.clone();
  Rng rng(1);
  light->Apply(img, rng);
  EXPECT_EQ(img.size(), wide.size());
}

TEST(ImageAugmentTest, SharedPipelineIsDeterministicAcrossThreads) {
  auto medical = MakePreset("medical", 64);
  ASSERT_THAT(medical, IsOk());
  const cv::Mat img = Textured(80, 100);
  constexpr int kImages = 16;
  std::vector<cv::Mat> serial(kImages), parallel(kImages);
  const auto run_range = [&](std::vector<cv::Mat>& out, int begin, int step) {
    for (int i = begin; i < kImages; i += step) {
      out[i] = img.clone();
      Rng rng(DeriveSeed({7, static_cast<uint64_t>(i)}));
      medical->Apply(out[i], rng);
    }
  };
  run_range(serial, 0, 1);
  std::thread a(run_range, std::ref(parallel), 0, 2);
  std::thread b(run_range, std::ref(parallel), 1, 2);
  a.join();
  b.join();
  for (int i = 0; i < kImages; ++i) EXPECT_TRUE(Same(serial[i], parallel[i])) << i;
}

}  // namespace
}  // namespace skinlesion
