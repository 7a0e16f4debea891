#include "skinlesion/eval/cross_validation.h"

#include <algorithm>
#include <cmath>
#include <set>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"

namespace skinlesion::eval {
namespace {

// The value at a "a/b/c" path, or null when any step is missing or not a number.
nlohmann::json ValueAt(const nlohmann::json& root, const std::string& path) {
  const nlohmann::json* j = &root;
  for (absl::string_view step : absl::StrSplit(path, '/')) {
    if (!j->is_object()) return nullptr;
    auto it = j->find(std::string(step));
    if (it == j->end()) return nullptr;
    j = &*it;
  }
  return j->is_number() ? *j : nlohmann::json(nullptr);
}

nlohmann::json Describe(const std::vector<double>& v) {
  double mean = 0;
  for (double x : v) mean += x;
  mean /= static_cast<double>(v.size());
  double ss = 0;
  for (double x : v) ss += (x - mean) * (x - mean);
  const double sd = v.size() > 1 ? std::sqrt(ss / static_cast<double>(v.size() - 1)) : 0.0;
  return {{"mean", mean},
          {"sd", sd},
          {"min", *std::min_element(v.begin(), v.end())},
          {"max", *std::max_element(v.begin(), v.end())},
          {"n", v.size()}};
}

// Short column names for the table.
std::string Column(const std::string& path) {
  if (path == "referral/malignant_sensitivity/value") return "referral malignant sens.";
  if (path == "referral/melanoma_sensitivity/value") return "referral mel sens.";
  if (path == "referral/refer_rate/value") return "refer rate";
  return path;
}

}  // namespace

const std::vector<std::string>& CrossValidationMetrics() {
  static const std::vector<std::string> metrics = {
      "balanced_accuracy",
      "macro_auc",
      "melanoma_recall",
      "accuracy",
      "macro_f1",
      "malignant_auc",
      "ece",
      "referral/malignant_sensitivity/value",
      "referral/melanoma_sensitivity/value",
      "referral/refer_rate/value",
  };
  return metrics;
}

absl::StatusOr<nlohmann::json> SummariseFolds(const std::vector<FoldResult>& folds) {
  if (folds.empty()) return absl::InvalidArgumentError("no finished cross-validation round to summarise");
  std::vector<FoldResult> sorted = folds;
  std::sort(sorted.begin(), sorted.end(), [](const FoldResult& a, const FoldResult& b) { return a.fold < b.fold; });
  std::set<int> seen;
  nlohmann::json rows = nlohmann::json::array();
  std::vector<std::vector<double>> values(CrossValidationMetrics().size());
  std::vector<double> minutes;
  for (const FoldResult& f : sorted) {
    if (!seen.insert(f.fold).second) {
      return absl::InvalidArgumentError(absl::StrCat("fold ", f.fold, " is given twice"));
    }
    const bool costed = f.train_minutes > 0;
    nlohmann::json row = {{"fold", f.fold},
                          {"train_minutes", costed ? nlohmann::json(f.train_minutes) : nlohmann::json()},
                          {"logged_minutes", costed ? nlohmann::json(f.logged_minutes) : nlohmann::json()}};
    if (f.metrics.contains("n")) row["n"] = f.metrics["n"];
    for (size_t m = 0; m < CrossValidationMetrics().size(); ++m) {
      const std::string& path = CrossValidationMetrics()[m];
      nlohmann::json v = ValueAt(f.metrics, path);
      if (v.is_null()) continue;
      row[path] = v;
      values[m].push_back(v.get<double>());
    }
    if (costed) minutes.push_back(f.train_minutes);
    rows.push_back(std::move(row));
  }
  nlohmann::json summary = nlohmann::json::object();
  for (size_t m = 0; m < values.size(); ++m) {
    if (!values[m].empty()) summary[CrossValidationMetrics()[m]] = Describe(values[m]);
  }
  return nlohmann::json{{"folds", rows},
                        {"summary", summary},
                        {"train_minutes", minutes.empty() ? nlohmann::json() : Describe(minutes)}};
}

std::string CrossValidationMarkdown(const nlohmann::json& cv) {
  std::vector<std::string> columns;
  for (const std::string& path : CrossValidationMetrics()) {
    if (cv["summary"].contains(path)) columns.push_back(path);
  }
  std::string out = "| fold | n | train min |";
  std::string rule = "|---:|---:|---:|";
  for (const std::string& c : columns) {
    absl::StrAppend(&out, " ", Column(c), " |");
    absl::StrAppend(&rule, "---:|");
  }
  absl::StrAppend(&out, "\n", rule, "\n");
  for (const nlohmann::json& row : cv["folds"]) {
    const nlohmann::json& minutes = row["train_minutes"];
    absl::StrAppend(&out, "| ", row["fold"].get<int>(), " | ", row.value("n", 0), " | ",
                    minutes.is_number() ? absl::StrFormat("%.1f", minutes.get<double>()) : "–", " |");
    for (const std::string& c : columns) {
      absl::StrAppend(&out, row.contains(c) ? absl::StrFormat(" %.4f |", row[c].get<double>()) : " – |");
    }
    absl::StrAppend(&out, "\n");
  }
  const nlohmann::json& t = cv["train_minutes"];
  absl::StrAppend(&out, "| mean ± sd | | ",
                  t.is_object() ? absl::StrFormat("%.1f ± %.1f", t["mean"].get<double>(), t["sd"].get<double>())
                                : "–",
                  " |");
  for (const std::string& c : columns) {
    const nlohmann::json& s = cv["summary"][c];
    absl::StrAppend(&out, absl::StrFormat(" %.4f ± %.4f |", s["mean"].get<double>(), s["sd"].get<double>()));
  }
  absl::StrAppend(&out, "\n");
  return out;
}

}  // namespace skinlesion::eval
