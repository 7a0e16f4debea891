// The model zoo: one factory for every architecture, and a summary table.
//
//   ModelOptions options;          // 7 classes, 224 px
//   SL_ASSIGN_OR_RETURN(std::shared_ptr<Classifier> model,
//                       CreateModel("efficientnet_b0", options));
//   model->to(device);
//   torch::Tensor logits = model->forward(images);   // [N, 7]
#ifndef SKINLESION_MODELS_MODEL_ZOO_H_
#define SKINLESION_MODELS_MODEL_ZOO_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "skinlesion/models/architectures.h"
#include "skinlesion/models/classifier.h"

namespace skinlesion::models {

struct ModelOptions {
  int64_t num_classes = 7;
  // Input side the model is built for. Only ViTs depend on it (position
  // embeddings); the CNNs take any size. Must be a multiple of the ViT patch size.
  int64_t image_size = 224;
  // Dropout before the classifier (ViT: in the encoder). < 0: the architecture's
  // default (ResNet/DenseNet/ViT 0, VGG 0.5, EfficientNet 0.2-0.4).
  double dropout = -1.0;
  // EfficientNet stochastic depth probability. < 0: default 0.2.
  double stochastic_depth = -1.0;
  // ViT attention-weight dropout.
  double attention_dropout = 0.0;
  // Used only by "vit_custom".
  VitConfig vit;
};

// A freshly initialised model (torchvision's initialisation), on the CPU, in
// training mode. Unknown architecture or bad options -> InvalidArgument.
absl::StatusOr<std::shared_ptr<Classifier>> CreateModel(absl::string_view architecture,
                                                        const ModelOptions& options = {});

struct ModelStats {
  std::string architecture;
  int64_t parameters = 0;  // All parameters (buffers excluded).
  int64_t macs = 0;        // Multiply-adds of conv, linear and attention matmuls, batch 1.
  double gflops() const { return 2.0 * static_cast<double>(macs) / 1e9; }
};

// Parameters and multiply-adds of `architecture` at image_size x image_size,
// counted by running one eval-mode forward with instrumented layers.
absl::StatusOr<ModelStats> ComputeModelStats(absl::string_view architecture,
                                             const ModelOptions& options = {});
// Same for an existing model.
ModelStats ComputeModelStats(Classifier& model, int64_t image_size);

// The table `skinlesion models` prints: one row per architecture (default: all)
// with parameters (M), GMACs and GFLOPs at image_size. Builds each model and runs
// one forward: about 10-20 s for all of them at 224 px on 2 cores.
std::string FormatModelTable(int64_t image_size,
                             const std::vector<std::string>& architectures = ListArchitectures(),
                             int64_t num_classes = 7);

}  // namespace skinlesion::models

#endif  // SKINLESION_MODELS_MODEL_ZOO_H_
