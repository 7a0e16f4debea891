#include "services/inference/service_util.h"

#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace skinlesion::inference {

grpc::Status ToGrpcStatus(const absl::Status& status) {
  if (status.ok()) return grpc::Status::OK;
  return grpc::Status(static_cast<grpc::StatusCode>(status.code()), std::string(status.message()));
}

absl::Time DeadlineOf(const grpc::ServerContext& context) {
  const auto deadline = context.deadline();
  if (deadline == std::chrono::system_clock::time_point::max()) return absl::InfiniteFuture();
  return absl::FromChrono(deadline);
}

absl::StatusOr<serving::ServedModelStatus> FindServedModel(const serving::ServingCore& core,
                                                           const std::string& name) {
  std::vector<serving::ServedModelStatus> models = core.Models();
  if (models.empty()) return absl::UnavailableError("this server serves no model");
  if (name.empty()) return std::move(models.front());
  std::vector<std::string> names;
  for (serving::ServedModelStatus& model : models) {
    if (model.name == name) return std::move(model);
    names.push_back(model.name);
  }
  return absl::NotFoundError(absl::StrCat(
      "model '", name, "' is not served here (served: ", absl::StrJoin(names, ", "), ")"));
}

GrpcMetrics::GrpcMetrics(prometheus::Registry& registry)
    : requests_(prometheus::BuildCounter()
                    .Name("skinlesion_grpc_requests_total")
                    .Help("gRPC calls handled, by service, method and status code")
                    .Register(registry)),
      duration_(prometheus::BuildHistogram()
                    .Name("skinlesion_grpc_request_duration_seconds")
                    .Help("Wall time of gRPC calls, by service and method")
                    .Register(registry)) {}

void GrpcMetrics::Record(absl::string_view service, absl::string_view method, grpc::StatusCode code,
                         double seconds) {
  static const std::vector<std::string> kCodeNames = {"OK",
                                                      "CANCELLED",
                                                      "UNKNOWN",
                                                      "INVALID_ARGUMENT",
                                                      "DEADLINE_EXCEEDED",
                                                      "NOT_FOUND",
                                                      "ALREADY_EXISTS",
                                                      "PERMISSION_DENIED",
                                                      "RESOURCE_EXHAUSTED",
                                                      "FAILED_PRECONDITION",
                                                      "ABORTED",
                                                      "OUT_OF_RANGE",
                                                      "UNIMPLEMENTED",
                                                      "INTERNAL",
                                                      "UNAVAILABLE",
                                                      "DATA_LOSS",
                                                      "UNAUTHENTICATED"};
  const int index = static_cast<int>(code);
  const std::string code_name = index >= 0 && index < static_cast<int>(kCodeNames.size())
                                    ? kCodeNames[index]
                                    : absl::StrCat(index);
  requests_
      .Add(
          {{"service", std::string(service)}, {"method", std::string(method)}, {"code", code_name}})
      .Increment();
  static const prometheus::Histogram::BucketBoundaries kBuckets = {
      0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10};
  duration_.Add({{"service", std::string(service)}, {"method", std::string(method)}}, kBuckets)
      .Observe(seconds);
}

}  // namespace skinlesion::inference
