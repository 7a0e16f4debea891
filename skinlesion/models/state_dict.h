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

struct CheckpointManifest {
  std::string architecture;
  int64_t num_classes = 0;
  int64_t image_size = 0;
  std::vector<std::string> labels;  // Optional; if set, size == num_classes.
  VitConfig vit;                    // Meaningful for vit_custom only.
};

std::string ManifestToJson(const CheckpointManifest& manifest);
absl::StatusOr<CheckpointManifest> ManifestFromJson(absl::string_view json);

// Writes `dir`/model.safetensors and `dir`/manifest.json (creating `dir`).
// architecture, num_classes and image_size come from the model and `image_size`.
// `fp16`: floating-point tensors are stored as F16 (half the size; LoadCheckpoint
// converts them back to the model's float32); integer buffers are kept.
absl::Status SaveCheckpoint(const Classifier& model, const std::string& dir, int64_t image_size,
                            const std::vector<std::string>& labels = {}, const VitConfig& vit = {},
                            bool fp16 = false);

struct Checkpoint {
  CheckpointManifest manifest;
  std::shared_ptr<Classifier> model;
};

// Creates the model the manifest names and loads its weights strictly.
absl::StatusOr<Checkpoint> LoadCheckpoint(const std::string& dir);

}  // namespace skinlesion::models

#endif  // SKINLESION_MODELS_STATE_DICT_H_
