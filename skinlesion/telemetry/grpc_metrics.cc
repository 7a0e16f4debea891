#include "skinlesion/telemetry/grpc_metrics.h"

#include <array>
#include <chrono>

#include "absl/strings/str_cat.h"
#include "skinlesion/telemetry/families.h"

namespace skinlesion::telemetry {

GrpcMetrics::GrpcMetrics(prometheus::Registry& registry)
    : requests_(telemetry::AddCounter(registry, "skinlesion_grpc_requests_total",
                                      "gRPC calls, by service, method and status code")),
      duration_(telemetry::AddHistogram(registry, "skinlesion_grpc_request_duration_seconds",
                                        "Wall time of gRPC calls, by service and method")) {}

void GrpcMetrics::Record(absl::string_view service, absl::string_view method, grpc::StatusCode code,
                         double seconds) {
  requests_
      .Add({{"service", std::string(service)},
            {"method", std::string(method)},
            {"code", GrpcCodeName(code)}})
      .Increment();
  duration_
      .Add({{"service", std::string(service)}, {"method", std::string(method)}},
           RequestSecondsBuckets())
      .Observe(seconds);
}

std::pair<std::string, std::string> SplitGrpcMethod(absl::string_view full_method) {
  if (full_method.size() > 1 && full_method[0] == '/') {
    const size_t slash = full_method.find('/', 1);
    if (slash != absl::string_view::npos && slash + 1 < full_method.size()) {
      return {std::string(full_method.substr(1, slash - 1)),
              std::string(full_method.substr(slash + 1))};
    }
  }
  return {"", std::string(full_method)};
}

namespace {

using grpc::experimental::InterceptionHookPoints;

class MetricsInterceptor : public grpc::experimental::Interceptor {
 public:
  MetricsInterceptor(GrpcMetrics* metrics, const char* method)
      : metrics_(metrics), method_(SplitGrpcMethod(method != nullptr ? method : "")),
        start_(std::chrono::steady_clock::now()) {}

  void Intercept(grpc::experimental::InterceptorBatchMethods* methods) override {
    if (methods->QueryInterceptionHookPoint(InterceptionHookPoints::PRE_SEND_STATUS)) {
      metrics_->Record(
          method_.first, method_.second, methods->GetSendStatus().error_code(),
          std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count());
    }
    methods->Proceed();
  }

 private:
  GrpcMetrics* metrics_;
  std::pair<std::string, std::string> method_;
  std::chrono::steady_clock::time_point start_;
};

class MetricsInterceptorFactory : public grpc::experimental::ServerInterceptorFactoryInterface {
 public:
  explicit MetricsInterceptorFactory(prometheus::Registry& registry) : metrics_(registry) {}
  grpc::experimental::Interceptor* CreateServerInterceptor(
      grpc::experimental::ServerRpcInfo* info) override {
    return new MetricsInterceptor(&metrics_, info->method());
  }

 private:
  GrpcMetrics metrics_;
};

}  // namespace

std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface>
MakeGrpcMetricsInterceptorFactory(prometheus::Registry& registry) {
  return std::make_unique<MetricsInterceptorFactory>(registry);
}

}  // namespace skinlesion::telemetry
