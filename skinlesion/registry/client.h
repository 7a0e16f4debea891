// A client of skinlesion.v1.RegistryService with a verified local cache.
//
//   RegistryClient client(CreateRegistryChannel("registry:50052"),
//                         {.cache_dir = "/var/cache/skinlesion"});
//   SL_ASSIGN_OR_RETURN(int64_t v, client.ResolveAlias("ham10000", "production"));
//   SL_ASSIGN_OR_RETURN(std::string dir, client.FetchVersion("ham10000", v));
//
// FetchVersion downloads a version into <cache_dir>/<model>/<version>/ atomically:
// the files go to a temporary directory under <cache_dir>/.tmp/, each one is checked
// against the size and sha256 that GetVersion lists (manifest.json against the
// manifest GetVersion returns), and only a complete, verified download is renamed
// into place. A partial download is never visible; a mismatch is DataLoss and
// leaves nothing behind. A cached version is re-verified (every file re-hashed
// against its manifest.json) before it is reused; when the server answers, its
// manifest of the version must also be the cached one (else the copy is replaced),
// and when it does not, the verified copy is used.
//
// ReadFiles reads chosen files of a version into memory (the gateway's model cards
// and plots) from the same stream, checked by the same code (see ReadFiles).
//
// Errors are the server's gRPC status as absl::Status (same code and message), or
// DataLoss for a download that does not match its manifest (DownloadDamageOf names
// what was damaged).
// Thread-safe: calls may run concurrently (also FetchVersion of the same version);
// mu_ guards the set of open Watch calls (what CancelWatches cancels).
#ifndef SKINLESION_REGISTRY_CLIENT_H_
#define SKINLESION_REGISTRY_CLIENT_H_

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "grpcpp/grpcpp.h"
#include "skinlesion/v1/registry.grpc.pb.h"

namespace skinlesion::registry {

struct RegistryClientOptions {
  // Where FetchVersion keeps versions; required for FetchVersion only.
  std::string cache_dir;
  // When set, every call carries the metadata `authorization: Bearer <token>`.
  std::string bearer_token;
  // Deadline of each unary call.
  absl::Duration deadline = absl::Seconds(30);
  // Deadline of one whole download (DownloadVersion stream).
  absl::Duration download_deadline = absl::Minutes(10);
  // Chunk size asked of DownloadVersion; 0: the server's default (1 MiB). The server
  // clamps it to [4 KiB, 4 MiB]; above ~4 MiB the channel must accept large
  // messages (CreateRegistryChannel does).
  int chunk_size = 0;
};

// An insecure channel to `target` ("host:port") that accepts messages of up to
// 8 MiB (DownloadVersion chunks of up to 4 MiB plus framing).
std::shared_ptr<grpc::Channel> CreateRegistryChannel(const std::string& target);

class RegistryClient {
 public:
  RegistryClient(std::shared_ptr<grpc::Channel> channel, RegistryClientOptions options);

  absl::StatusOr<std::vector<std::string>> ListModels();
  absl::StatusOr<std::vector<v1::ModelVersion>> ListVersions(const std::string& model);
  absl::StatusOr<v1::ModelVersion> GetVersion(const std::string& model, int64_t version);
  absl::StatusOr<v1::ModelVersion> GetVersionByAlias(const std::string& model,
                                                     const std::string& alias);
  // The version `alias` points at now.
  absl::StatusOr<int64_t> ResolveAlias(const std::string& model, const std::string& alias);
  // Moves `alias`; FailedPrecondition when the promotion gates block it and
  // !force (forced moves are recorded in the history).
  absl::StatusOr<v1::Alias> SetAlias(const std::string& model, const std::string& alias,
                                     int64_t version, const std::string& reason,
                                     bool force = false);
  // Every recorded move of `alias` (empty: of every alias of the model), oldest first.
  absl::StatusOr<std::vector<v1::AliasChange>> GetAliasHistory(const std::string& model,
                                                               const std::string& alias = "");

  struct WatchOptions {
    // Skip the initial state (existing versions and current aliases).
    bool changes_only = false;
    // Called once the server has taken its starting point (every later change
    // will be delivered), or when the call failed before that.
    std::function<void()> on_started;
  };
  // Blocks, calling `on_event` for each event of `model` (empty: every model) until
  // it returns false (-> OK), CancelWatches() is called (-> Cancelled), or the
  // stream ends (-> its status; Unavailable when the server shuts down).
  absl::Status Watch(const std::string& model,
                     const std::function<bool(const v1::RegistryEvent&)>& on_event,
                     const WatchOptions& options) ABSL_LOCKS_EXCLUDED(mu_);
  // Ends the Watch calls that are open now.
  void CancelWatches() ABSL_LOCKS_EXCLUDED(mu_);

  // The local directory of a verified copy of the version (see the file comment).
  absl::StatusOr<std::string> FetchVersion(const std::string& model, int64_t version);

  // The files of `version` (as GetVersion described it) that `wanted` picks, read
  // into memory from one DownloadVersion stream (download_deadline): name -> contents.
  // Nothing is written to disk.
  //
  // The stream is checked as FetchVersion checks it (one code): each file in one
  // piece, its chunks in order at the right offsets and never past its listed size;
  // no file the listing lacks, none twice; every listed file and manifest.json
  // complete. Each wanted file's size and sha256 must be those GetVersion lists. The
  // other files (the weights, manifest.json) are read past: their framing and size
  // are checked, their bytes neither kept nor hashed. Any mismatch is DataLoss
  // (DownloadDamageOf says of what); the server's errors are returned as they are.
  //
  // `wanted` is asked about the listed files (version.files()) only; manifest.json is
  // never returned (it is version.manifest_json()).
  //
  // Unlike FetchVersion, ReadFiles does not require manifest.json's own `files` list to
  // agree with GetVersion's listing. FetchVersion needs that because a cached copy is
  // later re-verified by its manifest.json alone (VerifyVersionDir); ReadFiles keeps
  // nothing past the call, its reference is the listing it was given, and a version
  // whose manifest lists its weights differently still has an intact model card.
  absl::StatusOr<std::map<std::string, std::string>> ReadFiles(
      const v1::ModelVersion& version, const std::function<bool(const v1::FileInfo&)>& wanted);

 private:
  void Prepare(grpc::ClientContext* context, absl::Duration deadline) const;
  // FetchVersion's download into `dir` (ReadFiles shares its reading of the stream).
  absl::Status Download(const v1::ModelVersion& expected, const std::string& dir);

  std::unique_ptr<v1::RegistryService::Stub> stub_;
  RegistryClientOptions options_;
  absl::Mutex mu_;
  std::set<grpc::ClientContext*> watches_ ABSL_GUARDED_BY(mu_);  // The open Watch calls.
};

// Re-hashes every file a version directory's manifest.json lists; DataLoss when a
// file is missing or differs, or when the manifest is not that of model/version.
absl::Status VerifyVersionDir(const std::string& dir, const std::string& model, int64_t version);

// What a DataLoss error of a download (FetchVersion, ReadFiles) found damaged: a
// file's name ("model.safetensors"), or "<model> v<version>" for the download as a
// whole (a bad listing, a file the listing lacks). nullopt for any other status,
// also for the server's own errors (whatever their code) and VerifyVersionDir's.
std::optional<std::string> DownloadDamageOf(const absl::Status& status);

}  // namespace skinlesion::registry

#endif  // SKINLESION_REGISTRY_CLIENT_H_
