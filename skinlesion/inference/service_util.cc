#include "skinlesion/inference/service_util.h"

#include <algorithm>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace skinlesion::inference {

absl::Time DeadlineOf(const grpc::ServerContext& context) {
  const auto deadline = context.deadline();
  if (deadline == std::chrono::system_clock::time_point::max()) return absl::InfiniteFuture();
  return absl::FromChrono(deadline);
}

std::string ClientOf(const grpc::ServerContext& context) {
  const auto& metadata = context.client_metadata();
  if (auto it = metadata.find(kClientMetadata); it != metadata.end() && !it->second.empty()) {
    return std::string(it->second.data(), std::min<size_t>(it->second.size(), 128));
  }
  std::string peer = context.peer();
  if (const size_t colon = peer.find(':'); colon != std::string::npos)
    peer = peer.substr(colon + 1);
  if (const size_t port = peer.rfind(':'); port != std::string::npos) peer = peer.substr(0, port);
  return peer;
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
