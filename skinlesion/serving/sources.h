// ModelSources over local disk.
//
//   LocalRegistrySource  a skinlesion::registry::Registry directory: Resolve reads the
//                        alias (a plain decimal alias pins that version), Fetch runs
//                        Registry::Verify and returns the version's directory.
//   DirectorySource      one plain model directory (model.safetensors + manifest.json,
//                        as `skinlesion train` exports or models/bundled) served as
//                        version 1 of a given name, for benchmarks and the bundled
//                        model without a registry. Fetch verifies the manifest's
//                        "sha256" of model.safetensors and any "files" entries.
#ifndef SKINLESION_SERVING_SOURCES_H_
#define SKINLESION_SERVING_SOURCES_H_

#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "skinlesion/registry/registry.h"
#include "skinlesion/serving/serving.h"

namespace skinlesion::serving {

class LocalRegistrySource : public ModelSource {
 public:
  // NotFound when `root` does not exist (a typo must not serve an empty registry).
  static absl::StatusOr<std::unique_ptr<LocalRegistrySource>> Create(const std::string& root);
  explicit LocalRegistrySource(std::shared_ptr<registry::Registry> registry)
      : registry_(std::move(registry)) {}

  absl::StatusOr<int64_t> Resolve(const std::string& model, const std::string& alias) override;
  absl::StatusOr<std::string> Fetch(const std::string& model, int64_t version) override;

 private:
  std::shared_ptr<registry::Registry> registry_;
};

class DirectorySource : public ModelSource {
 public:
  // `directory` must hold manifest.json (NotFound otherwise).
  static absl::StatusOr<std::unique_ptr<DirectorySource>> Create(const std::string& directory,
                                                                 const std::string& name);

  // Version 1 for `name` whatever the alias; NotFound for another model.
  absl::StatusOr<int64_t> Resolve(const std::string& model, const std::string& alias) override;
  absl::StatusOr<std::string> Fetch(const std::string& model, int64_t version) override;

 private:
  DirectorySource(std::string directory, std::string name)
      : directory_(std::move(directory)), name_(std::move(name)) {}
  std::string directory_;
  std::string name_;
};

}  // namespace skinlesion::serving

#endif  // SKINLESION_SERVING_SOURCES_H_
