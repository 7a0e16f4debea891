// Helpers shared by the gRPC front ends of skinlesion-inference: status and
// deadline conversion, the calling client, served-model lookup. (Per-RPC metrics are
// the server's interceptor: inference_server.h.)
#ifndef SKINLESION_INFERENCE_SERVICE_UTIL_H_
#define SKINLESION_INFERENCE_SERVICE_UTIL_H_

#include <chrono>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "grpcpp/grpcpp.h"
#include "skinlesion/rpc/status.h"
#include "skinlesion/serving/serving.h"

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

}  // namespace skinlesion::inference

#endif  // SKINLESION_INFERENCE_SERVICE_UTIL_H_
