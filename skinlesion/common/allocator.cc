#include "skinlesion/common/allocator.h"

#include <cstdlib>

#if defined(__GLIBC__)
#include <malloc.h>
#endif

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"

namespace skinlesion {
namespace {

bool EnvSet(const char* name) {
  const char* v = std::getenv(name);
  return v != nullptr && *v != '\0';
}

AllocatorTuning Tune() {
  AllocatorTuning t;
  const char* defaults = std::getenv("SKINLESION_MALLOC_DEFAULTS");
  if (defaults != nullptr && absl::string_view(defaults) == "1") {
    t.description = "malloc defaults kept (SKINLESION_MALLOC_DEFAULTS=1)";
    return t;
  }
  const char* tunables = std::getenv("GLIBC_TUNABLES");
  if ((tunables != nullptr && absl::StrContains(tunables, "glibc.malloc.")) ||
      EnvSet("MALLOC_MMAP_THRESHOLD_") || EnvSet("MALLOC_TRIM_THRESHOLD_") ||
      EnvSet("MALLOC_ARENA_MAX")) {
    t.description =
        "malloc tuned by the environment (GLIBC_TUNABLES / MALLOC_*_THRESHOLD_ / "
        "MALLOC_ARENA_MAX); left as set";
    return t;
  }
#if defined(__GLIBC__)
  const bool mmap_ok = mallopt(M_MMAP_THRESHOLD, static_cast<int>(kTensorMmapThreshold)) == 1;
  const bool trim_ok = mallopt(M_TRIM_THRESHOLD, static_cast<int>(kTensorTrimThreshold)) == 1;
  const bool arena_ok = mallopt(M_ARENA_MAX, kTensorArenas) == 1;
  t.applied = mmap_ok && trim_ok && arena_ok;
  t.description =
      t.applied
          ? absl::StrCat("glibc malloc: blocks up to ", kTensorMmapThreshold >> 20,
                         " MiB from the heap, up to ", kTensorTrimThreshold >> 20,
                         " MiB of free memory kept, one arena for all threads (tensor memory is "
                         "reused, not faulted in again)")
          : absl::StrCat("glibc malloc refused the settings (mmap ", mmap_ok ? "ok" : "refused",
                         ", trim ", trim_ok ? "ok" : "refused", ", arenas ",
                         arena_ok ? "ok" : "refused", ")");
#else
  t.description = "not glibc: malloc defaults kept";
#endif
  return t;
}

}  // namespace

const AllocatorTuning& TuneAllocatorForTensors() {
  static const AllocatorTuning tuning = Tune();
  return tuning;
}

}  // namespace skinlesion
