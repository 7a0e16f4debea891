#include "skinlesion/train/schedule.h"

#include <cmath>

#include "absl/strings/str_cat.h"

namespace skinlesion::train {

using Kind = ScheduleOptions::Kind;

absl::StatusOr<Kind> ParseScheduleKind(absl::string_view name) {
  if (name == "constant") return Kind::kConstant;
  if (name == "cosine_restarts") return Kind::kCosineWarmRestarts;
  if (name == "warmup_cosine") return Kind::kWarmupCosine;
  if (name == "step") return Kind::kStep;
  return absl::InvalidArgumentError(absl::StrCat(
      "unknown schedule '", name, "' (expected constant, cosine_restarts, warmup_cosine, step)"));
}

std::string ScheduleKindName(Kind kind) {
  switch (kind) {
    case Kind::kConstant: return "constant";
    case Kind::kCosineWarmRestarts: return "cosine_restarts";
    case Kind::kWarmupCosine: return "warmup_cosine";
    case Kind::kStep: return "step";
  }
  return "?";
}

absl::Status ValidateSchedule(const ScheduleOptions& o) {
  if (o.kind == Kind::kCosineWarmRestarts && (o.t0 <= 0 || o.t_mult < 1)) {
    return absl::InvalidArgumentError("cosine_restarts needs T_0 > 0 and T_mult >= 1");
  }
  if (o.kind == Kind::kWarmupCosine && (o.warmup_epochs < 0 || o.total_epochs <= o.warmup_epochs)) {
    return absl::InvalidArgumentError("warmup_cosine needs 0 <= warmup epochs < total epochs");
  }
  if (o.kind == Kind::kStep && (o.step_epochs <= 0 || o.gamma <= 0)) {
    return absl::InvalidArgumentError("step schedule needs step epochs > 0 and gamma > 0");
  }
  if (o.min_factor < 0 || o.min_factor > 1) {
    return absl::InvalidArgumentError("min lr factor must be in [0, 1]");
  }
  return absl::OkStatus();
}

double LearningRateFactor(const ScheduleOptions& o, double t) {
  auto half_cosine = [&](double progress) {
    return o.min_factor + (1 - o.min_factor) * 0.5 * (1 + std::cos(M_PI * progress));
  };
  switch (o.kind) {
    case Kind::kConstant:
      return 1.0;
    case Kind::kCosineWarmRestarts: {
      double cycle = o.t0, start = 0;
      if (o.t_mult == 1) {
        start = std::floor(t / cycle) * cycle;
      } else {
        while (t >= start + cycle) {
          start += cycle;
          cycle *= o.t_mult;
        }
      }
      return half_cosine((t - start) / cycle);
    }
    case Kind::kWarmupCosine: {
      if (t < o.warmup_epochs) {
        return o.warmup_start_factor + (1 - o.warmup_start_factor) * t / o.warmup_epochs;
      }
      const double p = (t - o.warmup_epochs) / (o.total_epochs - o.warmup_epochs);
      return half_cosine(std::min(1.0, p));
    }
    case Kind::kStep:
      return std::pow(o.gamma, std::floor(t / o.step_epochs));
  }
  return 1.0;
}

}  // namespace skinlesion::train
