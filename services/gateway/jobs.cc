#include "services/gateway/jobs.h"

#include <algorithm>
#include <list>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "skinlesion/common/status.h"

namespace skinlesion::gateway {
namespace {

using nlohmann::json;

// "invalid job config: a; b" -> {"a", "b"}.
std::vector<std::string> JobConfigProblems(absl::string_view message) {
  absl::ConsumePrefix(&message, "invalid job config: ");
  return absl::StrSplit(message, "; ", absl::SkipEmpty());
}

bool IsTerminal(v1::JobState state) {
  return state == v1::JOB_STATE_SUCCEEDED || state == v1::JOB_STATE_FAILED ||
         state == v1::JOB_STATE_CANCELLED;
}

}  // namespace

Jobs::Jobs(const GatewayOptions& options, Upstreams& upstreams)
    : options_(options), upstreams_(upstreams) {}

void Jobs::Register(HttpServer& server) {
  server.Handle("POST", "/api/v1/jobs", [this](const auto& req) { return Submit(req); },
                {.needs_token = true});
  server.Handle("GET", "/api/v1/jobs", [this](const auto& req) { return List(req); });
  server.Handle("GET", "/api/v1/jobs/{id}", [this](const auto& req) { return Get(req); });
  server.Handle("POST", "/api/v1/jobs/{id}/cancel", [this](const auto& req) { return Cancel(req); },
                {.needs_token = true});
}

absl::StatusOr<Reply> Jobs::Submit(const httplib::Request& req) {
  SL_RETURN_IF_ERROR(upstreams_.RequireTrainer());
  SL_RETURN_IF_ERROR(RequireBodyAtMost(req, options_.max_json_bytes));
  absl::StatusOr<v1::TrainingConfig> config = JobConfigFromJson(req.body);
  if (!config.ok()) {
    ApiError e = BadRequest(std::string(config.status().message()));
    e.problems = JobConfigProblems(config.status().message());
    return ToStatus(e);
  }
  v1::SubmitJobRequest request;
  *request.mutable_config() = *std::move(config);
  v1::Job job;
  const grpc::Status s = upstreams_.CallGrpc(
      Upstream::kTrainer, "SubmitJob", options_.upstream_timeout,
      [&](grpc::ClientContext* c) { return upstreams_.trainer().SubmitJob(c, request, &job); });
  if (!s.ok()) {
    ApiError e = MapGrpcStatus(Upstream::kTrainer, s);
    if (s.error_code() == grpc::StatusCode::INVALID_ARGUMENT)
      e.problems = JobConfigProblems(s.error_message());
    return ToStatus(e);
  }
  return JsonReply(201, {{"job_id", job.id()}});
}

absl::StatusOr<Reply> Jobs::List(const httplib::Request& req) {
  SL_RETURN_IF_ERROR(upstreams_.RequireTrainer());
  SL_ASSIGN_OR_RETURN(const std::vector<v1::JobState> states, ParseJobsQuery(req.params));
  v1::ListJobsRequest request;
  for (v1::JobState s : states) request.add_states(s);
  v1::ListJobsResponse jobs;
  SL_RETURN_IF_ERROR(upstreams_.Call(
      Upstream::kTrainer, "ListJobs", options_.upstream_timeout,
      [&](grpc::ClientContext* c) { return upstreams_.trainer().ListJobs(c, request, &jobs); }));
  json out = json::array();
  for (const v1::Job& job : jobs.jobs()) out.push_back(JobJson(job));
  return JsonReply({{"jobs", std::move(out)}});
}

absl::StatusOr<Reply> Jobs::Get(const httplib::Request& req) {
  SL_RETURN_IF_ERROR(upstreams_.RequireTrainer());
  SL_RETURN_IF_ERROR(RequireNoQuery(req));
  v1::TrainerService::Stub& trainer = upstreams_.trainer();
  v1::GetJobRequest request;
  request.set_id(req.matches[1].str());
  v1::Job job;
  SL_RETURN_IF_ERROR(
      upstreams_.Call(Upstream::kTrainer, "GetJob", options_.upstream_timeout,
                      [&](grpc::ClientContext* c) { return trainer.GetJob(c, request, &job); }));
  // The stored events: WatchJob replays them at once and then waits for new ones,
  // so a live job's stream is read for a short moment only.
  const bool terminal = IsTerminal(job.state());
  v1::WatchJobRequest watch;
  watch.set_id(job.id());
  std::list<v1::JobEvent> events;
  const grpc::Status s = upstreams_.CallGrpc(
      Upstream::kTrainer, "WatchJob",
      terminal ? options_.upstream_timeout : absl::Milliseconds(150), [&](grpc::ClientContext* c) {
        auto reader = trainer.WatchJob(c, watch);
        v1::JobEvent e;
        while (reader->Read(&e)) {
          if (e.event_case() != v1::JobEvent::kProgress) continue;
          events.push_back(e);
          if (events.size() > 50) events.pop_front();
        }
        return reader->Finish();
      });
  if (!(s.error_code() == grpc::StatusCode::DEADLINE_EXCEEDED && !terminal)) {
    SL_RETURN_IF_ERROR(ApiStatusOf(Upstream::kTrainer, s));
  }
  json out = JobJson(job);
  json list = json::array();
  for (const v1::JobEvent& e : events) list.push_back(JobEventJson(e));
  out["events"] = std::move(list);
  return JsonReply(out);
}

absl::StatusOr<Reply> Jobs::Cancel(const httplib::Request& req) {
  SL_RETURN_IF_ERROR(upstreams_.RequireTrainer());
  v1::CancelJobRequest request;
  request.set_id(req.matches[1].str());
  v1::Job job;
  // A running job's processes get their kill grace period: allow for it.
  SL_RETURN_IF_ERROR(upstreams_.Call(
      Upstream::kTrainer, "CancelJob", std::max(options_.upstream_timeout, absl::Seconds(60)),
      [&](grpc::ClientContext* c) { return upstreams_.trainer().CancelJob(c, request, &job); }));
  return JsonReply(JobJson(job));
}

}  // namespace skinlesion::gateway
