#include "skinlesion/image/preprocess.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>

#include "absl/strings/str_cat.h"
#include "opencv2/core.hpp"
#include "opencv2/core/hal/intrin.hpp"
#include "opencv2/imgproc.hpp"
#include "skinlesion/common/logging.h"

namespace skinlesion {
namespace {

int CvInterpolation(Interpolation interpolation) {
  switch (interpolation) {
    case Interpolation::kBilinear:
      return cv::INTER_LINEAR;
    case Interpolation::kArea:
      return cv::INTER_AREA;
    case Interpolation::kBicubic:
      return cv::INTER_CUBIC;
  }
  return cv::INTER_LINEAR;
}

void CheckInput(const cv::Mat& rgb, const PreprocessOptions& options) {
  SL_CHECK(!rgb.empty() && rgb.type() == CV_8UC3 && rgb.dims == 2)
      << "expected a non-empty CV_8UC3 image, got type " << rgb.type();
  const absl::Status valid = ValidatePreprocessOptions(options);
  SL_CHECK(valid.ok()) << valid.message();
}

// The source region that the output shows: the whole image for kDirectResize,
// otherwise the centred square of side round(shorter * crop_fraction).
cv::Rect SourceRegion(const cv::Mat& rgb, const PreprocessOptions& options) {
  if (options.mode == ResizeMode::kDirectResize) return cv::Rect(0, 0, rgb.cols, rgb.rows);
  const int shorter = std::min(rgb.cols, rgb.rows);
  const int side = std::clamp(
      static_cast<int>(std::lround(static_cast<double>(shorter) * options.crop_fraction)), 1,
      shorter);
  return cv::Rect((rgb.cols - side) / 2, (rgb.rows - side) / 2, side, side);
}

// The resize/crop step without the final copy: the result is a fresh continuous
// image or, when nothing needs resizing, a view into the input.
cv::Mat ResizeView(const cv::Mat& rgb, const PreprocessOptions& options) {
  CheckInput(rgb, options);
  cv::Mat region = rgb(SourceRegion(rgb, options));
  if (region.cols == options.size && region.rows == options.size) return region;
  // A shrink by more than kMaxInterpolatedShrink first averages down to that multiple of
  // the output (INTER_AREA: every source pixel counts), so the final step never shrinks
  // by more. Bilinear alone would read only some source pixels: a 600x450 photograph
  // squashed to 160 would turn hair, skin lines and sensor noise into aliasing that
  // training images made at lower resolution never had. Smaller shrinks (HAM10000's 224
  // px images to 160) are exactly the plain bilinear resize.
  const int limit = kMaxInterpolatedShrink * options.size;
  if (options.interpolation != Interpolation::kArea &&
      (region.cols > limit || region.rows > limit)) {
    cv::Mat averaged;
    cv::resize(region, averaged,
               cv::Size(std::min(region.cols, limit), std::min(region.rows, limit)), 0, 0,
               cv::INTER_AREA);
    region = averaged;
  }
  cv::Mat out;
  cv::resize(region, out, cv::Size(options.size, options.size), 0, 0,
             CvInterpolation(options.interpolation));
  return out;
}

}  // namespace

int ResizedShorterSide(const PreprocessOptions& options) {
  if (options.mode == ResizeMode::kDirectResize) return options.size;
  return static_cast<int>(std::ceil(options.size / static_cast<double>(options.crop_fraction)));
}

int ReducedDecodeSide(const PreprocessOptions& options) {
  return kReducedDecodeMargin * ResizedShorterSide(options);
}

absl::Status ValidatePreprocessOptions(const PreprocessOptions& options) {
  if (options.size < 1 || options.size > 16384) {
    return absl::InvalidArgumentError(
        absl::StrCat("preprocess size must be in [1, 16384], got ", options.size));
  }
  if (!(options.crop_fraction > 0.0f && options.crop_fraction <= 1.0f)) {
    return absl::InvalidArgumentError(
        absl::StrCat("crop_fraction must be in (0, 1], got ", options.crop_fraction));
  }
  for (int c = 0; c < 3; ++c) {
    if (!std::isfinite(options.mean[c]) || !std::isfinite(options.std[c]) ||
        !(options.std[c] > 0.0f)) {
      return absl::InvalidArgumentError(absl::StrCat("channel ", c, ": mean ", options.mean[c],
                                                     " and std ", options.std[c],
                                                     " must be finite, std > 0"));
    }
  }
  if (options.shades_of_gray_p < 0 || options.shades_of_gray_p > 16) {
    return absl::InvalidArgumentError(
        absl::StrCat("shades_of_gray_p must be in [0, 16], got ", options.shades_of_gray_p));
  }
  return absl::OkStatus();
}

cv::Mat Resize(const cv::Mat& rgb, const PreprocessOptions& options) {
  cv::Mat out = ResizeView(rgb, options);
  if (out.datastart == rgb.datastart || !out.isContinuous()) return out.clone();  // A view.
  return out;
}

void NormalizeToCHW(const cv::Mat& rgb_u8, const PreprocessOptions& options, float* out) {
  SL_CHECK(rgb_u8.type() == CV_8UC3 && rgb_u8.dims == 2)
      << "expected a CV_8UC3 image, got type " << rgb_u8.type();
  SL_CHECK(out != nullptr || rgb_u8.empty());
  // (x / 255 - mean) / std = x * scale + shift.
  float scale[3], shift[3];
  std::array<float, 3> gain = {1.0f, 1.0f, 1.0f};
  if (options.shades_of_gray_p > 0) gain = ShadesOfGrayGains(rgb_u8, options.shades_of_gray_p);
  for (int c = 0; c < 3; ++c) {
    scale[c] = gain[c] / (255.0f * options.std[c]);
    shift[c] = -options.mean[c] / options.std[c];
  }
  const int rows = rgb_u8.rows;
  const int cols = rgb_u8.cols;
  const size_t plane = static_cast<size_t>(rows) * static_cast<size_t>(cols);
  for (int y = 0; y < rows; ++y) {
    const uint8_t* src = rgb_u8.ptr<uint8_t>(y);
    const size_t offset = static_cast<size_t>(y) * static_cast<size_t>(cols);
    float* const dst[3] = {out + offset, out + plane + offset, out + 2 * plane + offset};
    int x = 0;
#if CV_SIMD128
    // 16 pixels a step: deinterleave R, G, B bytes, widen to float, multiply-add, store
    // straight into the three planes. Same arithmetic (two roundings) as the tail.
    const cv::v_float32x4 vscale[3] = {cv::v_setall_f32(scale[0]), cv::v_setall_f32(scale[1]),
                                       cv::v_setall_f32(scale[2])};
    const cv::v_float32x4 vshift[3] = {cv::v_setall_f32(shift[0]), cv::v_setall_f32(shift[1]),
                                       cv::v_setall_f32(shift[2])};
    for (; x + 16 <= cols; x += 16) {
      cv::v_uint8x16 channel[3];
      cv::v_load_deinterleave(src + 3 * x, channel[0], channel[1], channel[2]);
      for (int c = 0; c < 3; ++c) {
        cv::v_uint16x8 lo, hi;
        cv::v_expand(channel[c], lo, hi);
        cv::v_uint32x4 q[4];
        cv::v_expand(lo, q[0], q[1]);
        cv::v_expand(hi, q[2], q[3]);
        float* d = dst[c] + x;
        for (int i = 0; i < 4; ++i) {
          const cv::v_float32x4 v = cv::v_cvt_f32(cv::v_reinterpret_as_s32(q[i]));
          cv::v_store(d + 4 * i, v * vscale[c] + vshift[c]);
        }
      }
    }
#endif
    for (; x < cols; ++x) {
      for (int c = 0; c < 3; ++c) {
        dst[c][x] = static_cast<float>(src[3 * x + c]) * scale[c] + shift[c];
      }
    }
  }
}

std::array<float, 3> ShadesOfGrayGains(const cv::Mat& rgb_u8, int p) {
  SL_CHECK(rgb_u8.type() == CV_8UC3 && p >= 1) << "type " << rgb_u8.type() << ", p " << p;
  std::array<double, 256> lut;
  for (int v = 0; v < 256; ++v) lut[v] = std::pow(v / 255.0, p);
  std::array<double, 3> sum = {0, 0, 0};
  for (int y = 0; y < rgb_u8.rows; ++y) {
    const uint8_t* src = rgb_u8.ptr<uint8_t>(y);
    for (int x = 0; x < rgb_u8.cols; ++x) {
      for (int c = 0; c < 3; ++c) sum[c] += lut[src[3 * x + c]];
    }
  }
  const double n = std::max(1.0, static_cast<double>(rgb_u8.rows) * rgb_u8.cols);
  std::array<double, 3> e;
  for (int c = 0; c < 3; ++c) e[c] = std::pow(sum[c] / n, 1.0 / p);
  const double mean_e = (e[0] + e[1] + e[2]) / 3;
  std::array<float, 3> gain = {1.0f, 1.0f, 1.0f};
  if (!(mean_e > 1e-6)) return gain;  // Black: nothing to balance.
  for (int c = 0; c < 3; ++c) {
    gain[c] = static_cast<float>(std::clamp(mean_e / std::max(e[c], 1e-6), 1.0 / 3, 3.0));
  }
  return gain;
}

void PreprocessInto(const cv::Mat& rgb, const PreprocessOptions& options, float* out) {
  NormalizeToCHW(ResizeView(rgb, options), options, out);
}

std::vector<float> Preprocess(const cv::Mat& rgb, const PreprocessOptions& options) {
  const cv::Mat resized = ResizeView(rgb, options);
  std::vector<float> out(size_t{3} * static_cast<size_t>(options.size) *
                         static_cast<size_t>(options.size));
  NormalizeToCHW(resized, options, out.data());
  return out;
}

}  // namespace skinlesion
