#include "skinlesion/jobs/validate.h"

#include <algorithm>
#include <filesystem>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "skinlesion/models/architectures.h"
#include "skinlesion/registry/registry.h"
#include "skinlesion/train/config.h"

namespace skinlesion::jobs {
namespace fs = std::filesystem;

absl::StatusOr<nlohmann::json> TrainConfigJson(const v1::TrainingConfig& c) {
  nlohmann::json j = nlohmann::json::object();
  if (!c.extra_json().empty()) {
    j = nlohmann::json::parse(c.extra_json(), nullptr, false);
    if (j.is_discarded() || !j.is_object()) {
      return absl::InvalidArgumentError("extra_json must be a JSON object");
    }
  }
  if (!c.architecture().empty()) j["architecture"] = c.architecture();
  if (c.image_size() > 0) j["image_size"] = c.image_size();
  if (c.epochs() > 0) j["epochs"] = c.epochs();
  if (c.batch_size() > 0) j["batch_size"] = c.batch_size();
  if (c.learning_rate() > 0) j["lr"] = c.learning_rate();
  if (c.seed() > 0) j["seed"] = c.seed();
  if (!c.augmentation().empty()) j["augmentation"] = c.augmentation();
  if (!c.loss().empty()) j["loss"] = c.loss();
  return j;
}

std::string MetadataPath(const v1::TrainingConfig& c) {
  return c.metadata_file().empty() ? c.data_dir() + "/HAM10000_metadata.csv" : c.metadata_file();
}

absl::Status ValidateTrainingConfig(const v1::TrainingConfig& c) {
  std::vector<std::string> problems;
  if (absl::Status s = registry::ValidateName("model", c.model_name()); !s.ok()) {
    problems.push_back(absl::StrCat("model_name: ", s.message()));
  }
  std::error_code ec;
  if (c.data_dir().empty()) {
    problems.push_back("data_dir is required");
  } else if (!fs::is_directory(c.data_dir(), ec)) {
    problems.push_back(absl::StrCat("data_dir ", c.data_dir(), " is not a directory"));
  }
  if (!c.metadata_file().empty()) {
    if (!fs::is_regular_file(c.metadata_file(), ec))
      problems.push_back(absl::StrCat("metadata file ", c.metadata_file(), " does not exist"));
  } else if (!c.data_dir().empty() && fs::is_directory(c.data_dir(), ec) &&
             !fs::is_regular_file(MetadataPath(c), ec)) {
    // Without a labels CSV the data folder is HAM10000 (its metadata file) or one
    // subfolder per class (data/dataset.h); the trainer reads the images.
    bool has_subfolder = false;
    for (const auto& entry : fs::directory_iterator(c.data_dir(), ec)) {
      if (entry.is_directory() && entry.path().filename().string()[0] != '.') has_subfolder = true;
    }
    if (!has_subfolder) {
      problems.push_back(absl::StrCat("data_dir ", c.data_dir(), " has no HAM10000_metadata.csv and no class "
                                      "subfolders: give metadata_file (HAM10000, ISIC or plain image,label CSV)"));
    }
  }
  if (!c.split_file().empty() && !fs::is_regular_file(c.split_file(), ec)) {
    problems.push_back(absl::StrCat("split_file ", c.split_file(), " does not exist"));
  }
  if (c.world_size() < 0 || c.world_size() > kMaxWorldSize) {
    problems.push_back(
        absl::StrCat("world_size must be in 0..", kMaxWorldSize, ", got ", c.world_size()));
  }
  if (c.image_size() < 0)
    problems.push_back(absl::StrCat("image_size must be > 0, got ", c.image_size()));
  if (c.epochs() < 0) problems.push_back(absl::StrCat("epochs must be >= 1, got ", c.epochs()));
  if (c.batch_size() < 0)
    problems.push_back(absl::StrCat("batch_size must be >= 1, got ", c.batch_size()));
  if (c.learning_rate() < 0)
    problems.push_back(absl::StrCat("learning_rate must be > 0, got ", c.learning_rate()));
  auto merged = TrainConfigJson(c);
  if (!merged.ok()) {
    problems.emplace_back(merged.status().message());
    v1::TrainingConfig typed = c;
    typed.clear_extra_json();
    merged = TrainConfigJson(typed);
  }
  std::string arch = c.architecture();
  if (merged.ok()) {
    auto config = train::TrainConfig::FromJson(*merged);
    if (!config.ok()) {
      problems.emplace_back(config.status().message());
      // Still check the hyper-parameters, without the keys TrainConfig does not know.
      const nlohmann::json known = train::TrainConfig().ToJson();
      nlohmann::json filtered = nlohmann::json::object();
      for (const auto& [key, value] : merged->items()) {
        if (known.contains(key)) filtered[key] = value;
      }
      config = train::TrainConfig::FromJson(filtered);
    }
    if (config.ok()) {
      arch = config->architecture;
      if (absl::Status s = config->Validate(); !s.ok()) problems.emplace_back(s.message());
    }
  }
  const std::vector<std::string>& archs = models::ListArchitectures();
  if (!arch.empty() && std::find(archs.begin(), archs.end(), arch) == archs.end()) {
    problems.push_back(absl::StrCat("unknown architecture '", arch,
                                    "' (known: ", absl::StrJoin(archs, ", "), ")"));
  }
  if (problems.empty()) return absl::OkStatus();
  return absl::InvalidArgumentError(
      absl::StrCat("invalid job config: ", absl::StrJoin(problems, "; ")));
}

}  // namespace skinlesion::jobs
