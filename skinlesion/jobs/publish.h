// Publishing a finished training run to the model registry (docs/trainer.md,
// "Job states"): what JobManager does when every child of a job exited with code 0.
#ifndef SKINLESION_JOBS_PUBLISH_H_
#define SKINLESION_JOBS_PUBLISH_H_

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "skinlesion/registry/registry.h"
#include "skinlesion/v1/training.pb.h"

namespace skinlesion::jobs {

// Publishes a finished job's run (job.run_dir(): model/ and report/) as a new version
// of job.config().model_name() with the job id, parent version and promotion gates in
// its manifest, moves `staging` to it, and `production` when the job asks and the
// gates pass (a refusal is appended to `notes`). Idempotent per job: when a version
// already carries this job's id (a trainer killed between publishing and recording
// success), that version is reused instead of publishing twice.
absl::StatusOr<v1::ModelRef> PublishRun(registry::Registry& registry, const v1::Job& job,
                                        std::vector<std::string>* notes);

}  // namespace skinlesion::jobs

#endif  // SKINLESION_JOBS_PUBLISH_H_
