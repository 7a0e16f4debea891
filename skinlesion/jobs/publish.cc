// PublishRun: a finished run as a new registry version; see publish.h.
#include "skinlesion/jobs/publish.h"

#include <filesystem>
#include <map>

#include "absl/strings/str_cat.h"
#include "nlohmann/json.hpp"
#include "skinlesion/common/status.h"
#include "skinlesion/manifest/manifest.h"

namespace skinlesion::jobs {
namespace fs = std::filesystem;

absl::StatusOr<v1::ModelRef> PublishRun(registry::Registry& registry, const v1::Job& job,
                                        std::vector<std::string>* notes) {
  const std::string model = job.config().model_name();
  const std::string model_dir = job.run_dir() + "/model";
  const std::string report_dir = job.run_dir() + "/report";
  std::map<std::string, std::string> files;
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(model_dir, ec)) {
    const std::string name = entry.path().filename().string();
    if (entry.is_regular_file() && name != "manifest.json") files[name] = entry.path().string();
  }
  if (ec)
    return absl::FailedPreconditionError(
        absl::StrCat("no model directory ", model_dir, ": ", ec.message()));
  if (!fs::is_regular_file(report_dir + "/metrics.json", ec)) {
    return absl::FailedPreconditionError(absl::StrCat(report_dir, "/metrics.json is missing"));
  }
  files["metrics.json"] = report_dir + "/metrics.json";
  for (const auto& entry : fs::directory_iterator(report_dir, ec)) {
    if (entry.is_regular_file() && entry.path().extension() == ".png") {
      files.emplace(entry.path().filename().string(), entry.path().string());
    }
  }
  // Read as a server will read it: a job whose model could not be served fails here.
  SL_ASSIGN_OR_RETURN(ModelManifest model_manifest, ReadModelManifest(model_dir));
  nlohmann::json& doc = model_manifest.document;
  doc["job_id"] = job.id();
  auto production = registry.GetAlias(model, "production");
  doc["parent_version"] = production.ok() ? nlohmann::json(production->version) : nlohmann::json();
  doc["promotion_gates"] = {{"metrics", {"balanced_accuracy", "melanoma_recall"}}};
  const nlohmann::json manifest = model_manifest.ToJson();
  // A trainer killed after publishing but before recording success publishes this
  // job again on restart: reuse the version that already carries its job id.
  int64_t version = 0;
  if (auto versions = registry.ListVersions(model); versions.ok()) {
    for (auto it = versions->rbegin(); it != versions->rend() && version == 0; ++it) {
      auto info = registry.GetVersion(model, *it);
      if (info.ok() && info->manifest.value("job_id", "") == job.id()) version = *it;
    }
  }
  if (version != 0) {
    notes->push_back(
        absl::StrCat("version ", version, " was already published by this job (before a restart)"));
  } else {
    SL_ASSIGN_OR_RETURN(version, registry.Publish(model, files, manifest));
  }
  const std::string reason = absl::StrCat("training job ", job.id());
  // `staging` holds the newest candidate whatever its metrics: the gates guard
  // `production`, not the review slot.
  SL_RETURN_IF_ERROR(registry.SetAlias(model, "staging", version, reason, /*force=*/true));
  v1::ModelRef ref;
  ref.set_name(model);
  ref.set_version(version);
  ref.set_alias("staging");
  ref.set_sha256(model_manifest.sha256);
  if (job.config().promote_to_production()) {
    const absl::Status s = registry.SetAlias(model, "production", version, reason);
    if (s.ok()) {
      ref.set_alias("production");
    } else {
      notes->push_back(
          absl::StrCat("production not moved to version ", version, ": ", s.message()));
    }
  }
  return ref;
}

}  // namespace skinlesion::jobs
