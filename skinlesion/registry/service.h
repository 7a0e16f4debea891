// skinlesion.v1.RegistryService over a Registry (gRPC sync API).
//
// Status codes: bad model/alias names, a bad version number or chunk size ->
// INVALID_ARGUMENT; a missing model, version or alias -> NOT_FOUND; promotion
// gates failing -> FAILED_PRECONDITION (the message lists every failing gate); a
// rejected caller -> whatever the authorizer returns; a file that no longer
// matches its checksum (seen by the registry) -> DATA_LOSS.
//
// Watch streams are served by polling Registry::StateToken every
// `poll_interval`; they end when the client cancels (status CANCELLED as seen by
// the client) or when Shutdown() is called (UNAVAILABLE: reconnect elsewhere).
// Call Shutdown() before grpc::Server::Shutdown(), or the server waits for the
// open Watch streams. grpc::Server::Shutdown(deadline) also waits until the
// deadline for idle client connections to go away, so a graceful stop waits for
// the calls in flight itself and then gives the server only enough time to flush
// the last responses:
//
//   RegistryServiceImpl service(registry.get(), {});
//   builder.RegisterService(&service);
//   auto server = builder.BuildAndStart();
//   ...
//   service.Shutdown();
//   service.WaitUntilIdle(absl::Now() + absl::Seconds(3));
//   server->Shutdown(std::chrono::system_clock::now() + std::chrono::milliseconds(250));
//
// Thread-safety: every method may be called from any thread (gRPC runs the
// handlers on its own threads); mu_ guards shutdown_ and active_calls_.
#ifndef SKINLESION_REGISTRY_SERVICE_H_
#define SKINLESION_REGISTRY_SERVICE_H_

#include <atomic>
#include <functional>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "grpcpp/grpcpp.h"
#include "skinlesion/registry/registry.h"
#include "skinlesion/v1/registry.grpc.pb.h"

namespace skinlesion::registry {

// Decides whether a call may proceed: OK, or the status to fail it with.
using Authorizer = std::function<grpc::Status(grpc::ServerContext*)>;

// An Authorizer that wants the metadata `authorization: Bearer <token>`:
// UNAUTHENTICATED when it is missing or not a bearer token, PERMISSION_DENIED
// when the token differs (compared in constant time).
Authorizer BearerTokenAuthorizer(std::string token);

// Chunk sizes of DownloadVersion.
inline constexpr int kDefaultChunkSize = 1 << 20;
inline constexpr int kMinChunkSize = 4 << 10;
inline constexpr int kMaxChunkSize = 4 << 20;

class RegistryServiceImpl final : public skinlesion::v1::RegistryService::Service {
 public:
  struct Options {
    // How often Watch streams look for changes.
    absl::Duration poll_interval = absl::Milliseconds(200);
    // Applied to SetAlias (the only RPC that changes state); empty: allow all.
    Authorizer set_alias_authorizer;
  };

  // `registry` must outlive the service.
  RegistryServiceImpl(Registry* registry, Options options);
  ~RegistryServiceImpl() override;

  // Ends every open Watch stream (UNAVAILABLE) and makes new ones end at once.
  // Other RPCs keep working until the grpc::Server is shut down.
  void Shutdown() ABSL_LOCKS_EXCLUDED(mu_);
  // Waits until no call is running in this service (or `deadline`); true when idle.
  bool WaitUntilIdle(absl::Time deadline) ABSL_LOCKS_EXCLUDED(mu_);

  grpc::Status ListModels(grpc::ServerContext* context, const v1::ListModelsRequest* request,
                          v1::ListModelsResponse* response) override;
  grpc::Status ListVersions(grpc::ServerContext* context, const v1::ListVersionsRequest* request,
                            v1::ListVersionsResponse* response) override;
  grpc::Status GetVersion(grpc::ServerContext* context, const v1::GetVersionRequest* request,
                          v1::ModelVersion* response) override;
  grpc::Status DownloadVersion(grpc::ServerContext* context,
                               const v1::DownloadVersionRequest* request,
                               grpc::ServerWriter<v1::FileChunk>* writer) override;
  grpc::Status SetAlias(grpc::ServerContext* context, const v1::SetAliasRequest* request,
                        v1::Alias* response) override;
  grpc::Status GetAliasHistory(grpc::ServerContext* context,
                               const v1::GetAliasHistoryRequest* request,
                               v1::GetAliasHistoryResponse* response) override;
  grpc::Status Watch(grpc::ServerContext* context, const v1::WatchRequest* request,
                     grpc::ServerWriter<v1::RegistryEvent>* writer) override;

 private:
  class ActiveCall;  // Counts a running call in active_calls_.

  // Sleeps up to `d`; false once Shutdown() was called.
  bool WaitUnlessShutdown(absl::Duration d) ABSL_LOCKS_EXCLUDED(mu_);

  Registry* registry_;
  Options options_;
  absl::Mutex mu_;
  absl::CondVar cv_;  // With mu_: shutdown_ set, active_calls_ decremented.
  bool shutdown_ ABSL_GUARDED_BY(mu_) = false;
  int active_calls_ ABSL_GUARDED_BY(mu_) = 0;
};

// Fills a ModelVersion from a VersionInfo; the manifest is the version's
// manifest.json byte for byte (what DownloadVersion sends).
absl::Status ToProto(const VersionInfo& info, v1::ModelVersion* out);

}  // namespace skinlesion::registry

#endif  // SKINLESION_REGISTRY_SERVICE_H_
