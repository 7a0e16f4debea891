// The LibTorch adapter of the serving core: a ModelLoader for checkpoints written by
// skinlesion::models::SaveCheckpoint (`skinlesion train` exports, registry versions).
// This header is LibTorch-free.
//
//   SL_ASSIGN_OR_RETURN(auto core, ServingCore::Create(options, std::move(source),
//                                                       MakeTorchLoader({.threads = 2})));
#ifndef SKINLESION_SERVING_TORCH_INSTANCE_H_
#define SKINLESION_SERVING_TORCH_INSTANCE_H_

#include <string>

#include "skinlesion/common/precision.h"
#include "skinlesion/serving/serving.h"

namespace skinlesion::serving {

struct TorchLoaderOptions {
  std::string device = "cpu";  // "cpu", "cuda", "cuda:1", ...
  int threads = 0;             // > 0: torch::set_num_threads(threads), once, here.
  // skinlesion/common/precision.h: kAuto runs bf16 on CUDA or a CPU with native
  // bf16, fp32 elsewhere, and follows the manifest's "precision" pin; kFp32 / kBf16
  // override the pin.
  PrecisionChoice precision = PrecisionChoice::kAuto;
};

// Loads spec.directory with models::LoadCheckpoint (strict), moves it to the device
// in eval mode, converts its weights once to the chosen precision (bf16 CNNs also
// channels-last; skinlesion/models/numerics.h) and logs the choice with its reason.
// Run() converts each batch to that precision and returns fp32 logits. Run() is thread-safe (torch::InferenceMode, the module is not
// mutated) and reads the caller's buffer without copying it on the CPU. Errors:
// InvalidArgument (bad device, not a 7-class model, image_size differs from the
// spec), those of LoadCheckpoint (NotFound / InvalidArgument / DataLoss), Internal
// for a LibTorch failure in Run(). Explain() computes Grad-CAM (CNNs) or attention
// rollout (ViT) with skinlesion/explain, in grad mode, thread-safe with Run().
ModelLoader MakeTorchLoader(TorchLoaderOptions options = {});

}  // namespace skinlesion::serving

#endif  // SKINLESION_SERVING_TORCH_INSTANCE_H_
