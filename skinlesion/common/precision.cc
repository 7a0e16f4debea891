#include "skinlesion/common/precision.h"

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"

namespace skinlesion {

absl::string_view PrecisionName(Precision precision) {
  return precision == Precision::kBf16 ? "bf16" : "fp32";
}

absl::string_view PrecisionChoiceName(PrecisionChoice choice) {
  switch (choice) {
    case PrecisionChoice::kAuto:
      return "auto";
    case PrecisionChoice::kFp32:
      return "fp32";
    case PrecisionChoice::kBf16:
      return "bf16";
  }
  return "auto";
}

absl::StatusOr<PrecisionChoice> ParsePrecisionChoice(absl::string_view text) {
  const std::string t = absl::AsciiStrToLower(text);
  if (t == "auto") return PrecisionChoice::kAuto;
  if (t == "fp32" || t == "float32") return PrecisionChoice::kFp32;
  if (t == "bf16" || t == "bfloat16") return PrecisionChoice::kBf16;
  return absl::InvalidArgumentError(
      absl::StrCat("unknown precision '", text, "' (expected auto, fp32 or bf16)"));
}

absl::StatusOr<Precision> ParsePrecision(absl::string_view text) {
  const std::string t = absl::AsciiStrToLower(text);
  if (t == "fp32" || t == "float32") return Precision::kFp32;
  if (t == "bf16" || t == "bfloat16") return Precision::kBf16;
  return absl::InvalidArgumentError(
      absl::StrCat("unknown precision '", text, "' (expected fp32 or bf16)"));
}

PrecisionDecision ResolvePrecision(PrecisionChoice choice, const PrecisionContext& context) {
  PrecisionDecision d;
  if (choice != PrecisionChoice::kAuto) {
    d.precision = choice == PrecisionChoice::kBf16 ? Precision::kBf16 : Precision::kFp32;
    d.reason = absl::StrCat(PrecisionName(d.precision), " (requested)");
    if (context.pinned.has_value() && *context.pinned != d.precision) {
      absl::StrAppend(&d.reason, ", overriding the manifest's ", PrecisionName(*context.pinned));
    } else if (d.precision == Precision::kBf16 && !context.cuda && !context.native_bf16) {
      absl::StrAppend(&d.reason, "; this CPU has no native bf16: emulated, slower than fp32");
    }
    return d;
  }
  if (context.pinned.has_value()) {
    d.precision = *context.pinned;
    d.reason = absl::StrCat("auto: ", PrecisionName(d.precision), " (pinned by the manifest)");
    return d;
  }
  if (context.cuda) {
    d.precision = Precision::kBf16;
    d.reason = "auto: bf16 (CUDA device)";
  } else if (context.native_bf16) {
    d.precision = Precision::kBf16;
    d.reason = "auto: bf16 (native bf16 on this CPU)";
  } else {
    d.precision = Precision::kFp32;
    d.reason = "auto: fp32 (no native bf16 on this CPU)";
  }
  return d;
}

}  // namespace skinlesion
