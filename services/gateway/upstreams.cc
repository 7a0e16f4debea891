#include "services/gateway/upstreams.h"

#include <openssl/rand.h>

#include <algorithm>
#include <cstdint>
#include <thread>
#include <utility>

#include "absl/strings/str_cat.h"
#include "services/gateway/http_server.h"
#include "skinlesion/common/logging.h"
#include "skinlesion/telemetry/families.h"
#include "skinlesion/telemetry/grpc_channel.h"

namespace skinlesion::gateway {
namespace {

std::shared_ptr<grpc::Channel> MakeChannel(const std::string& target, int index,
                                           int max_send_bytes) {
  grpc::ChannelArguments args;
  // Distinct arguments: distinct subchannels (connections), not one shared one.
  args.SetInt("skinlesion.gateway.channel", index);
  args.SetMaxReceiveMessageSize(32 << 20);
  args.SetMaxSendMessageSize(max_send_bytes);
  // A DNS name with several addresses (a headless Kubernetes Service of inference
  // replicas): spread calls over all of them instead of sticking to the first.
  args.SetLoadBalancingPolicyName("round_robin");
  // A restarted upstream is reconnected within about a second, not after gRPC's
  // default backoff (1 s growing to 120 s).
  telemetry::SetFastReconnect(args);
  return grpc::CreateCustomChannel(target, grpc::InsecureChannelCredentials(), args);
}

// A uniform double in [0, 1) from OpenSSL (jitter must differ between processes).
double RandomUnit() {
  uint64_t v = 0;
  SL_CHECK(RAND_bytes(reinterpret_cast<unsigned char*>(&v), sizeof(v)) == 1);
  return static_cast<double>(v >> 11) / static_cast<double>(uint64_t{1} << 53);
}

ApiError NotConfigured(const std::string& what) {
  return {
      .status = 503,
      .code = "service_unavailable",
      .message = absl::StrCat("The ", what, " is not configured on this gateway (start it with --",
                              what, "_target)."),
      .retry_after_s = kRetryAfterSeconds};
}

}  // namespace

// Keeps the upstream channels polled. gRPC's synchronous client reads a channel's
// sockets only while some call waits on it, and calls fail at once while a channel is
// in TRANSIENT_FAILURE: a reconnect the restarted backend had already accepted was
// noticed seconds late (measured: up to 4 s after a restarted inference was SERVING,
// under load). Waiting on every channel's state changes here keeps them polled and
// asks idle ones to connect.
class Upstreams::ChannelWatcher {
 public:
  explicit ChannelWatcher(std::vector<std::shared_ptr<grpc::Channel>> channels)
      : channels_(std::move(channels)), thread_([this] { Run(); }) {}
  ~ChannelWatcher() {
    stop_ = true;
    thread_.join();
  }

 private:
  void Run() {
    grpc::CompletionQueue cq;
    for (size_t i = 0; i < channels_.size(); ++i) Watch(cq, i);
    void* tag = nullptr;
    bool ok = false;
    while (!stop_.load()) {
      const auto r = cq.AsyncNext(
          &tag, &ok, std::chrono::system_clock::now() + std::chrono::milliseconds(100));
      if (r == grpc::CompletionQueue::GOT_EVENT && !stop_.load()) {
        Watch(cq, reinterpret_cast<uintptr_t>(tag));
      }
    }
    cq.Shutdown();
    while (cq.Next(&tag, &ok)) {
    }
  }
  void Watch(grpc::CompletionQueue& cq, size_t i) {
    const grpc_connectivity_state state = channels_[i]->GetState(/*try_to_connect=*/true);
    channels_[i]->NotifyOnStateChange(
        state, std::chrono::system_clock::now() + std::chrono::milliseconds(500), &cq,
        reinterpret_cast<void*>(static_cast<uintptr_t>(i)));
  }

  std::vector<std::shared_ptr<grpc::Channel>> channels_;
  std::atomic<bool> stop_{false};
  std::thread thread_;
};

absl::Status ApiStatusOf(Upstream upstream, const grpc::Status& status) {
  if (status.ok()) return absl::OkStatus();
  return ToStatus(MapGrpcStatus(upstream, status));
}

Upstreams::Upstreams(const GatewayOptions& options, prometheus::Registry& registry)
    : options_(options),
      upstream_seconds_(telemetry::AddHistogram(registry, "skinlesion_gateway_upstream_seconds",
                                                "gRPC call latency by upstream and method")),
      upstream_errors_(telemetry::AddCounter(registry, "skinlesion_gateway_upstream_errors_total",
                                             "Failed gRPC calls by upstream and gRPC code name")),
      upstream_retries_(telemetry::AddCounter(registry, "skinlesion_gateway_upstream_retries_total",
                                              "gRPC calls retried after UNAVAILABLE")) {
  // Every family is exported from the first scrape on (prometheus-cpp leaves out a
  // family without series): the series dashboards and alerts use start at 0.
  for (const char* u : {"inference", "registry", "trainer"}) {
    upstream_retries_.Add({{"upstream", u}});
    for (const char* code : {"UNAVAILABLE", "DEADLINE_EXCEEDED"}) {
      upstream_errors_.Add({{"upstream", u}, {"code", code}});
    }
  }
  upstream_seconds_.Add({{"upstream", "inference"}, {"method", "Classify"}},
                        telemetry::RequestSecondsBuckets());

  const int max_send =
      static_cast<int>(std::min<size_t>(options_.max_upload_bytes + (1 << 20), 1u << 30));
  for (int i = 0; i < options_.channels; ++i) {
    auto channel = MakeChannel(options_.inference_target, i, max_send);
    inference_channels_.push_back(channel);
    inference_stubs_.push_back(v1::ClassificationService::NewStub(channel));
  }
  std::vector<std::shared_ptr<grpc::Channel>> watched = inference_channels_;
  if (!options_.registry_target.empty()) {
    watched.push_back(MakeChannel(options_.registry_target, 0, 4 << 20));
    registry_stub_ = v1::RegistryService::NewStub(watched.back());
    // The version files (Models::VersionFiles, ReadFiles): 60 s per download, no
    // credentials (the token goes with SetAlias only).
    registry_client_ = std::make_unique<registry::RegistryClient>(
        watched.back(), registry::RegistryClientOptions{.deadline = options_.upstream_timeout,
                                                        .download_deadline = absl::Seconds(60)});
  }
  if (!options_.trainer_target.empty()) {
    watched.push_back(MakeChannel(options_.trainer_target, 0, 4 << 20));
    trainer_stub_ = v1::TrainerService::NewStub(watched.back());
  }
  watcher_ = std::make_unique<ChannelWatcher>(std::move(watched));
}

Upstreams::~Upstreams() = default;

absl::Status Upstreams::RequireRegistry() const {
  return registry_stub_ != nullptr ? absl::OkStatus() : ToStatus(NotConfigured("registry"));
}

absl::Status Upstreams::RequireTrainer() const {
  return trainer_stub_ != nullptr ? absl::OkStatus() : ToStatus(NotConfigured("trainer"));
}

void Upstreams::AddCredentials(Upstream upstream, const char* method,
                               grpc::ClientContext& context) const {
  if ((upstream == Upstream::kTrainer ||
       (upstream == Upstream::kRegistry && std::string(method) == "SetAlias")) &&
      !options_.upstream_token.empty()) {
    context.AddMetadata("authorization", "Bearer " + options_.upstream_token);
  }
}

void Upstreams::Observe(Upstream upstream, const char* method,
                        std::chrono::steady_clock::time_point t0, const grpc::Status& status) {
  upstream_seconds_
      .Add({{"upstream", UpstreamName(upstream)}, {"method", method}},
           telemetry::RequestSecondsBuckets())
      .Observe(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  if (status.ok()) return;
  switch (status.error_code()) {
    case grpc::StatusCode::INVALID_ARGUMENT:
    case grpc::StatusCode::NOT_FOUND:
    case grpc::StatusCode::FAILED_PRECONDITION:
    case grpc::StatusCode::ALREADY_EXISTS:
    case grpc::StatusCode::OUT_OF_RANGE:
      break;  // The client's mistake, answered as such.
    default:
      SL_LOG(WARNING) << UpstreamName(upstream) << " " << method << ": "
                      << GrpcCodeName(status.error_code()) << ": " << status.error_message();
  }
  upstream_errors_
      .Add({{"upstream", UpstreamName(upstream)}, {"code", GrpcCodeName(status.error_code())}})
      .Increment();
}

grpc::Status Upstreams::Classify(const v1::ClassifyRequest& request, const std::string& client,
                                 v1::ClassifyResponse* response) {
  const absl::Time deadline = absl::Now() + options_.inference_timeout;
  absl::Duration backoff = options_.retry_backoff;
  for (int attempt = 0;; ++attempt) {
    const size_t i = next_channel_.fetch_add(1) % inference_stubs_.size();
    grpc::ClientContext context;
    context.set_deadline(absl::ToChronoTime(deadline));
    if (!client.empty()) context.AddMetadata("x-skinlesion-client", client);
    const auto t0 = std::chrono::steady_clock::now();
    response->Clear();
    const grpc::Status status = inference_stubs_[i]->Classify(&context, request, response);
    Observe(Upstream::kInference, "Classify", t0, status);
    if (status.ok() || status.error_code() != grpc::StatusCode::UNAVAILABLE ||
        attempt >= options_.retries) {
      return status;
    }
    // Full backoff in [0.5, 1.5) x, doubling; only if the deadline leaves room for it.
    const absl::Duration sleep = backoff * (0.5 + RandomUnit());
    if (absl::Now() + sleep >= deadline) return status;
    absl::SleepFor(sleep);
    backoff *= 2;
    upstream_retries_.Add({{"upstream", "inference"}}).Increment();
  }
}

}  // namespace skinlesion::gateway
