// The names of the architectures the model zoo builds (skinlesion/models/model_zoo.h),
// LibTorch-free so that code checking a configuration (job validation, the trainer
// service) knows them without linking LibTorch. CreateModel (model_zoo.cc) builds
// each of them and names this list when it is given another.
#ifndef SKINLESION_MODELS_ARCHITECTURES_H_
#define SKINLESION_MODELS_ARCHITECTURES_H_

#include <cstdint>
#include <string>
#include <vector>

namespace skinlesion::models {

// The shape of the small "vit_custom" architecture (the named ViTs have fixed
// widths). LibTorch-free: the model manifest records it ("vit").
struct VitConfig {
  int64_t patch_size = 16;
  int64_t hidden_dim = 192;
  int64_t num_layers = 4;
  int64_t num_heads = 3;
  int64_t mlp_dim = 768;
  bool operator==(const VitConfig&) const = default;
};

// The architectures CreateModel accepts, in display order (torchvision names, plus
// "vit_custom" sized by ModelOptions::vit).
const std::vector<std::string>& ListArchitectures();

}  // namespace skinlesion::models

#endif  // SKINLESION_MODELS_ARCHITECTURES_H_
