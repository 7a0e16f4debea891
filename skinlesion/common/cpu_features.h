// What this CPU offers for numerics, read once with CPUID (x86-64) and /proc/cpuinfo.
//
// The project's machines differ from run to run (one has AVX-512 with native bf16
// dot products, another two vCPUs without), so precision choices are made at run time
// from these flags, never at compile time. LibTorch-free.
//
//   const CpuFeatures& cpu = DetectCpuFeatures();
//   if (cpu.native_bf16()) ...   // bf16 matrix products run at full speed here
#ifndef SKINLESION_COMMON_CPU_FEATURES_H_
#define SKINLESION_COMMON_CPU_FEATURES_H_

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace skinlesion {

struct CpuFeatures {
  std::string model_name;  // "AMD EPYC 9R45", from /proc/cpuinfo; "unknown" elsewhere.
  int logical_cpus = 0;    // std::thread::hardware_concurrency().
  // Each true only when the CPU reports it AND the OS saves the register state
  // (XGETBV), so code using it will not fault.
  bool avx2 = false;
  bool fma = false;
  bool avx512f = false;
  bool avx512bw = false;      // oneDNN's minimum for (emulated) bf16 kernels.
  bool avx512_vnni = false;   // int8 dot products.
  bool avx512_bf16 = false;   // Native bf16 dot products (VDPBF16PS): Cooper Lake, Zen 4+.
  bool amx_bf16 = false;      // AMX tiles with bf16 (Sapphire Rapids+).
  bool amx_int8 = false;

  // bf16 matrix products run natively (AVX512_BF16 or AMX-BF16). Without them
  // oneDNN emulates bf16 with fp32 arithmetic, which is slower than fp32.
  bool native_bf16() const { return avx512_bf16 || amx_bf16; }
  // The flags above that are set, in a fixed order: "avx2 fma avx512f ...".
  std::string FlagList() const;
};

// Detected once per process (thread-safe).
const CpuFeatures& DetectCpuFeatures();

// `features` with the comma-separated flags in `disabled` turned off (names as in
// FlagList(); "" changes nothing). Binaries pass the environment variable
// SKINLESION_CPU_DISABLE here, so a bf16-capable machine can act as one without
// (benchmarks of the fp32 fallback). InvalidArgument for an unknown name.
absl::StatusOr<CpuFeatures> WithFeaturesDisabled(CpuFeatures features, absl::string_view disabled);

// DetectCpuFeatures() less the features named in the environment variable
// SKINLESION_CPU_DISABLE: what precision choices (ChooseNumerics) see. Like the
// logging level, a process-wide diagnostic setting, the one environment variable
// the libraries read (docs/DEVELOPING.md). An unknown name is logged and ignored.
CpuFeatures CpuFeaturesForThisProcess();

}  // namespace skinlesion

#endif  // SKINLESION_COMMON_CPU_FEATURES_H_
