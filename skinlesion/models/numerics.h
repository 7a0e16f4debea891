// Running a Classifier in the precision chosen for it (skinlesion/common/precision.h):
// weights converted once, inputs converted in the batch, logits back in fp32.
//
//   Numerics numerics = ChooseNumerics(choice, *model, device, manifest_pin);
//   PrepareModel(*model, numerics);                        // once, after loading
//   torch::Tensor logits = ForwardLogits(*model, batch, numerics);  // fp32 [N, C]
//
// bf16: every floating parameter and buffer becomes bfloat16 (as Python's
// module.bfloat16()); CNNs also switch to channels-last (NHWC), where oneDNN's bf16
// convolutions are fastest. fp32 keeps contiguous (NCHW) layouts, the layout
// torchvision's fp32 models are fastest in on these CPUs (docs/performance.md).
#ifndef SKINLESION_MODELS_NUMERICS_H_
#define SKINLESION_MODELS_NUMERICS_H_

#include <torch/types.h>

#include <optional>
#include <string>

#include "absl/status/statusor.h"
#include "skinlesion/common/precision.h"
#include "skinlesion/common/tta.h"
#include "skinlesion/models/classifier.h"

namespace skinlesion::models {

struct Numerics {
  Precision precision = Precision::kFp32;
  bool channels_last = false;  // 4-D weights and inputs in NHWC.
  std::string reason;          // ResolvePrecision's reason.

  // "bf16, channels-last" / "fp32".
  std::string Describe() const;
  torch::ScalarType dtype() const {
    return precision == Precision::kBf16 ? torch::kBFloat16 : torch::kFloat32;
  }
};

// Resolves `choice` for `model` on `device` (CUDA, or this CPU's native bf16 from
// CpuFeaturesForThisProcess() unless `native_bf16` says otherwise) and picks the memory
// format: channels-last for convolutional models in bf16.
Numerics ChooseNumerics(PrecisionChoice choice, const Classifier& model,
                        const torch::Device& device, std::optional<Precision> pinned = {},
                        std::optional<bool> native_bf16 = {});

// Converts the model's floating parameters and buffers to numerics.dtype() and, for
// channels-last, its 4-D tensors to NHWC. In place, once; the model stays on its
// device. Not for training: a trained model keeps fp32 master weights (autocast).
void PrepareModel(Classifier& model, const Numerics& numerics);

// ChooseNumerics then PrepareModel, for a loaded model in eval mode on `device`: what
// the predictor, the serving adapter and the CLI do once per load. A LibTorch failure
// while converting is Internal ("converting to bf16, channels-last: ...").
absl::StatusOr<Numerics> PrepareForInference(Classifier& model, PrecisionChoice choice,
                                             const torch::Device& device,
                                             std::optional<Precision> pinned = {});

// Channels-last 4-D weights (fp32 kept), for bf16 autocast training of CNNs.
void ToChannelsLast(Classifier& model);

// x (float [N, 3, H, W], any device) in the dtype and layout the prepared model
// expects, on `device`.
torch::Tensor PrepareInput(const torch::Tensor& x, const Numerics& numerics,
                           const torch::Device& device);

// PrepareInput + forward + logits as contiguous fp32 on the CPU. The caller sets
// the grad mode (InferenceMode for serving).
torch::Tensor ForwardLogits(Classifier& model, const torch::Tensor& x, const Numerics& numerics,
                            const torch::Device& device);

// The `view`-th view of x [N, C, H, W] under `tta` (skinlesion/common/tta.h), view in
// [0, TtaViewCount(tta)): 0 is x itself, 1 its left-right mirror, 2 its up-down mirror
// (the "flips"), then 3 both mirrors (180 degrees) and 4-7 the transpose of views 0-3
// (the two diagonal mirrors and the two 90-degree rotations). kDihedral needs H == W.
torch::Tensor TtaView(const torch::Tensor& x, Tta tta, int view);

// Log of the mean softmax of the model's logits over the views of x (fp32 [N, C] on
// the CPU, in log-probability units); Tta::kNone: ForwardLogits itself. `plain`: x's
// own logits when the caller has them already (view 0 is then not run again).
torch::Tensor ForwardTta(Classifier& model, const torch::Tensor& x, Tta tta,
                         const Numerics& numerics, const torch::Device& device,
                         const torch::Tensor& plain = {});

// Enables autocast for its scope (training with fp32 master weights): fp16 or bf16
// on CUDA, bf16 on the CPU; nothing when neither is set. Restores the previous state
// and clears the autocast weight cache at the end of the scope.
class AutocastGuard {
 public:
  AutocastGuard(bool cuda, bool fp16, bool bf16);
  ~AutocastGuard();
  AutocastGuard(const AutocastGuard&) = delete;
  AutocastGuard& operator=(const AutocastGuard&) = delete;

 private:
  bool active_, cuda_;
};

}  // namespace skinlesion::models

#endif  // SKINLESION_MODELS_NUMERICS_H_
