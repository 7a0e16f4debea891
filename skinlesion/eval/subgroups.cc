#include "skinlesion/eval/subgroups.h"

#include <algorithm>
#include <set>

#include "skinlesion/common/rng.h"

namespace skinlesion::eval {
namespace {

// FNV-1a: a seed component that is the same on every platform (std::hash is not).
uint64_t Fnv1a(const std::string& s) {
  uint64_t h = 1469598103934665603ull;
  for (unsigned char c : s) h = (h ^ c) * 1099511628211ull;
  return h;
}

double Percentile(std::vector<double> v, double q) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  const double pos = q * (v.size() - 1);
  const size_t lo = static_cast<size_t>(pos);
  const size_t hi = std::min(lo + 1, v.size() - 1);
  return v[lo] + (pos - lo) * (v[hi] - v[lo]);
}

}  // namespace

std::string AgeBand(std::optional<double> age) {
  if (!age.has_value()) return "unknown";
  if (*age < 30) return "<30";
  if (*age < 45) return "30-44";
  if (*age < 60) return "45-59";
  if (*age < 75) return "60-74";
  return "75+";
}

std::map<std::string, std::vector<GroupResult>> ComputeSubgroups(
    const std::vector<int>& labels, const std::vector<Probs>& probs,
    const std::map<std::string, std::vector<std::string>>& groups, const ReferralPolicy& policy,
    const LabelSet& classes, const SubgroupOptions& options) {
  std::map<std::string, std::vector<GroupResult>> out;
  const size_t n = std::min(labels.size(), probs.size());
  std::vector<int> predicted(n);
  std::vector<bool> referred(n);
  for (size_t i = 0; i < n; ++i) {
    const Summary summary = Summarize(probs[i], classes, policy, options.decision);
    predicted[i] = summary.top_class;
    referred[i] = summary.refer;
  }
  const int kMel = classes.IndexOf("mel").value_or(-1);
  for (const auto& [dimension, names] : groups) {
    if (names.size() != n) continue;
    std::map<std::string, std::vector<size_t>> members;
    for (size_t i = 0; i < n; ++i) members[names[i]].push_back(i);
    uint64_t salt = 0;
    for (const auto& [name, idx] : members) {
      GroupResult g;
      g.name = name;
      g.n = static_cast<int>(idx.size());
      ++salt;
      if (g.n < options.min_group_size) {
        out[dimension].push_back(g);
        continue;
      }
      g.balanced_accuracy =
          BalancedAccuracy(labels, predicted, classes.size(), &idx, &g.classes_present);
      int mel = 0, mel_right = 0, malignant = 0, malignant_referred = 0;
      for (size_t i : idx) {
        if (labels[i] == kMel) {
          ++mel;
          mel_right += predicted[i] == kMel;
        }
        if (classes.IsMalignant(labels[i])) {
          ++malignant;
          malignant_referred += referred[i];
        }
      }
      g.melanoma_recall = WilsonInterval(mel_right, mel);
      g.malignant_referred = WilsonInterval(malignant_referred, malignant);
      if (options.bootstrap > 0) {
        Rng rng(DeriveSeed({options.seed, Fnv1a(dimension), salt}));
        std::vector<double> draws;
        std::vector<size_t> sample(idx.size());
        for (int b = 0; b < options.bootstrap; ++b) {
          for (size_t& s : sample) s = idx[rng.UniformInt(idx.size())];
          const double ba = BalancedAccuracy(labels, predicted, classes.size(), &sample);
          if (ba >= 0) draws.push_back(ba);
        }
        g.ba_lower = Percentile(draws, 0.025);
        g.ba_upper = Percentile(draws, 0.975);
      } else {
        g.ba_lower = g.ba_upper = g.balanced_accuracy;
      }
      out[dimension].push_back(g);
    }
  }
  return out;
}

nlohmann::json SubgroupsToJson(const std::map<std::string, std::vector<GroupResult>>& result) {
  nlohmann::json j = nlohmann::json::object();
  for (const auto& [dimension, rows] : result) {
    nlohmann::json list = nlohmann::json::array();
    for (const GroupResult& g : rows) {
      list.push_back({{"group", g.name},
                      {"n", g.n},
                      {"classes_present", g.classes_present},
                      {"balanced_accuracy", g.balanced_accuracy},
                      {"balanced_accuracy_ci95", {g.ba_lower, g.ba_upper}},
                      {"melanoma_recall", ProportionToJson(g.melanoma_recall)},
                      {"malignant_referred", ProportionToJson(g.malignant_referred)}});
    }
    j[dimension] = std::move(list);
  }
  return j;
}

}  // namespace skinlesion::eval
