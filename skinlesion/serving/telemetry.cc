#include "skinlesion/serving/telemetry.h"

#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "skinlesion/telemetry/families.h"

namespace skinlesion::serving {
namespace {

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

std::string AnswerLabel(bool out_of_distribution, bool refer, ReferRule rule) {
  if (out_of_distribution) return "not_a_lesion";
  if (!refer) return "no_referral";
  // Summarize() names the rule of every referral; one without is counted as a close call.
  return absl::StrCat("refer_",
                      ReferRuleName(rule == ReferRule::kNone ? ReferRule::kCloseCall : rule));
}

ServingMetrics::ServingMetrics(prometheus::Registry& registry)
    : requests_(telemetry::AddCounter(registry, "skinlesion_inference_requests_total",
                                      "Inference requests by model, version and outcome")),
      queue_seconds_(telemetry::AddHistogram(registry, "skinlesion_inference_queue_seconds",
                                             "Time a request waited in the batch queue")),
      compute_seconds_(telemetry::AddHistogram(registry, "skinlesion_inference_compute_seconds",
                                               "Time to run one batch through the model")),
      request_seconds_(
          telemetry::AddHistogram(registry, "skinlesion_inference_request_seconds",
                                  "Time from Infer() to its result (decode, queue, compute)")),
      batch_size_(telemetry::AddHistogram(registry, "skinlesion_inference_batch_size",
                                          "Requests per batch run")),
      decode_seconds_(
          telemetry::AddHistogram(registry, "skinlesion_inference_decode_seconds",
                                  "Decode + preprocess of one encoded image, by where it ran")),
      queue_depth_(telemetry::AddGauge(registry, "skinlesion_inference_queue_depth",
                                       "Requests waiting in the batch queue")),
      load_seconds_(
          telemetry::AddHistogram(registry, "skinlesion_model_load_seconds",
                                  "Fetch, load, warm-up and golden check of a model version")),
      reloads_(telemetry::AddCounter(registry, "skinlesion_model_reloads_total",
                                     "Attempts to load a new model version, by result")),
      version_info_(telemetry::AddGauge(
          registry, "skinlesion_model_version_info",
          "1 for the model version serving now, with the precision it runs in")),
      explain_seconds_(
          telemetry::AddHistogram(registry, "skinlesion_inference_explain_seconds",
                                  "Time of one explanation (decode, slot wait, heatmap)")),
      explanations_(telemetry::AddCounter(registry, "skinlesion_inference_explanations_total",
                                          "Explanation requests by model and outcome")),
      answers_(telemetry::AddCounter(
          registry, "skinlesion_inference_answers_total",
          "Successful predictions by what they told the caller: not a lesion, referred "
          "(by rule) or not referred")),
      expected_shares_(telemetry::AddGauge(
          registry, "skinlesion_model_expected_answer_share",
          "The serving version's expected share of referred lesions (refer) and of lesions "
          "rejected as not a lesion (not_a_lesion), from its manifest")) {}

void ServingMetrics::RecordRequest(const std::string& model, int64_t version, absl::StatusCode code,
                                   double request_seconds) {
  requests_
      .Add({{"model", model}, {"version", VersionLabel(version)}, {"outcome", OutcomeLabel(code)}})
      .Increment();
  request_seconds_.Add({{"model", model}}, telemetry::RequestSecondsBuckets())
      .Observe(request_seconds);
}

void ServingMetrics::RecordBatch(const std::string& model, int batch_size, double compute_seconds) {
  batch_size_.Add({{"model", model}}, telemetry::BatchSizeBuckets()).Observe(batch_size);
  compute_seconds_.Add({{"model", model}}, telemetry::RequestSecondsBuckets())
      .Observe(compute_seconds);
}

void ServingMetrics::RecordQueueWait(const std::string& model, double queue_seconds) {
  queue_seconds_.Add({{"model", model}}, telemetry::RequestSecondsBuckets()).Observe(queue_seconds);
}

void ServingMetrics::RecordDecode(const std::string& model, const std::string& stage,
                                  double seconds) {
  decode_seconds_.Add({{"model", model}, {"stage", stage}}, telemetry::RequestSecondsBuckets())
      .Observe(seconds);
}

void ServingMetrics::SetQueueDepth(const std::string& model, int depth) {
  queue_depth_.Add({{"model", model}}).Set(depth);
}

void ServingMetrics::RecordLoad(const std::string& model, bool success, double seconds) {
  reloads_.Add({{"model", model}, {"result", success ? "success" : "failure"}}).Increment();
  if (success)
    load_seconds_.Add({{"model", model}}, telemetry::LoadSecondsBuckets()).Observe(seconds);
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
    explain_seconds_.Add({{"model", model}}, telemetry::RequestSecondsBuckets()).Observe(seconds);
  }
}

void ServingMetrics::SetServingVersion(const std::string& model, int64_t version,
                                       const std::string& sha256, const std::string& precision,
                                       const ExpectedAnswerShares& expected) {
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
  // Every label AnswerLabel gives, at 0.
  std::vector<std::string> answers = {AnswerLabel(true, false, ReferRule::kNone),
                                      AnswerLabel(false, false, ReferRule::kNone)};
  for (ReferRule rule :
       {ReferRule::kMalignancyRisk, ReferRule::kLowConfidence, ReferRule::kCloseCall}) {
    answers.push_back(AnswerLabel(false, true, rule));
  }
  for (const std::string& answer : answers) {
    answers_.Add({{"model", model}, {"version", VersionLabel(version)}, {"answer", answer}});
  }
  std::vector<prometheus::Gauge*>& shares = expected_[model];
  for (prometheus::Gauge* old : shares) expected_shares_.Remove(old);
  shares.clear();
  for (const auto& [answer, share] :
       {std::pair<const char*, std::optional<double>>{"refer", expected.refer},
        {"not_a_lesion", expected.not_a_lesion}}) {
    if (!share.has_value()) continue;
    prometheus::Gauge& e = expected_shares_.Add(
        {{"model", model}, {"version", VersionLabel(version)}, {"answer", answer}});
    e.Set(*share);
    shares.push_back(&e);
  }
}

void ServingMetrics::RecordAnswer(const std::string& model, int64_t version,
                                  const std::string& answer) {
  answers_.Add({{"model", model}, {"version", VersionLabel(version)}, {"answer", answer}})
      .Increment();
}

}  // namespace skinlesion::serving
