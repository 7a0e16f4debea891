#include "skinlesion/data/sampler.h"

#include <cmath>
#include <numeric>
#include <utility>

#include "skinlesion/common/logging.h"
#include "skinlesion/common/rng.h"

namespace skinlesion::data {

SequentialSampler::SequentialSampler(int64_t n) : n_(n) {
  SL_CHECK(n >= 0) << "negative dataset size " << n;
}

std::vector<int64_t> SequentialSampler::EpochIndices(int64_t /*epoch*/) const {
  std::vector<int64_t> indices(n_);
  std::iota(indices.begin(), indices.end(), int64_t{0});
  return indices;
}

ShuffleSampler::ShuffleSampler(int64_t n, uint64_t seed) : n_(n), seed_(seed) {
  SL_CHECK(n >= 0) << "negative dataset size " << n;
}

std::vector<int64_t> ShuffleSampler::EpochIndices(int64_t epoch) const {
  std::vector<int64_t> indices(n_);
  std::iota(indices.begin(), indices.end(), int64_t{0});
  Rng rng(DeriveSeed({seed_, static_cast<uint64_t>(epoch)}));
  Shuffle(indices, rng);
  return indices;
}

std::vector<double> ClassWeights(const std::vector<int>& labels, ClassWeighting weighting,
                                 int num_classes) {
  SL_CHECK(!labels.empty()) << "class weights of an empty label set";
  std::vector<int64_t> counts(num_classes, 0);
  for (int label : labels) {
    SL_CHECK(label >= 0 && label < num_classes) << "label " << label << " out of range";
    ++counts[label];
  }
  std::vector<double> weights(num_classes, 0.0);
  double total = 0;  // Sum over samples of the unnormalised weight.
  for (int c = 0; c < num_classes; ++c) {
    if (counts[c] == 0) continue;
    const double n = static_cast<double>(counts[c]);
    weights[c] = weighting == ClassWeighting::kInverseFrequency ? 1.0 / n : 1.0 / std::sqrt(n);
    total += weights[c] * n;
  }
  const double scale = static_cast<double>(labels.size()) / total;
  for (double& w : weights) w *= scale;
  return weights;
}

ClassBalancedSampler::ClassBalancedSampler(std::vector<int> labels, int num_classes,
                                           ClassWeighting weighting, int64_t num_samples,
                                           uint64_t seed)
    : members_(num_classes), cumulative_(num_classes, 0.0), num_samples_(num_samples), seed_(seed) {
  SL_CHECK(num_samples >= 0) << "negative sample count " << num_samples;
  const std::vector<double> weights = ClassWeights(labels, weighting, num_classes);
  for (size_t i = 0; i < labels.size(); ++i) members_[labels[i]].push_back(static_cast<int64_t>(i));
  // A class is drawn with probability w_c * n_c / N (the weights sum to N over samples),
  // then a member uniformly: overall sample i has probability w[label_i] / N.
  double acc = 0;
  for (int c = 0; c < num_classes; ++c) {
    acc +=
        weights[c] * static_cast<double>(members_[c].size()) / static_cast<double>(labels.size());
    cumulative_[c] = acc;
  }
}

std::vector<int64_t> ClassBalancedSampler::EpochIndices(int64_t epoch) const {
  std::vector<int64_t> indices;
  indices.reserve(num_samples_);
  Rng rng(DeriveSeed({seed_, static_cast<uint64_t>(epoch)}));
  int last = static_cast<int>(members_.size()) - 1;
  while (members_[last].empty()) --last;  // Rounding may leave u above the final sum.
  for (int64_t i = 0; i < num_samples_; ++i) {
    const double u = rng.Uniform();
    int c = 0;
    while (c < last && !(u < cumulative_[c])) ++c;
    const std::vector<int64_t>& members = members_[c];
    indices.push_back(members[rng.UniformInt(members.size())]);
  }
  return indices;
}

}  // namespace skinlesion::data
