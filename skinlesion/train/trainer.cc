#include "skinlesion/train/trainer.h"

#include <fcntl.h>
#include <torch/torch.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <set>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "skinlesion/common/cpu_features.h"
#include "skinlesion/common/csv.h"
#include "skinlesion/common/json_file.h"
#include "skinlesion/common/logging.h"
#include "skinlesion/common/precision.h"
#include "skinlesion/common/rng.h"
#include "skinlesion/common/status.h"
#include "skinlesion/data/loader.h"
#include "skinlesion/data/sampler.h"
#include "skinlesion/eval/out_of_fold.h"
#include "skinlesion/eval/plots.h"
#include "skinlesion/models/feature_ood.h"
#include "skinlesion/models/model_zoo.h"
#include "skinlesion/train/fused_adamw.h"
#include "skinlesion/train/losses.h"
#include "skinlesion/train/mix.h"
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
Groups BuildGroups(models::Classifier& model, bool frozen, const TrainConfig& c, OptimizerKind optimizer) {
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
    if (optimizer == OptimizerKind::kSgd) {
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

std::unique_ptr<torch::optim::Optimizer> MakeOptimizer(Groups& g, const TrainConfig& c, OptimizerKind optimizer) {
  if (optimizer == OptimizerKind::kSgd) {
    return std::make_unique<torch::optim::SGD>(g.groups, torch::optim::SGDOptions(c.lr));
  }
  // torch::optim::AdamW's update in one pass per parameter on CPU (its own step elsewhere).
  return std::make_unique<FusedAdamW>(g.groups, torch::optim::AdamWOptions(c.lr));
}

std::string OptimizerStepName(torch::optim::Optimizer& optimizer) {
  if (auto* fused = dynamic_cast<FusedAdamW*>(&optimizer)) {
    return fused->last_step_fused() ? "fused AdamW" : "LibTorch AdamW";
  }
  return dynamic_cast<torch::optim::SGD*>(&optimizer) != nullptr ? "LibTorch SGD"
                                                                 : "LibTorch AdamW";
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

ScheduleOptions MakeSchedule(const TrainConfig& c, ScheduleOptions::Kind kind) {
  ScheduleOptions s;
  s.kind = kind;
  s.t0 = c.t0;
  s.t_mult = c.t_mult;
  s.min_factor = c.min_lr_factor;
  s.warmup_epochs = c.warmup_epochs;
  s.total_epochs = std::max(1, c.epochs - c.frozen_epochs);
  s.step_epochs = c.step_epochs;
  s.gamma = c.gamma;
  return s;
}

// Exponential moving average of the model's state: parameters and floating-point
// buffers (batch norm's running mean and variance) are averaged, other buffers
// (batch counts) follow the model. Averaging the buffers too keeps the running
// statistics matched to the averaged weights they normalise (timm's ModelEmaV2 does
// the same); with the live model's statistics, averaged weights were evaluated
// against activations they never produced.
class Ema {
 public:
  Ema(models::Classifier& model, double decay) : decay_(decay) {
    torch::NoGradGuard no_grad;
    for (const auto& t : State(model)) shadow_.push_back(t.detach().clone());
  }
  void Update(models::Classifier& model) {
    torch::NoGradGuard no_grad;
    const std::vector<torch::Tensor> state = State(model);
    for (size_t i = 0; i < state.size(); ++i) {
      if (shadow_[i].is_floating_point()) {
        shadow_[i].mul_(decay_).add_(state[i].detach(), 1 - decay_);
      } else {
        shadow_[i].copy_(state[i]);
      }
    }
  }
  // Swaps the model's state with the shadow one (call twice to restore).
  void Swap(models::Classifier& model) {
    torch::NoGradGuard no_grad;
    const std::vector<torch::Tensor> state = State(model);
    for (size_t i = 0; i < state.size(); ++i) {
      torch::Tensor tmp = state[i].detach().clone();
      state[i].copy_(shadow_[i]);
      shadow_[i].copy_(tmp);
    }
  }
  std::vector<torch::Tensor>& shadow() { return shadow_; }
  // A shadow read from a checkpoint must match the model's state (an ema.pt written
  // before buffers were averaged holds the parameters only).
  bool Matches(models::Classifier& model) const {
    const std::vector<torch::Tensor> state = State(model);
    if (state.size() != shadow_.size()) return false;
    for (size_t i = 0; i < state.size(); ++i) {
      if (!state[i].sizes().equals(shadow_[i].sizes()) || state[i].dtype() != shadow_[i].dtype())
        return false;
    }
    return true;
  }

 private:
  static std::vector<torch::Tensor> State(models::Classifier& model) {
    std::vector<torch::Tensor> state = model.parameters();
    for (const auto& b : model.buffers()) state.push_back(b);
    return state;
  }

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
      e.images = r.value("images", int64_t{0});  // Absent in checkpoints of older versions.
      e.optimizer_step = r.value("optimizer_step", "");
      // A run without validation images logs no validation loss (null).
      e.val_loss = r.at("val_loss").is_null() ? std::numeric_limits<double>::quiet_NaN()
                                              : r.at("val_loss").get<double>();
      e.val_metrics = r.at("val_metrics");
      e.best = r.at("best");
      s.history.push_back(e);
    }
    return s;
  } catch (const nlohmann::json::exception& e) {
    return absl::DataLossError(absl::StrCat("checkpoint state is malformed: ", e.what()));
  }
}

// LibTorch's zip writer throws when its sink reports a short write, and again from its
// destructor, which aborts the process (a full disk did, in CI). The archive is therefore
// streamed to the file through a sink that never reports one: the first failed write is
// recorded, the rest of the archive skipped, and the errno returned here. Streaming, not
// building the archive in memory first: that copy cost about a second an epoch here.
using ArchiveWriter = std::function<size_t(const void*, size_t)>;
template <typename Save>
absl::Status WriteArchive(const std::string& path, Save save) {
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0)
    return absl::InternalError(absl::StrCat("cannot create ", path, ": ", std::strerror(errno)));
  int error = 0;
  const ArchiveWriter sink = [fd, &error](const void* data, size_t n) {
    if (error == 0) error = WriteAll(fd, absl::string_view(static_cast<const char*>(data), n));
    return n;
  };
  try {
    save(sink);
  } catch (const c10::Error& e) {
    ::close(fd);
    return absl::InternalError(
        absl::StrCat("serializing ", path, ": ", e.what_without_backtrace()));
  }
  // On disk before the checkpoint's directory is put in place (ReplaceDirectory): a crash
  // leaves the previous checkpoint or this one, never a whole-looking one of empty files.
  if (error == 0 && ::fsync(fd) != 0) error = errno;
  if (::close(fd) != 0 && error == 0) error = errno;
  if (error != 0)
    return absl::InternalError(absl::StrCat("write ", path, ": ", std::strerror(error)));
  return absl::OkStatus();
}

// Writes model, optimizer (when given), EMA (when given) and state into dir atomically and
// durably (files fsynced in a tmp dir, then ReplaceDirectory). The best checkpoint carries no
// optimizer: only `last` is resumed from.
absl::Status SaveCheckpoint(const std::string& dir, models::Classifier& model,
                            torch::optim::Optimizer* optimizer, Ema* ema, const RunState& state,
                            bool frozen) {
  const std::string tmp = dir + ".tmp";
  std::error_code ec;
  fs::remove_all(tmp, ec);
  fs::create_directories(tmp, ec);
  if (ec) return absl::InternalError(absl::StrCat("cannot create ", tmp, ": ", ec.message()));
  const absl::Status written = [&]() -> absl::Status {
    SL_RETURN_IF_ERROR(WriteArchive(tmp + "/model.pt", [&](const ArchiveWriter& writer) {
      torch::serialize::OutputArchive archive;
      for (const auto& p : model.named_parameters())
        archive.write(p.key(), p.value().detach().cpu());
      for (const auto& b : model.named_buffers())
        archive.write(b.key(), b.value().cpu(), /*is_buffer=*/true);
      archive.save_to(writer);
    }));
    if (optimizer != nullptr) {
      SL_RETURN_IF_ERROR(WriteArchive(tmp + "/optimizer.pt", [&](const ArchiveWriter& writer) {
        torch::save(*optimizer, writer);
      }));
    }
    if (ema != nullptr) {
      SL_RETURN_IF_ERROR(WriteArchive(tmp + "/ema.pt", [&](const ArchiveWriter& writer) {
        torch::save(ema->shadow(), writer);
      }));
    }
    nlohmann::json j = StateToJson(state);
    j["phase"] = frozen ? "frozen" : "finetune";
    return WriteFileAtomically(tmp + "/state.json", j.dump(2));
  }();
  if (!written.ok()) {
    fs::remove_all(tmp, ec);  // A half-written checkpoint holds the disk space that failed it.
    return absl::Status(written.code(),
                        absl::StrCat("saving checkpoint ", dir, ": ", written.message()));
  }
  if (const absl::Status placed = ReplaceDirectory(tmp, dir); !placed.ok()) {
    return absl::Status(placed.code(),
                        absl::StrCat("saving checkpoint ", dir, ": ", placed.message()));
  }
  return absl::OkStatus();
}

// The keys a resumed run may change: how it runs (threads, workers, numerics, logging),
// how it stops and which epoch is handed on, and the initial weights it no longer reads.
// Every other key shapes the weights: a run resumed with another value would train a
// model no single recipe describes (a cosine schedule over other epochs, another lr).
bool ResumableKey(absl::string_view key) {
  for (absl::string_view k : {"threads", "num_workers", "precision", "progress_interval_s",
                              "patience", "select_epoch", "init_weights"}) {
    if (key == k) return true;
  }
  return false;
}

// `saved_path`: the config.json the run wrote when it started.
absl::Status CheckResumedConfig(const std::string& saved_path, const TrainConfig& c) {
  SL_ASSIGN_OR_RETURN(const nlohmann::json saved_json, ReadJsonObject(saved_path, 1 << 20));
  auto saved = TrainConfig::FromJson(saved_json);
  if (!saved.ok())
    return absl::Status(saved.status().code(),
                        absl::StrCat(saved_path, ": ", saved.status().message()));
  const std::vector<std::string> changed = ChangedKeys(
      saved->ToJson(), c.ToJson(), [](const std::string& key) { return !ResumableKey(key); });
  if (changed.empty()) return absl::OkStatus();
  return absl::FailedPreconditionError(absl::StrCat(
      "resuming with another recipe than ", saved_path, " (", absl::StrJoin(changed, ", "),
      "): resume with that config, or train into a new --out"));
}

// torch::load with LibTorch's errors (a truncated or foreign file) as a status.
template <typename Value>
absl::Status LoadArchive(Value& value, const std::string& path) {
  try {
    torch::load(value, path);
  } catch (const c10::Error& e) {
    return absl::DataLossError(
        absl::StrCat("cannot load ", path, ": ", e.what_without_backtrace()));
  }
  return absl::OkStatus();
}

// Reads an ema.pt (written by SaveCheckpoint) into `ema`'s shadow, which must then match
// `model`'s parameters and buffers.
absl::Status LoadEmaShadow(Ema& ema, models::Classifier& model, const std::string& path) {
  ema.shadow().clear();  // torch::load appends to the vector.
  SL_RETURN_IF_ERROR(LoadArchive(ema.shadow(), path));
  if (ema.Matches(model)) return absl::OkStatus();
  return absl::FailedPreconditionError(
      absl::StrCat(path,
                   " does not match the model's parameters and buffers (written by an older "
                   "version that averaged the parameters only?)"));
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
          {"images", images},
          {"optimizer_step", optimizer_step},
          {"val_loss", val_loss},
          {"val_metrics", val_metrics},
          {"best", best}};
}

absl::Status LoadTrainCheckpoint(models::Classifier& model, const std::string& checkpoint_dir) {
  SL_RETURN_IF_ERROR(LoadModelArchive(model, checkpoint_dir + "/model.pt"));
  // `last` keeps the live weights in model.pt and, with EMA, their average in ema.pt: the
  // average is what validation scored, so it is the model (`best` holds it in model.pt).
  const std::string ema_path = checkpoint_dir + "/ema.pt";
  if (!fs::exists(ema_path)) return absl::OkStatus();
  Ema average(model, /*decay=*/0);
  SL_RETURN_IF_ERROR(LoadEmaShadow(average, model, ema_path));
  average.Swap(model);
  return absl::OkStatus();
}

namespace {

// The rows of a [N, C] tensor appended to `rows` as fp32 vectors.
void AppendRows(const torch::Tensor& t, std::vector<eval::Probs>& rows) {
  const torch::Tensor c = t.to(torch::kCPU, torch::kFloat32).contiguous();
  const auto acc = c.accessor<float, 2>();
  for (int64_t i = 0; i < c.size(0); ++i) rows.emplace_back(&acc[i][0], &acc[i][0] + c.size(1));
}

}  // namespace

absl::StatusOr<Predictions> PredictSamples(models::Classifier& model,
                                           const std::vector<data::Sample>& samples,
                                           const PreprocessOptions& preprocess,
                                           const std::string& device_name, int batch_size,
                                           int num_workers, Tta tta,
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
    torch::Tensor plain;  // The image's own logits (view 0).
    try {
      if (with_embeddings) {
        models::LogitsAndEmbedding out = models::ForwardWithEmbedding(model, x, numerics, device);
        plain = out.logits;
        embeddings.push_back(out.embedding);
      }
      if (tta != Tta::kNone && !plain.defined())
        plain = models::ForwardLogits(model, x, numerics, device);
      logits = models::ForwardTta(model, x, tta, numerics, device, plain);
    } catch (const c10::Error& e) {
      return absl::InternalError(absl::StrCat("forward failed: ", e.what_without_backtrace()));
    }
    AppendRows(logits, out.logits);
    if (tta != Tta::kNone) AppendRows(plain, out.plain_logits);
    for (int64_t i = 0; i < logits.size(0); ++i)
      out.labels.push_back(static_cast<int>(batch->labels[i].item<int64_t>()));
  }
  model.train(was_training);
  if (!embeddings.empty()) out.embeddings = torch::cat(embeddings);
  return out;
}

namespace {

// One training run, step by step: Setup (device, model, data, loss, numerics),
// Resume (checkpoint, workers' weights, EMA), RunEpoch (optimiser for the phase,
// steps, validation, checkpoints, stop rules) and Finish (curves, result). Train()
// drives it; every step keeps the order of the random draws, so runs stay exact.
class Trainer {
 public:
  Trainer(const TrainConfig& config, const TrainChoices& choices, const std::vector<data::Sample>& train,
          const std::vector<data::Sample>& val, const TrainContext& context)
      : c_(config),
        choices_(choices),
        train_(train),
        val_(val),
        ctx_(context),
        rank_(context.reducer ? context.reducer->rank() : 0),
        world_(context.reducer ? context.reducer->world_size() : 1),
        chief_(rank_ == 0),
        num_classes_(context.classes.size()),
        last_dir_(context.output_dir + "/checkpoints/last"),
        best_dir_(context.output_dir + "/checkpoints/best") {}

  absl::Status Setup();
  absl::Status Resume();
  int next_epoch() const { return state_.next_epoch; }
  // Trains and validates one epoch and writes its checkpoints. False: stop early
  // (patience ran out). Cancelled when the listener asks to stop.
  absl::StatusOr<bool> RunEpoch(int epoch);
  TrainResult Finish();

 private:
  absl::Status SetUpModel();
  absl::Status SetUpData();
  void SetUpLoss();
  absl::Status SetUpTeacher();
  void SetUpNumerics();
  // A new optimiser when the phase changes (frozen backbone or everything), with the
  // checkpoint's state when resuming into the same phase.
  absl::Status PrepareOptimizer(int epoch, bool frozen);
  // Forward and backward of one micro-batch; the loss value.
  absl::StatusOr<double> Step(const data::Batch& batch, int epoch, int64_t step);
  // Averages across workers, unscales (fp16), clips, steps the optimiser and the EMA.
  absl::Status ApplyGradients();
  void ReportProgress(int epoch, bool frozen, int64_t step, double loss, double head_lr, int64_t images,
                      Clock::time_point epoch_start);
  // Validation metrics of the epoch's weights (EMA weights when EMA is on) into `record`.
  absl::StatusOr<eval::Metrics> ValidateEpoch(EpochRecord& record);
  absl::Status WriteCheckpoints(const EpochRecord& record, bool frozen);
  void PlotCurves();

  const TrainConfig& c_;
  const TrainChoices choices_;
  const std::vector<data::Sample>& train_;
  const std::vector<data::Sample>& val_;
  const TrainContext& ctx_;
  const int rank_, world_;
  const bool chief_;
  const int num_classes_;
  const std::string last_dir_, best_dir_;

  torch::Device device_{torch::kCPU};
  std::shared_ptr<models::Classifier> model_;
  std::unique_ptr<data::DataLoader> loader_;
  int64_t steps_per_epoch_ = 0;
  std::vector<int> labels_;  // Of the training samples.
  LossOptions loss_options_;
  MixOptions mix_options_;
  torch::Tensor teacher_;  // distill_answers: [training samples, classes]; else undefined.
  ScheduleOptions schedule_;
  bool cuda_ = false, fp16_ = false, bf16_ = false, channels_last_ = false;
  LossScaler scaler_;
  std::unique_ptr<Ema> ema_;

  RunState state_;
  nlohmann::json resumed_state_;  // Null unless resuming.
  TrainResult result_;

  std::unique_ptr<torch::optim::Optimizer> optimizer_;
  Groups groups_;
  bool optimizer_frozen_ = false;
  std::vector<torch::Tensor> trainable_;

  Clock::time_point run_start_;
  int64_t images_this_run_ = 0;
};

absl::Status Trainer::Setup() {
  SL_ASSIGN_OR_RETURN(device_, ParseDevice(ctx_.device));
  if (c_.batch_size % world_ != 0) {
    return absl::InvalidArgumentError(absl::StrCat("batch_size ", c_.batch_size,
                                                   " is not divisible by the world size ", world_));
  }
  torch::set_num_threads(c_.threads);
  std::error_code ec;
  fs::create_directories(ctx_.output_dir + "/checkpoints", ec);
  if (ec) return absl::InternalError(absl::StrCat("cannot create ", ctx_.output_dir, ": ", ec.message()));
  const std::string config_path = ctx_.output_dir + "/config.json";
  // A crash between ReplaceDirectory's two renames (filesystems without an exchange, or this
  // program before it used one) leaves `last` moved aside, whole: resume from it.
  // Every rank of a run on one machine may try; one rename wins.
  if (ctx_.resume && !fs::exists(last_dir_) && fs::exists(last_dir_ + ".old/state.json")) {
    fs::rename(last_dir_ + ".old", last_dir_, ec);
    if (ec && !fs::exists(last_dir_))
      return absl::InternalError(
          absl::StrCat("cannot restore ", last_dir_, ".old: ", ec.message()));
    SL_LOG(WARNING) << "restored " << last_dir_ << " from " << last_dir_
                    << ".old (the run stopped while saving it)";
  }
  if (ctx_.resume && fs::exists(last_dir_ + "/state.json") && fs::exists(config_path)) {
    SL_RETURN_IF_ERROR(CheckResumedConfig(config_path, c_));
  }
  if (chief_) SL_RETURN_IF_ERROR(WriteFileAtomically(config_path, c_.ToJson().dump(2) + "\n"));
  SL_RETURN_IF_ERROR(SetUpModel());
  SL_RETURN_IF_ERROR(SetUpData());
  SetUpLoss();
  SL_RETURN_IF_ERROR(SetUpTeacher());
  schedule_ = MakeSchedule(c_, choices_.schedule);
  SetUpNumerics();
  return absl::OkStatus();
}

absl::Status Trainer::SetUpModel() {
  model_ = ctx_.model;
  if (!model_) {
    torch::manual_seed(c_.seed);
    models::ModelOptions mo;
    mo.image_size = c_.image_size;
    mo.dropout = c_.dropout;
    mo.num_classes = num_classes_;
    SL_ASSIGN_OR_RETURN(model_, models::CreateModel(c_.architecture, mo));
  } else if (model_->num_classes() != num_classes_) {
    return absl::InvalidArgumentError(absl::StrCat("the model has ", model_->num_classes(),
                                                   " outputs but the data have ", num_classes_, " classes (",
                                                   ctx_.classes.ToString(), ")"));
  }
  model_->to(device_);
  return absl::OkStatus();
}

absl::Status Trainer::SetUpData() {
  for (const auto& s : train_) labels_.push_back(s.label);
  for (const std::vector<data::Sample>* part : {&train_, &val_}) {
    for (const data::Sample& s : *part) {
      if (s.label < 0 || s.label >= num_classes_) {
        return absl::InvalidArgumentError(absl::StrCat("image ", s.image_id, " has label ", s.label,
                                                       ", outside the ", num_classes_, " classes"));
      }
    }
  }
  std::unique_ptr<data::Sampler> sampler;
  if (choices_.sampler == SamplerKind::kBalanced) {
    const int64_t draws =
        c_.samples_per_epoch > 0 ? c_.samples_per_epoch : static_cast<int64_t>(train_.size());
    sampler = std::make_unique<data::ClassBalancedSampler>(
        labels_, num_classes_, choices_.class_weighting, draws, c_.seed);
  } else {
    sampler = std::make_unique<data::ShuffleSampler>(train_.size(), c_.seed);
  }
  const int64_t epoch_samples = sampler->size();
  data::LoaderOptions lo;
  lo.batch_size = c_.batch_size / world_;
  lo.num_workers = c_.num_workers;
  lo.seed = c_.seed;
  lo.augmentation = c_.augmentation;
  lo.preprocess = c_.Preprocess();
  if (world_ > 1) {
    sampler = std::make_unique<ShardedSampler>(std::move(sampler), c_.batch_size, rank_, world_);
    lo.drop_last = true;
  }
  // A last batch of one image cannot train batch norm (one value per channel at a 1x1
  // feature map) and gives noisy statistics anyway: drop it (the shuffled image lands
  // in a full batch in other epochs).
  if (epoch_samples > 1 && epoch_samples % lo.batch_size == 1) lo.drop_last = true;
  SL_ASSIGN_OR_RETURN(loader_, data::DataLoader::Create(train_, std::move(sampler), lo));
  steps_per_epoch_ = loader_->num_batches();
  if (steps_per_epoch_ == 0) return absl::InvalidArgumentError("the training set is smaller than one batch");
  return absl::OkStatus();
}

void Trainer::SetUpLoss() {
  const bool balanced = choices_.sampler == SamplerKind::kBalanced;
  loss_options_.kind = choices_.loss;
  loss_options_.label_smoothing = c_.label_smoothing;
  loss_options_.focal_gamma = c_.focal_gamma;
  if (loss_options_.kind == LossKind::kLogitAdjusted) {
    // The prior the sampler shows the model: the class frequencies, or uniform under
    // the class-balanced sampler (then the adjustment is a constant and does nothing).
    std::vector<double> counts(num_classes_, 0.0);
    for (int y : labels_) counts[y] += 1;
    for (double& n : counts) {
      n = balanced ? 1.0 / num_classes_ : std::max(n, 1.0) / labels_.size();
      loss_options_.log_prior.push_back(std::log(n));
    }
    loss_options_.logit_adjust_tau = c_.logit_adjust_tau;
  } else if (loss_options_.kind != LossKind::kCrossEntropy && !balanced) {
    const auto w = data::ClassWeights(labels_, choices_.class_weighting, num_classes_);
    loss_options_.class_weights.assign(w.begin(), w.end());
  }
  mix_options_ = {
      .mixup_alpha = c_.mixup_alpha, .cutmix_alpha = c_.cutmix_alpha, .prob = c_.mix_prob};
}

// The teachers' answers of every training sample, averaged over the files that have it.
absl::Status Trainer::SetUpTeacher() {
  if (c_.distill_answers.empty()) return absl::OkStatus();
  struct Answered {
    std::vector<double> sum;  // Of the teachers' probabilities.
    int teachers = 0;
    int label = -1;  // The first file's.
  };
  std::map<std::string, Answered> answered;  // By image id.
  int files = 0;
  for (absl::string_view part : absl::StrSplit(c_.distill_answers, ':', absl::SkipWhitespace())) {
    const std::string path(absl::StripAsciiWhitespace(part));
    auto answers = eval::ReadRoundAnswers(path, ctx_.classes, size_t{256} << 20);
    if (!answers.ok()) {
      return absl::Status(answers.status().code(),
                          absl::StrCat("distill_answers ", answers.status().message()));
    }
    for (size_t i = 0; i < answers->image_ids.size(); ++i) {
      Answered& a = answered[answers->image_ids[i]];
      if (a.teachers++ == 0) {
        a.sum.assign(num_classes_, 0.0);
        a.label = answers->labels[i];
      }
      for (int k = 0; k < num_classes_; ++k) a.sum[k] += answers->probs[i][k];
    }
    ++files;
  }
  std::vector<float> rows;
  rows.reserve(train_.size() * num_classes_);
  std::vector<std::string> missing, relabelled;
  int64_t answers = 0;
  for (const data::Sample& s : train_) {
    const auto it = answered.find(s.image_id);
    if (it == answered.end()) {
      missing.push_back(s.image_id);
      continue;
    }
    const Answered& a = it->second;
    if (a.label != s.label) relabelled.push_back(s.image_id);
    for (double p : a.sum) rows.push_back(static_cast<float>(p / a.teachers));
    answers += a.teachers;
  }
  const auto few = [](const std::vector<std::string>& ids) {
    return absl::StrJoin(ids.begin(), ids.begin() + std::min<size_t>(ids.size(), 3), ", ");
  };
  if (!missing.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "distill_answers: no teacher answer for ", missing.size(), " of ", train_.size(),
        " training images (", few(missing), "); every training image needs one"));
  }
  if (!relabelled.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat("distill_answers: ", relabelled.size(),
                     " training images carry another label in the answers (", few(relabelled),
                     "): answers of other data"));
  }
  teacher_ = torch::tensor(rows, torch::kFloat32)
                 .view({static_cast<int64_t>(train_.size()), num_classes_})
                 .to(device_);
  if (chief_ && ctx_.log_progress) {
    std::fprintf(stderr,
                 "[train] distilling from %d answer file(s): %zu training images, %.2f teachers an "
                 "image, weight %g, temperature %g\n",
                 files, train_.size(), static_cast<double>(answers) / train_.size(),
                 c_.distill_weight, c_.distill_temperature);
  }
  return absl::OkStatus();
}

void Trainer::SetUpNumerics() {
  cuda_ = device_.is_cuda();
  // CUDA: "auto" is fp16 autocast with loss scaling. CPU: "auto" is bf16 autocast
  // where the CPU has native bf16 (ResolvePrecision), fp32 elsewhere. Master weights,
  // gradients and optimizer state stay fp32 in every mode.
  const TrainPrecision p = choices_.precision;
  fp16_ = cuda_ && (p == TrainPrecision::kAuto || p == TrainPrecision::kFp16);
  bf16_ = p == TrainPrecision::kBf16;
  if (p == TrainPrecision::kFp16 && !cuda_) SL_LOG(WARNING) << "fp16 autocast needs CUDA; training in fp32";
  if (fp16_) {
    result_.numerics_reason = absl::StrCat(c_.precision, ": fp16 autocast (CUDA)");
  } else if (p == TrainPrecision::kAuto) {
    const PrecisionDecision d = ResolvePrecision(
        PrecisionChoice::kAuto, {.cuda = cuda_, .native_bf16 = CpuFeaturesForThisProcess().native_bf16()});
    bf16_ = d.precision == Precision::kBf16;
    result_.numerics_reason = d.reason;
  } else {
    result_.numerics_reason = absl::StrCat(bf16_ ? "bf16" : "fp32", " (requested)");
  }
  // bf16 convolutions run fastest on NHWC tensors (oneDNN); fp32 ones on NCHW.
  channels_last_ = bf16_ && !cuda_ && model_->HasFeatureMap();
  if (channels_last_) models::ToChannelsLast(*model_);
  result_.numerics = fp16_ ? "fp16 autocast" : bf16_ ? "bf16 autocast" : "fp32";
  if (channels_last_) result_.numerics += ", channels-last";
  if (chief_) SL_LOG(INFO) << "training in " << result_.numerics << " (" << result_.numerics_reason << ")";
}

absl::Status Trainer::Resume() {
  if (ctx_.resume && fs::exists(last_dir_ + "/state.json")) {
    SL_ASSIGN_OR_RETURN(resumed_state_, ReadJsonObject(last_dir_ + "/state.json", 64 << 20));
    SL_ASSIGN_OR_RETURN(state_, StateFromJson(resumed_state_));
    SL_RETURN_IF_ERROR(LoadModelArchive(*model_, last_dir_ + "/model.pt"));
    if (chief_) SL_LOG(INFO) << "resuming from " << last_dir_ << " at epoch " << state_.next_epoch + 1;
  }
  if (ctx_.reducer != nullptr) {
    std::vector<torch::Tensor> params;
    for (auto& p : model_->parameters()) params.push_back(p.data());
    SL_RETURN_IF_ERROR(ctx_.reducer->Broadcast(params));
  }
  if (c_.ema_decay > 0) {
    ema_ = std::make_unique<Ema>(*model_, c_.ema_decay);
    if (!resumed_state_.is_null() && fs::exists(last_dir_ + "/ema.pt")) {
      const absl::Status loaded = LoadEmaShadow(*ema_, *model_, last_dir_ + "/ema.pt");
      if (absl::IsFailedPrecondition(loaded)) {
        return absl::FailedPreconditionError(
            absl::StrCat(loaded.message(), "; resume without EMA or start afresh"));
      }
      SL_RETURN_IF_ERROR(loaded);
    }
  }
  run_start_ = Clock::now();
  return absl::OkStatus();
}

absl::Status Trainer::PrepareOptimizer(int epoch, bool frozen) {
  if (!optimizer_ || optimizer_frozen_ != frozen) {
    groups_ = BuildGroups(*model_, frozen, c_, choices_.optimizer);
    optimizer_ = MakeOptimizer(groups_, c_, choices_.optimizer);
    optimizer_frozen_ = frozen;
    if (epoch == state_.next_epoch && !resumed_state_.is_null() &&
        resumed_state_.value("phase", "") == (frozen ? "frozen" : "finetune")) {
      SL_RETURN_IF_ERROR(LoadArchive(*optimizer_, last_dir_ + "/optimizer.pt"));
    }
  }
  trainable_.clear();
  for (auto& g : optimizer_->param_groups()) {
    for (auto& p : g.params()) trainable_.push_back(p);
  }
  return absl::OkStatus();
}

absl::StatusOr<double> Trainer::Step(const data::Batch& batch, int epoch, int64_t step) {
  torch::Tensor x = batch.images.to(device_, /*non_blocking=*/true);
  if (channels_last_) x = x.contiguous(torch::MemoryFormat::ChannelsLast);
  torch::Tensor y = batch.labels.to(device_, /*non_blocking=*/true);
  torch::Tensor loss;
  try {
    // Mixup / CutMix draws depend on the run seed, the step and the rank only.
    Rng mix_rng(DeriveSeed({c_.seed, 0x6D6978 /* "mix" */, static_cast<uint64_t>(epoch),
                            static_cast<uint64_t>(step), static_cast<uint64_t>(rank_)}));
    const MixedBatch mixed = MixBatch(x, y, mix_options_, mix_rng);
    torch::Tensor logits;
    {
      AutocastGuard autocast(cuda_, fp16_, bf16_);
      // The loss in fp32 whatever the autocast dtype of the head.
      logits = model_->forward(mixed.images).to(torch::kFloat32);
    }
    loss = MixedLoss(logits, y, mixed, loss_options_);
    if (teacher_.defined()) {
      const torch::Tensor rows = torch::tensor(batch.indices, torch::kInt64).to(device_);
      const torch::Tensor q = MixedTeacher(teacher_.index_select(0, rows), mixed);
      loss = loss * (1.0 - c_.distill_weight) +
             DistillationLoss(logits, q, c_.distill_temperature) * c_.distill_weight;
    }
    torch::Tensor scaled = loss / c_.grad_accum;
    if (fp16_) scaled = scaled * scaler_.scale();
    scaled.backward();
  } catch (const c10::Error& e) {
    return absl::InternalError(absl::StrCat("training step failed at epoch ", epoch + 1, ": ",
                                            e.what_without_backtrace()));
  }
  const double loss_value = loss.item<double>();
  if (!std::isfinite(loss_value) && !fp16_) {
    return absl::InternalError(absl::StrCat("loss is ", loss_value, " at epoch ", epoch + 1, " step ", step + 1,
                                            "; lower the learning rate"));
  }
  return loss_value;
}

absl::Status Trainer::ApplyGradients() {
  if (ctx_.reducer != nullptr) {
    std::vector<torch::Tensor> grads;
    for (auto& p : trainable_) {
      if (!p.grad().defined()) p.mutable_grad() = torch::zeros_like(p);
      grads.push_back(p.grad());
    }
    SL_RETURN_IF_ERROR(ctx_.reducer->AllReduceMean(grads));
  }
  const bool finite = fp16_ ? scaler_.Unscale(trainable_) : true;
  if (finite) {
    if (c_.clip_grad_norm > 0) {
      // FusedAdamW clips as it updates (one read of the gradients for the norm).
      if (auto* fused = dynamic_cast<FusedAdamW*>(optimizer_.get())) {
        fused->ClipGradNorm(c_.clip_grad_norm);
      } else {
        torch::nn::utils::clip_grad_norm_(trainable_, c_.clip_grad_norm);
      }
    }
    optimizer_->step();
    if (ema_) ema_->Update(*model_);
  }
  ClearGradients(*optimizer_);
  return absl::OkStatus();
}

void Trainer::ReportProgress(int epoch, bool frozen, int64_t step, double loss, double head_lr, int64_t images,
                             Clock::time_point epoch_start) {
  Progress p;
  p.phase = frozen ? "frozen" : "finetune";
  p.epoch = epoch;
  p.epochs = c_.epochs;
  p.step = step;
  p.steps = steps_per_epoch_;
  p.loss = loss;
  p.lr = head_lr;
  p.images_per_second = images / std::max(1e-9, SecondsSince(epoch_start));
  const double done_images = static_cast<double>(images_this_run_ + images);
  const double rate = done_images / std::max(1e-9, SecondsSince(run_start_));
  const int64_t total_steps = static_cast<int64_t>(c_.epochs) * steps_per_epoch_;
  const int64_t remaining_steps = total_steps - (static_cast<int64_t>(epoch) * steps_per_epoch_ + step);
  p.eta_seconds = remaining_steps * (static_cast<double>(c_.batch_size) / std::max(rate, 1e-9));
  if (ctx_.log_progress) std::fprintf(stderr, "%s\n", ProgressLine(p).c_str());
  if (ctx_.listener) ctx_.listener->OnProgress(p);
}

absl::StatusOr<eval::Metrics> Trainer::ValidateEpoch(EpochRecord& record) {
  // Every rank evaluates, so early-stopping decisions agree.
  if (ema_) ema_->Swap(*model_);
  absl::StatusOr<Predictions> validated;
  {
    // Validation under the same autocast as training (fp32 logits either way).
    AutocastGuard autocast(cuda_, fp16_, bf16_);
    validated = PredictSamples(*model_, val_, c_.Preprocess(), ctx_.device, c_.batch_size, c_.num_workers);
  }
  if (ema_) ema_->Swap(*model_);
  SL_ASSIGN_OR_RETURN(Predictions pred, std::move(validated));
  const std::vector<eval::Probs> probs = eval::Softmax(pred.logits);
  SL_ASSIGN_OR_RETURN(eval::Metrics metrics, eval::ComputeMetrics(pred.labels, probs, ctx_.classes));
  record.val_metrics = eval::MetricsToJson(metrics);
  record.val_loss = metrics.nll;
  if (!record.val_metrics.contains(c_.monitor) || !record.val_metrics[c_.monitor].is_number()) {
    return absl::InvalidArgumentError(absl::StrCat("monitor '", c_.monitor, "' is not a numeric metric"));
  }
  return metrics;
}

absl::Status Trainer::WriteCheckpoints(const EpochRecord& record, bool frozen) {
  const std::string log_path = ctx_.output_dir + "/train_log.jsonl";
  std::ofstream log(log_path, std::ios::app);
  log << record.ToJson().dump() << "\n";
  if (!log.flush()) {
    return absl::InternalError(absl::StrCat("cannot append epoch ", record.epoch + 1, " to ",
                                            log_path, ": ", std::strerror(errno)));
  }
  if (ctx_.listener) ctx_.listener->OnEpoch(record);
  SL_RETURN_IF_ERROR(
      SaveCheckpoint(last_dir_, *model_, optimizer_.get(), ema_.get(), state_, frozen));
  if (!record.best) return absl::OkStatus();
  if (ema_) ema_->Swap(*model_);
  const absl::Status s =
      SaveCheckpoint(best_dir_, *model_, /*optimizer=*/nullptr, /*ema=*/nullptr, state_, frozen);
  if (ema_) ema_->Swap(*model_);
  return s;
}

absl::StatusOr<bool> Trainer::RunEpoch(int epoch) {
  const bool frozen = epoch < c_.frozen_epochs;
  SL_RETURN_IF_ERROR(PrepareOptimizer(epoch, frozen));
  SetTrainMode(*model_, frozen);
  torch::manual_seed(DeriveSeed({c_.seed, static_cast<uint64_t>(epoch), 0x70c4}));
  SL_RETURN_IF_ERROR(loader_->StartEpoch(epoch));
  const auto epoch_start = Clock::now();
  auto last_print = epoch_start;
  double loss_sum = 0;
  int64_t loss_count = 0, step = 0, images = 0;
  double head_lr = c_.lr;
  ClearGradients(*optimizer_);
  while (true) {
    SL_ASSIGN_OR_RETURN(std::optional<data::Batch> batch, loader_->Next());
    if (!batch) break;
    // Learning rate for this step.
    const double t = frozen ? 0.0 : (epoch - c_.frozen_epochs) + static_cast<double>(step) / steps_per_epoch_;
    const double factor = frozen ? 1.0 : LearningRateFactor(schedule_, t);
    head_lr = c_.lr * factor;
    for (size_t gi = 0; gi < optimizer_->param_groups().size(); ++gi) {
      optimizer_->param_groups()[gi].options().set_lr(c_.lr * groups_.lr_scales[gi] * factor);
    }
    SL_ASSIGN_OR_RETURN(const double loss_value, Step(*batch, epoch, step));
    loss_sum += loss_value * batch->labels.size(0);
    loss_count += batch->labels.size(0);
    ++step;
    images += batch->labels.size(0) * world_;
    if (step % c_.grad_accum == 0 || step == steps_per_epoch_) SL_RETURN_IF_ERROR(ApplyGradients());
    if (chief_ && (SecondsSince(last_print) >= c_.progress_interval_s || step == steps_per_epoch_)) {
      last_print = Clock::now();
      ReportProgress(epoch, frozen, step, loss_sum / loss_count, head_lr, images, epoch_start);
    }
  }
  images_this_run_ += images;
  EpochRecord record;
  record.epoch = epoch;
  record.phase = frozen ? "frozen" : "finetune";
  record.train_loss = loss_count ? loss_sum / loss_count : 0;
  record.lr = head_lr;
  record.seconds = SecondsSince(epoch_start);
  record.images_per_second = images / std::max(1e-9, record.seconds);
  record.images = images;
  record.optimizer_step = OptimizerStepName(*optimizer_);

  if (val_.empty()) {
    // No validation images (a model trained on every image to ship): nothing chooses
    // an epoch, so the latest one is the model and nothing stops the schedule early.
    record.val_loss = std::numeric_limits<double>::quiet_NaN();
    record.val_metrics = nlohmann::json::object();
    record.best = true;
    state_.best_metric = 0;
    state_.best_epoch = epoch;
    state_.epochs_without_improvement = 0;
    if (chief_) {
      std::fprintf(stderr, "[train] epoch %d/%d done in %s: loss %.4f  (no validation images)\n",
                   epoch + 1, c_.epochs, FormatDuration(record.seconds).c_str(), record.train_loss);
    }
  } else {
    SL_ASSIGN_OR_RETURN(const eval::Metrics metrics, ValidateEpoch(record));
    const double score = record.val_metrics[c_.monitor].get<double>();
    record.best = score > state_.best_metric;
    if (record.best) {
      state_.best_metric = score;
      state_.best_epoch = epoch;
      state_.epochs_without_improvement = 0;
    } else {
      ++state_.epochs_without_improvement;
    }
    if (chief_) {
      std::fprintf(
          stderr,
          "[train] epoch %d/%d done in %s: loss %.4f  val loss %.4f  val %s %.4f  acc %.4f%s\n",
          epoch + 1, c_.epochs, FormatDuration(record.seconds).c_str(), record.train_loss,
          record.val_loss, c_.monitor.c_str(), score, metrics.accuracy,
          record.best ? "  (best)" : "");
    }
  }
  state_.history.push_back(record);
  state_.next_epoch = epoch + 1;
  if (chief_) SL_RETURN_IF_ERROR(WriteCheckpoints(record, frozen));
  if (ctx_.listener != nullptr && ctx_.listener->ShouldStop() && epoch + 1 < c_.epochs) {
    return absl::CancelledError(absl::StrCat("training stopped after epoch ", epoch + 1, "; resume from ", last_dir_));
  }
  if (c_.patience > 0 && !frozen && state_.epochs_without_improvement >= c_.patience) {
    if (chief_) SL_LOG(INFO) << "early stopping: no improvement of " << c_.monitor << " for " << c_.patience << " epochs";
    result_.early_stopped = true;
    return false;
  }
  return true;
}

void Trainer::PlotCurves() {
  eval::Series train_loss{"train loss", {}}, val_loss{"val loss", {}}, monitor{"val " + c_.monitor, {}};
  for (const auto& r : state_.history) {
    train_loss.points.push_back({r.epoch + 1.0, r.train_loss});
    if (!r.val_metrics.contains(c_.monitor)) continue;  // An epoch without validation.
    val_loss.points.push_back({r.epoch + 1.0, r.val_loss});
    monitor.points.push_back({r.epoch + 1.0, r.val_metrics.value(c_.monitor, 0.0)});
  }
  std::vector<eval::Series> series = {train_loss};
  if (!monitor.points.empty()) {
    series.push_back(val_loss);
    series.push_back(monitor);
  }
  const absl::Status plot = eval::PlotLines("Training curves", "epoch", "loss / metric", series,
                                            ctx_.output_dir + "/training_curves.png");
  if (!plot.ok()) SL_LOG(WARNING) << "training curves: " << plot;
}

TrainResult Trainer::Finish() {
  if (chief_ && !state_.history.empty()) PlotCurves();
  result_.epochs_run = static_cast<int>(state_.history.size());
  result_.best_epoch = state_.best_epoch;
  result_.best_metric = state_.best_metric;
  result_.monitor_best_epoch = val_.empty() ? -1 : state_.best_epoch;
  if (c_.select_epoch == "last" && !state_.history.empty()) {
    const EpochRecord& last = state_.history.back();
    result_.best_epoch = last.epoch;
    result_.best_metric = last.val_metrics.value(c_.monitor, 0.0);
  }
  result_.history = state_.history;
  // select_epoch "last" hands on `last` even when a run resumed after its last epoch
  // with the key switched (its `best` is still the monitor's).
  result_.best_checkpoint = c_.select_epoch == "last" ? last_dir_ : best_dir_;
  result_.last_checkpoint = last_dir_;
  model_->eval();
  result_.model = model_;
  return std::move(result_);
}

}  // namespace

absl::StatusOr<TrainResult> Train(const TrainConfig& c, const std::vector<data::Sample>& train,
                                  const std::vector<data::Sample>& val, const TrainContext& ctx) {
  SL_ASSIGN_OR_RETURN(const TrainChoices choices, c.Choices());
  if (ctx.output_dir.empty()) return absl::InvalidArgumentError("output_dir is required");
  // Without validation images the last epoch is the model (every epoch is "best").
  if (train.empty()) return absl::InvalidArgumentError("training samples are required");
  Trainer trainer(c, choices, train, val, ctx);
  SL_RETURN_IF_ERROR(trainer.Setup());
  SL_RETURN_IF_ERROR(trainer.Resume());
  for (int epoch = trainer.next_epoch(); epoch < c.epochs; ++epoch) {
    SL_ASSIGN_OR_RETURN(const bool go_on, trainer.RunEpoch(epoch));
    if (!go_on) break;
  }
  return trainer.Finish();
}

}  // namespace skinlesion::train
