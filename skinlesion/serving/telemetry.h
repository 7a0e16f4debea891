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
//   skinlesion_inference_answers_total{model,version,answer}  counter  what each successful
//       prediction told its caller, one answer each: not_a_lesion (above the version's
//       out-of-distribution threshold) | refer_malignancy_risk | refer_low_confidence |
//       refer_close_call (the referral rule that fired, referral.h) | no_referral
//   skinlesion_model_expected_answer_share{model,version,answer}  gauge  what the serving
//       version's model card leads one to expect: answer "refer" (the share of lesions its
//       referral rule referred on the images it was fitted on, manifest
//       refer.validation.refer_rate) and "not_a_lesion" (the share of lesions its
//       out-of-distribution threshold was fitted to reject, ood.reject_rate); only those the
//       manifest has; the old version's series are removed on a swap. Alerts compare the
//       answers' shares with these (a clinic whose images differ from the training data
//       refers far more: docs/operations.md).
//
// Thread-safe.
#ifndef SKINLESION_SERVING_TELEMETRY_H_
#define SKINLESION_SERVING_TELEMETRY_H_

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "prometheus/counter.h"
#include "prometheus/family.h"
#include "prometheus/gauge.h"
#include "prometheus/histogram.h"
#include "prometheus/registry.h"
#include "skinlesion/common/referral.h"

namespace skinlesion::serving {

// "ok", "invalid_argument", ... as in the outcome label; every other code: "internal".
const char* OutcomeLabel(absl::StatusCode code);

// The answer label of one prediction: "not_a_lesion" when it was out of distribution,
// else "refer_" + ReferRuleName(rule) when referred, else "no_referral".
std::string AnswerLabel(bool out_of_distribution, bool refer, ReferRule rule);

// What a version's manifest says its answers' shares should be (absent: not said).
struct ExpectedAnswerShares {
  std::optional<double> refer;         // refer.validation.refer_rate
  std::optional<double> not_a_lesion;  // ood.reject_rate (with a threshold)
};

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
  // `model` and `expected` its only expected_answer_share series, and exports its
  // request and answer counters of that version at 0 for every outcome and answer.
  void SetServingVersion(const std::string& model, int64_t version, const std::string& sha256,
                         const std::string& precision = "fp32",
                         const ExpectedAnswerShares& expected = {}) ABSL_LOCKS_EXCLUDED(mu_);
  // One successful prediction's answer (AnswerLabel).
  void RecordAnswer(const std::string& model, int64_t version, const std::string& answer);

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
  prometheus::Family<prometheus::Counter>& answers_;
  prometheus::Family<prometheus::Gauge>& expected_shares_;

  absl::Mutex mu_;
  // model -> its info series.
  std::map<std::string, prometheus::Gauge*> serving_version_ ABSL_GUARDED_BY(mu_);
  // model -> its expected_answer_share series.
  std::map<std::string, std::vector<prometheus::Gauge*>> expected_ ABSL_GUARDED_BY(mu_);
};

}  // namespace skinlesion::serving

#endif  // SKINLESION_SERVING_TELEMETRY_H_
