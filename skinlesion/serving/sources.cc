#include "skinlesion/serving/sources.h"

#include <filesystem>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "skinlesion/common/csv.h"
#include "skinlesion/common/hash.h"
#include "skinlesion/common/json_file.h"
#include "skinlesion/common/status.h"

namespace skinlesion::serving {
namespace {

bool IsDecimal(const std::string& s) {
  if (s.empty() || s.size() > 18) return false;
  for (char c : s) {
    if (c < '0' || c > '9') return false;
  }
  return true;
}

absl::Status VerifyFile(const std::string& path, const std::string& expected) {
  auto digest = Sha256File(path);
  if (!digest.ok()) return absl::DataLossError(std::string(digest.status().message()));
  if (*digest != expected) {
    return absl::DataLossError(absl::StrCat("checksum mismatch for ", path, " (manifest ", expected,
                                            ", file ", *digest, ")"));
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::unique_ptr<LocalRegistrySource>> LocalRegistrySource::Create(
    const std::string& root) {
  std::error_code ec;
  if (!std::filesystem::is_directory(root, ec)) {
    return absl::NotFoundError(absl::StrCat("registry directory ", root, " does not exist"));
  }
  SL_ASSIGN_OR_RETURN(std::unique_ptr<registry::Registry> r,
                      registry::Registry::Create({.root = root}));
  return std::make_unique<LocalRegistrySource>(std::shared_ptr<registry::Registry>(std::move(r)));
}

absl::StatusOr<int64_t> LocalRegistrySource::Resolve(const std::string& model,
                                                     const std::string& alias) {
  if (IsDecimal(alias)) {
    int64_t version = 0;
    if (!absl::SimpleAtoi(alias, &version) || version < 1) {
      return absl::InvalidArgumentError(absl::StrCat("bad version number \"", alias, "\""));
    }
    SL_ASSIGN_OR_RETURN(const registry::VersionInfo info, registry_->GetVersion(model, version));
    return info.version;
  }
  SL_ASSIGN_OR_RETURN(const registry::VersionInfo info, registry_->GetAlias(model, alias));
  return info.version;
}

absl::StatusOr<std::string> LocalRegistrySource::Fetch(const std::string& model, int64_t version) {
  SL_RETURN_IF_ERROR(registry_->Verify(model, version));
  SL_ASSIGN_OR_RETURN(const registry::VersionInfo info, registry_->GetVersion(model, version));
  return info.path;
}

absl::StatusOr<std::unique_ptr<DirectorySource>> DirectorySource::Create(
    const std::string& directory, const std::string& name) {
  std::error_code ec;
  if (!std::filesystem::is_regular_file(directory + "/manifest.json", ec)) {
    return absl::NotFoundError(
        absl::StrCat(directory, " is not a model directory (no manifest.json)"));
  }
  if (name.empty()) return absl::InvalidArgumentError("DirectorySource needs a model name");
  return std::unique_ptr<DirectorySource>(new DirectorySource(directory, name));
}

absl::StatusOr<int64_t> DirectorySource::Resolve(const std::string& model,
                                                 const std::string& alias) {
  if (model != name_) {
    return absl::NotFoundError(absl::StrCat("model ", model, " is not served from ", directory_,
                                            " (it serves ", name_, ")"));
  }
  return 1;
}

absl::StatusOr<std::string> DirectorySource::Fetch(const std::string& model, int64_t version) {
  if (model != name_ || version != 1) {
    return absl::NotFoundError(absl::StrCat(model, " v", version, " is not in ", directory_,
                                            " (it holds ", name_, " v1)"));
  }
  const std::string path = directory_ + "/manifest.json";
  SL_ASSIGN_OR_RETURN(const nlohmann::json m, ReadJsonObject(path, 16 << 20));
  if (m.contains("sha256")) {
    if (!m["sha256"].is_string())
      return absl::InvalidArgumentError(absl::StrCat(path, ": \"sha256\" must be a string"));
    SL_RETURN_IF_ERROR(
        VerifyFile(directory_ + "/model.safetensors", m["sha256"].get<std::string>()));
  }
  if (m.contains("files") && m["files"].is_array()) {
    for (const nlohmann::json& f : m["files"]) {
      if (!f.is_object() || !f.contains("name") || !f["name"].is_string() ||
          !f.contains("sha256") || !f["sha256"].is_string()) {
        return absl::InvalidArgumentError(
            absl::StrCat(path, ": malformed \"files\" entry ", f.dump()));
      }
      const std::string name = f["name"].get<std::string>();
      if (name.empty() || name.find('/') != std::string::npos || name[0] == '.') {
        return absl::InvalidArgumentError(absl::StrCat(path, ": bad file name \"", name, "\""));
      }
      SL_RETURN_IF_ERROR(VerifyFile(directory_ + "/" + name, f["sha256"].get<std::string>()));
    }
  }
  return directory_;
}

}  // namespace skinlesion::serving
