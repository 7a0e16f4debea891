#include "skinlesion/inference/inference_server.h"

#include <future>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "grpcpp/ext/proto_server_reflection_plugin.h"
#include "grpcpp/health_check_service_interface.h"
#include "skinlesion/common/logging.h"
#include "skinlesion/telemetry/grpc_metrics.h"

namespace skinlesion::inference {

InferenceServer::InferenceServer(serving::ServingCore* core, InferenceServerOptions options)
    : core_(core), options_(std::move(options)) {}

absl::StatusOr<std::unique_ptr<InferenceServer>> InferenceServer::Start(
    const InferenceServerOptions& options, serving::ServingCore* core,
    prometheus::Registry* registry) {
  static std::once_flag once;
  std::call_once(once, [] {
    grpc::EnableDefaultHealthCheckService(true);
    grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  });
  std::unique_ptr<InferenceServer> server(new InferenceServer(core, options));
  server->classification_ = std::make_unique<ClassificationServiceImpl>(
      core, ClassificationOptions{.default_top_k = options.default_top_k,
                                  .max_stream_in_flight = options.max_stream_in_flight});
  server->kserve_ = std::make_unique<KServeServiceImpl>(
      core, &server->shutting_down_,
      KServeOptions{.server_version = options.server_version,
                    .max_items_per_request = options.max_items_per_request});

  grpc::ServerBuilder builder;
  builder.AddListeningPort(options.listen_address, grpc::InsecureServerCredentials(),
                           &server->port_);
  // gRPC sets SO_REUSEPORT by default: a second server on a busy port would start
  // and share the traffic silently. Fail instead.
  builder.AddChannelArgument(GRPC_ARG_ALLOW_REUSEPORT, 0);
  builder.SetMaxReceiveMessageSize(options.max_message_bytes);
  builder.SetMaxSendMessageSize(options.max_message_bytes);
  builder.RegisterService(server->classification_.get());
  builder.RegisterService(server->kserve_.get());
  if (registry != nullptr) {
    // Every call, health and reflection included, at the status it ends with.
    std::vector<std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface>>
        interceptors;
    interceptors.push_back(telemetry::MakeGrpcMetricsInterceptorFactory(*registry));
    builder.experimental().SetInterceptorCreators(std::move(interceptors));
  }
  server->server_ = builder.BuildAndStart();
  if (server->server_ == nullptr || server->port_ == 0) {
    return absl::UnavailableError(absl::StrCat("cannot serve gRPC on ", options.listen_address,
                                               " (address in use or invalid?)"));
  }
  // The default health service starts SERVING; nothing is ready yet.
  server->SetHealth(false);
  server->watcher_ = std::thread([s = server.get()] { s->WatchReadiness(); });
  SL_LOG(INFO) << "gRPC on " << options.listen_address << " (port " << server->port_
               << "): skinlesion.v1.ClassificationService, inference.GRPCInferenceService, "
                  "grpc.health.v1.Health, reflection";
  return server;
}

InferenceServer::~InferenceServer() { Shutdown(absl::ZeroDuration()); }

void InferenceServer::SetHealth(bool serving) {
  grpc::HealthCheckServiceInterface* health = server_->GetHealthCheckService();
  health->SetServingStatus("", serving);
  for (const char* name : kHealthServiceNames) health->SetServingStatus(name, serving);
  serving_ = serving;
}

void InferenceServer::WatchReadiness() {
  absl::MutexLock lock(&mu_);
  while (!stop_watcher_) {
    const bool ready = core_->Ready() && !shutting_down_.load();
    if (ready != serving_.load()) {
      SetHealth(ready);
      SL_LOG(INFO) << "health: " << (ready ? "SERVING" : "NOT_SERVING");
    }
    const absl::Time deadline = absl::Now() + options_.readiness_poll_interval;
    while (!stop_watcher_) {
      if (cv_.WaitWithDeadline(&mu_, deadline)) break;  // Timed out: poll again.
    }
  }
}

void InferenceServer::Shutdown(absl::Duration drain) {
  {
    absl::MutexLock lock(&mu_);
    if (shut_down_) return;
    shut_down_ = true;
    shutting_down_ = true;
    stop_watcher_ = true;
  }
  cv_.SignalAll();
  if (watcher_.joinable()) watcher_.join();
  if (server_ == nullptr) return;  // Start() failed.
  // Load balancers see NOT_SERVING before the listener goes away. The health
  // service's own Shutdown() pins every status to NOT_SERVING.
  server_->GetHealthCheckService()->Shutdown();
  serving_ = false;
  const absl::Time deadline = absl::Now() + drain;
  SL_LOG(INFO) << "shutting down: draining calls for up to " << drain;
  // grpc::Server::Shutdown stops accepting at once, waits for the calls in flight
  // until the deadline, then cancels them; it returns when every handler has
  // returned. A handler blocked in the core returns once the core answers, so the
  // core is shut down (failing whatever it still holds) when the deadline passes.
  std::future<void> stopped = std::async(
      std::launch::async, [this, deadline] { server_->Shutdown(absl::ToChronoTime(deadline)); });
  stopped.wait_until(absl::ToChronoTime(deadline));
  core_->Shutdown(std::max(absl::ZeroDuration(), deadline - absl::Now()));
  stopped.wait();
  SL_LOG(INFO) << "gRPC server stopped";
}

}  // namespace skinlesion::inference
