// "Not a skin lesion?": an out-of-distribution score from the model's logits and a
// threshold fitted on in-distribution validation images. LibTorch-free.
//
// Score: the energy of the raw (uncalibrated) logits, E = -log sum_k exp(z_k)
// (Liu et al., "Energy-based Out-of-distribution Detection", NeurIPS 2020). Images
// like those the model was trained on get confident, large logits and a low energy;
// a cat, a page of text or a blank wall tends to a higher one. An image whose
// energy is above the model's threshold is answered "this does not look like a
// dermoscopic lesion photo" (the probabilities are still returned).
//
// The threshold is the (1 - reject_rate) quantile of the validation lesions'
// energies, so about reject_rate of real lesions are wrongly rejected
// (FitOodThreshold); docs/results.md reports AUROC against tests/fixtures/ood/.
#ifndef SKINLESION_COMMON_OOD_H_
#define SKINLESION_COMMON_OOD_H_

#include <optional>
#include <string>
#include <vector>

namespace skinlesion {

inline constexpr double kDefaultOodRejectRate = 0.01;

struct OodPolicy {
  std::optional<double> energy_threshold;  // Absent: no OOD check (older manifests).
  double reject_rate = kDefaultOodRejectRate;  // What the threshold was fitted for.
};

// -logsumexp(logits[0..n)), computed stably.
double EnergyScore(const float* logits, int n);

// True when `policy` has a threshold and `energy` is above it.
bool IsOutOfDistribution(double energy, const OodPolicy& policy);

// The (1 - reject_rate) quantile (nearest rank, upper) of in-distribution scores:
// at most reject_rate of them are above it. nullopt for no scores or a rate outside
// [0, 1).
std::optional<double> FitOodThreshold(std::vector<double> in_distribution, double reject_rate);

// The user-facing sentence of an OOD answer (API field ood_message, the website).
inline constexpr char kOodMessage[] =
    "This does not look like a dermoscopic photo of a skin lesion; the classes below are "
    "not meaningful for it.";

}  // namespace skinlesion

#endif  // SKINLESION_COMMON_OOD_H_
