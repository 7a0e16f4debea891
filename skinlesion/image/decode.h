// Safe decoding of untrusted image bytes (uploads, dataset files) into RGB.
//
// The format is recognised by its magic bytes and the header is parsed here, before
// OpenCV allocates any pixel memory, so a tiny file that claims a 100000x100000
// canvas is refused without decoding. Only JPEG, PNG, WebP and BMP are accepted;
// everything else (GIF, TIFF, text, ...) is refused even where OpenCV could read it,
// which keeps OpenCV's less-travelled decoders away from outside data.
//
// Error codes (callers map them, e.g. HTTP 400 / 413):
//   kInvalidArgument    empty input, unknown or unsupported format, a malformed or
//                       truncated file, a decoder failure.
//   kResourceExhausted  more bytes, pixels or a longer side than DecodeLimits allow.
//   kNotFound           DecodeImageFile: the file cannot be opened.
//
// Thread-safe; no global state.
#ifndef SKINLESION_IMAGE_DECODE_H_
#define SKINLESION_IMAGE_DECODE_H_

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "opencv2/core/mat.hpp"
#include "skinlesion/image/format.h"

namespace skinlesion {

struct DecodeLimits {
  // Largest accepted encoded size. Default 20 MiB.
  size_t max_bytes = size_t{20} << 20;
  // Largest accepted width * height. Default 40 megapixels.
  uint64_t max_pixels = 40'000'000;
  // Largest accepted width or height. Default 16384.
  int max_side = 16384;
  // JPEG only: when > 0, decode at the smallest scale of 1/2, 1/4 or 1/8 whose
  // shorter side is still >= reduce_to_side (libjpeg's DCT scaling: the inverse DCT,
  // colour conversion and the pixel buffer shrink with the scale; the entropy-coded
  // data is still read in full). 0 (default): full size. Other formats always decode
  // at full size.
  int reduce_to_side = 0;
  // When > 0, refuse (ResourceExhausted) an image whose decoded width * height, after
  // any JPEG reduction, is over it: a budget for what one decode may cost, below
  // max_pixels, which bounds what the header may claim. 0 (default): no budget.
  uint64_t max_decoded_pixels = 0;
};

// What the header says; no pixels are decoded.
struct ImageInfo {
  ImageFormat format = ImageFormat::kJpeg;
  int width = 0;  // As stored; an EXIF rotation is applied only by DecodeImage.
  int height = 0;
};

// How DecodeImage will decode an image: its header and the scale (1, 2, 4 or 8:
// width and height are divided by it, rounding up).
struct DecodePlan {
  ImageInfo info;
  int scale = 1;
  int width = 0;  // Decoded, before any EXIF rotation.
  int height = 0;
  uint64_t pixels() const { return uint64_t(width) * uint64_t(height); }
};

// Recognises the format by magic bytes and reads width and height from the header:
// JPEG (markers walked to the first SOFn), PNG (IHDR), WebP (VP8, VP8L or VP8X
// chunk), BMP (BITMAPCOREHEADER or BITMAPINFOHEADER and later; a negative height,
// top-down, reports its absolute value). Checks no limits.
absl::StatusOr<ImageInfo> ProbeImage(absl::string_view bytes);

// ProbeImage, the limits (max_bytes, max_side, max_pixels, max_decoded_pixels) and
// the scale reduce_to_side picks, from the header alone: microseconds, so a caller
// can refuse or route an expensive image before anyone decodes it. DecodeImage
// follows the same plan (and also checks that a JPEG is complete).
absl::StatusOr<DecodePlan> PlanDecode(absl::string_view bytes, const DecodeLimits& limits);

// Decodes to an 8-bit, 3-channel, continuous RGB image (grayscale and alpha inputs
// become RGB; 16-bit PNGs are scaled to 8 bits; the JPEG EXIF orientation is
// applied, so width and height may be swapped relative to ProbeImage; a JPEG may be
// reduced, see DecodeLimits::reduce_to_side). Limits are checked on the header
// before decoding. A JPEG must be complete (its entropy-coded
// data walked up to the EOI marker): libjpeg would otherwise fill a truncated file
// with gray and report success.
absl::StatusOr<cv::Mat> DecodeImage(absl::string_view bytes, const DecodeLimits& limits = {});

// Reads `path` (refusing files over limits.max_bytes before reading them) and
// decodes it. Errors name the path.
absl::StatusOr<cv::Mat> DecodeImageFile(const std::string& path, const DecodeLimits& limits = {});

}  // namespace skinlesion

#endif  // SKINLESION_IMAGE_DECODE_H_
