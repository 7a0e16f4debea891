#include "services/gateway/gateway.h"

#include <openssl/crypto.h>
#include <openssl/rand.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <cstdio>
#include <filesystem>
#include <list>
#include <map>
#include <mutex>
#include <optional>
#include <regex>
#include <thread>
#include <utility>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "grpcpp/grpcpp.h"
#include "httplib.h"
#include "prometheus/counter.h"
#include "prometheus/gauge.h"
#include "prometheus/histogram.h"
#include "prometheus/text_serializer.h"
#include "services/gateway/api.h"
#include "services/gateway/guarded_server.h"
#include "services/gateway/openapi_json.h"
#include "services/gateway/rate_limiter.h"
#include "skinlesion/common/hash.h"
#include "skinlesion/common/logging.h"
#include "skinlesion/image/format.h"
#include "skinlesion/telemetry/grpc_channel.h"
#include "skinlesion/telemetry/grpc_health.h"
#include "skinlesion/v1/classification.grpc.pb.h"
#include "skinlesion/v1/registry.grpc.pb.h"
#include "skinlesion/v1/training.grpc.pb.h"

namespace skinlesion::gateway {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;
using Clock = std::chrono::steady_clock;

// ---------------------------------------------------------------------------
// Routes: one table for registration and for the metric / log labels.

constexpr char kNamePart[] = "([A-Za-z0-9][A-Za-z0-9._-]{0,127})";

struct RouteDef {
  std::string label;    // The pattern as it appears in metrics and logs.
  std::string pattern;  // The expression httplib matches the whole path against.
  std::regex regex;
};

RouteDef MakeRoute(std::string label, std::string pattern) {
  std::regex regex(pattern);
  return {std::move(label), std::move(pattern), std::move(regex)};
}

const std::vector<RouteDef>& Routes() {
  static const auto* routes = new std::vector<RouteDef>{
      MakeRoute("/healthz", "/healthz"),
      MakeRoute("/readyz", "/readyz"),
      MakeRoute("/metrics", "/metrics"),
      MakeRoute("/api/v1/openapi.json", "/api/v1/openapi\\.json"),
      MakeRoute("/api/v1/predictions", "/api/v1/predictions"),
      MakeRoute("/api/v1/models", "/api/v1/models"),
      MakeRoute("/api/v1/models/{name}/versions/{version}",
                absl::StrCat("/api/v1/models/", kNamePart, "/versions/([0-9]{1,16})")),
      MakeRoute(
          "/api/v1/models/{name}/versions/{version}/files/{file}",
          absl::StrCat("/api/v1/models/", kNamePart, "/versions/([0-9]{1,16})/files/", kNamePart)),
      MakeRoute("/api/v1/models/{name}/aliases/{alias}",
                absl::StrCat("/api/v1/models/", kNamePart, "/aliases/", kNamePart)),
      MakeRoute("/api/v1/jobs", "/api/v1/jobs"),
      MakeRoute("/api/v1/jobs/{id}", absl::StrCat("/api/v1/jobs/", kNamePart)),
      MakeRoute("/api/v1/jobs/{id}/cancel", absl::StrCat("/api/v1/jobs/", kNamePart, "/cancel")),
  };
  return *routes;
}

const RouteDef& FindRoute(const std::string& label) {
  for (const RouteDef& r : Routes()) {
    if (label == r.label) return r;
  }
  SL_CHECK(false) << "no route " << label;
  return Routes()[0];
}

// The label of a request path: a route pattern, "/api/*" (unknown API path) or
// "/*" (the website and everything else).
std::string RouteLabel(const std::string& path) {
  for (const RouteDef& r : Routes()) {
    if (std::regex_match(path, r.regex)) return r.label;
  }
  return absl::StartsWith(path, "/api/") || path == "/api" ? "/api/*" : "/*";
}

bool IsApiPath(const std::string& path) {
  return absl::StartsWith(path, "/api/") || path == "/api";
}

// ---------------------------------------------------------------------------
// Metrics (names fixed by the API contract).

const prometheus::Histogram::BucketBoundaries& LatencyBuckets() {
  static const auto* b = new prometheus::Histogram::BucketBoundaries{
      0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30};
  return *b;
}

struct Metrics {
  explicit Metrics(prometheus::Registry& r)
      : requests(prometheus::BuildCounter()
                     .Name("skinlesion_gateway_requests_total")
                     .Help("HTTP requests answered, by route pattern, method and status code")
                     .Register(r)),
        request_seconds(prometheus::BuildHistogram()
                            .Name("skinlesion_gateway_request_seconds")
                            .Help("HTTP request latency by route pattern")
                            .Register(r)),
        upstream_seconds(prometheus::BuildHistogram()
                             .Name("skinlesion_gateway_upstream_seconds")
                             .Help("gRPC call latency by upstream and method")
                             .Register(r)),
        upstream_errors(prometheus::BuildCounter()
                            .Name("skinlesion_gateway_upstream_errors_total")
                            .Help("Failed gRPC calls by upstream and gRPC code name")
                            .Register(r)),
        upstream_retries(prometheus::BuildCounter()
                             .Name("skinlesion_gateway_upstream_retries_total")
                             .Help("gRPC calls retried after UNAVAILABLE")
                             .Register(r)),
        rate_limited(prometheus::BuildCounter()
                         .Name("skinlesion_gateway_rate_limited_total")
                         .Help("Requests refused by the per-client rate limit")
                         .Register(r)
                         .Add({})),
        inflight(prometheus::BuildGauge()
                     .Name("skinlesion_gateway_inflight_requests")
                     .Help("API requests being handled now")
                     .Register(r)
                     .Add({})),
        upload_bytes(prometheus::BuildHistogram()
                         .Name("skinlesion_gateway_upload_bytes")
                         .Help("Size of the uploaded images")
                         .Register(r)
                         .Add({}, prometheus::Histogram::BucketBoundaries{16e3, 64e3, 256e3, 1e6,
                                                                          2e6, 4e6, 8e6, 16e6})) {
    // Every family is exported from the first scrape on (prometheus-cpp leaves out a
    // family without series): the series dashboards and alerts use start at 0.
    for (const char* u : {"inference", "registry", "trainer"}) {
      upstream_retries.Add({{"upstream", u}});
      for (const char* code : {"UNAVAILABLE", "DEADLINE_EXCEEDED"}) {
        upstream_errors.Add({{"upstream", u}, {"code", code}});
      }
    }
    upstream_seconds.Add({{"upstream", "inference"}, {"method", "Classify"}}, LatencyBuckets());
  }

  prometheus::Family<prometheus::Counter>& requests;
  prometheus::Family<prometheus::Histogram>& request_seconds;
  prometheus::Family<prometheus::Histogram>& upstream_seconds;
  prometheus::Family<prometheus::Counter>& upstream_errors;
  prometheus::Family<prometheus::Counter>& upstream_retries;
  prometheus::Counter& rate_limited;
  prometheus::Gauge& inflight;
  prometheus::Histogram& upload_bytes;
};

// ---------------------------------------------------------------------------
// Small helpers.

std::chrono::system_clock::time_point ToChrono(absl::Time t) { return absl::ToChronoTime(t); }

std::string RandomHex(size_t bytes) {
  std::vector<unsigned char> buffer(bytes);
  SL_CHECK(RAND_bytes(buffer.data(), static_cast<int>(bytes)) == 1) << "RAND_bytes failed";
  static const char kHex[] = "0123456789abcdef";
  std::string out;
  for (unsigned char c : buffer) {
    out.push_back(kHex[c >> 4]);
    out.push_back(kHex[c & 15]);
  }
  return out;
}

// A uniform double in [0, 1) from OpenSSL (jitter must differ between processes).
double RandomUnit() {
  uint64_t v = 0;
  SL_CHECK(RAND_bytes(reinterpret_cast<unsigned char*>(&v), sizeof(v)) == 1);
  return static_cast<double>(v >> 11) / static_cast<double>(uint64_t{1} << 53);
}

std::string Dump(const json& j) { return j.dump(-1, ' ', false, json::error_handler_t::replace); }

void SendJson(httplib::Response& res, int status, const json& body) {
  res.status = status;
  res.set_content(Dump(body), "application/json");
}

void SendError(httplib::Response& res, const ApiError& e) {
  res.status = e.status;
  if (e.retry_after_s > 0) res.set_header("Retry-After", std::to_string(e.retry_after_s));
  if (e.status == 401) res.set_header("WWW-Authenticate", "Bearer realm=\"skinlesion\"");
  res.set_content(Dump(e.ToJson()), "application/json");
}

ApiError Unavailable(const std::string& what) {
  return {
      .status = 503,
      .code = "service_unavailable",
      .message = absl::StrCat("The ", what, " is not configured on this gateway (start it with --",
                              what, "_target)."),
      .retry_after_s = kRetryAfterSeconds};
}

// The media type without parameters, lower case: "image/jpeg; x=y" -> "image/jpeg".
std::string MediaType(const std::string& content_type) {
  std::string t(absl::StripAsciiWhitespace(content_type.substr(0, content_type.find(';'))));
  absl::AsciiStrToLower(&t);
  return t;
}

bool IsImageType(const std::string& media_type) {
  return media_type == "image/jpeg" || media_type == "image/png" || media_type == "image/webp" ||
         media_type == "image/bmp";
}

// The 415 of a prediction whose Content-Type is neither multipart nor an image type
// (checked before the body is read, and again by the handler).
std::optional<ApiError> PredictionTypeError(const std::string& media_type) {
  if (media_type == "multipart/form-data" || IsImageType(media_type)) return std::nullopt;
  return ApiError{
      .status = 415,
      .code = "unsupported_media_type",
      .message = absl::StrCat(
          "Content-Type ", media_type.empty() ? "(none)" : media_type.substr(0, 64),
          " is not supported: send multipart/form-data with an 'image' field, or "
          "image/jpeg, image/png, image/webp or image/bmp.")};
}

ConnectionLimits LimitsOf(const GatewayOptions& o) {
  ConnectionLimits limits;
  limits.max_connections = o.max_connections;
  limits.max_connections_per_client = o.max_connections_per_client;
  limits.min_threads = o.threads;
  limits.header_timeout = o.header_timeout;
  limits.body_timeout = o.body_timeout;
  // Room for the multipart framing around an image of max_upload_bytes; the image
  // itself is checked against the limit in Predict.
  limits.max_body_bytes = std::max(o.max_upload_bytes + (64 << 10), o.max_json_bytes);
  limits.max_image_bytes = o.max_upload_bytes;
  limits.max_inflight_body_bytes = o.max_inflight_upload_bytes;
  limits.retry_after_s = kRetryAfterSeconds;
  return limits;
}

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

// Keeps the upstream channels polled. gRPC's synchronous client reads a channel's
// sockets only while some call waits on it, and calls fail at once while a channel is
// in TRANSIENT_FAILURE: a reconnect the restarted backend had already accepted was
// noticed seconds late (measured: up to 4 s after a restarted inference was SERVING,
// under load). Waiting on every channel's state changes here keeps them polled and
// asks idle ones to connect.
class ChannelWatcher {
 public:
  explicit ChannelWatcher(std::vector<std::shared_ptr<grpc::Channel>> channels)
      : channels_(std::move(channels)), thread_([this] { Run(); }) {}
  ~ChannelWatcher() {
    stop_ = true;
    thread_.join();
  }
  ChannelWatcher(const ChannelWatcher&) = delete;
  ChannelWatcher& operator=(const ChannelWatcher&) = delete;

 private:
  void Run() {
    grpc::CompletionQueue cq;
    for (size_t i = 0; i < channels_.size(); ++i) Watch(cq, i);
    void* tag = nullptr;
    bool ok = false;
    while (!stop_.load()) {
      const auto r =
          cq.AsyncNext(&tag, &ok, std::chrono::system_clock::now() + std::chrono::milliseconds(100));
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

// Per-request state of the worker thread that runs it (httplib runs a request on
// one pool thread from routing to logging).
struct RequestClock {
  bool active = false;
  Clock::time_point start;
};
thread_local RequestClock tl_request;

double MsSince(Clock::time_point t) {
  return std::chrono::duration<double, std::milli>(Clock::now() - t).count();
}

// Files of model versions (png / json / md only; the weights are skipped) kept in
// memory: versions never change, so a version is downloaded once and verified
// against the sha256 GetVersion lists. Holds the last `capacity` versions.
class VersionFileCache {
 public:
  using Files = std::map<std::string, std::string>;
  explicit VersionFileCache(size_t capacity) : capacity_(capacity) {}

  std::shared_ptr<const Files> Find(const std::string& key) {
    std::lock_guard<std::mutex> lock(mu_);
    for (auto it = entries_.begin(); it != entries_.end(); ++it) {
      if (it->first == key) {
        entries_.splice(entries_.begin(), entries_, it);
        return entries_.front().second;
      }
    }
    return nullptr;
  }
  void Put(const std::string& key, std::shared_ptr<const Files> files) {
    std::lock_guard<std::mutex> lock(mu_);
    entries_.emplace_front(key, std::move(files));
    while (entries_.size() > capacity_) entries_.pop_back();
  }

 private:
  size_t capacity_;
  std::mutex mu_;
  std::list<std::pair<std::string, std::shared_ptr<const Files>>> entries_;
};

}  // namespace

// ---------------------------------------------------------------------------

class Gateway::Impl {
 public:
  explicit Impl(GatewayOptions options)
      : options_(std::move(options)),
        registry_(std::make_shared<prometheus::Registry>()),
        metrics_(*registry_),
        limiter_({.rate = options_.rate_limit_rps, .burst = options_.rate_limit_burst}),
        files_(8),
        server_(LimitsOf(options_), *registry_) {
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
    }
    if (!options_.trainer_target.empty()) {
      watched.push_back(MakeChannel(options_.trainer_target, 0, 4 << 20));
      trainer_stub_ = v1::TrainerService::NewStub(watched.back());
    }
    watcher_ = std::make_unique<ChannelWatcher>(std::move(watched));
    SetUpServer();
  }

  absl::Status Bind() {
    if (options_.port == 0) {
      port_ = server_.bind_to_any_port(options_.host);
    } else if (server_.bind_to_port(options_.host, options_.port)) {
      port_ = options_.port;
    }
    if (port_ <= 0) {
      return absl::UnavailableError(
          absl::StrCat("cannot listen on ", options_.host, ":", options_.port));
    }
    if (!server_.WidenListenBacklog()) {
      return absl::UnavailableError(absl::StrCat("cannot set the listen backlog on ",
                                                 options_.host, ":", port_));
    }
    return absl::OkStatus();
  }
  int port() const { return port_; }

  absl::Status Serve() {
    if (port_ <= 0) return absl::FailedPreconditionError("Bind() first");
    // httplib's stop() only acts on a running server: a Stop() that comes before
    // listen_after_bind() has started is repeated by this watcher until it takes.
    // The watcher sleeps on the condition variable until Stop() or the end of
    // Serve(); only the short window before the server runs is polled (httplib 0.11
    // has no wait_until_ready()).
    bool done = false;  // Guarded by stop_mu_.
    std::thread watcher([&] {
      std::unique_lock<std::mutex> lock(stop_mu_);
      stop_cv_.wait(lock, [&] { return done || stopped_.load(); });
      while (!done && !stop_sent_) {
        lock.unlock();
        Stop();
        lock.lock();
        stop_cv_.wait_for(lock, std::chrono::milliseconds(5), [&] { return done || stop_sent_; });
      }
    });
    const bool clean = server_.listen_after_bind();
    {
      std::lock_guard<std::mutex> lock(stop_mu_);
      done = true;
    }
    stop_cv_.notify_all();
    watcher.join();
    if (!clean && !stopped_.load())
      return absl::InternalError("the HTTP server stopped unexpectedly");
    return absl::OkStatus();
  }

  void Stop() {
    {
      std::lock_guard<std::mutex> lock(stop_mu_);
      stopped_ = true;
      if (!stop_sent_ && server_.is_running()) {
        server_.stop();
        stop_sent_ = true;
      }
    }
    stop_cv_.notify_all();
  }

  prometheus::Registry& registry() { return *registry_; }

 private:
  using Handler = std::function<void(const httplib::Request&, httplib::Response&)>;

  void SetUpServer();
  void Route(const char* method, const char* label, Handler handler);
  void AccessLog(const httplib::Request& req, const httplib::Response& res);
  void AddHeaders(const httplib::Request& req, httplib::Response& res) const;

  // Handlers.
  void Health(const httplib::Request&, httplib::Response& res);
  void Ready(const httplib::Request&, httplib::Response& res);
  void MetricsText(const httplib::Request&, httplib::Response& res);
  void Predict(const httplib::Request& req, httplib::Response& res);
  void ListModels(const httplib::Request& req, httplib::Response& res);
  void ModelCard(const httplib::Request& req, httplib::Response& res);
  void ModelFile(const httplib::Request& req, httplib::Response& res);
  // The version named by the route's model and version captures; false when an error
  // response has been sent.
  bool LookUpVersion(const httplib::Request& req, v1::ModelVersion* version,
                     httplib::Response& res);
  void SetAlias(const httplib::Request& req, httplib::Response& res);
  void SubmitJob(const httplib::Request& req, httplib::Response& res);
  void ListJobs(const httplib::Request& req, httplib::Response& res);
  void GetJob(const httplib::Request& req, httplib::Response& res);
  void CancelJob(const httplib::Request& req, httplib::Response& res);

  // 401 / 403 unless the request carries the gateway's bearer token.
  bool Authorized(const httplib::Request& req, httplib::Response& res) const;

  // One gRPC call with its deadline, timed and counted; `call` does the RPC.
  template <typename Call>
  grpc::Status CallUpstream(Upstream upstream, const char* method, absl::Duration timeout,
                            const Call& call) {
    grpc::ClientContext context;
    context.set_deadline(ToChrono(absl::Now() + timeout));
    if ((upstream == Upstream::kTrainer ||
         (upstream == Upstream::kRegistry && std::string(method) == "SetAlias")) &&
        !options_.upstream_token.empty()) {
      context.AddMetadata("authorization", "Bearer " + options_.upstream_token);
    }
    const auto t0 = Clock::now();
    const grpc::Status status = call(&context);
    Observe(upstream, method, t0, status);
    return status;
  }
  void Observe(Upstream upstream, const char* method, Clock::time_point t0,
               const grpc::Status& status) {
    metrics_.upstream_seconds
        .Add({{"upstream", UpstreamName(upstream)}, {"method", method}}, LatencyBuckets())
        .Observe(std::chrono::duration<double>(Clock::now() - t0).count());
    if (!status.ok()) {
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
      metrics_.upstream_errors
          .Add({{"upstream", UpstreamName(upstream)}, {"code", GrpcCodeName(status.error_code())}})
          .Increment();
    }
  }

  // Classify with the inference deadline, retrying UNAVAILABLE (another channel,
  // exponential backoff with jitter) while the deadline allows.
  // `client`: the HTTP client's address, passed on as x-skinlesion-client (inference
  // shares its heavy-decode slots fairly by it).
  grpc::Status Classify(const v1::ClassifyRequest& request, const std::string& client,
                        v1::ClassifyResponse* response);

  // The png / json / md files of a version (downloaded once, verified).
  absl::StatusOr<std::shared_ptr<const VersionFileCache::Files>> VersionFiles(
      const v1::ModelVersion& version, ApiError* error);

  GatewayOptions options_;
  std::shared_ptr<prometheus::Registry> registry_;
  Metrics metrics_;
  RateLimiter limiter_;
  VersionFileCache files_;
  std::vector<std::shared_ptr<grpc::Channel>> inference_channels_;
  std::vector<std::unique_ptr<v1::ClassificationService::Stub>> inference_stubs_;
  std::atomic<uint64_t> next_channel_{0};
  std::unique_ptr<v1::RegistryService::Stub> registry_stub_;
  std::unique_ptr<v1::TrainerService::Stub> trainer_stub_;
  std::unique_ptr<ChannelWatcher> watcher_;
  GuardedServer server_;
  int port_ = 0;
  std::atomic<bool> stopped_{false};
  std::mutex stop_mu_;
  std::condition_variable stop_cv_;  // Stop() and the end of Serve() notify it.
  bool stop_sent_ = false;  // Guarded by stop_mu_.
  std::mutex log_mu_;
};

void Gateway::Impl::SetUpServer() {
  // Connections, deadlines, body lengths and the in-flight budget: GuardedServer
  // (constructed from LimitsOf(options_)).
  server_.set_tcp_nodelay(true);

  // The website. Explicit types: the ones httplib does not know, and UTF-8 text.
  SL_CHECK(server_.set_mount_point("/", options_.web_root)) << options_.web_root;
  for (const auto& [ext, type] : std::vector<std::pair<std::string, std::string>>{
           {"html", "text/html; charset=utf-8"},
           {"css", "text/css; charset=utf-8"},
           {"js", "text/javascript; charset=utf-8"},
           {"mjs", "text/javascript; charset=utf-8"},
           {"json", "application/json"},
           {"svg", "image/svg+xml"},
           {"png", "image/png"},
           {"jpg", "image/jpeg"},
           {"ico", "image/x-icon"},
           {"webmanifest", "application/manifest+json"},
           {"txt", "text/plain; charset=utf-8"},
           {"md", "text/markdown; charset=utf-8"},
           {"woff2", "font/woff2"}}) {
    server_.set_file_extension_and_mimetype_mapping(ext, type);
  }

  server_.SetPreRoutingHandler([](const httplib::Request& req, httplib::Response& res) {
    tl_request = {.active = true, .start = Clock::now()};
    // Before the body is read: no route takes a form, and a prediction only an image
    // or multipart (httplib would parse a form body itself, and answer 413 over 8 KiB).
    if (req.method == "POST" || req.method == "PUT") {
      const std::string media_type = MediaType(req.get_header_value("Content-Type"));
      std::optional<ApiError> error;
      if (media_type == "application/x-www-form-urlencoded") {
        error = ApiError{.status = 415,
                         .code = "unsupported_media_type",
                         .message = "Forms are not accepted: send JSON (application/json), or "
                                    "an image for a prediction."};
      } else if (req.method == "POST" && req.path == "/api/v1/predictions") {
        error = PredictionTypeError(media_type);
      }
      if (error) {
        SendError(res, *error);
        return httplib::Server::HandlerResponse::Handled;
      }
    }
    return httplib::Server::HandlerResponse::Unhandled;
  });
  // Every response with status >= 400 passes here: fill in the JSON error body when
  // the handler did not (unknown routes, 413 from the payload limit, bad requests
  // httplib refused).
  server_.set_error_handler(
      httplib::Server::HandlerWithResponse([](const httplib::Request& req, httplib::Response& res) {
        if (!res.body.empty()) return httplib::Server::HandlerResponse::Unhandled;
        ApiError e;
        switch (res.status) {
          case 404:
            e = NotFound(IsApiPath(req.path) ? "No such API route." : "No such page.");
            break;
          case 413:
            e = {.status = 413,
                 .code = "payload_too_large",
                 .message = "The request body is too large."};
            break;
          case 400:
            e = BadRequest("The request could not be read (malformed HTTP or multipart body).");
            break;
          case 405:
            e = {.status = 405, .code = "bad_request", .message = "Method not allowed."};
            break;
          case 414:
            e = {.status = 414, .code = "bad_request", .message = "The URI is too long."};
            break;
          case 408:
            e = {.status = 408,
                 .code = "request_timeout",
                 .message = "The request did not arrive in time."};
            break;
          default:
            e = {.status = res.status,
                 .code = res.status >= 500 ? "internal" : "bad_request",
                 .message = absl::StrCat("HTTP ", res.status, ".")};
        }
        SendError(res, e);
        return httplib::Server::HandlerResponse::Handled;
      }));
  server_.set_exception_handler(
      [](const httplib::Request&, httplib::Response& res, std::exception_ptr ep) {
        std::string what = "unknown exception";
        try {
          std::rethrow_exception(ep);
        } catch (const std::exception& e) {
          what = e.what();
        } catch (...) {
        }
        SL_LOG(ERROR) << "handler failed: " << what;
        SendError(res, {.status = 500, .code = "internal", .message = "Internal error."});
      });
  server_.set_post_routing_handler(
      [this](const httplib::Request& req, httplib::Response& res) { AddHeaders(req, res); });
  server_.set_logger(
      [this](const httplib::Request& req, const httplib::Response& res) { AccessLog(req, res); });

  Route("GET", "/healthz", [this](const auto& q, auto& s) { Health(q, s); });
  Route("GET", "/readyz", [this](const auto& q, auto& s) { Ready(q, s); });
  Route("GET", "/metrics", [this](const auto& q, auto& s) { MetricsText(q, s); });
  Route("GET", "/api/v1/openapi.json", [](const httplib::Request&, httplib::Response& res) {
    res.status = 200;
    res.set_content(kOpenApiJson, "application/json");
  });
  Route("POST", "/api/v1/predictions", [this](const auto& q, auto& s) { Predict(q, s); });
  Route("GET", "/api/v1/models", [this](const auto& q, auto& s) { ListModels(q, s); });
  Route("GET", "/api/v1/models/{name}/versions/{version}",
        [this](const auto& q, auto& s) { ModelCard(q, s); });
  Route("GET", "/api/v1/models/{name}/versions/{version}/files/{file}",
        [this](const auto& q, auto& s) { ModelFile(q, s); });
  Route("PUT", "/api/v1/models/{name}/aliases/{alias}",
        [this](const auto& q, auto& s) { SetAlias(q, s); });
  Route("POST", "/api/v1/jobs", [this](const auto& q, auto& s) { SubmitJob(q, s); });
  Route("GET", "/api/v1/jobs", [this](const auto& q, auto& s) { ListJobs(q, s); });
  Route("GET", "/api/v1/jobs/{id}", [this](const auto& q, auto& s) { GetJob(q, s); });
  Route("POST", "/api/v1/jobs/{id}/cancel", [this](const auto& q, auto& s) { CancelJob(q, s); });

  if (!options_.cors_origin.empty()) {
    server_.Options("/api/.*", [](const httplib::Request&, httplib::Response& res) {
      res.status = 204;
      res.set_header("Access-Control-Allow-Methods", "GET, POST, PUT, OPTIONS");
      res.set_header("Access-Control-Allow-Headers", "Authorization, Content-Type");
      res.set_header("Access-Control-Max-Age", "600");
    });
  }
}

void Gateway::Impl::Route(const char* method, const char* label, Handler handler) {
  const bool api = absl::StartsWith(label, "/api/");
  auto wrapped = [this, api, handler = std::move(handler)](const httplib::Request& req,
                                                           httplib::Response& res) {
    if (api && limiter_.enabled()) {
      const absl::Duration wait = limiter_.Admit(req.remote_addr, absl::Now());
      if (wait > absl::ZeroDuration()) {
        metrics_.rate_limited.Increment();
        const int seconds =
            std::max<int>(1, static_cast<int>(std::ceil(absl::ToDoubleSeconds(wait))));
        SendError(res, {.status = 429,
                        .code = "rate_limited",
                        .message = "Too many requests from this address; slow down.",
                        .retry_after_s = seconds});
        return;
      }
    }
    metrics_.inflight.Increment();
    struct Done {
      prometheus::Gauge& g;
      ~Done() { g.Decrement(); }
    } done{metrics_.inflight};
    handler(req, res);
  };
  const std::string& pattern = FindRoute(label).pattern;
  metrics_.requests.Add({{"route", label}, {"method", method}, {"code", "200"}});
  metrics_.request_seconds.Add({{"route", label}}, LatencyBuckets());
  const std::string m = method;
  if (m == "GET") {
    server_.Get(pattern, wrapped);
  } else if (m == "POST") {
    server_.Post(pattern, wrapped);
  } else if (m == "PUT") {
    server_.Put(pattern, wrapped);
  } else {
    SL_CHECK(false) << "method " << m;
  }
}

void Gateway::Impl::AddHeaders(const httplib::Request& req, httplib::Response& res) const {
  res.set_header("Content-Security-Policy",
                 "default-src 'self'; img-src 'self' data: blob:; style-src 'self'; "
                 "script-src 'self'; frame-ancestors 'none'; base-uri 'none'; "
                 "form-action 'self'");
  res.set_header("X-Content-Type-Options", "nosniff");
  res.set_header("X-Frame-Options", "DENY");
  res.set_header("Referrer-Policy", "no-referrer");
  if (IsApiPath(req.path)) res.set_header("Cache-Control", "no-store");
  if (!options_.cors_origin.empty()) {
    res.set_header("Access-Control-Allow-Origin", options_.cors_origin);
    res.set_header("Vary", "Origin");
  }
}

void Gateway::Impl::AccessLog(const httplib::Request& req, const httplib::Response& res) {
  const std::string route = RouteLabel(req.path);
  const double ms = tl_request.active ? MsSince(tl_request.start) : 0.0;
  // A client that missed its deadline got 408 (written past httplib).
  const int status = GuardedServer::CurrentRequestTimedOut() ? 408 : res.status;
  tl_request.active = false;
  const std::string method =
      req.method.size() <= 10 &&
              std::all_of(req.method.begin(), req.method.end(),
                          [](char c) { return absl::ascii_isupper(static_cast<unsigned char>(c)); })
          ? req.method
          : "OTHER";
  metrics_.requests
      .Add({{"route", route}, {"method", method}, {"code", std::to_string(status)}})
      .Increment();
  metrics_.request_seconds.Add({{"route", route}}, LatencyBuckets()).Observe(ms / 1000.0);
  // Method, route pattern (never the path's values or the query), status, time.
  const std::string line =
      absl::StrCat(absl::FormatTime("%Y-%m-%dT%H:%M:%E3SZ", absl::Now(), absl::UTCTimeZone()), " ",
                   method, " ", route, " ", status, " ", absl::StrFormat("%.1f", ms), "ms\n");
  std::lock_guard<std::mutex> lock(log_mu_);
  std::FILE* out = options_.access_log != nullptr ? options_.access_log : stderr;
  std::fputs(line.c_str(), out);
  std::fflush(out);
}

bool Gateway::Impl::Authorized(const httplib::Request& req, httplib::Response& res) const {
  if (options_.token.empty()) {
    SendError(res, {.status = 403,
                    .code = "forbidden",
                    .message = "This gateway has no token configured (--token_file or "
                               "SKINLESION_GATEWAY_TOKEN): changes are disabled."});
    return false;
  }
  const std::string header = req.get_header_value("Authorization");
  constexpr absl::string_view kPrefix = "Bearer ";
  bool ok = false;
  if (absl::StartsWith(header, kPrefix)) {
    const std::string given = header.substr(kPrefix.size());
    ok = given.size() == options_.token.size() &&
         CRYPTO_memcmp(given.data(), options_.token.data(), given.size()) == 0;
  }
  if (!ok) {
    SendError(res,
              {.status = 401,
               .code = "unauthorized",
               .message = header.empty() ? "This request needs 'Authorization: Bearer <token>'."
                                         : "Invalid bearer token."});
  }
  return ok;
}

// --- operations --------------------------------------------------------------

void Gateway::Impl::Health(const httplib::Request&, httplib::Response& res) {
  SendJson(res, 200, {{"status", "ok"}});
}

void Gateway::Impl::Ready(const httplib::Request&, httplib::Response& res) {
  int serving = 0;
  const auto t0 = Clock::now();
  const grpc::Status s =
      telemetry::CheckGrpcHealth(inference_channels_[0], "", absl::Seconds(2), &serving);
  Observe(Upstream::kInference, "HealthCheck", t0, s);
  if (s.ok() && serving == telemetry::kHealthServing) {
    SendJson(res, 200, {{"status", "ready"}});
    return;
  }
  SendError(res, {.status = 503,
                  .code = "inference_unavailable",
                  .message = s.ok() ? "The inference service is not serving yet."
                                    : absl::StrCat("The inference service cannot be reached (",
                                                   GrpcCodeName(s.error_code()), ")."),
                  .retry_after_s = kRetryAfterSeconds});
}

void Gateway::Impl::MetricsText(const httplib::Request&, httplib::Response& res) {
  res.status = 200;
  res.set_content(prometheus::TextSerializer().Serialize(registry_->Collect()),
                  "text/plain; version=0.0.4; charset=utf-8");
}

// --- predictions -------------------------------------------------------------

grpc::Status Gateway::Impl::Classify(const v1::ClassifyRequest& request,
                                     const std::string& client, v1::ClassifyResponse* response) {
  const absl::Time deadline = absl::Now() + options_.inference_timeout;
  absl::Duration backoff = options_.retry_backoff;
  for (int attempt = 0;; ++attempt) {
    const size_t i = next_channel_.fetch_add(1) % inference_stubs_.size();
    grpc::ClientContext context;
    context.set_deadline(ToChrono(deadline));
    if (!client.empty()) context.AddMetadata("x-skinlesion-client", client);
    const auto t0 = Clock::now();
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
    metrics_.upstream_retries.Add({{"upstream", "inference"}}).Increment();
  }
}

void Gateway::Impl::Predict(const httplib::Request& req, httplib::Response& res) {
  const Clock::time_point start = tl_request.active ? tl_request.start : Clock::now();
  absl::StatusOr<PredictionQuery> query = ParsePredictionQuery(req.params);
  if (!query.ok()) return SendError(res, BadRequest(std::string(query.status().message())));

  // The image: the multipart field "image", or the raw body.
  const std::string* image = nullptr;
  std::string media_type;
  if (req.is_multipart_form_data()) {
    auto it = req.files.find("image");
    if (it == req.files.end()) {
      return SendError(res, BadRequest("The multipart body has no field named 'image'."));
    }
    if (req.files.count("image") > 1) {
      return SendError(res, BadRequest("The multipart body has more than one 'image' field."));
    }
    media_type = MediaType(it->second.content_type);
    // Browsers label a part they cannot type as application/octet-stream: the bytes
    // are checked below.
    if (!media_type.empty() && media_type != "application/octet-stream" &&
        !IsImageType(media_type)) {
      return SendError(res,
                       {.status = 415,
                        .code = "unsupported_media_type",
                        .message = absl::StrCat("The 'image' part is ", media_type.substr(0, 64),
                                                "; send a JPEG, PNG, WebP or BMP image.")});
    }
    image = &it->second.content;
  } else {
    media_type = MediaType(req.get_header_value("Content-Type"));
    if (std::optional<ApiError> e = PredictionTypeError(media_type)) return SendError(res, *e);
    image = &req.body;
  }
  metrics_.upload_bytes.Observe(static_cast<double>(image->size()));
  if (image->size() > options_.max_upload_bytes) {
    return SendError(res, {.status = 413,
                           .code = "payload_too_large",
                           .message = absl::StrCat("The image is larger than ",
                                                   options_.max_upload_bytes, " bytes.")});
  }
  if (image->empty()) {
    return SendError(res,
                     {.status = 400, .code = "invalid_image", .message = "The image is empty."});
  }
  // The decoder's own signature check (inference reads the header again).
  if (!SniffImageFormat(*image).has_value()) {
    const absl::string_view known = KnownUnsupportedFormat(*image);
    return SendError(res, {.status = 400,
                           .code = "invalid_image",
                           .message = absl::StrCat("The file is not a JPEG, PNG, WebP or BMP image",
                                                   known.empty() ? "" : " (it is ", known,
                                                   known.empty() ? "" : ")", ".")});
  }

  v1::ClassifyRequest request;
  // The image moves into the request instead of being copied (10 MB uploads): the
  // Request is httplib's own non-const object, only handed over as const, and
  // nothing reads the body after this handler.
  request.set_image(std::move(*const_cast<std::string*>(image)));
  request.set_model(query->model);
  request.set_top_k(query->top_k);
  request.set_explain(query->explain);
  v1::ClassifyResponse response;
  const grpc::Status status = Classify(request, req.remote_addr, &response);
  if (!status.ok()) return SendError(res, MapGrpcStatus(Upstream::kInference, status));
  // One probability per class of the model (its own label set); a classifier has two
  // classes at least.
  if (response.probabilities_size() < 2) {
    return SendError(res, {.status = 502,
                           .code = "internal",
                           .message = absl::StrCat("The inference service answered with ",
                                                   response.probabilities_size(),
                                                   " probabilities (a model has two classes at least).")});
  }
  SendJson(res, 200, PredictionJson(response, RandomHex(8), MsSince(start), query->explain));
}

// --- models --------------------------------------------------------------------

absl::StatusOr<std::shared_ptr<const VersionFileCache::Files>> Gateway::Impl::VersionFiles(
    const v1::ModelVersion& version, ApiError* error) {
  const std::string key = absl::StrCat(version.model(), "/", version.version());
  if (auto cached = files_.Find(key)) return cached;
  std::map<std::string, const v1::FileInfo*> wanted;
  for (const v1::FileInfo& f : version.files()) {
    if (IsValidModelFileName(f.path()) && f.size() <= (16 << 20)) wanted[f.path()] = &f;
  }
  auto files = std::make_shared<VersionFileCache::Files>();
  v1::DownloadVersionRequest request;
  request.set_model(version.model());
  request.set_version(version.version());
  const grpc::Status status = CallUpstream(
      Upstream::kRegistry, "DownloadVersion", absl::Seconds(60), [&](grpc::ClientContext* context) {
        auto reader = registry_stub_->DownloadVersion(context, request);
        v1::FileChunk chunk;
        while (reader->Read(&chunk)) {
          if (wanted.count(chunk.path()) == 0) continue;  // Weights etc.
          std::string& data = (*files)[chunk.path()];
          if (chunk.offset() != static_cast<int64_t>(data.size())) {
            context->TryCancel();
            break;
          }
          data += chunk.data();
        }
        return reader->Finish();
      });
  if (!status.ok()) {
    *error = MapGrpcStatus(Upstream::kRegistry, status);
    return absl::UnavailableError(error->message);
  }
  for (const auto& [path, info] : wanted) {
    auto it = files->find(path);
    if (it == files->end() || Sha256Hex(it->second) != info->sha256()) {
      *error = {.status = 502,
                .code = "internal",
                .message = absl::StrCat("The registry sent a damaged copy of ", path, ".")};
      return absl::DataLossError(error->message);
    }
  }
  files_.Put(key, files);
  return std::shared_ptr<const VersionFileCache::Files>(files);
}

void Gateway::Impl::ListModels(const httplib::Request& req, httplib::Response& res) {
  if (!req.params.empty())
    return SendError(res, BadRequest("This route takes no query parameters."));
  if (registry_stub_ == nullptr) return SendError(res, Unavailable("registry"));
  v1::ListModelsResponse models;
  grpc::Status s = CallUpstream(
      Upstream::kRegistry, "ListModels", options_.upstream_timeout,
      [&](grpc::ClientContext* c) { return registry_stub_->ListModels(c, {}, &models); });
  if (!s.ok()) return SendError(res, MapGrpcStatus(Upstream::kRegistry, s));
  // What inference serves (null when it cannot say).
  v1::ListServedModelsResponse served;
  const grpc::Status served_status = CallUpstream(
      Upstream::kInference, "ListServedModels", absl::Seconds(2), [&](grpc::ClientContext* c) {
        return inference_stubs_[0]->ListServedModels(c, {}, &served);
      });
  json out = json::array();
  for (const std::string& name : models.models()) {
    v1::ListVersionsRequest request;
    request.set_model(name);
    v1::ListVersionsResponse versions;
    s = CallUpstream(Upstream::kRegistry, "ListVersions", options_.upstream_timeout,
                     [&](grpc::ClientContext* c) {
                       return registry_stub_->ListVersions(c, request, &versions);
                     });
    if (!s.ok()) return SendError(res, MapGrpcStatus(Upstream::kRegistry, s));
    std::vector<const v1::ModelVersion*> sorted;
    for (const auto& v : versions.versions()) sorted.push_back(&v);
    std::sort(sorted.begin(), sorted.end(),
              [](const auto* a, const auto* b) { return a->version() > b->version(); });
    json aliases = json::object();
    json list = json::array();
    for (const v1::ModelVersion* v : sorted) {
      for (const std::string& a : v->aliases()) aliases[a] = v->version();
      list.push_back(VersionSummaryJson(*v));
    }
    json serving = nullptr;
    if (served_status.ok()) {
      for (const v1::ServedModel& m : served.models()) {
        if (m.model().name() == name) {
          json classes = json::array();
          for (const v1::LesionClass& c : m.classes()) {
            classes.push_back({{"class", c.code()}, {"label", c.name()},
                               {"malignant", c.group() == v1::MALIGNANCY_GROUP_MALIGNANT}});
          }
          serving = {{"version", m.model().version()}, {"ready", m.ready()}, {"classes", std::move(classes)}};
        }
      }
    }
    out.push_back({{"name", name},
                   {"aliases", std::move(aliases)},
                   {"serving", std::move(serving)},
                   {"versions", std::move(list)}});
  }
  SendJson(res, 200, {{"models", std::move(out)}});
}

namespace {

// GetVersion(model, version) for the model routes; false (and the error sent) on
// failure.
template <typename UpstreamFn>
bool GetVersion(UpstreamFn&& upstream, v1::RegistryService::Stub* stub, absl::Duration timeout,
                const std::string& model, const std::string& version_text, v1::ModelVersion* out,
                httplib::Response& res) {
  absl::StatusOr<int64_t> version = ParseVersion(version_text);
  if (!version.ok()) {
    SendError(res, BadRequest(std::string(version.status().message())));
    return false;
  }
  v1::GetVersionRequest request;
  request.set_model(model);
  request.set_version(*version);
  const grpc::Status s =
      upstream(Upstream::kRegistry, "GetVersion", timeout,
               [&](grpc::ClientContext* c) { return stub->GetVersion(c, request, out); });
  if (!s.ok()) {
    SendError(res, MapGrpcStatus(Upstream::kRegistry, s));
    return false;
  }
  return true;
}

}  // namespace

bool Gateway::Impl::LookUpVersion(const httplib::Request& req, v1::ModelVersion* version,
                                  httplib::Response& res) {
  auto upstream = [this](auto u, const char* m, absl::Duration t, const auto& call) {
    return CallUpstream(u, m, t, call);
  };
  return GetVersion(upstream, registry_stub_.get(), options_.upstream_timeout,
                    req.matches[1].str(), req.matches[2].str(), version, res);
}

void Gateway::Impl::ModelCard(const httplib::Request& req, httplib::Response& res) {
  if (registry_stub_ == nullptr) return SendError(res, Unavailable("registry"));
  v1::ModelVersion version;
  if (!LookUpVersion(req, &version, res)) return;
  json metrics = nullptr;
  const bool has_metrics_file =
      std::any_of(version.files().begin(), version.files().end(),
                  [](const v1::FileInfo& f) { return f.path() == "metrics.json"; });
  if (has_metrics_file) {
    ApiError error;
    auto files = VersionFiles(version, &error);
    if (!files.ok()) return SendError(res, error);
    auto it = (*files)->find("metrics.json");
    if (it != (*files)->end()) {
      metrics = json::parse(it->second, nullptr, false);
      if (metrics.is_discarded()) metrics = nullptr;
    }
  } else {
    const json manifest = ManifestOf(version);
    if (manifest.contains("metrics") && manifest["metrics"].is_object())
      metrics = manifest["metrics"];
  }
  SendJson(res, 200, ModelCardJson(version, metrics));
}

void Gateway::Impl::ModelFile(const httplib::Request& req, httplib::Response& res) {
  if (registry_stub_ == nullptr) return SendError(res, Unavailable("registry"));
  const std::string name = req.matches[3].str();
  if (!IsValidModelFileName(name)) {
    return SendError(res, NotFound("Only the .png, .json and .md files of a version are served."));
  }
  v1::ModelVersion version;
  if (!LookUpVersion(req, &version, res)) return;
  ApiError error;
  auto files = VersionFiles(version, &error);
  if (!files.ok()) return SendError(res, error);
  auto it = (*files)->find(name);
  if (it == (*files)->end()) {
    return SendError(res, NotFound(absl::StrCat("Version ", version.version(), " of ",
                                                version.model(), " has no file ", name, ".")));
  }
  const char* type = absl::EndsWith(name, ".png")    ? "image/png"
                     : absl::EndsWith(name, ".json") ? "application/json"
                                                     : "text/markdown; charset=utf-8";
  res.status = 200;
  res.set_content(it->second, type);
}

void Gateway::Impl::SetAlias(const httplib::Request& req, httplib::Response& res) {
  if (!Authorized(req, res)) return;
  if (registry_stub_ == nullptr) return SendError(res, Unavailable("registry"));
  if (req.body.size() > options_.max_json_bytes) {
    return SendError(
        res, {.status = 413, .code = "payload_too_large", .message = "The body is too large."});
  }
  absl::StatusOr<SetAliasBody> body = ParseSetAliasBody(req.body);
  if (!body.ok()) return SendError(res, BadRequest(std::string(body.status().message())));
  v1::SetAliasRequest request;
  request.set_model(req.matches[1].str());
  request.set_alias(req.matches[2].str());
  request.set_version(body->version);
  request.set_reason(body->reason);
  request.set_force(body->force);
  v1::Alias alias;
  const grpc::Status s = CallUpstream(
      Upstream::kRegistry, "SetAlias", options_.upstream_timeout,
      [&](grpc::ClientContext* c) { return registry_stub_->SetAlias(c, request, &alias); });
  if (!s.ok()) return SendError(res, MapGrpcStatus(Upstream::kRegistry, s));
  SendJson(res, 200,
           {{"name", alias.model()}, {"alias", alias.name()}, {"version", alias.version()}});
}

// --- jobs ----------------------------------------------------------------------

void Gateway::Impl::SubmitJob(const httplib::Request& req, httplib::Response& res) {
  if (!Authorized(req, res)) return;
  if (trainer_stub_ == nullptr) return SendError(res, Unavailable("trainer"));
  if (req.body.size() > options_.max_json_bytes) {
    return SendError(
        res, {.status = 413, .code = "payload_too_large", .message = "The body is too large."});
  }
  auto problems_of = [](absl::string_view message) {
    absl::ConsumePrefix(&message, "invalid job config: ");
    std::vector<std::string> problems = absl::StrSplit(message, "; ", absl::SkipEmpty());
    return problems;
  };
  absl::StatusOr<v1::TrainingConfig> config = JobConfigFromJson(req.body);
  if (!config.ok()) {
    ApiError e = BadRequest(std::string(config.status().message()));
    e.problems = problems_of(config.status().message());
    return SendError(res, e);
  }
  v1::SubmitJobRequest request;
  *request.mutable_config() = *std::move(config);
  v1::Job job;
  const grpc::Status s = CallUpstream(
      Upstream::kTrainer, "SubmitJob", options_.upstream_timeout,
      [&](grpc::ClientContext* c) { return trainer_stub_->SubmitJob(c, request, &job); });
  if (!s.ok()) {
    ApiError e = MapGrpcStatus(Upstream::kTrainer, s);
    if (s.error_code() == grpc::StatusCode::INVALID_ARGUMENT)
      e.problems = problems_of(s.error_message());
    return SendError(res, e);
  }
  SendJson(res, 201, {{"job_id", job.id()}});
}

void Gateway::Impl::ListJobs(const httplib::Request& req, httplib::Response& res) {
  if (trainer_stub_ == nullptr) return SendError(res, Unavailable("trainer"));
  absl::StatusOr<std::vector<v1::JobState>> states = ParseJobsQuery(req.params);
  if (!states.ok()) return SendError(res, BadRequest(std::string(states.status().message())));
  v1::ListJobsRequest request;
  for (v1::JobState s : *states) request.add_states(s);
  v1::ListJobsResponse jobs;
  const grpc::Status s = CallUpstream(
      Upstream::kTrainer, "ListJobs", options_.upstream_timeout,
      [&](grpc::ClientContext* c) { return trainer_stub_->ListJobs(c, request, &jobs); });
  if (!s.ok()) return SendError(res, MapGrpcStatus(Upstream::kTrainer, s));
  json out = json::array();
  for (const v1::Job& job : jobs.jobs()) out.push_back(JobJson(job));
  SendJson(res, 200, {{"jobs", std::move(out)}});
}

void Gateway::Impl::GetJob(const httplib::Request& req, httplib::Response& res) {
  if (trainer_stub_ == nullptr) return SendError(res, Unavailable("trainer"));
  if (!req.params.empty())
    return SendError(res, BadRequest("This route takes no query parameters."));
  v1::GetJobRequest request;
  request.set_id(req.matches[1].str());
  v1::Job job;
  grpc::Status s =
      CallUpstream(Upstream::kTrainer, "GetJob", options_.upstream_timeout,
                   [&](grpc::ClientContext* c) { return trainer_stub_->GetJob(c, request, &job); });
  if (!s.ok()) return SendError(res, MapGrpcStatus(Upstream::kTrainer, s));
  // The stored events: WatchJob replays them at once and then waits for new ones,
  // so a live job's stream is read for a short moment only.
  const bool terminal = job.state() == v1::JOB_STATE_SUCCEEDED ||
                        job.state() == v1::JOB_STATE_FAILED ||
                        job.state() == v1::JOB_STATE_CANCELLED;
  v1::WatchJobRequest watch;
  watch.set_id(job.id());
  std::list<v1::JobEvent> events;
  s = CallUpstream(Upstream::kTrainer, "WatchJob",
                   terminal ? options_.upstream_timeout : absl::Milliseconds(150),
                   [&](grpc::ClientContext* c) {
                     auto reader = trainer_stub_->WatchJob(c, watch);
                     v1::JobEvent e;
                     while (reader->Read(&e)) {
                       if (e.event_case() != v1::JobEvent::kProgress) continue;
                       events.push_back(e);
                       if (events.size() > 50) events.pop_front();
                     }
                     return reader->Finish();
                   });
  if (!s.ok() && !(s.error_code() == grpc::StatusCode::DEADLINE_EXCEEDED && !terminal)) {
    return SendError(res, MapGrpcStatus(Upstream::kTrainer, s));
  }
  json out = JobJson(job);
  json list = json::array();
  for (const v1::JobEvent& e : events) list.push_back(JobEventJson(e));
  out["events"] = std::move(list);
  SendJson(res, 200, out);
}

void Gateway::Impl::CancelJob(const httplib::Request& req, httplib::Response& res) {
  if (!Authorized(req, res)) return;
  if (trainer_stub_ == nullptr) return SendError(res, Unavailable("trainer"));
  v1::CancelJobRequest request;
  request.set_id(req.matches[1].str());
  v1::Job job;
  // A running job's processes get their kill grace period: allow for it.
  const grpc::Status s = CallUpstream(
      Upstream::kTrainer, "CancelJob", std::max(options_.upstream_timeout, absl::Seconds(60)),
      [&](grpc::ClientContext* c) { return trainer_stub_->CancelJob(c, request, &job); });
  if (!s.ok()) return SendError(res, MapGrpcStatus(Upstream::kTrainer, s));
  SendJson(res, 200, JobJson(job));
}

// ---------------------------------------------------------------------------

absl::Status ValidateOptions(const GatewayOptions& o) {
  auto bad = [](auto... parts) { return absl::InvalidArgumentError(absl::StrCat(parts...)); };
  if (o.inference_target.empty()) return bad("--inference_target HOST:PORT is required");
  if (o.port < 0 || o.port > 65535) return bad("--port must be in 0..65535, got ", o.port);
  if (o.max_upload_bytes < 1 || o.max_upload_bytes > (size_t{1} << 30)) {
    return bad("--max_upload_bytes must be in 1..1073741824");
  }
  if (o.inference_timeout <= absl::ZeroDuration())
    return bad("--inference_timeout_ms must be >= 1");
  if (o.channels < 1 || o.channels > 64)
    return bad("--channels must be in 1..64, got ", o.channels);
  if (o.retries < 0 || o.retries > 10) return bad("--retries must be in 0..10, got ", o.retries);
  if (o.rate_limit_rps < 0) return bad("--rate_limit_rps must be >= 0 (0: off)");
  if (o.rate_limit_rps > 0 && o.rate_limit_burst < 1) return bad("--rate_limit_burst must be >= 1");
  if (o.max_connections < 1 || o.max_connections > 10000)
    return bad("--max_connections must be in 1..10000, got ", o.max_connections);
  if (o.max_connections_per_client < 0 || o.max_connections_per_client > o.max_connections) {
    return bad("--max_connections_per_client must be in 0..--max_connections (",
               o.max_connections, "), got ", o.max_connections_per_client);
  }
  if (o.threads < 1 || o.threads > o.max_connections) {
    return bad("--threads must be in 1..--max_connections (", o.max_connections, "), got ",
               o.threads);
  }
  if (o.header_timeout < absl::Milliseconds(100) || o.header_timeout > absl::Minutes(10))
    return bad("--header_timeout_ms must be in 100..600000");
  if (o.body_timeout < absl::Milliseconds(100) || o.body_timeout > absl::Hours(1))
    return bad("--body_timeout_ms must be in 100..3600000");
  if (o.max_inflight_upload_bytes < o.max_upload_bytes + (64 << 10)) {
    return bad("--max_inflight_upload_bytes must be at least --max_upload_bytes + 65536 (",
               o.max_upload_bytes + (64 << 10), "), got ", o.max_inflight_upload_bytes);
  }
  if (o.cors_origin.find_first_of("\r\n") != std::string::npos)
    return bad("--cors_origin has a line break");
  std::error_code ec;
  if (o.web_root.empty() || !fs::is_directory(o.web_root, ec)) {
    return bad("--web_root '", o.web_root, "' is not a directory");
  }
  return absl::OkStatus();
}

std::string FindDefaultWebRoot(const std::string& compiled_source_dir) {
  std::error_code ec;
  auto has_web = [&](const fs::path& dir) { return fs::is_directory(dir / "web", ec); };
  const fs::path self = fs::read_symlink("/proc/self/exe", ec);
  if (!ec) {
    fs::path dir = self.parent_path();
    for (int i = 0; i < 6 && !dir.empty(); ++i) {
      // A repository checkout (the build lives inside it).
      if (has_web(dir) && fs::exists(dir / "services" / "gateway", ec))
        return (dir / "web").string();
      if (dir == dir.parent_path()) break;
      dir = dir.parent_path();
    }
  }
  const fs::path cwd = fs::current_path(ec);
  if (!ec && has_web(cwd)) return (cwd / "web").string();
  if (!compiled_source_dir.empty() && has_web(compiled_source_dir)) {
    return (fs::path(compiled_source_dir) / "web").string();
  }
  return "";
}

Gateway::Gateway(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Gateway::~Gateway() {
  if (impl_) impl_->Stop();
}

absl::StatusOr<std::unique_ptr<Gateway>> Gateway::Create(GatewayOptions options) {
  if (absl::Status s = ValidateOptions(options); !s.ok()) return s;
  return std::unique_ptr<Gateway>(new Gateway(std::make_unique<Impl>(std::move(options))));
}

absl::Status Gateway::Bind() { return impl_->Bind(); }
int Gateway::port() const { return impl_->port(); }
absl::Status Gateway::Serve() { return impl_->Serve(); }
void Gateway::Stop() { impl_->Stop(); }
prometheus::Registry& Gateway::metrics_registry() { return impl_->registry(); }

}  // namespace skinlesion::gateway
