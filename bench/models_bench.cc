// Model-zoo throughput against Python torchvision on the same machine, same run.
//
// Eval-mode forward and training-mode forward+backward of ViT-B/16, ResNet-50 and
// EfficientNet-B0 at 224 px, batch 1 and 8, CPU, 2 threads on both sides (medians
// of --iters after --warmup), in each of --precisions on the C++ side
// (skinlesion/models/numerics.h: bf16 eval converts the weights, CNNs channels-last;
// bf16 training is autocast with fp32 weights) and each of --python_precisions on the
// reference side (bench/reference/models_bench.py with /usr/bin/python3: fp32 =
// plain torchvision, bf16 = module.bfloat16() / CPU autocast). Each configuration's
// Python runs follow its C++ run directly. The run first measures the machine's fp32
// and bf16 GEMM peak (bench/gemm_peak.h); "% peak" is the C++ row's model FLOPs per
// second over the peak of its precision (training: 3x the forward FLOPs).
//
//   models_bench [--threads 2] [--iters 5] [--warmup 1] [--size 224]
//                [--models vit_b_16,resnet50,efficientnet_b0] [--batches 1,8]
//                [--modes eval,train] [--precisions fp32,bf16]
//                [--python_precisions fp32,bf16] [--python /usr/bin/python3]
//                [--reference bench/reference/models_bench.py] [--no_reference]
//                [--gemm_size 2048]
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <unistd.h>
#include <iostream>
#include <map>
#include <memory>
#include <sstream>
#include <string>
#include <tuple>
#include <vector>

#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "bench/gemm_peak.h"
#include "skinlesion/common/allocator.h"
#include "skinlesion/common/precision.h"
#include "skinlesion/models/model_zoo.h"
#include "skinlesion/models/numerics.h"

namespace {

using skinlesion::models::Classifier;

double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

double Run(Classifier& model, int64_t batch, const std::string& mode, int warmup, int iters, int64_t size,
           const skinlesion::models::Numerics& numerics) {
  torch::Tensor x = torch::randn({batch, 3, size, size});
  const bool bf16 = numerics.precision == skinlesion::Precision::kBf16;
  if (mode == "eval") {
    model.eval();
    skinlesion::models::PrepareModel(model, numerics);
    x = skinlesion::models::PrepareInput(x, numerics, torch::kCPU);
  } else {
    model.train();
    if (numerics.channels_last) {
      skinlesion::models::ToChannelsLast(model);
      x = x.contiguous(torch::MemoryFormat::ChannelsLast);
    }
  }
  std::vector<double> times;
  for (int i = 0; i < warmup + iters; ++i) {
    const auto start = std::chrono::steady_clock::now();
    if (mode == "eval") {
      torch::NoGradGuard no_grad;
      model.forward(x);
    } else {
      model.zero_grad();
      torch::Tensor y;
      {
        skinlesion::models::AutocastGuard autocast(/*cuda=*/false, /*fp16=*/false, bf16);
        y = model.forward(x);
      }
      y.to(torch::kFloat32).sum().backward();
    }
    const std::chrono::duration<double, std::milli> ms = std::chrono::steady_clock::now() - start;
    if (i >= warmup) times.push_back(ms.count());
  }
  return Median(times);
}

std::string Flag(int argc, char** argv, const std::string& name, const std::string& fallback) {
  for (int i = 1; i + 1 < argc; ++i) {
    if (argv[i] == "--" + name) return argv[i + 1];
  }
  return fallback;
}

bool HasFlag(int argc, char** argv, const std::string& name) {
  for (int i = 1; i < argc; ++i) {
    if (argv[i] == "--" + name) return true;
  }
  return false;
}

}  // namespace

int main(int argc, char** argv) {
  // An idle process's OpenMP workers spin-wait by default (libgomp's active policy)
  // and steal the CPU from the side being measured; libgomp reads the policy when it
  // loads, so set it and start again. The Python child inherits it.
  if (std::getenv("OMP_WAIT_POLICY") == nullptr) {
    setenv("OMP_WAIT_POLICY", "PASSIVE", 1);
    execv("/proc/self/exe", argv);
  }
  // As the CLI and the services run; the Python child keeps glibc's defaults.
  skinlesion::TuneAllocatorForTensors();
  const int threads = std::stoi(Flag(argc, argv, "threads", "2"));
  const int iters = std::stoi(Flag(argc, argv, "iters", "5"));
  const int warmup = std::stoi(Flag(argc, argv, "warmup", "1"));
  const int64_t size = std::stoll(Flag(argc, argv, "size", "224"));
  const std::string models = Flag(argc, argv, "models", "vit_b_16,resnet50,efficientnet_b0");
  const std::string batches = Flag(argc, argv, "batches", "1,8");
  const std::string modes = Flag(argc, argv, "modes", "eval,train");
  const std::vector<std::string> precisions =
      absl::StrSplit(Flag(argc, argv, "precisions", "fp32,bf16"), ',', absl::SkipEmpty());
  const std::vector<std::string> python_precisions =
      absl::StrSplit(Flag(argc, argv, "python_precisions", "fp32,bf16"), ',', absl::SkipEmpty());
  const int gemm_size = std::stoi(Flag(argc, argv, "gemm_size", "2048"));
  torch::set_num_threads(threads);
  torch::manual_seed(0);
  skinlesion::bench::GemmPeak peak;
  if (gemm_size > 0) {
    peak = skinlesion::bench::MeasureGemmPeak(gemm_size);
    std::fprintf(stderr, "%s\n", peak.Describe(gemm_size).c_str());
  }

  // (model, mode, batch, precision)
  using Key = std::tuple<std::string, std::string, int64_t, std::string>;
  std::map<Key, double> ours, reference;
  std::map<Key, std::string> numerics_of;
  std::map<std::string, double> gflops_of;
  std::vector<Key> order;
  const bool with_reference = !HasFlag(argc, argv, "no_reference");
  // The machine may be shared: each configuration's Python runs follow its C++ runs
  // directly, so slow drifts in load hit both sides alike.
  auto run_reference = [&](const std::string& name, const std::string& mode, int64_t batch,
                           const std::string& precision) {
    const std::string cmd = absl::StrFormat(
        "%s %s --threads %d --iters %d --warmup %d --size %d --models %s --batches %d --modes %s "
        "--precision %s",
        Flag(argc, argv, "python", "/usr/bin/python3"),
        Flag(argc, argv, "reference", "bench/reference/models_bench.py"), threads, iters, warmup, size, name,
        batch, mode, precision);
    FILE* pipe = popen(cmd.c_str(), "r");
    if (pipe == nullptr) {
      std::cerr << "cannot run " << cmd << "\n";
      return;
    }
    char line[4096];
    while (std::fgets(line, sizeof(line), pipe) != nullptr) {
      const nlohmann::json j = nlohmann::json::parse(line, nullptr, false);
      if (j.is_discarded() || !j.is_object()) continue;
      reference[{j["model"], j["mode"], j["batch"], j.value("precision", "fp32")}] = j["median_ms"];
    }
    if (pclose(pipe) != 0) std::cerr << "reference run failed: " << cmd << "\n";
  };
  for (const std::string& name : std::vector<std::string>(absl::StrSplit(models, ','))) {
    skinlesion::models::ModelOptions options;
    options.image_size = size;
    const auto stats = skinlesion::models::ComputeModelStats(name, options);
    if (stats.ok()) gflops_of[name] = stats->gflops();
    for (const std::string& mode : std::vector<std::string>(absl::StrSplit(modes, ','))) {
      for (const std::string& b : std::vector<std::string>(absl::StrSplit(batches, ','))) {
        const int64_t batch = std::stoll(b);
        for (const std::string& precision : precisions) {
          const auto choice = skinlesion::ParsePrecisionChoice(precision);
          if (!choice.ok()) {
            std::cerr << choice.status() << "\n";
            return 2;
          }
          torch::manual_seed(0);
          auto model = skinlesion::models::CreateModel(name, options);
          if (!model.ok()) {
            std::cerr << model.status() << "\n";
            return 1;
          }
          const skinlesion::models::Numerics numerics =
              skinlesion::models::ChooseNumerics(*choice, **model, torch::kCPU);
          const Key key{name, mode, batch, precision};
          ours[key] = Run(**model, batch, mode, warmup, iters, size, numerics);
          numerics_of[key] = numerics.Describe();
          order.push_back(key);
          std::fprintf(stderr, "%s %s batch %lld %s (%s): C++ %.1f ms\n", name.c_str(), mode.c_str(),
                       static_cast<long long>(batch), precision.c_str(), numerics.Describe().c_str(),
                       ours[key]);
        }
        if (with_reference) {
          for (const std::string& p : python_precisions) {
            run_reference(name, mode, batch, p);
            const Key rk{name, mode, batch, p};
            std::fprintf(stderr, "%s %s batch %lld: Python %s %.1f ms\n", name.c_str(), mode.c_str(),
                         static_cast<long long>(batch), p.c_str(),
                         reference.count(rk) ? reference[rk] : -1.0);
          }
        }
      }
    }
  }

  std::printf("%s\n\n", peak.Describe(gemm_size).c_str());
  std::printf("| model | mode | batch | C++ precision | C++ ms | C++ img/s | %% of GEMM peak |");
  for (const std::string& p : python_precisions) std::printf(" Python %s ms | C++ / Python %s |", p.c_str(), p.c_str());
  std::printf("\n|---|---|---|---|---|---|---|");
  for (size_t i = 0; i < python_precisions.size(); ++i) std::printf("---|---|");
  std::printf("\n");
  for (const Key& key : order) {
    const auto& [name, mode, batch, precision] = key;
    const double ms = ours[key];
    const bool bf16 = numerics_of[key].rfind("bf16", 0) == 0;
    const double gflop = gflops_of.count(name) ? gflops_of[name] * batch * (mode == "eval" ? 1 : 3) : 0;
    const std::string of_peak = gflop > 0 && peak.For(bf16) > 0
                                    ? absl::StrFormat("%.0f%%", 100.0 * gflop / (ms / 1000.0) / peak.For(bf16))
                                    : std::string("-");
    std::printf("| %s | %s | %lld | %s | %.1f | %.1f | %s |", name.c_str(),
                mode == "eval" ? "eval forward" : "train fwd+bwd", static_cast<long long>(batch),
                numerics_of[key].c_str(), ms, 1000.0 * batch / ms, of_peak.c_str());
    for (const std::string& p : python_precisions) {
      auto it = reference.find(Key{name, mode, batch, p});
      if (it == reference.end()) {
        std::printf(" - | - |");
      } else {
        std::printf(" %.1f | %.2fx |", it->second, it->second / ms);
      }
    }
    std::printf("\n");
  }
  std::printf("\n%d threads, %lldx%lld, median of %d after %d warm-up; C++ / Python > 1: C++ faster\n",
              threads, static_cast<long long>(size), static_cast<long long>(size), iters, warmup);
  return 0;
}
