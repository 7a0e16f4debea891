// Training-time augmentations on 8-bit RGB images (CV_8UC3), albumentations-style.
//
// Every op is an Augmentation with a probability p: Apply(img, rng) draws from `rng`
// and, with probability p, transforms `img` in place (the Mat may be reallocated; a
// Mat that shares its pixels with `img` may see them change, so pass a clone() of
// anything you keep). All randomness comes from the skinlesion::Rng passed in, so
// the same seed gives the same output on every platform and thread count:
//
//   SL_ASSIGN_OR_RETURN(const Pipeline pipeline, MakePreset("medical", 224));
//   Rng rng(DeriveSeed({run_seed, epoch, sample_index}));
//   pipeline.Apply(image, rng);
//
// Ops and pipelines are immutable once built: one Pipeline may be shared by many
// threads, each with its own Rng. Every op keeps the type CV_8UC3 and, except
// RandomResizedCrop (which outputs its configured size) and RandomRotate90 on a
// non-square image (odd turns swap width and height), the size. Invalid parameters
// and non-CV_8UC3 images are programming errors (SL_CHECK).
#ifndef SKINLESION_IMAGE_AUGMENT_H_
#define SKINLESION_IMAGE_AUGMENT_H_

#include <array>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "opencv2/core/mat.hpp"
#include "skinlesion/common/rng.h"

namespace skinlesion {

class Augmentation {
 public:
  explicit Augmentation(double p);
  virtual ~Augmentation() = default;
  Augmentation(const Augmentation&) = delete;
  Augmentation& operator=(const Augmentation&) = delete;

  // With probability p, Transform(img, rng); otherwise Skipped(img).
  void Apply(cv::Mat& img, Rng& rng) const;
  // Applies the transform unconditionally (no probability draw).
  virtual void Transform(cv::Mat& img, Rng& rng) const = 0;
  // A readable description with the parameters, e.g. "HorizontalFlip(p=0.5)".
  virtual std::string Name() const = 0;
  double p() const { return p_; }

 protected:
  // Called instead of Transform when the probability draw fails. Default: nothing.
  virtual void Skipped(cv::Mat& img) const {}

 private:
  double p_;
};

// Deterministic building blocks of the ops, exposed for tests and tools.
// Rotates counter-clockwise by k * 90 degrees (any integer k; k mod 4 counts).
cv::Mat Rotate90(const cv::Mat& img, int k);
// out = saturate(round(alpha * x + beta)) per channel; beta in pixel levels.
void AdjustBrightnessContrast(cv::Mat& img, double alpha, double beta);
// Shifts H, S and V in OpenCV's 8-bit HSV (H in 0..179, 2 degrees per unit, wraps;
// S and V clamp to 0..255). Achromatic pixels (S = 0) keep S = 0, so grays stay
// gray (albumentations would tint them red). All shifts 0: image unchanged.
void ShiftHueSaturationValue(cv::Mat& img, int hue_shift, int sat_shift, int val_shift);
// Multiplies channel c by gains[c]: out = saturate(round(gains[c] * x)). The von Kries
// model of a change of light source or camera white balance (what Shades of Gray
// estimates and divides out). Gains all 1: image unchanged.
void ScaleChannels(cv::Mat& img, const std::array<double, 3>& gains);

// Mirrors left-right. p default 0.5.
class HorizontalFlip final : public Augmentation {
 public:
  explicit HorizontalFlip(double p = 0.5) : Augmentation(p) {}
  void Transform(cv::Mat& img, Rng& rng) const override;
  std::string Name() const override;
};

// Mirrors top-bottom. p default 0.5.
class VerticalFlip final : public Augmentation {
 public:
  explicit VerticalFlip(double p = 0.5) : Augmentation(p) {}
  void Transform(cv::Mat& img, Rng& rng) const override;
  std::string Name() const override;
};

// Rotates by k * 90 degrees, k uniform in {0, 1, 2, 3} (as albumentations). On a
// non-square image odd k swaps width and height. p default 0.5.
class RandomRotate90 final : public Augmentation {
 public:
  explicit RandomRotate90(double p = 0.5) : Augmentation(p) {}
  void Transform(cv::Mat& img, Rng& rng) const override;
  std::string Name() const override;
};

// Random affine map about the image centre (albumentations ShiftScaleRotate):
// angle uniform in [-rotate_limit, rotate_limit] degrees (default 45), scale
// 1 + uniform [-scale_limit, scale_limit] (default 0.1), shift uniform in
// [-shift_limit, shift_limit] times width / height (default 0.0625). Bilinear,
// reflected border (BORDER_REFLECT_101). All ranges 0: identity. p default 0.5.
class ShiftScaleRotate final : public Augmentation {
 public:
  ShiftScaleRotate(double shift_limit = 0.0625, double scale_limit = 0.1,
                   double rotate_limit = 45.0, double p = 0.5);
  void Transform(cv::Mat& img, Rng& rng) const override;
  std::string Name() const override;

 private:
  double shift_limit_, scale_limit_, rotate_limit_;
};

// Crops a random region and resizes it to height x width (torchvision's
// RandomResizedCrop): area uniform in [scale_min, scale_max] of the image (default
// 0.08-1.0), aspect ratio log-uniform in [ratio_min, ratio_max] (default 3/4-4/3),
// 10 tries, then a centre crop of the whole image clamped to the ratio range.
// Bilinear. The output is always height x width: when the probability draw fails
// (p default 1.0) the whole image is resized.
class RandomResizedCrop final : public Augmentation {
 public:
  RandomResizedCrop(int height, int width, double scale_min = 0.08, double scale_max = 1.0,
                    double ratio_min = 3.0 / 4.0, double ratio_max = 4.0 / 3.0, double p = 1.0);
  void Transform(cv::Mat& img, Rng& rng) const override;
  std::string Name() const override;

 protected:
  void Skipped(cv::Mat& img) const override;

 private:
  int height_, width_;
  double scale_min_, scale_max_, ratio_min_, ratio_max_;
};

// alpha = 1 + uniform [-contrast_limit, contrast_limit] (default 0.2), beta =
// uniform [-brightness_limit, brightness_limit] * 255 (default 0.2), then
// AdjustBrightnessContrast(img, alpha, beta). Ranges 0: identity. p default 0.5.
class BrightnessContrast final : public Augmentation {
 public:
  BrightnessContrast(double brightness_limit = 0.2, double contrast_limit = 0.2, double p = 0.5);
  void Transform(cv::Mat& img, Rng& rng) const override;
  std::string Name() const override;

 private:
  double brightness_limit_, contrast_limit_;
};

// Integer shifts uniform in [-limit, limit] for hue (OpenCV units, default 20),
// saturation (default 30) and value (default 20), then ShiftHueSaturationValue().
// Gray pixels stay gray. p default 0.5.
class HueSaturationValue final : public Augmentation {
 public:
  HueSaturationValue(int hue_shift_limit = 20, int sat_shift_limit = 30, int val_shift_limit = 20,
                     double p = 0.5);
  void Transform(cv::Mat& img, Rng& rng) const override;
  std::string Name() const override;

 private:
  int hue_shift_limit_, sat_shift_limit_, val_shift_limit_;
};

// A random illuminant: log gains uniform in [-log_gain_limit, log_gain_limit] per
// channel, centred so that the three gains' product is 1 (the colour of the light
// changes, not its brightness: BrightnessContrast does that), then ScaleChannels().
// With the default 0.2 the red gain relative to green spans about 0.67-1.49, wider than
// the spread between HAM10000's four sources' mean illuminants (docs/results.md,
// "A random illuminant"). Limit 0: identity. p default 0.5.
class RandomIlluminant final : public Augmentation {
 public:
  explicit RandomIlluminant(double log_gain_limit = 0.2, double p = 0.5);
  void Transform(cv::Mat& img, Rng& rng) const override;
  std::string Name() const override;

 private:
  double log_gain_limit_;
};

// BrightnessContrast(brightness, contrast) then HueSaturationValue(hue, saturation,
// 0), both always, under one probability (p default 0.5). Defaults 0.2, 0.2, 20, 10.
class ColorJitter final : public Augmentation {
 public:
  ColorJitter(double brightness = 0.2, double contrast = 0.2, int saturation = 20, int hue = 10,
              double p = 0.5);
  void Transform(cv::Mat& img, Rng& rng) const override;
  std::string Name() const override;

 private:
  BrightnessContrast brightness_contrast_;
  HueSaturationValue hue_saturation_;
};

// Contrast-limited adaptive histogram equalisation of the L channel of CIE Lab
// (colour kept). clip_limit default 2.0 (fixed, not sampled), tile_grid default
// 8 (8 x 8 tiles). p default 0.5.
class Clahe final : public Augmentation {
 public:
  explicit Clahe(double clip_limit = 2.0, int tile_grid = 8, double p = 0.5);
  void Transform(cv::Mat& img, Rng& rng) const override;
  std::string Name() const override;

 private:
  double clip_limit_;
  int tile_grid_;
};

// Elastic deformation (Simard et al. 2003): displacement fields of uniform
// [-1, 1) noise from `rng`, smoothed by a Gaussian of std `sigma` pixels (default
// 6), scaled by `alpha` pixels (default 120; displacements then have a std of
// about 3 px), applied with cv::remap (bilinear, reflected border). alpha 0:
// identity. Costs two random numbers per pixel: run it after cropping. p default 0.5.
class ElasticTransform final : public Augmentation {
 public:
  ElasticTransform(double alpha = 120.0, double sigma = 6.0, double p = 0.5);
  void Transform(cv::Mat& img, Rng& rng) const override;
  std::string Name() const override;

 private:
  double alpha_, sigma_;
};

// Gaussian blur with an odd square kernel uniform among the odd sizes in
// [min_kernel, max_kernel] (default 3-7), sigma from the kernel size. p default 0.5.
class GaussianBlur final : public Augmentation {
 public:
  GaussianBlur(int min_kernel = 3, int max_kernel = 7, double p = 0.5);
  void Transform(cv::Mat& img, Rng& rng) const override;
  std::string Name() const override;

 private:
  int min_kernel_, max_kernel_;
};

// Adds zero-mean Gaussian noise, independent per pixel and channel, with a std
// uniform in [std_min, std_max] levels (default 3-7, about albumentations'
// var_limit 10-50), rounded and saturated. The normal is discretised to 4096
// equiprobable quantiles (tails cut at 3.5 std), 12 random bits per value. p
// default 0.5.
class GaussianNoise final : public Augmentation {
 public:
  GaussianNoise(double std_min = 3.0, double std_max = 7.0, double p = 0.5);
  void Transform(cv::Mat& img, Rng& rng) const override;
  std::string Name() const override;

 private:
  double std_min_, std_max_;
};

// Fills between min_holes and max_holes (default 1-8) rectangles with `fill`
// (default 0) in every channel. Each hole is 1..round(max_size_fraction * rows)
// high and 1..round(max_size_fraction * cols) wide (at least 1; fraction default
// 0.08) and lies inside the image. p default 0.5.
class CoarseDropout final : public Augmentation {
 public:
  CoarseDropout(int max_holes = 8, double max_size_fraction = 0.08, int min_holes = 1, int fill = 0,
                double p = 0.5);
  void Transform(cv::Mat& img, Rng& rng) const override;
  std::string Name() const override;
  // The largest height / width of a hole on an image of `rows` x `cols`.
  int MaxHoleHeight(int rows) const;
  int MaxHoleWidth(int cols) const;
  int max_holes() const { return max_holes_; }

 private:
  int max_holes_;
  double max_size_fraction_;
  int min_holes_;
  int fill_;
};

// Ops applied in order. Copying a Pipeline shares its (immutable) ops.
class Pipeline {
 public:
  Pipeline() = default;

  Pipeline& Add(std::shared_ptr<const Augmentation> op);
  template <typename Op, typename... Args>
  Pipeline& Emplace(Args&&... args) {
    return Add(std::make_shared<const Op>(std::forward<Args>(args)...));
  }

  // Applies every op in order, each with its own probability draw from `rng`.
  void Apply(cv::Mat& img, Rng& rng) const;

  size_t size() const { return ops_.size(); }
  bool empty() const { return ops_.empty(); }
  const std::vector<std::shared_ptr<const Augmentation>>& ops() const { return ops_; }
  // The op names joined by ", "; "(none)" when empty.
  std::string Describe() const;

 private:
  std::vector<std::shared_ptr<const Augmentation>> ops_;
};

// The preset names MakePreset accepts: "none", "light", "medical", "medical_illuminant"
// ("medical" with RandomIlluminant(0.2, p 0.7) after its brightness and contrast).
const std::vector<std::string>& PresetNames();

// Builds a named pipeline:
//   none     no ops (evaluation).
//   light    HorizontalFlip 0.5, VerticalFlip 0.5, ShiftScaleRotate(0, 0, 15) 0.5,
//            BrightnessContrast(0.1, 0.1) 0.5. Keeps the input size.
//   medical  RandomResizedCrop(output_size, scale 0.8-1.0) 1.0, HorizontalFlip 0.5,
//            VerticalFlip 0.5, RandomRotate90 0.5, ShiftScaleRotate(0.05, 0.1, 30)
//            0.5, BrightnessContrast(0.2, 0.2) 0.5, HueSaturationValue(10, 20, 10)
//            0.3, Clahe(2.0, 8) 0.3, ElasticTransform(120, 6) 0.2, GaussianBlur(3,
//            5) 0.1, GaussianNoise(3, 7) 0.2, CoarseDropout(8 holes, 8%) 0.2.
//            Outputs output_size x output_size.
// InvalidArgument for an unknown name (the message lists the valid ones) or
// output_size < 1.
absl::StatusOr<Pipeline> MakePreset(absl::string_view name, int output_size);

}  // namespace skinlesion

#endif  // SKINLESION_IMAGE_AUGMENT_H_
