// Gateway: the composition of the HTTP server (http_server.h), the upstreams
// (upstreams.h) and the routes (predictions.h, models.h, jobs.h; the operational
// routes /healthz, /readyz, /metrics and the OpenAPI document are here).
#include "services/gateway/gateway.h"

#include <chrono>
#include <filesystem>
#include <utility>

#include "absl/strings/str_cat.h"
#include "prometheus/text_serializer.h"
#include "services/gateway/http_server.h"
#include "services/gateway/jobs.h"
#include "services/gateway/models.h"
#include "services/gateway/openapi_json.h"
#include "services/gateway/predictions.h"
#include "services/gateway/upstreams.h"
#include "skinlesion/telemetry/grpc_health.h"

namespace skinlesion::gateway {

namespace fs = std::filesystem;

class Gateway::Impl {
 public:
  explicit Impl(GatewayOptions options)
      : options_(std::move(options)),
        registry_(std::make_shared<prometheus::Registry>()),
        upstreams_(options_, *registry_),
        predictions_(options_, upstreams_, *registry_),
        models_(options_, upstreams_),
        jobs_(options_, upstreams_),
        server_(options_, *registry_) {
    RegisterOperations();
    predictions_.Register(server_);
    models_.Register(server_);
    jobs_.Register(server_);
  }

  HttpServer& server() { return server_; }
  prometheus::Registry& registry() { return *registry_; }

 private:
  // GET /healthz (the process answers), /readyz (inference is SERVING; else 503
  // inference_unavailable), /metrics (Prometheus text), /api/v1/openapi.json.
  void RegisterOperations() {
    server_.Handle("GET", "/healthz", [](const httplib::Request&) {
      return JsonReply({{"status", "ok"}});
    });
    server_.Handle("GET", "/readyz", [this](const httplib::Request&) { return Ready(); });
    server_.Handle("GET", "/metrics", [this](const httplib::Request&) -> absl::StatusOr<Reply> {
      return Reply{.body = prometheus::TextSerializer().Serialize(registry_->Collect()),
                   .content_type = "text/plain; version=0.0.4; charset=utf-8"};
    });
    server_.Handle("GET", "/api/v1/openapi.json",
                   [](const httplib::Request&) -> absl::StatusOr<Reply> {
                     return Reply{.body = kOpenApiJson};
                   });
  }

  absl::StatusOr<Reply> Ready() {
    int serving = 0;
    const auto t0 = std::chrono::steady_clock::now();
    const grpc::Status s =
        telemetry::CheckGrpcHealth(upstreams_.inference_channel(), "", absl::Seconds(2), &serving);
    upstreams_.Observe(Upstream::kInference, "HealthCheck", t0, s);
    if (s.ok() && serving == telemetry::kHealthServing) return JsonReply({{"status", "ready"}});
    return ToStatus({.status = 503,
                     .code = "inference_unavailable",
                     .message = s.ok() ? "The inference service is not serving yet."
                                       : absl::StrCat("The inference service cannot be reached (",
                                                      GrpcCodeName(s.error_code()), ")."),
                     .retry_after_s = kRetryAfterSeconds});
  }

  // Destroyed in reverse: the server stops before the routes and upstreams go.
  const GatewayOptions options_;
  std::shared_ptr<prometheus::Registry> registry_;
  Upstreams upstreams_;
  Predictions predictions_;
  Models models_;
  Jobs jobs_;
  HttpServer server_;
};

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
    return bad("--max_connections_per_client must be in 0..--max_connections (", o.max_connections,
               "), got ", o.max_connections_per_client);
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
  if (impl_) impl_->server().Stop();
}

absl::StatusOr<std::unique_ptr<Gateway>> Gateway::Create(GatewayOptions options) {
  if (absl::Status s = ValidateOptions(options); !s.ok()) return s;
  return std::unique_ptr<Gateway>(new Gateway(std::make_unique<Impl>(std::move(options))));
}

absl::Status Gateway::Bind() { return impl_->server().Bind(); }
int Gateway::port() const { return impl_->server().port(); }
absl::Status Gateway::Serve() { return impl_->server().Serve(); }
void Gateway::Stop() { impl_->server().Stop(); }
prometheus::Registry& Gateway::metrics_registry() { return impl_->registry(); }

}  // namespace skinlesion::gateway
