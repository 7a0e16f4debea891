#include "skinlesion/train/trainer.h"

#include <torch/torch.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <set>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "skinlesion/common/cpu_features.h"
#include "skinlesion/common/csv.h"
#include "skinlesion/common/logging.h"
#include "skinlesion/common/precision.h"
#include "skinlesion/common/rng.h"
#include "skinlesion/common/status.h"
#include "skinlesion/data/loader.h"
#include "skinlesion/data/sampler.h"
#include "skinlesion/eval/plots.h"
#include "skinlesion/models/feature_ood.h"
#include "skinlesion/models/model_zoo.h"
#include "skinlesion/train/losses.h"
#include "skinlesion/train/schedule.h"

namespace skinlesion::train {
namespace fs = std::filesystem;
namespace {

using Clock = std::chrono::steady_clock;

double SecondsSince(Clock::time_point t) {
  return std::chrono::duration<double>(Clock::now() - t).count();
}

std::string FormatDuration(double s) {
  const int64_t t = static_cast<int64_t>(std::max(0.0, s));
  return t >= 3600 ? absl::StrFormat("%d:%02d:%02d", t / 3600, t / 60 % 60, t % 60)
                   : absl::StrFormat("%d:%02d", t / 60, t % 60);
}

absl::StatusOr<torch::Device> ParseDevice(const std::string& name) {
  try {
    torch::Device device(name);
    if (device.is_cuda() && !torch::cuda::is_available()) {
      return absl::FailedPreconditionError(absl::StrCat("device ", name, " requested but CUDA is not available"));
    }
    return device;
  } catch (const c10::Error& e) {
    return absl::InvalidArgumentError(absl::StrCat("invalid device '", name, "'"));
  }
}

// Wraps a sampler so that rank r of W sees its slice of every global batch:
// positions [k*B + r*B/W, k*B + (r+1)*B/W) of the base order. The mean of the W
// per-rank gradient means is then the gradient of the global batch.
class ShardedSampler final : public data::Sampler {
 public:
  ShardedSampler(std::unique_ptr<data::Sampler> base, int64_t global_batch, int rank, int world)
      : base_(std::move(base)), global_batch_(global_batch), rank_(rank), world_(world) {}
  std::vector<int64_t> EpochIndices(int64_t epoch) const override {
    const std::vector<int64_t> all = base_->EpochIndices(epoch);
    const int64_t local = global_batch_ / world_;
    std::vector<int64_t> mine;
    for (int64_t k = 0; (k + 1) * global_batch_ <= static_cast<int64_t>(all.size()); ++k) {
      const int64_t start = k * global_batch_ + rank_ * local;
      mine.insert(mine.end(), all.begin() + start, all.begin() + start + local);
    }
    return mine;
  }
  int64_t size() const override {
    return base_->size() / global_batch_ * (global_batch_ / world_);
  }

 private:
  std::unique_ptr<data::Sampler> base_;
  int64_t global_batch_;
  int rank_, world_;
};

bool IsHeadParam(const std::string& name, const std::vector<std::string>& head_keys) {
  return std::find(head_keys.begin(), head_keys.end(), name) != head_keys.end();
}

// ViT layer id for layer-wise lr decay: 0 embeddings, i+1 encoder block i,
// depth+1 for the final norm and head. -1 when not a ViT parameter layout.
int VitLayerId(const std::string& name, int depth) {
  if (absl::StartsWith(name, "conv_proj") || name == "class_token" ||
      name == "encoder.pos_embedding") {
    return 0;
  }
  const std::string prefix = "encoder.layers.encoder_layer_";
  if (absl::StartsWith(name, prefix)) {
    return std::atoi(name.c_str() + prefix.size()) + 1;
  }
  return depth + 1;
}

int VitDepth(const models::Classifier& model) {
  int depth = 0;
  const std::string prefix = "encoder.layers.encoder_layer_";
  for (const auto& p : model.named_parameters()) {
    if (absl::StartsWith(p.key(), prefix)) depth = std::max(depth, std::atoi(p.key().c_str() + prefix.size()) + 1);
  }
  return depth;
}

struct Groups {
  std::vector<torch::optim::OptimizerParamGroup> groups;
  std::vector<double> lr_scales;  // Relative to config.lr, one per group.
};

// Phase 1: only the head, at lr. Phase 2: everything; the head at lr, a ViT's
// blocks at lr * layer_decay^(depth + 1 - layer), a CNN backbone at
// lr * backbone_lr_factor. Biases and 1-D (norm) parameters get no weight decay.
Groups BuildGroups(models::Classifier& model, bool frozen, const TrainConfig& c) {
  const std::vector<std::string> head = model.HeadKeys();
  const int depth = VitDepth(model);
  std::map<std::pair<double, bool>, std::vector<torch::Tensor>> buckets;
  for (auto& p : model.named_parameters()) {
    const bool is_head = IsHeadParam(p.key(), head);
    p.value().set_requires_grad(!frozen || is_head);
    if (frozen && !is_head) continue;
    double scale = 1.0;
    if (!is_head) {
      scale = depth > 0 ? std::pow(c.layer_decay, depth + 1 - VitLayerId(p.key(), depth))
                        : c.backbone_lr_factor;
    }
    const bool decay = p.value().dim() > 1;
    buckets[{scale, decay}].push_back(p.value());
  }
  Groups g;
  for (auto& [key, params] : buckets) {
    const auto [scale, decay] = key;
    std::unique_ptr<torch::optim::OptimizerOptions> options;
    if (c.optimizer == "sgd") {
      options = std::make_unique<torch::optim::SGDOptions>(
          torch::optim::SGDOptions(c.lr * scale)
              .momentum(c.momentum)
              .nesterov(c.nesterov && c.momentum > 0)
              .weight_decay(decay ? c.weight_decay : 0.0));
    } else {
      options = std::make_unique<torch::optim::AdamWOptions>(
          torch::optim::AdamWOptions(c.lr * scale).weight_decay(decay ? c.weight_decay : 0.0));
    }
    g.groups.emplace_back(params, std::move(options));
    g.lr_scales.push_back(scale);
  }
  return g;
}

std::unique_ptr<torch::optim::Optimizer> MakeOptimizer(Groups& g, const TrainConfig& c) {
  if (c.optimizer == "sgd") {
    return std::make_unique<torch::optim::SGD>(g.groups, torch::optim::SGDOptions(c.lr));
  }
  return std::make_unique<torch::optim::AdamW>(g.groups, torch::optim::AdamWOptions(c.lr));
}

// Freezes BatchNorm running statistics of the backbone in phase 1 so a frozen
// backbone really computes the same function.
void SetTrainMode(models::Classifier& model, bool frozen) {
  model.train(true);
  if (!frozen) return;
  for (auto& m : model.named_modules("", /*include_self=*/false)) {
    const std::string& n = m.key();
    if (m.value()->as<torch::nn::BatchNorm2d>() != nullptr && !absl::StartsWith(n, "classifier") &&
        !absl::StartsWith(n, "fc") && !absl::StartsWith(n, "heads")) {
      m.value()->eval();
    }
  }
}

ScheduleOptions MakeSchedule(const TrainConfig& c) {
  ScheduleOptions s;
  s.kind = *ParseScheduleKind(c.schedule);
  s.t0 = c.t0;
  s.t_mult = c.t_mult;
  s.min_factor = c.min_lr_factor;
  s.warmup_epochs = c.warmup_epochs;
  s.total_epochs = std::max(1, c.epochs - c.frozen_epochs);
  s.step_epochs = c.step_epochs;
  s.gamma = c.gamma;
  return s;
}

// Exponential moving average of the parameters; buffers are copied.
class Ema {
 public:
  Ema(models::Classifier& model, double decay) : decay_(decay) {
    torch::NoGradGuard no_grad;
    for (const auto& p : model.parameters()) shadow_.push_back(p.detach().clone());
  }
  void Update(models::Classifier& model) {
    torch::NoGradGuard no_grad;
    auto params = model.parameters();
    for (size_t i = 0; i < params.size(); ++i) {
      shadow_[i].mul_(decay_).add_(params[i].detach(), 1 - decay_);
    }
  }
  // Swaps the model's parameters with the shadow ones (call twice to restore).
  void Swap(models::Classifier& model) {
    torch::NoGradGuard no_grad;
    auto params = model.parameters();
    for (size_t i = 0; i < params.size(); ++i) {
      torch::Tensor tmp = params[i].detach().clone();
      params[i].copy_(shadow_[i]);
      shadow_[i].copy_(tmp);
    }
  }
  std::vector<torch::Tensor>& shadow() { return shadow_; }

 private:
  double decay_;
  std::vector<torch::Tensor> shadow_;
};

// Dynamic loss scaling for fp16 autocast on CUDA (GradScaler's algorithm).
class LossScaler {
 public:
  double scale() const { return scale_; }
  // Unscales the gradients; false (and a smaller scale) when any is not finite.
  bool Unscale(const std::vector<torch::Tensor>& params) {
    torch::NoGradGuard no_grad;
    bool finite = true;
    for (const auto& p : params) {
      if (!p.grad().defined()) continue;
      p.grad().div_(scale_);
      if (finite && !torch::isfinite(p.grad()).all().item<bool>()) finite = false;
    }
    if (!finite) {
      scale_ /= 2;
      good_steps_ = 0;
    } else if (++good_steps_ % 2000 == 0) {
      scale_ *= 2;
    }
    return finite;
  }

 private:
  double scale_ = 65536.0;
  int64_t good_steps_ = 0;
};

using models::AutocastGuard;

struct RunState {
  int next_epoch = 0;
  int best_epoch = -1;
  double best_metric = -std::numeric_limits<double>::infinity();
  int epochs_without_improvement = 0;
  std::vector<EpochRecord> history;
};

nlohmann::json StateToJson(const RunState& s) {
  nlohmann::json h = nlohmann::json::array();
  for (const auto& r : s.history) h.push_back(r.ToJson());
  return {{"next_epoch", s.next_epoch}, {"best_epoch", s.best_epoch},
          {"best_metric", s.best_metric}, {"epochs_without_improvement", s.epochs_without_improvement},
          {"history", h}};
}

absl::StatusOr<RunState> StateFromJson(const nlohmann::json& j) {
  try {
    RunState s;
    s.next_epoch = j.at("next_epoch");
    s.best_epoch = j.at("best_epoch");
    s.best_metric = j.at("best_metric");
    s.epochs_without_improvement = j.at("epochs_without_improvement");
    for (const auto& r : j.at("history")) {
      EpochRecord e;
      e.epoch = r.at("epoch");
      e.phase = r.at("phase");
      e.train_loss = r.at("train_loss");
      e.lr = r.at("lr");
      e.images_per_second = r.at("images_per_second");
      e.seconds = r.at("seconds");
      e.val_loss = r.at("val_loss");
      e.val_metrics = r.at("val_metrics");
      e.best = r.at("best");
      s.history.push_back(e);
    }
    return s;
  } catch (const nlohmann::json::exception& e) {
    return absl::DataLossError(absl::StrCat("checkpoint state is malformed: ", e.what()));
  }
}

// Writes model, optimizer, EMA and state into dir atomically (tmp dir + rename).
absl::Status SaveCheckpoint(const std::string& dir, models::Classifier& model,
                            torch::optim::Optimizer& optimizer, Ema* ema, const RunState& state,
                            bool frozen) {
  const std::string tmp = dir + ".tmp";
  std::error_code ec;
  fs::remove_all(tmp, ec);
  fs::create_directories(tmp, ec);
  if (ec) return absl::InternalError(absl::StrCat("cannot create ", tmp, ": ", ec.message()));
  try {
    torch::serialize::OutputArchive archive;
    for (const auto& p : model.named_parameters()) archive.write(p.key(), p.value().detach().cpu());
    for (const auto& b : model.named_buffers()) archive.write(b.key(), b.value().cpu(), /*is_buffer=*/true);
    archive.save_to(tmp + "/model.pt");
    torch::save(optimizer, tmp + "/optimizer.pt");
    if (ema != nullptr) torch::save(ema->shadow(), tmp + "/ema.pt");
  } catch (const c10::Error& e) {
    return absl::InternalError(absl::StrCat("saving checkpoint ", dir, ": ", e.what_without_backtrace()));
  }
  nlohmann::json j = StateToJson(state);
  j["phase"] = frozen ? "frozen" : "finetune";
  SL_RETURN_IF_ERROR(WriteFileAtomically(tmp + "/state.json", j.dump(2)));
  const std::string old = dir + ".old";
  fs::remove_all(old, ec);
  if (fs::exists(dir)) fs::rename(dir, old, ec);
  fs::rename(tmp, dir, ec);
  if (ec) return absl::InternalError(absl::StrCat("cannot move checkpoint into ", dir, ": ", ec.message()));
  fs::remove_all(old, ec);
  return absl::OkStatus();
}

absl::Status LoadModelArchive(models::Classifier& model, const std::string& path) {
  try {
    torch::serialize::InputArchive archive;
    archive.load_from(path);
    torch::NoGradGuard no_grad;
    for (auto& p : model.named_parameters()) {
      torch::Tensor t;
      archive.read(p.key(), t);
      p.value().copy_(t);
    }
    for (auto& b : model.named_buffers()) {
      torch::Tensor t;
      archive.read(b.key(), t, /*is_buffer=*/true);
      b.value().copy_(t);
    }
  } catch (const c10::Error& e) {
    return absl::DataLossError(absl::StrCat("cannot load ", path, ": ", e.what_without_backtrace()));
  }
  return absl::OkStatus();
}

std::string ProgressLine(const Progress& p) {
  return absl::StrFormat("[train] epoch %d/%d %-8s step %lld/%lld  loss %.4f  lr %.2e  %.1f img/s  ETA %s",
                         p.epoch + 1, p.epochs, p.phase, static_cast<long long>(p.step),
                         static_cast<long long>(p.steps), p.loss, p.lr, p.images_per_second,
                         FormatDuration(p.eta_seconds));
}

}  // namespace

nlohmann::json EpochRecord::ToJson() const {
  return {{"epoch", epoch},
          {"phase", phase},
          {"train_loss", train_loss},
          {"lr", lr},
          {"images_per_second", images_per_second},
          {"seconds", seconds},
          {"val_loss", val_loss},
          {"val_metrics", val_metrics},
          {"best", best}};
}

absl::Status LoadTrainCheckpoint(models::Classifier& model, const std::string& checkpoint_dir) {
  return LoadModelArchive(model, checkpoint_dir + "/model.pt");
}

absl::StatusOr<Predictions> PredictSamples(models::Classifier& model,
                                           const std::vector<data::Sample>& samples,
                                           const PreprocessOptions& preprocess,
                                           const std::string& device_name,
                                           int batch_size, int num_workers, bool flip_tta,
                                           const models::Numerics& numerics, bool with_embeddings) {
  SL_ASSIGN_OR_RETURN(const torch::Device device, ParseDevice(device_name));
  data::LoaderOptions lo;
  lo.batch_size = batch_size;
  lo.num_workers = num_workers;
  lo.augmentation = "none";
  lo.preprocess = preprocess;
  // Large JPEGs at reduced scale, as the inference service decodes them.
  lo.decode_limits.reduce_to_side = ReducedDecodeSide(preprocess);
  SL_ASSIGN_OR_RETURN(
      auto loader, data::DataLoader::Create(
                       samples, std::make_unique<data::SequentialSampler>(samples.size()), lo));
  SL_RETURN_IF_ERROR(loader->StartEpoch(0));
  Predictions out;
  std::vector<torch::Tensor> embeddings;
  const bool was_training = model.is_training();
  model.eval();
  torch::NoGradGuard no_grad;
  while (true) {
    SL_ASSIGN_OR_RETURN(std::optional<data::Batch> batch, loader->Next());
    if (!batch) break;
    torch::Tensor x = batch->images;
    torch::Tensor logits;
    try {
      torch::Tensor plain;  // The unflipped image's logits.
      if (with_embeddings) {
        models::LogitsAndEmbedding out = models::ForwardWithEmbedding(model, x, numerics, device);
        plain = out.logits;
        embeddings.push_back(out.embedding);
      }
      if (flip_tta) {
        torch::Tensor p = torch::softmax(plain.defined() ? plain : models::ForwardLogits(model, x, numerics, device), 1);
        p += torch::softmax(models::ForwardLogits(model, x.flip({3}), numerics, device), 1);
        p += torch::softmax(models::ForwardLogits(model, x.flip({2}), numerics, device), 1);
        logits = torch::log(p / 3);
      } else {
        logits = plain.defined() ? plain : models::ForwardLogits(model, x, numerics, device);
      }
    } catch (const c10::Error& e) {
      return absl::InternalError(absl::StrCat("forward failed: ", e.what_without_backtrace()));
    }
    logits = logits.cpu().contiguous();
    const auto acc = logits.accessor<float, 2>();
    for (int64_t i = 0; i < logits.size(0); ++i) {
      eval::Probs z;
      z.assign(&acc[i][0], &acc[i][0] + logits.size(1));
      out.logits.push_back(z);
      out.labels.push_back(static_cast<int>(batch->labels[i].item<int64_t>()));
    }
  }
  model.train(was_training);
  if (!embeddings.empty()) out.embeddings = torch::cat(embeddings);
  return out;
}

absl::StatusOr<TrainResult> Train(const TrainConfig& c, const std::vector<data::Sample>& train,
                                  const std::vector<data::Sample>& val, const TrainContext& ctx) {
  SL_RETURN_IF_ERROR(c.Validate());
  if (ctx.output_dir.empty()) return absl::InvalidArgumentError("output_dir is required");
  if (train.empty() || val.empty()) return absl::InvalidArgumentError("train and val samples are required");
  SL_ASSIGN_OR_RETURN(const torch::Device device, ParseDevice(ctx.device));
  const int rank = ctx.reducer ? ctx.reducer->rank() : 0;
  const int world = ctx.reducer ? ctx.reducer->world_size() : 1;
  if (c.batch_size % world != 0) {
    return absl::InvalidArgumentError(absl::StrCat("batch_size ", c.batch_size,
                                                   " is not divisible by the world size ", world));
  }
  const bool chief = rank == 0;
  const int num_classes = ctx.classes.size();
  torch::set_num_threads(c.threads);
  std::error_code ec;
  fs::create_directories(ctx.output_dir + "/checkpoints", ec);
  if (ec) return absl::InternalError(absl::StrCat("cannot create ", ctx.output_dir, ": ", ec.message()));
  if (chief) SL_RETURN_IF_ERROR(WriteFileAtomically(ctx.output_dir + "/config.json", c.ToJson().dump(2) + "\n"));

  // Model.
  std::shared_ptr<models::Classifier> model = ctx.model;
  if (!model) {
    torch::manual_seed(c.seed);
    models::ModelOptions mo;
    mo.image_size = c.image_size;
    mo.dropout = c.dropout;
    mo.num_classes = num_classes;
    SL_ASSIGN_OR_RETURN(model, models::CreateModel(c.architecture, mo));
  } else if (model->num_classes() != num_classes) {
    return absl::InvalidArgumentError(absl::StrCat("the model has ", model->num_classes(), " outputs but the data have ",
                                                   num_classes, " classes (", ctx.classes.ToString(), ")"));
  }
  model->to(device);

  // Data.
  std::vector<int> labels;
  for (const auto& s : train) labels.push_back(s.label);
  for (const std::vector<data::Sample>* part : {&train, &val}) {
    for (const data::Sample& s : *part) {
      if (s.label < 0 || s.label >= num_classes) {
        return absl::InvalidArgumentError(absl::StrCat("image ", s.image_id, " has label ", s.label,
                                                       ", outside the ", num_classes, " classes"));
      }
    }
  }
  const data::ClassWeighting weighting = c.class_weighting == "inverse"
                                             ? data::ClassWeighting::kInverseFrequency
                                             : data::ClassWeighting::kSqrtInverseFrequency;
  std::unique_ptr<data::Sampler> sampler;
  if (c.sampler == "balanced") {
    sampler = std::make_unique<data::ClassBalancedSampler>(labels, num_classes, weighting, train.size(), c.seed);
  } else {
    sampler = std::make_unique<data::ShuffleSampler>(train.size(), c.seed);
  }
  data::LoaderOptions lo;
  lo.batch_size = c.batch_size / world;
  lo.num_workers = c.num_workers;
  lo.seed = c.seed;
  lo.augmentation = c.augmentation;
  lo.preprocess = c.Preprocess();
  if (world > 1) {
    sampler = std::make_unique<ShardedSampler>(std::move(sampler), c.batch_size, rank, world);
    lo.drop_last = true;
  }
  // A last batch of one image cannot train batch norm (one value per channel at a 1x1
  // feature map) and gives noisy statistics anyway: drop it (the shuffled image lands
  // in a full batch in other epochs).
  if (train.size() > 1 && train.size() % static_cast<size_t>(lo.batch_size) == 1) lo.drop_last = true;
  SL_ASSIGN_OR_RETURN(auto loader, data::DataLoader::Create(train, std::move(sampler), lo));
  const int64_t steps_per_epoch = loader->num_batches();
  if (steps_per_epoch == 0) return absl::InvalidArgumentError("the training set is smaller than one batch");

  LossOptions loss_options;
  loss_options.kind = *ParseLossKind(c.loss);
  loss_options.label_smoothing = c.label_smoothing;
  loss_options.focal_gamma = c.focal_gamma;
  if (loss_options.kind == LossOptions::Kind::kLogitAdjusted) {
    // The prior the sampler shows the model: the class frequencies, or uniform under
    // the class-balanced sampler (then the adjustment is a constant and does nothing).
    std::vector<double> counts(num_classes, 0.0);
    for (int y : labels) counts[y] += 1;
    for (double& n : counts) {
      n = c.sampler == "balanced" ? 1.0 / num_classes : std::max(n, 1.0) / labels.size();
      loss_options.log_prior.push_back(std::log(n));
    }
    loss_options.logit_adjust_tau = c.logit_adjust_tau;
  } else if (loss_options.kind != LossOptions::Kind::kCrossEntropy && c.sampler != "balanced") {
    const auto w = data::ClassWeights(labels, weighting, num_classes);
    loss_options.class_weights.assign(w.begin(), w.end());
  }
  const ScheduleOptions schedule = MakeSchedule(c);
  TrainResult result;
  const bool cuda = device.is_cuda();
  // CUDA: "auto" is fp16 autocast with loss scaling. CPU: "auto" is bf16 autocast
  // where the CPU has native bf16 (ResolvePrecision), fp32 elsewhere. Master weights,
  // gradients and optimizer state stay fp32 in every mode.
  const bool fp16 = cuda && (c.precision == "auto" || c.precision == "fp16");
  bool bf16 = c.precision == "bf16";
  if (c.precision == "fp16" && !cuda) SL_LOG(WARNING) << "fp16 autocast needs CUDA; training in fp32";
  if (fp16) {
    result.numerics_reason = absl::StrCat(c.precision, ": fp16 autocast (CUDA)");
  } else if (c.precision == "auto") {
    const PrecisionDecision d =
        ResolvePrecision(PrecisionChoice::kAuto, {.cuda = cuda, .native_bf16 = CpuFeaturesForThisProcess().native_bf16()});
    bf16 = d.precision == Precision::kBf16;
    result.numerics_reason = d.reason;
  } else {
    result.numerics_reason = absl::StrCat(bf16 ? "bf16" : "fp32", " (requested)");
  }
  // bf16 convolutions run fastest on NHWC tensors (oneDNN); fp32 ones on NCHW.
  const bool channels_last = bf16 && !cuda && model->HasFeatureMap();
  if (channels_last) models::ToChannelsLast(*model);
  result.numerics = fp16 ? "fp16 autocast" : bf16 ? "bf16 autocast" : "fp32";
  if (channels_last) result.numerics += ", channels-last";
  if (chief) SL_LOG(INFO) << "training in " << result.numerics << " (" << result.numerics_reason << ")";
  LossScaler scaler;

  // Resume.
  RunState state;
  const std::string last_dir = ctx.output_dir + "/checkpoints/last";
  const std::string best_dir = ctx.output_dir + "/checkpoints/best";
  nlohmann::json resumed_state;
  if (ctx.resume && fs::exists(last_dir + "/state.json")) {
    SL_ASSIGN_OR_RETURN(const std::string text, ReadFileToString(last_dir + "/state.json", 64 << 20));
    resumed_state = nlohmann::json::parse(text, nullptr, false);
    if (resumed_state.is_discarded()) return absl::DataLossError(last_dir + "/state.json is not JSON");
    SL_ASSIGN_OR_RETURN(state, StateFromJson(resumed_state));
    SL_RETURN_IF_ERROR(LoadModelArchive(*model, last_dir + "/model.pt"));
    if (chief) SL_LOG(INFO) << "resuming from " << last_dir << " at epoch " << state.next_epoch + 1;
  }
  if (ctx.reducer != nullptr) {
    std::vector<torch::Tensor> params;
    for (auto& p : model->parameters()) params.push_back(p.data());
    SL_RETURN_IF_ERROR(ctx.reducer->Broadcast(params));
  }
  std::unique_ptr<Ema> ema;
  if (c.ema_decay > 0) {
    ema = std::make_unique<Ema>(*model, c.ema_decay);
    if (!resumed_state.is_null() && fs::exists(last_dir + "/ema.pt")) torch::load(ema->shadow(), last_dir + "/ema.pt");
  }

  const auto run_start = Clock::now();
  int64_t images_this_run = 0;
  const int64_t total_steps = static_cast<int64_t>(c.epochs) * steps_per_epoch;
  std::unique_ptr<torch::optim::Optimizer> optimizer;
  Groups groups;
  bool optimizer_frozen = false;

  for (int epoch = state.next_epoch; epoch < c.epochs; ++epoch) {
    const bool frozen = epoch < c.frozen_epochs;
    if (!optimizer || optimizer_frozen != frozen) {
      groups = BuildGroups(*model, frozen, c);
      optimizer = MakeOptimizer(groups, c);
      optimizer_frozen = frozen;
      if (epoch == state.next_epoch && !resumed_state.is_null() &&
          resumed_state.value("phase", "") == (frozen ? "frozen" : "finetune")) {
        torch::load(*optimizer, last_dir + "/optimizer.pt");
      }
    }
    std::vector<torch::Tensor> trainable;
    for (auto& g : optimizer->param_groups()) {
      for (auto& p : g.params()) trainable.push_back(p);
    }
    SetTrainMode(*model, frozen);
    torch::manual_seed(DeriveSeed({c.seed, static_cast<uint64_t>(epoch), 0x70c4}));
    SL_RETURN_IF_ERROR(loader->StartEpoch(epoch));
    const auto epoch_start = Clock::now();
    auto last_print = epoch_start;
    double loss_sum = 0;
    int64_t loss_count = 0, step = 0, images = 0;
    double head_lr = c.lr;
    optimizer->zero_grad();
    while (true) {
      SL_ASSIGN_OR_RETURN(std::optional<data::Batch> batch, loader->Next());
      if (!batch) break;
      // Learning rate for this step.
      const double t = frozen ? 0.0 : (epoch - c.frozen_epochs) + static_cast<double>(step) / steps_per_epoch;
      const double factor = frozen ? 1.0 : LearningRateFactor(schedule, t);
      head_lr = c.lr * factor;
      for (size_t gi = 0; gi < optimizer->param_groups().size(); ++gi) {
        optimizer->param_groups()[gi].options().set_lr(c.lr * groups.lr_scales[gi] * factor);
      }
      torch::Tensor x = batch->images.to(device, /*non_blocking=*/true);
      if (channels_last) x = x.contiguous(torch::MemoryFormat::ChannelsLast);
      torch::Tensor y = batch->labels.to(device, /*non_blocking=*/true);
      torch::Tensor loss;
      try {
        torch::Tensor logits;
        {
          AutocastGuard autocast(cuda, fp16, bf16);
          // The loss in fp32 whatever the autocast dtype of the head.
          logits = model->forward(x).to(torch::kFloat32);
        }
        loss = ComputeLoss(logits, y, loss_options);
        torch::Tensor scaled = loss / c.grad_accum;
        if (fp16) scaled = scaled * scaler.scale();
        scaled.backward();
      } catch (const c10::Error& e) {
        return absl::InternalError(absl::StrCat("training step failed at epoch ", epoch + 1, ": ",
                                                e.what_without_backtrace()));
      }
      const double loss_value = loss.item<double>();
      if (!std::isfinite(loss_value) && !fp16) {
        return absl::InternalError(absl::StrCat("loss is ", loss_value, " at epoch ", epoch + 1,
                                                " step ", step + 1, "; lower the learning rate"));
      }
      loss_sum += loss_value * batch->labels.size(0);
      loss_count += batch->labels.size(0);
      ++step;
      images += batch->labels.size(0) * world;
      const bool boundary = step % c.grad_accum == 0 || step == steps_per_epoch;
      if (boundary) {
        if (ctx.reducer != nullptr) {
          std::vector<torch::Tensor> grads;
          for (auto& p : trainable) {
            if (!p.grad().defined()) p.mutable_grad() = torch::zeros_like(p);
            grads.push_back(p.grad());
          }
          SL_RETURN_IF_ERROR(ctx.reducer->AllReduceMean(grads));
        }
        bool finite = true;
        if (fp16) finite = scaler.Unscale(trainable);
        if (finite) {
          if (c.clip_grad_norm > 0) torch::nn::utils::clip_grad_norm_(trainable, c.clip_grad_norm);
          optimizer->step();
          if (ema) ema->Update(*model);
        }
        optimizer->zero_grad();
      }
      if (chief && (SecondsSince(last_print) >= c.progress_interval_s || step == steps_per_epoch)) {
        last_print = Clock::now();
        Progress p;
        p.phase = frozen ? "frozen" : "finetune";
        p.epoch = epoch;
        p.epochs = c.epochs;
        p.step = step;
        p.steps = steps_per_epoch;
        p.loss = loss_sum / loss_count;
        p.lr = head_lr;
        p.images_per_second = images / std::max(1e-9, SecondsSince(epoch_start));
        const double done_images = static_cast<double>(images_this_run + images);
        const double rate = done_images / std::max(1e-9, SecondsSince(run_start));
        const int64_t remaining_steps = total_steps - (static_cast<int64_t>(epoch) * steps_per_epoch + step);
        p.eta_seconds = remaining_steps * (static_cast<double>(c.batch_size) / std::max(rate, 1e-9));
        if (ctx.log_progress) std::fprintf(stderr, "%s\n", ProgressLine(p).c_str());
        if (ctx.listener) ctx.listener->OnProgress(p);
      }
    }
    images_this_run += images;
    EpochRecord record;
    record.epoch = epoch;
    record.phase = frozen ? "frozen" : "finetune";
    record.train_loss = loss_count ? loss_sum / loss_count : 0;
    record.lr = head_lr;
    record.seconds = SecondsSince(epoch_start);
    record.images_per_second = images / std::max(1e-9, record.seconds);

    // Validation (every rank evaluates, so early-stopping decisions agree).
    if (ema) ema->Swap(*model);
    absl::StatusOr<Predictions> validated;
    {
      // Validation under the same autocast as training (fp32 logits either way).
      AutocastGuard autocast(cuda, fp16, bf16);
      validated = PredictSamples(*model, val, c.Preprocess(), ctx.device, c.batch_size, c.num_workers);
    }
    if (ema) ema->Swap(*model);
    SL_ASSIGN_OR_RETURN(Predictions pred, std::move(validated));
    const std::vector<eval::Probs> probs = eval::Softmax(pred.logits);
    SL_ASSIGN_OR_RETURN(const eval::Metrics metrics, eval::ComputeMetrics(pred.labels, probs, ctx.classes));
    record.val_metrics = eval::MetricsToJson(metrics);
    record.val_loss = metrics.nll;
    if (!record.val_metrics.contains(c.monitor) || !record.val_metrics[c.monitor].is_number()) {
      return absl::InvalidArgumentError(absl::StrCat("monitor '", c.monitor, "' is not a numeric metric"));
    }
    const double score = record.val_metrics[c.monitor].get<double>();
    record.best = score > state.best_metric;
    if (record.best) {
      state.best_metric = score;
      state.best_epoch = epoch;
      state.epochs_without_improvement = 0;
    } else {
      ++state.epochs_without_improvement;
    }
    state.history.push_back(record);
    state.next_epoch = epoch + 1;
    if (chief) {
      std::fprintf(stderr,
                   "[train] epoch %d/%d done in %s: loss %.4f  val loss %.4f  val %s %.4f  acc %.4f%s\n",
                   epoch + 1, c.epochs, FormatDuration(record.seconds).c_str(), record.train_loss,
                   record.val_loss, c.monitor.c_str(), score, metrics.accuracy,
                   record.best ? "  (best)" : "");
      std::ofstream log(ctx.output_dir + "/train_log.jsonl", std::ios::app);
      log << record.ToJson().dump() << "\n";
      if (ctx.listener) ctx.listener->OnEpoch(record);
      SL_RETURN_IF_ERROR(SaveCheckpoint(last_dir, *model, *optimizer, ema.get(), state, frozen));
      if (record.best) {
        if (ema) ema->Swap(*model);
        const absl::Status s = SaveCheckpoint(best_dir, *model, *optimizer, nullptr, state, frozen);
        if (ema) ema->Swap(*model);
        SL_RETURN_IF_ERROR(s);
      }
    }
    if (ctx.listener != nullptr && ctx.listener->ShouldStop() && epoch + 1 < c.epochs) {
      return absl::CancelledError(absl::StrCat("training stopped after epoch ", epoch + 1,
                                               "; resume from ", last_dir));
    }
    if (c.patience > 0 && !frozen && state.epochs_without_improvement >= c.patience) {
      if (chief) SL_LOG(INFO) << "early stopping: no improvement of " << c.monitor << " for " << c.patience << " epochs";
      result.early_stopped = true;
      break;
    }
  }

  if (chief && !state.history.empty()) {
    eval::Series train_loss{"train loss", {}}, val_loss{"val loss", {}}, monitor{"val " + c.monitor, {}};
    for (const auto& r : state.history) {
      train_loss.points.push_back({r.epoch + 1.0, r.train_loss});
      val_loss.points.push_back({r.epoch + 1.0, r.val_loss});
      monitor.points.push_back({r.epoch + 1.0, r.val_metrics.value(c.monitor, 0.0)});
    }
    const absl::Status plot = eval::PlotLines("Training curves", "epoch", "loss / metric",
                                              {train_loss, val_loss, monitor},
                                              ctx.output_dir + "/training_curves.png");
    if (!plot.ok()) SL_LOG(WARNING) << "training curves: " << plot;
  }
  result.epochs_run = static_cast<int>(state.history.size());
  result.best_epoch = state.best_epoch;
  result.best_metric = state.best_metric;
  result.history = state.history;
  result.best_checkpoint = best_dir;
  result.last_checkpoint = last_dir;
  model->eval();
  result.model = model;
  return result;
}

}  // namespace skinlesion::train
