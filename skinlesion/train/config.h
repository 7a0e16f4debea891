// The configuration of a training run: every knob of `skinlesion train`, with the
// defaults of the paper's recipe. Serialised as JSON (saved with every run, read
// from --config files); unknown keys are errors so a typo never goes unnoticed.
#ifndef SKINLESION_TRAIN_CONFIG_H_
#define SKINLESION_TRAIN_CONFIG_H_

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "nlohmann/json.hpp"
#include "skinlesion/common/referral.h"
#include "skinlesion/image/preprocess.h"
#include "skinlesion/train/choices.h"

namespace skinlesion::train {

struct TrainConfig {
  // Model.
  std::string architecture = "vit_b_16";
  int64_t image_size = 224;
  // Pretrained weights (safetensors, torchvision/timm/HF layout, or .pth); empty =
  // random initialisation.
  std::string init_weights;
  double dropout = -1;            // < 0: the architecture's default.

  // Data.
  std::string augmentation = "medical";    // a preset of MakePreset(): PresetNames()
  std::string sampler = "shuffle";         // shuffle, balanced
  std::string class_weighting = "sqrt";    // inverse, sqrt: for balanced sampler & weighted loss
  // Balanced sampler: images drawn per epoch (with replacement); 0 = the training set's
  // size. Fixing it fixes the steps of a run whatever the pool: the bundled model is
  // trained on every image with the epoch of the cv rounds that measured its recipe
  // (4,787 = every image but one fold), so it takes those models' steps and schedule.
  int64_t samples_per_epoch = 0;
  int batch_size = 32;
  int grad_accum = 1;                      // Micro-batches per optimiser step.
  int num_workers = 2;
  int threads = 2;                         // LibTorch intra-op threads.

  // Optimisation: phase 1 trains the head on a frozen backbone for frozen_epochs,
  // phase 2 trains everything for the remaining epochs with discriminative rates.
  int epochs = 30;
  int frozen_epochs = 3;
  std::string optimizer = "adamw";         // adamw, sgd
  double lr = 3e-4;                        // Head lr (both phases).
  double backbone_lr_factor = 0.1;         // Phase 2 backbone lr = lr * factor.
  double layer_decay = 0.75;               // ViT: lr * decay^(depth - layer) per block; 1 = off.
  double weight_decay = 0.05;
  double momentum = 0.9;                   // SGD.
  bool nesterov = true;                    // SGD.
  std::string schedule = "cosine_restarts";  // constant, cosine_restarts, warmup_cosine, step
  double t0 = 10;
  double t_mult = 2;
  double min_lr_factor = 0.01;
  double warmup_epochs = 1;
  double step_epochs = 10;
  double gamma = 0.1;

  // Loss.
  std::string loss = "weighted_ce";        // ce, weighted_ce, focal, logit_adjusted
  double focal_gamma = 2.0;
  double label_smoothing = 0.1;
  double logit_adjust_tau = 1.0;           // loss logit_adjusted: logits + tau * log(prior)
  // Batch mixing (skinlesion/train/mix.h): Beta(alpha, alpha) for mixup and CutMix,
  // 0 = off; mix_prob is the share of batches mixed (with both on, half each).
  double mixup_alpha = 0.0;
  double cutmix_alpha = 0.0;
  double mix_prob = 1.0;
  // Knowledge distillation (DistillationLoss, skinlesion/train/losses.h): teachers'
  // answers, CSV files as `skinlesion cv` and `evaluate --answers_dir` write them
  // (skinlesion/eval/out_of_fold.h), ':'-separated like PATH (`--set` splits on commas),
  // together answering every training image; an image in
  // several files gets their mean (an ensemble of teachers). The loss becomes
  // (1 - distill_weight) * the loss above + distill_weight * the distillation term at
  // distill_temperature. "" = off.
  std::string distill_answers;
  double distill_weight = 0.5;
  double distill_temperature = 2.0;

  // Numerics.
  // auto: fp16 autocast on CUDA; on a CPU bf16 autocast where it has native bf16
  // (AVX512_BF16 / AMX), else fp32. fp32, bf16 (autocast, fp32 master weights), fp16 (CUDA).
  std::string precision = "auto";
  double clip_grad_norm = 1.0;             // <= 0: off.
  double ema_decay = 0.0;                  // 0: off; e.g. 0.999.

  // Referral operating point: the malignancy-risk threshold of the exported model
  // is fitted on the validation split so that this share of malignant lesions is
  // referred (skinlesion/common/referral.h), shown by the validation split with this
  // one-sided confidence (0: the point estimate).
  double target_sensitivity = 0.9;
  double referral_confidence = kDefaultSensitivityConfidence;
  // The exported model's decision rule (skinlesion/common/decision.h): true fits the
  // prior-adjusted rule's tau on the validation split for balanced accuracy (tau 0,
  // the most probable class, when that does not help); false keeps the most probable.
  bool balanced_decision = true;
  // A recall floor for one class on top of that rule (skinlesion/common/decision.h,
  // FitRecallBias): the smallest bias that names at least `recall_target` of the
  // validation split's `recall_target_class` images (0: off; a class the data do not
  // have: off). Melanoma by default: a screening aid should not give melanomas away
  // for balanced accuracy (docs/results.md, "A melanoma recall floor").
  std::string recall_target_class = "mel";
  double recall_target = 0.7;
  // Which of the data's classes count as malignant for the risk, the referral rule and
  // the metrics (recorded in the exported manifest): comma-separated codes, "none", or
  // "" for the known groups (akiec, bcc, mel, scc malignant; skinlesion/common/classes.h).
  std::string malignant_classes;

  // Colour constancy in preprocessing (training, evaluation and the exported
  // manifest, so serving does the same): Shades of Gray norm p, 0 = off.
  int colour_constancy_p = 0;
  // How evaluation and serving bring an image to image_size (recorded in the exported
  // manifest): "shorter_side_center_crop" keeps the aspect ratio and crops the longer
  // side; "resize" squashes the whole image. Square training images look the same either
  // way, but a model learns the geometry they were made with: HAM10000's 224 px copies
  // were squashed from 600x450, so a 600x450 image from another clinic reaches such a
  // model as its training images did only with "resize" (docs/results.md, "The shape
  // external images arrive in").
  std::string resize = "shorter_side_center_crop";

  // Selection.
  std::string monitor = "balanced_accuracy";  // A key of the metrics JSON; higher is better.
  int patience = 8;                        // Epochs without improvement; 0: off.
  // Which epoch is the model: "best" (the monitor's best on the validation images) or
  // "last" (the schedule's end, for recipes compared at a fixed length: a validation set
  // with a handful of images of a class makes "best" a noisy choice). Validation still
  // draws the curves and fits the temperature and thresholds. "last" needs patience 0.
  std::string select_epoch = "best";
  uint64_t seed = 42;

  // Logging: a progress line at most every this many seconds within an epoch.
  double progress_interval_s = 10;

  nlohmann::json ToJson() const;
  // Starts from `base` and overrides the keys present; unknown keys and wrong types
  // are InvalidArgument naming each one.
  static absl::StatusOr<TrainConfig> FromJson(const nlohmann::json& j, const TrainConfig& base);
  static absl::StatusOr<TrainConfig> FromJson(const nlohmann::json& j) { return FromJson(j, TrainConfig()); }
  // Every problem at once (InvalidArgument listing them), e.g. "epochs must be >= 1;
  // unknown optimizer 'adam' (expected adamw, sgd)".
  absl::Status Validate() const { return Choices().status(); }
  // Validates (as Validate) and returns the enumerated choices (sampler, class
  // weighting, optimizer, schedule, loss, precision) parsed from their strings.
  absl::StatusOr<TrainChoices> Choices() const;
  // The model input preparation this configuration trains with: image_size, shorter
  // side + centre crop, ImageNet mean/std, colour constancy.
  PreprocessOptions Preprocess() const;
};

}  // namespace skinlesion::train

#endif  // SKINLESION_TRAIN_CONFIG_H_
