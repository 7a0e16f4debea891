// `skinlesion jobs`: the client of skinlesion-trainer (docs/trainer.md).
//
//   skinlesion jobs submit --trainer HOST:PORT (--config job.json | --set k=v,...)
//                          [--data DIR] [--metadata CSV] [--split FILE] [--follow]
//   skinlesion jobs list   --trainer HOST:PORT [--state queued,running]
//   skinlesion jobs get    --trainer HOST:PORT JOB_ID
//   skinlesion jobs watch  --trainer HOST:PORT JOB_ID
//   skinlesion jobs cancel --trainer HOST:PORT JOB_ID
//   common: [--token_file F] (else $SKINLESION_TRAINER_TOKEN) [--tls_ca ca.pem] [--json]
//
// Job configs: a JSON object whose keys are TrainingConfig fields (model_name,
// architecture, data_dir, ...); any other key (a `skinlesion train` option such as
// frozen_epochs) goes into extra_json. --set overrides the same keys.
#ifndef SKINLESION_TOOLS_JOBS_COMMAND_H_
#define SKINLESION_TOOLS_JOBS_COMMAND_H_

#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "nlohmann/json.hpp"
#include "skinlesion/v1/training.pb.h"

namespace skinlesion::cli {

// Runs `skinlesion jobs <positional...>` with the flags of the command line.
absl::Status RunJobsCommand(const std::vector<std::string>& positional);

// A TrainingConfig from a JSON object (see above); unknown keys go to extra_json.
absl::StatusOr<v1::TrainingConfig> TrainingConfigFromJson(const nlohmann::json& j);

// "epoch 2/3 finetune  step 3/4  loss 1.2345  12.3 img/s  ETA 0:45"
std::string FormatProgress(const v1::JobProgress& p);

}  // namespace skinlesion::cli

#endif  // SKINLESION_TOOLS_JOBS_COMMAND_H_
