#include "skinlesion/data/sampler.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <numeric>
#include <vector>

#include "gtest/gtest.h"

namespace skinlesion::data {
namespace {

// Labels with very unequal classes, as in HAM10000 (counts 1000, 400, 100, 25, 9, 0, 4).
std::vector<int> SkewedLabels() {
  const std::array<int, kHam10000NumClasses> counts = {1000, 400, 100, 25, 9, 0, 4};
  std::vector<int> labels;
  for (int c = 0; c < kHam10000NumClasses; ++c) labels.insert(labels.end(), counts[c], c);
  // Interleave so class members are not contiguous.
  std::vector<int> shuffled(labels.size());
  for (size_t i = 0; i < labels.size(); ++i) shuffled[(i * 7919) % labels.size()] = labels[i];
  return shuffled;
}

std::array<int, kHam10000NumClasses> Counts(const std::vector<int>& labels) {
  std::array<int, kHam10000NumClasses> counts{};
  for (int l : labels) ++counts[l];
  return counts;
}

TEST(SamplerTest, SequentialIsTheIdentity) {
  SequentialSampler sampler(5);
  EXPECT_EQ(sampler.size(), 5);
  EXPECT_EQ(sampler.EpochIndices(3), (std::vector<int64_t>{0, 1, 2, 3, 4}));
  EXPECT_TRUE(SequentialSampler(0).EpochIndices(0).empty());
}

TEST(SamplerTest, ShuffleIsAPermutationPerEpoch) {
  ShuffleSampler sampler(1000, 42);
  const std::vector<int64_t> e0 = sampler.EpochIndices(0);
  const std::vector<int64_t> e1 = sampler.EpochIndices(1);
  std::vector<int64_t> sorted = e0;
  std::sort(sorted.begin(), sorted.end());
  std::vector<int64_t> identity(1000);
  std::iota(identity.begin(), identity.end(), 0);
  EXPECT_EQ(sorted, identity);
  sorted = e1;
  std::sort(sorted.begin(), sorted.end());
  EXPECT_EQ(sorted, identity);
  EXPECT_NE(e0, e1);
  EXPECT_NE(e0, identity);
  EXPECT_EQ(e0, ShuffleSampler(1000, 42).EpochIndices(0));  // Repeatable.
  EXPECT_NE(e0, ShuffleSampler(1000, 43).EpochIndices(0));
}

TEST(SamplerTest, ClassWeightsHaveMeanOneOverSamples) {
  const std::vector<int> labels = SkewedLabels();
  const std::array<int, kHam10000NumClasses> counts = Counts(labels);
  for (ClassWeighting weighting :
       {ClassWeighting::kInverseFrequency, ClassWeighting::kSqrtInverseFrequency}) {
    const std::vector<double> w = ClassWeights(labels, weighting, kHam10000NumClasses);
    double sum = 0;
    for (int l : labels) sum += w[l];
    EXPECT_NEAR(sum / labels.size(), 1.0, 1e-12);
    EXPECT_EQ(w[5], 0.0);  // Absent class.
    const double exponent = weighting == ClassWeighting::kInverseFrequency ? 1.0 : 0.5;
    for (int c : {1, 2, 3, 4, 6}) {
      EXPECT_NEAR(w[c] / w[0], std::pow(static_cast<double>(counts[0]) / counts[c], exponent),
                  1e-9);
    }
  }
  // Balanced labels: all weights 1.
  const std::vector<double> flat =
      ClassWeights({0, 1, 2, 3, 4, 5, 6}, ClassWeighting::kInverseFrequency, kHam10000NumClasses);
  for (double w : flat) EXPECT_NEAR(w, 1.0, 1e-12);
}

std::array<double, kHam10000NumClasses> DrawnClassShares(const std::vector<int>& labels,
                                                 ClassWeighting weighting, int64_t n,
                                                 int64_t epoch) {
  ClassBalancedSampler sampler(labels, kHam10000NumClasses, weighting, n, 5);
  const std::vector<int64_t> indices = sampler.EpochIndices(epoch);
  EXPECT_EQ(static_cast<int64_t>(indices.size()), n);
  std::array<double, kHam10000NumClasses> shares{};
  for (int64_t i : indices) {
    EXPECT_GE(i, 0);
    EXPECT_LT(i, static_cast<int64_t>(labels.size()));
    shares[labels[i]] += 1.0 / static_cast<double>(n);
  }
  return shares;
}

TEST(SamplerTest, InverseFrequencyDrawsClassesUniformly) {
  const std::vector<int> labels = SkewedLabels();
  const std::array<double, kHam10000NumClasses> shares =
      DrawnClassShares(labels, ClassWeighting::kInverseFrequency, 60000, 0);
  // 6 present classes -> 1/6 each; 60000 draws: standard deviation ~0.0015.
  for (int c : {0, 1, 2, 3, 4, 6}) EXPECT_NEAR(shares[c], 1.0 / 6.0, 0.01) << c;
  EXPECT_EQ(shares[5], 0.0);
}

TEST(SamplerTest, SqrtInverseFrequencyDrawsInProportionToSqrtCount) {
  const std::vector<int> labels = SkewedLabels();
  const std::array<int, kHam10000NumClasses> counts = Counts(labels);
  double total = 0;
  for (int n : counts) total += std::sqrt(static_cast<double>(n));
  const std::array<double, kHam10000NumClasses> shares =
      DrawnClassShares(labels, ClassWeighting::kSqrtInverseFrequency, 60000, 1);
  for (int c = 0; c < kHam10000NumClasses; ++c) {
    EXPECT_NEAR(shares[c], std::sqrt(static_cast<double>(counts[c])) / total, 0.01) << c;
  }
}

TEST(SamplerTest, ClassBalancedIsRepeatableAndVariesByEpoch) {
  const std::vector<int> labels = SkewedLabels();
  ClassBalancedSampler a(labels, kHam10000NumClasses, ClassWeighting::kInverseFrequency, 500, 9);
  ClassBalancedSampler b(labels, kHam10000NumClasses, ClassWeighting::kInverseFrequency, 500, 9);
  EXPECT_EQ(a.size(), 500);
  EXPECT_EQ(a.EpochIndices(2), b.EpochIndices(2));
  EXPECT_NE(a.EpochIndices(2), a.EpochIndices(3));
  // Every member of a class is reachable, not just one representative.
  ClassBalancedSampler big(labels, kHam10000NumClasses, ClassWeighting::kInverseFrequency, 20000, 1);
  std::vector<bool> seen(labels.size());
  for (int64_t i : big.EpochIndices(0)) seen[i] = true;
  for (size_t i = 0; i < labels.size(); ++i) {
    if (labels[i] == 6 || labels[i] == 4) {
      EXPECT_TRUE(seen[i]) << i;
    }
  }
}

}  // namespace
}  // namespace skinlesion::data
