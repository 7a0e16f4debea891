// skinlesion.v1.TrainerService over a JobManager (gRPC sync API).
//
// Status codes: a bad config -> INVALID_ARGUMENT listing every problem; an
// unknown job -> NOT_FOUND; cancelling a finished job -> FAILED_PRECONDITION;
// SubmitJob / CancelJob without the configured bearer token -> UNAUTHENTICATED.
// WatchJob replays the stored events, then streams live ones; it ends OK after
// the job's terminal state, or UNAVAILABLE when the trainer shuts down.
#ifndef SKINLESION_JOBS_SERVICE_H_
#define SKINLESION_JOBS_SERVICE_H_

#include <functional>
#include <string>

#include "grpcpp/grpcpp.h"
#include "skinlesion/jobs/manager.h"
#include "skinlesion/v1/training.grpc.pb.h"

namespace skinlesion::jobs {

// Decides whether a call may proceed: OK, or the status to fail it with.
using CallAuthorizer = std::function<grpc::Status(grpc::ServerContext*)>;

// Wants the metadata `authorization: Bearer <token>`; anything else (missing,
// not a bearer token, another token, compared in constant time) is
// UNAUTHENTICATED. The token never appears in a message or a log. An empty token
// allows every call.
CallAuthorizer RequireBearerToken(std::string token);

class TrainerServiceImpl final : public v1::TrainerService::Service {
 public:
  struct Options {
    CallAuthorizer mutate_authorizer;  // SubmitJob, CancelJob; empty: allow all.
  };
  // `manager` must outlive the service.
  TrainerServiceImpl(JobManager* manager, Options options)
      : manager_(manager), options_(std::move(options)) {}

  grpc::Status SubmitJob(grpc::ServerContext* context, const v1::SubmitJobRequest* request,
                         v1::Job* response) override;
  grpc::Status GetJob(grpc::ServerContext* context, const v1::GetJobRequest* request,
                      v1::Job* response) override;
  grpc::Status ListJobs(grpc::ServerContext* context, const v1::ListJobsRequest* request,
                        v1::ListJobsResponse* response) override;
  grpc::Status WatchJob(grpc::ServerContext* context, const v1::WatchJobRequest* request,
                        grpc::ServerWriter<v1::JobEvent>* writer) override;
  grpc::Status CancelJob(grpc::ServerContext* context, const v1::CancelJobRequest* request,
                         v1::Job* response) override;

 private:
  grpc::Status Authorize(grpc::ServerContext* context) const;

  JobManager* manager_;
  Options options_;
};

}  // namespace skinlesion::jobs

#endif  // SKINLESION_JOBS_SERVICE_H_
