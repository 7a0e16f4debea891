#include "skinlesion/models/layers.h"

#include <torch/torch.h>

namespace skinlesion::models {
namespace {
thread_local FlopCounter* g_counter = nullptr;
}  // namespace

FlopCounter::FlopCounter() : previous_(g_counter) { g_counter = this; }
FlopCounter::~FlopCounter() { g_counter = previous_; }
void FlopCounter::Add(int64_t macs) {
  if (g_counter != nullptr) g_counter->macs_ += macs;
}
bool FlopCounter::Active() { return g_counter != nullptr; }

torch::Tensor CountedConv2dImpl::forward(const torch::Tensor& x) {
  torch::Tensor y = torch::nn::Conv2dImpl::forward(x);
  if (FlopCounter::Active()) {
    const auto& k = options.kernel_size();
    FlopCounter::Add(y.numel() * (options.in_channels() / options.groups()) * (*k)[0] * (*k)[1]);
  }
  return y;
}

torch::Tensor CountedLinearImpl::forward(const torch::Tensor& x) {
  // at::linear folds [N, L, D] inputs into one addmm (bias fused), as Python's
  // nn.Linear does; the C++ functional form does matmul plus a separate bias add.
  torch::Tensor y = at::linear(x, weight, bias);
  if (FlopCounter::Active()) FlopCounter::Add(y.numel() * options.in_features());
  return y;
}

CountedConv2d MakeConv(int64_t in, int64_t out, int64_t kernel, int64_t stride, int64_t padding,
                       bool bias, int64_t groups) {
  return CountedConv2d(torch::nn::Conv2dOptions(in, out, kernel)
                           .stride(stride)
                           .padding(padding)
                           .groups(groups)
                           .bias(bias));
}

Seq ConvNormActivation(int64_t in, int64_t out, int64_t kernel, int64_t stride,
                                         int64_t groups, Activation activation, double bn_eps,
                                         double bn_momentum) {
  Seq seq;
  seq->push_back("0", MakeConv(in, out, kernel, stride, (kernel - 1) / 2, /*bias=*/false, groups));
  seq->push_back("1", torch::nn::BatchNorm2d(
                          torch::nn::BatchNorm2dOptions(out).eps(bn_eps).momentum(bn_momentum)));
  switch (activation) {
    case Activation::kNone:
      break;
    case Activation::kReLU:
      seq->push_back("2", torch::nn::ReLU(torch::nn::ReLUOptions(true)));
      break;
    case Activation::kSiLU:
      seq->push_back("2", torch::nn::SiLU());
      break;
  }
  return seq;
}

torch::Tensor StochasticDepth(const torch::Tensor& x, double p, bool training) {
  if (!training || p == 0.0) return x;
  const double survival = 1.0 - p;
  std::vector<int64_t> size(x.dim(), 1);
  size[0] = x.size(0);
  torch::Tensor noise = torch::empty(size, x.options()).bernoulli_(survival);
  if (survival > 0.0) noise.div_(survival);
  return x * noise;
}

void InitConvKaimingNormalFanOut(torch::nn::Module& module) {
  torch::NoGradGuard no_grad;
  for (auto& m : module.modules(/*include_self=*/false)) {
    if (auto* conv = m->as<torch::nn::Conv2dImpl>()) {
      torch::nn::init::kaiming_normal_(conv->weight, 0.0, torch::kFanOut, torch::kReLU);
      if (conv->bias.defined()) conv->bias.zero_();
    }
  }
}

void InitBatchNormOnesZeros(torch::nn::Module& module) {
  torch::NoGradGuard no_grad;
  for (auto& m : module.modules(/*include_self=*/false)) {
    if (auto* bn = m->as<torch::nn::BatchNorm2dImpl>()) {
      bn->weight.fill_(1.0);
      bn->bias.zero_();
    }
  }
}

}  // namespace skinlesion::models
