#include "skinlesion/common/rng.h"

#include <cmath>
#include <vector>

#include "gtest/gtest.h"

namespace skinlesion {
namespace {

TEST(RngTest, SameSeedSameSequence) {
  Rng a(42), b(42), c(43);
  bool differs = false;
  for (int i = 0; i < 100; ++i) {
    const uint64_t x = a.NextU64();
    EXPECT_EQ(x, b.NextU64());
    differs |= x != c.NextU64();
  }
  EXPECT_TRUE(differs);
}

TEST(RngTest, DeriveSeedDependsOnEveryPartAndOrder) {
  EXPECT_NE(DeriveSeed({1, 2, 3}), DeriveSeed({1, 2, 4}));
  EXPECT_NE(DeriveSeed({1, 2, 3}), DeriveSeed({3, 2, 1}));
  EXPECT_EQ(DeriveSeed({7, 0, 9}), DeriveSeed({7, 0, 9}));
}

TEST(RngTest, UniformMomentsAndRanges) {
  Rng r(1);
  double sum = 0, sum2 = 0;
  const int n = 100000;
  for (int i = 0; i < n; ++i) {
    const double u = r.Uniform();
    ASSERT_GE(u, 0.0);
    ASSERT_LT(u, 1.0);
    sum += u;
    sum2 += u * u;
  }
  EXPECT_NEAR(sum / n, 0.5, 0.01);
  EXPECT_NEAR(sum2 / n - 0.25, 1.0 / 12, 0.01);
  std::vector<int> counts(7);
  for (int i = 0; i < 70000; ++i) counts[r.UniformInt(7)]++;
  for (int c : counts) EXPECT_NEAR(c, 10000, 500);
}

TEST(RngTest, NormalMoments) {
  Rng r(2);
  double sum = 0, sum2 = 0;
  const int n = 100000;
  for (int i = 0; i < n; ++i) {
    const double z = r.Normal();
    sum += z;
    sum2 += z * z;
  }
  EXPECT_NEAR(sum / n, 0.0, 0.02);
  EXPECT_NEAR(sum2 / n, 1.0, 0.02);
}

TEST(RngTest, BernoulliEdges) {
  Rng r(3);
  for (int i = 0; i < 100; ++i) {
    EXPECT_FALSE(r.Bernoulli(0.0));
    EXPECT_TRUE(r.Bernoulli(1.0));
  }
}

}  // namespace
}  // namespace skinlesion
