// The gateway's HTTP side, apart from what its routes do: the website, the route
// table, and the middleware every API request passes (docs/gateway.md).
//
// A handler gets the request and returns a Reply, or an error as an absl::Status
// (ToStatus(ApiError), or a parser's InvalidArgument: 400; api.h ToApiError). The
// server sends either; handlers never write the response themselves.
//
// In order, for a request:
//  1. GuardedServer (guarded_server.h): connection caps, deadlines, body lengths;
//  2. before the body is read: forms are 415 (every POST / PUT), then the route's
//     own RouteOptions::check_headers (a prediction's Content-Type);
//  3. the per-client rate limit on /api/ routes (429 + Retry-After), then the
//     in-flight gauge for the handler's duration, then the bearer token when the
//     route needs it (403 when none is configured, 401 + WWW-Authenticate when it is missing or
//     wrong), then the handler;
//  4. every response: security headers, Cache-Control: no-store on /api, CORS when
//     configured; a JSON error body {"code", "message"} for any status >= 400 that
//     has no body (unknown routes, httplib's own 400 / 413 / 408 ...), 500 for an
//     exception;
//  5. the access log line (method, route pattern, status, ms; never the path's
//     values, the query or the body) and the request metrics.
//
//   HttpServer server(options, registry);
//   server.Handle("GET", "/api/v1/jobs/{id}", [&](const httplib::Request& req) {...});
//   SL_RETURN_IF_ERROR(server.Bind());  server.Serve();  // ... server.Stop();
#ifndef SERVICES_GATEWAY_HTTP_SERVER_H_
#define SERVICES_GATEWAY_HTTP_SERVER_H_

#include <atomic>
#include <chrono>
#include <functional>
#include <memory>
#include <optional>
#include <regex>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "httplib.h"
#include "nlohmann/json.hpp"
#include "prometheus/counter.h"
#include "prometheus/gauge.h"
#include "prometheus/histogram.h"
#include "prometheus/registry.h"
#include "services/gateway/api.h"
#include "services/gateway/gateway.h"
#include "services/gateway/guarded_server.h"
#include "services/gateway/rate_limiter.h"

namespace skinlesion::gateway {

// A handler's successful answer.
struct Reply {
  int status = 200;
  std::string body;
  std::string content_type = "application/json";
};
Reply JsonReply(int status, const nlohmann::json& body);
inline Reply JsonReply(const nlohmann::json& body) { return JsonReply(200, body); }

using Handler = std::function<absl::StatusOr<Reply>(const httplib::Request&)>;

struct RouteOptions {
  // The gateway's bearer token is required (changes: alias, jobs, cancel).
  bool needs_token = false;
  // Called with the headers only, before the body is read; an error is answered at
  // once and the body is never read.
  std::function<std::optional<ApiError>(const httplib::Request&)> check_headers;
};

// The expression a route label matches: "{version}" is 1-16 digits, any other
// "{x}" a name ([A-Za-z0-9][A-Za-z0-9._-]{0,127}), '.' is literal.
// "/api/v1/jobs/{id}" -> "/api/v1/jobs/([A-Za-z0-9][A-Za-z0-9._-]{0,127})".
std::string RoutePattern(const std::string& label);

// The media type without parameters, lower case: "image/JPEG; x=y" -> "image/jpeg".
std::string MediaType(const std::string& content_type);

// Writes `e` as the response: status, {"code", "message"[, "problems"]}, Retry-After
// when set, WWW-Authenticate for a 401.
void SendError(httplib::Response& res, const ApiError& e);

// 400 bad_request when the request has query parameters.
absl::Status RequireNoQuery(const httplib::Request& req);
// 413 payload_too_large when the body is over `max_bytes` (a JSON body).
absl::Status RequireBodyAtMost(const httplib::Request& req, size_t max_bytes);

class HttpServer {
 public:
  // Uses host, port, web_root, token, the rate limit, cors_origin, access_log and
  // the connection limits of `options`; registers its metrics in `registry`.
  HttpServer(const GatewayOptions& options, prometheus::Registry& registry);
  HttpServer(const HttpServer&) = delete;
  HttpServer& operator=(const HttpServer&) = delete;

  // `method`: "GET", "POST" or "PUT"; `label`: the route pattern (RoutePattern), also
  // its metric and log label. Labels starting with /api/ pass the rate limit. Before
  // Bind().
  void Handle(const std::string& method, const std::string& label, Handler handler,
              RouteOptions options = {});

  // Binds host:port; Unavailable when it cannot.
  absl::Status Bind();
  int port() const { return port_; }
  // Serves until Stop(); returns when every in-flight request has finished.
  absl::Status Serve();
  // Stops accepting; safe from any thread, idempotent, also before Serve().
  void Stop();

  // The label of a request path: a registered route's label, "/api/*" (unknown API
  // path) or "/*" (the website and everything else).
  std::string RouteLabel(const std::string& path) const;

  // On a handler's thread: when the current request's headers arrived.
  static std::chrono::steady_clock::time_point RequestStart();

 private:
  struct Route {
    std::string label;
    std::string method;
    std::regex regex;
    RouteOptions options;
  };

  void SetUpWebsite();
  void SetUpMiddleware();
  // Before the body: 415 for forms and the route's check_headers; nullopt: go on.
  std::optional<ApiError> CheckHeaders(const httplib::Request& req) const;
  // The rate limit, the in-flight gauge and the token, around `handler`.
  void Run(const Route& route, const Handler& handler, const httplib::Request& req,
           httplib::Response& res);
  std::optional<ApiError> Authorize(const httplib::Request& req) const;
  void AddHeaders(const httplib::Request& req, httplib::Response& res) const;
  void AccessLog(const httplib::Request& req, const httplib::Response& res);

  const GatewayOptions options_;
  prometheus::Family<prometheus::Counter>& requests_;
  prometheus::Family<prometheus::Histogram>& request_seconds_;
  prometheus::Counter& rate_limited_;
  prometheus::Gauge& inflight_;
  RateLimiter limiter_;
  std::vector<std::unique_ptr<Route>> routes_;  // In registration order.
  GuardedServer server_;
  int port_ = 0;
  std::atomic<bool> stopped_{false};
  // Stop() and the end of Serve() change stopped_ / stop_sent_ under stop_mu_, which
  // wakes Serve()'s stop watcher.
  absl::Mutex stop_mu_;
  bool stop_sent_ ABSL_GUARDED_BY(stop_mu_) = false;
  absl::Mutex log_mu_;  // One access-log line at a time.
};

}  // namespace skinlesion::gateway

#endif  // SERVICES_GATEWAY_HTTP_SERVER_H_
