// The serving core: model versions loaded beside each other and swapped atomically
// (hot reload), a dynamic batcher per served model, and one blocking/async entry
// point that the gRPC front ends (skinlesion.v1 ClassificationService, KServe v2)
// call. Free of LibTorch: the model itself is reached only through ModelInstance,
// implemented by the LibTorch adapter (torch_instance.h), as TF Serving keeps
// TensorFlow out of its core.
//
//   ServingOptions options;
//   options.models = {{.name = "ham10000", .alias = "production"}};
//   SL_ASSIGN_OR_RETURN(auto source, LocalRegistrySource::Create("/var/lib/skinlesion/registry"));
//   SL_ASSIGN_OR_RETURN(auto core, ServingCore::Create(options, std::move(source),
//                                                       MakeTorchLoader({.threads = 2}), metrics));
//   InferRequest request{.model = "ham10000", .encoded_image = bytes};
//   SL_ASSIGN_OR_RETURN(InferResult r, core->Infer(std::move(request)));
#ifndef SKINLESION_SERVING_SERVING_H_
#define SKINLESION_SERVING_SERVING_H_

#include <algorithm>
#include <array>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "nlohmann/json.hpp"
#include "skinlesion/common/classes.h"
#include "skinlesion/common/ood.h"
#include "skinlesion/common/precision.h"
#include "skinlesion/common/referral.h"
#include "skinlesion/common/tta.h"
#include "skinlesion/manifest/manifest.h"

namespace skinlesion::serving {

class Clock;  // clock.h

// What a loaded version is: its manifest (skinlesion/manifest/manifest.h: the
// registry's "model", "version", "files" plus the trainer's "architecture",
// "preprocessing", "calibration", "refer", "ood", "golden_set", ...) and where its
// files are.
//
// The golden set: each file (in the version directory) goes through the serving
// decode + preprocess path; its calibrated probabilities must be within the tolerance
// (max abs) of the stored ones, which were computed in fp32, before the version may
// serve. An instance running in bf16 is held to `tolerance_bf16` (at least
// `tolerance`): bf16 keeps 8 bits of mantissa, and the measured largest probability
// difference bf16 vs fp32 over the 895 test images is in docs/performance.md
// ("bf16"); a corrupt or wrong model differs by far more.
struct ModelSpec : ModelManifest {
  std::string directory;  // Where the files are (read-only).
};

// Reads <directory>/manifest.json (ReadModelManifest: NotFound, DataLoss, or
// InvalidArgument naming the field) and checks that its preprocessing is one the
// serving path can run.
absl::StatusOr<ModelSpec> ReadModelSpec(const std::string& directory);

// An explanation heatmap of one prediction (docs/inference.md, "Explanations").
struct Explanation {
  std::string method;  // "grad-cam" (CNNs) or "attention-rollout" (ViT).
  int width = 0, height = 0;  // The model's feature grid, e.g. 7x7 (ResNet-50 at 224).
  // The part of the uploaded image the grid spans: "full-image" when the spec's
  // resize mode is "resize", else "center-square" (the centre crop the model saw).
  std::string covers;
  std::vector<float> heat;  // height * width values in [0, 1], row-major.
};

// What one forward pass gives: the logits and, where the instance computes it, the
// out-of-distribution score of each image (ood.h): "mahalanobis" from the version's
// Gaussian, or, for "energy" under the spec's test-time views (tta.h), the energy of
// the image's own logits (the logits are then the log of the views' mean softmax).
struct ScoredRun {
  std::vector<float> logits;           // n * num_classes (the spec's), row-major.
  std::vector<double> feature_scores;  // n values, or empty.
};

// One loaded model version. Run() is called by the batcher's instance threads,
// possibly concurrently; the instance must be thread-safe.
class ModelInstance {
 public:
  virtual ~ModelInstance() = default;
  // `input`: n preprocessed images, contiguous float [n, 3, S, S] (S = image_size,
  // normalised with mean/std). Returns n * num_classes logits (the spec's), row-major;
  // under the spec's test-time augmentation the log of the views' mean softmax.
  virtual absl::StatusOr<std::vector<float>> Run(const float* input, int n) = 0;
  // Run() plus the feature OOD scores when the version has a fitted Gaussian. The
  // batcher calls this one. Default: Run() without scores.
  virtual absl::StatusOr<ScoredRun> RunScored(const float* input, int n) {
    absl::StatusOr<std::vector<float>> logits = Run(input, n);
    if (!logits.ok()) return logits.status();
    return ScoredRun{*std::move(logits), {}};
  }
  // An explanation heatmap for one preprocessed image [3, S, S] and a class in
  // [0, num_classes). Fills method, width, height, heat (the core sets covers).
  // May run concurrently with Run(). Default: Unimplemented.
  virtual absl::StatusOr<Explanation> Explain(const float* input, int target_class) {
    (void)input;
    (void)target_class;
    return absl::UnimplementedError("this model instance cannot compute explanations");
  }
  // The precision Run() computes in (inputs and logits stay fp32 either way).
  virtual Precision precision() const { return Precision::kFp32; }
  // How it runs, for logs and /metrics: "bf16, channels-last"; "" if not said.
  virtual std::string numerics() const { return std::string(PrecisionName(precision())); }
};

// Loads a version directory (already checksum-verified by the caller).
using ModelLoader =
    std::function<absl::StatusOr<std::shared_ptr<ModelInstance>>(const ModelSpec& spec)>;

// Runs every golden item of `spec` through the serving path (decode, preprocess,
// instance.Run, softmax(logits / T)) and compares within
// golden_set->ToleranceFor(instance.precision()). OK when spec.golden_set is absent
// (logged) or every item matches; FailedPrecondition naming the file, the class and
// the difference otherwise; NotFound / InvalidArgument for a missing or undecodable
// golden file.
absl::Status CheckGoldenSet(const ModelSpec& spec, ModelInstance& instance);

// Where versions come from: a registry on local disk, or a remote RegistryService
// whose versions are downloaded (and verified) into a cache directory.
class ModelSource {
 public:
  virtual ~ModelSource() = default;
  // The version `alias` of `model` points at now. An alias that is a plain decimal
  // number ("3") pins that version. NotFound when the model, alias or version does
  // not exist.
  virtual absl::StatusOr<int64_t> Resolve(const std::string& model, const std::string& alias) = 0;
  // A local directory holding version `version`, every file's sha256 verified
  // against its manifest (DataLoss on mismatch).
  virtual absl::StatusOr<std::string> Fetch(const std::string& model, int64_t version) = 0;
};

struct ServedModelOptions {
  std::string name;                  // Registry model name.
  std::string alias = "production";  // Followed: the served version moves with it.
};

struct BatchingOptions {
  int max_batch_size = 8;
  // How long the oldest waiting request may wait for company: from its arrival, or
  // from the end of the worker's previous batch if it arrived while that ran.
  absl::Duration max_queue_delay = absl::Milliseconds(5);
  int max_queue_size = 256;                                // Beyond: ResourceExhausted.
  int instances = 1;  // Threads running batches (each calls Run()).
  // Where encoded images are decoded and preprocessed. true: by the batch worker,
  // one image after another, ahead of time while it waits for a batch to fill (so
  // decoding overlaps the queue delay) and otherwise just before the forward pass of
  // the batch; decoding then never competes with a running forward pass for the
  // cores. An image that fails to decode is answered alone. A batch may start up to
  // one decode later than max_queue_delay. false: on the calling thread before the
  // request is queued (decoding overlaps batches; better with cores to spare).
  bool decode_in_worker = true;
  // A request that arrives to an empty batcher (nothing queued or running) after
  // this many consecutive arrivals that also found it empty waits only a tenth of
  // max_queue_delay for company (enough for requests submitted together, such as the
  // items of one KServe call): under sequential (concurrency 1) traffic no company
  // comes, and the wait is pure latency. Any arrival that finds another request
  // queued or running resets the count, so concurrent traffic batches as before.
  // 0: always wait the full delay (the plain rule).
  int skip_delay_after_lone_arrivals = 3;
};

struct ServingOptions {
  std::vector<ServedModelOptions> models;
  BatchingOptions batching;
  absl::Duration poll_interval = absl::Seconds(2);  // How often aliases are re-resolved.
  int warmup_runs = 2;             // Forward passes on a new version before the golden check.
  int max_image_bytes = 20 << 20;  // Decode limits for encoded images.
  int max_image_pixels = 50'000'000;
  // What one image may cost to decode, in proportion to the model (issue 16). JPEGs
  // much larger than the model needs decode at 1/2, 1/4 or 1/8 scale
  // (DecodeLimitsFor); the decoded pixels (after that) may not exceed
  // decode_budget_factor * size^2 of the model's input, nor fall below
  // min_decode_budget_pixels (a 49 Mpx PNG for a 112 px model is refused from its
  // header; a 49 Mpx JPEG decodes at 1/8). 0: no budget beyond max_image_pixels.
  int decode_budget_factor = 256;
  int64_t min_decode_budget_pixels = 16'000'000;
  // An image that decodes to more than heavy_decode_pixels pixels, whose header
  // claims more than 8x that (a reduced JPEG still reads every block), or whose
  // encoded data is over heavy_decode_bytes, is decoded on the calling thread, never
  // by the batch worker (so it delays no one else's batch), with at most
  // max_concurrent_heavy_decodes at once per server; up to max_waiting_heavy_decodes
  // more wait for a slot (until their deadline), beyond that ResourceExhausted.
  // A 12 Mpx phone JPEG for a 112 px model (decoded at 1/4: 0.75 Mpx) is light.
  int64_t heavy_decode_pixels = 2'000'000;
  int64_t heavy_decode_bytes = 4 << 20;
  int max_concurrent_heavy_decodes = 1;
  int max_waiting_heavy_decodes = 4;
  // Fairness: heavy decodes one client (InferRequest::client) may have running or
  // waiting at once; beyond that its next heavy image is ResourceExhausted at once,
  // so one client cannot fill every slot and waiting place.
  int max_heavy_decodes_per_client = 1;
  // A version that failed to load is tried again only after this many polls (or
  // as soon as the alias moves to another version).
  int retry_failed_after_polls = 5;
  // Explain() calls running at once per served model (each is a forward and,
  // for Grad-CAM, a backward pass on the caller's thread); others wait up to their
  // deadline.
  int max_concurrent_explanations = 1;
  // Where the core reads the time and waits with deadlines (clock.h): request times
  // and deadlines, the batching delay, slot waits, the alias poll interval and the
  // shutdown drain. nullptr: the real clock. Tests pass a FakeClock (which must
  // outlive the core) to drive time by hand; request deadlines are then its times.
  Clock* clock = nullptr;
};

struct InferRequest {
  std::string model;    // Empty: the only / first served model.
  int64_t version = 0;  // 0: the current version; else that version if loaded.
  // Exactly one of the two inputs:
  std::string encoded_image;  // JPEG/PNG/WebP/BMP bytes; decoded + preprocessed here.
  std::vector<float> tensor;  // Preprocessed [3, S, S] float (KServe FP32 input).
  absl::Time deadline = absl::InfiniteFuture();
  // Who sent it (the gateway's client address, else the gRPC peer's host); empty:
  // unknown. Heavy-decode fairness counts by it.
  std::string client;
  // One of several requests submitted together (the items of one KServe call): it
  // never takes the lone-request shortcut (BatchingOptions::
  // skip_delay_after_lone_arrivals), so the group waits for its other members.
  bool grouped = false;
};

struct ExplainRequest {
  std::string model;    // Empty: the only / first served model.
  int64_t version = 0;  // The version the prediction used (must be loaded); 0: current.
  // Exactly one of the two inputs, as InferRequest:
  std::string encoded_image;
  std::vector<float> tensor;
  int target_class = 0;  // In [0, num_classes), usually the prediction's top class.
  absl::Time deadline = absl::InfiniteFuture();
  std::string client;  // As InferRequest::client.
};

struct InferResult {
  // One per class of `classes` (the serving version's label set).
  std::vector<float> logits;
  std::vector<float> probabilities;  // Calibrated.
  LabelSet classes = LabelSet::Ham10000();  // The serving version's (what the indices mean).
  int top_class = 0;
  float confidence = 0;
  float malignancy_risk = 0;
  bool refer = false;
  ReferRule refer_rule = ReferRule::kNone;  // Which rule fired (referral.h).
  std::string refer_reason;
  std::optional<double> refer_risk_threshold;  // The version's, if it has one.
  double refer_target_sensitivity = 0;
  double refer_sensitivity_confidence = 0;  // 0 with no threshold or a point-estimate fit.
  Tta test_time_views =
      Tta::kNone;  // The version's views (tta.h); `logits` then log-probabilities.
  // Out-of-distribution check (ood.h): the score of the version's method (feature
  // distance or energy) and whether it is above the version's threshold ("not a
  // dermoscopic lesion photo").
  double ood_score = 0;
  bool out_of_distribution = false;
  bool ood_checked = false;  // The version has a threshold.
  std::string model;
  int64_t version = 0;
  std::string sha256;
  int batch_size = 0;  // Size of the batch this request ran in.
  double queue_ms = 0, compute_ms = 0, total_ms = 0;
};

struct ServedModelStatus {
  std::string name;
  std::string alias;
  bool ready = false;
  ModelSpec spec;  // Of the current version (when ready).
  std::string numerics;  // How the current version runs: "bf16, channels-last".
  std::vector<int64_t> loaded_versions;
  std::string last_error;      // Of the last failed load, if any.
  int64_t failed_version = 0;  // The version last_error is about (0: resolving).
};

class ServingMetrics;  // telemetry.h

class ServingCore {
 public:
  // Starts loading every model's current version in the background (Ready() turns
  // true when all are loaded) and a thread that follows the aliases.
  static absl::StatusOr<std::unique_ptr<ServingCore>> Create(ServingOptions options,
                                                             std::unique_ptr<ModelSource> source,
                                                             ModelLoader loader,
                                                             ServingMetrics* metrics = nullptr);
  virtual ~ServingCore() = default;

  // Blocking. Errors: InvalidArgument (bad image, image over the size limits, tensor
  // shape, both or neither input set), NotFound (unknown
  // model or version), ResourceExhausted (queue full), DeadlineExceeded (deadline
  // passed before compute), Unavailable (no version loaded yet, or shutting down).
  virtual absl::StatusOr<InferResult> Infer(InferRequest request) = 0;
  // The same, completing on a batcher thread (or, for a request rejected before it
  // is queued, on the calling thread before InferAsync returns). Decoding and
  // preprocessing run on the calling thread.
  virtual void InferAsync(InferRequest request,
                          std::function<void(absl::StatusOr<InferResult>)> done) = 0;

  // An explanation heatmap for `request.target_class`, computed on the calling
  // thread (decoding and preprocessing as Infer) by the version asked for, with at
  // most ServingOptions::max_concurrent_explanations running per model. Errors as
  // Infer (NotFound for a version not loaded), InvalidArgument for a target outside
  // [0, num_classes), DeadlineExceeded when the deadline passes while waiting for a
  // slot, Unimplemented when the model cannot explain.
  virtual absl::StatusOr<Explanation> Explain(const ExplainRequest& request) = 0;

  virtual bool Ready() const = 0;
  virtual std::vector<ServedModelStatus> Models() const = 0;
  // Stops accepting (new requests get Unavailable), finishes queued and running
  // requests within `drain`, stops the alias follower.
  virtual void Shutdown(absl::Duration drain) = 0;
};

}  // namespace skinlesion::serving

#endif  // SKINLESION_SERVING_SERVING_H_
