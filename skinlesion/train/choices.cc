#include "skinlesion/train/choices.h"

#include "absl/strings/str_cat.h"

namespace skinlesion::train {
namespace {

absl::Status Unknown(absl::string_view what, absl::string_view name, absl::string_view expected) {
  return absl::InvalidArgumentError(absl::StrCat("unknown ", what, " '", name, "' (expected ", expected, ")"));
}

}  // namespace

absl::StatusOr<SamplerKind> ParseSamplerKind(absl::string_view name) {
  if (name == "shuffle") return SamplerKind::kShuffle;
  if (name == "balanced") return SamplerKind::kBalanced;
  return Unknown("sampler", name, "shuffle, balanced");
}

absl::StatusOr<data::ClassWeighting> ParseClassWeighting(absl::string_view name) {
  if (name == "inverse") return data::ClassWeighting::kInverseFrequency;
  if (name == "sqrt") return data::ClassWeighting::kSqrtInverseFrequency;
  return Unknown("class_weighting", name, "inverse, sqrt");
}

absl::StatusOr<OptimizerKind> ParseOptimizerKind(absl::string_view name) {
  if (name == "adamw") return OptimizerKind::kAdamW;
  if (name == "sgd") return OptimizerKind::kSgd;
  return Unknown("optimizer", name, "adamw, sgd");
}

absl::StatusOr<LossKind> ParseLossKind(absl::string_view name) {
  if (name == "ce") return LossKind::kCrossEntropy;
  if (name == "weighted_ce") return LossKind::kWeightedCrossEntropy;
  if (name == "focal") return LossKind::kFocal;
  if (name == "logit_adjusted") return LossKind::kLogitAdjusted;
  return Unknown("loss", name, "ce, weighted_ce, focal, logit_adjusted");
}

absl::StatusOr<TrainPrecision> ParseTrainPrecision(absl::string_view name) {
  if (name == "auto") return TrainPrecision::kAuto;
  if (name == "fp32") return TrainPrecision::kFp32;
  if (name == "bf16") return TrainPrecision::kBf16;
  if (name == "fp16") return TrainPrecision::kFp16;
  return Unknown("precision", name, "auto, fp32, bf16, fp16");
}

std::string LossKindName(LossKind kind) {
  switch (kind) {
    case LossKind::kCrossEntropy: return "ce";
    case LossKind::kWeightedCrossEntropy: return "weighted_ce";
    case LossKind::kFocal: return "focal";
    case LossKind::kLogitAdjusted: return "logit_adjusted";
  }
  return "?";
}

}  // namespace skinlesion::train
