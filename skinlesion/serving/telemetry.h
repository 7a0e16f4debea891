// Prometheus metrics of the serving core (prometheus-cpp core only: exposing them
// over HTTP is the service's job).
//
// Metric names (a Grafana dashboard and alerts are written against these; keep
// docs/serving.md in sync):
//   skinlesion_inference_requests_total{model,version,outcome}   counter
//       outcome: ok | invalid_argument | not_found | resource_exhausted |
//                deadline_exceeded | unavailable | internal
//       version: "" when the request failed before a version was chosen.
//   skinlesion_inference_queue_seconds{model}     histogram  enqueue -> batch start
//   skinlesion_inference_compute_seconds{model}   histogram  one batch's Run() + postprocess
//   skinlesion_inference_request_seconds{model}   histogram  Infer() call -> result
//                                                             (decode + queue + compute)
//   skinlesion_inference_batch_size{model}        histogram  requests per batch run
//   skinlesion_inference_decode_seconds{model,stage}  histogram  decode + preprocess of
//       one encoded image; stage: ahead (batch worker, while a batch fills) |
//       in_batch (batch worker, before the forward pass) | caller (request thread)
//   skinlesion_inference_queue_depth{model}       gauge      requests waiting
//   skinlesion_inference_explain_seconds{model}   histogram  one Explain() call: decode +
//                                                             slot wait + explanation (successes)
//   skinlesion_inference_explanations_total{model,outcome}  counter  Explain() calls
//       (not counted in requests_total; outcome as there, plus "unimplemented")
//   skinlesion_model_load_seconds{model}          histogram  fetch + load + warmup + golden
//                                                             check of a version (successes)
//   skinlesion_model_reloads_total{model,result}  counter    result: success | failure
//   skinlesion_model_version_info{model,version,sha256}  gauge  1 for the version serving
//                                                             now (the old series is removed
//                                                             on a swap)
//
// Thread-safe.
#ifndef SKINLESION_SERVING_TELEMETRY_H_
#define SKINLESION_SERVING_TELEMETRY_H_

#include <cstdint>
#include <map>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "prometheus/counter.h"
#include "prometheus/family.h"
#include "prometheus/gauge.h"
#include "prometheus/histogram.h"
#include "prometheus/registry.h"

namespace skinlesion::serving {

// "ok", "invalid_argument", ... as in the outcome label; every other code: "internal".
const char* OutcomeLabel(absl::StatusCode code);

class ServingMetrics {
 public:
  // Registers the families in `registry`, which must outlive this object.
  explicit ServingMetrics(prometheus::Registry& registry);
  ServingMetrics(const ServingMetrics&) = delete;
  ServingMetrics& operator=(const ServingMetrics&) = delete;

  // version 0: the label is "".
  void RecordRequest(const std::string& model, int64_t version, absl::StatusCode code,
                     double request_seconds);
  void RecordBatch(const std::string& model, int batch_size, double compute_seconds);
  void RecordQueueWait(const std::string& model, double queue_seconds);
  void RecordDecode(const std::string& model, const std::string& stage, double seconds);
  void SetQueueDepth(const std::string& model, int depth);
  void RecordLoad(const std::string& model, bool success, double seconds);
  // Exports the counters alerts take increase() of at 0 for `model` (reloads by
  // result, requests of version "" by outcome) before its first event: a series born
  // at 1 has no earlier sample, so increase() over it would miss a first failure.
  void DeclareModel(const std::string& model);
  // One ServingCore::Explain() call; seconds observed for successes only.
  void RecordExplain(const std::string& model, absl::StatusCode code, double seconds);
  // Makes (model, version, sha256, precision) the only version_info series of
  // `model`, and exports its request counters of that version at 0 for every outcome.
  void SetServingVersion(const std::string& model, int64_t version, const std::string& sha256,
                         const std::string& precision = "fp32") ABSL_LOCKS_EXCLUDED(mu_);

 private:
  // requests_total{model, version} at 0 for every outcome label.
  void DeclareRequests(const std::string& model, int64_t version);

  prometheus::Family<prometheus::Counter>& requests_;
  prometheus::Family<prometheus::Histogram>& queue_seconds_;
  prometheus::Family<prometheus::Histogram>& compute_seconds_;
  prometheus::Family<prometheus::Histogram>& request_seconds_;
  prometheus::Family<prometheus::Histogram>& batch_size_;
  prometheus::Family<prometheus::Histogram>& decode_seconds_;
  prometheus::Family<prometheus::Gauge>& queue_depth_;
  prometheus::Family<prometheus::Histogram>& load_seconds_;
  prometheus::Family<prometheus::Counter>& reloads_;
  prometheus::Family<prometheus::Gauge>& version_info_;
  prometheus::Family<prometheus::Histogram>& explain_seconds_;
  prometheus::Family<prometheus::Counter>& explanations_;

  absl::Mutex mu_;
  // model -> its info series.
  std::map<std::string, prometheus::Gauge*> serving_version_ ABSL_GUARDED_BY(mu_);
};

}  // namespace skinlesion::serving

#endif  // SKINLESION_SERVING_TELEMETRY_H_
