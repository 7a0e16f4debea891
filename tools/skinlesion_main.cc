// `skinlesion`: the command-line tool.
//
//   skinlesion dataset      --data DIR [--metadata CSV]
//   skinlesion split        --data DIR --out split.csv [--seed N] [--train F --val F --test F]
//                           [--kfold K]
//   skinlesion augment-grid --image PATH --out grid.png [--preset medical] [--rows R --cols C]
//                           [--tile PX] [--seed N]
//   skinlesion models       [--image_size 224]
//   skinlesion train        --data DIR --out RUN [--config cfg.json] [--set k=v,...]
//                           [--split split.csv] [--device auto] [--resume]
//                           [--progress_jsonl events.jsonl] [--fold N] [--all_folds]
//   skinlesion cv           --data DIR --split kfold.csv --out DIR [--config cfg.json]
//                           [--set k=v,...] [--folds 0,1,2]
//   skinlesion evaluate     --model DIR --out DIR (--data DIR --split F [--partition test]
//                           | --isic_csv F --images DIR) [--tta]
//   skinlesion predict      IMAGE... [--model DIR] [--json] [--explain_out DIR]
//   skinlesion jobs         submit|list|get|watch|cancel --trainer HOST:PORT ...
//                           (tools/jobs_command.h)
//   skinlesion version
//
// Flags live here only; every command is a few calls into the libraries.
#include <algorithm>
#include <array>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "absl/flags/commandlineflag.h"
#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/reflection.h"
#include "absl/flags/usage.h"
#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "skinlesion/common/allocator.h"
#include "skinlesion/common/classes.h"
#include "skinlesion/common/logging.h"
#include "skinlesion/common/referral.h"
#include "skinlesion/common/status.h"
#include "skinlesion/data/ham10000.h"
#include "skinlesion/data/split.h"
#include "skinlesion/image/augment.h"
#include "skinlesion/image/decode.h"
#include "skinlesion/image/grid.h"
#include "tools/jobs_command.h"
#include "tools/ml_commands.h"

ABSL_FLAG(std::string, data, "",
          "Data folder: HAM10000's Kaggle layout (HAM10000_metadata.csv, HAM10000_images_part_1/, "
          "_part_2/), a flat folder of images (with --metadata), or one subfolder of images per class");
ABSL_FLAG(std::string, metadata, "",
          "Labels CSV: HAM10000 metadata, an ISIC 2018/2019 one-hot ground truth, or a plain CSV "
          "(image,label[,lesion_id|patient_id,age,sex,localization,dataset]); default: "
          "<data>/HAM10000_metadata.csv, else <data>'s class subfolders. The classes are the data's "
          "(HAM10000's 7; ISIC 2019 adds scc; a plain CSV's or the folders' own codes)");
ABSL_FLAG(std::string, skip_labels, "",
          "Comma-separated classes whose rows are left out and counted (e.g. unk for ISIC 2019, or "
          "scc for a 7-class model); evaluating a model, data of a class it does not know are an error "
          "unless left out");
ABSL_FLAG(std::string, out, "", "Output file");
ABSL_FLAG(uint64_t, seed, 42, "Random seed");
ABSL_FLAG(double, train, 0.70, "Train fraction (split)");
ABSL_FLAG(double, val, 0.15, "Validation fraction (split)");
ABSL_FLAG(double, test, 0.15, "Test fraction (split)");
ABSL_FLAG(int, kfold, 0, "If > 1, make K lesion-disjoint stratified folds instead");
ABSL_FLAG(int, fold, -1,
          "train: with a k-fold split, the round to run (test fold<N>, validate on the next fold, "
          "train on the rest); -1: the split's train/val/test");
ABSL_FLAG(
    bool, all_folds, false,
    "train: with a k-fold split, train on every image (no validation or test images: the last "
    "epoch is the model); then fit-thresholds --from_cv fits its temperature and operating point "
    "on the cv rounds' out-of-fold predictions. With --fold N: every image but fold N's, which "
    "are its test images (the shipped model's procedure, measured on images it never saw)");
ABSL_FLAG(bool, kept_out_epoch, false,
          "train --all_folds (without --fold): draw as many images an epoch as the rounds with "
          "a fold kept out train on (every image but the largest fold's; sets samples_per_epoch, "
          "balanced sampler), so the model on every image takes the steps of the kept-out rounds "
          "that measured its procedure");
ABSL_FLAG(
    std::string, from_cv, "",
    "fit-thresholds: a cv folder of the model's recipe and --split: fit on its rounds' out-of-fold "
    "predictions (for a model trained with --all_folds; --fit_on, --prior_from and --ood_fit_on "
    "do not apply)");
ABSL_FLAG(std::string, folds, "", "cv: comma-separated rounds to run (default: all)");
ABSL_FLAG(std::string, hold_out_source, "",
          "split: test on every image of this source (HAM10000 `dataset`, e.g. rosendahl) and "
          "train/validate on the others (--val of them for validation)");
ABSL_FLAG(std::string, image, "", "Input image");
ABSL_FLAG(std::string, preset, "medical",
          "Augmentation preset: none, light, medical, medical_illuminant");
ABSL_FLAG(int, rows, 3, "Grid rows");
ABSL_FLAG(int, cols, 4, "Grid columns");
ABSL_FLAG(int, tile, 224, "Grid tile size in pixels");
ABSL_FLAG(int, image_size, 224, "Input size for `models`");
ABSL_FLAG(std::string, config, "", "Training configuration JSON (train)");
ABSL_FLAG(std::string, set, "", "Configuration overrides key=value,key=value (train)");
ABSL_FLAG(std::string, split, "", "Split file (train: made and saved when empty)");
ABSL_FLAG(std::string, device, "auto", "Device: auto, cpu, cuda, cuda:N");
ABSL_FLAG(bool, resume, false, "Resume training from <out>/checkpoints/last");
ABSL_FLAG(std::string, progress_jsonl, "",
          "train: append one JSON object per progress report and epoch to this file");
ABSL_FLAG(std::string, model, "", "Model directory (default for predict: the bundled model)");
ABSL_FLAG(std::string, partition, "test", "Split partition to evaluate");
ABSL_FLAG(std::string, answers_dir, "",
          "evaluate: with --partition fold<N> of a k-fold split, also write the model's answers on "
          "that fold as a cv round keeps them (out_of_fold_none.csv and its views'), for "
          "fit-thresholds --from_cv; the model must not have trained on fold<N>");
ABSL_FLAG(bool, answers_of_training_images, false,
          "evaluate: with --answers_dir, also on a fold the model trained on: a teacher's answers "
          "on a student's training images (train distill_answers); they measure nothing");
ABSL_FLAG(std::string, isic_csv, "", "ISIC 2018/2019 one-hot ground-truth CSV (evaluate)");
ABSL_FLAG(std::string, images, "", "Image folder for --isic_csv");
ABSL_FLAG(bool, tta, false, "Test-time augmentation with flips (evaluate): --tta_views flips");
ABSL_FLAG(std::string, tta_views, "",
          "evaluate, fit-thresholds: test-time augmentation: none, flips (3 views) or dihedral (8: "
          "the rotations and mirrors of the square)");
ABSL_FLAG(bool, json, false, "JSON output (predict)");
ABSL_FLAG(std::string, explain_out, "",
          "predict: write DIR/<image stem>.explain.png, a heatmap of the predicted class "
          "(Grad-CAM / attention rollout) over each image");
ABSL_FLAG(int, threads, 2, "LibTorch intra-op threads (evaluate, predict)");
ABSL_FLAG(double, target_sensitivity, 0.9,
          "fit-thresholds: share of malignant lesions the malignancy-risk rule must refer");
ABSL_FLAG(double, sensitivity_confidence, skinlesion::kDefaultSensitivityConfidence,
          "fit-thresholds: the one-sided confidence with which the fitting data must show "
          "--target_sensitivity (the Wilson lower bound of their share reaches it; 0: the share "
          "itself)");
ABSL_FLAG(double, sensitivity_margin, 0,
          "fit-thresholds: fit the risk threshold for --target_sensitivity plus this margin, "
          "keeping --target_sensitivity as the aim in the manifest (refer.sensitivity_margin): "
          "for fitting answers of models other than the served one (--from_cv)");
ABSL_FLAG(std::string, ood_method, "auto",
          "fit-thresholds: the not-a-lesion score: mahalanobis (penultimate features; auto where the "
          "model has a feature map), energy, or auto");
ABSL_FLAG(bool, balanced_decision, true,
          "fit-thresholds: also fit the decision rule's tau for balanced accuracy (false: keep the "
          "model's rule)");
ABSL_FLAG(std::string, recall_target_class, "mel",
          "fit-thresholds: the class whose recall the decision rule's floor guarantees on the "
          "fitting data");
ABSL_FLAG(double, recall_target, 0.7,
          "fit-thresholds: the floor: the smallest bias for --recall_target_class that names at "
          "least this share of its images (0: none)");
ABSL_FLAG(std::string, prior_from, "train",
          "fit-thresholds: comma-separated split partitions whose class shares are the decision "
          "rule's prior "
          "when the model does not record one (its training partitions, e.g. fold2,fold3,fold4)");
ABSL_FLAG(std::string, ood_fit_on, "train",
          "fit-thresholds: the split partition whose features the mahalanobis Gaussian is fitted on");
ABSL_FLAG(double, ood_reject_rate, 0.01,
          "fit-thresholds: share of real lesions the out-of-distribution check may reject");
ABSL_FLAG(std::string, ood_images, "",
          "fit-thresholds: a folder of non-lesion images to measure the OOD check on "
          "(e.g. tests/fixtures/ood)");
ABSL_FLAG(std::string, fit_on, "val", "fit-thresholds: the split partition to fit on");
ABSL_FLAG(double, min_ood_auroc, 0.9,
          "fit-thresholds: write the not-a-lesion threshold only when its AUROC on --ood_images "
          "reaches this");
ABSL_FLAG(std::string, precision, "auto",
          "evaluate, predict: auto (bf16 where the CPU has native bf16 or on CUDA, else fp32; "
          "follows the model manifest's pin), fp32, bf16");
ABSL_FLAG(std::string, registry, "",
          "Model registry root: --model NAME[@alias|@version] is resolved in it (evaluate, predict, publish)");
ABSL_FLAG(std::string, name, "", "Registry model name (publish)");
ABSL_FLAG(std::string, alias, "staging", "Alias moved to the new version (publish; empty: none)");
ABSL_FLAG(bool, fp16, false, "Store the exported weights as float16 (export)");
ABSL_FLAG(std::string, golden, "", "Comma-separated images for the golden set (export; default: the source's)");
ABSL_FLAG(
    std::string, resize, "",
    "Preprocessing of the exported model: shorter_side_center_crop or resize (squash the whole "
    "image; export; default: the source's)");

namespace skinlesion {
namespace {

absl::Status Require(const std::string& value, const char* flag) {
  if (value.empty()) return absl::InvalidArgumentError(absl::StrCat("--", flag, " is required"));
  return absl::OkStatus();
}

absl::StatusOr<data::Catalogue> LoadCatalogue() {
  const std::string dir = absl::GetFlag(FLAGS_data);
  SL_RETURN_IF_ERROR(Require(dir, "data"));
  SL_ASSIGN_OR_RETURN(data::Dataset dataset,
                      cli::LoadData(dir, absl::GetFlag(FLAGS_metadata), absl::GetFlag(FLAGS_skip_labels)));
  return std::move(dataset.catalogue);
}

absl::Status RunDataset() {
  SL_ASSIGN_OR_RETURN(const data::Catalogue catalogue, LoadCatalogue());
  std::printf("%s", data::Summary(catalogue).c_str());
  return absl::OkStatus();
}

// Per-partition image counts by class: the proportions a stratified split keeps.
std::string SplitTable(const data::Split& split, const data::Catalogue& catalogue) {
  std::string out = absl::StrFormat("%-10s %7s", "partition", "images");
  for (const ClassInfo& c : catalogue.classes) absl::StrAppend(&out, absl::StrFormat(" %6s", c.code));
  absl::StrAppend(&out, "\n");
  for (const std::string& partition : split.Partitions()) {
    std::vector<int> counts(catalogue.classes.size(), 0);
    int total = 0;
    for (const data::Sample& s : catalogue.samples) {
      const std::string* p = split.PartitionOf(s.image_id);
      if (p != nullptr && *p == partition) {
        counts[s.label]++;
        ++total;
      }
    }
    absl::StrAppend(&out, absl::StrFormat("%-10s %7d", partition, total));
    for (int n : counts) absl::StrAppend(&out, absl::StrFormat(" %6d", n));
    absl::StrAppend(&out, "\n");
  }
  return out;
}

absl::Status RunSplit() {
  const std::string out = absl::GetFlag(FLAGS_out);
  SL_RETURN_IF_ERROR(Require(out, "out"));
  SL_ASSIGN_OR_RETURN(const data::Catalogue catalogue, LoadCatalogue());
  const int k = absl::GetFlag(FLAGS_kfold);
  absl::StatusOr<data::Split> split;
  if (const std::string source = absl::GetFlag(FLAGS_hold_out_source); !source.empty()) {
    split = data::MakeSourceHoldout(catalogue, source, absl::GetFlag(FLAGS_val), absl::GetFlag(FLAGS_seed));
  } else if (k > 1) {
    split = data::MakeKFold(catalogue, k, absl::GetFlag(FLAGS_seed));
  } else {
    data::SplitOptions options;
    options.train = absl::GetFlag(FLAGS_train);
    options.val = absl::GetFlag(FLAGS_val);
    options.test = absl::GetFlag(FLAGS_test);
    options.seed = absl::GetFlag(FLAGS_seed);
    split = data::MakeSplit(catalogue, options);
  }
  if (!split.ok()) return split.status();
  SL_RETURN_IF_ERROR(data::SaveSplit(*split, out));
  std::printf("%s", SplitTable(*split, catalogue).c_str());
  std::printf("wrote %s (%s, seed %llu, digest %s)\n", out.c_str(), split->method().c_str(),
              static_cast<unsigned long long>(split->seed()), split->Digest().c_str());
  return absl::OkStatus();
}

absl::Status RunAugmentGrid() {
  const std::string path = absl::GetFlag(FLAGS_image);
  const std::string out = absl::GetFlag(FLAGS_out);
  SL_RETURN_IF_ERROR(Require(path, "image"));
  SL_RETURN_IF_ERROR(Require(out, "out"));
  const int tile = absl::GetFlag(FLAGS_tile);
  const int rows = absl::GetFlag(FLAGS_rows);
  const int cols = absl::GetFlag(FLAGS_cols);
  if (tile < 16 || tile > 1024 || rows < 1 || cols < 1 || rows * cols > 256) {
    return absl::InvalidArgumentError("grid needs 16 <= --tile <= 1024 and 1..256 tiles");
  }
  SL_ASSIGN_OR_RETURN(const cv::Mat rgb, DecodeImageFile(path, DecodeLimits{}));
  SL_ASSIGN_OR_RETURN(const Pipeline pipeline,
                      MakePreset(absl::GetFlag(FLAGS_preset), tile));
  const cv::Mat grid =
      MakeAugmentationGrid(rgb, pipeline, absl::GetFlag(FLAGS_seed), rows, cols, tile);
  SL_RETURN_IF_ERROR(WriteImage(out, grid));
  std::printf("wrote %s (%dx%d, preset %s)\n", out.c_str(), grid.cols, grid.rows,
              absl::GetFlag(FLAGS_preset).c_str());
  return absl::OkStatus();
}

std::vector<std::string> g_positional;  // Arguments after the flags (predict's images).
std::string g_command_line;

absl::Status RunModelsCommand() { return cli::RunModels(absl::GetFlag(FLAGS_image_size)); }

cli::TrainCommand TrainCommandFromFlags() {
  cli::TrainCommand c;
  c.config_file = absl::GetFlag(FLAGS_config);
  c.overrides = absl::GetFlag(FLAGS_set);
  c.data_dir = absl::GetFlag(FLAGS_data);
  c.metadata = absl::GetFlag(FLAGS_metadata);
  c.skip_labels = absl::GetFlag(FLAGS_skip_labels);
  c.split_file = absl::GetFlag(FLAGS_split);
  c.split_seed = absl::GetFlag(FLAGS_seed);
  c.out_dir = absl::GetFlag(FLAGS_out);
  c.device = absl::GetFlag(FLAGS_device);
  c.resume = absl::GetFlag(FLAGS_resume);
  c.progress_jsonl = absl::GetFlag(FLAGS_progress_jsonl);
  c.fold = absl::GetFlag(FLAGS_fold);
  c.all_folds = absl::GetFlag(FLAGS_all_folds);
  c.kept_out_epoch = absl::GetFlag(FLAGS_kept_out_epoch);
  c.command_line = g_command_line;
  return c;
}

absl::Status RunTrainCommand() { return cli::RunTrain(TrainCommandFromFlags()); }

absl::Status RunCrossValidateCommand() {
  cli::CrossValidateCommand c;
  c.train = TrainCommandFromFlags();
  c.train.fold = -1;
  if (c.train.all_folds)
    return absl::InvalidArgumentError(
        "cv runs the rounds; train --all_folds trains the model to ship");
  for (absl::string_view f : absl::StrSplit(absl::GetFlag(FLAGS_folds), ',', absl::SkipEmpty())) {
    int fold = 0;
    if (!absl::SimpleAtoi(f, &fold)) {
      return absl::InvalidArgumentError(absl::StrCat("--folds: '", f, "' is not a number"));
    }
    c.folds.push_back(fold);
  }
  return cli::RunCrossValidate(c);
}

absl::Status RunEvaluateCommand() {
  cli::EvaluateCommand c;
  c.model_dir = absl::GetFlag(FLAGS_model);
  c.out_dir = absl::GetFlag(FLAGS_out);
  c.data_dir = absl::GetFlag(FLAGS_data);
  c.metadata = absl::GetFlag(FLAGS_metadata);
  c.skip_labels = absl::GetFlag(FLAGS_skip_labels);
  c.split_file = absl::GetFlag(FLAGS_split);
  c.partition = absl::GetFlag(FLAGS_partition);
  c.isic_csv = absl::GetFlag(FLAGS_isic_csv);
  c.isic_images = absl::GetFlag(FLAGS_images);
  c.registry = absl::GetFlag(FLAGS_registry);
  c.tta_views = absl::GetFlag(FLAGS_tta_views);
  if (c.tta_views.empty() && absl::GetFlag(FLAGS_tta)) c.tta_views = "flips";
  c.device = absl::GetFlag(FLAGS_device);
  c.threads = absl::GetFlag(FLAGS_threads);
  c.precision = absl::GetFlag(FLAGS_precision);
  c.answers_dir = absl::GetFlag(FLAGS_answers_dir);
  c.answers_of_training_images = absl::GetFlag(FLAGS_answers_of_training_images);
  return cli::RunEvaluate(c);
}

absl::Status RunPredictCommand() {
  cli::PredictCommand c;
  c.model_dir = absl::GetFlag(FLAGS_model);
  c.images = g_positional;
  c.json = absl::GetFlag(FLAGS_json);
  c.threads = absl::GetFlag(FLAGS_threads);
  c.registry = absl::GetFlag(FLAGS_registry);
  c.explain_out = absl::GetFlag(FLAGS_explain_out);
  c.precision = absl::GetFlag(FLAGS_precision);
  const std::string device = absl::GetFlag(FLAGS_device);
  c.device = device == "auto" ? "cpu" : device;
  return cli::RunPredict(c);
}

absl::Status RunExportCommand() {
  cli::ExportCommand c;
  c.model_dir = absl::GetFlag(FLAGS_model);
  c.out_dir = absl::GetFlag(FLAGS_out);
  c.fp16 = absl::GetFlag(FLAGS_fp16);
  c.resize = absl::GetFlag(FLAGS_resize);
  for (absl::string_view g : absl::StrSplit(absl::GetFlag(FLAGS_golden), ',', absl::SkipEmpty())) {
    c.golden.emplace_back(g);
  }
  return cli::RunExport(c);
}

absl::Status RunPublishCommand() {
  cli::PublishCommand c;
  c.model_dir = absl::GetFlag(FLAGS_model);
  c.registry = absl::GetFlag(FLAGS_registry);
  c.name = absl::GetFlag(FLAGS_name);
  c.alias = absl::GetFlag(FLAGS_alias);
  return cli::RunPublish(c);
}

absl::Status RunFitThresholdsCommand() {
  cli::FitThresholdsCommand c;
  c.model_dir = absl::GetFlag(FLAGS_model);
  c.data_dir = absl::GetFlag(FLAGS_data);
  c.metadata = absl::GetFlag(FLAGS_metadata);
  c.skip_labels = absl::GetFlag(FLAGS_skip_labels);
  c.split_file = absl::GetFlag(FLAGS_split);
  c.partition = absl::GetFlag(FLAGS_fit_on);
  c.target_sensitivity = absl::GetFlag(FLAGS_target_sensitivity);
  c.sensitivity_confidence = absl::GetFlag(FLAGS_sensitivity_confidence);
  c.sensitivity_margin = absl::GetFlag(FLAGS_sensitivity_margin);
  c.ood_reject_rate = absl::GetFlag(FLAGS_ood_reject_rate);
  c.ood_images = absl::GetFlag(FLAGS_ood_images);
  c.min_ood_auroc = absl::GetFlag(FLAGS_min_ood_auroc);
  c.ood_method = absl::GetFlag(FLAGS_ood_method);
  c.ood_fit_on = absl::GetFlag(FLAGS_ood_fit_on);
  c.balanced_decision = absl::GetFlag(FLAGS_balanced_decision);
  c.prior_from = absl::GetFlag(FLAGS_prior_from);
  c.recall_target_class = absl::GetFlag(FLAGS_recall_target_class);
  c.recall_target = absl::GetFlag(FLAGS_recall_target);
  c.tta_views = absl::GetFlag(FLAGS_tta_views);
  c.from_cv = absl::GetFlag(FLAGS_from_cv);
  c.threads = absl::GetFlag(FLAGS_threads);
  return cli::RunFitThresholds(c);
}

absl::Status RunPrecisionCheckCommand() {
  cli::PrecisionCheckCommand c;
  c.model_dir = absl::GetFlag(FLAGS_model);
  c.data_dir = absl::GetFlag(FLAGS_data);
  c.metadata = absl::GetFlag(FLAGS_metadata);
  c.skip_labels = absl::GetFlag(FLAGS_skip_labels);
  c.split_file = absl::GetFlag(FLAGS_split);
  c.partition = absl::GetFlag(FLAGS_partition);
  c.out = absl::GetFlag(FLAGS_out);
  c.threads = absl::GetFlag(FLAGS_threads);
  return cli::RunPrecisionCheck(c);
}

absl::Status RunVersion() {
  std::printf("skinlesion %s\n", SKINLESION_VERSION);
  return absl::OkStatus();
}

struct Command {
  const char* help;
  std::function<absl::Status()> run;
  // What `skinlesion <command> --help` shows: the synopsis and the flags the command
  // reads (every other flag of this tool is refused for it).
  const char* usage;
  std::vector<const char*> flags;
};

const std::map<std::string, Command>& Commands() {
  static const auto* commands = new std::map<std::string, Command>{
      {"dataset",
       {"summarise a HAM10000 folder (classes, lesions, missing images)",
        RunDataset,
        "--data DIR [--metadata CSV]",
        {"data", "metadata", "skip_labels"}}},
      {"split",
       {"write a stratified, lesion-disjoint split file",
        RunSplit,
        "--data DIR --out split.csv [--seed N] [--train F --val F --test F] [--kfold K] "
        "[--hold_out_source NAME]",
        {"data", "metadata", "skip_labels", "out", "seed", "train", "val", "test", "kfold",
         "hold_out_source"}}},
      {"augment-grid",
       {"write a PNG grid of augmented versions of an image",
        RunAugmentGrid,
        "--image PATH --out grid.png [--preset medical] [--rows R --cols C] [--tile PX] [--seed N]",
        {"image", "out", "preset", "rows", "cols", "tile", "seed"}}},
      {"models",
       {"list the architectures with parameters and FLOPs",
        RunModelsCommand,
        "[--image_size 224]",
        {"image_size"}}},
      {"train",
       {"train a classifier (two-phase fine-tuning) and export it",
        RunTrainCommand,
        "--data DIR --out RUN [--config cfg.json] [--set k=v,...] [--split split.csv] "
        "[--device auto] [--resume] [--progress_jsonl events.jsonl] [--fold N] [--all_folds] "
        "[--kept_out_epoch]",
        {"config", "set", "data", "metadata", "skip_labels", "split", "seed", "out", "device",
         "resume", "progress_jsonl", "fold", "all_folds", "kept_out_epoch"}}},
      {"cv",
       {"cross-validate a recipe: one resumable training run per k-fold round, mean ± sd",
        RunCrossValidateCommand,
        "--data DIR --split kfold.csv --out DIR [--config cfg.json] [--set k=v,...] [--folds "
        "0,1,2]",
        {"config", "set", "data", "metadata", "skip_labels", "split", "out", "device", "folds",
         "progress_jsonl"}}},
      {"evaluate",
       {"evaluate a model on a split or an ISIC 2018 ground truth",
        RunEvaluateCommand,
        "--model DIR|NAME@ALIAS --out DIR (--data DIR --split F [--partition test] | --isic_csv F "
        "--images DIR) [--tta | --tta_views none|flips|dihedral] [--precision auto] "
        "[--answers_dir DIR [--answers_of_training_images]]",
        {"model", "out", "data", "metadata", "skip_labels", "split", "partition", "isic_csv",
         "images", "registry", "tta", "tta_views", "device", "threads", "precision", "answers_dir",
         "answers_of_training_images"}}},
      {"export",
       {"copy a model directory (optionally as float16) with a fresh golden set",
        RunExportCommand,
        "--model DIR --out DIR [--fp16] [--golden a.jpg,b.jpg] [--resize "
        "resize|shorter_side_center_crop]",
        {"model", "out", "fp16", "golden", "resize"}}},
      {"publish",
       {"publish a model directory to a registry and move an alias",
        RunPublishCommand,
        "--model DIR --registry ROOT --name NAME [--alias staging]",
        {"model", "registry", "name", "alias"}}},
      {"precision-check",
       {"compare a model's answers in bf16 and fp32 on a split partition",
        RunPrecisionCheckCommand,
        "--model DIR --data DIR --split F [--partition test] [--out report.json]",
        {"model", "data", "metadata", "skip_labels", "split", "partition", "out", "threads"}}},
      {"fit-thresholds",
       {"fit a model's decision rule, referral and out-of-distribution thresholds on validation "
        "data",
        RunFitThresholdsCommand,
        "--model DIR --data DIR --split F [--fit_on val | --from_cv CV_DIR] "
        "[--target_sensitivity 0.9] [--sensitivity_confidence 0.95] [--sensitivity_margin 0] "
        "[--prior_from train] [--recall_target 0.7] [--ood_images DIR] [--tta_views dihedral]",
        {"model",
         "data",
         "metadata",
         "skip_labels",
         "split",
         "fit_on",
         "target_sensitivity",
         "sensitivity_confidence",
         "sensitivity_margin",
         "ood_reject_rate",
         "ood_method",
         "ood_fit_on",
         "balanced_decision",
         "prior_from",
         "recall_target_class",
         "recall_target",
         "ood_images",
         "min_ood_auroc",
         "tta_views",
         "from_cv",
         "threads"}}},
      {"predict",
       {"classify lesion images (the bundled model by default)",
        RunPredictCommand,
        "IMAGE... [--model DIR|NAME@ALIAS] [--json] [--explain_out DIR] [--precision auto]",
        {"model", "json", "threads", "registry", "explain_out", "precision", "device"}}},
      {"jobs",
       {"submit, list, watch and cancel jobs of skinlesion-trainer",
        [] { return cli::RunJobsCommand(g_positional); },
        "submit|list|get|watch|cancel --trainer HOST:PORT [--token_file F] ...",
        {"trainer", "token_file", "tls_ca", "state", "follow", "config", "set", "data", "metadata",
         "split", "json"}}},
      {"doctor",
       {"print what this machine offers (CPU flags, bf16, threads, BLAS, oneDNN, CUDA) and what "
        "to fix",
        [] { return cli::RunDoctor(absl::GetFlag(FLAGS_threads)); },
        "[--threads 2]",
        {"threads"}}},
      {"version", {"print the version", RunVersion, "", {}}},
  };
  return *commands;
}

std::string UsageText() {
  std::string text = "usage: skinlesion <command> [flags]\n\ncommands:\n";
  for (const auto& [name, command] : Commands()) {
    absl::StrAppend(&text, "  ", name, std::string(16 - std::min<size_t>(15, name.size()), ' '),
                    command.help, "\n");
  }
  absl::StrAppend(&text, "\nflags of a command: skinlesion <command> --help");
  return text;
}

// `skinlesion <command> --help`: the synopsis and each flag with its help and default.
std::string CommandHelp(const std::string& name, const Command& command) {
  std::string text = absl::StrCat("usage: skinlesion ", name, " ", command.usage, "\n",
                                  command.help, "\n");
  if (!command.flags.empty()) absl::StrAppend(&text, "\nflags:\n");
  for (const char* flag_name : command.flags) {
    const absl::CommandLineFlag* flag = absl::FindCommandLineFlag(flag_name);
    SL_CHECK(flag != nullptr) << "command " << name << " lists an unknown flag --" << flag_name;
    const std::string value = flag->DefaultValue();
    absl::StrAppend(&text, "  --", flag_name, "\n      ", flag->Help(), " (default: ",
                    value.empty() ? "\"\"" : value, ")\n");
  }
  return text;
}

// The tool's own flags named in `args` (flags of libraries and abseil's, such as
// --flagfile, are not checked); stops at "--".
std::vector<std::string> ToolFlagsGiven(const std::vector<char*>& args) {
  std::vector<std::string> names;
  for (size_t i = 1; i < args.size(); ++i) {
    absl::string_view a = args[i];
    if (a == "--") break;
    if (!absl::ConsumePrefix(&a, "-")) continue;
    absl::ConsumePrefix(&a, "-");
    std::string name(a.substr(0, a.find('=')));
    const absl::CommandLineFlag* flag = absl::FindCommandLineFlag(name);
    if (flag == nullptr && absl::StartsWith(name, "no")) {  // --noflag for a boolean.
      name = name.substr(2);
      flag = absl::FindCommandLineFlag(name);
    }
    if (flag != nullptr && absl::StrContains(flag->Filename(), "tools/")) names.push_back(name);
  }
  return names;
}

}  // namespace
}  // namespace skinlesion

int main(int argc, char** argv) {
  // Before any tensor exists (skinlesion/common/allocator.h).
  skinlesion::TuneAllocatorForTensors();
  absl::SetProgramUsageMessage(skinlesion::UsageText());
  if (argc < 2 || argv[1][0] == '-') {
    std::fprintf(stderr, "%s\n", skinlesion::UsageText().c_str());
    return argc < 2 ? 2 : (std::string(argv[1]) == "--help" ? 0 : 2);
  }
  const std::string name = argv[1];
  const auto& commands = skinlesion::Commands();
  const auto it = commands.find(name);
  if (it == commands.end()) {
    std::fprintf(stderr, "skinlesion: unknown command '%s'\n\n%s\n", name.c_str(),
                 skinlesion::UsageText().c_str());
    return 2;
  }
  // Parse the flags after the command name.
  std::vector<char*> args = {argv[0]};
  for (int i = 2; i < argc; ++i) args.push_back(argv[i]);
  for (size_t i = 1; i < args.size(); ++i) {
    const std::string a = args[i];
    if (a == "--") break;
    if (a == "--help" || a == "-help" || a == "-h") {
      std::printf("%s", skinlesion::CommandHelp(name, it->second).c_str());
      return 0;
    }
  }
  // A flag of another command is an error, not silently ignored.
  for (const std::string& flag : skinlesion::ToolFlagsGiven(args)) {
    const auto& allowed = it->second.flags;
    if (std::none_of(allowed.begin(), allowed.end(),
                     [&](const char* f) { return flag == f; })) {
      std::fprintf(stderr, "skinlesion %s: --%s does not apply to this command (see skinlesion %s --help)\n",
                   name.c_str(), flag.c_str(), name.c_str());
      return 2;
    }
  }
  const std::vector<char*> positional =
      absl::ParseCommandLine(static_cast<int>(args.size()), args.data());
  for (size_t i = 1; i < positional.size(); ++i) skinlesion::g_positional.push_back(positional[i]);
  if (name != "predict" && name != "jobs" && !skinlesion::g_positional.empty()) {
    std::fprintf(stderr, "skinlesion %s: unexpected argument '%s'\n", name.c_str(), positional[1]);
    return 2;
  }
  for (int i = 0; i < argc; ++i) {
    absl::StrAppend(&skinlesion::g_command_line, i ? " " : "", argv[i]);
  }
  const absl::Status status = it->second.run();
  if (!status.ok()) {
    std::fprintf(stderr, "skinlesion %s: %s\n", name.c_str(), std::string(status.message()).c_str());
    return status.code() == absl::StatusCode::kInvalidArgument ? 2 : 1;
  }
  return 0;
}
