// The gateway's gRPC side: the channels and stubs of inference, the registry and
// the trainer, and the one way every call is made (deadline, credentials, latency
// and error metrics, the log line of an upstream failure).
//
// - inference: `channels` round-robin channels (distinct connections; a DNS name
//   with several addresses is spread over all of them); Classify retries
//   UNAVAILABLE on the next channel with jittered exponential backoff while the
//   inference deadline allows.
// - registry, trainer: one channel each, or none (not configured: Require* is the
//   503 the routes answer). On the registry's channel also a RegistryClient
//   (registry_client(): version files through its ReadFiles, 60 s per download, no
//   credentials); its calls are timed and counted with Observe by the caller.
// - `authorization: Bearer <upstream_token>` goes to the trainer and with the
//   registry's SetAlias only.
// - All channels are kept polled (a restarted upstream is noticed within ~1 s).
#ifndef SERVICES_GATEWAY_UPSTREAMS_H_
#define SERVICES_GATEWAY_UPSTREAMS_H_

#include <atomic>
#include <chrono>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "grpcpp/grpcpp.h"
#include "prometheus/counter.h"
#include "prometheus/histogram.h"
#include "prometheus/registry.h"
#include "services/gateway/api.h"
#include "services/gateway/gateway.h"
#include "skinlesion/registry/client.h"
#include "skinlesion/v1/classification.grpc.pb.h"
#include "skinlesion/v1/registry.grpc.pb.h"
#include "skinlesion/v1/training.grpc.pb.h"

namespace skinlesion::gateway {

// OK for an OK status; else the API's error for it (MapGrpcStatus) as a Status.
absl::Status ApiStatusOf(Upstream upstream, const grpc::Status& status);

class Upstreams {
 public:
  // Uses the targets, channels, retries, timeouts and upstream_token of `options`.
  Upstreams(const GatewayOptions& options, prometheus::Registry& registry);
  ~Upstreams();
  Upstreams(const Upstreams&) = delete;
  Upstreams& operator=(const Upstreams&) = delete;

  // 503 service_unavailable (Retry-After) when the registry / trainer target is not
  // configured; OK otherwise.
  absl::Status RequireRegistry() const;
  absl::Status RequireTrainer() const;

  // Valid after Require*() returned OK.
  v1::RegistryService::Stub& registry() { return *registry_stub_; }
  v1::TrainerService::Stub& trainer() { return *trainer_stub_; }
  registry::RegistryClient& registry_client() { return *registry_client_; }
  // The first inference channel (health checks, ListServedModels).
  v1::ClassificationService::Stub& inference() { return *inference_stubs_[0]; }
  const std::shared_ptr<grpc::Channel>& inference_channel() const { return inference_channels_[0]; }

  // One call with its deadline (`timeout` from now) and credentials, timed and
  // counted; `call(grpc::ClientContext*)` makes the RPC and returns its status.
  // OK, or the API's error for the failure (ApiStatusOf).
  template <typename CallFn>
  absl::Status Call(Upstream upstream, const char* method, absl::Duration timeout,
                    const CallFn& call) {
    return ApiStatusOf(upstream, CallGrpc(upstream, method, timeout, call));
  }
  // The same, returning the gRPC status itself (for callers that look at its code).
  template <typename CallFn>
  grpc::Status CallGrpc(Upstream upstream, const char* method, absl::Duration timeout,
                        const CallFn& call) {
    grpc::ClientContext context;
    context.set_deadline(absl::ToChronoTime(absl::Now() + timeout));
    AddCredentials(upstream, method, context);
    const auto t0 = std::chrono::steady_clock::now();
    const grpc::Status status = call(&context);
    Observe(upstream, method, t0, status);
    return status;
  }

  // Records a call made elsewhere (latency, and the error count and log line).
  void Observe(Upstream upstream, const char* method, std::chrono::steady_clock::time_point t0,
               const grpc::Status& status);

  // Classify with the inference deadline, retrying UNAVAILABLE while the deadline
  // allows. `client`: the HTTP client's address, passed on as x-skinlesion-client
  // (inference shares its heavy-decode slots fairly by it).
  grpc::Status Classify(const v1::ClassifyRequest& request, const std::string& client,
                        v1::ClassifyResponse* response);

 private:
  class ChannelWatcher;

  void AddCredentials(Upstream upstream, const char* method, grpc::ClientContext& context) const;

  const GatewayOptions options_;
  prometheus::Family<prometheus::Histogram>& upstream_seconds_;
  prometheus::Family<prometheus::Counter>& upstream_errors_;
  prometheus::Family<prometheus::Counter>& upstream_retries_;
  std::vector<std::shared_ptr<grpc::Channel>> inference_channels_;
  std::vector<std::unique_ptr<v1::ClassificationService::Stub>> inference_stubs_;
  std::atomic<uint64_t> next_channel_{0};
  std::unique_ptr<v1::RegistryService::Stub> registry_stub_;
  std::unique_ptr<registry::RegistryClient> registry_client_;  // Same channel.
  std::unique_ptr<v1::TrainerService::Stub> trainer_stub_;
  std::unique_ptr<ChannelWatcher> watcher_;
};

}  // namespace skinlesion::gateway

#endif  // SERVICES_GATEWAY_UPSTREAMS_H_
