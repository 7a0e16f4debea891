// Test helper: writes a random-weight 7-class model directory (model.safetensors +
// manifest.json, as SaveCheckpoint writes them) for end-to-end tests of
// skinlesion-inference.
//
//   make_test_model OUT_DIR [ARCHITECTURE=resnet18] [IMAGE_SIZE=64] [REGISTRY_ROOT MODEL]
//
// With REGISTRY_ROOT and MODEL the directory is also published into that registry
// as MODEL's first version, with the alias "production" on it.
#include <cstdio>
#include <string>

#include "skinlesion/models/model_zoo.h"
#include "skinlesion/models/state_dict.h"
#include "skinlesion/registry/registry.h"
#include "skinlesion/registry/seed.h"

int main(int argc, char** argv) {
  if (argc < 2 || argc == 5 || argc > 6) {
    std::fprintf(stderr,
                 "usage: make_test_model OUT_DIR [ARCHITECTURE=resnet18] [IMAGE_SIZE=64] "
                 "[REGISTRY_ROOT MODEL]\n");
    return 2;
  }
  const std::string architecture = argc > 2 ? argv[2] : "resnet18";
  const int64_t image_size = argc > 3 ? std::stoll(argv[3]) : 64;
  torch::manual_seed(0);
  auto model = skinlesion::models::CreateModel(architecture);
  if (!model.ok()) {
    std::fprintf(stderr, "%s\n", model.status().ToString().c_str());
    return 1;
  }
  (*model)->eval();
  const absl::Status status = skinlesion::models::SaveCheckpoint(
      **model, argv[1], image_size, {"akiec", "bcc", "bkl", "df", "mel", "nv", "vasc"});
  if (!status.ok()) {
    std::fprintf(stderr, "%s\n", status.ToString().c_str());
    return 1;
  }
  if (argc == 6) {
    auto registry = skinlesion::registry::Registry::Create({.root = argv[4]});
    if (!registry.ok()) {
      std::fprintf(stderr, "%s\n", registry.status().ToString().c_str());
      return 1;
    }
    const auto version =
        skinlesion::registry::SeedFromDirectory(**registry, argv[1], argv[5], "production");
    if (!version.ok()) {
      std::fprintf(stderr, "%s\n", version.status().ToString().c_str());
      return 1;
    }
  }
  return 0;
}
