// One cross-validation round's answers on its test fold, kept as a small CSV so that a
// model trained on every image (`skinlesion train --all_folds`) can have its
// temperature and operating point fitted on the rounds' out-of-fold answers in a later
// session, without the round models (45 MB each, not kept in the repository).
//
// `skinlesion cv` writes <cv>/fold<i>/out_of_fold_<views>.csv after each round (views:
// none and flips); `skinlesion fit-thresholds --from_cv` reads them (and writes any that
// is missing from a round model that is still there). Columns:
//   image_id, label (class code), views, temperature, ood_method, ood_units,
//   p_<code> for every class of the model, in its order
// where the probabilities are the round model's answer calibrated by its own
// temperature (fitted on its validation fold) under the test-time views, and ood_units
// is the image's not-a-lesion score in units of the round model's own training scores
// (OodScoreScale: comparable between models). views, temperature and ood_method are
// the same on every row. LibTorch-free.
#ifndef SKINLESION_EVAL_OUT_OF_FOLD_H_
#define SKINLESION_EVAL_OUT_OF_FOLD_H_

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "skinlesion/common/classes.h"
#include "skinlesion/eval/metrics.h"

namespace skinlesion::eval {

struct RoundAnswers {
  std::string views;       // TtaName: "none", "flips", "dihedral".
  double temperature = 1;  // The round model's.
  std::string ood_method;  // OodMethodName.
  std::vector<std::string> image_ids;
  std::vector<int> labels;  // Indices into the classes.
  std::vector<Probs> probs;
  std::vector<double> ood_units;
};

// The file name for `views`: "out_of_fold_<views>.csv".
std::string RoundAnswersFile(absl::string_view views);

// The CSV text (probabilities and units with 7 significant digits, the temperature
// exact). InvalidArgument
// when the vectors differ in length or a row's width is not the classes'.
absl::StatusOr<std::string> RoundAnswersToCsv(const RoundAnswers& answers, const LabelSet& classes);

// Parses RoundAnswersToCsv's text for a model of `classes`. InvalidArgument (naming the
// line) for a header that is not this one, a label or views / method the file does not
// keep to, a temperature <= 0, a probability outside [0, 1] or rows not summing to 1
// (within 1e-3), a non-finite value, an image twice or no rows.
absl::StatusOr<RoundAnswers> ParseRoundAnswers(absl::string_view text, const LabelSet& classes);

// Reads and parses an answers file (files above max_bytes refused); a parse error names the
// file ("<path>: out-of-fold answers line 3: ...").
absl::StatusOr<RoundAnswers> ReadRoundAnswers(const std::string& path, const LabelSet& classes,
                                              size_t max_bytes = size_t{64} << 20);

}  // namespace skinlesion::eval

#endif  // SKINLESION_EVAL_OUT_OF_FOLD_H_
