#include "skinlesion/registry/seed.h"

#include <filesystem>
#include <map>

#include "absl/strings/str_cat.h"
#include "nlohmann/json.hpp"
#include "skinlesion/common/csv.h"
#include "skinlesion/common/logging.h"
#include "skinlesion/common/status.h"

namespace skinlesion::registry {
namespace fs = std::filesystem;

absl::StatusOr<int64_t> SeedFromDirectory(Registry& registry, const std::string& dir,
                                          const std::string& model, const std::string& alias) {
  SL_RETURN_IF_ERROR(ValidateName("model", model));
  SL_RETURN_IF_ERROR(ValidateName("alias", alias));
  auto versions = registry.ListVersions(model);
  if (versions.ok() && !versions->empty()) {
    SL_LOG(INFO) << "registry: " << model << " already has " << versions->size()
                 << " version(s); not seeding from " << dir;
    return 0;
  }
  if (!versions.ok() && !absl::IsNotFound(versions.status())) return versions.status();

  std::error_code ec;
  if (!fs::is_directory(dir, ec)) {
    return absl::InvalidArgumentError(
        absl::StrCat("seed model directory ", dir, " does not exist"));
  }
  auto text = ReadFileToString(dir + "/manifest.json", 16 << 20);
  if (!text.ok()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "seed model directory ", dir, " has no readable manifest.json: ", text.status().message()));
  }
  const nlohmann::json manifest = nlohmann::json::parse(*text, nullptr, false);
  if (!manifest.is_object()) {
    return absl::InvalidArgumentError(absl::StrCat(dir, "/manifest.json is not a JSON object"));
  }
  std::map<std::string, std::string> files;
  for (const auto& entry : fs::directory_iterator(dir, ec)) {
    const std::string name = entry.path().filename().string();
    if (name == "manifest.json") continue;
    if (!entry.is_regular_file(ec) || !ValidateFileName(name).ok()) {
      SL_LOG(WARNING) << "registry seed: skipping " << entry.path().string();
      continue;
    }
    files[name] = entry.path().string();
  }
  if (ec) return absl::InternalError(absl::StrCat("cannot list ", dir, ": ", ec.message()));
  if (files.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat("seed model directory ", dir, " has no files besides manifest.json"));
  }
  SL_ASSIGN_OR_RETURN(const int64_t version, registry.Publish(model, files, manifest));
  SL_RETURN_IF_ERROR(registry.SetAlias(model, alias, version, absl::StrCat("seeded from ", dir)));
  SL_LOG(INFO) << "registry: seeded " << model << " v" << version << " ('" << alias << "') from "
               << dir;
  return version;
}

}  // namespace skinlesion::registry
