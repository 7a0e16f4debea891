// Samplers: the order in which a data loader visits a dataset in each epoch.
//
// A sampler is a pure function of (construction arguments, epoch): the same epoch
// always gives the same indices, whichever thread asks, so training runs repeat
// exactly and the loader's worker count never changes the data. Thread-safe (const).
#ifndef SKINLESION_DATA_SAMPLER_H_
#define SKINLESION_DATA_SAMPLER_H_

#include <array>
#include <cstdint>
#include <vector>

#include "skinlesion/common/classes.h"

namespace skinlesion::data {

class Sampler {
 public:
  virtual ~Sampler() = default;
  // Indices into the dataset, in visiting order, for `epoch`.
  virtual std::vector<int64_t> EpochIndices(int64_t epoch) const = 0;
  // Number of indices EpochIndices() returns.
  virtual int64_t size() const = 0;
};

// 0, 1, ..., n-1 every epoch (evaluation).
class SequentialSampler final : public Sampler {
 public:
  explicit SequentialSampler(int64_t n);
  std::vector<int64_t> EpochIndices(int64_t epoch) const override;
  int64_t size() const override { return n_; }

 private:
  int64_t n_;
};

// A fresh permutation of 0..n-1 per epoch, from Rng(DeriveSeed({seed, epoch})).
class ShuffleSampler final : public Sampler {
 public:
  ShuffleSampler(int64_t n, uint64_t seed);
  std::vector<int64_t> EpochIndices(int64_t epoch) const override;
  int64_t size() const override { return n_; }

 private:
  int64_t n_;
  uint64_t seed_;
};

enum class ClassWeighting {
  kInverseFrequency,      // w_c ∝ 1 / n_c: every class equally likely / equally weighted.
  kSqrtInverseFrequency,  // w_c ∝ 1 / sqrt(n_c): a milder rebalancing.
};

// Per-class weights (index = class) for labels in [0, num_classes), normalised so the
// mean weight over the samples is 1 (sum over samples of w[label] == labels.size()).
// Absent classes get weight 0. Used by ClassBalancedSampler and by weighted losses.
// SL_CHECKs that labels are in range and not empty.
std::vector<double> ClassWeights(const std::vector<int>& labels, ClassWeighting weighting,
                                 int num_classes);

// Draws `num_samples` indices per epoch with replacement, sample i with probability
// proportional to ClassWeights(labels)[labels[i]]: with kInverseFrequency the drawn
// classes are uniform, with kSqrtInverseFrequency a class is drawn in proportion to
// sqrt(n_c). Randomness from Rng(DeriveSeed({seed, epoch})).
class ClassBalancedSampler final : public Sampler {
 public:
  ClassBalancedSampler(std::vector<int> labels, int num_classes, ClassWeighting weighting,
                       int64_t num_samples, uint64_t seed);
  std::vector<int64_t> EpochIndices(int64_t epoch) const override;
  int64_t size() const override { return num_samples_; }

 private:
  std::vector<std::vector<int64_t>> members_;  // Sample indices per class.
  std::vector<double> cumulative_;             // Class probabilities, cumulative.
  int64_t num_samples_;
  uint64_t seed_;
};

}  // namespace skinlesion::data

#endif  // SKINLESION_DATA_SAMPLER_H_
