// A client of the standard gRPC health service (grpc.health.v1.Health/Check) that
// needs no generated health stubs: readiness checks (the gateway's /readyz) and the
// service binaries' tests use it.
#ifndef SKINLESION_TELEMETRY_GRPC_HEALTH_H_
#define SKINLESION_TELEMETRY_GRPC_HEALTH_H_

#include <memory>

#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "grpcpp/channel.h"
#include "grpcpp/support/status.h"

namespace skinlesion::telemetry {

// HealthCheckResponse.ServingStatus values.
inline constexpr int kHealthUnknown = 0;
inline constexpr int kHealthServing = 1;
inline constexpr int kHealthNotServing = 2;

// Check of `service` ("" = the whole server) within `timeout`. On OK,
// *serving_status is the response's status (0 when the response has none); else
// the call's error (NOT_FOUND: the server does not know `service`).
grpc::Status CheckGrpcHealth(const std::shared_ptr<grpc::Channel>& channel,
                             absl::string_view service, absl::Duration timeout,
                             int* serving_status);

}  // namespace skinlesion::telemetry

#endif  // SKINLESION_TELEMETRY_GRPC_HEALTH_H_
