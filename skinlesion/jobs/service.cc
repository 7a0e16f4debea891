#include "skinlesion/jobs/service.h"

#include <openssl/crypto.h>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "skinlesion/rpc/status.h"

namespace skinlesion::jobs {

using rpc::ToGrpcStatus;

CallAuthorizer RequireBearerToken(std::string token) {
  return [token = std::move(token)](grpc::ServerContext* context) -> grpc::Status {
    if (token.empty()) return grpc::Status::OK;
    const auto& metadata = context->client_metadata();
    const auto it = metadata.find("authorization");
    if (it == metadata.end()) {
      return {grpc::StatusCode::UNAUTHENTICATED,
              "this call needs the metadata 'authorization: Bearer <token>'"};
    }
    const std::string value(it->second.data(), it->second.size());
    constexpr absl::string_view kPrefix = "Bearer ";
    if (!absl::StartsWith(value, kPrefix)) {
      return {grpc::StatusCode::UNAUTHENTICATED,
              "the authorization metadata is not a Bearer token"};
    }
    const std::string given = value.substr(kPrefix.size());
    // Constant time over the token's length; the length itself is not secret.
    const bool same = given.size() == token.size() &&
                      CRYPTO_memcmp(given.data(), token.data(), token.size()) == 0;
    if (!same) return {grpc::StatusCode::UNAUTHENTICATED, "invalid bearer token"};
    return grpc::Status::OK;
  };
}

grpc::Status TrainerServiceImpl::Authorize(grpc::ServerContext* context) const {
  return options_.mutate_authorizer ? options_.mutate_authorizer(context) : grpc::Status::OK;
}

grpc::Status TrainerServiceImpl::SubmitJob(grpc::ServerContext* context,
                                           const v1::SubmitJobRequest* request, v1::Job* response) {
  if (grpc::Status s = Authorize(context); !s.ok()) return s;
  auto job = manager_->Submit(request->config());
  if (!job.ok()) return ToGrpcStatus(job.status());
  *response = *job;
  return grpc::Status::OK;
}

grpc::Status TrainerServiceImpl::GetJob(grpc::ServerContext* context,
                                        const v1::GetJobRequest* request, v1::Job* response) {
  if (request->id().empty()) return {grpc::StatusCode::INVALID_ARGUMENT, "id is required"};
  auto job = manager_->Get(request->id());
  if (!job.ok()) return ToGrpcStatus(job.status());
  *response = *job;
  return grpc::Status::OK;
}

grpc::Status TrainerServiceImpl::ListJobs(grpc::ServerContext* context,
                                          const v1::ListJobsRequest* request,
                                          v1::ListJobsResponse* response) {
  std::vector<v1::JobState> states;
  for (int s : request->states()) {
    if (!v1::JobState_IsValid(s) || s == v1::JOB_STATE_UNSPECIFIED) {
      return {grpc::StatusCode::INVALID_ARGUMENT, absl::StrCat("invalid job state ", s)};
    }
    states.push_back(static_cast<v1::JobState>(s));
  }
  auto jobs = manager_->List(states);
  if (!jobs.ok()) return ToGrpcStatus(jobs.status());
  for (v1::Job& job : *jobs) *response->add_jobs() = std::move(job);
  return grpc::Status::OK;
}

grpc::Status TrainerServiceImpl::WatchJob(grpc::ServerContext* context,
                                          const v1::WatchJobRequest* request,
                                          grpc::ServerWriter<v1::JobEvent>* writer) {
  if (request->id().empty()) return {grpc::StatusCode::INVALID_ARGUMENT, "id is required"};
  const absl::Status s = manager_->Watch(
      request->id(), [&](const v1::JobEvent& e) { return writer->Write(e); },
      [&] { return context->IsCancelled(); });
  return ToGrpcStatus(s);
}

grpc::Status TrainerServiceImpl::CancelJob(grpc::ServerContext* context,
                                           const v1::CancelJobRequest* request, v1::Job* response) {
  if (grpc::Status s = Authorize(context); !s.ok()) return s;
  if (request->id().empty()) return {grpc::StatusCode::INVALID_ARGUMENT, "id is required"};
  auto job = manager_->Cancel(request->id());
  if (!job.ok()) return ToGrpcStatus(job.status());
  *response = *job;
  return grpc::Status::OK;
}

}  // namespace skinlesion::jobs
