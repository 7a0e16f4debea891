// The fuzz targets' invariant check: a broken invariant aborts, which libFuzzer (and
// the corpus replay test) reports as a crash with the input that caused it.
#ifndef SKINLESION_FUZZ_REQUIRE_H_
#define SKINLESION_FUZZ_REQUIRE_H_

#include <cstdlib>

namespace skinlesion::fuzz {

inline void Require(bool condition) {
  if (!condition) std::abort();
}

}  // namespace skinlesion::fuzz

#endif  // SKINLESION_FUZZ_REQUIRE_H_
