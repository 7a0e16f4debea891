// Helpers shared by the gRPC front ends of skinlesion-inference: status and
// deadline conversion, served-model lookup, and per-RPC Prometheus metrics.
#ifndef SERVICES_INFERENCE_SERVICE_UTIL_H_
#define SERVICES_INFERENCE_SERVICE_UTIL_H_

#include <chrono>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "grpcpp/grpcpp.h"
#include "skinlesion/serving/serving.h"
#include "skinlesion/telemetry/grpc_metrics.h"
#include "skinlesion/rpc/status.h"

namespace skinlesion::inference {

// absl::Status -> grpc::Status (skinlesion/rpc/status.h).
using rpc::ToGrpcStatus;

// The client's deadline as an absl::Time (InfiniteFuture when it set none).
absl::Time DeadlineOf(const grpc::ServerContext& context);

// Who sent the call, for fairness between clients: the `x-skinlesion-client`
// metadata the gateway sets (its HTTP client's address), else the host of the gRPC
// peer ("ipv4:10.0.0.7:5123" -> "10.0.0.7"; "ipv6:[::1]:5123" -> "[::1]").
std::string ClientOf(const grpc::ServerContext& context);
inline constexpr char kClientMetadata[] = "x-skinlesion-client";

// The served model called `name` (empty: the first one, the server's default).
// NotFound names the served models; Unavailable when none is configured.
absl::StatusOr<serving::ServedModelStatus> FindServedModel(const serving::ServingCore& core,
                                                           const std::string& name);

// gRPC-level metrics (skinlesion_grpc_requests_total, ..._duration_seconds).
using telemetry::GrpcMetrics;

// Records one RPC into `metrics` (may be null) when it goes out of scope, with
// the status given to Done().
class RpcRecorder {
 public:
  RpcRecorder(GrpcMetrics* metrics, absl::string_view service, absl::string_view method)
      : metrics_(metrics), service_(service), method_(method), start_(absl::Now()) {}
  ~RpcRecorder() {
    if (metrics_ != nullptr) {
      metrics_->Record(service_, method_, code_, absl::ToDoubleSeconds(absl::Now() - start_));
    }
  }
  RpcRecorder(const RpcRecorder&) = delete;
  RpcRecorder& operator=(const RpcRecorder&) = delete;
  grpc::Status Done(grpc::Status status) {
    code_ = status.error_code();
    return status;
  }

 private:
  GrpcMetrics* metrics_;
  absl::string_view service_, method_;
  absl::Time start_;
  grpc::StatusCode code_ = grpc::StatusCode::UNKNOWN;
};

}  // namespace skinlesion::inference

#endif  // SERVICES_INFERENCE_SERVICE_UTIL_H_
