// ServingCore: one Batcher and one alias follower per served model.
#include <algorithm>
#include <atomic>
#include <cmath>
#include <future>
#include <limits>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/synchronization/mutex.h"
#include "skinlesion/common/logging.h"
#include "skinlesion/common/status.h"
#include "skinlesion/serving/batcher.h"
#include "skinlesion/serving/clock.h"
#include "skinlesion/serving/preprocessing.h"
#include "skinlesion/serving/serving.h"
#include "skinlesion/serving/slot_gate.h"
#include "skinlesion/serving/telemetry.h"

namespace skinlesion::serving {
namespace {

using DoneFn = std::function<void(absl::StatusOr<InferResult>)>;

// What the version's manifest says its answers' shares should be (telemetry.h): the
// share of lesions its referral rule referred where it was fitted, and the share of
// lesions its out-of-distribution threshold was fitted to reject.
ExpectedAnswerShares ExpectedShares(const ModelSpec& spec) {
  ExpectedAnswerShares e;
  const nlohmann::json& doc = spec.document;
  if (auto refer = doc.find("refer"); refer != doc.end() && refer->is_object()) {
    if (auto fitted = refer->find("validation"); fitted != refer->end() && fitted->is_object()) {
      auto rate = fitted->find("refer_rate");
      if (rate != fitted->end() && rate->is_number()) e.refer = rate->get<double>();
    }
  }
  if (spec.ood.threshold.has_value()) e.not_a_lesion = spec.ood.reject_rate;
  return e;
}

// The nice value added to the heavy-decode threads (CFS: a nice-10 thread gets about
// a tenth of a core that a nice-0 thread also wants).
constexpr int kHeavyDecodeNice = 10;

struct Model {
  ServedModelOptions options;
  std::unique_ptr<Batcher> batcher;
  std::thread follower;

  mutable absl::Mutex mu;
  std::shared_ptr<const LoadedVersion> current ABSL_GUARDED_BY(mu);
  // Versions swapped out; alive while a request still holds them.
  std::map<int64_t, std::weak_ptr<const LoadedVersion>> retired ABSL_GUARDED_BY(mu);
  std::string last_error ABSL_GUARDED_BY(mu);
  int64_t failed_version ABSL_GUARDED_BY(mu) = 0;
  int polls_since_failure ABSL_GUARDED_BY(mu) = 0;

  // Explain() calls running now: at most ServingOptions::max_concurrent_explanations.
  std::unique_ptr<SlotGate> explain_slots;
};

absl::Status ValidateOptions(const ServingOptions& o) {
  std::vector<std::string> errors;
  if (o.models.empty()) errors.push_back("no models to serve");
  std::set<std::string> names;
  for (const ServedModelOptions& m : o.models) {
    if (m.name.empty()) errors.push_back("a served model has an empty name");
    if (m.alias.empty()) errors.push_back(absl::StrCat("model ", m.name, " has an empty alias"));
    if (!names.insert(m.name).second)
      errors.push_back(absl::StrCat("model ", m.name, " is listed twice"));
  }
  // "<name> must be >= <min>, got <value>" for each integer option below its minimum.
  auto at_least = [&](const char* name, int64_t value, int64_t min) {
    if (value < min) errors.push_back(absl::StrCat(name, " must be >= ", min, ", got ", value));
  };
  const BatchingOptions& b = o.batching;
  at_least("batching.max_batch_size", b.max_batch_size, 1);
  at_least("batching.max_queue_size", b.max_queue_size, 1);
  at_least("batching.instances", b.instances, 1);
  at_least("batching.skip_delay_after_lone_arrivals", b.skip_delay_after_lone_arrivals, 0);
  if (b.max_queue_delay < absl::ZeroDuration() || b.max_queue_delay > absl::Seconds(10)) {
    errors.push_back(absl::StrCat("batching.max_queue_delay must be in [0, 10s], got ",
                                  absl::FormatDuration(b.max_queue_delay)));
  }
  if (o.poll_interval <= absl::ZeroDuration() || o.poll_interval > absl::Hours(24)) {
    errors.push_back(absl::StrCat("poll_interval must be in (0, 24h], got ",
                                  absl::FormatDuration(o.poll_interval)));
  }
  at_least("warmup_runs", o.warmup_runs, 0);
  at_least("max_image_bytes", o.max_image_bytes, 1);
  at_least("max_image_pixels", o.max_image_pixels, 1);
  at_least("retry_failed_after_polls", o.retry_failed_after_polls, 1);
  at_least("decode_budget_factor", o.decode_budget_factor, 0);
  at_least("min_decode_budget_pixels", o.min_decode_budget_pixels, 0);
  at_least("heavy_decode_pixels", o.heavy_decode_pixels, 1);
  at_least("heavy_decode_bytes", o.heavy_decode_bytes, 1);
  at_least("max_concurrent_heavy_decodes", o.max_concurrent_heavy_decodes, 1);
  at_least("max_waiting_heavy_decodes", o.max_waiting_heavy_decodes, 0);
  at_least("max_heavy_decodes_per_client", o.max_heavy_decodes_per_client, 1);
  at_least("max_concurrent_explanations", o.max_concurrent_explanations, 1);
  if (!errors.empty()) return absl::InvalidArgumentError(absl::StrJoin(errors, "; "));
  return absl::OkStatus();
}

class ServingCoreImpl final : public ServingCore {
 public:
  ServingCoreImpl(ServingOptions options, std::unique_ptr<ModelSource> source, ModelLoader loader,
                  ServingMetrics* metrics)
      : options_(std::move(options)),
        clock_(options_.clock != nullptr ? *options_.clock : Clock::Real()),
        source_(std::move(source)),
        loader_(std::move(loader)),
        metrics_(metrics) {
    limits_.max_bytes = static_cast<size_t>(options_.max_image_bytes);
    limits_.max_pixels = static_cast<uint64_t>(options_.max_image_pixels);
    for (const ServedModelOptions& m : options_.models) {
      auto model = std::make_unique<Model>();
      model->options = m;
      model->batcher =
          std::make_unique<Batcher>(m.name, options_.batching, limits_, metrics_, clock_);
      model->explain_slots = std::make_unique<SlotGate>(
          options_.max_concurrent_explanations, kUnlimitedWaiters, "explanation",
          absl::StrCat(" of model ", m.name), std::numeric_limits<int>::max(), clock_);
      models_.push_back(std::move(model));
      if (metrics_ != nullptr) metrics_->DeclareModel(m.name);
    }
    for (auto& m : models_) {
      Model* model = m.get();
      model->follower = std::thread([this, model] { Follow(*model); });
    }
  }

  ~ServingCoreImpl() override { Shutdown(absl::Seconds(10)); }

  absl::StatusOr<InferResult> Infer(InferRequest request) override {
    std::promise<absl::StatusOr<InferResult>> promise;
    std::future<absl::StatusOr<InferResult>> future = promise.get_future();
    InferAsync(std::move(request),
               [&promise](absl::StatusOr<InferResult> r) { promise.set_value(std::move(r)); });
    return future.get();
  }

  void InferAsync(InferRequest request, DoneFn done) override {
    const absl::Time received = clock_.Now();
    auto shared_done = std::make_shared<DoneFn>(std::move(done));
    auto finish = [this, received, shared_done](const std::string& model, int64_t version,
                                                absl::StatusOr<InferResult> r) {
      if (metrics_ != nullptr) {
        metrics_->RecordRequest(model, r.ok() ? r->version : version, r.status().code(),
                                absl::ToDoubleSeconds(clock_.Now() - received));
        if (r.ok()) {
          metrics_->RecordAnswer(model, r->version,
                                 AnswerLabel(r->out_of_distribution, r->refer, r->refer_rule));
        }
      }
      (*shared_done)(std::move(r));
    };

    Model* model = FindModel(request.model);
    if (model == nullptr) {
      std::vector<std::string> names;
      for (const auto& m : models_) names.push_back(m->options.name);
      finish("", 0,
             absl::NotFoundError(absl::StrCat("unknown model \"", request.model,
                                              "\" (serving: ", absl::StrJoin(names, ", "), ")")));
      return;
    }
    const std::string& name = model->options.name;
    if (shutting_down_.load()) {
      finish(name, 0, absl::UnavailableError("the server is shutting down"));
      return;
    }
    absl::StatusOr<std::shared_ptr<const LoadedVersion>> version =
        PickVersion(*model, request.version);
    if (!version.ok()) {
      finish(name, 0, version.status());
      return;
    }
    const ModelSpec& spec = (*version)->spec;
    PendingRequest pending;
    if (absl::Status s = PrepareInput(spec, request, pending); !s.ok()) {
      finish(name, spec.version, s);
      return;
    }
    if (request.deadline <= clock_.Now()) {
      finish(name, spec.version,
             absl::DeadlineExceededError("deadline passed before the request was queued"));
      return;
    }
    pending.version = *version;
    pending.received = received;
    pending.deadline = request.deadline;
    pending.grouped = request.grouped;
    pending.done = [finish, name, v = spec.version](absl::StatusOr<InferResult> r) {
      finish(name, v, std::move(r));
    };
    if (absl::Status s = model->batcher->Enqueue(std::move(pending)); !s.ok()) {
      finish(name, spec.version, s);
    }
  }

  bool Ready() const override {
    for (const auto& m : models_) {
      absl::MutexLock lock(&m->mu);
      if (m->current == nullptr) return false;
    }
    return true;
  }

  std::vector<ServedModelStatus> Models() const override {
    std::vector<ServedModelStatus> out;
    for (const auto& m : models_) {
      ServedModelStatus s;
      s.name = m->options.name;
      s.alias = m->options.alias;
      absl::MutexLock lock(&m->mu);
      s.ready = m->current != nullptr;
      if (m->current != nullptr) {
        s.spec = m->current->spec;
        s.numerics = m->current->instance->numerics();
        s.loaded_versions.push_back(m->current->spec.version);
      }
      for (const auto& [v, weak] : m->retired) {
        if (!weak.expired()) s.loaded_versions.push_back(v);
      }
      std::sort(s.loaded_versions.begin(), s.loaded_versions.end());
      s.last_error = m->last_error;
      s.failed_version = m->failed_version;
      out.push_back(std::move(s));
    }
    return out;
  }

  void Shutdown(absl::Duration drain) override {
    std::call_once(shutdown_once_, [&] {
      const absl::Time until = clock_.Now() + drain;
      shutting_down_.store(true);
      {
        absl::MutexLock lock(&stop_mu_);
        stop_ = true;  // Wakes the followers (their condition).
      }
      // Explain() calls and heavy decodes waiting for a slot give up.
      for (auto& m : models_) m->explain_slots->Close();
      heavy_decodes_.Close();
      for (auto& m : models_) {
        if (m->follower.joinable()) m->follower.join();
      }
      for (auto& m : models_)
        m->batcher->Shutdown(std::max(until - clock_.Now(), absl::ZeroDuration()));
      SL_LOG(INFO) << "serving: shut down";
    });
  }

  absl::StatusOr<Explanation> Explain(const ExplainRequest& request) override {
    const absl::Time start = clock_.Now();
    Model* model = FindModel(request.model);
    absl::StatusOr<Explanation> result =
        model == nullptr
            ? absl::NotFoundError(absl::StrCat("unknown model \"", request.model, "\""))
            : ExplainOn(*model, request);
    if (metrics_ != nullptr && model != nullptr) {
      metrics_->RecordExplain(model->options.name, result.status().code(),
                              absl::ToDoubleSeconds(clock_.Now() - start));
    }
    return result;
  }

 private:
  // Explain() for a known model: version, input, a slot, then the instance's
  // explanation on this thread.
  absl::StatusOr<Explanation> ExplainOn(Model& model, const ExplainRequest& request) {
    if (shutting_down_.load()) return absl::UnavailableError("the server is shutting down");
    SL_ASSIGN_OR_RETURN(std::shared_ptr<const LoadedVersion> version,
                        PickVersion(model, request.version));
    const ModelSpec& spec = version->spec;
    if (request.target_class < 0 || request.target_class >= spec.classes.size()) {
      return absl::InvalidArgumentError(absl::StrCat("target class ", request.target_class,
                                                     " is outside [0, ", spec.classes.size(), ")"));
    }
    SL_RETURN_IF_ERROR(CheckInput(spec, request.encoded_image, request.tensor));
    std::vector<float> input;
    if (!request.tensor.empty()) {
      input = request.tensor;
    } else {
      input.resize(3 * static_cast<size_t>(spec.image_size) * spec.image_size);
      SL_RETURN_IF_ERROR(DecodeOnCaller(spec, request.encoded_image, request.deadline,
                                        request.client, "explain", input.data()));
    }

    // A slot among max_concurrent_explanations, waited for until the deadline.
    absl::StatusOr<Explanation> explanation;
    {
      SL_ASSIGN_OR_RETURN(SlotGate::Slot slot, model.explain_slots->Acquire(request.deadline));
      explanation = version->instance->Explain(input.data(), request.target_class);
    }
    if (!explanation.ok()) return explanation.status();
    if (explanation->width < 1 || explanation->height < 1 ||
        explanation->heat.size() != static_cast<size_t>(explanation->width) * explanation->height) {
      return absl::InternalError(absl::StrCat("the model returned a ", explanation->width, "x",
                                              explanation->height, " explanation with ",
                                              explanation->heat.size(), " values"));
    }
    explanation->covers = spec.resize == "resize" ? "full-image" : "center-square";
    return explanation;
  }

  Model* FindModel(const std::string& name) {
    if (name.empty()) return models_.front().get();
    for (auto& m : models_) {
      if (m->options.name == name) return m.get();
    }
    return nullptr;
  }

  absl::StatusOr<std::shared_ptr<const LoadedVersion>> PickVersion(Model& m, int64_t wanted)
      ABSL_LOCKS_EXCLUDED(m.mu) {
    absl::MutexLock lock(&m.mu);
    if (wanted == 0) {
      if (m.current == nullptr) {
        return absl::UnavailableError(absl::StrCat(
            "model ", m.options.name, " has no version loaded yet",
            m.last_error.empty() ? "" : absl::StrCat(" (last error: ", m.last_error, ")")));
      }
      return m.current;
    }
    if (m.current != nullptr && m.current->spec.version == wanted) return m.current;
    std::vector<std::string> loaded;
    if (m.current != nullptr) loaded.push_back(absl::StrCat(m.current->spec.version));
    if (auto it = m.retired.find(wanted); it != m.retired.end()) {
      if (std::shared_ptr<const LoadedVersion> v = it->second.lock()) return v;
    }
    for (const auto& [v, weak] : m.retired) {
      if (!weak.expired()) loaded.push_back(absl::StrCat(v));
    }
    return absl::NotFoundError(absl::StrCat("version ", wanted, " of model ", m.options.name,
                                            " is not loaded (loaded: ", absl::StrJoin(loaded, ", "),
                                            ")"));
  }

  // Exactly one input; a tensor of the version's [3, S, S] size with finite values.
  static absl::Status CheckInput(const ModelSpec& spec, const std::string& encoded_image,
                                 const std::vector<float>& tensor) {
    if (!encoded_image.empty() && !tensor.empty()) {
      return absl::InvalidArgumentError("set either encoded_image or tensor, not both");
    }
    if (encoded_image.empty() && tensor.empty()) {
      return absl::InvalidArgumentError("no input: set encoded_image or tensor");
    }
    if (tensor.empty()) return absl::OkStatus();
    const size_t per = 3 * static_cast<size_t>(spec.image_size) * spec.image_size;
    if (tensor.size() != per) {
      return absl::InvalidArgumentError(absl::StrCat(
          "tensor has ", tensor.size(), " floats; ", spec.name, " v", spec.version, " expects [3, ",
          spec.image_size, ", ", spec.image_size, "] = ", per));
    }
    for (size_t i = 0; i < per; ++i) {
      if (!std::isfinite(tensor[i])) {
        return absl::InvalidArgumentError(absl::StrCat("tensor value ", i, " is not finite"));
      }
    }
    return absl::OkStatus();
  }

  // The decode limits for images fed to `spec`: the server's, JPEG reduction and the
  // model's pixel budget.
  DecodeLimits LimitsFor(const ModelSpec& spec) const {
    DecodeLimits limits = DecodeLimitsFor(spec, limits_);
    limits.max_decoded_pixels = DecodePixelBudget(spec, options_.decode_budget_factor,
                                                  options_.min_decode_budget_pixels);
    return limits;
  }

  // Decodes `bytes` for `spec` into `out` on the calling thread: refused from its
  // header when over a limit or the model's budget; a heavy image (heavy_decode_pixels,
  // heavy_decode_bytes) waits for one of max_concurrent_heavy_decodes slots first.
  // The time goes to the decode histogram under `stage` ("heavy" when heavy).
  absl::Status DecodeOnCaller(const ModelSpec& spec, absl::string_view bytes, absl::Time deadline,
                              const std::string& client, const char* stage, float* out) {
    const DecodeLimits limits = LimitsFor(spec);
    SL_ASSIGN_OR_RETURN(const bool heavy, IsHeavy(bytes, limits));
    return DecodeWith(spec, bytes, limits, heavy, deadline, client, stage, out);
  }

  // DecodeOnCaller once the header has been read: `limits` from LimitsFor(spec) and
  // `heavy` from IsHeavy.
  absl::Status DecodeWith(const ModelSpec& spec, absl::string_view bytes,
                          const DecodeLimits& limits, bool heavy, absl::Time deadline,
                          const std::string& client, const char* stage, float* out) {
    std::optional<SlotGate::Slot> slot;
    if (heavy) {
      SL_ASSIGN_OR_RETURN(SlotGate::Slot acquired, heavy_decodes_.Acquire(deadline, client));
      slot.emplace(std::move(acquired));
    }
    const absl::Time start = clock_.Now();
    auto decode = [&] { return DecodeAndPreprocess(spec, bytes, limits, out); };
    // A heavy image decodes on a low-priority thread: on a small machine the batch
    // worker (everyone else's requests) gets the cores first.
    absl::Status decoded = heavy ? heavy_runner_.Run(decode) : decode();
    if (metrics_ != nullptr) {
      metrics_->RecordDecode(spec.name, heavy ? "heavy" : stage,
                             absl::ToDoubleSeconds(clock_.Now() - start));
    }
    return decoded;
  }

  // Reads the image's header (microseconds): InvalidArgument when it is not an
  // accepted image or is over a limit or the budget (the client's fault like a
  // corrupt image, as DecodeAndPreprocess), else whether its decode is heavy.
  absl::StatusOr<bool> IsHeavy(absl::string_view bytes, const DecodeLimits& limits) const {
    absl::StatusOr<DecodePlan> plan = PlanDecode(bytes, limits);
    if (!plan.ok()) {
      return absl::InvalidArgumentError(absl::StrCat("image: ", plan.status().message()));
    }
    // A reduced JPEG still entropy-decodes every block of the full image (a 49 Mpx
    // JPEG at 1/8 scale: about 60 ms, against 1 s at full size), hence the header's
    // pixels count too, at an eighth of their weight.
    const uint64_t heavy = static_cast<uint64_t>(options_.heavy_decode_pixels);
    const uint64_t header_pixels = uint64_t(plan->info.width) * uint64_t(plan->info.height);
    return plan->pixels() > heavy || header_pixels > 8 * heavy ||
           bytes.size() > static_cast<size_t>(options_.heavy_decode_bytes);
  }

  // Fills pending.input (a tensor, or an image decoded here) or pending.decode (an
  // image the batch worker decodes: BatchingOptions::decode_in_worker). The image's
  // header is read first: over a limit or the model's pixel budget, it is refused
  // before anyone decodes it; a heavy one (ServingOptions::heavy_decode_pixels /
  // heavy_decode_bytes) is decoded here, under a heavy-decode slot, so it never holds
  // up the batch worker and with it everyone else's requests.
  absl::Status PrepareInput(const ModelSpec& spec, const InferRequest& request,
                            PendingRequest& pending) {
    SL_RETURN_IF_ERROR(CheckInput(spec, request.encoded_image, request.tensor));
    if (!request.tensor.empty()) {
      pending.input = request.tensor;
      return absl::OkStatus();
    }
    // The header is read once, here: its verdict decides where the image is decoded.
    const DecodeLimits limits = LimitsFor(spec);
    SL_ASSIGN_OR_RETURN(const bool heavy, IsHeavy(request.encoded_image, limits));
    if (options_.batching.decode_in_worker && !heavy) {
      pending.decode = std::make_shared<DecodeJob>();
      pending.decode->encoded = request.encoded_image;
      return absl::OkStatus();
    }
    pending.input.resize(3 * static_cast<size_t>(spec.image_size) * spec.image_size);
    return DecodeWith(spec, request.encoded_image, limits, heavy, request.deadline, request.client,
                      "caller", pending.input.data());
  }

  void Follow(Model& m) ABSL_LOCKS_EXCLUDED(stop_mu_) {
    while (true) {
      PollOnce(m);
      absl::MutexLock lock(&stop_mu_);
      if (clock_.AwaitWithDeadline(stop_mu_, absl::Condition(&stop_),
                                   clock_.Now() + options_.poll_interval)) {
        return;
      }
    }
  }

  void PollOnce(Model& m) ABSL_LOCKS_EXCLUDED(m.mu, source_mu_) {
    const std::string& name = m.options.name;
    absl::StatusOr<int64_t> target;
    {
      absl::MutexLock lock(&source_mu_);
      target = source_->Resolve(name, m.options.alias);
    }
    if (target.ok() && *target < 1) {
      target = absl::InternalError(absl::StrCat("the source resolved version ", *target));
    }
    if (!target.ok()) {
      const std::string error =
          absl::StrCat("resolving ", name, "@", m.options.alias, ": ", target.status().ToString());
      absl::MutexLock lock(&m.mu);
      if (error != m.last_error) SL_LOG(WARNING) << "serving: " << error;
      m.last_error = error;
      m.failed_version = 0;
      return;
    }
    int64_t old_version = 0;
    {
      absl::MutexLock lock(&m.mu);
      if (m.current != nullptr) old_version = m.current->spec.version;
      if (old_version == *target) return;
      if (*target == m.failed_version &&
          ++m.polls_since_failure < options_.retry_failed_after_polls) {
        return;
      }
    }
    SL_LOG(INFO) << "serving: " << name << "@" << m.options.alias << " -> v" << *target
                 << (old_version != 0 ? absl::StrCat(" (serving v", old_version, ")") : "")
                 << ", loading";
    const absl::Time start = clock_.Now();
    absl::StatusOr<std::shared_ptr<const LoadedVersion>> loaded = Load(m, *target);
    const double seconds = absl::ToDoubleSeconds(clock_.Now() - start);
    if (!loaded.ok()) {
      const std::string error =
          absl::StrCat("loading ", name, " v", *target, ": ", loaded.status().ToString());
      SL_LOG(ERROR) << "serving: " << error
                    << (old_version != 0 ? absl::StrCat("; v", old_version, " keeps serving") : "");
      if (metrics_ != nullptr) metrics_->RecordLoad(name, false, seconds);
      absl::MutexLock lock(&m.mu);
      m.last_error = error;
      m.failed_version = *target;
      m.polls_since_failure = 0;
      return;
    }
    const ModelSpec& spec = (*loaded)->spec;
    {
      absl::MutexLock lock(&m.mu);
      if (m.current != nullptr) m.retired[m.current->spec.version] = m.current;
      m.retired.erase(spec.version);
      for (auto it = m.retired.begin(); it != m.retired.end();) {
        it = it->second.expired() ? m.retired.erase(it) : std::next(it);
      }
      m.current = *loaded;
      m.last_error.clear();
      m.failed_version = 0;
      m.polls_since_failure = 0;
    }
    if (metrics_ != nullptr) {
      metrics_->RecordLoad(name, true, seconds);
      metrics_->SetServingVersion(name, spec.version, spec.sha256,
                                  std::string(PrecisionName((*loaded)->instance->precision())),
                                  ExpectedShares(spec));
    }
    SL_LOG(INFO) << "serving: " << name << " v" << spec.version << " (" << spec.architecture
                 << ", sha256 " << spec.sha256.substr(0, 12) << ", "
                 << (*loaded)->instance->numerics() << ") serving after " << seconds << " s";
  }

  absl::StatusOr<std::shared_ptr<const LoadedVersion>> Load(Model& m, int64_t version)
      ABSL_LOCKS_EXCLUDED(m.mu, source_mu_) {
    const std::string& name = m.options.name;
    absl::StatusOr<std::string> dir;
    {
      absl::MutexLock lock(&source_mu_);
      dir = source_->Fetch(name, version);
    }
    if (!dir.ok()) return dir.status();
    SL_ASSIGN_OR_RETURN(ModelSpec spec, ReadModelSpec(*dir));
    if (spec.version != 0 && spec.version != version) {
      return absl::DataLossError(absl::StrCat(*dir, "/manifest.json says version ", spec.version,
                                              ", the source says ", version));
    }
    spec.version = version;
    spec.name = name;
    absl::StatusOr<std::shared_ptr<ModelInstance>> instance = loader_(spec);
    if (!instance.ok()) return instance.status();
    if (*instance == nullptr) return absl::InternalError("the loader returned no instance");
    auto loaded = std::make_shared<LoadedVersion>();
    loaded->spec = std::move(spec);
    loaded->instance = std::move(*instance);

    // Warm-up: the shapes the batcher will use most (full and single batches).
    const int max_batch = options_.batching.max_batch_size;
    const size_t per = 3 * static_cast<size_t>(loaded->spec.image_size) * loaded->spec.image_size;
    if (options_.warmup_runs > 0) {
      std::vector<float> zeros(per * max_batch, 0.0f);
      for (int i = 0; i < options_.warmup_runs; ++i) {
        for (int n : {max_batch, 1}) {
          absl::StatusOr<ScoredRun> run = loaded->instance->RunScored(zeros.data(), n);
          if (!run.ok()) return Annotate(run.status(), "warm-up batch of ", n);
          const size_t num_classes = static_cast<size_t>(loaded->spec.classes.size());
          if (run->logits.size() != static_cast<size_t>(n) * num_classes) {
            return absl::InternalError(absl::StrCat("warm-up batch of ", n, " returned ",
                                                    run->logits.size(), " logits, expected ",
                                                    n * num_classes));
          }
          if (max_batch == 1) break;
        }
      }
    }
    SL_RETURN_IF_ERROR(CheckGoldenSet(loaded->spec, *loaded->instance));
    return std::shared_ptr<const LoadedVersion>(std::move(loaded));
  }

  const ServingOptions options_;
  Clock& clock_;  // options_.clock, else the real one.
  absl::Mutex source_mu_;  // The source is called from one thread at a time.
  const std::unique_ptr<ModelSource> source_ ABSL_PT_GUARDED_BY(source_mu_);
  const ModelLoader loader_;
  ServingMetrics* const metrics_;
  DecodeLimits limits_;
  std::vector<std::unique_ptr<Model>> models_;

  absl::Mutex stop_mu_;
  bool stop_ ABSL_GUARDED_BY(stop_mu_) = false;  // Followers exit.
  std::atomic<bool> shutting_down_{false};
  std::once_flag shutdown_once_;

  // Heavy image decodes (DecodeOnCaller), across models.
  SlotGate heavy_decodes_{options_.max_concurrent_heavy_decodes,
                          options_.max_waiting_heavy_decodes, "large-image decode", "",
                          options_.max_heavy_decodes_per_client, clock_};
  // Where they run: one low-priority thread per slot.
  BackgroundRunner heavy_runner_{options_.max_concurrent_heavy_decodes, kHeavyDecodeNice};
};

}  // namespace

absl::StatusOr<std::unique_ptr<ServingCore>> ServingCore::Create(
    ServingOptions options, std::unique_ptr<ModelSource> source, ModelLoader loader,
    ServingMetrics* metrics) {
  SL_RETURN_IF_ERROR(ValidateOptions(options));
  if (source == nullptr) return absl::InvalidArgumentError("no model source");
  if (!loader) return absl::InvalidArgumentError("no model loader");
  return std::unique_ptr<ServingCore>(
      new ServingCoreImpl(std::move(options), std::move(source), std::move(loader), metrics));
}

}  // namespace skinlesion::serving
