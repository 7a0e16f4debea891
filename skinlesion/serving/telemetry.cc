#include "skinlesion/serving/telemetry.h"

#include <string>
#include <vector>

namespace skinlesion::serving {
namespace {

const prometheus::Histogram::BucketBoundaries& LatencyBuckets() {
  static const auto* b = new prometheus::Histogram::BucketBoundaries{
      0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10};
  return *b;
}

const prometheus::Histogram::BucketBoundaries& BatchBuckets() {
  static const auto* b = new prometheus::Histogram::BucketBoundaries{1, 2, 4, 8, 16, 32, 64, 128};
  return *b;
}

const prometheus::Histogram::BucketBoundaries& LoadBuckets() {
  static const auto* b =
      new prometheus::Histogram::BucketBoundaries{0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300};
  return *b;
}

std::string VersionLabel(int64_t version) { return version == 0 ? "" : std::to_string(version); }

}  // namespace

const char* OutcomeLabel(absl::StatusCode code) {
  switch (code) {
    case absl::StatusCode::kOk:
      return "ok";
    case absl::StatusCode::kInvalidArgument:
      return "invalid_argument";
    case absl::StatusCode::kNotFound:
      return "not_found";
    case absl::StatusCode::kResourceExhausted:
      return "resource_exhausted";
    case absl::StatusCode::kDeadlineExceeded:
      return "deadline_exceeded";
    case absl::StatusCode::kUnavailable:
      return "unavailable";
    default:
      return "internal";
  }
}

ServingMetrics::ServingMetrics(prometheus::Registry& registry)
    : requests_(prometheus::BuildCounter()
                    .Name("skinlesion_inference_requests_total")
                    .Help("Inference requests by model, version and outcome")
                    .Register(registry)),
      queue_seconds_(prometheus::BuildHistogram()
                         .Name("skinlesion_inference_queue_seconds")
                         .Help("Time a request waited in the batch queue")
                         .Register(registry)),
      compute_seconds_(prometheus::BuildHistogram()
                           .Name("skinlesion_inference_compute_seconds")
                           .Help("Time to run one batch through the model")
                           .Register(registry)),
      request_seconds_(prometheus::BuildHistogram()
                           .Name("skinlesion_inference_request_seconds")
                           .Help("Time from Infer() to its result (decode, queue, compute)")
                           .Register(registry)),
      batch_size_(prometheus::BuildHistogram()
                      .Name("skinlesion_inference_batch_size")
                      .Help("Requests per batch run")
                      .Register(registry)),
      decode_seconds_(prometheus::BuildHistogram()
                          .Name("skinlesion_inference_decode_seconds")
                          .Help("Decode + preprocess of one encoded image, by where it ran")
                          .Register(registry)),
      queue_depth_(prometheus::BuildGauge()
                       .Name("skinlesion_inference_queue_depth")
                       .Help("Requests waiting in the batch queue")
                       .Register(registry)),
      load_seconds_(prometheus::BuildHistogram()
                        .Name("skinlesion_model_load_seconds")
                        .Help("Fetch, load, warm-up and golden check of a model version")
                        .Register(registry)),
      reloads_(prometheus::BuildCounter()
                   .Name("skinlesion_model_reloads_total")
                   .Help("Attempts to load a new model version, by result")
                   .Register(registry)),
      version_info_(prometheus::BuildGauge()
                        .Name("skinlesion_model_version_info")
                        .Help("1 for the model version serving now, with the precision it runs in")
                        .Register(registry)),
      explain_seconds_(prometheus::BuildHistogram()
                           .Name("skinlesion_inference_explain_seconds")
                           .Help("Time of one explanation (decode, slot wait, heatmap)")
                           .Register(registry)),
      explanations_(prometheus::BuildCounter()
                        .Name("skinlesion_inference_explanations_total")
                        .Help("Explanation requests by model and outcome")
                        .Register(registry)) {}

void ServingMetrics::RecordRequest(const std::string& model, int64_t version, absl::StatusCode code,
                                   double request_seconds) {
  requests_
      .Add({{"model", model}, {"version", VersionLabel(version)}, {"outcome", OutcomeLabel(code)}})
      .Increment();
  request_seconds_.Add({{"model", model}}, LatencyBuckets()).Observe(request_seconds);
}

void ServingMetrics::RecordBatch(const std::string& model, int batch_size, double compute_seconds) {
  batch_size_.Add({{"model", model}}, BatchBuckets()).Observe(batch_size);
  compute_seconds_.Add({{"model", model}}, LatencyBuckets()).Observe(compute_seconds);
}

void ServingMetrics::RecordQueueWait(const std::string& model, double queue_seconds) {
  queue_seconds_.Add({{"model", model}}, LatencyBuckets()).Observe(queue_seconds);
}

void ServingMetrics::RecordDecode(const std::string& model, const std::string& stage,
                                  double seconds) {
  decode_seconds_.Add({{"model", model}, {"stage", stage}}, LatencyBuckets()).Observe(seconds);
}

void ServingMetrics::SetQueueDepth(const std::string& model, int depth) {
  queue_depth_.Add({{"model", model}}).Set(depth);
}

void ServingMetrics::RecordLoad(const std::string& model, bool success, double seconds) {
  reloads_.Add({{"model", model}, {"result", success ? "success" : "failure"}}).Increment();
  if (success) load_seconds_.Add({{"model", model}}, LoadBuckets()).Observe(seconds);
}

void ServingMetrics::DeclareModel(const std::string& model) {
  for (const char* result : {"success", "failure"}) {
    reloads_.Add({{"model", model}, {"result", result}});
  }
  DeclareRequests(model, 0);
}

void ServingMetrics::DeclareRequests(const std::string& model, int64_t version) {
  for (absl::StatusCode code :
       {absl::StatusCode::kOk, absl::StatusCode::kInvalidArgument, absl::StatusCode::kNotFound,
        absl::StatusCode::kResourceExhausted, absl::StatusCode::kDeadlineExceeded,
        absl::StatusCode::kUnavailable, absl::StatusCode::kInternal}) {
    requests_.Add(
        {{"model", model}, {"version", VersionLabel(version)}, {"outcome", OutcomeLabel(code)}});
  }
}

void ServingMetrics::RecordExplain(const std::string& model, absl::StatusCode code,
                                   double seconds) {
  const char* outcome =
      code == absl::StatusCode::kUnimplemented ? "unimplemented" : OutcomeLabel(code);
  explanations_.Add({{"model", model}, {"outcome", outcome}}).Increment();
  if (code == absl::StatusCode::kOk) {
    explain_seconds_.Add({{"model", model}}, LatencyBuckets()).Observe(seconds);
  }
}

void ServingMetrics::SetServingVersion(const std::string& model, int64_t version,
                                       const std::string& sha256, const std::string& precision) {
  absl::MutexLock lock(&mu_);
  auto it = serving_version_.find(model);
  if (it != serving_version_.end()) version_info_.Remove(it->second);
  prometheus::Gauge& g =
      version_info_.Add({{"model", model},
                         {"version", VersionLabel(version)},
                         {"sha256", sha256},
                         {"precision", precision}});
  g.Set(1);
  serving_version_[model] = &g;
  DeclareRequests(model, version);
}

}  // namespace skinlesion::serving
