// Moving weights in and out of the model zoo's modules.
//
//   SL_ASSIGN_OR_RETURN(TensorMap weights, ReadWeightsFile("vit_b_16.pth"));
//   SL_RETURN_IF_ERROR(LoadStateDict(*model, weights).status());
//
// Checkpoints we write are a directory with
//   model.safetensors  torchvision-named tensors (manifest also in __metadata__)
//   manifest.json      {"format", "architecture", "num_classes", "image_size",
//                       "labels", "vit" (vit_custom only)}
// which Python loads with torchvision (see docs/models.md).
#ifndef SKINLESION_MODELS_STATE_DICT_H_
#define SKINLESION_MODELS_STATE_DICT_H_

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "skinlesion/manifest/manifest.h"
#include "skinlesion/models/classifier.h"
#include "skinlesion/models/model_zoo.h"

namespace skinlesion::models {

struct LoadOptions {
  // When the checkpoint's classification head has another number of classes (e.g.
  // 1000 or 21843 for ImageNet) but the same input width, keep the model's freshly
  // initialised head and log it. false: such a head is a shape mismatch error.
  bool replace_head_on_class_mismatch = true;
  // Let the model adapt the checkpoint first (ViT: interpolate position embeddings).
  bool adapt = true;
};

struct LoadReport {
  int loaded = 0;                        // Tensors copied into the module.
  bool head_replaced = false;            // The head was kept (class counts differ).
  std::vector<std::string> defaulted;    // Missing *.num_batches_tracked, left at 0.
};

// Copies `state` into the model's parameters and buffers (converting dtype and
// device). Every missing, unexpected or mis-shaped tensor is reported in one
// InvalidArgument error listing them all; on error the model is unchanged.
// A missing BatchNorm num_batches_tracked (old checkpoints) is tolerated.
absl::StatusOr<LoadReport> LoadStateDict(Classifier& model, TensorMap state, const LoadOptions& options = {});

// Parameters and buffers by torchvision name, detached (sharing storage).
TensorMap GetStateDict(const torch::nn::Module& module);

// Reads .safetensors, or a torch.save zip (.pth/.pt/.bin) by content, and converts
// timm / Hugging Face ViT names to torchvision's (weight_names.h).
absl::StatusOr<TensorMap> ReadWeightsFile(const std::string& path);

// ReadWeightsFile + LoadStateDict.
absl::StatusOr<LoadReport> LoadWeightsFile(Classifier& model, const std::string& path,
                                           const LoadOptions& options = {});

// Writes `dir`/model.safetensors and `dir`/manifest.json (creating `dir`): a
// ModelManifest (skinlesion/manifest/manifest.h) with the model's architecture and
// classes (`labels`; may be empty only for a model of HAM10000's 7 classes), `image_size`,
// `vit` for vit_custom and the defaults for everything else (callers that know more,
// like `skinlesion train`, read it back and add to it).
// `fp16`: floating-point tensors are stored as F16 (half the size; LoadCheckpoint
// converts them back to the model's float32); integer buffers are kept.
absl::Status SaveCheckpoint(const Classifier& model, const std::string& dir, int64_t image_size,
                            const std::vector<std::string>& labels = {}, const VitConfig& vit = {},
                            bool fp16 = false);

struct Checkpoint {
  ModelManifest manifest;  // As read from manifest.json (the weights' hash not computed).
  std::shared_ptr<Classifier> model;
};

// Reads `dir`/manifest.json (ModelManifest::ParseText: the one reading of it), creates
// the model it names (classes, image size, vit shape) and loads its weights strictly.
absl::StatusOr<Checkpoint> LoadCheckpoint(const std::string& dir);

}  // namespace skinlesion::models

#endif  // SKINLESION_MODELS_STATE_DICT_H_
