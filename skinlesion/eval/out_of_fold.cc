#include "skinlesion/eval/out_of_fold.h"

#include <cmath>
#include <cstdio>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "skinlesion/common/csv.h"
#include "skinlesion/common/ood.h"
#include "skinlesion/common/status.h"
#include "skinlesion/common/tta.h"

namespace skinlesion::eval {
namespace {

constexpr int kFixedColumns = 6;  // image_id, label, views, temperature, ood_method, ood_units

std::vector<std::string> Header(const LabelSet& classes) {
  std::vector<std::string> h = {"image_id",    "label",      "views",
                                "temperature", "ood_method", "ood_units"};
  for (const std::string& code : classes.codes()) h.push_back(absl::StrCat("p_", code));
  return h;
}

absl::Status LineError(int line, absl::string_view what) {
  return absl::InvalidArgumentError(absl::StrCat("out-of-fold answers line ", line, ": ", what));
}

absl::StatusOr<double> Finite(const std::string& field, int line, absl::string_view column) {
  double v = 0;
  if (!absl::SimpleAtod(field, &v) || !std::isfinite(v)) {
    return LineError(line, absl::StrCat(column, " '", field, "' is not a finite number"));
  }
  return v;
}

}  // namespace

std::string RoundAnswersFile(absl::string_view views) {
  return absl::StrCat("out_of_fold_", views, ".csv");
}

absl::StatusOr<std::string> RoundAnswersToCsv(const RoundAnswers& a, const LabelSet& classes) {
  const size_t n = a.image_ids.size();
  if (a.labels.size() != n || a.probs.size() != n || a.ood_units.size() != n) {
    return absl::InvalidArgumentError(
        "out-of-fold answers: ids, labels, probabilities and units differ in length");
  }
  std::string out = absl::StrJoin(Header(classes), ",") + "\n";
  for (size_t i = 0; i < n; ++i) {
    if (static_cast<int>(a.probs[i].size()) != classes.size() || a.labels[i] < 0 ||
        a.labels[i] >= classes.size()) {
      return absl::InvalidArgumentError(
          absl::StrCat("out-of-fold answers: row ", i, " does not fit the classes"));
    }
    absl::StrAppend(&out, a.image_ids[i], ",", classes.at(a.labels[i]).code, ",", a.views, ",",
                    absl::StrFormat("%.17g", a.temperature), ",", a.ood_method, ",",
                    absl::StrFormat("%.7g", a.ood_units[i]));
    for (float p : a.probs[i]) absl::StrAppend(&out, ",", absl::StrFormat("%.7g", p));
    out += "\n";
  }
  return out;
}

absl::StatusOr<RoundAnswers> ParseRoundAnswers(absl::string_view text, const LabelSet& classes) {
  SL_ASSIGN_OR_RETURN(const std::vector<CsvRecord> records, ParseCsv(text));
  if (records.empty() || records[0].fields != Header(classes)) {
    return absl::InvalidArgumentError(absl::StrCat("out-of-fold answers: the header is not ",
                                                   absl::StrJoin(Header(classes), ",")));
  }
  if (records.size() < 2) return absl::InvalidArgumentError("out-of-fold answers: no rows");
  RoundAnswers a;
  std::set<std::string> seen;
  const size_t width = kFixedColumns + static_cast<size_t>(classes.size());
  for (size_t r = 1; r < records.size(); ++r) {
    const CsvRecord& rec = records[r];
    const std::vector<std::string>& f = rec.fields;
    if (f.size() != width)
      return LineError(rec.line, absl::StrCat(f.size(), " fields, not ", width));
    if (f[0].empty() || !seen.insert(f[0]).second)
      return LineError(rec.line, "an empty or repeated image_id");
    const std::optional<int> label = classes.IndexOf(f[1]);
    if (!label)
      return LineError(rec.line, absl::StrCat("label '", f[1], "' is not a class of the model"));
    SL_ASSIGN_OR_RETURN(const double temperature, Finite(f[3], rec.line, "temperature"));
    if (r == 1) {
      if (!ParseTta(f[2]).ok())
        return LineError(rec.line, absl::StrCat("views '", f[2], "' are unknown"));
      if (!ParseOodMethod(f[4]))
        return LineError(rec.line, absl::StrCat("ood_method '", f[4], "' is unknown"));
      if (!(temperature > 0)) return LineError(rec.line, "the temperature must be > 0");
      a.views = f[2];
      a.ood_method = f[4];
      a.temperature = temperature;
    } else if (f[2] != a.views || f[4] != a.ood_method || temperature != a.temperature) {
      return LineError(rec.line, "views, temperature and ood_method must be the same on every row");
    }
    SL_ASSIGN_OR_RETURN(const double units, Finite(f[5], rec.line, "ood_units"));
    Probs p;
    double sum = 0;
    for (size_t c = kFixedColumns; c < width; ++c) {
      SL_ASSIGN_OR_RETURN(const double v, Finite(f[c], rec.line, "a probability"));
      if (v < 0 || v > 1)
        return LineError(rec.line, absl::StrCat("probability ", f[c], " is outside [0, 1]"));
      p.push_back(static_cast<float>(v));
      sum += v;
    }
    if (std::abs(sum - 1) > 1e-3)
      return LineError(rec.line, absl::StrCat("probabilities sum to ", sum));
    a.image_ids.push_back(f[0]);
    a.labels.push_back(*label);
    a.probs.push_back(std::move(p));
    a.ood_units.push_back(units);
  }
  return a;
}

absl::StatusOr<RoundAnswers> ReadRoundAnswers(const std::string& path, const LabelSet& classes,
                                              size_t max_bytes) {
  SL_ASSIGN_OR_RETURN(const std::string text, ReadFileToString(path, max_bytes));
  absl::StatusOr<RoundAnswers> a = ParseRoundAnswers(text, classes);
  if (!a.ok())
    return absl::Status(a.status().code(), absl::StrCat(path, ": ", a.status().message()));
  return a;
}

}  // namespace skinlesion::eval
