// The numeric precision a model runs in, chosen once per process or model load and
// shared by training, the predictor, evaluation, explanations and serving.
//
//   fp32  every tensor in float32 (the reference).
//   bf16  weights converted to bfloat16 once at load, inputs converted in the batch,
//         logits and everything after them (softmax, calibration, metrics) in fp32.
//         CNNs also run channels-last (NHWC), which oneDNN's bf16 kernels prefer.
//   auto  bf16 where it is fast: CUDA, or a CPU with native bf16 dot products
//         (AVX512_BF16 or AMX-BF16); fp32 everywhere else, because oneDNN emulates
//         bf16 on older CPUs more slowly than it runs fp32.
//
// A model's manifest may pin a precision ("precision": "fp32"); `auto` then follows
// the pin, an explicit choice overrides it (and says so). LibTorch-free.
//
//   SL_ASSIGN_OR_RETURN(PrecisionChoice choice, ParsePrecisionChoice(flag));
//   PrecisionDecision d = ResolvePrecision(choice, {.cuda = false,
//                                                   .native_bf16 = cpu.native_bf16()});
//   SL_LOG(INFO) << "precision " << PrecisionName(d.precision) << ": " << d.reason;
#ifndef SKINLESION_COMMON_PRECISION_H_
#define SKINLESION_COMMON_PRECISION_H_

#include <optional>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace skinlesion {

enum class Precision { kFp32, kBf16 };
enum class PrecisionChoice { kAuto, kFp32, kBf16 };

// "fp32" / "bf16" / "auto".
absl::string_view PrecisionName(Precision precision);
absl::string_view PrecisionChoiceName(PrecisionChoice choice);
// Accepts "auto", "fp32" (or "float32"), "bf16" (or "bfloat16"), case-insensitive;
// InvalidArgument naming the valid values otherwise.
absl::StatusOr<PrecisionChoice> ParsePrecisionChoice(absl::string_view text);
// A manifest's pin: "fp32" or "bf16" only.
absl::StatusOr<Precision> ParsePrecision(absl::string_view text);

struct PrecisionContext {
  bool cuda = false;         // The model runs on a CUDA device.
  bool native_bf16 = false;  // CpuFeatures::native_bf16() of this machine (CPU runs).
  std::optional<Precision> pinned;  // The manifest's "precision", if any.
};

struct PrecisionDecision {
  Precision precision = Precision::kFp32;
  // Why, for logs, /metrics and reports: "auto: bf16 (native bf16 on this CPU)".
  std::string reason;
};

PrecisionDecision ResolvePrecision(PrecisionChoice choice, const PrecisionContext& context);

}  // namespace skinlesion

#endif  // SKINLESION_COMMON_PRECISION_H_
