// Cost of an explanation against a plain forward pass, same process and inputs:
//   explain_bench [THREADS=2] [RUNS=10] [ARCH:SIZE ...]   (default resnet50:224 vit_b_16:224)
// Prints the median milliseconds of forward() under InferenceMode (as served) and
// NoGradGuard, and of
// explain::Explain (Grad-CAM / attention rollout) for a batch of one. Random
// weights: the cost does not depend on them.
#include <torch/torch.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <string>
#include <vector>

#include "skinlesion/explain/explain.h"
#include "skinlesion/models/model_zoo.h"

namespace {

template <typename Fn>
double MedianMs(int runs, Fn&& fn) {
  fn();  // Warm-up (allocations, oneDNN primitives).
  fn();
  std::vector<double> ms;
  for (int i = 0; i < runs; ++i) {
    const auto start = std::chrono::steady_clock::now();
    fn();
    ms.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count());
  }
  std::sort(ms.begin(), ms.end());
  return ms[ms.size() / 2];
}

}  // namespace

int main(int argc, char** argv) {
  const int threads = argc > 1 ? std::stoi(argv[1]) : 2;
  const int runs = argc > 2 ? std::stoi(argv[2]) : 10;
  std::vector<std::string> cases;
  for (int i = 3; i < argc; ++i) cases.push_back(argv[i]);
  if (cases.empty()) cases = {"resnet50:224", "vit_b_16:224"};
  torch::set_num_threads(threads);
  std::printf("threads %d, runs %d (median ms, batch 1)\n", threads, runs);
  for (const std::string& c : cases) {
    const size_t colon = c.find(':');
    const std::string arch = c.substr(0, colon);
    const int64_t size = colon == std::string::npos ? 224 : std::stoll(c.substr(colon + 1));
    skinlesion::models::ModelOptions options;
    options.image_size = size;
    auto model = skinlesion::models::CreateModel(arch, options);
    if (!model.ok()) {
      std::fprintf(stderr, "%s: %s\n", arch.c_str(), model.status().ToString().c_str());
      return 1;
    }
    (*model)->eval();
    torch::manual_seed(1);
    const torch::Tensor x = torch::randn({1, 3, size, size});
    const double forward = MedianMs(runs, [&] {
      torch::InferenceMode guard;
      (*model)->forward(x);
    });
    const double forward_no_grad = MedianMs(runs, [&] {
      torch::NoGradGuard guard;
      (*model)->forward(x);
    });
    std::string method;
    int w = 0, h = 0;
    const double explain = MedianMs(runs, [&] {
      auto heat = skinlesion::explain::Explain(**model, x, 0);
      if (!heat.ok()) {
        std::fprintf(stderr, "%s: %s\n", arch.c_str(), heat.status().ToString().c_str());
        std::exit(1);
      }
      method = heat->method;
      w = heat->width;
      h = heat->height;
    });
    std::printf("%s at %lld: forward %.1f ms (NoGradGuard %.1f ms), %s (%dx%d) %.1f ms (x%.2f)\n",
                arch.c_str(), static_cast<long long>(size), forward, forward_no_grad, method.c_str(), w,
                h, explain, explain / forward);
  }
  return 0;
}
