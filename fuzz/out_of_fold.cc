// Fuzzes a cross-validation round's out-of-fold answers (skinlesion/eval/out_of_fold.h),
// which fit-thresholds --from_cv reads from committed files: every accepted file has
// rows of one width with known labels, unique ids, finite units and probabilities in
// [0, 1] summing to 1, and writes back to text that parses to the same answers; every
// rejection is InvalidArgument.
#include "skinlesion/eval/out_of_fold.h"

#include <cmath>
#include <cstddef>
#include <cstdint>

#include "absl/strings/string_view.h"
#include "fuzz/require.h"
#include "skinlesion/common/classes.h"

using skinlesion::fuzz::Require;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace skinlesion;
  const absl::string_view text(reinterpret_cast<const char*>(data), size);
  const LabelSet& classes = LabelSet::Ham10000();
  auto a = eval::ParseRoundAnswers(text, classes);
  if (!a.ok()) {
    Require(a.status().code() == absl::StatusCode::kInvalidArgument);
    return 0;
  }
  Require(!a->image_ids.empty() && a->temperature > 0);
  for (size_t i = 0; i < a->image_ids.size(); ++i) {
    Require(a->labels[i] >= 0 && a->labels[i] < classes.size());
    Require(static_cast<int>(a->probs[i].size()) == classes.size() &&
            std::isfinite(a->ood_units[i]));
    double sum = 0;
    for (float p : a->probs[i]) {
      Require(p >= 0 && p <= 1);
      sum += p;
    }
    Require(std::abs(sum - 1) <= 1e-3 + 1e-5);
  }
  auto again = eval::RoundAnswersToCsv(*a, classes);
  Require(again.ok());
  auto back = eval::ParseRoundAnswers(*again, classes);
  Require(back.ok() && back->image_ids == a->image_ids && back->labels == a->labels);
  return 0;
}
