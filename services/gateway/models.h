// The models routes, over the registry (RegistryService) and, for what is being
// served, inference (docs/gateway.md "Models"). Without --registry_target every one
// answers 503 service_unavailable.
//
// - GET /api/v1/models: every model with its versions (newest first), aliases, and
//   what inference serves of it ("serving": version, ready, classes; null when
//   inference cannot say). Takes no query parameters.
// - GET /api/v1/models/{name}/versions/{version}: the model card (ModelCardJson) with
//   the version's metrics.json, or the manifest's "metrics" when it has none.
// - GET /api/v1/models/{name}/versions/{version}/files/{file}: one of the version's
//   .png / .json / .md files (404 for other names or a file the version lacks).
// - PUT /api/v1/models/{name}/aliases/{alias} (bearer token): moves the alias; body
//   {"version", "reason", "force"} (ParseSetAliasBody, at most max_json_bytes: 413).
//
// A version's files come from the registry's DownloadVersion once, in memory
// (registry::RegistryClient::ReadFiles, the client's one reading and checking of that
// stream): only the .png / .json / .md files up to 16 MiB each are kept (the weights
// are read past), each checked against the size and sha256 GetVersion lists; a
// damaged copy is 502 internal "The registry sent a damaged copy of <file>.", other
// registry errors map as every upstream error does (ApiStatusOf). The last 8
// versions are kept (versions never change).
#ifndef SERVICES_GATEWAY_MODELS_H_
#define SERVICES_GATEWAY_MODELS_H_

#include <list>
#include <map>
#include <memory>
#include <string>
#include <utility>

#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "httplib.h"
#include "services/gateway/gateway.h"
#include "services/gateway/http_server.h"
#include "services/gateway/upstreams.h"

namespace skinlesion::gateway {

// The files of the last `capacity` versions looked up (least recently used out).
// Thread-safe.
class VersionFileCache {
 public:
  using Files = std::map<std::string, std::string>;  // Name -> contents.
  explicit VersionFileCache(size_t capacity) : capacity_(capacity) {}

  // Null when `key` is not cached.
  std::shared_ptr<const Files> Find(const std::string& key) ABSL_LOCKS_EXCLUDED(mu_);
  void Put(const std::string& key, std::shared_ptr<const Files> files) ABSL_LOCKS_EXCLUDED(mu_);

 private:
  const size_t capacity_;
  absl::Mutex mu_;
  std::list<std::pair<std::string, std::shared_ptr<const Files>>> entries_ ABSL_GUARDED_BY(mu_);
};

class Models {
 public:
  // Keeps references to `options` and `upstreams`.
  Models(const GatewayOptions& options, Upstreams& upstreams);

  void Register(HttpServer& server);
  absl::StatusOr<Reply> List(const httplib::Request& req);
  absl::StatusOr<Reply> Card(const httplib::Request& req);
  absl::StatusOr<Reply> File(const httplib::Request& req);
  absl::StatusOr<Reply> SetAlias(const httplib::Request& req);

 private:
  // The version named by the route's {name} and {version}.
  absl::StatusOr<v1::ModelVersion> LookUpVersion(const httplib::Request& req);
  // The version's png / json / md files (downloaded once, verified).
  absl::StatusOr<std::shared_ptr<const VersionFileCache::Files>> VersionFiles(
      const v1::ModelVersion& version);

  const GatewayOptions& options_;
  Upstreams& upstreams_;
  VersionFileCache files_{8};
};

}  // namespace skinlesion::gateway

#endif  // SERVICES_GATEWAY_MODELS_H_
