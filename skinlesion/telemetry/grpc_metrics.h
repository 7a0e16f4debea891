// Per-RPC Prometheus metrics for gRPC servers:
//
//   skinlesion_grpc_requests_total{service,method,code}        counter
//   skinlesion_grpc_request_duration_seconds{service,method}   histogram
//
// Every gRPC server of the project (skinlesion-registry, skinlesion-trainer,
// skinlesion-inference) records them with the interceptor factory, which counts each
// call of the server without touching its handlers:
//
//   std::vector<std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface>> f;
//   f.push_back(MakeGrpcMetricsInterceptorFactory(registry));
//   builder.experimental().SetInterceptorCreators(std::move(f));
//
// A call is recorded once, at the status the server sends (the PRE_SEND_STATUS hook),
// for unary and streaming methods alike (our services are sync; gRPC's default
// health service is callback-based): the status the handler returned, and also the
// calls no handler of ours answers (grpc.health.v1, reflection, UNIMPLEMENTED
// methods, a unary request that does not parse). A call cancelled after its handler
// started is recorded with the status the handler returned. The duration runs from
// the call's creation on the server to that status. Calls the server refuses
// before creating them (once Shutdown has begun) are not recorded. GrpcMetrics is
// the recorder behind the interceptor (its tests call Record directly).
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
