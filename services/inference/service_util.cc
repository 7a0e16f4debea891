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

}  // namespace skinlesion::inference
