#include "skinlesion/eval/referral_eval.h"

#include <algorithm>
#include <cmath>
#include <tuple>

namespace skinlesion::eval {

Proportion WilsonInterval(int k, int n, double z) {
  Proportion p;
  p.k = k;
  p.n = n;
  if (n <= 0) return p;
  p.value = static_cast<double>(k) / n;
  std::tie(p.lower, p.upper) = WilsonBounds(k, n, z);
  return p;
}

std::optional<ReferralPolicy> FitReferralPolicy(const std::vector<int>& labels,
                                                const std::vector<Probs>& probs,
                                                ReferralPolicy policy, const LabelSet& classes) {
  std::vector<double> risks;
  risks.reserve(probs.size());
  // The float the rule reports (Summary::malignancy_risk), as EvaluateReferral
  // compares it: a threshold fitted on the unrounded sum can sit a rounding above it.
  for (const Probs& p : probs) risks.push_back(static_cast<float>(MalignancyRisk(p, classes)));
  const std::optional<double> t = FitRiskThreshold(labels, risks, policy.target_sensitivity,
                                                   classes, policy.sensitivity_confidence);
  if (!t) return std::nullopt;
  policy.risk_threshold = *t;
  return policy;
}

ReferralEvaluation EvaluateReferral(const std::vector<int>& labels, const std::vector<Probs>& probs,
                                    const ReferralPolicy& policy, const LabelSet& classes,
                                    const DecisionRule& decision) {
  ReferralEvaluation e;
  e.policy = policy;
  e.has_risk_rule = policy.risk_threshold.has_value();
  const size_t n = std::min(labels.size(), probs.size());
  e.n = static_cast<int>(n);
  int referred = 0, malignant = 0, malignant_referred = 0, benign = 0, benign_kept = 0, mel = 0,
      mel_referred = 0;
  int risk_referred = 0, risk_malignant = 0, risk_benign_kept = 0, risk_mel = 0;
  const int kMel = classes.IndexOf("mel").value_or(-1);
  for (size_t i = 0; i < n; ++i) {
    const Summary s = Summarize(probs[i], classes, policy, decision);
    const bool by_risk = e.has_risk_rule && s.malignancy_risk >= *policy.risk_threshold;
    const bool is_malignant = classes.IsMalignant(labels[i]);
    referred += s.refer;
    risk_referred += by_risk;
    if (is_malignant) {
      ++malignant;
      malignant_referred += s.refer;
      risk_malignant += by_risk;
    } else {
      ++benign;
      benign_kept += !s.refer;
      risk_benign_kept += !by_risk;
    }
    if (labels[i] == kMel) {
      ++mel;
      mel_referred += s.refer;
      risk_mel += by_risk;
    }
  }
  e.refer_rate = WilsonInterval(referred, e.n);
  e.malignant_sensitivity = WilsonInterval(malignant_referred, malignant);
  e.benign_specificity = WilsonInterval(benign_kept, benign);
  e.melanoma_sensitivity = WilsonInterval(mel_referred, mel);
  if (e.has_risk_rule) {
    e.risk_rule_refer_rate = WilsonInterval(risk_referred, e.n);
    e.risk_rule_malignant_sensitivity = WilsonInterval(risk_malignant, malignant);
    e.risk_rule_benign_specificity = WilsonInterval(risk_benign_kept, benign);
    e.risk_rule_melanoma_sensitivity = WilsonInterval(risk_mel, mel);
  }
  return e;
}

nlohmann::json ProportionToJson(const Proportion& p) {
  return {{"value", p.value}, {"ci95", {p.lower, p.upper}}, {"k", p.k}, {"n", p.n}};
}

nlohmann::json ReferralToJson(const ReferralEvaluation& e) {
  nlohmann::json j = {
      {"policy",
       {{"min_confidence", e.policy.min_confidence},
        {"min_margin", e.policy.min_margin},
        {"malignancy_risk_threshold", e.policy.risk_threshold
                                          ? nlohmann::json(*e.policy.risk_threshold)
                                          : nlohmann::json(nullptr)},
        {"target_sensitivity", e.policy.target_sensitivity},
        {"sensitivity_confidence", e.policy.sensitivity_confidence}}},
      {"n", e.n},
      {"refer_rate", ProportionToJson(e.refer_rate)},
      {"malignant_sensitivity", ProportionToJson(e.malignant_sensitivity)},
      {"benign_specificity", ProportionToJson(e.benign_specificity)},
      {"melanoma_sensitivity", ProportionToJson(e.melanoma_sensitivity)},
  };
  if (e.has_risk_rule) {
    j["risk_rule"] = {{"refer_rate", ProportionToJson(e.risk_rule_refer_rate)},
                      {"malignant_sensitivity", ProportionToJson(e.risk_rule_malignant_sensitivity)},
                      {"benign_specificity", ProportionToJson(e.risk_rule_benign_specificity)},
                      {"melanoma_sensitivity", ProportionToJson(e.risk_rule_melanoma_sensitivity)}};
  }
  return j;
}

}  // namespace skinlesion::eval
