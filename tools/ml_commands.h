// The machine-learning commands of the `skinlesion` CLI: models, train, evaluate,
// predict. Each takes a plain options struct filled from flags by main.
#ifndef SKINLESION_TOOLS_ML_COMMANDS_H_
#define SKINLESION_TOOLS_ML_COMMANDS_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "skinlesion/common/referral.h"
#include "skinlesion/data/dataset.h"

namespace skinlesion::cli {

struct TrainCommand {
  std::string config_file;      // JSON TrainConfig; optional.
  std::string overrides;        // "key=value,key=value" applied over the config.
  std::string data_dir;         // HAM10000 layout.
  std::string metadata;         // Labels CSV (LoadData); default: <data_dir>'s own.
  std::string skip_labels;      // Comma-separated labels to leave out (LoadData).
  std::string split_file;       // Existing split; empty: make one (seeded) and save it.
  uint64_t split_seed = 42;
  // Round of a k-fold split (data::ApplyRound): test fold<fold>, validate on the next
  // fold, train on the rest. -1: the split's own train/val/test.
  int fold = -1;
  // With a k-fold split: train on every image (data::ApplyAllFolds), no validation or
  // test images; the last epoch is the model and its temperature and operating point
  // come from the `cv` rounds' out-of-fold predictions (fit-thresholds --from_cv).
  bool all_folds = false;
  // With all_folds and no fold: samples_per_epoch = data::KeptOutRoundImages(split).
  bool kept_out_epoch = false;
  std::string out_dir;
  std::string device = "auto";  // auto: cuda when available.
  bool resume = false;
  std::string command_line;     // Recorded in the model card.
  // If set, one JSON object per line is appended (and flushed) for every progress
  // report and epoch: {"event": "progress"|"epoch"|"phase", ...} (docs/trainer.md).
  std::string progress_jsonl;
};

// `skinlesion cv`: one training run per round of a k-fold split into
// <out>/fold<i>, each resumable, and the summary of the finished rounds (mean ± sd)
// in <out>/cv.json, <out>/cv.md and <out>/cv.png (a dot per round, mean +-1 sd) after
// each. A finished round is not run again; a
// round stopped part way resumes from its last checkpoint. The recipe (config and
// overrides) is recorded in <out>/cv_recipe.json and must match on every later call.
struct CrossValidateCommand {
  TrainCommand train;      // out_dir: the cross-validation folder; split_file: k-fold.
  std::vector<int> folds;  // Empty: every fold.
};

struct EvaluateCommand {
  std::string model_dir;        // A model directory, or NAME[@alias|@version] with registry.
  std::string registry;         // Registry root; empty: model_dir is a directory.
  std::string out_dir;
  // Either a HAM10000 folder with a split file (partition, default "test")...
  std::string data_dir, metadata, split_file, partition = "test";
  std::string skip_labels;  // LoadData.
  // ...or an ISIC 2018 Task 3 ground-truth CSV with an image folder.
  std::string isic_csv, isic_images;
  // Test-time augmentation (skinlesion/common/tta.h): none, flips or dihedral; empty:
  // the model's own (its manifest's "tta", as served).
  std::string tta_views;
  std::string device = "auto";
  int threads = 2;
  std::string precision = "auto";  // auto, fp32, bf16 (skinlesion/common/precision.h)
  // Non-empty: also writes the model's answers on partition fold<N> (a fold it never
  // saw) as a cv round keeps them, DIR/out_of_fold_{none,<its views>}.csv (fp32).
  std::string answers_dir;
  // With answers_dir: a fold the model trained on is answered too (teacher answers for
  // distillation) instead of refused.
  bool answers_of_training_images = false;
};

struct PredictCommand {
  std::string model_dir;        // Empty: the bundled model.
  std::string registry;         // As EvaluateCommand::registry.
  std::vector<std::string> images;
  bool json = false;
  std::string device = "cpu";
  int threads = 2;
  std::string precision = "auto";  // auto, fp32, bf16
  // Non-empty: also writes DIR/<image stem>.explain.png, the explanation heatmap of
  // the predicted class (Grad-CAM / attention rollout) over the image.
  std::string explain_out;
};

struct ExportCommand {
  std::string model_dir;        // Source model directory.
  std::string out_dir;          // New model directory (must not exist or be empty).
  bool fp16 = false;            // Store weights as F16 (half the size).
  std::vector<std::string> golden;  // Images for the golden set; empty: the source's.
  // Preprocessing resize mode for the copy ("shorter_side_center_crop" or "resize");
  // empty: the source's. For a model whose training images were squashed to squares
  // (HAM10000's 224 px copies of 600x450 images), "resize" shows other images to it in
  // the shape its training images had; recorded in exported_from.
  std::string resize;
};

// Publishes a model directory (every regular file; manifest.json as the manifest)
// as a new registry version and points `alias` at it (promotion gates apply).
struct PublishCommand {
  std::string model_dir;
  std::string registry;
  std::string name;
  std::string alias = "staging";
};

// Fits a model directory's two operating points on labelled data (normally the
// validation partition of the split it was trained with), from fp32 outputs:
//  - referral: the malignancy-risk threshold that refers `target_sensitivity` of the
//    malignant lesions, shown with `sensitivity_confidence` (one-sided Wilson lower
//    bound; 0: the share itself) (calibrated probabilities; skinlesion/common/referral.h),
//    written into the manifest's "refer" object with what it reached there;
//  - out-of-distribution: the energy threshold that rejects `ood_reject_rate` of the
//    lesions (skinlesion/common/ood.h), written into "ood". With `ood_images` (a
//    folder of non-lesion images, e.g. tests/fixtures/ood) it also measures the
//    AUROC lesions vs those images and the share caught; "ood" is written only when
//    that AUROC reaches min_ood_auroc (a check that misses is not served).
struct FitThresholdsCommand {
  std::string model_dir;
  std::string data_dir, metadata, split_file, partition = "val";
  std::string skip_labels;  // LoadData.
  double target_sensitivity = 0.9;
  double sensitivity_confidence = kDefaultSensitivityConfidence;
  // Fit the threshold for target_sensitivity + sensitivity_margin on the fitting data
  // while the manifest keeps target_sensitivity as the aim (refer.sensitivity_margin
  // records the margin): for fitting data from models that are not the served one (cv
  // rounds trained on fewer images give softer answers, so a threshold fitted on them
  // refers fewer of the served model's malignant lesions).
  double sensitivity_margin = 0;
  double ood_reject_rate = 0.01;
  std::string ood_images;
  // The "ood" threshold is written only when measured on ood_images with at least
  // this AUROC; otherwise the manifest is left without one (no check is served).
  double min_ood_auroc = 0.9;
  // "auto" (mahalanobis where the model has a feature map, else energy),
  // "mahalanobis" or "energy" (skinlesion/common/ood.h).
  std::string ood_method = "auto";
  // The partition the mahalanobis Gaussian is fitted on (its threshold is fitted on
  // `partition`).
  std::string ood_fit_on = "train";
  // The decision rule (skinlesion/common/decision.h): with balanced_decision, tau is
  // fitted on `partition` for balanced accuracy against the model's recorded prior,
  // else the class shares of the `prior_from` partitions (comma-separated).
  bool balanced_decision = true;
  std::string prior_from = "train";
  // With balanced_decision: the recall floor fitted on top (FitRecallBias; 0: none).
  std::string recall_target_class = "mel";
  double recall_target = 0.7;
  // Test-time augmentation the rule and thresholds are fitted under (and the model is
  // then served with: written to the manifest's "tta"); empty: the model's own.
  std::string tta_views;
  // A `skinlesion cv` folder of the same recipe and k-fold split: fit on the rounds'
  // out-of-fold predictions instead of `partition` (for a model trained with train
  // --all_folds, which has no held-out image of its own); also sets the temperature
  // (the rounds' mean) and carries the not-a-lesion threshold over (OodScoreScale).
  std::string from_cv;
  int threads = 2;
};

// Runs a model on a split partition in fp32 and in bf16 (both from the same
// weights, skinlesion/models/numerics.h) and reports top-1 agreement, balanced
// accuracy of each, and the largest probability difference (docs/performance.md,
// "bf16"). Writes a JSON summary to `out` when set.
struct PrecisionCheckCommand {
  std::string model_dir;
  std::string data_dir, metadata, split_file, partition = "test";
  std::string skip_labels;  // LoadData.
  std::string out;
  int threads = 2;
};

// "NAME[@alias|@version]" in `registry` -> the verified version directory.
absl::StatusOr<std::string> ResolveRegistryModel(const std::string& registry, const std::string& reference);

absl::Status RunModels(int64_t image_size);
absl::Status RunPublish(const PublishCommand& command);
absl::Status RunExport(const ExportCommand& command);
// The dataset in `data_dir` in any layout data::LoadDataset reads (HAM10000, ISIC
// 2018/2019 one-hot, plain CSV, class folders), `skip_labels` (comma-separated)
// left out; prints the layout, the images found and what was skipped or missing.
// With `model_classes` (evaluating a model on the data) the labels are re-indexed to
// the model's label set; a class the model does not know is an error.
absl::StatusOr<data::Dataset> LoadData(const std::string& data_dir, const std::string& metadata,
                                       const std::string& skip_labels,
                                       const LabelSet* model_classes = nullptr);

absl::Status RunTrain(const TrainCommand& command);
absl::Status RunCrossValidate(const CrossValidateCommand& command);
absl::Status RunEvaluate(const EvaluateCommand& command);
absl::Status RunPredict(const PredictCommand& command);
absl::Status RunFitThresholds(const FitThresholdsCommand& command);
absl::Status RunPrecisionCheck(const PrecisionCheckCommand& command);
// `skinlesion doctor` (tools/doctor.cc): CPU flags and the precision auto picks,
// LibTorch and its threads, the BLAS and OpenMP libraries actually loaded, oneDNN,
// a GEMM measurement, CUDA devices; warnings for a reference BLAS, a 1-thread
// default or spinning OpenMP threads.
absl::Status RunDoctor(int threads);

// The bundled model: $SKINLESION_MODEL, else models/bundled under the current
// directory, else under the source tree this binary was built from.
std::string DefaultModelDir();

}  // namespace skinlesion::cli

#endif  // SKINLESION_TOOLS_ML_COMMANDS_H_
