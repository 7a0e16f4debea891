// Learning-rate schedules as pure functions of progress (LibTorch-free).
//
// A schedule maps the fractional epoch t (epoch + step/steps_per_epoch) to a
// multiplier of each parameter group's base learning rate:
//   kConstant:           1
//   kCosineWarmRestarts: SGDR (Loshchilov & Hutter 2017), as torch's
//                        CosineAnnealingWarmRestarts: cycles of T_0, T_0*T_mult, ...
//                        epochs, each from 1 down to min_factor by a half cosine
//   kWarmupCosine:       linear from warmup_start_factor to 1 over warmup_epochs,
//                        then one half cosine down to min_factor at total_epochs
//   kStep:               gamma ^ floor(t / step_epochs)
#ifndef SKINLESION_TRAIN_SCHEDULE_H_
#define SKINLESION_TRAIN_SCHEDULE_H_

#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace skinlesion::train {

struct ScheduleOptions {
  enum class Kind { kConstant, kCosineWarmRestarts, kWarmupCosine, kStep };
  Kind kind = Kind::kCosineWarmRestarts;
  double t0 = 10;          // First cycle length in epochs (warm restarts).
  double t_mult = 2;       // Cycle growth factor (>= 1).
  double min_factor = 0.0; // eta_min / base lr.
  double warmup_epochs = 1;
  double warmup_start_factor = 0.01;
  double total_epochs = 30;
  double step_epochs = 10;
  double gamma = 0.1;
};

absl::StatusOr<ScheduleOptions::Kind> ParseScheduleKind(absl::string_view name);
std::string ScheduleKindName(ScheduleOptions::Kind kind);
absl::Status ValidateSchedule(const ScheduleOptions& options);

// The multiplier at fractional epoch t >= 0.
double LearningRateFactor(const ScheduleOptions& options, double t);

}  // namespace skinlesion::train

#endif  // SKINLESION_TRAIN_SCHEDULE_H_
