// Seeding a registry from a model directory (how a fresh cluster gets its first,
// bundled model): model.safetensors + manifest.json + any other files such as the
// golden_*.jpg images.
#ifndef SKINLESION_REGISTRY_SEED_H_
#define SKINLESION_REGISTRY_SEED_H_

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "skinlesion/registry/registry.h"

namespace skinlesion::registry {

// When `model` has no version yet, publishes every regular file of `dir` as its
// first version (manifest.json, a JSON object, becomes the version's manifest;
// hidden files and subdirectories are skipped) and points `alias` at it. Returns
// the published version, or 0 when the model already had versions (nothing done).
// InvalidArgument for bad names, a missing or non-object manifest.json, or a
// directory without other files.
absl::StatusOr<int64_t> SeedFromDirectory(Registry& registry, const std::string& dir,
                                          const std::string& model, const std::string& alias);

}  // namespace skinlesion::registry

#endif  // SKINLESION_REGISTRY_SEED_H_
