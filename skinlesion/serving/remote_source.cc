#include "skinlesion/serving/remote_source.h"

#include <algorithm>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"

namespace skinlesion::serving {

absl::StatusOr<std::unique_ptr<RemoteRegistrySource>> RemoteRegistrySource::Create(
    const std::string& target, registry::RegistryClientOptions options) {
  if (target.empty()) return absl::InvalidArgumentError("registry target is empty");
  if (options.cache_dir.empty()) {
    return absl::InvalidArgumentError("a remote registry source needs a cache directory");
  }
  return std::make_unique<RemoteRegistrySource>(
      std::make_unique<registry::RegistryClient>(registry::CreateRegistryChannel(target), std::move(options)));
}

absl::StatusOr<int64_t> RemoteRegistrySource::Resolve(const std::string& model,
                                                      const std::string& alias) {
  const bool numeric = !alias.empty() && std::all_of(alias.begin(), alias.end(),
                                                     [](char c) { return c >= '0' && c <= '9'; });
  if (numeric) {
    int64_t version = 0;
    if (!absl::SimpleAtoi(alias, &version) || version <= 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("invalid version '", alias, "': versions are numbered from 1"));
    }
    return version;
  }
  return client_->ResolveAlias(model, alias);
}

absl::StatusOr<std::string> RemoteRegistrySource::Fetch(const std::string& model, int64_t version) {
  return client_->FetchVersion(model, version);
}

}  // namespace skinlesion::serving
