#include "skinlesion/image/grid.h"

#include <cstdint>

#include "gtest/gtest.h"
#include "opencv2/core.hpp"
#include "skinlesion/common/rng.h"
#include "skinlesion/image/decode.h"
#include "skinlesion/image/preprocess.h"
#include "skinlesion/testing/testing.h"

namespace skinlesion {
namespace {

using ::skinlesion::testing::IsOk;
using ::skinlesion::testing::StatusIs;
using ::testing::HasSubstr;

cv::Mat Fixture() {
  auto rgb =
      DecodeImageFile(testing::SourcePath("tests/fixtures/ham10000/images/ISIC_0024698.jpg"));
  EXPECT_THAT(rgb, IsOk());
  cv::Mat wide;
  cv::hconcat(*rgb, rgb->colRange(0, 60), wide);  // 284 x 224: not square.
  return wide;
}

cv::Mat Tile(const cv::Mat& grid, int k, int cols, int tile) {
  return grid(cv::Rect((k % cols) * tile, (k / cols) * tile, tile, tile));
}

// Below the label box (which lies inside the top quarter).
cv::Mat BelowLabel(const cv::Mat& tile) { return tile.rowRange(tile.rows / 4, tile.rows); }

bool SameImage(const cv::Mat& a, const cv::Mat& b) {
  return a.size() == b.size() && cv::norm(a, b, cv::NORM_INF) == 0.0;
}

TEST(ImageGridTest, SizeAndFirstTileIsTheResizedOriginal) {
  const cv::Mat rgb = Fixture();
  auto medical = MakePreset("medical", 224);
  ASSERT_THAT(medical, IsOk());
  const cv::Mat grid = MakeAugmentationGrid(rgb, *medical, 5, 2, 3, 96);
  ASSERT_EQ(grid.size(), cv::Size(3 * 96, 2 * 96));
  ASSERT_EQ(grid.type(), CV_8UC3);

  PreprocessOptions resize;
  resize.size = 96;
  const cv::Mat original = Resize(rgb, resize);
  const cv::Mat first = Tile(grid, 0, 3, 96);
  EXPECT_TRUE(SameImage(BelowLabel(first), BelowLabel(original)));
  // The label: white text on a black box in the top-left corner.
  const cv::Mat corner = first(cv::Rect(0, 0, 48, 24));
  double lo = 0, hi = 0;
  cv::minMaxLoc(corner.reshape(1), &lo, &hi);
  EXPECT_EQ(lo, 0.0);
  EXPECT_GT(hi, 200.0);
  EXPECT_FALSE(SameImage(first, original));

  // Tile k is the pipeline under Rng(DeriveSeed({seed, k})), resized.
  for (int k = 1; k < 6; ++k) {
    cv::Mat expected = rgb.clone();
    Rng rng(DeriveSeed({5, static_cast<uint64_t>(k)}));
    medical->Apply(expected, rng);
    EXPECT_TRUE(SameImage(BelowLabel(Tile(grid, k, 3, 96)), BelowLabel(Resize(expected, resize)))) << k;
    EXPECT_FALSE(SameImage(BelowLabel(Tile(grid, k, 3, 96)), BelowLabel(original))) << k;
  }
}

TEST(ImageGridTest, DeterministicPerSeedAndUnlabelledWhenSmall) {
  const cv::Mat rgb = Fixture();
  auto light = MakePreset("light", 64);
  ASSERT_THAT(light, IsOk());
  const cv::Mat a = MakeAugmentationGrid(rgb, *light, 1, 3, 3, 32);
  const cv::Mat b = MakeAugmentationGrid(rgb, *light, 1, 3, 3, 32);
  const cv::Mat c = MakeAugmentationGrid(rgb, *light, 2, 3, 3, 32);
  EXPECT_TRUE(SameImage(a, b));
  EXPECT_FALSE(SameImage(a, c));
  PreprocessOptions resize;
  resize.size = 32;
  EXPECT_TRUE(SameImage(Tile(a, 0, 3, 32), Resize(rgb, resize)));  // No label below 48 px.
  // A single cell is just the original.
  auto none = MakePreset("none", 64);
  ASSERT_THAT(none, IsOk());
  EXPECT_EQ(MakeAugmentationGrid(rgb, *none, 1, 1, 1, 64).size(), cv::Size(64, 64));
}

TEST(ImageGridTest, WriteImageRoundTripsRgb) {
  testing::TempDir dir;
  cv::Mat rgb(10, 12, CV_8UC3, cv::Scalar(250, 100, 5));
  ASSERT_THAT(WriteImage(dir.Join("x.png"), rgb), IsOk());
  auto back = DecodeImageFile(dir.Join("x.png"));
  ASSERT_THAT(back, IsOk());
  EXPECT_TRUE(SameImage(*back, rgb));  // Still RGB, not BGR.
  ASSERT_THAT(WriteImage(dir.Join("x.jpg"), rgb), IsOk());
  auto jpeg = DecodeImageFile(dir.Join("x.jpg"));
  ASSERT_THAT(jpeg, IsOk());
  EXPECT_GT(jpeg->at<cv::Vec3b>(5, 5)[0], 200);

  EXPECT_THAT(WriteImage(dir.Join("x.unknown"), rgb),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("x.unknown")));
  EXPECT_THAT(WriteImage(dir.Join("missing/x.png"), rgb),
              StatusIs(absl::StatusCode::kNotFound, HasSubstr("does not exist")));
  EXPECT_THAT(WriteImage(dir.Join("y.png"), cv::Mat()),
              StatusIs(absl::StatusCode::kInvalidArgument, ::testing::_));
}

}  // namespace
}  // namespace skinlesion
