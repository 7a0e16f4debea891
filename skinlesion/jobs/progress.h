// The progress of a running job, read from the lines `skinlesion train
// --progress_jsonl` appends (docs/trainer.md): one JSON object per line with "event"
// "progress" (a step), "epoch" (an epoch's end, with validation metrics) or "phase".
#ifndef SKINLESION_JOBS_PROGRESS_H_
#define SKINLESION_JOBS_PROGRESS_H_

#include "absl/strings/string_view.h"
#include "skinlesion/v1/training.pb.h"

namespace skinlesion::jobs {

enum class ProgressEvent { kNone, kProgress, kEpoch, kPhase };

// Applies one line to `progress`. kNone, with `progress` unchanged, for a line that
// is not JSON or not one of the three events.
ProgressEvent ApplyProgressLine(absl::string_view line, v1::JobProgress& progress);

// The share of the job's epochs done, in [0, 1] (0 before the epoch count is known).
double ProgressFraction(const v1::JobProgress& progress);

}  // namespace skinlesion::jobs

#endif  // SKINLESION_JOBS_PROGRESS_H_
