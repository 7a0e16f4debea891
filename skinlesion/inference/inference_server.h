// The skinlesion-inference gRPC server: ClassificationService + KServe v2
// GRPCInferenceService over one ServingCore, with grpc.health.v1 and server
// reflection.
//
// Health ("" and each service name): NOT_SERVING until the core is Ready, SERVING
// while it is, NOT_SERVING again from the start of Shutdown (a watcher thread
// follows core->Ready()).
//
// Metrics: given a prometheus registry, the server records every call with the
// project's gRPC interceptor (telemetry::MakeGrpcMetricsInterceptorFactory, as the
// registry and trainer servers do): skinlesion_grpc_requests_total{service,method,code}
// and skinlesion_grpc_request_duration_seconds{service,method}, for the two services
// above and also grpc.health.v1.Health and reflection; the handlers record nothing.
//
//   SL_ASSIGN_OR_RETURN(auto server, InferenceServer::Start(options, core.get(), &registry));
//   ... on SIGTERM:
//   server->Shutdown(absl::Seconds(10));  // health off, stop accepting, drain, core->Shutdown
//
// Thread-safety: port() and serving() from any thread; Shutdown() from any thread,
// once or more (mu_ makes the first call the one that stops). The readiness
// watcher thread sleeps on cv_ under mu_, which guards its stop flag.
#ifndef SKINLESION_INFERENCE_INFERENCE_SERVER_H_
#define SKINLESION_INFERENCE_INFERENCE_SERVER_H_

#include <atomic>
#include <memory>
#include <string>
#include <thread>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "grpcpp/grpcpp.h"
#include "prometheus/registry.h"
#include "skinlesion/inference/classification_service.h"
#include "skinlesion/inference/kserve_service.h"
#include "skinlesion/inference/service_util.h"
#include "skinlesion/serving/serving.h"

namespace skinlesion::inference {

struct InferenceServerOptions {
  std::string listen_address = "0.0.0.0:50051";  // Port 0: pick a free one (see port()).
  std::string server_version;                    // ServerMetadata.version.
  int max_message_bytes = 64 << 20;              // Largest request / response.
  int default_top_k = 3;
  int max_stream_in_flight = 32;
  int max_items_per_request = 1024;
  absl::Duration readiness_poll_interval = absl::Milliseconds(100);
};

// The health-checked service names besides "" (the whole server).
inline constexpr const char* kHealthServiceNames[] = {"skinlesion.v1.ClassificationService",
                                                      "inference.GRPCInferenceService"};

class InferenceServer {
 public:
  // Listens and serves. `core` must outlive the server; `registry` (may be null: no
  // metrics) receives the gRPC metrics and must outlive it too. Unavailable when the
  // address cannot be bound.
  static absl::StatusOr<std::unique_ptr<InferenceServer>> Start(
      const InferenceServerOptions& options, serving::ServingCore* core,
      prometheus::Registry* registry);
  ~InferenceServer();  // Shutdown(absl::ZeroDuration()) unless already shut down.
  InferenceServer(const InferenceServer&) = delete;
  InferenceServer& operator=(const InferenceServer&) = delete;

  int port() const { return port_; }
  // What the health service reports for "" now.
  bool serving() const { return serving_.load(); }

  // Health NOT_SERVING and ServerReady false first, then stops accepting calls and
  // lets the ones in flight finish within `drain`; the core then drains what is
  // left (core->Shutdown) and calls still running after `drain` are cancelled.
  // Idempotent.
  void Shutdown(absl::Duration drain) ABSL_LOCKS_EXCLUDED(mu_);

 private:
  InferenceServer(serving::ServingCore* core, InferenceServerOptions options);
  void WatchReadiness() ABSL_LOCKS_EXCLUDED(mu_);
  void SetHealth(bool serving);

  serving::ServingCore* core_;
  InferenceServerOptions options_;
  std::atomic<bool> shutting_down_{false};
  std::unique_ptr<ClassificationServiceImpl> classification_;
  std::unique_ptr<KServeServiceImpl> kserve_;
  std::unique_ptr<grpc::Server> server_;
  int port_ = 0;
  std::atomic<bool> serving_{false};

  absl::Mutex mu_;
  absl::CondVar cv_;  // With mu_: stop_watcher_ set.
  bool stop_watcher_ ABSL_GUARDED_BY(mu_) = false;
  bool shut_down_ ABSL_GUARDED_BY(mu_) = false;
  // Started by Start() before the server is handed out; joined by the first Shutdown().
  std::thread watcher_;
};

}  // namespace skinlesion::inference

#endif  // SKINLESION_INFERENCE_INFERENCE_SERVER_H_
