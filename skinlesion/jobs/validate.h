// Checks a TrainingConfig up front (SubmitJob) and turns it into the JSON
// TrainConfig that `skinlesion train --config` reads.
#ifndef SKINLESION_JOBS_VALIDATE_H_
#define SKINLESION_JOBS_VALIDATE_H_

#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "nlohmann/json.hpp"
#include "skinlesion/v1/training.pb.h"

namespace skinlesion::jobs {

// Largest world_size a job may ask for.
inline constexpr int kMaxWorldSize = 64;

// The TrainConfig JSON of `config`: extra_json's keys, overridden by the typed
// fields that are set (architecture, image_size > 0, epochs > 0, batch_size > 0,
// learning_rate > 0 -> lr, seed > 0, augmentation, loss). Only syntax is checked
// here (extra_json must be a JSON object): no files are looked at.
absl::StatusOr<nlohmann::json> TrainConfigJson(const v1::TrainingConfig& config);

// The metadata CSV a job reads: metadata_file, else <data_dir>/HAM10000_metadata.csv.
std::string MetadataPath(const v1::TrainingConfig& config);

// Every problem of `config` at once, as InvalidArgument "invalid job config: a;
// b; c": the model name (registry rules), the architecture (a model zoo name),
// the data directory, metadata CSV and split file (must exist), world_size
// (0..kMaxWorldSize), extra_json, and every TrainConfig problem (unknown keys,
// wrong types, impossible hyper-parameters) of the merged configuration.
absl::Status ValidateTrainingConfig(const v1::TrainingConfig& config);

}  // namespace skinlesion::jobs

#endif  // SKINLESION_JOBS_VALIDATE_H_
