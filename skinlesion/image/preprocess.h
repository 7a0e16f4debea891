// Model input preparation: resize/crop an RGB image to a square and normalise it
// to the float CHW layout of torchvision-style models.
//
//   PreprocessOptions options;                       // 224, shorter side + centre crop,
//                                                    // ImageNet mean/std
//   std::vector<float> chw = Preprocess(rgb, options);   // 3 * 224 * 224 floats
//   PreprocessInto(rgb, options, batch + i * 3 * 224 * 224);  // straight into a batch
//
// Functions take an 8-bit 3-channel RGB cv::Mat (what DecodeImage returns) and treat
// a wrong type or invalid options as programming errors (SL_CHECK); validate options
// that come from configuration once with ValidatePreprocessOptions(). Thread-safe.
#ifndef SKINLESION_IMAGE_PREPROCESS_H_
#define SKINLESION_IMAGE_PREPROCESS_H_

#include <array>
#include <vector>

#include "absl/status/status.h"
#include "opencv2/core/mat.hpp"
#include "skinlesion/common/imagenet.h"

namespace skinlesion {

enum class ResizeMode {
  // Resize so the shorter side is size / crop_fraction, keeping the aspect ratio, and
  // keep the centred size x size square (torchvision Resize + CenterCrop). Computed
  // the cheap way round: cut the centred square of side round(shorter *
  // crop_fraction) from the source, then resize it once to size x size. Memory and
  // time are bounded by the output even for a 1 x 16384 strip; the sampling grid may
  // differ from resize-then-crop by under one source pixel.
  kResizeShorterThenCenterCrop,
  // Resize straight to size x size; the aspect ratio is not kept.
  kDirectResize,
};

enum class Interpolation {
  kBilinear,  // cv::INTER_LINEAR (default).
  kArea,      // cv::INTER_AREA: averages when shrinking, less aliasing.
  kBicubic,   // cv::INTER_CUBIC.
};

// Resize() shrinks by at most this factor with the chosen interpolation; a larger
// shrink first averages the source down (INTER_AREA) to this multiple of the output.
inline constexpr int kMaxInterpolatedShrink = 2;

struct PreprocessOptions {
  // Output side in pixels. Default 224.
  int size = 224;
  ResizeMode mode = ResizeMode::kResizeShorterThenCenterCrop;
  // kResizeShorterThenCenterCrop only: the share of the resized shorter side that
  // the crop keeps, in (0, 1]. 1.0 (default): the shorter side becomes `size` and only
  // the longer side is cropped; 0.875: the classic "resize 256, crop 224".
  float crop_fraction = 1.0f;
  Interpolation interpolation = Interpolation::kBilinear;
  // Per-channel (R, G, B) normalisation of x / 255: (x / 255 - mean) / std.
  // Defaults: ImageNet.
  std::array<float, 3> mean = kImageNetMean;
  std::array<float, 3> std = kImageNetStd;
  // Colour constancy before normalisation: Shades of Gray with this Minkowski norm
  // (Finlayson & Trezzi 2004; p = 6 is what the top ISIC 2018 entries used against
  // camera and lighting differences between hospitals). 0: off (default). Each
  // channel is multiplied by mean(e) / e_c, e_c = (mean over the resized image of
  // (x_c / 255)^p)^(1/p), gains clamped to [1/3, 3]; values are not clipped at 255.
  int shades_of_gray_p = 0;
};

// The per-channel (R, G, B) gains Shades of Gray applies to `rgb_u8` (CV_8UC3) with
// norm p >= 1: all 1 for a grey image, larger for a channel the illuminant lacks.
std::array<float, 3> ShadesOfGrayGains(const cv::Mat& rgb_u8, int p);

// The shorter side Resize() shrinks an image's to: ceil(size / crop_fraction) in
// kResizeShorterThenCenterCrop mode, size in kDirectResize mode.
int ResizedShorterSide(const PreprocessOptions& options);

// Large JPEGs may be decoded at 1/2, 1/4 or 1/8 scale (DecodeLimits::reduce_to_side)
// as long as the decoded shorter side stays at least this many times
// ResizedShorterSide. At 4x, ordinary images (HAM10000's 600x450 for a 112 px
// model) decode at full size, exactly as in training; only images far larger than
// the model needs are reduced, and Resize() still shrinks them by >= 4x (averaging
// first: kMaxInterpolatedShrink).
inline constexpr int kReducedDecodeMargin = 4;

// kReducedDecodeMargin * ResizedShorterSide(options): the reduce_to_side for images
// fed through `options`.
int ReducedDecodeSide(const PreprocessOptions& options);

// InvalidArgument unless 1 <= size <= 16384, 0 < crop_fraction <= 1, every std
// is finite and > 0 (and every mean finite) and 0 <= shades_of_gray_p <= 16.
absl::Status ValidatePreprocessOptions(const PreprocessOptions& options);

// The resize/crop step: a size x size CV_8UC3 RGB image, continuous, in its own
// buffer (never sharing the input's pixels). The centred source square starts at
// floor((side - crop) / 2) on each axis.
cv::Mat Resize(const cv::Mat& rgb, const PreprocessOptions& options);

// Writes 3 * rgb.rows * rgb.cols floats to `out` in CHW order (all of R, then G, then
// B), each (x * gain[c] / 255 - mean[c]) / std[c] with gain = ShadesOfGrayGains when
// options.shades_of_gray_p > 0, else 1. Any size of input; non-continuous views
// (ROIs) are fine. Uses options.mean, options.std and options.shades_of_gray_p.
void NormalizeToCHW(const cv::Mat& rgb_u8, const PreprocessOptions& options, float* out);

// Resize() then NormalizeToCHW(): 3 * size * size floats. The Into variant writes
// into the caller's buffer (e.g. a slot of a batch tensor) and skips the copy that
// Resize() makes to return a continuous image.
std::vector<float> Preprocess(const cv::Mat& rgb, const PreprocessOptions& options);
void PreprocessInto(const cv::Mat& rgb, const PreprocessOptions& options, float* out);

}  // namespace skinlesion

#endif  // SKINLESION_IMAGE_PREPROCESS_H_
