// Model-zoo throughput against Python torchvision on the same machine, same run.
//
// Eval-mode forward and training-mode forward+backward of ViT-B/16, ResNet-50 and
// EfficientNet-B0 at 224 px, batch 1 and 8, CPU, 2 threads on both sides (medians
// of --iters after --warmup). The reference is bench/reference/models_bench.py run
// with /usr/bin/python3 (--python, --reference to change; --no_reference to skip).
//
//   models_bench [--threads 2] [--iters 5] [--warmup 1] [--size 224]
//                [--models vit_b_16,resnet50,efficientnet_b0] [--batches 1,8]
//                [--modes eval,train] [--python /usr/bin/python3]
//                [--reference bench/reference/models_bench.py] [--no_reference]
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
#include "skinlesion/models/model_zoo.h"

namespace {

using skinlesion::models::Classifier;

double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

double Run(Classifier& model, int64_t batch, const std::string& mode, int warmup, int iters, int64_t size) {
  torch::Tensor x = torch::randn({batch, 3, size, size});
  std::vector<double> times;
  for (int i = 0; i < warmup + iters; ++i) {
    const auto start = std::chrono::steady_clock::now();
    if (mode == "eval") {
      model.eval();
      torch::NoGradGuard no_grad;
      model.forward(x);
    } else {
      model.train();
      model.zero_grad();
      model.forward(x).sum().backward();
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
  const int threads = std::stoi(Flag(argc, argv, "threads", "2"));
  const int iters = std::stoi(Flag(argc, argv, "iters", "5"));
  const int warmup = std::stoi(Flag(argc, argv, "warmup", "1"));
  const int64_t size = std::stoll(Flag(argc, argv, "size", "224"));
  const std::string models = Flag(argc, argv, "models", "vit_b_16,resnet50,efficientnet_b0");
  const std::string batches = Flag(argc, argv, "batches", "1,8");
  const std::string modes = Flag(argc, argv, "modes", "eval,train");
  torch::set_num_threads(threads);
  torch::manual_seed(0);

  using Key = std::tuple<std::string, std::string, int64_t>;
  std::map<Key, double> ours, reference;
  std::vector<Key> order;
  const bool with_reference = !HasFlag(argc, argv, "no_reference");
  // The machine may be shared: each configuration's Python run follows its C++ run
  // directly, so slow drifts in load hit both sides alike.
  auto run_reference = [&](const std::string& name, const std::string& mode, int64_t batch) {
    const std::string cmd = absl::StrFormat(
        "%s %s --threads %d --iters %d --warmup %d --size %d --models %s --batches %d --modes %s",
        Flag(argc, argv, "python", "/usr/bin/python3"),
        Flag(argc, argv, "reference", "bench/reference/models_bench.py"), threads, iters, warmup, size, name,
        batch, mode);
    FILE* pipe = popen(cmd.c_str(), "r");
    if (pipe == nullptr) {
      std::cerr << "cannot run " << cmd << "\n";
      return;
    }
    char line[4096];
    while (std::fgets(line, sizeof(line), pipe) != nullptr) {
      const nlohmann::json j = nlohmann::json::parse(line, nullptr, false);
      if (j.is_discarded() || !j.is_object()) continue;
      reference[{j["model"], j["mode"], j["batch"]}] = j["median_ms"];
    }
    if (pclose(pipe) != 0) std::cerr << "reference run failed: " << cmd << "\n";
  };
  for (const std::string& name : std::vector<std::string>(absl::StrSplit(models, ','))) {
    skinlesion::models::ModelOptions options;
    options.image_size = size;
    auto model = skinlesion::models::CreateModel(name, options);
    if (!model.ok()) {
      std::cerr << model.status() << "\n";
      return 1;
    }
    for (const std::string& mode : std::vector<std::string>(absl::StrSplit(modes, ','))) {
      for (const std::string& b : std::vector<std::string>(absl::StrSplit(batches, ','))) {
        const int64_t batch = std::stoll(b);
        const Key key{name, mode, batch};
        ours[key] = Run(**model, batch, mode, warmup, iters, size);
        order.push_back(key);
        if (with_reference) run_reference(name, mode, batch);
        std::fprintf(stderr, "%s %s batch %lld: C++ %.1f ms, Python %.1f ms\n", name.c_str(), mode.c_str(),
                     static_cast<long long>(batch), ours[key], reference.count(key) ? reference[key] : -1.0);
      }
    }
  }

  std::printf("| model | mode | batch | C++ ms | C++ img/s | Python ms | C++ speed / Python |\n");
  std::printf("|---|---|---|---|---|---|---|\n");
  for (const Key& key : order) {
    const auto& [name, mode, batch] = key;
    const double ms = ours[key];
    auto it = reference.find(key);
    const std::string ref = it == reference.end() ? "-" : absl::StrFormat("%.1f", it->second);
    const std::string ratio = it == reference.end() ? "-" : absl::StrFormat("%.2fx", it->second / ms);
    std::printf("| %s | %s | %lld | %.1f | %.1f | %s | %s |\n", name.c_str(),
                mode == "eval" ? "eval forward" : "train fwd+bwd", static_cast<long long>(batch), ms,
                1000.0 * batch / ms, ref.c_str(), ratio.c_str());
  }
  std::printf("\n%d threads, %lldx%lld, median of %d after %d warm-up\n", threads, static_cast<long long>(size),
              static_cast<long long>(size), iters, warmup);
  return 0;
}
