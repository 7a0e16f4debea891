// absl::Status <-> grpc::Status. The two share their canonical codes, so the
// conversion keeps the code and the message.
#ifndef SKINLESION_REGISTRY_GRPC_STATUS_H_
#define SKINLESION_REGISTRY_GRPC_STATUS_H_

#include <string>

#include "absl/status/status.h"
#include "grpcpp/support/status.h"

namespace skinlesion::registry {

inline grpc::Status ToGrpcStatus(const absl::Status& status) {
  if (status.ok()) return grpc::Status::OK;
  return grpc::Status(static_cast<grpc::StatusCode>(status.code()), std::string(status.message()));
}

inline absl::Status FromGrpcStatus(const grpc::Status& status) {
  if (status.ok()) return absl::OkStatus();
  return absl::Status(static_cast<absl::StatusCode>(status.error_code()), status.error_message());
}

}  // namespace skinlesion::registry

#endif  // SKINLESION_REGISTRY_GRPC_STATUS_H_
