#include "skinlesion/image/augment.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "opencv2/core.hpp"
#include "opencv2/imgproc.hpp"
#include "skinlesion/common/logging.h"

namespace skinlesion {
namespace {

// Uniform in [-limit, limit].
double Symmetric(Rng& rng, double limit) { return rng.Uniform(-limit, limit); }

// Uniform integer in [-limit, limit].
int SymmetricInt(Rng& rng, int limit) {
  return static_cast<int>(rng.UniformInt(2 * static_cast<uint64_t>(limit) + 1)) - limit;
}

// Uniform integer in [lo, hi].
int UniformIntIn(Rng& rng, int lo, int hi) {
  return lo + static_cast<int>(rng.UniformInt(static_cast<uint64_t>(hi - lo) + 1));
}

// Standard normal quantiles at (i + 0.5) / 4096: a discrete normal with std 0.9997
// and tails cut at 3.54 sigma. Bisection on erfc, once per process (about 5 ms).
constexpr int kNormalQuantiles = 4096;
const std::array<float, kNormalQuantiles>& NormalQuantiles() {
  static const auto* const kTable = [] {
    auto* table = new std::array<float, kNormalQuantiles>;
    for (int i = 0; i < kNormalQuantiles / 2; ++i) {
      const double p = (i + 0.5) / kNormalQuantiles;  // Below 0.5: a negative quantile.
      double lo = -10.0, hi = 0.0;
      for (int iteration = 0; iteration < 60; ++iteration) {
        const double mid = 0.5 * (lo + hi);
        (0.5 * std::erfc(-mid / std::sqrt(2.0)) < p ? lo : hi) = mid;
      }
      const float z = static_cast<float>(0.5 * (lo + hi));
      (*table)[i] = z;
      (*table)[kNormalQuantiles - 1 - i] = -z;  // Symmetric.
    }
    return table;
  }();
  return *kTable;
}

void CheckImage(const cv::Mat& img) {
  SL_CHECK(!img.empty() && img.type() == CV_8UC3 && img.dims == 2)
      << "augmentations take a non-empty CV_8UC3 image, got type " << img.type();
}

}  // namespace

Augmentation::Augmentation(double p) : p_(p) {
  SL_CHECK(p >= 0.0 && p <= 1.0) << "probability " << p << " outside [0, 1]";
}

void Augmentation::Apply(cv::Mat& img, Rng& rng) const {
  CheckImage(img);
  if (rng.Bernoulli(p_)) {
    Transform(img, rng);
  } else {
    Skipped(img);
  }
}

// ---- Building blocks ----

cv::Mat Rotate90(const cv::Mat& img, int k) {
  cv::Mat out;
  switch (((k % 4) + 4) % 4) {
    case 0:
      out = img.clone();
      break;
    case 1:
      cv::rotate(img, out, cv::ROTATE_90_COUNTERCLOCKWISE);
      break;
    case 2:
      cv::rotate(img, out, cv::ROTATE_180);
      break;
    default:
      cv::rotate(img, out, cv::ROTATE_90_CLOCKWISE);
      break;
  }
  return out;
}

void AdjustBrightnessContrast(cv::Mat& img, double alpha, double beta) {
  if (alpha == 1.0 && beta == 0.0) return;
  cv::Mat lut(1, 256, CV_8UC1);
  auto* table = lut.ptr<uint8_t>();
  for (int v = 0; v < 256; ++v) table[v] = cv::saturate_cast<uint8_t>(alpha * v + beta);
  cv::LUT(img, lut, img);
}

void ScaleChannels(cv::Mat& img, const std::array<double, 3>& gains) {
  if (gains[0] == 1.0 && gains[1] == 1.0 && gains[2] == 1.0) return;
  cv::Mat lut(1, 256, CV_8UC3);
  auto* table = lut.ptr<cv::Vec3b>();
  for (int v = 0; v < 256; ++v) {
    for (int c = 0; c < 3; ++c) table[v][c] = cv::saturate_cast<uint8_t>(gains[c] * v);
  }
  cv::LUT(img, lut, img);
}

void ShiftHueSaturationValue(cv::Mat& img, int hue_shift, int sat_shift, int val_shift) {
  if (hue_shift == 0 && sat_shift == 0 && val_shift == 0) return;
  cv::Mat lut(1, 256, CV_8UC3);
  auto* table = lut.ptr<cv::Vec3b>();
  const int hue = ((hue_shift % 180) + 180) % 180;
  for (int v = 0; v < 256; ++v) {
    table[v][0] = static_cast<uint8_t>(v < 180 ? (v + hue) % 180 : v);
    table[v][1] = v == 0 ? 0 : cv::saturate_cast<uint8_t>(v + sat_shift);
    table[v][2] = cv::saturate_cast<uint8_t>(v + val_shift);
  }
  cv::Mat hsv;
  cv::cvtColor(img, hsv, cv::COLOR_RGB2HSV);
  cv::LUT(hsv, lut, hsv);
  cv::cvtColor(hsv, img, cv::COLOR_HSV2RGB);
}

// ---- Flips and rotations ----

void HorizontalFlip::Transform(cv::Mat& img, Rng&) const { cv::flip(img, img, 1); }
std::string HorizontalFlip::Name() const { return absl::StrCat("HorizontalFlip(p=", p(), ")"); }

void VerticalFlip::Transform(cv::Mat& img, Rng&) const { cv::flip(img, img, 0); }
std::string VerticalFlip::Name() const { return absl::StrCat("VerticalFlip(p=", p(), ")"); }

void RandomRotate90::Transform(cv::Mat& img, Rng& rng) const {
  const int k = static_cast<int>(rng.UniformInt(4));
  if (k != 0) img = Rotate90(img, k);
}
std::string RandomRotate90::Name() const { return absl::StrCat("RandomRotate90(p=", p(), ")"); }

// ---- Geometry ----

ShiftScaleRotate::ShiftScaleRotate(double shift_limit, double scale_limit, double rotate_limit,
                                   double p)
    : Augmentation(p),
      shift_limit_(shift_limit),
      scale_limit_(scale_limit),
      rotate_limit_(rotate_limit) {
  SL_CHECK(shift_limit >= 0.0 && shift_limit <= 1.0) << "shift_limit " << shift_limit;
  SL_CHECK(scale_limit >= 0.0 && scale_limit < 1.0) << "scale_limit " << scale_limit;
  SL_CHECK(rotate_limit >= 0.0 && rotate_limit <= 180.0) << "rotate_limit " << rotate_limit;
}

void ShiftScaleRotate::Transform(cv::Mat& img, Rng& rng) const {
  // Always four draws, whatever the ranges, so later ops see the same stream.
  const double angle = Symmetric(rng, rotate_limit_);
  const double scale = 1.0 + Symmetric(rng, scale_limit_);
  const double dx = Symmetric(rng, shift_limit_) * img.cols;
  const double dy = Symmetric(rng, shift_limit_) * img.rows;
  if (angle == 0.0 && scale == 1.0 && dx == 0.0 && dy == 0.0) return;
  const cv::Point2f center(static_cast<float>((img.cols - 1) / 2.0),
                           static_cast<float>((img.rows - 1) / 2.0));
  cv::Mat m = cv::getRotationMatrix2D(center, angle, scale);
  m.at<double>(0, 2) += dx;
  m.at<double>(1, 2) += dy;
  cv::Mat out;
  cv::warpAffine(img, out, m, img.size(), cv::INTER_LINEAR, cv::BORDER_REFLECT_101);
  img = out;
}

std::string ShiftScaleRotate::Name() const {
  return absl::StrCat("ShiftScaleRotate(shift=", shift_limit_, ", scale=", scale_limit_,
                      ", rotate=", rotate_limit_, ", p=", p(), ")");
}

RandomResizedCrop::RandomResizedCrop(int height, int width, double scale_min, double scale_max,
                                     double ratio_min, double ratio_max, double p)
    : Augmentation(p),
      height_(height),
      width_(width),
      scale_min_(scale_min),
      scale_max_(scale_max),
      ratio_min_(ratio_min),
      ratio_max_(ratio_max) {
  SL_CHECK(height >= 1 && width >= 1) << "output " << width << "x" << height;
  SL_CHECK(scale_min > 0.0 && scale_min <= scale_max && scale_max <= 1.0)
      << "scale range " << scale_min << ".." << scale_max;
  SL_CHECK(ratio_min > 0.0 && ratio_min <= ratio_max)
      << "ratio range " << ratio_min << ".." << ratio_max;
}

void RandomResizedCrop::Transform(cv::Mat& img, Rng& rng) const {
  const int rows = img.rows;
  const int cols = img.cols;
  const double area = static_cast<double>(rows) * cols;
  const double log_min = std::log(ratio_min_);
  const double log_max = std::log(ratio_max_);
  cv::Rect crop;
  bool found = false;
  for (int attempt = 0; attempt < 10 && !found; ++attempt) {
    const double target_area = area * rng.Uniform(scale_min_, scale_max_);
    const double aspect = std::exp(rng.Uniform(log_min, log_max));
    const long w = std::lround(std::sqrt(target_area * aspect));
    const long h = std::lround(std::sqrt(target_area / aspect));
    if (w > 0 && w <= cols && h > 0 && h <= rows) {
      const int y = static_cast<int>(rng.UniformInt(static_cast<uint64_t>(rows - h) + 1));
      const int x = static_cast<int>(rng.UniformInt(static_cast<uint64_t>(cols - w) + 1));
      crop = cv::Rect(x, y, static_cast<int>(w), static_cast<int>(h));
      found = true;
    }
  }
  if (!found) {  // Centre crop of the whole image, aspect clamped to the range.
    const double in_ratio = static_cast<double>(cols) / rows;
    long w = cols, h = rows;
    if (in_ratio < ratio_min_) {
      h = std::lround(w / ratio_min_);
    } else if (in_ratio > ratio_max_) {
      w = std::lround(h * ratio_max_);
    }
    w = std::clamp<long>(w, 1, cols);
    h = std::clamp<long>(h, 1, rows);
    crop = cv::Rect(static_cast<int>((cols - w) / 2), static_cast<int>((rows - h) / 2),
                    static_cast<int>(w), static_cast<int>(h));
  }
  cv::Mat out;
  cv::resize(img(crop), out, cv::Size(width_, height_), 0, 0, cv::INTER_LINEAR);
  img = out;
}

void RandomResizedCrop::Skipped(cv::Mat& img) const {
  if (img.rows == height_ && img.cols == width_) return;
  cv::Mat out;
  cv::resize(img, out, cv::Size(width_, height_), 0, 0, cv::INTER_LINEAR);
  img = out;
}

std::string RandomResizedCrop::Name() const {
  return absl::StrCat("RandomResizedCrop(", width_, "x", height_, ", scale=", scale_min_, "..",
                      scale_max_, ", ratio=", ratio_min_, "..", ratio_max_, ", p=", p(), ")");
}

ElasticTransform::ElasticTransform(double alpha, double sigma, double p)
    : Augmentation(p), alpha_(alpha), sigma_(sigma) {
  SL_CHECK(alpha >= 0.0 && std::isfinite(alpha)) << "alpha " << alpha;
  SL_CHECK(sigma > 0.0 && sigma <= 1000.0) << "sigma " << sigma;
}

void ElasticTransform::Transform(cv::Mat& img, Rng& rng) const {
  const int rows = img.rows;
  const int cols = img.cols;
  cv::Mat dx(rows, cols, CV_32F), dy(rows, cols, CV_32F);
  for (cv::Mat* field : {&dx, &dy}) {
    for (int y = 0; y < rows; ++y) {
      float* row = field->ptr<float>(y);
      for (int x = 0; x < cols; ++x) row[x] = static_cast<float>(rng.Uniform(-1.0, 1.0));
    }
    cv::GaussianBlur(*field, *field, cv::Size(0, 0), sigma_, sigma_, cv::BORDER_REFLECT_101);
  }
  // Turn the displacements into absolute sampling positions, in place.
  const float alpha = static_cast<float>(alpha_);
  for (int y = 0; y < rows; ++y) {
    float* mx = dx.ptr<float>(y);
    float* my = dy.ptr<float>(y);
    for (int x = 0; x < cols; ++x) {
      mx[x] = static_cast<float>(x) + alpha * mx[x];
      my[x] = static_cast<float>(y) + alpha * my[x];
    }
  }
  cv::Mat out;
  cv::remap(img, out, dx, dy, cv::INTER_LINEAR, cv::BORDER_REFLECT_101);
  img = out;
}

std::string ElasticTransform::Name() const {
  return absl::StrCat("ElasticTransform(alpha=", alpha_, ", sigma=", sigma_, ", p=", p(), ")");
}

// ---- Colour ----

BrightnessContrast::BrightnessContrast(double brightness_limit, double contrast_limit, double p)
    : Augmentation(p), brightness_limit_(brightness_limit), contrast_limit_(contrast_limit) {
  SL_CHECK(brightness_limit >= 0.0 && brightness_limit <= 1.0)
      << "brightness_limit " << brightness_limit;
  SL_CHECK(contrast_limit >= 0.0 && contrast_limit <= 1.0) << "contrast_limit " << contrast_limit;
}

void BrightnessContrast::Transform(cv::Mat& img, Rng& rng) const {
  const double alpha = 1.0 + Symmetric(rng, contrast_limit_);
  const double beta = Symmetric(rng, brightness_limit_) * 255.0;
  AdjustBrightnessContrast(img, alpha, beta);
}

std::string BrightnessContrast::Name() const {
  return absl::StrCat("BrightnessContrast(brightness=", brightness_limit_,
                      ", contrast=", contrast_limit_, ", p=", p(), ")");
}

HueSaturationValue::HueSaturationValue(int hue_shift_limit, int sat_shift_limit,
                                       int val_shift_limit, double p)
    : Augmentation(p),
      hue_shift_limit_(hue_shift_limit),
      sat_shift_limit_(sat_shift_limit),
      val_shift_limit_(val_shift_limit) {
  SL_CHECK(hue_shift_limit >= 0 && hue_shift_limit <= 90) << "hue_shift_limit " << hue_shift_limit;
  SL_CHECK(sat_shift_limit >= 0 && sat_shift_limit <= 255) << "sat_shift_limit " << sat_shift_limit;
  SL_CHECK(val_shift_limit >= 0 && val_shift_limit <= 255) << "val_shift_limit " << val_shift_limit;
}

void HueSaturationValue::Transform(cv::Mat& img, Rng& rng) const {
  const int hue = SymmetricInt(rng, hue_shift_limit_);
  const int sat = SymmetricInt(rng, sat_shift_limit_);
  const int val = SymmetricInt(rng, val_shift_limit_);
  ShiftHueSaturationValue(img, hue, sat, val);
}

std::string HueSaturationValue::Name() const {
  return absl::StrCat("HueSaturationValue(hue=", hue_shift_limit_, ", sat=", sat_shift_limit_,
                      ", val=", val_shift_limit_, ", p=", p(), ")");
}

RandomIlluminant::RandomIlluminant(double log_gain_limit, double p)
    : Augmentation(p), log_gain_limit_(log_gain_limit) {
  SL_CHECK(log_gain_limit >= 0.0 && log_gain_limit <= 1.0) << "log_gain_limit " << log_gain_limit;
}

void RandomIlluminant::Transform(cv::Mat& img, Rng& rng) const {
  std::array<double, 3> log_gains;
  for (double& g : log_gains) g = Symmetric(rng, log_gain_limit_);
  const double mean = (log_gains[0] + log_gains[1] + log_gains[2]) / 3.0;
  std::array<double, 3> gains;
  for (int c = 0; c < 3; ++c) gains[c] = std::exp(log_gains[c] - mean);
  ScaleChannels(img, gains);
}

std::string RandomIlluminant::Name() const {
  return absl::StrCat("RandomIlluminant(log_gain=", log_gain_limit_, ", p=", p(), ")");
}

ColorJitter::ColorJitter(double brightness, double contrast, int saturation, int hue, double p)
    : Augmentation(p),
      brightness_contrast_(brightness, contrast, 1.0),
      hue_saturation_(hue, saturation, 0, 1.0) {}

void ColorJitter::Transform(cv::Mat& img, Rng& rng) const {
  brightness_contrast_.Transform(img, rng);
  hue_saturation_.Transform(img, rng);
}

std::string ColorJitter::Name() const {
  return absl::StrCat("ColorJitter(", brightness_contrast_.Name(), ", ", hue_saturation_.Name(),
                      ", p=", p(), ")");
}

Clahe::Clahe(double clip_limit, int tile_grid, double p)
    : Augmentation(p), clip_limit_(clip_limit), tile_grid_(tile_grid) {
  SL_CHECK(clip_limit > 0.0 && clip_limit <= 1000.0) << "clip_limit " << clip_limit;
  SL_CHECK(tile_grid >= 1 && tile_grid <= 64) << "tile_grid " << tile_grid;
}

void Clahe::Transform(cv::Mat& img, Rng&) const {
  cv::Mat lab;
  cv::cvtColor(img, lab, cv::COLOR_RGB2Lab);
  cv::Mat lightness;
  cv::extractChannel(lab, lightness, 0);
  // A CLAHE object keeps per-call buffers: one per call keeps the op thread-safe.
  const cv::Ptr<cv::CLAHE> clahe = cv::createCLAHE(clip_limit_, cv::Size(tile_grid_, tile_grid_));
  clahe->apply(lightness, lightness);
  cv::insertChannel(lightness, lab, 0);
  cv::cvtColor(lab, img, cv::COLOR_Lab2RGB);
}

std::string Clahe::Name() const {
  return absl::StrCat("Clahe(clip=", clip_limit_, ", grid=", tile_grid_, ", p=", p(), ")");
}

// ---- Blur, noise, dropout ----

GaussianBlur::GaussianBlur(int min_kernel, int max_kernel, double p)
    : Augmentation(p), min_kernel_(min_kernel | 1), max_kernel_(max_kernel) {
  if (max_kernel_ % 2 == 0) --max_kernel_;
  SL_CHECK(min_kernel >= 1 && max_kernel <= 255 && min_kernel_ <= max_kernel_)
      << "kernel range " << min_kernel << ".." << max_kernel << " has no odd size";
}

void GaussianBlur::Transform(cv::Mat& img, Rng& rng) const {
  const int k = min_kernel_ + 2 * UniformIntIn(rng, 0, (max_kernel_ - min_kernel_) / 2);
  if (k == 1) return;
  cv::GaussianBlur(img, img, cv::Size(k, k), 0.0, 0.0, cv::BORDER_REFLECT_101);
}

std::string GaussianBlur::Name() const {
  return absl::StrCat("GaussianBlur(kernel=", min_kernel_, "..", max_kernel_, ", p=", p(), ")");
}

GaussianNoise::GaussianNoise(double std_min, double std_max, double p)
    : Augmentation(p), std_min_(std_min), std_max_(std_max) {
  SL_CHECK(std_min >= 0.0 && std_min <= std_max && std_max <= 255.0)
      << "std range " << std_min << ".." << std_max;
}

void GaussianNoise::Transform(cv::Mat& img, Rng& rng) const {
  // Box-Muller costs a log, a sqrt and a sine per value (about 7 ms for 224 x 224 x 3);
  // the noise is rounded to whole levels anyway, so draw it from a table instead:
  // 12 random bits pick one of the 4096 normal quantiles, pre-scaled and rounded.
  const double sigma = rng.Uniform(std_min_, std_max_);
  const std::array<float, kNormalQuantiles>& quantiles = NormalQuantiles();
  std::array<int16_t, kNormalQuantiles> levels;
  for (int i = 0; i < kNormalQuantiles; ++i) {
    levels[i] = static_cast<int16_t>(std::lround(quantiles[i] * sigma));
  }
  uint64_t bits = 0;
  int available = 0;  // 12-bit indices left in `bits`.
  const int values = img.cols * 3;
  for (int y = 0; y < img.rows; ++y) {
    uint8_t* row = img.ptr<uint8_t>(y);
    for (int i = 0; i < values; ++i) {
      if (available == 0) {
        bits = rng.NextU64();
        available = 5;
      }
      const int noise = levels[bits & (kNormalQuantiles - 1)];
      bits >>= 12;
      --available;
      row[i] = cv::saturate_cast<uint8_t>(row[i] + noise);
    }
  }
}

std::string GaussianNoise::Name() const {
  return absl::StrCat("GaussianNoise(std=", std_min_, "..", std_max_, ", p=", p(), ")");
}

CoarseDropout::CoarseDropout(int max_holes, double max_size_fraction, int min_holes, int fill,
                             double p)
    : Augmentation(p),
      max_holes_(max_holes),
      max_size_fraction_(max_size_fraction),
      min_holes_(min_holes),
      fill_(fill) {
  SL_CHECK(min_holes >= 0 && min_holes <= max_holes && max_holes <= 1000)
      << "holes " << min_holes << ".." << max_holes;
  SL_CHECK(max_size_fraction > 0.0 && max_size_fraction <= 1.0)
      << "max_size_fraction " << max_size_fraction;
  SL_CHECK(fill >= 0 && fill <= 255) << "fill " << fill;
}

int CoarseDropout::MaxHoleHeight(int rows) const {
  return std::clamp(static_cast<int>(std::lround(max_size_fraction_ * rows)), 1, rows);
}
int CoarseDropout::MaxHoleWidth(int cols) const {
  return std::clamp(static_cast<int>(std::lround(max_size_fraction_ * cols)), 1, cols);
}

void CoarseDropout::Transform(cv::Mat& img, Rng& rng) const {
  const int holes = UniformIntIn(rng, min_holes_, max_holes_);
  const int max_h = MaxHoleHeight(img.rows);
  const int max_w = MaxHoleWidth(img.cols);
  for (int i = 0; i < holes; ++i) {
    const int h = UniformIntIn(rng, 1, max_h);
    const int w = UniformIntIn(rng, 1, max_w);
    const int y = UniformIntIn(rng, 0, img.rows - h);
    const int x = UniformIntIn(rng, 0, img.cols - w);
    img(cv::Rect(x, y, w, h)).setTo(cv::Scalar::all(fill_));
  }
}

std::string CoarseDropout::Name() const {
  return absl::StrCat("CoarseDropout(holes=", min_holes_, "..", max_holes_,
                      ", size=", max_size_fraction_, ", fill=", fill_, ", p=", p(), ")");
}

// ---- Pipeline and presets ----

Pipeline& Pipeline::Add(std::shared_ptr<const Augmentation> op) {
  SL_CHECK(op != nullptr);
  ops_.push_back(std::move(op));
  return *this;
}

void Pipeline::Apply(cv::Mat& img, Rng& rng) const {
  CheckImage(img);
  for (const auto& op : ops_) op->Apply(img, rng);
}

std::string Pipeline::Describe() const {
  if (ops_.empty()) return "(none)";
  return absl::StrJoin(ops_, ", ",
                       [](std::string* out, const auto& op) { absl::StrAppend(out, op->Name()); });
}

const std::vector<std::string>& PresetNames() {
  static const auto* const kNames =
      new std::vector<std::string>{"none", "light", "medical", "medical_illuminant"};
  return *kNames;
}

absl::StatusOr<Pipeline> MakePreset(absl::string_view name, int output_size) {
  if (output_size < 1 || output_size > 16384) {
    return absl::InvalidArgumentError(
        absl::StrCat("augmentation output size must be in [1, 16384], got ", output_size));
  }
  Pipeline pipeline;
  if (name == "none") return pipeline;
  if (name == "light") {
    pipeline.Emplace<HorizontalFlip>(0.5)
        .Emplace<VerticalFlip>(0.5)
        .Emplace<ShiftScaleRotate>(0.0, 0.0, 15.0, 0.5)
        .Emplace<BrightnessContrast>(0.1, 0.1, 0.5);
    return pipeline;
  }
  if (name == "medical" || name == "medical_illuminant") {
    pipeline
        .Emplace<RandomResizedCrop>(output_size, output_size, 0.8, 1.0, 3.0 / 4.0, 4.0 / 3.0, 1.0)
        .Emplace<HorizontalFlip>(0.5)
        .Emplace<VerticalFlip>(0.5)
        .Emplace<RandomRotate90>(0.5)
        .Emplace<ShiftScaleRotate>(0.05, 0.1, 30.0, 0.5)
        .Emplace<BrightnessContrast>(0.2, 0.2, 0.5);
    if (name == "medical_illuminant") pipeline.Emplace<RandomIlluminant>(0.2, 0.7);
    pipeline.Emplace<HueSaturationValue>(10, 20, 10, 0.3)
        .Emplace<Clahe>(2.0, 8, 0.3)
        .Emplace<ElasticTransform>(120.0, 6.0, 0.2)
        .Emplace<GaussianBlur>(3, 5, 0.1)
        .Emplace<GaussianNoise>(3.0, 7.0, 0.2)
        .Emplace<CoarseDropout>(8, 0.08, 1, 0, 0.2);
    return pipeline;
  }
  return absl::InvalidArgumentError(
      absl::StrCat("unknown augmentation preset '", name,
                   "'; valid presets: ", absl::StrJoin(PresetNames(), ", ")));
}

}  // namespace skinlesion
