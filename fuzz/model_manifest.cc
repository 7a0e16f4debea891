// Fuzzes the model manifest parser (manifest.json from a registry, an upload or a job):
// every rejection is InvalidArgument or DataLoss; every accepted manifest has its
// invariants (a non-empty architecture, a label set of 2..kMaxClasses classes, a
// golden set with one probability per class, units in range) and survives a round
// trip through ToJson unchanged.
#include <cstddef>
#include <cstdint>

#include "absl/strings/string_view.h"
#include "fuzz/require.h"
#include "skinlesion/common/classes.h"
#include "skinlesion/manifest/manifest.h"

using skinlesion::fuzz::Require;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace skinlesion;
  const absl::string_view text(reinterpret_cast<const char*>(data), size);
  auto m = ModelManifest::ParseText(text, "fuzz");
  if (!m.ok()) {
    Require(m.status().code() == absl::StatusCode::kInvalidArgument ||
            m.status().code() == absl::StatusCode::kDataLoss);
    return 0;
  }
  Require(!m->architecture.empty());
  Require(m->classes.size() >= 2 && m->classes.size() <= kMaxClasses);
  Require(m->image_size >= 1 && m->image_size <= 16384);
  Require(m->temperature > 0);
  Require(m->refer.min_confidence >= 0 && m->refer.min_confidence <= 1);
  Require(m->refer.target_sensitivity > 0 && m->refer.target_sensitivity <= 1);
  Require(m->refer.sensitivity_confidence >= 0 && m->refer.sensitivity_confidence < 1);
  Require(!m->refer.risk_threshold || (*m->refer.risk_threshold >= 0 && *m->refer.risk_threshold <= 1));
  Require(m->ood.reject_rate >= 0 && m->ood.reject_rate < 1);
  for (float s : m->std) Require(s > 0);
  if (m->decision.tau > 0) Require(static_cast<int>(m->decision.prior.size()) == m->classes.size());
  for (double q : m->decision.prior) Require(q > 0 && q <= 1);
  if (m->decision.HasBias())
    Require(static_cast<int>(m->decision.bias.size()) == m->classes.size());
  for (double b : m->decision.bias) Require(b >= -4 && b <= 4);
  if (m->vit) {
    for (int64_t d : {m->vit->patch_size, m->vit->hidden_dim, m->vit->num_layers, m->vit->num_heads,
                      m->vit->mlp_dim}) {
      Require(d >= 1 && d <= kMaxVitDimension);
    }
  }
  if (m->golden_set) {
    for (const GoldenItem& item : m->golden_set->items) {
      Require(!item.file.empty() && item.file.find('/') == std::string::npos);
      Require(static_cast<int>(item.probabilities.size()) == m->classes.size());
    }
  }
  auto back = ModelManifest::Parse(m->ToJson(), "round trip");
  Require(back.ok());
  Require(back->classes == m->classes && back->architecture == m->architecture &&
          back->image_size == m->image_size && back->temperature == m->temperature &&
          back->sha256 == m->sha256 && back->ood.threshold == m->ood.threshold &&
          back->refer.risk_threshold == m->refer.risk_threshold && back->vit == m->vit &&
          back->decision == m->decision && back->tta == m->tta);
  Require(back->ToJson() == m->ToJson());
  return 0;
}
