// A small, portable, seedable random number generator.
//
// Results must not depend on the standard library (std::uniform_real_distribution
// differs between implementations) nor on how many threads draw numbers, so every
// random decision in data loading and augmentation comes from an Rng seeded by
// DeriveSeed(run seed, epoch, sample index). Not thread-safe: one Rng per task.
#ifndef SKINLESION_COMMON_RNG_H_
#define SKINLESION_COMMON_RNG_H_

#include <cstddef>
#include <cstdint>
#include <initializer_list>
#include <utility>
#include <vector>

namespace skinlesion {

// SplitMix64 finaliser: a bijective 64-bit mix.
constexpr uint64_t Mix64(uint64_t x) {
  x += 0x9E3779B97F4A7C15ULL;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ULL;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBULL;
  return x ^ (x >> 31);
}

// Combines several integers into one well-mixed seed; order matters.
constexpr uint64_t DeriveSeed(std::initializer_list<uint64_t> parts) {
  uint64_t h = 0x2545F4914F6CDD1DULL;
  for (uint64_t p : parts) h = Mix64(h ^ Mix64(p));
  return h;
}

// xoshiro256** seeded through SplitMix64.
class Rng {
 public:
  explicit Rng(uint64_t seed);

  uint64_t NextU64();
  // Uniform in [0, 1) with 53 random bits.
  double Uniform();
  // Uniform in [lo, hi).
  double Uniform(double lo, double hi) { return lo + (hi - lo) * Uniform(); }
  // Uniform integer in [0, n); n > 0. Unbiased (rejection sampling).
  uint64_t UniformInt(uint64_t n);
  // True with probability p.
  bool Bernoulli(double p) { return p >= 1.0 || (p > 0.0 && Uniform() < p); }
  // Standard normal (Box-Muller, no cached second value so draws stay independent
  // of call history).
  double Normal();

 private:
  uint64_t s_[4];
};

// Fisher-Yates shuffle in place: one UniformInt draw per position from the back, so a
// given Rng state always gives the same order (the shuffle sampler, batch mixing).
template <typename T>
void Shuffle(std::vector<T>& values, Rng& rng) {
  for (std::size_t i = values.size(); i > 1; --i) std::swap(values[i - 1], values[rng.UniformInt(i)]);
}

}  // namespace skinlesion

#endif  // SKINLESION_COMMON_RNG_H_
