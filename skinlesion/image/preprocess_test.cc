#include "skinlesion/image/preprocess.h"

#include <chrono>
#include <cstdint>
#include <vector>

#include "gtest/gtest.h"
#include "opencv2/core.hpp"
#include "skinlesion/image/decode.h"
#include "skinlesion/testing/testing.h"

namespace skinlesion {
namespace {

using ::skinlesion::testing::IsOk;
using ::skinlesion::testing::StatusIs;
using ::testing::HasSubstr;

// R = x (the column), G = y (the row), B = 7: the crop position can be read back.
cv::Mat Gradient(int rows, int cols) {
  cv::Mat rgb(rows, cols, CV_8UC3);
  for (int y = 0; y < rows; ++y) {
    for (int x = 0; x < cols; ++x) {
      rgb.at<cv::Vec3b>(y, x) = cv::Vec3b(static_cast<uint8_t>(x), static_cast<uint8_t>(y), 7);
    }
  }
  return rgb;
}

TEST(ImagePreprocessTest, ConstantImageGivesExactConstantChannels) {
  const cv::Mat rgb(200, 300, CV_8UC3, cv::Scalar(255, 0, 128));
  PreprocessOptions options;
  options.size = 64;
  const std::vector<float> out = Preprocess(rgb, options);
  ASSERT_EQ(out.size(), 3u * 64 * 64);
  // By hand: (255/255 - 0.485) / 0.229, (0 - 0.456) / 0.224, (128/255 - 0.406) / 0.225.
  const float expected[3] = {2.2489083f, -2.0357143f, 0.42649237f};
  for (int c = 0; c < 3; ++c) {
    for (int i = 0; i < 64 * 64; ++i) {
      ASSERT_NEAR(out[c * 64 * 64 + i], expected[c], 1e-6) << "channel " << c << " index " << i;
    }
  }
}

TEST(ImagePreprocessTest, CustomMeanAndStd) {
  const cv::Mat rgb(4, 4, CV_8UC3, cv::Scalar(64, 64, 64));
  PreprocessOptions options;
  options.size = 4;
  options.mean = {0.5f, 0.5f, 0.5f};
  options.std = {0.25f, 0.25f, 0.25f};
  for (float v : Preprocess(rgb, options)) EXPECT_NEAR(v, (64.0 / 255 - 0.5) / 0.25, 1e-6);
}

TEST(ImagePreprocessTest, NormalizeWritesChwInOrder) {
  // 2 x 3 image; out[c][y][x].
  cv::Mat rgb(2, 3, CV_8UC3);
  for (int y = 0; y < 2; ++y) {
    for (int x = 0; x < 3; ++x) {
      rgb.at<cv::Vec3b>(y, x) =
          cv::Vec3b(static_cast<uint8_t>(10 * y + x), static_cast<uint8_t>(100 + 10 * y + x),
                    static_cast<uint8_t>(200 + 10 * y + x));
    }
  }
  PreprocessOptions options;
  options.mean = {0, 0, 0};
  options.std = {1, 1, 1};
  std::vector<float> out(3 * 2 * 3, -1.0f);
  NormalizeToCHW(rgb, options, out.data());
  for (int c = 0; c < 3; ++c) {
    for (int y = 0; y < 2; ++y) {
      for (int x = 0; x < 3; ++x) {
        EXPECT_FLOAT_EQ(out[c * 6 + y * 3 + x], (100 * c + 10 * y + x) / 255.0f);
      }
    }
  }
}

TEST(ImagePreprocessTest, NormalizeMatchesTheFormulaForEveryValueAndPosition) {
  // 53 columns: three 16-pixel vector steps and a 5-pixel scalar tail per row.
  cv::Mat rgb(9, 53, CV_8UC3);
  cv::randu(rgb, 0, 256);
  rgb.at<cv::Vec3b>(0, 0) = cv::Vec3b(0, 0, 0);
  rgb.at<cv::Vec3b>(8, 52) = cv::Vec3b(255, 255, 255);
  const PreprocessOptions options;
  std::vector<float> out(3 * 9 * 53);
  NormalizeToCHW(rgb, options, out.data());
  for (int c = 0; c < 3; ++c) {
    for (int y = 0; y < 9; ++y) {
      for (int x = 0; x < 53; ++x) {
        const double v = rgb.at<cv::Vec3b>(y, x)[c];
        const double expected = (v / 255.0 - options.mean[c]) / options.std[c];
        ASSERT_NEAR(out[(c * 9 + y) * 53 + x], expected, 1e-6) << c << " " << y << " " << x;
      }
    }
  }
}

TEST(ImagePreprocessTest, NormalizeHandlesNonContinuousViews) {
  const cv::Mat big = Gradient(50, 60);
  const cv::Mat view = big(cv::Rect(5, 7, 20, 10));  // 20 wide: vector step and tail.
  ASSERT_FALSE(view.isContinuous());
  PreprocessOptions options;
  options.mean = {0, 0, 0};
  options.std = {1, 1, 1};
  std::vector<float> a(3 * 20 * 10), b(3 * 20 * 10);
  NormalizeToCHW(view, options, a.data());
  NormalizeToCHW(view.clone(), options, b.data());
  EXPECT_EQ(a, b);
  EXPECT_FLOAT_EQ(a[0], 5 / 255.0f);            // R of (7, 5) is x = 5.
  EXPECT_FLOAT_EQ(a[20 * 10 + 0], 7 / 255.0f);  // G is y = 7.
  EXPECT_FLOAT_EQ(a[20 * 10 * 2], 7 / 255.0f);  // B is 7.
}

TEST(ImagePreprocessTest, CenterCropIsCentredWithoutResize) {
  // 200 x 100: the shorter side is already 100, so the output is the columns 50..149.
  PreprocessOptions options;
  options.size = 100;
  const cv::Mat out = Resize(Gradient(100, 200), options);
  ASSERT_EQ(out.size(), cv::Size(100, 100));
  for (int y : {0, 37, 99}) {
    for (int x : {0, 1, 50, 99}) {
      EXPECT_EQ(out.at<cv::Vec3b>(y, x),
                cv::Vec3b(static_cast<uint8_t>(50 + x), static_cast<uint8_t>(y), 7));
    }
  }
  // Portrait, 100 wide and 180 high: rows 40..139.
  const cv::Mat tall = Resize(Gradient(180, 100), options);
  EXPECT_EQ(tall.at<cv::Vec3b>(0, 0), cv::Vec3b(0, 40, 7));
  EXPECT_EQ(tall.at<cv::Vec3b>(99, 99), cv::Vec3b(99, 139, 7));
}

TEST(ImagePreprocessTest, CenterCropAfterExactHalving) {
  // 400 x 200 with R = x / 2: the centred 200 x 200 square (x in 100..299) halves to
  // 100 x 100; bilinear halving averages columns 2i and 2i+1, both (100 + 2i) / 2.
  cv::Mat rgb(200, 400, CV_8UC3);
  for (int y = 0; y < 200; ++y) {
    for (int x = 0; x < 400; ++x) {
      rgb.at<cv::Vec3b>(y, x) = cv::Vec3b(static_cast<uint8_t>(x / 2), 0, 0);
    }
  }
  PreprocessOptions options;
  options.size = 100;
  const cv::Mat out = Resize(rgb, options);
  ASSERT_EQ(out.size(), cv::Size(100, 100));
  for (int x = 0; x < 100; ++x) EXPECT_EQ(out.at<cv::Vec3b>(50, x)[0], 50 + x) << x;
}

TEST(ImagePreprocessTest, CropFractionKeepsTheCentralShare) {
  // 256 x 256, crop_fraction 0.875: the shorter side "becomes" 256 and the centred
  // 224 square is kept, i.e. source columns and rows 16..239 without resizing.
  PreprocessOptions options;
  options.crop_fraction = 0.875f;
  const cv::Mat out = Resize(Gradient(256, 256), options);
  ASSERT_EQ(out.size(), cv::Size(224, 224));
  EXPECT_EQ(out.at<cv::Vec3b>(0, 0), cv::Vec3b(16, 16, 7));
  EXPECT_EQ(out.at<cv::Vec3b>(223, 223), cv::Vec3b(239, 239, 7));
  EXPECT_EQ(out.at<cv::Vec3b>(100, 3), cv::Vec3b(19, 116, 7));
}

TEST(ImagePreprocessTest, DirectResizeIgnoresAspect) {
  PreprocessOptions options;
  options.size = 32;
  options.mode = ResizeMode::kDirectResize;
  const cv::Mat rgb(10, 90, CV_8UC3, cv::Scalar(1, 2, 3));
  const cv::Mat out = Resize(rgb, options);
  ASSERT_EQ(out.size(), cv::Size(32, 32));
  EXPECT_EQ(cv::norm(out, cv::Mat(32, 32, CV_8UC3, cv::Scalar(1, 2, 3)), cv::NORM_INF), 0.0);
  // The whole width is kept: the left and right edges of a gradient survive.
  const cv::Mat g = Resize(Gradient(10, 200), options);
  EXPECT_LT(g.at<cv::Vec3b>(5, 0)[0], 5);
  EXPECT_GT(g.at<cv::Vec3b>(5, 31)[0], 194);
}

// 1-pixel stripes (0, 255, 0, ...) shrunk 3.75x, as a 600 px wide photograph squashed
// to 160: bilinear alone reads two of every ~4 columns and draws moire bars from black
// to white; averaging first leaves the grey the stripes average to.
TEST(ImagePreprocessTest, LargeShrinksAverageBeforeInterpolating) {
  cv::Mat stripes(450, 600, CV_8UC3);
  for (int x = 0; x < stripes.cols; ++x) stripes.col(x).setTo(cv::Scalar::all(x % 2 ? 255 : 0));
  PreprocessOptions options;
  options.size = 160;
  options.mode = ResizeMode::kDirectResize;
  const cv::Mat out = Resize(stripes, options);
  ASSERT_EQ(out.size(), cv::Size(160, 160));
  double lo = 255, hi = 0;
  cv::minMaxLoc(out.reshape(1), &lo, &hi);
  EXPECT_GT(lo, 110) << "aliasing: darkest output pixel";
  EXPECT_LT(hi, 145) << "aliasing: brightest output pixel";
  cv::Mat plain;  // What bilinear alone gives: the bars the averaging removes.
  cv::resize(stripes, plain, cv::Size(160, 160), 0, 0, cv::INTER_LINEAR);
  cv::minMaxLoc(plain.reshape(1), &lo, &hi);
  EXPECT_LT(lo, 64);
  EXPECT_GT(hi, 191);
  // A shrink of 2x or less, as HAM10000's 224 px images to 160, is exactly bilinear.
  const cv::Mat small = Gradient(224, 224);
  cv::Mat expected;
  cv::resize(small, expected, cv::Size(160, 160), 0, 0, cv::INTER_LINEAR);
  EXPECT_EQ(cv::norm(Resize(small, options), expected, cv::NORM_INF), 0.0);
}

TEST(ImagePreprocessTest, ResizeOutputIsContinuousAndOwnsItsPixels) {
  cv::Mat rgb = Gradient(64, 64);
  PreprocessOptions options;
  options.size = 64;
  for (ResizeMode mode : {ResizeMode::kResizeShorterThenCenterCrop, ResizeMode::kDirectResize}) {
    options.mode = mode;
    cv::Mat out = Resize(rgb, options);
    ASSERT_TRUE(out.isContinuous());
    EXPECT_EQ(cv::norm(out, rgb, cv::NORM_INF), 0.0);  // Same size: unchanged pixels...
    out.setTo(cv::Scalar::all(0));
    EXPECT_EQ(rgb.at<cv::Vec3b>(10, 20), cv::Vec3b(20, 10, 7));  // ...but not shared.
  }
  // A crop without resize is also returned continuous.
  const cv::Mat cropped = Resize(Gradient(64, 80), options);
  EXPECT_TRUE(cropped.isContinuous());
}

TEST(ImagePreprocessTest, PreprocessEqualsResizeThenNormalize) {
  auto rgb =
      DecodeImageFile(testing::SourcePath("tests/fixtures/ham10000/images/ISIC_0024693.jpg"));
  ASSERT_THAT(rgb, IsOk());
  cv::Mat wide;
  cv::hconcat(*rgb, rgb->colRange(0, 100), wide);  // 324 x 224.
  for (ResizeMode mode : {ResizeMode::kResizeShorterThenCenterCrop, ResizeMode::kDirectResize}) {
    PreprocessOptions options;
    options.size = 96;
    options.mode = mode;
    options.interpolation = Interpolation::kArea;
    const std::vector<float> a = Preprocess(wide, options);
    std::vector<float> b(a.size()), c(a.size());
    PreprocessInto(wide, options, b.data());
    NormalizeToCHW(Resize(wide, options), options, c.data());
    EXPECT_EQ(a, b);
    EXPECT_EQ(a, c);
    for (float v : a) {
      ASSERT_GE(v, (0.0f - 0.485f) / 0.229f - 1e-5f);
      ASSERT_LE(v, (1.0f - 0.406f) / 0.225f + 1e-5f);
    }
  }
}

TEST(ImagePreprocessTest, ExtremeAspectRatioStaysCheap) {
  // A 1 x 16384 strip: resizing the shorter side to 224 first would need 224 x 3.7M.
  const cv::Mat strip(1, 16384, CV_8UC3, cv::Scalar(9, 8, 7));
  const auto start = std::chrono::steady_clock::now();
  const cv::Mat out = Resize(strip, PreprocessOptions());
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  ASSERT_EQ(out.size(), cv::Size(224, 224));
  EXPECT_EQ(out.at<cv::Vec3b>(100, 100), cv::Vec3b(9, 8, 7));
  EXPECT_LT(seconds, 1.0);
}

TEST(ImagePreprocessTest, ValidateOptions) {
  EXPECT_THAT(ValidatePreprocessOptions(PreprocessOptions()), IsOk());
  PreprocessOptions options;
  options.size = 0;
  EXPECT_THAT(ValidatePreprocessOptions(options),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("size")));
  options = PreprocessOptions();
  options.crop_fraction = 0.0f;
  EXPECT_THAT(ValidatePreprocessOptions(options),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("crop_fraction")));
  options.crop_fraction = 1.5f;
  EXPECT_THAT(ValidatePreprocessOptions(options),
              StatusIs(absl::StatusCode::kInvalidArgument, ::testing::_));
  options = PreprocessOptions();
  options.std[1] = 0.0f;
  EXPECT_THAT(ValidatePreprocessOptions(options),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("std")));
}

// Shades of Gray: a grey image is left alone; a red cast is turned down in red and up
// in blue, and the normalised output carries exactly those gains.
TEST(ImagePreprocessTest, ShadesOfGrayBalancesAColourCast) {
  const cv::Mat grey(8, 8, CV_8UC3, cv::Scalar(120, 120, 120));
  for (float g : ShadesOfGrayGains(grey, 6)) EXPECT_NEAR(g, 1.0f, 1e-6);
  cv::Mat cast(8, 8, CV_8UC3);
  for (int y = 0; y < 8; ++y) {
    for (int x = 0; x < 8; ++x) cast.at<cv::Vec3b>(y, x) = cv::Vec3b(200, 120 + x, 60 + y);  // R, G, B
  }
  const std::array<float, 3> gain = ShadesOfGrayGains(cast, 6);
  EXPECT_LT(gain[0], 1.0f);
  EXPECT_GT(gain[2], 1.0f);
  EXPECT_GT(gain[2], gain[1]);
  // p = 1 is grey world: gain_c = mean(channel means) / channel mean.
  const cv::Mat flat(4, 4, CV_8UC3, cv::Scalar(100, 50, 150));
  const std::array<float, 3> grey_world = ShadesOfGrayGains(flat, 1);
  EXPECT_NEAR(grey_world[0], 1.0f, 1e-5);
  EXPECT_NEAR(grey_world[1], 2.0f, 1e-5);
  EXPECT_NEAR(grey_world[2], 100.0f / 150.0f, 1e-5);
  // Black and one-channel images stay finite: gains clamped to [1/3, 3].
  for (float g : ShadesOfGrayGains(cv::Mat(4, 4, CV_8UC3, cv::Scalar(0, 0, 0)), 6)) EXPECT_EQ(g, 1.0f);
  for (float g : ShadesOfGrayGains(cv::Mat(4, 4, CV_8UC3, cv::Scalar(255, 0, 0)), 6)) {
    EXPECT_GE(g, 1.0f / 3 - 1e-6);
    EXPECT_LE(g, 3.0f + 1e-6);
  }

  PreprocessOptions options;
  options.size = 8;
  options.mean = {0, 0, 0};
  options.std = {1, 1, 1};
  options.shades_of_gray_p = 6;
  std::vector<float> out(3 * 8 * 8);
  NormalizeToCHW(cast, options, out.data());
  for (int c = 0; c < 3; ++c) {
    const float x = cast.at<cv::Vec3b>(3, 5)[c];
    EXPECT_NEAR(out[c * 64 + 3 * 8 + 5], x * gain[c] / 255.0f, 1e-5) << c;
  }
  options.shades_of_gray_p = 17;
  EXPECT_THAT(ValidatePreprocessOptions(options),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("shades_of_gray_p")));
}

TEST(ImagePreprocessTest, ReducedDecodeSideIsTheMarginTimesTheResizedShorterSide) {
  PreprocessOptions o;
  o.size = 112;
  EXPECT_EQ(ResizedShorterSide(o), 112);
  EXPECT_EQ(ReducedDecodeSide(o), 448);
  // HAM10000's 600x450 is never reduced for a 112 px model (450 / 2 < 448).
  EXPECT_LT(450 / 2, ReducedDecodeSide(o));
  o.size = 224;
  o.crop_fraction = 0.875f;  // "resize 256, crop 224"
  EXPECT_EQ(ResizedShorterSide(o), 256);
  EXPECT_EQ(ReducedDecodeSide(o), 1024);
  o.mode = ResizeMode::kDirectResize;
  EXPECT_EQ(ResizedShorterSide(o), 224);
}

TEST(ImagePreprocessDeathTest, WrongTypeIsAProgrammingError) {
  const cv::Mat gray(10, 10, CV_8UC1, cv::Scalar(1));
  EXPECT_DEATH(Resize(gray, PreprocessOptions()), "CV_8UC3");
}

}  // namespace
}  // namespace skinlesion
