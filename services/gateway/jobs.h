// The jobs routes, over the trainer (TrainerService; docs/gateway.md "Jobs").
// Without --trainer_target every one answers 503 service_unavailable.
//
// - POST /api/v1/jobs (bearer token): submits a job; the body is a job config
//   (JobConfigFromJson, at most max_json_bytes: 413). 201 {"job_id"}. A config the
//   gateway or the trainer refuses is 400 bad_request with every problem listed in
//   "problems".
// - GET /api/v1/jobs[?state=running,queued]: the jobs (JobJson), filtered by state.
// - GET /api/v1/jobs/{id}: the job with its last 50 progress events, oldest first
//   ("events"; a live job's stream is read for 150 ms only). No query parameters.
// - POST /api/v1/jobs/{id}/cancel (bearer token): cancels; the deadline allows for
//   the job's kill grace period (at least 60 s). 200: the job.
#ifndef SERVICES_GATEWAY_JOBS_H_
#define SERVICES_GATEWAY_JOBS_H_

#include "absl/status/statusor.h"
#include "httplib.h"
#include "services/gateway/gateway.h"
#include "services/gateway/http_server.h"
#include "services/gateway/upstreams.h"

namespace skinlesion::gateway {

class Jobs {
 public:
  // Keeps references to `options` and `upstreams`.
  Jobs(const GatewayOptions& options, Upstreams& upstreams);

  void Register(HttpServer& server);
  absl::StatusOr<Reply> Submit(const httplib::Request& req);
  absl::StatusOr<Reply> List(const httplib::Request& req);
  absl::StatusOr<Reply> Get(const httplib::Request& req);
  absl::StatusOr<Reply> Cancel(const httplib::Request& req);

 private:
  const GatewayOptions& options_;
  Upstreams& upstreams_;
};

}  // namespace skinlesion::gateway

#endif  // SERVICES_GATEWAY_JOBS_H_
