// The enumerated choices of a training run, parsed once from TrainConfig's strings
// (TrainConfig::Choices) so the training loop switches on enums instead of comparing
// strings. LibTorch-free: job validation (skinlesion/jobs) checks a configuration
// without linking LibTorch.
//
//   SL_ASSIGN_OR_RETURN(const TrainChoices choices, config.Choices());
//   if (choices.sampler == SamplerKind::kBalanced) ...
#ifndef SKINLESION_TRAIN_CHOICES_H_
#define SKINLESION_TRAIN_CHOICES_H_

#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "skinlesion/data/sampler.h"
#include "skinlesion/train/schedule.h"

namespace skinlesion::train {

// "shuffle": every image once per epoch. "balanced": classes drawn by
// TrainChoices::class_weighting (data::ClassBalancedSampler).
enum class SamplerKind { kShuffle, kBalanced };
// "adamw" or "sgd" (momentum, optional Nesterov).
enum class OptimizerKind { kAdamW, kSgd };
// The loss (skinlesion/train/losses.h): "ce", "weighted_ce", "focal", "logit_adjusted".
enum class LossKind { kCrossEntropy, kWeightedCrossEntropy, kFocal, kLogitAdjusted };
// "auto": fp16 autocast on CUDA, bf16 autocast on a CPU with native bf16, else fp32.
// "fp16" needs CUDA (fp32 with a warning elsewhere).
enum class TrainPrecision { kAuto, kFp32, kBf16, kFp16 };

struct TrainChoices {
  SamplerKind sampler = SamplerKind::kShuffle;
  // "inverse" or "sqrt" (of the inverse class frequency): the balanced sampler's
  // class probabilities and the weighted losses' class weights.
  data::ClassWeighting class_weighting = data::ClassWeighting::kSqrtInverseFrequency;
  OptimizerKind optimizer = OptimizerKind::kAdamW;
  ScheduleOptions::Kind schedule = ScheduleOptions::Kind::kCosineWarmRestarts;
  LossKind loss = LossKind::kWeightedCrossEntropy;
  TrainPrecision precision = TrainPrecision::kAuto;
};

// Each parser's error names the value and the accepted ones.
absl::StatusOr<SamplerKind> ParseSamplerKind(absl::string_view name);
absl::StatusOr<data::ClassWeighting> ParseClassWeighting(absl::string_view name);
absl::StatusOr<OptimizerKind> ParseOptimizerKind(absl::string_view name);
absl::StatusOr<LossKind> ParseLossKind(absl::string_view name);
absl::StatusOr<TrainPrecision> ParseTrainPrecision(absl::string_view name);
std::string LossKindName(LossKind kind);

}  // namespace skinlesion::train

#endif  // SKINLESION_TRAIN_CHOICES_H_
