#include "skinlesion/image/grid.h"

#include <algorithm>
#include <filesystem>
#include <string>
#include <system_error>

#include "absl/strings/str_cat.h"
#include "opencv2/core.hpp"
#include "opencv2/imgcodecs.hpp"
#include "opencv2/imgproc.hpp"
#include "skinlesion/common/logging.h"
#include "skinlesion/common/rng.h"
#include "skinlesion/image/preprocess.h"

namespace skinlesion {
namespace {

constexpr int kMinLabelledTile = 48;

// Draws `text` white on black in the top-left corner, inside the top quarter.
void Label(cv::Mat& tile, const std::string& text) {
  if (tile.cols < kMinLabelledTile) return;
  const int font = cv::FONT_HERSHEY_SIMPLEX;
  const int max_height = tile.rows / 4;
  double scale = tile.cols / 400.0;
  int baseline = 0;
  cv::Size size = cv::getTextSize(text, font, scale, 1, &baseline);
  // Shrink until the box (text + baseline + margins) fits the top quarter and the width.
  while (scale > 0.2 && (size.height + baseline + 4 > max_height || size.width + 4 > tile.cols)) {
    scale *= 0.9;
    size = cv::getTextSize(text, font, scale, 1, &baseline);
  }
  const int box_height = std::min(size.height + baseline + 4, max_height);
  const int box_width = std::min(size.width + 4, tile.cols);
  cv::rectangle(tile, cv::Rect(0, 0, box_width, box_height), cv::Scalar::all(0), cv::FILLED);
  // Drawn into the box only, so anti-aliased edges never reach the picture below.
  cv::Mat box = tile(cv::Rect(0, 0, box_width, box_height));
  cv::putText(box, text, cv::Point(2, 2 + size.height), font, scale, cv::Scalar::all(255), 1,
              cv::LINE_AA);
}

}  // namespace

cv::Mat MakeAugmentationGrid(const cv::Mat& rgb, const Pipeline& pipeline, uint64_t seed, int rows,
                             int cols, int tile) {
  SL_CHECK(!rgb.empty() && rgb.type() == CV_8UC3) << "expected a CV_8UC3 image";
  SL_CHECK(rows >= 1 && cols >= 1 && tile >= 8 && tile <= 4096)
      << "grid " << rows << "x" << cols << " of " << tile << " px tiles";
  SL_CHECK(static_cast<int64_t>(rows) * tile <= 32768 && static_cast<int64_t>(cols) * tile <= 32768)
      << "grid too large";
  PreprocessOptions resize;
  resize.size = tile;
  cv::Mat grid(rows * tile, cols * tile, CV_8UC3, cv::Scalar::all(0));
  for (int k = 0; k < rows * cols; ++k) {
    cv::Mat image;
    if (k == 0) {
      image = rgb;
    } else {
      image = rgb.clone();
      Rng rng(DeriveSeed({seed, static_cast<uint64_t>(k)}));
      pipeline.Apply(image, rng);
    }
    cv::Mat cell = grid(cv::Rect((k % cols) * tile, (k / cols) * tile, tile, tile));
    Resize(image, resize).copyTo(cell);
    Label(cell, k == 0 ? std::string("original") : absl::StrCat("#", k));
  }
  return grid;
}

absl::Status WriteImage(const std::string& path, const cv::Mat& rgb) {
  if (rgb.empty() || rgb.type() != CV_8UC3) {
    return absl::InvalidArgumentError(
        absl::StrCat("WriteImage needs a non-empty CV_8UC3 RGB image, got type ", rgb.type()));
  }
  const std::filesystem::path parent = std::filesystem::path(path).parent_path();
  std::error_code ec;
  if (!parent.empty() && !std::filesystem::is_directory(parent, ec)) {
    return absl::NotFoundError(
        absl::StrCat("cannot write ", path, ": directory ", parent.string(), " does not exist"));
  }
  cv::Mat bgr;
  cv::cvtColor(rgb, bgr, cv::COLOR_RGB2BGR);
  bool written = false;
  try {
    if (!cv::haveImageWriter(path)) {
      return absl::InvalidArgumentError(
          absl::StrCat("cannot write ", path, ": no image writer for its extension"));
    }
    written = cv::imwrite(path, bgr);
  } catch (const cv::Exception& e) {
    return absl::InvalidArgumentError(absl::StrCat("cannot write ", path, ": ", e.err));
  }
  if (!written) return absl::InternalError(absl::StrCat("cannot write ", path));
  return absl::OkStatus();
}

}  // namespace skinlesion
