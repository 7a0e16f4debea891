#include "skinlesion/common/cpu_features.h"

#include <array>
#include <cstdlib>
#include <fstream>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "skinlesion/common/logging.h"
#include "absl/strings/strip.h"

#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#define SKINLESION_X86 1
#endif

namespace skinlesion {
namespace {

std::string ReadModelName() {
  std::ifstream in("/proc/cpuinfo");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("model name", 0) == 0) {
      const size_t colon = line.find(':');
      if (colon != std::string::npos) {
        return std::string(absl::StripAsciiWhitespace(line.substr(colon + 1)));
      }
    }
  }
  return "unknown";
}

#ifdef SKINLESION_X86
// XCR0: which register states the OS saves on context switches.
unsigned long long ReadXcr0() {
  unsigned int eax = 0, edx = 0;
  __asm__ volatile("xgetbv" : "=a"(eax), "=d"(edx) : "c"(0));
  return (static_cast<unsigned long long>(edx) << 32) | eax;
}
#endif

CpuFeatures Detect() {
  CpuFeatures f;
  f.model_name = ReadModelName();
  f.logical_cpus = static_cast<int>(std::thread::hardware_concurrency());
#ifdef SKINLESION_X86
  unsigned int eax = 0, ebx = 0, ecx = 0, edx = 0;
  if (!__get_cpuid(1, &eax, &ebx, &ecx, &edx)) return f;
  const bool osxsave = (ecx >> 27) & 1;
  const bool fma = (ecx >> 12) & 1;
  if (!osxsave) return f;
  const unsigned long long xcr0 = ReadXcr0();
  const bool ymm_state = (xcr0 & 0x6) == 0x6;        // SSE + AVX
  const bool zmm_state = (xcr0 & 0xe6) == 0xe6;      // + opmask, ZMM_Hi256, Hi16_ZMM
  const bool amx_state = (xcr0 & 0x60000) == 0x60000;  // XTILECFG + XTILEDATA
  unsigned int max_leaf = 0;
  __cpuid(0, max_leaf, ebx, ecx, edx);
  if (max_leaf < 7) return f;
  unsigned int b7 = 0, c7 = 0, d7 = 0;
  __cpuid_count(7, 0, eax, b7, c7, d7);
  const unsigned int max_subleaf = eax;
  f.avx2 = ymm_state && ((b7 >> 5) & 1);
  f.fma = ymm_state && fma;
  f.avx512f = zmm_state && ((b7 >> 16) & 1);
  f.avx512bw = f.avx512f && ((b7 >> 30) & 1);
  f.avx512_vnni = f.avx512f && ((c7 >> 11) & 1);
  f.amx_bf16 = amx_state && ((d7 >> 22) & 1);
  f.amx_int8 = amx_state && ((d7 >> 25) & 1);
  if (max_subleaf >= 1) {
    unsigned int a71 = 0;
    __cpuid_count(7, 1, a71, ebx, ecx, edx);
    f.avx512_bf16 = f.avx512f && ((a71 >> 5) & 1);
  }
#endif
  return f;
}

}  // namespace

// Every flag with its name, in FlagList() order.
template <typename F>
auto Flags(F& f) {
  return std::array<std::pair<const char*, decltype(&f.avx2)>, 8>{{{"avx2", &f.avx2},
                                                                   {"fma", &f.fma},
                                                                   {"avx512f", &f.avx512f},
                                                                   {"avx512bw", &f.avx512bw},
                                                                   {"avx512_vnni", &f.avx512_vnni},
                                                                   {"avx512_bf16", &f.avx512_bf16},
                                                                   {"amx_bf16", &f.amx_bf16},
                                                                   {"amx_int8", &f.amx_int8}}};
}

std::string CpuFeatures::FlagList() const {
  std::vector<std::string> on;
  for (const auto& [name, set] : Flags(*this)) {
    if (*set) on.emplace_back(name);
  }
  return on.empty() ? "none" : absl::StrJoin(on, " ");
}

absl::StatusOr<CpuFeatures> WithFeaturesDisabled(CpuFeatures features, absl::string_view disabled) {
  for (absl::string_view name : absl::StrSplit(disabled, ',', absl::SkipWhitespace())) {
    name = absl::StripAsciiWhitespace(name);
    bool found = false;
    for (const auto& [flag, set] : Flags(features)) {
      if (name == flag) {
        *set = false;
        found = true;
      }
    }
    if (!found) {
      return absl::InvalidArgumentError(absl::StrCat("unknown CPU feature '", name,
                                                     "' (known: avx2, fma, avx512f, avx512bw, "
                                                     "avx512_vnni, avx512_bf16, amx_bf16, amx_int8)"));
    }
  }
  return features;
}

CpuFeatures CpuFeaturesForThisProcess() {
  const char* disabled = std::getenv("SKINLESION_CPU_DISABLE");
  if (disabled == nullptr || *disabled == '\0') return DetectCpuFeatures();
  absl::StatusOr<CpuFeatures> f = WithFeaturesDisabled(DetectCpuFeatures(), disabled);
  if (!f.ok()) {
    SL_LOG(WARNING) << "SKINLESION_CPU_DISABLE: " << f.status().message() << "; ignored";
    return DetectCpuFeatures();
  }
  return *f;
}

const CpuFeatures& DetectCpuFeatures() {
  static const CpuFeatures* features = new CpuFeatures(Detect());
  return *features;
}

}  // namespace skinlesion
