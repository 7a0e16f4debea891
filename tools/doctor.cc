// `skinlesion doctor`: what this machine offers skinlesion, and what to fix.
#include <ATen/Parallel.h>
#include <ATen/Version.h>
#include <torch/torch.h>
#include <torch/version.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "opencv2/core/version.hpp"
#include "skinlesion/common/allocator.h"
#include "skinlesion/common/cpu_features.h"
#include "skinlesion/common/precision.h"
#include "tools/ml_commands.h"

namespace skinlesion::cli {
namespace {

// Shared libraries of a kind mapped into this process ("blas", "omp"), from
// /proc/self/maps: what the dynamic linker actually chose.
std::vector<std::string> MappedLibraries(absl::string_view part) {
  std::set<std::string> paths;
  std::ifstream maps("/proc/self/maps");
  std::string line;
  while (std::getline(maps, line)) {
    const size_t slash = line.find('/');
    if (slash == std::string::npos) continue;
    const std::string path = line.substr(slash);
    const std::string file = path.substr(path.rfind('/') + 1);
    if (absl::StrContains(file, part) && absl::StrContains(file, ".so")) paths.insert(path);
  }
  return {paths.begin(), paths.end()};
}

// Median GFLOP/s of an n^3 matrix product in `dtype` over a few runs.
double GemmGflops(int n, torch::ScalarType dtype) {
  torch::NoGradGuard no_grad;
  const torch::Tensor a = torch::randn({n, n}).to(dtype);
  const torch::Tensor b = torch::randn({n, n}).to(dtype);
  torch::Tensor c = torch::matmul(a, b);  // Warm.
  std::vector<double> seconds;
  for (int i = 0; i < 5; ++i) {
    const auto start = std::chrono::steady_clock::now();
    c = torch::matmul(a, b);
    seconds.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
  }
  std::sort(seconds.begin(), seconds.end());
  return 2.0 * n * n * n / seconds[seconds.size() / 2] / 1e9;
}

}  // namespace

absl::Status RunDoctor(int threads) {
  std::vector<std::string> warnings;
  auto row = [](absl::string_view key, absl::string_view value) {
    std::printf("%-16s %s\n", std::string(key).c_str(), std::string(value).c_str());
  };

  const CpuFeatures& cpu = DetectCpuFeatures();
  const CpuFeatures used = CpuFeaturesForThisProcess();
  row("cpu", absl::StrCat(cpu.model_name, ", ", cpu.logical_cpus, " logical CPUs"));
  row("cpu flags", cpu.FlagList().empty() ? "(none of interest)" : cpu.FlagList());
  const PrecisionDecision cpu_auto =
      ResolvePrecision(PrecisionChoice::kAuto, {.cuda = false, .native_bf16 = used.native_bf16()});
  row("precision auto", cpu_auto.reason);
  if (used.native_bf16() != cpu.native_bf16()) {
    row("", "(SKINLESION_CPU_DISABLE hides native bf16 from precision choices)");
  }

  row("libtorch", absl::StrCat(TORCH_VERSION, torch::cuda::is_available() ? " (CUDA)" : " (CPU)"));
  const int default_threads = at::get_num_threads();
  row("threads", absl::StrCat("LibTorch default ", default_threads, "; commands use --threads (",
                              threads, " here)"));
  if (default_threads == 1 && cpu.logical_cpus > 1) {
    warnings.push_back(absl::StrCat(
        "LibTorch defaults to 1 intra-op thread on this machine: pass --threads (the CLI's "
        "default is 2), SKINLESION_INFERENCE_THREADS to the cluster, or set OMP_NUM_THREADS"));
  }
  const AllocatorTuning& memory =
      TuneAllocatorForTensors();  // main() already did; the same answer.
  row("memory", memory.description);
  if (!memory.applied) {
    warnings.push_back(absl::StrCat("tensor memory is returned to the kernel after each pass (",
                                    memory.description,
                                    "): large batches fault their pages in again every time "
                                    "(skinlesion/common/allocator.h)"));
  }
  const char* wait_policy = std::getenv("OMP_WAIT_POLICY");
  row("OMP_WAIT_POLICY", wait_policy != nullptr ? wait_policy : "(unset: OpenMP threads spin)");
  if ((wait_policy == nullptr || !absl::EqualsIgnoreCase(wait_policy, "passive")) &&
      cpu.logical_cpus <= 4) {
    warnings.push_back(
        "OMP_WAIT_POLICY is not PASSIVE: on a small machine idle OpenMP threads spin and take "
        "the cores from the threads doing the work (scripts/*.sh set it)");
  }

  const std::vector<std::string> blas = MappedLibraries("blas");
  row("blas", blas.empty() ? "(none mapped)" : absl::StrJoin(blas, ", "));
  const bool reference_blas =
      std::any_of(blas.begin(), blas.end(), [](const std::string& p) {
        return absl::StrContains(p, "/blas/libblas") || absl::StrContains(p, "/libblas.so");
      }) &&
      std::none_of(blas.begin(), blas.end(),
                   [](const std::string& p) { return absl::StrContains(p, "openblas"); });
  if (reference_blas) {
    warnings.push_back(
        "LibTorch's matrix products run on the reference BLAS (about 20x slower): install "
        "libopenblas0-openmp (scripts/setup.sh does)");
  }
  const std::vector<std::string> omp = MappedLibraries("omp");
  row("openmp", omp.empty() ? "(none mapped)" : absl::StrJoin(omp, ", "));

  // ATen's build configuration names oneDNN's version ("oneDNN v2.6.3" or
  // "Intel(R) MKL-DNN v..."): the library behind bf16 convolutions.
  std::string onednn = "(not in the build configuration)";
  for (absl::string_view line : absl::StrSplit(at::show_config(), '\n')) {
    if (absl::StrContains(line, "DNN v")) {
      absl::string_view name = absl::StripAsciiWhitespace(line);
      absl::ConsumePrefix(&name, "- ");
      onednn = std::string(name);
    }
  }
  row("onednn", onednn);
  row("opencv", CV_VERSION);

  torch::set_num_threads(threads);
  const double fp32 = GemmGflops(512, torch::kFloat32);
  std::string gemm = absl::StrFormat("fp32 %.0f GFLOP/s", fp32);
  if (used.native_bf16()) {
    absl::StrAppendFormat(&gemm, ", bf16 %.0f GFLOP/s", GemmGflops(512, torch::kBFloat16));
  }
  row("gemm 512^3", absl::StrCat(gemm, " (", threads, " threads, median of 5)"));
  // Any AVX2 core with a tuned BLAS does > 20 GFLOP/s per thread at this size; the
  // reference BLAS does about 1-2.
  if (fp32 < 5.0 * threads) {
    warnings.push_back(absl::StrFormat(
        "fp32 matrix products are slow (%.1f GFLOP/s on %d threads): a reference BLAS, an "
        "overloaded machine, or a CPU without AVX2", fp32, threads));
  }

  if (torch::cuda::is_available()) {
    row("cuda", absl::StrCat(torch::cuda::device_count(), " device(s); --device cuda"));
  } else {
    row("cuda", "no CUDA device (or a CPU-only LibTorch)");
  }

  if (warnings.empty()) {
    std::printf("\nno problems found\n");
  } else {
    std::printf("\n");
    for (const std::string& w : warnings) std::printf("warning: %s\n", w.c_str());
  }
  return absl::OkStatus();
}

}  // namespace skinlesion::cli
