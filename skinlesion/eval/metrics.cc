#include "skinlesion/eval/metrics.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>

#include "absl/strings/str_cat.h"
#include "skinlesion/common/status.h"

namespace skinlesion::eval {
namespace {

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

int ArgMax(const Probs& p) {
  return static_cast<int>(std::max_element(p.begin(), p.end()) - p.begin());
}

// Rank of the label among the classes (0 = most probable); ties favour the label
// only when strictly greater scores are fewer than k.
int LabelRank(const Probs& p, int label) {
  int rank = 0;
  for (int k = 0; k < static_cast<int>(p.size()); ++k) {
    if (k != label && p[k] > p[label]) ++rank;
  }
  return rank;
}

double SafeDiv(double a, double b) { return b > 0 ? a / b : 0.0; }

nlohmann::json NumberOrNull(double x) { return std::isfinite(x) ? nlohmann::json(x) : nlohmann::json(); }

}  // namespace

double RocAuc(const std::vector<double>& scores, const std::vector<bool>& positive) {
  const size_t n = scores.size();
  std::vector<size_t> order(n);
  std::iota(order.begin(), order.end(), 0);
  std::sort(order.begin(), order.end(), [&](size_t a, size_t b) { return scores[a] < scores[b]; });
  // Average ranks over ties, then Mann-Whitney U.
  double rank_sum_pos = 0;
  size_t n_pos = 0;
  for (size_t i = 0; i < n;) {
    size_t j = i;
    while (j + 1 < n && scores[order[j + 1]] == scores[order[i]]) ++j;
    const double avg_rank = (static_cast<double>(i) + static_cast<double>(j)) / 2.0 + 1.0;
    for (size_t k = i; k <= j; ++k) {
      if (positive[order[k]]) {
        rank_sum_pos += avg_rank;
        ++n_pos;
      }
    }
    i = j + 1;
  }
  const size_t n_neg = n - n_pos;
  if (n_pos == 0 || n_neg == 0) return kNaN;
  const double u = rank_sum_pos - static_cast<double>(n_pos) * (n_pos + 1) / 2.0;
  return u / (static_cast<double>(n_pos) * static_cast<double>(n_neg));
}

RocCurve ComputeRoc(const std::vector<double>& scores, const std::vector<bool>& positive) {
  const size_t n = scores.size();
  std::vector<size_t> order(n);
  std::iota(order.begin(), order.end(), 0);
  std::sort(order.begin(), order.end(), [&](size_t a, size_t b) { return scores[a] > scores[b]; });
  const double n_pos = static_cast<double>(std::count(positive.begin(), positive.end(), true));
  const double n_neg = static_cast<double>(n) - n_pos;
  RocCurve roc;
  roc.fpr.push_back(0);
  roc.tpr.push_back(0);
  roc.thresholds.push_back(std::numeric_limits<double>::infinity());
  double tp = 0, fp = 0;
  for (size_t i = 0; i < n; ++i) {
    positive[order[i]] ? ++tp : ++fp;
    // One point per distinct threshold.
    if (i + 1 == n || scores[order[i + 1]] != scores[order[i]]) {
      roc.fpr.push_back(SafeDiv(fp, n_neg));
      roc.tpr.push_back(SafeDiv(tp, n_pos));
      roc.thresholds.push_back(scores[order[i]]);
    }
  }
  return roc;
}

std::vector<Probs> Softmax(const std::vector<Probs>& logits, double temperature) {
  std::vector<Probs> out(logits.size());
  std::vector<double> e;
  for (size_t i = 0; i < logits.size(); ++i) {
    const size_t n = logits[i].size();
    out[i].resize(n);
    if (n == 0) continue;
    const double mx = *std::max_element(logits[i].begin(), logits[i].end());
    double sum = 0;
    e.assign(n, 0.0);
    for (size_t k = 0; k < n; ++k) {
      e[k] = std::exp((logits[i][k] - mx) / temperature);
      sum += e[k];
    }
    for (size_t k = 0; k < n; ++k) out[i][k] = static_cast<float>(e[k] / sum);
  }
  return out;
}

double ExpectedCalibrationError(const std::vector<int>& labels, const std::vector<Probs>& probs,
                                int bins, std::vector<CalibrationBin>* reliability) {
  std::vector<CalibrationBin> b(bins);
  for (int i = 0; i < bins; ++i) {
    b[i].lower = static_cast<double>(i) / bins;
    b[i].upper = static_cast<double>(i + 1) / bins;
  }
  for (size_t i = 0; i < labels.size(); ++i) {
    const int pred = ArgMax(probs[i]);
    const double conf = probs[i][pred];
    // Bins are (lower, upper]; confidence 0 goes to the first bin.
    int idx = static_cast<int>(std::ceil(conf * bins)) - 1;
    idx = std::clamp(idx, 0, bins - 1);
    b[idx].count++;
    b[idx].confidence += conf;
    b[idx].accuracy += pred == labels[i] ? 1.0 : 0.0;
  }
  double ece = 0;
  const double n = static_cast<double>(labels.size());
  for (auto& bin : b) {
    if (bin.count == 0) continue;
    bin.confidence /= bin.count;
    bin.accuracy /= bin.count;
    ece += std::abs(bin.accuracy - bin.confidence) * bin.count / n;
  }
  if (reliability != nullptr) *reliability = std::move(b);
  return ece;
}

absl::StatusOr<Metrics> ComputeMetrics(const std::vector<int>& labels,
                                       const std::vector<Probs>& probs, const LabelSet& classes,
                                       const DecisionRule& decision) {
  const int num_classes = classes.size();
  if (labels.size() != probs.size()) {
    return absl::InvalidArgumentError(absl::StrCat("metrics: ", labels.size(), " labels but ",
                                                   probs.size(), " predictions"));
  }
  if (labels.empty()) return absl::InvalidArgumentError("metrics: no samples");
  for (size_t i = 0; i < labels.size(); ++i) {
    if (probs[i].size() != static_cast<size_t>(num_classes)) {
      return absl::InvalidArgumentError(absl::StrCat("metrics: sample ", i, " has ", probs[i].size(),
                                                     " scores for ", num_classes, " classes"));
    }
    if (labels[i] < 0 || labels[i] >= num_classes) {
      return absl::InvalidArgumentError(absl::StrCat("metrics: label ", labels[i], " of sample ",
                                                     i, " is out of range"));
    }
    for (float p : probs[i]) {
      if (!std::isfinite(p)) {
        return absl::InvalidArgumentError(absl::StrCat("metrics: non-finite score in sample ", i));
      }
    }
  }
  Metrics m;
  m.classes = classes;
  m.per_class.assign(num_classes, ClassMetrics{});
  m.confusion.assign(num_classes, std::vector<int>(num_classes, 0));
  m.roc.assign(num_classes, RocCurve{});
  m.melanoma = classes.IndexOf("mel");
  m.n = static_cast<int>(labels.size());
  const double n = m.n;
  int correct = 0, top2 = 0, top3 = 0;
  double nll = 0, brier = 0;
  for (size_t i = 0; i < labels.size(); ++i) {
    const int pred = Decide(probs[i], decision);
    m.confusion[labels[i]][pred]++;
    correct += pred == labels[i];
    const int rank = LabelRank(probs[i], labels[i]);
    top2 += rank < 2;
    top3 += rank < 3;
    nll -= std::log(std::max(1e-12, static_cast<double>(probs[i][labels[i]])));
    for (int k = 0; k < num_classes; ++k) {
      const double d = probs[i][k] - (k == labels[i] ? 1.0 : 0.0);
      brier += d * d;
    }
  }
  m.accuracy = correct / n;
  m.top2_accuracy = top2 / n;
  m.top3_accuracy = top3 / n;
  m.nll = nll / n;
  m.brier = brier / n;

  int present = 0, with_auc = 0;
  for (int k = 0; k < num_classes; ++k) {
    ClassMetrics& c = m.per_class[k];
    int tp = m.confusion[k][k], predicted = 0;
    for (int t = 0; t < num_classes; ++t) {
      c.support += m.confusion[k][t];
      predicted += m.confusion[t][k];
    }
    c.precision = SafeDiv(tp, predicted);
    c.recall = SafeDiv(tp, c.support);
    c.f1 = SafeDiv(2 * c.precision * c.recall, c.precision + c.recall);
    std::vector<double> scores(labels.size());
    std::vector<bool> positive(labels.size());
    for (size_t i = 0; i < labels.size(); ++i) {
      scores[i] = probs[i][k];
      positive[i] = labels[i] == k;
    }
    c.auc = RocAuc(scores, positive);
    m.roc[k] = ComputeRoc(scores, positive);
    if (std::isfinite(c.auc)) {
      m.macro_auc += c.auc;
      ++with_auc;
    }
    if (c.support > 0) {
      ++present;
      m.balanced_accuracy += c.recall;
      m.macro_precision += c.precision;
      m.macro_recall += c.recall;
      m.macro_f1 += c.f1;
      m.weighted_precision += c.precision * c.support / n;
      m.weighted_recall += c.recall * c.support / n;
      m.weighted_f1 += c.f1 * c.support / n;
    }
  }
  m.balanced_accuracy /= present;
  m.macro_precision /= present;
  m.macro_recall /= present;
  m.macro_f1 /= present;
  m.macro_auc = with_auc > 0 ? m.macro_auc / with_auc : kNaN;

  // Malignant vs benign.
  std::vector<double> risk(labels.size());
  std::vector<bool> malignant(labels.size());
  double tp = 0, fn = 0, tn = 0, fp = 0;
  for (size_t i = 0; i < labels.size(); ++i) {
    for (int k = 0; k < num_classes; ++k) {
      if (classes.IsMalignant(k)) risk[i] += probs[i][k];
    }
    malignant[i] = classes.IsMalignant(labels[i]);
    const bool flagged = risk[i] >= 0.5;
    if (malignant[i]) {
      flagged ? ++tp : ++fn;
    } else {
      flagged ? ++fp : ++tn;
    }
  }
  m.malignant_auc = RocAuc(risk, malignant);
  m.malignant_sensitivity = SafeDiv(tp, tp + fn);
  m.malignant_specificity = SafeDiv(tn, tn + fp);

  const RocCurve& mel_roc = m.melanoma.has_value() ? m.roc[*m.melanoma] : RocCurve{};
  for (size_t i = 0; i < mel_roc.fpr.size(); ++i) {
    if (mel_roc.fpr[i] <= 0.2 + 1e-12) {
      m.mel_sensitivity_at_spec80 = std::max(m.mel_sensitivity_at_spec80, mel_roc.tpr[i]);
    }
    if (mel_roc.fpr[i] <= 0.1 + 1e-12) {
      m.mel_sensitivity_at_spec90 = std::max(m.mel_sensitivity_at_spec90, mel_roc.tpr[i]);
    }
  }
  m.ece = ExpectedCalibrationError(labels, probs, 15, &m.reliability);
  return m;
}

absl::StatusOr<double> FitTemperature(const std::vector<int>& labels,
                                      const std::vector<Probs>& logits) {
  if (labels.size() != logits.size() || labels.empty()) {
    return absl::InvalidArgumentError("temperature: need as many labels as logits, at least one");
  }
  auto nll_at = [&](double log_t) {
    const double t = std::exp(log_t);
    double nll = 0;
    for (size_t i = 0; i < labels.size(); ++i) {
      double mx = -std::numeric_limits<double>::infinity();
      for (float z : logits[i]) mx = std::max(mx, z / t);
      double sum = 0;
      for (float z : logits[i]) sum += std::exp(z / t - mx);
      nll -= logits[i][labels[i]] / t - mx - std::log(sum);
    }
    return nll / labels.size();
  };
  // NLL is unimodal in log T for softmax scaling; golden-section search.
  double lo = std::log(0.05), hi = std::log(20.0);
  const double g = (std::sqrt(5.0) - 1) / 2;
  double a = hi - g * (hi - lo), b = lo + g * (hi - lo);
  double fa = nll_at(a), fb = nll_at(b);
  for (int it = 0; it < 100 && hi - lo > 1e-6; ++it) {
    if (fa < fb) {
      hi = b;
      b = a;
      fb = fa;
      a = hi - g * (hi - lo);
      fa = nll_at(a);
    } else {
      lo = a;
      a = b;
      fa = fb;
      b = lo + g * (hi - lo);
      fb = nll_at(b);
    }
  }
  return std::exp((lo + hi) / 2);
}

nlohmann::json MetricsToJson(const Metrics& m) {
  nlohmann::json j;
  j["n"] = m.n;
  j["accuracy"] = m.accuracy;
  j["balanced_accuracy"] = m.balanced_accuracy;
  j["macro_precision"] = m.macro_precision;
  j["macro_recall"] = m.macro_recall;
  j["macro_f1"] = m.macro_f1;
  j["macro_auc"] = NumberOrNull(m.macro_auc);
  j["weighted_precision"] = m.weighted_precision;
  j["weighted_recall"] = m.weighted_recall;
  j["weighted_f1"] = m.weighted_f1;
  j["top2_accuracy"] = m.top2_accuracy;
  j["top3_accuracy"] = m.top3_accuracy;
  j["malignant_auc"] = NumberOrNull(m.malignant_auc);
  j["malignant_sensitivity"] = m.malignant_sensitivity;
  j["malignant_specificity"] = m.malignant_specificity;
  const bool has_mel = m.melanoma.has_value();
  j["melanoma_recall"] = has_mel ? nlohmann::json(m.per_class[*m.melanoma].recall) : nlohmann::json();
  j["melanoma_sensitivity_at_specificity_80"] = has_mel ? nlohmann::json(m.mel_sensitivity_at_spec80) : nlohmann::json();
  j["melanoma_sensitivity_at_specificity_90"] = has_mel ? nlohmann::json(m.mel_sensitivity_at_spec90) : nlohmann::json();
  j["ece"] = m.ece;
  j["nll"] = m.nll;
  j["brier"] = m.brier;
  nlohmann::json per_class = nlohmann::json::object();
  nlohmann::json labels = nlohmann::json::array();
  nlohmann::json malignant = nlohmann::json::array();
  for (const ClassInfo& c : m.classes) {
    const ClassMetrics& cm = m.per_class[c.index];
    if (c.group == MalignancyGroup::kMalignant) malignant.push_back(c.code);
    per_class[std::string(c.code)] = {{"precision", cm.precision}, {"recall", cm.recall},
                                      {"f1", cm.f1}, {"support", cm.support},
                                      {"auc", NumberOrNull(cm.auc)}};
    labels.push_back(std::string(c.code));
  }
  j["per_class"] = per_class;
  j["labels"] = labels;
  j["malignant_classes"] = malignant;
  nlohmann::json counts = nlohmann::json::array(), normalized = nlohmann::json::array();
  for (int t = 0; t < m.classes.size(); ++t) {
    nlohmann::json row = nlohmann::json::array(), nrow = nlohmann::json::array();
    const int support = m.per_class[t].support;
    for (int p = 0; p < m.classes.size(); ++p) {
      row.push_back(m.confusion[t][p]);
      nrow.push_back(support > 0 ? static_cast<double>(m.confusion[t][p]) / support : 0.0);
    }
    counts.push_back(row);
    normalized.push_back(nrow);
  }
  j["confusion_matrix"] = counts;
  j["confusion_matrix_normalized"] = normalized;
  return j;
}

absl::StatusOr<nlohmann::json> DecisionSummaryJson(const std::vector<int>& labels,
                                                   const std::vector<Probs>& probs,
                                                   const LabelSet& classes,
                                                   const DecisionRule& decision) {
  SL_ASSIGN_OR_RETURN(const Metrics m, ComputeMetrics(labels, probs, classes, decision));
  return nlohmann::json{{"balanced_accuracy", m.balanced_accuracy},
                        {"accuracy", m.accuracy},
                        {"melanoma_recall", m.melanoma ? m.per_class[*m.melanoma].recall : 0.0}};
}

}  // namespace skinlesion::eval
