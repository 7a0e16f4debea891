// The model registry: immutable, checksummed versions of each model and movable
// aliases, stored in a directory (local disk or a Kubernetes volume). Free of
// LibTorch: it stores files and manifests.
//
// Layout under the root:
//   <model>/versions/<N>/manifest.json   + the version's files
//   <model>/aliases.json                 current aliases {"production": 3, ...}
//   <model>/alias_history.jsonl          append-only: time, alias, from, to, reason, forced
//   <model>/.staging/                    versions being written (never read)
//   <model>/.lock                        flock()ed by alias writers
//
// Publishing is atomic: files are written and fsynced under .staging/, then the
// directory is renamed to versions/<N>. A reader sees a version whole or not at all,
// even when the publisher is killed midway (its staging directory is garbage,
// removed by CollectGarbage()). Version numbers stay unique under concurrent
// publishers, across processes: rename() onto an existing non-empty versions/<N>
// fails, and the publisher retries with N+1.
//
// Thread-safety: all methods may be called concurrently from threads and
// processes sharing the root.
//
// Example:
//   SL_ASSIGN_OR_RETURN(auto registry, Registry::Create({.root = "/var/lib/skinlesion"}));
//   SL_ASSIGN_OR_RETURN(int64_t v, registry->Publish("ham10000-vit",
//       {{"model.safetensors", "/tmp/run/best.safetensors"}}, manifest));
//   SL_RETURN_IF_ERROR(registry->SetAlias("ham10000-vit", "staging", v, "nightly"));
#ifndef SKINLESION_REGISTRY_REGISTRY_H_
#define SKINLESION_REGISTRY_REGISTRY_H_

#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "nlohmann/json.hpp"

namespace skinlesion::registry {

// The largest manifest.json anyone reads (registry, service, client cache).
inline constexpr size_t kMaxManifestBytes = 16 << 20;

// Model and alias names: 1..64 characters of [a-z0-9._-], starting with a letter or
// digit, no "..". Anything else is InvalidArgument (path traversal, empty, odd
// characters, too long).
absl::Status ValidateName(absl::string_view kind, absl::string_view name);
// File names inside a version: like model names but upper case letters allowed;
// no '/' (versions are flat).
absl::Status ValidateFileName(absl::string_view name);

struct FileEntry {
  std::string name;
  int64_t size = 0;
  std::string sha256;
};

struct VersionInfo {
  std::string model;
  int64_t version = 0;
  std::string path;             // Directory holding the files.
  nlohmann::json manifest;      // As published, plus "files" and "created".
  std::vector<FileEntry> files;
  std::vector<std::string> aliases;
};

struct AliasChange {
  std::string time;             // RFC 3339, UTC.
  std::string alias;
  int64_t from_version = 0;     // 0: the alias is new.
  int64_t to_version = 0;
  std::string reason;
  bool forced = false;
};

class Registry {
 public:
  struct Options {
    // Root directory; created if missing.
    std::string root;
  };

  static absl::StatusOr<std::unique_ptr<Registry>> Create(const Options& options);

  // Publishes a new version with `files` (name in the version -> source path to
  // copy) and `manifest` (a JSON object; the registry adds "model", "version",
  // "created" and "files" with sizes and sha256). Returns the version number.
  absl::StatusOr<int64_t> Publish(absl::string_view model,
                                  const std::map<std::string, std::string>& files,
                                  const nlohmann::json& manifest);

  std::vector<std::string> ListModels() const;
  // Versions of `model`, ascending. NotFound when the model does not exist.
  absl::StatusOr<std::vector<int64_t>> ListVersions(absl::string_view model) const;
  absl::StatusOr<VersionInfo> GetVersion(absl::string_view model, int64_t version) const;
  // Resolves an alias; NotFound when it is not set.
  absl::StatusOr<VersionInfo> GetAlias(absl::string_view model, absl::string_view alias) const;
  absl::StatusOr<std::map<std::string, int64_t>> Aliases(absl::string_view model) const;

  // Re-hashes every file of a version against its manifest. DataLoss on mismatch.
  absl::Status Verify(absl::string_view model, int64_t version) const;

  // Moves `alias` to `version`. When the version's manifest has
  // "promotion_gates": {"metrics": ["balanced_accuracy", ...]} and the alias
  // currently points at a version, each named metric of the new version's
  // manifest["metrics"] must be >= that of the current one, else
  // FailedPrecondition listing the failures; `force` skips the gates (recorded).
  absl::Status SetAlias(absl::string_view model, absl::string_view alias, int64_t version,
                        absl::string_view reason, bool force = false);
  absl::StatusOr<std::vector<AliasChange>> AliasHistory(absl::string_view model) const;

  // Removes all but the `keep` newest versions, never an aliased one. Returns the
  // removed version numbers.
  absl::StatusOr<std::vector<int64_t>> ApplyRetention(absl::string_view model, int keep);

  // Removes staging directories left by killed publishers (older than min_age_s).
  absl::Status CollectGarbage(absl::string_view model, int min_age_s = 3600);

  // A string that changes whenever a version is published or an alias moves in
  // `model`, also onto the version it already had (for watchers that poll):
  // derived from the directory state.
  absl::StatusOr<std::string> StateToken(absl::string_view model) const;

  const std::string& root() const { return root_; }

 private:
  explicit Registry(std::string root) : root_(std::move(root)) {}
  std::string ModelDir(absl::string_view model) const;
  std::string VersionDir(absl::string_view model, int64_t version) const;

  std::string root_;
};

}  // namespace skinlesion::registry

#endif  // SKINLESION_REGISTRY_REGISTRY_H_
