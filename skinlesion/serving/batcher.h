// Internal to the serving core: the dynamic batcher of one served model, and the
// pre/postprocessing shared by the batcher and the golden-set check.
//
// Batching rule: a worker takes the oldest queued request and waits until
// max_batch_size requests of the same model version are queued, or max_queue_delay
// has passed since that oldest request was enqueued, then runs them as one batch
// (oldest first, at most max_batch_size, never mixing versions). Requests whose
// deadline has passed by then are answered DeadlineExceeded without compute. A lone
// request does not wait when recent traffic was sequential
// (BatchingOptions::skip_delay_after_lone_arrivals). Every time the batcher reads
// (enqueue times, the delay, deadlines, queue and total time) is its Clock's.
//
// Thread-safe: Enqueue() from any thread; `instances` worker threads run batches.
#ifndef SKINLESION_SERVING_BATCHER_H_
#define SKINLESION_SERVING_BATCHER_H_

#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "skinlesion/image/decode.h"
#include "skinlesion/image/preprocess.h"
#include "skinlesion/serving/clock.h"
#include "skinlesion/serving/preprocessing.h"
#include "skinlesion/serving/serving.h"

namespace skinlesion::serving {

class ServingMetrics;

// A version that can serve: its spec and its instance. Requests hold it by
// shared_ptr, so a version stays loaded while any request needs it.
struct LoadedVersion {
  ModelSpec spec;
  std::shared_ptr<ModelInstance> instance;
};

// Decodes `bytes` (under DecodeLimitsFor(spec, limits): large JPEGs at reduced
// scale) and writes 3 * S * S floats to `out`. Errors are InvalidArgument
// (unsupported/corrupt bytes, or over `limits`).
absl::Status DecodeAndPreprocess(const ModelSpec& spec, absl::string_view bytes,
                                 const DecodeLimits& limits, float* out);

// softmax(logits / T), top class, malignancy risk and the refer rule for one row of
// spec.classes.size() logits, and the out-of-distribution verdict of the version's method
// (`feature_score`: the instance's "mahalanobis" score, if it gave one). Fills the
// prediction fields of InferResult only.
void FillPrediction(const ModelSpec& spec, const float* logits, std::optional<double> feature_score,
                    InferResult& result);

// An encoded image that a batch worker decodes (BatchingOptions::decode_in_worker):
// ahead of time while it waits for a batch to fill, or when the batch runs. `state`,
// `input` and `status` are guarded by the batcher's mutex; a worker decodes with the
// mutex released while the job is kRunning, so no one else touches it.
struct DecodeJob {
  enum class State { kPending, kRunning, kDone };
  std::string encoded;
  State state = State::kPending;
  std::vector<float> input;  // [3, S, S] once kDone with an ok status.
  absl::Status status;
};

struct PendingRequest {
  std::shared_ptr<const LoadedVersion> version;
  // Exactly one of the two: a preprocessed [3, S, S] input, or an image to decode.
  std::vector<float> input;
  std::shared_ptr<DecodeJob> decode;
  absl::Time received;       // When Infer() was called (total_ms), by the batcher's clock.
  absl::Time enqueued;       // Set by Enqueue().
  absl::Time deadline = absl::InfiniteFuture();
  bool grouped = false;  // InferRequest::grouped.
  std::function<void(absl::StatusOr<InferResult>)> done;
};

class Batcher {
 public:
  // `limits` apply to the encoded images the workers decode. `clock` (Clock::Real()
  // in production) must outlive the batcher.
  Batcher(std::string model, const BatchingOptions& options, const DecodeLimits& limits,
          ServingMetrics* metrics, Clock& clock = Clock::Real());
  ~Batcher();  // Shutdown(absl::ZeroDuration()) if not done yet.
  Batcher(const Batcher&) = delete;
  Batcher& operator=(const Batcher&) = delete;

  // Queues the request; on error (ResourceExhausted: queue full; Unavailable:
  // shutting down) `request.done` is NOT called and the request is dropped.
  absl::Status Enqueue(PendingRequest request) ABSL_LOCKS_EXCLUDED(mu_);

  // Stops accepting, runs what is queued (without waiting for fuller batches) for at
  // most `drain` (by the clock), answers what is left Unavailable, and joins the
  // workers (waiting for running batches).
  void Shutdown(absl::Duration drain) ABSL_LOCKS_EXCLUDED(mu_);

  int queue_depth() const ABSL_LOCKS_EXCLUDED(mu_);

 private:
  void WorkerLoop() ABSL_LOCKS_EXCLUDED(mu_);
  // Takes the next batch to run; false when the worker should exit.
  // `free_since`: when the calling worker finished its previous batch (InfinitePast
  // for its first); the wait for company counts from then for requests that queued
  // while it was busy.
  bool NextBatch(std::vector<PendingRequest>& batch, absl::Time free_since)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // While a batch fills: decodes the oldest queued image nobody has started; false
  // when there is none (mu_ released while decoding).
  bool DecodeAhead() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Decodes a kPending `job` with mu_ released; records the time under `stage`.
  void Decode(const ModelSpec& spec, DecodeJob& job, const char* stage)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Makes `job` kDone (decoding it here, or waiting for the worker that is).
  void FinishDecode(const ModelSpec& spec, DecodeJob& job) ABSL_LOCKS_EXCLUDED(mu_);
  void RunBatch(std::vector<PendingRequest>& batch) ABSL_LOCKS_EXCLUDED(mu_);
  // Delivers a taken request's result, first removing it from running_requests_.
  void Answer(PendingRequest& request, absl::StatusOr<InferResult> result)
      ABSL_LOCKS_EXCLUDED(mu_);
  void UpdateDepthLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const std::string model_;
  const BatchingOptions options_;
  const DecodeLimits limits_;
  ServingMetrics* const metrics_;
  Clock& clock_;

  // Also guards the DecodeJobs of queued and running requests (DecodeJob).
  mutable absl::Mutex mu_;
  std::deque<PendingRequest> queue_ ABSL_GUARDED_BY(mu_);
  uint64_t arrivals_ ABSL_GUARDED_BY(mu_) = 0;  // Requests ever queued (wakes workers).
  int running_batches_ ABSL_GUARDED_BY(mu_) = 0;
  int running_requests_ ABSL_GUARDED_BY(mu_) = 0;  // Taken into a batch and not answered yet.
  // Consecutive arrivals that found nothing queued or running (reset by one that
  // found company); the front request skips the delay while it is high enough.
  int lone_arrivals_ ABSL_GUARDED_BY(mu_) = 0;
  bool front_arrived_alone_ ABSL_GUARDED_BY(mu_) = false;  // The request at the front did.
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;  // No new requests; no waiting for fuller batches.
  std::vector<std::thread> workers_;
  std::once_flag shutdown_once_;
};

}  // namespace skinlesion::serving

#endif  // SKINLESION_SERVING_BATCHER_H_
