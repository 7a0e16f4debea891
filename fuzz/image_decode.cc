// Fuzzes the path of an uploaded image: header probe, DecodeImage under small
// limits, preprocessing to 64 px and the `medical` augmentation preset.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "fuzz/require.h"
#include "absl/strings/string_view.h"
#include "opencv2/core.hpp"
#include "skinlesion/common/rng.h"
#include "skinlesion/image/augment.h"
#include "skinlesion/image/decode.h"
#include "skinlesion/image/preprocess.h"

namespace {

constexpr int kSize = 64;

const skinlesion::Pipeline& Medical() {
  static const auto* const kPipeline =
      new skinlesion::Pipeline(skinlesion::MakePreset("medical", kSize).value());
  return *kPipeline;
}

}  // namespace

using skinlesion::fuzz::Require;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const bool kSingleThreaded = [] {
    cv::setNumThreads(0);  // Keep OpenCV's thread pool out of the fuzzer.
    return true;
  }();
  (void)kSingleThreaded;

  const absl::string_view bytes(reinterpret_cast<const char*>(data), size);
  skinlesion::DecodeLimits limits;
  limits.max_bytes = size_t{1} << 20;
  limits.max_pixels = 4'000'000;
  limits.max_side = 4096;

  // Every other input also tries reduced-scale JPEG decoding under a pixel budget.
  if (size % 2 == 1) {
    limits.reduce_to_side = 2 * kSize;
    limits.max_decoded_pixels = 1'000'000;
  }

  const auto info = skinlesion::ProbeImage(bytes);
  const auto plan = skinlesion::PlanDecode(bytes, limits);
  auto image = skinlesion::DecodeImage(bytes, limits);
  if (!image.ok()) return 0;
  // Whatever decodes must have been probed and planned, be RGB, have the planned
  // size (or its EXIF rotation), and respect the limits.
  Require(info.ok() && plan.ok());
  Require(image->type() == CV_8UC3 && image->isContinuous());
  Require(static_cast<uint64_t>(image->rows) * image->cols <= limits.max_pixels);
  Require(static_cast<uint64_t>(image->rows) * image->cols == plan->pixels());
  if (limits.max_decoded_pixels > 0) {
    Require(static_cast<uint64_t>(image->rows) * image->cols <= limits.max_decoded_pixels);
  }

  skinlesion::PreprocessOptions options;
  options.size = kSize;
  cv::Mat small = skinlesion::Resize(*image, options);
  Require(small.rows == kSize && small.cols == kSize);

  uint64_t seed = size;
  std::memcpy(&seed, data, size < sizeof(seed) ? size : sizeof(seed));
  skinlesion::Rng rng(skinlesion::DeriveSeed({seed, size}));
  Medical().Apply(small, rng);
  Require(small.rows == kSize && small.cols == kSize && small.type() == CV_8UC3);

  std::vector<float> chw(size_t{3} * kSize * kSize);
  skinlesion::NormalizeToCHW(small, options, chw.data());
  for (const float v : chw) Require(v > -3.0f && v < 3.0f);  // ImageNet range: about -2.1..2.7.
  return 0;
}
