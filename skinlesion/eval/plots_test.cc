#include "skinlesion/eval/plots.h"

#include <cairo.h>

#include <cmath>

#include "gtest/gtest.h"
#include "skinlesion/testing/testing.h"

namespace skinlesion::eval {
namespace {

using ::skinlesion::testing::IsOk;
using ::skinlesion::testing::TempDir;

struct Rgb {
  int r, g, b;
};

class Png {
 public:
  explicit Png(const std::string& path) : s_(cairo_image_surface_create_from_png(path.c_str())) {}
  ~Png() { cairo_surface_destroy(s_); }
  bool ok() const { return cairo_surface_status(s_) == CAIRO_STATUS_SUCCESS; }
  int width() const { return cairo_image_surface_get_width(s_); }
  int height() const { return cairo_image_surface_get_height(s_); }
  Rgb At(int x, int y) const {
    const unsigned char* d = cairo_image_surface_get_data(s_);
    const uint32_t px = *reinterpret_cast<const uint32_t*>(d + y * cairo_image_surface_get_stride(s_) + x * 4);
    return {static_cast<int>((px >> 16) & 255), static_cast<int>((px >> 8) & 255), static_cast<int>(px & 255)};
  }

 private:
  cairo_surface_t* s_;
};

Metrics MakeMetrics(bool perfect) {
  std::vector<int> labels;
  std::vector<Probs> probs;
  for (int k = 0; k < kHam10000NumClasses; ++k) {
    for (int r = 0; r < 4; ++r) {
      labels.push_back(k);
      Probs p(kHam10000NumClasses, 0.05f);
      const int pred = perfect || r < 2 ? k : (k + 1) % kHam10000NumClasses;
      p[pred] = 0.7f;
      probs.push_back(p);
    }
  }
  return *ComputeMetrics(labels, probs);
}

TEST(PlotsTest, ConfusionMatrixShadesTheDiagonal) {
  TempDir dir;
  const std::string path = dir.Join("cm.png");
  ASSERT_THAT(PlotConfusionMatrix(MakeMetrics(true), path, 700), IsOk());
  Png png(path);
  ASSERT_TRUE(png.ok());
  EXPECT_EQ(png.width(), 700);
  const double margin = 700 * 0.16, cell = (700 - margin * 1.3) / kHam10000NumClasses;
  for (int k = 0; k < kHam10000NumClasses; ++k) {
    const Rgb diag = png.At(static_cast<int>(margin + k * cell + 4), static_cast<int>(margin + k * cell + 4));
    EXPECT_LT(diag.r, 60) << k;  // Dark blue on the diagonal (fraction 1).
    const int j = (k + 3) % kHam10000NumClasses;
    const Rgb off = png.At(static_cast<int>(margin + j * cell + 4), static_cast<int>(margin + k * cell + 4));
    EXPECT_GT(off.r, 240) << k;  // White elsewhere.
  }
}

TEST(PlotsTest, RocAndReliabilityDrawSomething) {
  TempDir dir;
  const Metrics m = MakeMetrics(false);
  ASSERT_THAT(PlotRocCurves(m, dir.Join("roc.png"), 600), IsOk());
  ASSERT_THAT(PlotReliability(m, dir.Join("rel.png"), 600), IsOk());
  for (const char* name : {"roc.png", "rel.png"}) {
    Png png(dir.Join(name));
    ASSERT_TRUE(png.ok()) << name;
    // Count clearly coloured (non-grey) pixels inside the plot area.
    int coloured = 0;
    for (int y = 60; y < 530; y += 2) {
      for (int x = 90; x < 570; x += 2) {
        const Rgb p = png.At(x, y);
        if (std::max({p.r, p.g, p.b}) - std::min({p.r, p.g, p.b}) > 60) ++coloured;
      }
    }
    EXPECT_GT(coloured, 100) << name;
  }
}

TEST(PlotsTest, LinesRejectEmptyAndDrawSeries) {
  TempDir dir;
  EXPECT_FALSE(PlotLines("t", "x", "y", {}, dir.Join("empty.png")).ok());
  Series loss{"train loss", {{1, 2.0}, {2, 1.5}, {3, 1.1}}};
  Series val{"val loss", {{1, 2.1}, {2, 1.7}, {3, NAN}}};
  ASSERT_THAT(PlotLines("Training", "epoch", "loss", {loss, val}, dir.Join("curves.png"), 800, 500), IsOk());
  Png png(dir.Join("curves.png"));
  ASSERT_TRUE(png.ok());
  EXPECT_EQ(png.width(), 800);
  EXPECT_EQ(png.height(), 500);
  EXPECT_FALSE(PlotLines("t", "x", "y", {loss}, "/nonexistent-dir/x.png").ok());
}

// Cross-validation rounds: the mean bar and each round's dot land where the values say.
TEST(PlotsTest, FoldsDrawAMeanBarAndADotPerRound) {
  TempDir dir;
  const std::string path = dir.Join("folds.png");
  ASSERT_THAT(PlotFolds("CV", {"round 0", "round 1", "round 2"}, {{"balanced accuracy", {0.2, 0.4, 0.6}}}, path),
              IsOk());
  Png png(path);
  ASSERT_TRUE(png.ok());
  EXPECT_EQ(png.width(), 900);
  // One column spans x 70..710 (centre 390); y 0..1 maps to 470..60.
  const Rgb bar = png.At(390 + 100, 470 - static_cast<int>(0.4 * 410));
  EXPECT_LT(bar.r + bar.g + bar.b, 200) << "the mean bar is dark";
  const Rgb first = png.At(390 - 128, 470 - static_cast<int>(0.2 * 410));
  EXPECT_LT(first.r, 60);
  EXPECT_GT(first.b, 120) << "round 0's dot in the first palette colour";
  const Rgb empty = png.At(390 + 100, 470 - static_cast<int>(0.9 * 410));
  EXPECT_GT(empty.r + empty.g + empty.b, 600) << "nothing drawn at 0.9";
  EXPECT_FALSE(PlotFolds("CV", {}, {}, dir.Join("none.png")).ok());
  EXPECT_FALSE(PlotFolds("CV", {"r"}, {{"auc", {}}}, dir.Join("none.png")).ok());
  EXPECT_FALSE(PlotFolds("CV", {"r"}, {{"auc", {1.5}}}, dir.Join("none.png")).ok());
}

}  // namespace
}  // namespace skinlesion::eval
