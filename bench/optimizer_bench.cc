// FusedAdamW (skinlesion/train/fused_adamw.h) against torch::optim::AdamW on the
// parameters of model-zoo models, in the same run.
//
// Each side gets its own copy of the model's parameters (channels-last for CNNs, as
// Train() keeps them), the same fixed random gradients, weight decay 0.05 on tensors
// of two or more dimensions (as BuildGroups), and takes steps in alternation, once
// without clipping and once clipping the gradients' norm to 1 (clip_grad_norm_ then
// AdamW's step, against FusedAdamW::ClipGradNorm then its step: Train()'s two paths) -- torch,
// fused, fused, torch, ... -- so both see the same machine load. --warmup pairs are
// dropped, then --iters pairs are timed. Prints a markdown table: the median step of
// each side, the median over pairs of the per-pair ratio torch/fused (> 1: fused
// faster), and the largest relative difference of the two sides' weights at the end
// (rounding only; fused_adamw_test checks the equivalence). malloc is tuned as the
// CLI tunes it (TuneAllocatorForTensors): with glibc's defaults AdamW's temporaries
// are mapped afresh every step and torch's step takes ~10x longer.
//
//   optimizer_bench [--archs resnet18,efficientnet_b0,vit_b_16] [--threads 2]
//                   [--warmup 3] [--iters 15]
#include <torch/torch.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <iostream>
#include <memory>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/strings/str_split.h"
#include "skinlesion/common/allocator.h"
#include "skinlesion/models/model_zoo.h"
#include "skinlesion/models/numerics.h"
#include "skinlesion/train/fused_adamw.h"

ABSL_FLAG(std::string, archs, "resnet18,efficientnet_b0,vit_b_16",
          "Comma-separated model-zoo architectures");
ABSL_FLAG(int, threads, 2, "LibTorch intra-op threads");
ABSL_FLAG(int, warmup, 3, "Untimed step pairs");
ABSL_FLAG(int, iters, 15, "Timed step pairs");

namespace {

double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

std::vector<torch::optim::OptimizerParamGroup> Groups(const std::vector<torch::Tensor>& params) {
  std::vector<torch::Tensor> decay, no_decay;
  for (const auto& p : params) (p.dim() > 1 ? decay : no_decay).push_back(p);
  std::vector<torch::optim::OptimizerParamGroup> g;
  g.emplace_back(decay, std::make_unique<torch::optim::AdamWOptions>(
                            torch::optim::AdamWOptions(1e-4).weight_decay(0.05)));
  g.emplace_back(no_decay, std::make_unique<torch::optim::AdamWOptions>(
                               torch::optim::AdamWOptions(1e-4).weight_decay(0.0)));
  return g;
}

// One step as Train() takes it: gradients in place, clipping to norm 1 when `clip`
// (clip_grad_norm_ in place for AdamW, FusedAdamW::ClipGradNorm for the fused side).
double TimeStep(torch::optim::Optimizer& optimizer, const std::vector<torch::Tensor>& params,
                const std::vector<torch::Tensor>& grads, bool clip) {
  for (size_t i = 0; i < params.size(); ++i) params[i].mutable_grad() = grads[i].clone();
  const auto start = std::chrono::steady_clock::now();
  if (clip) {
    if (auto* fused = dynamic_cast<skinlesion::train::FusedAdamW*>(&optimizer)) {
      fused->ClipGradNorm(1.0);
    } else {
      torch::nn::utils::clip_grad_norm_(params, 1.0);
    }
  }
  optimizer.step();
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start)
      .count();
}

}  // namespace

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  // As the CLI trains (skinlesion/common/allocator.h): AdamW's temporaries reuse heap
  // memory instead of being mapped and faulted in on every step.
  skinlesion::TuneAllocatorForTensors();
  torch::set_num_threads(absl::GetFlag(FLAGS_threads));
  std::printf(
      "| arch | clipping | parameters (M) | torch::optim::AdamW ms | FusedAdamW ms | torch/fused | "
      "largest relative weight difference |\n");
  std::printf("|---|---|---:|---:|---:|---:|---:|\n");
  const std::vector<std::string> archs =
      absl::StrSplit(absl::GetFlag(FLAGS_archs), ',', absl::SkipEmpty());
  for (const std::string& arch : archs) {
    torch::manual_seed(0);
    auto created = skinlesion::models::CreateModel(arch, {});
    if (!created.ok()) {
      std::cerr << arch << ": " << created.status() << "\n";
      return 1;
    }
    skinlesion::models::Classifier& model = **created;
    if (arch.rfind("vit", 0) != 0) skinlesion::models::ToChannelsLast(model);
    std::vector<torch::Tensor> ref, fused, grads;
    int64_t count = 0;
    for (const auto& p : model.parameters()) {
      ref.push_back(p.detach().clone().set_requires_grad(true));
      fused.push_back(p.detach().clone().set_requires_grad(true));
      grads.push_back(torch::randn(p.sizes()).contiguous(p.suggest_memory_format()) * 1e-2);
      count += p.numel();
    }
    for (const bool clip : {false, true}) {
      torch::optim::AdamW reference(Groups(ref));
      skinlesion::train::FusedAdamW optimizer(Groups(fused));
      std::vector<double> torch_ms, fused_ms, ratios;
      const int warmup = absl::GetFlag(FLAGS_warmup), iters = absl::GetFlag(FLAGS_iters);
      for (int i = 0; i < warmup + iters; ++i) {
        double t, f;
        if (i % 2 == 0) {
          t = TimeStep(reference, ref, grads, clip);
          f = TimeStep(optimizer, fused, grads, clip);
        } else {
          f = TimeStep(optimizer, fused, grads, clip);
          t = TimeStep(reference, ref, grads, clip);
        }
        if (!optimizer.last_step_fused()) {
          std::cerr << arch << ": FusedAdamW fell back to AdamW's step\n";
          return 1;
        }
        if (i < warmup) continue;
        torch_ms.push_back(t);
        fused_ms.push_back(f);
        ratios.push_back(t / f);
      }
      double worst = 0;
      for (size_t i = 0; i < ref.size(); ++i) {
        const double scale = std::max(ref[i].abs().max().item<double>(), 1e-12);
        worst = std::max(worst, (ref[i] - fused[i]).abs().max().item<double>() / scale);
      }
      std::printf("| %s | %s | %.1f | %.1f | %.1f | %.2f | %.1e |\n", arch.c_str(),
                  clip ? "norm 1" : "none", count / 1e6, Median(torch_ms), Median(fused_ms),
                  Median(ratios), worst);
    }
  }
  std::printf(
      "\nAdamW steps (lr 1e-4, weight decay 0.05 on >= 2-D tensors), fixed random gradients, %d "
      "threads, "
      "%d timed pairs after %d warm-up, alternating order; medians.\n",
      absl::GetFlag(FLAGS_threads), absl::GetFlag(FLAGS_iters), absl::GetFlag(FLAGS_warmup));
  return 0;
}
