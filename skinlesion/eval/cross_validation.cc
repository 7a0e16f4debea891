#include "skinlesion/eval/cross_validation.h"

#include <algorithm>
#include <cmath>
#include <map>
#include <set>
#include <tuple>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "skinlesion/eval/referral_eval.h"

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
  if (path == "decision/without_floor/balanced_accuracy") return "balanced_accuracy without floor";
  if (path == "decision/without_floor/melanoma_recall") return "melanoma_recall without floor";
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
      // The decision rule without its recall floor (decision.h), when it has one.
      "decision/without_floor/balanced_accuracy",
      "decision/without_floor/melanoma_recall",
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
  nlohmann::json cv = {{"folds", rows},
                       {"summary", summary},
                       {"train_minutes", minutes.empty() ? nlohmann::json() : Describe(minutes)}};
  nlohmann::json subgroups = PoolSubgroups(sorted);
  if (!subgroups.empty()) cv["subgroups"] = std::move(subgroups);
  return cv;
}

nlohmann::json PoolSubgroups(const std::vector<FoldResult>& folds) {
  struct Pooled {
    int rounds = 0, n = 0;
    std::vector<double> balanced_accuracy;
    int mel_k = 0, mel_n = 0, mal_k = 0, mal_n = 0;
  };
  // kind -> group -> pooled
  std::map<std::string, std::map<std::string, Pooled>> pooled;
  for (const FoldResult& f : folds) {
    const auto it = f.metrics.find("subgroups");
    if (it == f.metrics.end() || !it->is_object()) continue;
    for (const auto& [kind, groups] : it->items()) {
      if (!groups.is_array()) continue;
      for (const nlohmann::json& g : groups) {
        if (!g.is_object() || !g.contains("group") || !g["group"].is_string()) continue;
        Pooled& p = pooled[kind][g["group"].get<std::string>()];
        ++p.rounds;
        p.n += g.value("n", 0);
        if (g.contains("balanced_accuracy") && g["balanced_accuracy"].is_number() && g.value("classes_present", 0) >= 2) {
          p.balanced_accuracy.push_back(g["balanced_accuracy"].get<double>());
        }
        for (auto [key, k, n] : {std::tuple{"melanoma_recall", &p.mel_k, &p.mel_n},
                                 std::tuple{"malignant_referred", &p.mal_k, &p.mal_n}}) {
          if (g.contains(key) && g[key].is_object()) {
            *k += g[key].value("k", 0);
            *n += g[key].value("n", 0);
          }
        }
      }
    }
  }
  nlohmann::json out = nlohmann::json::object();
  auto proportion = [](int k, int n) {
    const Proportion p = WilsonInterval(k, n);
    return nlohmann::json{{"k", k}, {"n", n}, {"value", p.value}, {"ci95", {p.lower, p.upper}}};
  };
  for (const auto& [kind, groups] : pooled) {
    nlohmann::json rows = nlohmann::json::array();
    for (const auto& [name, p] : groups) {
      nlohmann::json row = {{"group", name}, {"rounds", p.rounds}, {"n", p.n}};
      if (!p.balanced_accuracy.empty()) {
        const nlohmann::json d = Describe(p.balanced_accuracy);
        row["balanced_accuracy"] = {{"mean", d["mean"]}, {"min", d["min"]}, {"max", d["max"]},
                                    {"rounds", p.balanced_accuracy.size()}};
      }
      if (p.mel_n > 0) row["melanoma_recall"] = proportion(p.mel_k, p.mel_n);
      if (p.mal_n > 0) row["malignant_referred"] = proportion(p.mal_k, p.mal_n);
      rows.push_back(std::move(row));
    }
    std::stable_sort(rows.begin(), rows.end(),
                     [](const nlohmann::json& a, const nlohmann::json& b) { return a["n"] > b["n"]; });
    out[kind] = std::move(rows);
  }
  return out;
}

namespace {

std::string ProportionCell(const nlohmann::json& row, const char* key) {
  if (!row.contains(key)) return "–";
  const nlohmann::json& p = row[key];
  return absl::StrFormat("%.2f [%.2f, %.2f] of %d", p["value"].get<double>(), p["ci95"][0].get<double>(),
                         p["ci95"][1].get<double>(), p["n"].get<int>());
}

}  // namespace

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
  if (cv.contains("subgroups") && cv["subgroups"].is_object()) {
    for (const auto& [kind, rows] : cv["subgroups"].items()) {
      absl::StrAppend(&out, "\nBy ", kind, " (pooled over the rounds' test folds; balanced accuracy: mean [min, max] of the rounds; "
                      "melanoma recall and malignant referred: pooled, 95% Wilson):\n\n",
                      "| ", kind, " | n | balanced accuracy | melanoma recall | malignant referred |\n",
                      "|---|---:|---:|---:|---:|\n");
      for (const nlohmann::json& row : rows) {
        std::string ba = "–";
        if (row.contains("balanced_accuracy")) {
          const nlohmann::json& b = row["balanced_accuracy"];
          ba = absl::StrFormat("%.3f [%.3f, %.3f]", b["mean"].get<double>(), b["min"].get<double>(),
                               b["max"].get<double>());
        }
        absl::StrAppend(&out, "| ", row["group"].get<std::string>(), " | ", row["n"].get<int>(), " | ", ba, " | ",
                        ProportionCell(row, "melanoma_recall"), " | ", ProportionCell(row, "malignant_referred"),
                        " |\n");
      }
    }
  }
  return out;
}

}  // namespace skinlesion::eval
