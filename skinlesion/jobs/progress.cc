#include "skinlesion/jobs/progress.h"

#include <algorithm>
#include <cstdint>
#include <string>

#include "nlohmann/json.hpp"

namespace skinlesion::jobs {
namespace {

double Number(const nlohmann::json& j, const char* key) {
  auto it = j.find(key);
  return it != j.end() && it->is_number() ? it->get<double>() : 0.0;
}

}  // namespace

ProgressEvent ApplyProgressLine(absl::string_view line, v1::JobProgress& progress) {
  const nlohmann::json j = nlohmann::json::parse(line.begin(), line.end(), nullptr, /*allow_exceptions=*/false);
  if (!j.is_object()) return ProgressEvent::kNone;
  const std::string kind = j.value("event", "");
  if (kind == "progress") {
    progress.set_phase(j.value("phase", ""));
    progress.set_epoch(j.value("epoch", 0));
    progress.set_epochs(j.value("epochs", 0));
    progress.set_step(j.value("step", int64_t{0}));
    progress.set_steps(j.value("steps", int64_t{0}));
    progress.set_loss(Number(j, "loss"));
    progress.set_images_per_second(Number(j, "images_per_second"));
    progress.set_eta_seconds(Number(j, "eta_seconds"));
    return ProgressEvent::kProgress;
  }
  if (kind == "epoch") {
    progress.set_phase(j.value("phase", progress.phase()));
    progress.set_epoch(j.value("epoch", progress.epoch()));
    progress.set_step(progress.steps());
    progress.set_loss(Number(j, "train_loss"));
    progress.set_images_per_second(Number(j, "images_per_second"));
    progress.clear_validation_metrics();
    auto& metrics = *progress.mutable_validation_metrics();
    if (j.contains("val_metrics") && j["val_metrics"].is_object()) {
      for (const auto& [key, value] : j["val_metrics"].items()) {
        if (value.is_number()) metrics[key] = value.get<double>();
      }
    }
    metrics["val_loss"] = Number(j, "val_loss");
    return ProgressEvent::kEpoch;
  }
  if (kind == "phase") {
    progress.set_phase(j.value("phase", ""));
    progress.set_eta_seconds(0);
    return ProgressEvent::kPhase;
  }
  return ProgressEvent::kNone;
}

double ProgressFraction(const v1::JobProgress& p) {
  if (p.epochs() <= 0) return 0;
  const double within = p.steps() > 0 ? static_cast<double>(p.step()) / static_cast<double>(p.steps()) : 0;
  return std::clamp((p.epoch() + within) / p.epochs(), 0.0, 1.0);
}

}  // namespace skinlesion::jobs
