// A ModelSource backed by a remote RegistryService: aliases are resolved over gRPC
// and versions are fetched into a verified local cache (RegistryClient::FetchVersion).
// Serving adapts registry sources (LocalRegistrySource beside it in sources.h), as
// TF Serving keeps its sources in its serving tree; the registry knows nothing of
// serving.
//
//   SL_ASSIGN_OR_RETURN(auto source, RemoteRegistrySource::Create(
//       "registry:50052", {.cache_dir = "/var/cache/skinlesion"}));
//   SL_ASSIGN_OR_RETURN(auto core, ServingCore::Create(options, std::move(source), ...));
#ifndef SKINLESION_SERVING_REMOTE_SOURCE_H_
#define SKINLESION_SERVING_REMOTE_SOURCE_H_

#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "skinlesion/registry/client.h"
#include "skinlesion/serving/serving.h"

namespace skinlesion::serving {

class RemoteRegistrySource final : public ModelSource {
 public:
  // A source talking to `target` ("host:port") over CreateRegistryChannel.
  // InvalidArgument when target or options.cache_dir is empty.
  static absl::StatusOr<std::unique_ptr<RemoteRegistrySource>> Create(
      const std::string& target, registry::RegistryClientOptions options);

  explicit RemoteRegistrySource(std::unique_ptr<registry::RegistryClient> client)
      : client_(std::move(client)) {}

  // A plain decimal `alias` ("3") is that fixed version (not looked up); anything
  // else is an alias resolved by the server (NotFound when it is not set).
  absl::StatusOr<int64_t> Resolve(const std::string& model, const std::string& alias) override;
  // RegistryClient::FetchVersion: the cached, verified directory of the version.
  absl::StatusOr<std::string> Fetch(const std::string& model, int64_t version) override;

  registry::RegistryClient* client() { return client_.get(); }

 private:
  std::unique_ptr<registry::RegistryClient> client_;
};

}  // namespace skinlesion::serving

#endif  // SKINLESION_SERVING_REMOTE_SOURCE_H_
