// "Not a skin lesion?": an out-of-distribution score and a threshold fitted on
// in-distribution validation images. LibTorch-free (the feature score is computed by
// the model's runtime, skinlesion/models/feature_ood.h).
//
// Two scores, the model's manifest says which ("ood.method"):
// - "mahalanobis" (Lee et al., NeurIPS 2018): the smallest Mahalanobis distance of
//   the image's penultimate features (the pooled last feature map of a CNN) to the
//   training images' class means, under their shared, shrunk covariance. A cat, a
//   page of text or a blank wall lands far from every lesion class. Needs the fitted
//   Gaussian (a safetensors file beside the weights) and a model with a feature map.
// - "energy" (Liu et al., NeurIPS 2020): E = -log sum_k exp(z_k) of the raw logits.
//   Needs nothing else, but on this project's models it fails (AUROC 0.25 on the
//   non-lesion fixtures, docs/results.md): kept for older manifests and models
//   without a feature map.
// Either way a higher score is more unusual, and an image whose score is above the
// model's threshold is answered "this does not look like a dermoscopic lesion photo"
// (the probabilities are still returned).
//
// The threshold is the (1 - reject_rate) quantile of the validation lesions' scores,
// so about reject_rate of real lesions are wrongly rejected (FitOodThreshold).
#ifndef SKINLESION_COMMON_OOD_H_
#define SKINLESION_COMMON_OOD_H_

#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace skinlesion {

inline constexpr double kDefaultOodRejectRate = 0.01;

enum class OodMethod { kEnergy, kMahalanobis };

// "energy", "mahalanobis".
const char* OodMethodName(OodMethod method);
std::optional<OodMethod> ParseOodMethod(std::string_view name);

struct OodPolicy {
  OodMethod method = OodMethod::kEnergy;
  std::optional<double> threshold;  // Absent: no OOD check (older manifests).
  double reject_rate = kDefaultOodRejectRate;  // What the threshold was fitted for.
  // kMahalanobis: the fitted Gaussian's file in the model directory and its SHA-256
  // (hex; empty: not checked).
  std::string features_file;
  std::string features_sha256;
};

// The Gaussian's file name written by `skinlesion fit-thresholds`.
inline constexpr char kOodFeaturesFile[] = "ood_features.safetensors";

// -logsumexp(logits[0..n)), computed stably.
double EnergyScore(const float* logits, int n);

// True when `policy` has a threshold and `score` (of the policy's method) is above it.
bool IsOutOfDistribution(double score, const OodPolicy& policy);

// The (1 - reject_rate) quantile (nearest rank, upper) of in-distribution scores:
// at most reject_rate of them are above it. nullopt for no scores or a rate outside
// [0, 1).
std::optional<double> FitOodThreshold(std::vector<double> in_distribution, double reject_rate);

// Where a score lies among one model's scores of its own training images: (score -
// median) / interquartile range. Scores of different models are not comparable (each
// has its own feature space and Gaussian), these units are: a threshold fitted on the
// cross-validation rounds' held-out lesions in units of each round's own training
// scores carries over to a model trained on every image (`skinlesion fit-thresholds
// --from_cv`), which has no held-out lesion of its own.
struct OodScoreScale {
  double median = 0;
  double spread = 1;  // The interquartile range (1 where it is 0).
  // Of a model's training-image scores (non-finite ones ignored); nullopt for none.
  static std::optional<OodScoreScale> Of(std::vector<double> scores);
  double ToUnits(double score) const { return (score - median) / spread; }
  double FromUnits(double units) const { return median + units * spread; }
};

// The user-facing sentence of an OOD answer (API field ood_message, the website).
inline constexpr char kOodMessage[] =
    "This does not look like a dermoscopic photo of a skin lesion; the classes below are "
    "not meaningful for it.";

}  // namespace skinlesion

#endif  // SKINLESION_COMMON_OOD_H_
