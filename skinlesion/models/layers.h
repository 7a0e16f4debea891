// Internal building blocks shared by the architectures: convolution and linear
// layers that report their multiply-adds to an active FlopCounter, torchvision's
// Conv2dNormActivation, stochastic depth, and weight initialisers.
//
// Not part of the public API; included only by the .cc files of this library.
#ifndef SKINLESION_MODELS_LAYERS_H_
#define SKINLESION_MODELS_LAYERS_H_

#include <cstdint>
#include <optional>

#include <torch/nn/module.h>
#include <torch/nn/modules/activation.h>
#include <torch/nn/modules/batchnorm.h>
#include <torch/nn/modules/container/sequential.h>
#include <torch/nn/modules/conv.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/pimpl.h>

namespace skinlesion::models {

// Counts multiply-accumulates of the layers run on this thread while it lives.
// Scopes nest: an inner counter hides the outer one until it is destroyed.
class FlopCounter {
 public:
  FlopCounter();
  ~FlopCounter();
  FlopCounter(const FlopCounter&) = delete;
  FlopCounter& operator=(const FlopCounter&) = delete;

  int64_t macs() const { return macs_; }

  // Adds to the innermost active counter on this thread, if any.
  static void Add(int64_t macs);
  static bool Active();

 private:
  int64_t macs_ = 0;
  FlopCounter* previous_;
};

// torch::nn::Conv2d that reports its multiply-adds.
class CountedConv2dImpl : public torch::nn::Conv2dImpl {
 public:
  using torch::nn::Conv2dImpl::Conv2dImpl;
  torch::Tensor forward(const torch::Tensor& x);
};
TORCH_MODULE(CountedConv2d);

// torch::nn::Linear that reports its multiply-adds.
class CountedLinearImpl : public torch::nn::LinearImpl {
 public:
  using torch::nn::LinearImpl::LinearImpl;
  torch::Tensor forward(const torch::Tensor& x);
};
TORCH_MODULE(CountedLinear);

CountedConv2d MakeConv(int64_t in, int64_t out, int64_t kernel, int64_t stride, int64_t padding,
                       bool bias, int64_t groups = 1);

// Seq with a concrete forward, so Sequentials can nest (as
// torchvision's do) and keep their "0", "1", ... or named children.
class SeqImpl : public torch::nn::SequentialImpl {
 public:
  using torch::nn::SequentialImpl::SequentialImpl;
  torch::Tensor forward(torch::Tensor x) { return torch::nn::SequentialImpl::forward(std::move(x)); }
};
TORCH_MODULE(Seq);

enum class Activation { kNone, kReLU, kSiLU };

// torchvision.ops.Conv2dNormActivation: Sequential "0" conv (no bias, padding
// (k-1)/2), "1" BatchNorm2d, "2" activation (when not kNone).
Seq ConvNormActivation(int64_t in, int64_t out, int64_t kernel, int64_t stride,
                                         int64_t groups, Activation activation,
                                         double bn_eps = 1e-5, double bn_momentum = 0.1);

// torchvision.ops.stochastic_depth in "row" mode; identity when !training or p == 0.
torch::Tensor StochasticDepth(const torch::Tensor& x, double p, bool training);

// Initialisers applied over all submodules of `module`.
void InitConvKaimingNormalFanOut(torch::nn::Module& module);  // conv weights, zero bias
void InitBatchNormOnesZeros(torch::nn::Module& module);

}  // namespace skinlesion::models

#endif  // SKINLESION_MODELS_LAYERS_H_
