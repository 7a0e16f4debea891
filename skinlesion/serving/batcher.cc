#include "skinlesion/serving/batcher.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "skinlesion/common/logging.h"
#include "skinlesion/common/status.h"
#include "skinlesion/serving/telemetry.h"

namespace skinlesion::serving {

absl::Status DecodeAndPreprocess(const ModelSpec& spec, absl::string_view bytes,
                                 const DecodeLimits& limits, float* out) {
  auto rgb = DecodeImage(bytes, DecodeLimitsFor(spec, limits));
  if (!rgb.ok()) {
    // Over-limit images are the client's fault like corrupt ones: InvalidArgument
    // (ResourceExhausted is kept for a full queue, which a client may retry).
    return absl::InvalidArgumentError(absl::StrCat("image: ", rgb.status().message()));
  }
  PreprocessInto(*rgb, PreprocessOptionsFor(spec), out);
  return absl::OkStatus();
}

void FillPrediction(const ModelSpec& spec, const float* logits, std::optional<double> feature_score,
                    InferResult& r) {
  const int num_classes = spec.classes.size();
  r.classes = spec.classes;
  r.logits.assign(logits, logits + num_classes);
  r.probabilities.resize(num_classes);
  double max_scaled = -INFINITY;
  for (int k = 0; k < num_classes; ++k) {
    max_scaled = std::max(max_scaled, static_cast<double>(logits[k]) / spec.temperature);
  }
  double sum = 0;
  for (int k = 0; k < num_classes; ++k) {
    const double e = std::exp(static_cast<double>(logits[k]) / spec.temperature - max_scaled);
    r.probabilities[k] = static_cast<float>(e);
    sum += e;
  }
  for (int k = 0; k < num_classes; ++k) r.probabilities[k] = static_cast<float>(r.probabilities[k] / sum);

  const Summary summary = Summarize(r.probabilities, spec.classes, spec.refer, spec.decision);
  r.top_class = summary.top_class;
  r.confidence = summary.confidence;
  r.malignancy_risk = summary.malignancy_risk;
  r.refer = summary.refer;
  r.refer_rule = summary.refer_rule;
  r.refer_reason = summary.refer_reason;
  r.refer_risk_threshold = spec.refer.risk_threshold;
  r.refer_target_sensitivity = spec.refer.risk_threshold ? spec.refer.target_sensitivity : 0.0;
  r.refer_sensitivity_confidence =
      spec.refer.risk_threshold ? spec.refer.sensitivity_confidence : 0.0;
  r.test_time_views = spec.tta;
  // The instance scores the image for "mahalanobis" (its Gaussian) and, under test-time
  // views, for "energy" too (the logits are then an averaged log-probability, whose
  // energy is 0: it scores the image's own logits). The loader refuses a version whose
  // Gaussian it cannot use, so a missing score means an instance without one (test
  // fakes): no check.
  if (spec.ood.method == OodMethod::kMahalanobis || spec.tta != Tta::kNone) {
    r.ood_score = feature_score.value_or(0.0);
    r.ood_checked = spec.ood.threshold.has_value() && feature_score.has_value();
  } else {
    r.ood_score = EnergyScore(logits, num_classes);
    r.ood_checked = spec.ood.threshold.has_value();
  }
  r.out_of_distribution = r.ood_checked && IsOutOfDistribution(r.ood_score, spec.ood);
}

Batcher::Batcher(std::string model, const BatchingOptions& options, const DecodeLimits& limits,
                 ServingMetrics* metrics, Clock& clock)
    : model_(std::move(model)),
      options_(options),
      limits_(limits),
      metrics_(metrics),
      clock_(clock) {
  const int n = std::max(1, options_.instances);
  workers_.reserve(n);
  for (int i = 0; i < n; ++i) workers_.emplace_back([this] { WorkerLoop(); });
}

Batcher::~Batcher() { Shutdown(absl::ZeroDuration()); }

int Batcher::queue_depth() const {
  absl::MutexLock lock(&mu_);
  return static_cast<int>(queue_.size());
}

void Batcher::UpdateDepthLocked() {
  if (metrics_ != nullptr) metrics_->SetQueueDepth(model_, static_cast<int>(queue_.size()));
}

absl::Status Batcher::Enqueue(PendingRequest request) {
  absl::MutexLock lock(&mu_);
  if (stopping_) {
    return absl::UnavailableError(absl::StrCat("model ", model_, " is shutting down"));
  }
  if (static_cast<int>(queue_.size()) >= options_.max_queue_size) {
    return absl::ResourceExhaustedError(
        absl::StrCat("model ", model_, ": queue full (", options_.max_queue_size, " requests)"));
  }
  request.enqueued = clock_.Now();
  const bool alone = !request.grouped && queue_.empty() && running_requests_ == 0;
  lone_arrivals_ = alone ? lone_arrivals_ + 1 : 0;
  if (queue_.empty()) front_arrived_alone_ = alone;
  queue_.push_back(std::move(request));
  ++arrivals_;
  UpdateDepthLocked();
  return absl::OkStatus();
}

bool Batcher::NextBatch(std::vector<PendingRequest>& batch, absl::Time free_since) {
  const int max_batch = std::max(1, options_.max_batch_size);
  const auto work_or_stop = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return !queue_.empty() || stopping_;
  };
  while (true) {
    if (queue_.empty()) {
      if (stopping_) return false;
      mu_.Await(absl::Condition(&work_or_stop));
      continue;
    }
    const LoadedVersion* version = queue_.front().version.get();
    int same = 0;
    for (const PendingRequest& r : queue_) {
      if (r.version.get() == version && ++same >= max_batch) break;
    }
    // Sequential traffic: the front request came to an empty batcher, as did the
    // arrivals before it, and no one has joined it since. Nobody is coming.
    const bool lone = options_.skip_delay_after_lone_arrivals > 0 && queue_.size() == 1 &&
                      front_arrived_alone_ &&
                      lone_arrivals_ >= options_.skip_delay_after_lone_arrivals;
    // A lone request still waits a tenth of the delay: requests submitted together
    // (the items of one KServe call, a burst after an idle spell) join it.
    // The wait for company counts from when this worker could first have run the
    // front request: its arrival, or the end of the previous batch if it queued
    // while that ran. Counting from the arrival alone, a request that queued during
    // a batch ran at once as soon as it ended, before the clients of that batch
    // could send again: closed-loop clients then locked into a full batch and a
    // batch of one in turn (ResNet-50 bf16, 8 clients: mean batch 4.0, server at
    // 0.49x of the raw forward; docs/performance.md).
    const absl::Time ready_at = std::max(queue_.front().enqueued, free_since) +
                                (lone ? options_.max_queue_delay / 10 : options_.max_queue_delay);
    const absl::Time now = clock_.Now();
    if (same < max_batch && !stopping_ && now < ready_at && DecodeAhead()) {
      continue;  // Time has passed: look again.
    }
    if (same >= max_batch || stopping_ || now >= ready_at) {
      for (auto it = queue_.begin();
           it != queue_.end() && static_cast<int>(batch.size()) < max_batch;) {
        if (it->version.get() == version) {
          batch.push_back(std::move(*it));
          it = queue_.erase(it);
        } else {
          ++it;
        }
      }
      running_requests_ += static_cast<int>(batch.size());
      // Whoever is at the front now arrived while others were queued.
      front_arrived_alone_ = false;
      return true;
    }
    // Until the delay is over, a request arrives, or Shutdown().
    const uint64_t seen = arrivals_;
    const auto arrival_or_stop = [this, seen]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
      return arrivals_ != seen || stopping_;
    };
    clock_.AwaitWithDeadline(mu_, absl::Condition(&arrival_or_stop), ready_at);
  }
}

void Batcher::Decode(const ModelSpec& spec, DecodeJob& job, const char* stage) {
  job.state = DecodeJob::State::kRunning;
  mu_.Unlock();
  const absl::Time start = clock_.Now();
  std::vector<float> input(3 * static_cast<size_t>(spec.image_size) * spec.image_size);
  absl::Status status = DecodeAndPreprocess(spec, job.encoded, limits_, input.data());
  if (metrics_ != nullptr)
    metrics_->RecordDecode(model_, stage, absl::ToDoubleSeconds(clock_.Now() - start));
  mu_.Lock();
  job.input = std::move(input);
  job.status = std::move(status);
  job.state = DecodeJob::State::kDone;  // Wakes FinishDecode() (its condition).
}

bool Batcher::DecodeAhead() {
  for (PendingRequest& r : queue_) {
    if (r.decode == nullptr || r.decode->state != DecodeJob::State::kPending) continue;
    // The queue may change while decoding: hold the job and the version, not `r`.
    const std::shared_ptr<DecodeJob> job = r.decode;
    const std::shared_ptr<const LoadedVersion> version = r.version;
    Decode(version->spec, *job, "ahead");
    return true;
  }
  return false;
}

void Batcher::FinishDecode(const ModelSpec& spec, DecodeJob& job) {
  absl::MutexLock lock(&mu_);
  if (job.state == DecodeJob::State::kPending) {
    Decode(spec, job, "in_batch");
  } else {
    const auto done = [&job] { return job.state == DecodeJob::State::kDone; };
    mu_.Await(absl::Condition(&done));
  }
}

void Batcher::WorkerLoop() {
  std::vector<PendingRequest> batch;
  absl::Time free_since = absl::InfinitePast();
  mu_.Lock();
  while (NextBatch(batch, free_since)) {
    ++running_batches_;
    UpdateDepthLocked();
    mu_.Unlock();
    RunBatch(batch);
    batch.clear();
    free_since = clock_.Now();
    mu_.Lock();
    --running_batches_;  // Shutdown() waits for the batcher to be idle (its condition).
  }
  mu_.Unlock();
}

void Batcher::Answer(PendingRequest& request, absl::StatusOr<InferResult> result) {
  {
    // No longer running before its caller hears back: a caller that sends its next
    // request at once (sequential traffic) must find the batcher idle.
    absl::MutexLock lock(&mu_);
    --running_requests_;
  }
  request.done(std::move(result));
}

void Batcher::RunBatch(std::vector<PendingRequest>& batch) {
  const absl::Time start = clock_.Now();
  std::vector<PendingRequest> live;
  live.reserve(batch.size());
  for (PendingRequest& r : batch) {
    if (r.deadline <= start) {
      Answer(r, absl::DeadlineExceededError(absl::StrCat("deadline passed after ",
                                                      absl::FormatDuration(start - r.enqueued),
                                                      " in the queue of ", model_)));
    } else {
      if (metrics_ != nullptr)
        metrics_->RecordQueueWait(model_, absl::ToDoubleSeconds(start - r.enqueued));
      live.push_back(std::move(r));
    }
  }
  if (live.empty()) return;

  // Assemble the batch input; images that fail to decode are answered now, alone.
  const std::shared_ptr<const LoadedVersion> version_ref = live.front().version;
  const LoadedVersion& version = *version_ref;
  const size_t per = 3 * static_cast<size_t>(version.spec.image_size) * version.spec.image_size;
  std::vector<float> input(per * live.size());
  size_t kept = 0;
  for (PendingRequest& r : live) {
    float* slot = input.data() + kept * per;
    if (r.decode != nullptr) {
      FinishDecode(version.spec, *r.decode);
      if (!r.decode->status.ok()) {
        Answer(r, r.decode->status);
        continue;
      }
      SL_CHECK(r.decode->input.size() == per) << "decoded at the version's size";
      std::copy(r.decode->input.begin(), r.decode->input.end(), slot);
    } else {
      SL_CHECK(r.input.size() == per) << "admission checks the input size";
      std::copy(r.input.begin(), r.input.end(), slot);
    }
    if (&live[kept] != &r) live[kept] = std::move(r);
    ++kept;
  }
  live.resize(kept);
  if (live.empty()) return;
  const int n = static_cast<int>(live.size());
  const absl::Time forward_start = clock_.Now();
  absl::StatusOr<ScoredRun> logits = version.instance->RunScored(input.data(), n);
  const size_t num_classes = static_cast<size_t>(version.spec.classes.size());
  if (logits.ok() && logits->logits.size() != static_cast<size_t>(n) * num_classes) {
    logits = absl::InternalError(absl::StrCat("the model returned ", logits->logits.size(),
                                              " logits for a batch of ", n, ", expected ",
                                              n * num_classes));
  } else if (logits.ok() && !logits->feature_scores.empty() &&
             logits->feature_scores.size() != static_cast<size_t>(n)) {
    logits = absl::InternalError(absl::StrCat("the model returned ", logits->feature_scores.size(),
                                              " feature scores for a batch of ", n));
  }
  const absl::Time computed = clock_.Now();
  const double compute_ms = absl::ToDoubleMilliseconds(computed - forward_start);
  if (metrics_ != nullptr) metrics_->RecordBatch(model_, n, compute_ms / 1e3);
  if (!logits.ok()) {
    SL_LOG(ERROR) << "serving: " << model_ << " v" << version.spec.version << " batch of " << n
                  << " failed: " << logits.status();
    const absl::Status error = absl::InternalError(absl::StrCat(
        model_, " v", version.spec.version, ": inference failed: ", logits.status().message()));
    for (PendingRequest& r : live) Answer(r, error);
    return;
  }
  for (int i = 0; i < n; ++i) {
    InferResult result;
    FillPrediction(version.spec, logits->logits.data() + static_cast<size_t>(i) * num_classes,
                   logits->feature_scores.empty() ? std::nullopt
                                                  : std::optional<double>(logits->feature_scores[i]),
                   result);
    result.model = model_;
    result.version = version.spec.version;
    result.sha256 = version.spec.sha256;
    result.batch_size = n;
    result.queue_ms = absl::ToDoubleMilliseconds(start - live[i].enqueued);
    result.compute_ms = compute_ms;
    result.total_ms = absl::ToDoubleMilliseconds(clock_.Now() - live[i].received);
    Answer(live[i], std::move(result));
  }
}

void Batcher::Shutdown(absl::Duration drain) {
  std::call_once(shutdown_once_, [&] {
    std::deque<PendingRequest> left;
    {
      absl::MutexLock lock(&mu_);
      stopping_ = true;  // Wakes the workers (their conditions).
      const auto idle = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
        return queue_.empty() && running_batches_ == 0;
      };
      clock_.AwaitWithDeadline(mu_, absl::Condition(&idle),
                               clock_.Now() + std::max(drain, absl::ZeroDuration()));
      left.swap(queue_);
      UpdateDepthLocked();
    }
    if (!left.empty()) {
      SL_LOG(WARNING) << "serving: " << model_ << ": " << left.size()
                      << " queued requests not run within the drain time";
    }
    for (PendingRequest& r : left) {
      r.done(absl::UnavailableError(
          absl::StrCat("model ", model_, " shut down before this request ran")));
    }
    for (std::thread& t : workers_) t.join();
  });
}

}  // namespace skinlesion::serving
