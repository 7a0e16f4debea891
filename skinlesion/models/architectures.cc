#include "skinlesion/models/architectures.h"

namespace skinlesion::models {

const std::vector<std::string>& ListArchitectures() {
  static const auto* const kNames = new std::vector<std::string>{
      "resnet18",        "resnet34",        "resnet50",        "resnet101",       "resnet152",
      "densenet121",     "densenet169",     "densenet201",     "efficientnet_b0", "efficientnet_b1",
      "efficientnet_b2", "efficientnet_b3", "efficientnet_b4", "vgg16_bn",        "vgg19_bn",
      "vit_ti_16",       "vit_s_16",        "vit_b_16",        "vit_l_16",        "vit_custom"};
  return *kNames;
}

}  // namespace skinlesion::models
