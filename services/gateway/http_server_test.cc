// HttpServer's middleware with fake handlers, over real HTTP (httplib::Client):
// reply and error bodies, the token, the rate limit, headers, forms, the route's
// header check, the access log and the request metrics.
#include "services/gateway/http_server.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <memory>
#include <stdexcept>
#include <string>
#include <thread>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "prometheus/text_serializer.h"
#include "skinlesion/testing/testing.h"

namespace skinlesion::gateway {
namespace {

using ::skinlesion::testing::TempDir;
using ::testing::HasSubstr;
using ::testing::Not;
using nlohmann::json;

constexpr char kTestToken[] = "s3cret";

// An HttpServer on a free port, serving on its own thread, with these routes:
//   GET  /api/v1/jobs/{id}   the id back as JSON, or the error its value names
//   PUT  /api/v1/models/{name}/aliases/{alias}  (token) 200 {"ok": true}
//   POST /api/v1/predictions  header check: 415 unless Content-Type is image/png
//   GET  /healthz            200
class ServerUnderTest {
 public:
  explicit ServerUnderTest(GatewayOptions options) {
    options.host = "127.0.0.1";
    options.port = 0;
    options.web_root = dir_.path();
    options.access_log = std::tmpfile();
    log_ = options.access_log;
    server_ = std::make_unique<HttpServer>(options, registry_);
    server_->Handle("GET", "/api/v1/jobs/{id}",
                    [](const httplib::Request& req) -> absl::StatusOr<Reply> {
                      const std::string id = req.matches[1].str();
                      if (id == "missing") return ToStatus(NotFound("No such job."));
                      if (id == "bad") return absl::InvalidArgumentError("bad id");
                      if (id == "boom") return absl::InternalError("secret detail");
                      if (id == "throw") throw std::runtime_error("thrown");
                      if (id == "busy") {
                        return ToStatus({.status = 503,
                                         .code = "service_unavailable",
                                         .message = "Busy.",
                                         .retry_after_s = 3});
                      }
                      return JsonReply({{"id", id}});
                    });
    server_->Handle(
        "PUT", "/api/v1/models/{name}/aliases/{alias}",
        [](const httplib::Request&) { return JsonReply({{"ok", true}}); }, {.needs_token = true});
    server_->Handle(
        "POST", "/api/v1/predictions",
        [this](const httplib::Request&) {
          ++predictions_;
          return JsonReply({{"ok", true}});
        },
        {.check_headers = [](const httplib::Request& req) -> std::optional<ApiError> {
          if (MediaType(req.get_header_value("Content-Type")) == "image/png") return std::nullopt;
          return ApiError{.status = 415, .code = "unsupported_media_type", .message = "PNG only."};
        }});
    server_->Handle("GET", "/healthz",
                    [](const httplib::Request&) { return JsonReply({{"status", "ok"}}); });
    EXPECT_TRUE(server_->Bind().ok());
    thread_ = std::thread([this] { EXPECT_TRUE(server_->Serve().ok()); });
  }
  ~ServerUnderTest() {
    server_->Stop();
    thread_.join();
    std::fclose(log_);
  }

  httplib::Client Client() const { return httplib::Client("127.0.0.1", server_->port()); }
  HttpServer& server() { return *server_; }
  int predictions() const { return predictions_; }
  std::string AccessLog() const {
    std::fflush(log_);
    std::rewind(log_);
    std::string text;
    char buffer[4096];
    for (size_t n; (n = std::fread(buffer, 1, sizeof(buffer), log_)) > 0;) text.append(buffer, n);
    return text;
  }
  std::string Metrics() { return prometheus::TextSerializer().Serialize(registry_.Collect()); }

 private:
  TempDir dir_;
  prometheus::Registry registry_;
  std::FILE* log_ = nullptr;
  std::unique_ptr<HttpServer> server_;
  std::thread thread_;
  std::atomic<int> predictions_{0};
};

GatewayOptions NoRateLimit() {
  GatewayOptions options;
  options.rate_limit_rps = 0;
  options.token = kTestToken;
  return options;
}

json BodyOf(const httplib::Result& r) { return json::parse(r->body, nullptr, false); }

void ExpectErrorBody(const httplib::Result& r, int status, const std::string& code) {
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, status) << r->body;
  EXPECT_EQ(r->get_header_value("Content-Type"), "application/json");
  const json body = BodyOf(r);
  EXPECT_EQ(body.value("code", ""), code) << r->body;
  EXPECT_FALSE(body.value("message", "").empty()) << r->body;
}

TEST(RoutePatternTest, NamesVersionsAndDots) {
  EXPECT_EQ(RoutePattern("/healthz"), "/healthz");
  EXPECT_EQ(RoutePattern("/api/v1/openapi.json"), "/api/v1/openapi\\.json");
  EXPECT_EQ(RoutePattern("/api/v1/jobs/{id}/cancel"),
            "/api/v1/jobs/([A-Za-z0-9][A-Za-z0-9._-]{0,127})/cancel");
  EXPECT_EQ(RoutePattern("/api/v1/models/{name}/versions/{version}"),
            "/api/v1/models/([A-Za-z0-9][A-Za-z0-9._-]{0,127})/versions/([0-9]{1,16})");
}

TEST(MediaTypeTest, DropsParametersAndCase) {
  EXPECT_EQ(MediaType(" Image/JPEG ; q=1"), "image/jpeg");
  EXPECT_EQ(MediaType(""), "");
}

TEST(HttpServerTest, RepliesAndErrorsAreJson) {
  ServerUnderTest s(NoRateLimit());
  auto client = s.Client();
  auto ok = client.Get("/api/v1/jobs/j1");
  ASSERT_TRUE(ok);
  EXPECT_EQ(ok->status, 200);
  EXPECT_EQ(BodyOf(ok)["id"], "j1");

  ExpectErrorBody(client.Get("/api/v1/jobs/missing"), 404, "not_found");
  ExpectErrorBody(client.Get("/api/v1/jobs/bad"), 400, "bad_request");
  EXPECT_EQ(BodyOf(client.Get("/api/v1/jobs/bad"))["message"], "bad id");
  // A status without an ApiError: 500, its details only in the log.
  auto boom = client.Get("/api/v1/jobs/boom");
  ExpectErrorBody(boom, 500, "internal");
  EXPECT_THAT(boom->body, Not(HasSubstr("secret detail")));
  ExpectErrorBody(client.Get("/api/v1/jobs/throw"), 500, "internal");
  auto busy = client.Get("/api/v1/jobs/busy");
  ExpectErrorBody(busy, 503, "service_unavailable");
  EXPECT_EQ(busy->get_header_value("Retry-After"), "3");
  // What no handler answers.
  ExpectErrorBody(client.Get("/api/v1/nothing"), 404, "not_found");
  EXPECT_EQ(BodyOf(client.Get("/api/v1/nothing"))["message"], "No such API route.");
  ExpectErrorBody(client.Get("/no-such-page.html"), 404, "not_found");
}

TEST(HttpServerTest, TokenRoutes) {
  ServerUnderTest s(NoRateLimit());
  auto client = s.Client();
  const std::string path = "/api/v1/models/m/aliases/production";
  auto none = client.Put(path, "{}", "application/json");
  ExpectErrorBody(none, 401, "unauthorized");
  EXPECT_EQ(none->get_header_value("WWW-Authenticate"), "Bearer realm=\"skinlesion\"");
  ExpectErrorBody(client.Put(path, {{"Authorization", "Bearer wrong"}}, "{}", "application/json"),
                  401, "unauthorized");
  auto ok = client.Put(path, {{"Authorization", absl::StrCat("Bearer ", kTestToken)}}, "{}",
                       "application/json");
  ASSERT_TRUE(ok);
  EXPECT_EQ(ok->status, 200);

  GatewayOptions no_token = NoRateLimit();
  no_token.token.clear();
  ServerUnderTest locked(no_token);
  auto locked_client = locked.Client();
  ExpectErrorBody(locked_client.Put(path, {{"Authorization", "Bearer x"}}, "{}", "application/json"),
                  403, "forbidden");
}

TEST(HttpServerTest, RateLimitsApiRoutesOnly) {
  GatewayOptions options = NoRateLimit();
  options.rate_limit_rps = 0.01;
  options.rate_limit_burst = 2;
  ServerUnderTest s(options);
  auto client = s.Client();
  EXPECT_EQ(client.Get("/api/v1/jobs/a")->status, 200);
  EXPECT_EQ(client.Get("/api/v1/jobs/a")->status, 200);
  auto limited = client.Get("/api/v1/jobs/a");
  ExpectErrorBody(limited, 429, "rate_limited");
  EXPECT_FALSE(limited->get_header_value("Retry-After").empty());
  EXPECT_EQ(client.Get("/healthz")->status, 200);
  EXPECT_THAT(s.Metrics(), HasSubstr("skinlesion_gateway_rate_limited_total 1"));
}

TEST(HttpServerTest, SecurityAndCorsHeaders) {
  GatewayOptions options = NoRateLimit();
  options.cors_origin = "https://example.org";
  ServerUnderTest s(options);
  auto client = s.Client();
  auto api = client.Get("/api/v1/jobs/a");
  ASSERT_TRUE(api);
  EXPECT_EQ(api->get_header_value("X-Content-Type-Options"), "nosniff");
  EXPECT_EQ(api->get_header_value("X-Frame-Options"), "DENY");
  EXPECT_THAT(api->get_header_value("Content-Security-Policy"), HasSubstr("default-src 'self'"));
  EXPECT_EQ(api->get_header_value("Cache-Control"), "no-store");
  EXPECT_EQ(api->get_header_value("Access-Control-Allow-Origin"), "https://example.org");
  auto health = client.Get("/healthz");
  ASSERT_TRUE(health);
  EXPECT_FALSE(health->has_header("Cache-Control"));
  auto preflight = client.Options("/api/v1/predictions");
  ASSERT_TRUE(preflight);
  EXPECT_EQ(preflight->status, 204);
  EXPECT_THAT(preflight->get_header_value("Access-Control-Allow-Methods"), HasSubstr("PUT"));
}

TEST(HttpServerTest, FormsAndTheRoutesHeaderCheckComeBeforeTheHandler) {
  ServerUnderTest s(NoRateLimit());
  auto client = s.Client();
  ExpectErrorBody(client.Post("/api/v1/predictions", "a=b", "application/x-www-form-urlencoded"),
                  415, "unsupported_media_type");
  ExpectErrorBody(client.Post("/api/v1/predictions", "GIF89a", "image/gif"), 415,
                  "unsupported_media_type");
  EXPECT_EQ(s.predictions(), 0);
  auto ok = client.Post("/api/v1/predictions", "\x89PNG", "image/png");
  ASSERT_TRUE(ok);
  EXPECT_EQ(ok->status, 200);
  EXPECT_EQ(s.predictions(), 1);
}

TEST(HttpServerTest, AccessLogAndMetricsNameTheRoutePattern) {
  ServerUnderTest s(NoRateLimit());
  auto client = s.Client();
  ASSERT_TRUE(client.Get("/api/v1/jobs/job-1234?x=secret-query"));
  ASSERT_TRUE(client.Get("/api/v1/jobs/missing"));
  ASSERT_TRUE(client.Get("/api/v1/unknown"));
  EXPECT_EQ(s.server().RouteLabel("/api/v1/jobs/j"), "/api/v1/jobs/{id}");
  EXPECT_EQ(s.server().RouteLabel("/index.html"), "/*");
  // The line is written after the response: wait for the third.
  std::string log = s.AccessLog();
  for (int i = 0; i < 200 && std::count(log.begin(), log.end(), '\n') < 3; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
    log = s.AccessLog();
  }
  EXPECT_THAT(log, HasSubstr(" GET /api/v1/jobs/{id} 200 "));
  EXPECT_THAT(log, HasSubstr(" GET /api/v1/jobs/{id} 404 "));
  EXPECT_THAT(log, HasSubstr(" GET /api/* 404 "));
  EXPECT_THAT(log, Not(HasSubstr("job-1234")));
  EXPECT_THAT(log, Not(HasSubstr("secret-query")));
  const std::string metrics = s.Metrics();
  EXPECT_THAT(metrics, HasSubstr(R"(code="404",method="GET",route="/api/v1/jobs/{id}")"));
  EXPECT_THAT(metrics, HasSubstr("skinlesion_gateway_inflight_requests 0"));
}

}  // namespace
}  // namespace skinlesion::gateway
