// The model manifest: manifest.json beside a model's weights. It is the contract
// between the trainer and CLI (which write it), the registry (which stores and gates
// it), the jobs service, the inference service, the predictor and the gateway (which
// read it). One typed reading for all of them, free of LibTorch:
//
//   SL_ASSIGN_OR_RETURN(ModelManifest m, ReadModelManifest("models/bundled"));
//   m.refer.risk_threshold = 0.2;            // typed fields
//   m.document["calibration"]["fitted_on"] = "val";  // provenance stays free-form JSON
//   SL_RETURN_IF_ERROR(WriteModelManifest("models/bundled", m));
//
// Typed fields (defaults for keys a manifest leaves out):
//   "format"            "skinlesion.checkpoint.v1" (absent: that); any other value is
//                       refused, so a manifest written by a newer layout is not misread
//   "model", "version"  the registry's name and version (version >= 1)
//   "architecture"      required, non-empty
//   "image_size"        default 224; "preprocessing.size" must agree
//   "labels"            class codes in logit order (required unless HAM10000's 7);
//   "num_classes"       must equal the number of labels; "malignant_classes": codes
//                       among the labels (absent: the known groups, classes.h)
//   "preprocessing"     {"size", "resize": "shorter_side_center_crop" | "resize",
//                       "mean", "std" (3 numbers; ImageNet's by default),
//                       "colour_constancy": {"method": "shades_of_gray", "p" in [1, 16]}}
//   "calibration"       {"temperature" > 0 (default 1)}
//   "refer"             {"min_confidence", "min_margin" in [0, 1],
//                       "malignancy_risk_threshold" in [0, 1], "target_sensitivity" in (0, 1],
//                       "sensitivity_confidence" in [0, 1) (absent: 0, the point estimate)}
//   "decision"          {"rule": "plain" | "prior_adjusted", "tau" in [0, 4], "prior":
//                       one share per class in (0, 1], "bias": one number per class in
//                       [-4, 4] (prior_adjusted only)}: which class an answer names
//                       (skinlesion/common/decision.h; absent: the most probable)
//   "ood"               {"method": "mahalanobis" | "energy", "threshold" (older:
//                       "energy_threshold"), "reject_rate" in [0, 1), and for a
//                       thresholded "mahalanobis" "features": {"file", "sha256"}}
//   "vit"               {"patch_size", "hidden_dim", "num_layers", "num_heads",
//                       "mlp_dim"}: the shape of a "vit_custom" model, each in
//                       [1, 65536] (SaveCheckpoint writes it for vit_custom only)
//   "precision"         "fp32" | "bf16": pins the numerics (absent: the server's choice)
//   "tta"               "none" | "flips" | "dihedral": the test-time views whose softmax
//                       every answer averages (skinlesion/common/tta.h; absent: none);
//                       the decision rule and thresholds are fitted under it
//   "golden_set"        {"tolerance", "tolerance_bf16", "items": [{"file",
//                       "probabilities": one per class}]}
//   "sha256" / "files"  the weights' SHA-256 ("files" entry of model.safetensors first)
// Every other key ("metrics", "training", "data", "created", "code_version", ...) is
// kept as it is in `document` and written back unchanged. Errors are InvalidArgument naming
// the source and the field: `manifest.json: "preprocessing.mean" must be an array of 3
// numbers, got [1]`.
#ifndef SKINLESION_MANIFEST_MANIFEST_H_
#define SKINLESION_MANIFEST_MANIFEST_H_

#include <algorithm>
#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "nlohmann/json.hpp"
#include "skinlesion/common/classes.h"
#include "skinlesion/common/decision.h"
#include "skinlesion/common/imagenet.h"
#include "skinlesion/common/ood.h"
#include "skinlesion/common/precision.h"
#include "skinlesion/common/referral.h"
#include "skinlesion/common/tta.h"
#include "skinlesion/models/architectures.h"

namespace skinlesion {

inline constexpr char kManifestFormat[] = "skinlesion.checkpoint.v1";
inline constexpr char kManifestFile[] = "manifest.json";
inline constexpr char kWeightsFile[] = "model.safetensors";

inline constexpr int kDefaultImageSize = 224;
inline constexpr int64_t kMaxVitDimension = 65536;
inline constexpr char kResizeShorterSideCenterCrop[] = "shorter_side_center_crop";
inline constexpr char kResizeDirect[] = "resize";
// Whether `mode` is one of the two resize modes above.
bool IsResizeMode(absl::string_view mode);
// "" for a resize mode, else "<what> must be shorter_side_center_crop or resize, got
// '<mode>'" (training configs and `export --resize` name the problem the same way).
std::string ResizeModeProblem(absl::string_view what, absl::string_view mode);

// The golden set's tolerances on a probability (max abs): fp32 reproduces the
// trainer's outputs to rounding; bf16 keeps 8 bits of mantissa and moves the bundled
// model's probabilities by at most 0.0066 over 895 test images (`skinlesion
// precision-check`, docs/performance.md), so 0.05 passes it while a wrong or corrupt
// model, which differs by far more, still fails.
inline constexpr double kDefaultGoldenTolerance = 1e-3;
inline constexpr double kDefaultGoldenToleranceBf16 = 0.05;

// The reference outputs a version ships with ("golden_set"): a server checks them
// before serving the version.
struct GoldenItem {
  std::string file;                 // A file name in the model directory.
  std::vector<float> probabilities;  // One per class of the manifest's label set.
  std::string top_class;  // For a reader of the file; optional, not checked.
};
struct GoldenSet {
  double tolerance = kDefaultGoldenTolerance;
  double tolerance_bf16 = kDefaultGoldenToleranceBf16;
  std::vector<GoldenItem> items;
  // The tolerance for an instance running in `precision`.
  double ToleranceFor(Precision precision) const {
    return precision == Precision::kBf16 ? std::max(tolerance, tolerance_bf16) : tolerance;
  }
};

struct ModelManifest {
  std::string name;  // Registry model name ("model"); empty outside a registry.
  int64_t version = 0;  // Registry version; 0 outside a registry.
  std::string sha256;   // Of model.safetensors: identifies the weights.
  std::string architecture;
  int image_size = kDefaultImageSize;
  std::string resize = kResizeShorterSideCenterCrop;  // or kResizeDirect (aspect not kept)
  LabelSet classes = LabelSet::Ham10000();
  std::array<float, 3> mean = kImageNetMean;
  std::array<float, 3> std = kImageNetStd;
  int shades_of_gray_p = 0;  // Colour constancy before normalising; 0: none.
  double temperature = 1.0;  // Calibration: probabilities = softmax(logits / T).
  ReferralPolicy refer;
  DecisionRule decision;  // Plain unless "decision" says otherwise.
  OodPolicy ood;  // No threshold: no out-of-distribution check.
  std::optional<models::VitConfig> vit;  // The shape of a vit_custom model.
  std::optional<Precision> precision;  // A pinned precision.
  Tta tta = Tta::kNone;                // Test-time views every answer averages.
  std::optional<GoldenSet> golden_set;  // Absent: nothing to check.
  // The whole document as read: provenance and free-form keys live here. ToJson
  // overwrites the typed keys in a copy of it.
  nlohmann::json document = nlohmann::json::object();

  // Validates `document` (see the header comment); `source` names it in errors.
  static absl::StatusOr<ModelManifest> Parse(const nlohmann::json& document, absl::string_view source);
  static absl::StatusOr<ModelManifest> ParseText(absl::string_view text, absl::string_view source);

  // `document` with the typed fields written in (Parse(ToJson()) gives this manifest back).
  nlohmann::json ToJson() const;
};

// Only the label set of a manifest ("labels", "num_classes", "malignant_classes"): for
// readers of stored manifests that need nothing else (the registry's promotion gates).
absl::StatusOr<LabelSet> ParseManifestLabels(const nlohmann::json& document, absl::string_view source);

// <directory>/manifest.json; a manifest without a weights hash gets the SHA-256 of
// <directory>/model.safetensors when that file exists. NotFound / DataLoss (not JSON) /
// InvalidArgument (a field).
absl::StatusOr<ModelManifest> ReadModelManifest(const std::string& directory);

// Writes ToJson() to <directory>/manifest.json atomically.
absl::Status WriteModelManifest(const std::string& directory, const ModelManifest& manifest);

}  // namespace skinlesion

#endif  // SKINLESION_MANIFEST_MANIFEST_H_
