// skinlesion-gateway: the REST API v1 and the website, in front of the inference
// service (skinlesion.v1.ClassificationService), the registry (RegistryService)
// and the trainer (TrainerService), over gRPC. docs/gateway.md.
//
// HTTP is cpp-httplib (Debian's libcpp-httplib): its thread pool, multipart
// parsing, payload limit (413) and stop(). Uploaded images stay in memory: they are
// never written to disk or to the log. One access line per request (method, route
// pattern, status, ms; no body, no query).
//
//   SL_ASSIGN_OR_RETURN(auto gateway, Gateway::Create(options));
//   SL_RETURN_IF_ERROR(gateway->Bind());     // gateway->port()
//   std::thread t([&] { gateway->Serve(); });
//   ... gateway->Stop();  // stop accepting; requests in flight finish; Serve returns
#ifndef SERVICES_GATEWAY_GATEWAY_H_
#define SERVICES_GATEWAY_GATEWAY_H_

#include <cstddef>
#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "prometheus/registry.h"

namespace skinlesion::gateway {

struct GatewayOptions {
  std::string host = "127.0.0.1";
  int port = 8080;               // 0: any free port (see Gateway::port()).
  std::string inference_target;  // HOST:PORT, required.
  std::string registry_target;   // Empty: the models routes answer 503.
  std::string trainer_target;    // Empty: the jobs routes answer 503.
  std::string web_root;          // Directory of the website (must exist).
  // Bearer token required by PUT alias, POST jobs and cancel; empty: those routes
  // are refused (403).
  std::string token;
  // Sent as `authorization: Bearer` to the trainer and to the registry's SetAlias.
  std::string upstream_token;
  size_t max_upload_bytes = 10 << 20;
  size_t max_json_bytes = 1 << 20;
  absl::Duration inference_timeout = absl::Seconds(10);
  absl::Duration upstream_timeout = absl::Seconds(10);  // Registry and trainer calls.
  int channels = 4;                                     // gRPC channels to inference (round robin).
  int retries = 2;                                      // Extra attempts after UNAVAILABLE.
  absl::Duration retry_backoff = absl::Milliseconds(25);  // First backoff (doubles).
  double rate_limit_rps = 20;                             // Per client IP; 0: off.
  int rate_limit_burst = 40;
  std::string cors_origin;  // Empty: no CORS headers.
  int threads = 16;         // Connection threads kept ready (more start on demand).
  // Connections (docs/gateway.md "Connections and deadlines"): over a cap the
  // connection is answered 503 + Retry-After and closed before anything is read.
  int max_connections = 512;
  int max_connections_per_client = 64;  // Per peer address; 0: no per-address cap.
  // Absolute deadlines: request line + headers from the connection (or the first
  // byte of a keep-alive request), the body from the end of the headers; 408 after.
  absl::Duration header_timeout = absl::Seconds(10);
  absl::Duration body_timeout = absl::Seconds(60);
  // The Content-Length of all requests being read or handled; over it: 503.
  size_t max_inflight_upload_bytes = 64 << 20;
  // Where the access lines go (one line each); null: stderr.
  std::FILE* access_log = nullptr;
};

// Checks the options (targets, ranges, web root); InvalidArgument naming the flag.
absl::Status ValidateOptions(const GatewayOptions& options);

class Gateway {
 public:
  static absl::StatusOr<std::unique_ptr<Gateway>> Create(GatewayOptions options);
  ~Gateway();
  Gateway(const Gateway&) = delete;
  Gateway& operator=(const Gateway&) = delete;

  // Binds host:port; Unavailable when it cannot.
  absl::Status Bind();
  int port() const;
  // Serves until Stop(); returns when every in-flight request has finished.
  absl::Status Serve();
  // Stops accepting; Serve() returns once the requests in flight are answered.
  // Safe from any thread, idempotent.
  void Stop();

  prometheus::Registry& metrics_registry();

 private:
  class Impl;
  explicit Gateway(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// The website directory when --web_root is not given: the first of <dir>/web for
// the directories from the binary's upwards (build/services/gateway -> the repo),
// ./web, and the source tree the binary was built from (`compiled_source_dir`)
// that holds a directory "web". Empty when none does.
std::string FindDefaultWebRoot(const std::string& compiled_source_dir);

}  // namespace skinlesion::gateway

#endif  // SERVICES_GATEWAY_GATEWAY_H_
