// The machine's measured matrix-multiply peak in fp32 and bf16, for the benchmarks:
// every throughput figure is also reported as a fraction of what this CPU's matrix
// units deliver in the same run (docs/performance.md, "bf16").
//
// Peak = the best of `iters` timings of an n x n x n torch::mm (2 n^3 FLOPs) after
// one warm-up, with the caller's intra-op threads. bf16 products accumulate in fp32
// (oneDNN); without native bf16 units oneDNN emulates them, which shows here too.
#ifndef SKINLESION_BENCH_GEMM_PEAK_H_
#define SKINLESION_BENCH_GEMM_PEAK_H_

#include <torch/torch.h>

#include <algorithm>
#include <chrono>
#include <string>

#include "absl/strings/str_format.h"
#include "skinlesion/common/cpu_features.h"

namespace skinlesion::bench {

struct GemmPeak {
  double fp32_gflops = 0;
  double bf16_gflops = 0;
  double For(bool bf16) const { return bf16 ? bf16_gflops : fp32_gflops; }
  // "GEMM peak 2048^3: fp32 177 GFLOP/s, bf16 583 GFLOP/s (3.3x); CPU AMD EPYC, flags ..."
  std::string Describe(int n) const {
    const CpuFeatures& cpu = DetectCpuFeatures();
    return absl::StrFormat(
        "GEMM peak %d^3: fp32 %.0f GFLOP/s, bf16 %.0f GFLOP/s (%.2fx); CPU %s, flags: %s", n,
        fp32_gflops, bf16_gflops, bf16_gflops / std::max(fp32_gflops, 1e-9), cpu.model_name,
        cpu.FlagList());
  }
};

inline double MeasureGemmGflops(torch::ScalarType dtype, int n, int iters) {
  torch::NoGradGuard no_grad;
  const torch::Tensor a = torch::randn({n, n}).to(dtype);
  const torch::Tensor b = torch::randn({n, n}).to(dtype);
  torch::mm(a, b);  // Warm-up (oneDNN primitive creation, page faults).
  double best_s = 1e30;
  for (int i = 0; i < iters; ++i) {
    const auto start = std::chrono::steady_clock::now();
    torch::mm(a, b);
    best_s = std::min(best_s,
                      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
  }
  return 2.0 * n * static_cast<double>(n) * n / best_s / 1e9;
}

inline GemmPeak MeasureGemmPeak(int n = 2048, int iters = 5) {
  GemmPeak p;
  p.fp32_gflops = MeasureGemmGflops(torch::kFloat32, n, iters);
  p.bf16_gflops = MeasureGemmGflops(torch::kBFloat16, n, iters);
  return p;
}

}  // namespace skinlesion::bench

#endif  // SKINLESION_BENCH_GEMM_PEAK_H_
