// The training loop: two-phase fine-tuning (frozen backbone, then all layers with
// discriminative learning rates), class-imbalance handling, mixed precision on
// CUDA, gradient clipping and accumulation, EMA, early stopping, checkpoints and
// exact resume, data-parallel training through a GradientReducer.
//
// Reproducibility: the model is initialised after torch::manual_seed(seed); each
// epoch reseeds LibTorch's generator with DeriveSeed({seed, epoch}) (dropout,
// stochastic depth) and the data loader derives every augmentation from
// (seed, epoch, position). So on CPU the same configuration gives identical
// weights, and a run resumed from the checkpoint of epoch k ends exactly where
// the uninterrupted run ends.
//
// Output directory:
//   config.json              the effective configuration
//   train_log.jsonl          one JSON object per epoch (loss, lr, throughput, val metrics)
//   checkpoints/last/        model.pt optimizer.pt ema.pt state.json (after every epoch)
//   checkpoints/best/        the same for the best epoch by config.monitor
//   training_curves.png      loss and monitored metric per epoch
#ifndef SKINLESION_TRAIN_TRAINER_H_
#define SKINLESION_TRAIN_TRAINER_H_

#include <memory>
#include <string>
#include <vector>

#include <ATen/core/Tensor.h>

#include "absl/status/statusor.h"
#include "nlohmann/json.hpp"
#include "skinlesion/data/catalogue.h"
#include "skinlesion/eval/metrics.h"
#include "skinlesion/image/preprocess.h"
#include "skinlesion/models/classifier.h"
#include "skinlesion/models/numerics.h"
#include "skinlesion/train/config.h"

namespace skinlesion::train {

struct Progress {
  std::string phase;  // "frozen" or "finetune"
  int epoch = 0;      // 0-based
  int epochs = 0;
  int64_t step = 0;   // Micro-batches done in this epoch.
  int64_t steps = 0;
  double loss = 0;    // Running mean over the epoch.
  double lr = 0;      // Head learning rate now.
  double images_per_second = 0;
  double eta_seconds = 0;  // Rest of the run.
};

struct EpochRecord {
  int epoch = 0;
  std::string phase;
  double train_loss = 0;
  double lr = 0;
  double images_per_second = 0;
  double seconds = 0;
  int64_t images = 0;  // Drawn this epoch (the sampler's epoch, all ranks).
  std::string
      optimizer_step;  // How the last step ran: "fused AdamW", "LibTorch AdamW", "LibTorch SGD".
  double val_loss = 0;
  nlohmann::json val_metrics;  // eval::MetricsToJson of the validation split.
  bool best = false;
  nlohmann::json ToJson() const;
};

class ProgressListener {
 public:
  virtual ~ProgressListener() = default;
  virtual void OnProgress(const Progress& progress) {}
  virtual void OnEpoch(const EpochRecord& record) {}
  // Polled after every epoch's checkpoint: true makes Train return Cancelled (the
  // run can be resumed from checkpoints/last).
  virtual bool ShouldStop() { return false; }
};

// Averages gradients across data-parallel workers (see distributed.h).
class GradientReducer {
 public:
  virtual ~GradientReducer() = default;
  virtual int rank() const = 0;
  virtual int world_size() const = 0;
  // In place: every tensor becomes the mean over the workers.
  virtual absl::Status AllReduceMean(std::vector<at::Tensor>& tensors) = 0;
  // In place: every tensor becomes rank 0's.
  virtual absl::Status Broadcast(std::vector<at::Tensor>& tensors) = 0;
};

struct TrainContext {
  std::string device = "cpu";          // A torch::Device string: "cpu", "cuda", "cuda:1".
  std::string output_dir;              // Required.
  bool resume = false;                 // Continue from output_dir/checkpoints/last.
  ProgressListener* listener = nullptr;
  GradientReducer* reducer = nullptr;  // Data-parallel when set.
  bool log_progress = true;            // Progress lines on stderr (rank 0 only).
  // A model to train (e.g. with pretrained weights loaded); created from the
  // config (seeded) when null, with one output per class of `classes`.
  std::shared_ptr<models::Classifier> model;
  // The label set the samples' labels index (the data's: data::Catalogue::classes).
  LabelSet classes = LabelSet::Ham10000();
};

struct TrainResult {
  int epochs_run = 0;
  bool early_stopped = false;
  int best_epoch = -1;  // The epoch of best_checkpoint (the last with select_epoch "last").
  double best_metric = 0;
  int monitor_best_epoch = -1;  // The monitor's best epoch on validation (-1: none).
  std::vector<EpochRecord> history;
  // The model with the weights of the last epoch run (eval mode). The selected
  // epoch's weights (config select_epoch; EMA weights when EMA is on) are in
  // best_checkpoint; load them with LoadTrainCheckpoint. Only rank 0 writes checkpoints.
  std::shared_ptr<models::Classifier> model;
  std::string best_checkpoint;
  std::string last_checkpoint;
  // How the steps ran: "bf16 autocast, channels-last" / "fp16 autocast" / "fp32",
  // and why (config "precision" resolved on this machine).
  std::string numerics;
  std::string numerics_reason;
};

// Trains on `train`, choosing the epoch on `val` (config "monitor", early stopping
// with "patience"; with "select_epoch" "last" the last epoch is the model and `val`
// only reports). With no validation samples (a model trained on every image to
// ship, its operating point fitted on cross-validation rounds) every epoch is the best
// so far: the last one is the model, and patience never stops the run.
absl::StatusOr<TrainResult> Train(const TrainConfig& config, const std::vector<data::Sample>& train,
                                  const std::vector<data::Sample>& val, const TrainContext& context);

// Eval-mode logits of `model` for `samples` preprocessed with `preprocess` (the
// model's: TrainConfig::Preprocess() or serving::PreprocessOptionsFor(spec); no
// augmentation; with test-time augmentation (skinlesion/common/tta.h) the softmax
// of the image's views is averaged and log-probabilities are returned). `numerics`: what
// PrepareModel made of the model (inputs are converted to match); the default is an fp32 model.
// Logits are fp32.
struct Predictions {
  std::vector<int> labels;
  std::vector<eval::Probs> logits;
  // Under test-time augmentation: the image's own logits (view 0), which logit-based
  // scores (energy) need; empty without it (`logits` are then the model's own).
  std::vector<eval::Probs> plain_logits;
  // With `with_embeddings`: the penultimate features [N, D] fp32 (models/feature_ood.h;
  // of the image itself under test-time augmentation).
  at::Tensor embeddings;
};
absl::StatusOr<Predictions> PredictSamples(models::Classifier& model,
                                           const std::vector<data::Sample>& samples,
                                           const PreprocessOptions& preprocess,
                                           const std::string& device, int batch_size = 32,
                                           int num_workers = 2, Tta tta = Tta::kNone,
                                           const models::Numerics& numerics = {},
                                           bool with_embeddings = false);

// Loads a checkpoint written by Train (checkpoints/best or last) into `model`.
absl::Status LoadTrainCheckpoint(models::Classifier& model, const std::string& checkpoint_dir);

}  // namespace skinlesion::train

#endif  // SKINLESION_TRAIN_TRAINER_H_
