// Per-RPC Prometheus metrics for gRPC servers:
//
//   skinlesion_grpc_requests_total{service,method,code}        counter
//   skinlesion_grpc_request_duration_seconds{service,method}   histogram
//
// GrpcMetrics records calls by hand (skinlesion-inference, which also counts per-item
// outcomes of streams); the interceptor factory records every call of a server
// without touching its handlers (registry, trainer):
//
//   std::vector<std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface>> f;
//   f.push_back(MakeGrpcMetricsInterceptorFactory(registry));
//   builder.experimental().SetInterceptorCreators(std::move(f));
//
// The prometheus registry must outlive the server. LibTorch-free.
#ifndef SKINLESION_TELEMETRY_GRPC_METRICS_H_
#define SKINLESION_TELEMETRY_GRPC_METRICS_H_

#include <memory>
#include <string>
#include <utility>

#include "absl/strings/string_view.h"
#include "grpcpp/support/server_interceptor.h"
#include "grpcpp/support/status.h"
#include "prometheus/counter.h"
#include "prometheus/family.h"
#include "prometheus/histogram.h"
#include "prometheus/registry.h"
#include "skinlesion/rpc/status.h"

namespace skinlesion::telemetry {

class GrpcMetrics {
 public:
  explicit GrpcMetrics(prometheus::Registry& registry);
  void Record(absl::string_view service, absl::string_view method, grpc::StatusCode code,
              double seconds);

 private:
  prometheus::Family<prometheus::Counter>& requests_;
  prometheus::Family<prometheus::Histogram>& duration_;
};

// gRPC's canonical name of a code ("OK", "NOT_FOUND", ...); the number for others.
using rpc::GrpcCodeName;

// "/skinlesion.v1.RegistryService/ListModels" -> {"skinlesion.v1.RegistryService",
// "ListModels"}; a name without that shape -> {"", name}.
std::pair<std::string, std::string> SplitGrpcMethod(absl::string_view full_method);

std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface>
MakeGrpcMetricsInterceptorFactory(prometheus::Registry& registry);

}  // namespace skinlesion::telemetry

#endif  // SKINLESION_TELEMETRY_GRPC_METRICS_H_
