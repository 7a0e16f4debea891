// MetricsHttpServer (a real socket) and the gRPC metrics (by hand and through a
// real server's interceptor).
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "gmock/gmock.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "prometheus/registry.h"
#include "prometheus/text_serializer.h"
#include "skinlesion/telemetry/families.h"
#include "skinlesion/telemetry/grpc_channel.h"
#include "skinlesion/telemetry/grpc_health.h"
#include "skinlesion/telemetry/grpc_metrics.h"
#include "skinlesion/telemetry/metrics_http.h"
#include "skinlesion/v1/registry.grpc.pb.h"

namespace skinlesion::telemetry {
namespace {

using ::testing::HasSubstr;

// ---------------------------------------------------------------- /metrics

// One HTTP exchange with 127.0.0.1:port; returns the whole response.
std::string HttpExchange(int port, const std::string& request) {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_port = htons(static_cast<uint16_t>(port));
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (connect(fd, reinterpret_cast<sockaddr*>(&address), sizeof(address)) != 0) {
    close(fd);
    return "connect failed";
  }
  send(fd, request.data(), request.size(), MSG_NOSIGNAL);
  std::string response;
  char buffer[4096];
  ssize_t n;
  while ((n = recv(fd, buffer, sizeof(buffer), 0)) > 0) response.append(buffer, n);
  close(fd);
  return response;
}

TEST(MetricsHttpServerTest, ServesPrometheusTextAtMetrics) {
  auto registry = std::make_shared<prometheus::Registry>();
  GrpcMetrics metrics(*registry);
  metrics.Record("svc", "Method", grpc::StatusCode::NOT_FOUND, 0.01);
  auto server = MetricsHttpServer::Start("127.0.0.1", 0, registry);
  ASSERT_TRUE(server.ok()) << server.status();
  const int port = (*server)->port();
  ASSERT_GT(port, 0);

  const std::string ok = HttpExchange(port, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
  EXPECT_THAT(ok, ::testing::StartsWith("HTTP/1.1 200 OK\r\n"));
  EXPECT_THAT(ok, HasSubstr("Content-Type: text/plain; version=0.0.4"));
  EXPECT_THAT(ok, HasSubstr("skinlesion_grpc_requests_total{code=\"NOT_FOUND\",method=\"Method\","
                            "service=\"svc\"} 1"));
  EXPECT_THAT(ok, HasSubstr("skinlesion_grpc_request_duration_seconds_bucket"));
  // Content-Length matches the body.
  const size_t header_end = ok.find("\r\n\r\n");
  ASSERT_NE(header_end, std::string::npos);
  EXPECT_THAT(ok, HasSubstr(absl::StrCat("Content-Length: ", ok.size() - header_end - 4, "\r\n")));

  EXPECT_THAT(HttpExchange(port, "GET /metrics?x=1 HTTP/1.0\r\n\r\n"),
              ::testing::StartsWith("HTTP/1.1 200 OK"));
  EXPECT_THAT(HttpExchange(port, "GET / HTTP/1.1\r\n\r\n"),
              ::testing::StartsWith("HTTP/1.1 404 Not Found"));
  EXPECT_THAT(HttpExchange(port, "POST /metrics HTTP/1.1\r\n\r\n"),
              ::testing::StartsWith("HTTP/1.1 405"));
  EXPECT_THAT(HttpExchange(port, "nonsense\r\n\r\n"), ::testing::StartsWith("HTTP/1.1 400"));
  const std::string head = HttpExchange(port, "HEAD /metrics HTTP/1.1\r\n\r\n");
  EXPECT_THAT(head, ::testing::EndsWith("\r\n\r\n"));

  // The port is taken while the server runs.
  auto second = MetricsHttpServer::Start("127.0.0.1", port, registry);
  EXPECT_EQ(second.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(std::string(second.status().message()), HasSubstr("cannot serve /metrics on"));
  EXPECT_EQ(MetricsHttpServer::Start("no such host!", 0, registry).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(MetricFamiliesTest, DeclaresNamedFamiliesWithSharedBuckets) {
  prometheus::Registry registry;
  AddCounter(registry, "x_requests_total", "Requests by outcome").Add({{"outcome", "ok"}}).Increment();
  AddGauge(registry, "x_depth", "Queue depth").Add({}).Set(3);
  AddHistogram(registry, "x_seconds", "Time of x").Add({}, RequestSecondsBuckets()).Observe(0.02);
  const std::string text = prometheus::TextSerializer().Serialize(registry.Collect());
  EXPECT_THAT(text, HasSubstr("# HELP x_requests_total Requests by outcome\n# TYPE x_requests_total counter"));
  EXPECT_THAT(text, HasSubstr("x_requests_total{outcome=\"ok\"} 1"));
  EXPECT_THAT(text, HasSubstr("# TYPE x_depth gauge\nx_depth 3"));
  EXPECT_THAT(text, HasSubstr("x_seconds_bucket{le=\"0.025\"} 1"));
  EXPECT_THAT(text, HasSubstr("x_seconds_bucket{le=\"0.01\"} 0"));
  // Every set rises strictly; the request set spans 0.5 ms to 30 s.
  for (const auto* buckets : {&RequestSecondsBuckets(), &LoadSecondsBuckets(), &JobSecondsBuckets(),
                              &BatchSizeBuckets()}) {
    ASSERT_FALSE(buckets->empty());
    EXPECT_TRUE(std::is_sorted(buckets->begin(), buckets->end()));
    EXPECT_EQ(std::adjacent_find(buckets->begin(), buckets->end()), buckets->end());
  }
  EXPECT_EQ(RequestSecondsBuckets().front(), 0.0005);
  EXPECT_EQ(RequestSecondsBuckets().back(), 30);
}

TEST(GrpcMetricsTest, SplitsMethodNamesAndNamesCodes) {
  EXPECT_EQ(SplitGrpcMethod("/skinlesion.v1.RegistryService/ListModels"),
            std::make_pair(std::string("skinlesion.v1.RegistryService"), std::string("ListModels")));
  EXPECT_EQ(SplitGrpcMethod("odd"), std::make_pair(std::string(), std::string("odd")));
  EXPECT_EQ(SplitGrpcMethod("/x/"), std::make_pair(std::string(), std::string("/x/")));
  EXPECT_EQ(GrpcCodeName(grpc::StatusCode::UNAUTHENTICATED), "UNAUTHENTICATED");
  EXPECT_EQ(GrpcCodeName(static_cast<grpc::StatusCode>(42)), "42");
}

// A service whose ListModels fails with NOT_FOUND, served with the interceptor.
class FailingRegistry : public v1::RegistryService::Service {
  grpc::Status ListModels(grpc::ServerContext*, const v1::ListModelsRequest*,
                          v1::ListModelsResponse*) override {
    return grpc::Status(grpc::StatusCode::NOT_FOUND, "nothing here");
  }
};

// A listener that accepts and at once closes every connection (a backend that is
// not up yet, from gRPC's side: each connection attempt fails), counting them.
class ClosingListener {
 public:
  ClosingListener() {
    fd_ = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof(addr);
    EXPECT_EQ(::bind(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
    EXPECT_EQ(::listen(fd_, 16), 0);
    EXPECT_EQ(::getsockname(fd_, reinterpret_cast<sockaddr*>(&addr), &len), 0);
    port_ = ntohs(addr.sin_port);
    thread_ = std::thread([this] {
      for (;;) {
        const int c = ::accept(fd_, nullptr, nullptr);
        if (c < 0) return;
        {
          std::lock_guard<std::mutex> lock(mu_);
          times_.push_back(std::chrono::steady_clock::now());
        }
        ::close(c);
      }
    });
  }
  ~ClosingListener() {
    ::shutdown(fd_, SHUT_RDWR);
    ::close(fd_);
    thread_.join();
  }
  int port() const { return port_; }
  // Seconds between consecutive connection attempts.
  std::vector<double> Gaps() {
    std::lock_guard<std::mutex> lock(mu_);
    std::vector<double> gaps;
    for (size_t i = 1; i < times_.size(); ++i) {
      gaps.push_back(std::chrono::duration<double>(times_[i] - times_[i - 1]).count());
    }
    return gaps;
  }

 private:
  int fd_ = -1;
  int port_ = 0;
  std::mutex mu_;
  std::vector<std::chrono::steady_clock::time_point> times_;
  std::thread thread_;
};

// The gaps between the connection attempts a channel makes in `window_ms` to a backend
// that fails them all, with the client calling every 50 ms.
std::vector<double> AttemptGaps(bool fast, int window_ms) {
  ClosingListener listener;
  grpc::ChannelArguments args;
  if (fast) SetFastReconnect(args);
  auto channel = grpc::CreateCustomChannel(absl::StrCat("127.0.0.1:", listener.port()),
                                           grpc::InsecureChannelCredentials(), args);
  const auto end = std::chrono::steady_clock::now() + std::chrono::milliseconds(window_ms);
  while (std::chrono::steady_clock::now() < end) {
    int serving = 0;
    EXPECT_FALSE(CheckGrpcHealth(channel, "", absl::Milliseconds(50), &serving).ok());
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  return listener.Gaps();
}

// gRPC's default backoff waits 1 s, then 1.6 s, 2.56 s, ... (up to 120 s) between
// attempts; SetFastReconnect 100 ms, then 1 s: never more than about a second apart,
// so a backend that comes back is used within about a second.
TEST(GrpcChannelTest, FastReconnectRetriesWithinASecond) {
  const std::vector<double> fast = AttemptGaps(true, 3500);
  const std::vector<double> standard = AttemptGaps(false, 3500);
  const std::string text =
      absl::StrCat("fast: ", absl::StrJoin(fast, ", "), "; default: ", absl::StrJoin(standard, ", "));
  ASSERT_GE(fast.size(), 3u) << text;
  EXPECT_LT(fast[0], 0.5) << text;                      // The first retry: 100 ms.
  for (double gap : fast) EXPECT_LT(gap, 1.3) << text;  // 1 s + 20% jitter + margin.
  // gRPC's default: 1 s (-20% jitter) before the first retry, then longer.
  ASSERT_GE(standard.size(), 1u) << text;
  EXPECT_LE(standard.size(), 2u) << text;
  EXPECT_GT(standard[0], 0.75) << text;
}

TEST(GrpcMetricsTest, TheInterceptorRecordsEveryCall) {
  prometheus::Registry registry;
  FailingRegistry service;
  grpc::ServerBuilder builder;
  int port = 0;
  builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port);
  builder.RegisterService(&service);
  std::vector<std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface>> factories;
  factories.push_back(MakeGrpcMetricsInterceptorFactory(registry));
  builder.experimental().SetInterceptorCreators(std::move(factories));
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  ASSERT_NE(server, nullptr);
  auto stub = v1::RegistryService::NewStub(
      grpc::CreateChannel(absl::StrCat("127.0.0.1:", port), grpc::InsecureChannelCredentials()));
  for (int i = 0; i < 2; ++i) {
    grpc::ClientContext context;
    v1::ListModelsResponse response;
    EXPECT_EQ(stub->ListModels(&context, {}, &response).error_code(), grpc::StatusCode::NOT_FOUND);
  }
  {  // An unimplemented method is recorded too.
    grpc::ClientContext context;
    v1::ModelVersion response;
    EXPECT_EQ(stub->GetVersion(&context, {}, &response).error_code(),
              grpc::StatusCode::UNIMPLEMENTED);
  }
  server->Shutdown();
  const std::string text = prometheus::TextSerializer().Serialize(registry.Collect());
  EXPECT_THAT(text, HasSubstr("skinlesion_grpc_requests_total{code=\"NOT_FOUND\",method=\"ListModels\","
                              "service=\"skinlesion.v1.RegistryService\"} 2"));
  EXPECT_THAT(text, HasSubstr("skinlesion_grpc_requests_total{code=\"UNIMPLEMENTED\",method=\"GetVersion\""));
  EXPECT_THAT(text, HasSubstr("skinlesion_grpc_request_duration_seconds_count{method=\"ListModels\","
                              "service=\"skinlesion.v1.RegistryService\"} 2"));
}

}  // namespace
}  // namespace skinlesion::telemetry
