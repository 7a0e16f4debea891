#include "services/gateway/http_server.h"

#include <openssl/crypto.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <exception>
#include <thread>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_replace.h"
#include "absl/strings/strip.h"
#include "absl/time/clock.h"
#include "skinlesion/common/logging.h"
#include "skinlesion/telemetry/families.h"

namespace skinlesion::gateway {
namespace {

using nlohmann::json;
using Clock = std::chrono::steady_clock;

std::string DumpJson(const json& j) {
  return j.dump(-1, ' ', false, json::error_handler_t::replace);
}

bool IsApiPath(const std::string& path) {
  return absl::StartsWith(path, "/api/") || path == "/api";
}

ConnectionLimits LimitsOf(const GatewayOptions& o) {
  ConnectionLimits limits;
  limits.max_connections = o.max_connections;
  limits.max_connections_per_client = o.max_connections_per_client;
  limits.min_threads = o.threads;
  limits.header_timeout = o.header_timeout;
  limits.body_timeout = o.body_timeout;
  // Room for the multipart framing around an image of max_upload_bytes; the image
  // itself is checked against the limit by the prediction handler.
  limits.max_body_bytes = std::max(o.max_upload_bytes + (64 << 10), o.max_json_bytes);
  limits.max_image_bytes = o.max_upload_bytes;
  limits.max_inflight_body_bytes = o.max_inflight_upload_bytes;
  limits.retry_after_s = kRetryAfterSeconds;
  return limits;
}

// The start of the request this worker thread runs (httplib runs a request on one
// thread from routing to logging).
struct RequestClock {
  bool active = false;
  Clock::time_point start;
};
thread_local RequestClock tl_request;

// The JSON error of a response >= 400 that has no body yet.
ApiError ErrorForBodylessStatus(const httplib::Request& req, int status) {
  switch (status) {
    case 404:
      return NotFound(IsApiPath(req.path) ? "No such API route." : "No such page.");
    case 413:
      return {
          .status = 413, .code = "payload_too_large", .message = "The request body is too large."};
    case 400:
      return BadRequest("The request could not be read (malformed HTTP or multipart body).");
    case 405:
      return {.status = 405, .code = "bad_request", .message = "Method not allowed."};
    case 414:
      return {.status = 414, .code = "bad_request", .message = "The URI is too long."};
    case 408:
      return {.status = 408,
              .code = "request_timeout",
              .message = "The request did not arrive in time."};
    default:
      return {.status = status,
              .code = status >= 500 ? "internal" : "bad_request",
              .message = absl::StrCat("HTTP ", status, ".")};
  }
}

}  // namespace

Reply JsonReply(int status, const json& body) {
  return {.status = status, .body = DumpJson(body), .content_type = "application/json"};
}

std::string RoutePattern(const std::string& label) {
  constexpr char kName[] = "([A-Za-z0-9][A-Za-z0-9._-]{0,127})";
  std::string pattern;
  for (size_t i = 0; i < label.size(); ++i) {
    if (label[i] == '{') {
      const size_t end = label.find('}', i);
      SL_CHECK(end != std::string::npos) << "route " << label;
      pattern += label.compare(i, end - i + 1, "{version}") == 0 ? "([0-9]{1,16})" : kName;
      i = end;
    } else if (label[i] == '.') {
      pattern += "\\.";
    } else {
      pattern += label[i];
    }
  }
  return pattern;
}

std::string MediaType(const std::string& content_type) {
  std::string t(absl::StripAsciiWhitespace(content_type.substr(0, content_type.find(';'))));
  absl::AsciiStrToLower(&t);
  return t;
}

void SendError(httplib::Response& res, const ApiError& e) {
  res.status = e.status;
  if (e.retry_after_s > 0) res.set_header("Retry-After", std::to_string(e.retry_after_s));
  if (e.status == 401) res.set_header("WWW-Authenticate", "Bearer realm=\"skinlesion\"");
  res.set_content(DumpJson(e.ToJson()), "application/json");
}

absl::Status RequireNoQuery(const httplib::Request& req) {
  if (req.params.empty()) return absl::OkStatus();
  return ToStatus(BadRequest("This route takes no query parameters."));
}

absl::Status RequireBodyAtMost(const httplib::Request& req, size_t max_bytes) {
  if (req.body.size() <= max_bytes) return absl::OkStatus();
  return ToStatus(
      {.status = 413, .code = "payload_too_large", .message = "The body is too large."});
}

HttpServer::HttpServer(const GatewayOptions& options, prometheus::Registry& registry)
    : options_(options),
      requests_(telemetry::AddCounter(
          registry, "skinlesion_gateway_requests_total",
          "HTTP requests answered, by route pattern, method and status code")),
      request_seconds_(telemetry::AddHistogram(registry, "skinlesion_gateway_request_seconds",
                                               "HTTP request latency by route pattern")),
      rate_limited_(telemetry::AddCounter(registry, "skinlesion_gateway_rate_limited_total",
                                          "Requests refused by the per-client rate limit")
                        .Add({})),
      inflight_(telemetry::AddGauge(registry, "skinlesion_gateway_inflight_requests",
                                    "API requests being handled now")
                    .Add({})),
      limiter_({.rate = options_.rate_limit_rps, .burst = options_.rate_limit_burst}),
      server_(LimitsOf(options_), registry) {
  SetUpWebsite();
  SetUpMiddleware();
}

void HttpServer::SetUpWebsite() {
  // Explicit types: the ones httplib does not know, and UTF-8 text.
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
}

void HttpServer::SetUpMiddleware() {
  server_.set_tcp_nodelay(true);
  server_.SetPreRoutingHandler([this](const httplib::Request& req, httplib::Response& res) {
    tl_request = {.active = true, .start = Clock::now()};
    if (std::optional<ApiError> error = CheckHeaders(req)) {
      SendError(res, *error);
      return httplib::Server::HandlerResponse::Handled;
    }
    return httplib::Server::HandlerResponse::Unhandled;
  });
  server_.set_error_handler(
      httplib::Server::HandlerWithResponse([](const httplib::Request& req, httplib::Response& res) {
        if (!res.body.empty()) return httplib::Server::HandlerResponse::Unhandled;
        SendError(res, ErrorForBodylessStatus(req, res.status));
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
  if (!options_.cors_origin.empty()) {
    server_.Options("/api/.*", [](const httplib::Request&, httplib::Response& res) {
      res.status = 204;
      res.set_header("Access-Control-Allow-Methods", "GET, POST, PUT, OPTIONS");
      res.set_header("Access-Control-Allow-Headers", "Authorization, Content-Type");
      res.set_header("Access-Control-Max-Age", "600");
    });
  }
}

void HttpServer::Handle(const std::string& method, const std::string& label, Handler handler,
                        RouteOptions options) {
  const std::string pattern = RoutePattern(label);
  routes_.push_back(std::make_unique<Route>(Route{.label = label,
                                                  .method = method,
                                                  .regex = std::regex(pattern),
                                                  .options = std::move(options)}));
  const Route& route = *routes_.back();
  requests_.Add({{"route", label}, {"method", method}, {"code", "200"}});
  request_seconds_.Add({{"route", label}}, telemetry::RequestSecondsBuckets());
  auto run = [this, &route, handler = std::move(handler)](const httplib::Request& req,
                                                          httplib::Response& res) {
    Run(route, handler, req, res);
  };
  if (method == "GET") {
    server_.Get(pattern, run);
  } else if (method == "POST") {
    server_.Post(pattern, run);
  } else if (method == "PUT") {
    server_.Put(pattern, run);
  } else {
    SL_CHECK(false) << "method " << method;
  }
}

std::optional<ApiError> HttpServer::CheckHeaders(const httplib::Request& req) const {
  if (req.method != "POST" && req.method != "PUT") return std::nullopt;
  // No route takes a form (httplib would parse a form body itself, and answer 413
  // over 8 KiB).
  if (MediaType(req.get_header_value("Content-Type")) == "application/x-www-form-urlencoded") {
    return ApiError{.status = 415,
                    .code = "unsupported_media_type",
                    .message =
                        "Forms are not accepted: send JSON (application/json), or "
                        "an image for a prediction."};
  }
  for (const auto& route : routes_) {
    if (route->options.check_headers && route->method == req.method &&
        std::regex_match(req.path, route->regex)) {
      return route->options.check_headers(req);
    }
  }
  return std::nullopt;
}

void HttpServer::Run(const Route& route, const Handler& handler, const httplib::Request& req,
                     httplib::Response& res) {
  const bool api = absl::StartsWith(route.label, "/api/");
  if (api && limiter_.enabled()) {
    const absl::Duration wait = limiter_.Admit(req.remote_addr, absl::Now());
    if (wait > absl::ZeroDuration()) {
      rate_limited_.Increment();
      const int seconds =
          std::max<int>(1, static_cast<int>(std::ceil(absl::ToDoubleSeconds(wait))));
      return SendError(res, {.status = 429,
                             .code = "rate_limited",
                             .message = "Too many requests from this address; slow down.",
                             .retry_after_s = seconds});
    }
  }
  inflight_.Increment();
  struct Done {
    prometheus::Gauge& gauge;
    ~Done() { gauge.Decrement(); }
  } done{inflight_};
  if (route.options.needs_token) {
    if (std::optional<ApiError> refused = Authorize(req)) return SendError(res, *refused);
  }
  absl::StatusOr<Reply> reply = handler(req);
  if (!reply.ok()) {
    const ApiError error = ToApiError(reply.status());
    if (error.status == 500) SL_LOG(ERROR) << route.label << ": " << reply.status();
    return SendError(res, error);
  }
  res.status = reply->status;
  res.set_content(std::move(reply->body), reply->content_type);
}

std::optional<ApiError> HttpServer::Authorize(const httplib::Request& req) const {
  if (options_.token.empty()) {
    return ApiError{.status = 403,
                    .code = "forbidden",
                    .message =
                        "This gateway has no token configured (--token_file or "
                        "SKINLESION_GATEWAY_TOKEN): changes are disabled."};
  }
  const std::string header = req.get_header_value("Authorization");
  constexpr absl::string_view kPrefix = "Bearer ";
  if (absl::StartsWith(header, kPrefix)) {
    const std::string given = header.substr(kPrefix.size());
    if (given.size() == options_.token.size() &&
        CRYPTO_memcmp(given.data(), options_.token.data(), given.size()) == 0) {
      return std::nullopt;
    }
  }
  return ApiError{.status = 401,
                  .code = "unauthorized",
                  .message = header.empty() ? "This request needs 'Authorization: Bearer <token>'."
                                            : "Invalid bearer token."};
}

void HttpServer::AddHeaders(const httplib::Request& req, httplib::Response& res) const {
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

std::string HttpServer::RouteLabel(const std::string& path) const {
  for (const auto& route : routes_) {
    if (std::regex_match(path, route->regex)) return route->label;
  }
  return IsApiPath(path) ? "/api/*" : "/*";
}

Clock::time_point HttpServer::RequestStart() {
  return tl_request.active ? tl_request.start : Clock::now();
}

void HttpServer::AccessLog(const httplib::Request& req, const httplib::Response& res) {
  const std::string route = RouteLabel(req.path);
  const double ms =
      tl_request.active
          ? std::chrono::duration<double, std::milli>(Clock::now() - tl_request.start).count()
          : 0.0;
  // A client that missed its deadline got 408 (written past httplib).
  const int status = GuardedServer::CurrentRequestTimedOut() ? 408 : res.status;
  tl_request.active = false;
  const std::string method =
      req.method.size() <= 10 &&
              std::all_of(req.method.begin(), req.method.end(),
                          [](char c) { return absl::ascii_isupper(static_cast<unsigned char>(c)); })
          ? req.method
          : "OTHER";
  requests_.Add({{"route", route}, {"method", method}, {"code", std::to_string(status)}})
      .Increment();
  request_seconds_.Add({{"route", route}}, telemetry::RequestSecondsBuckets()).Observe(ms / 1000.0);
  // Method, route pattern (never the path's values or the query), status, time.
  const std::string line =
      absl::StrCat(absl::FormatTime("%Y-%m-%dT%H:%M:%E3SZ", absl::Now(), absl::UTCTimeZone()), " ",
                   method, " ", route, " ", status, " ", absl::StrFormat("%.1f", ms), "ms\n");
  absl::MutexLock lock(&log_mu_);
  std::FILE* out = options_.access_log != nullptr ? options_.access_log : stderr;
  std::fputs(line.c_str(), out);
  std::fflush(out);
}

absl::Status HttpServer::Bind() {
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
    return absl::UnavailableError(
        absl::StrCat("cannot set the listen backlog on ", options_.host, ":", port_));
  }
  return absl::OkStatus();
}

absl::Status HttpServer::Serve() {
  if (port_ <= 0) return absl::FailedPreconditionError("Bind() first");
  // httplib's stop() only acts on a running server: a Stop() that comes before
  // listen_after_bind() has started is repeated by this watcher until it takes.
  // The watcher sleeps on the condition variable until Stop() or the end of
  // Serve(); only the short window before the server runs is polled (httplib 0.11
  // has no wait_until_ready()).
  bool done = false;  // Guarded by stop_mu_.
  std::thread watcher([&] {
    absl::MutexLock lock(&stop_mu_);
    const auto stop_asked = [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(stop_mu_) { return done || stopped_.load(); };
    const auto settled = [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(stop_mu_) { return done || stop_sent_; };
    stop_mu_.Await(absl::Condition(&stop_asked));
    while (!settled()) {
      stop_mu_.Unlock();
      Stop();
      stop_mu_.Lock();
      stop_mu_.AwaitWithTimeout(absl::Condition(&settled), absl::Milliseconds(5));
    }
  });
  const bool clean = server_.listen_after_bind();
  {
    absl::MutexLock lock(&stop_mu_);
    done = true;  // Wakes the watcher (its conditions).
  }
  watcher.join();
  if (!clean && !stopped_.load())
    return absl::InternalError("the HTTP server stopped unexpectedly");
  return absl::OkStatus();
}

void HttpServer::Stop() {
  absl::MutexLock lock(&stop_mu_);  // Its release wakes Serve()'s watcher.
  stopped_ = true;
  if (!stop_sent_ && server_.is_running()) {
    server_.stop();
    stop_sent_ = true;
  }
}

}  // namespace skinlesion::gateway
