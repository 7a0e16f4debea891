#include "skinlesion/train/trainer.h"

#include <sys/resource.h>
#include <sys/wait.h>
#include <torch/torch.h>
#include <unistd.h>

#include <cmath>
#include <csignal>
#include <filesystem>
#include <fstream>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "skinlesion/data/ham10000.h"
#include "skinlesion/eval/out_of_fold.h"
#include "skinlesion/models/model_zoo.h"
#include "skinlesion/testing/testing.h"
#include "skinlesion/train/distributed.h"

namespace skinlesion::train {
namespace {

using ::skinlesion::testing::SourcePath;
using ::skinlesion::testing::StatusIs;
using ::skinlesion::testing::TempDir;
using ::testing::AllOf;
using ::testing::HasSubstr;

std::vector<data::Sample> FixtureSamples() {
  auto catalogue = data::LoadHam10000(SourcePath("tests/fixtures/ham10000/metadata_subset.csv"),
                                      SourcePath("tests/fixtures/ham10000/images"), {});
  EXPECT_TRUE(catalogue.ok()) << catalogue.status();
  return catalogue->samples;
}

// A tiny, fast configuration: ResNet-18 at 32 px, 14 images.
TrainConfig TinyConfig() {
  TrainConfig c;
  c.architecture = "resnet18";
  c.image_size = 32;
  c.batch_size = 4;
  c.num_workers = 1;
  c.threads = 1;
  c.epochs = 3;
  c.frozen_epochs = 1;
  c.lr = 1e-3;
  c.schedule = "warmup_cosine";
  c.warmup_epochs = 0.5;
  c.augmentation = "light";
  c.patience = 0;
  c.progress_interval_s = 1e9;
  return c;
}

std::vector<torch::Tensor> Weights(models::Classifier& m) {
  std::vector<torch::Tensor> w;
  for (const auto& p : m.parameters()) w.push_back(p.detach().clone());
  for (const auto& b : m.buffers()) w.push_back(b.detach().clone());
  return w;
}

void ExpectIdentical(const std::vector<torch::Tensor>& a, const std::vector<torch::Tensor>& b) {
  ASSERT_EQ(a.size(), b.size());
  for (size_t i = 0; i < a.size(); ++i) {
    ASSERT_TRUE(torch::equal(a[i], b[i])) << "tensor " << i << " differs, max diff "
                                          << (a[i].to(torch::kDouble) - b[i].to(torch::kDouble)).abs().max().item<double>();
  }
}

TrainContext Context(const std::string& dir) {
  TrainContext ctx;
  ctx.output_dir = dir;
  ctx.log_progress = false;
  return ctx;
}

TEST(TrainerTest, SameSeedGivesIdenticalWeightsAndWritesTheRun) {
  const auto samples = FixtureSamples();
  TempDir a, b;
  auto ra = Train(TinyConfig(), samples, samples, Context(a.path()));
  ASSERT_TRUE(ra.ok()) << ra.status();
  auto rb = Train(TinyConfig(), samples, samples, Context(b.path()));
  ASSERT_TRUE(rb.ok()) << rb.status();
  ExpectIdentical(Weights(*ra->model), Weights(*rb->model));
  EXPECT_EQ(ra->epochs_run, 3);
  ASSERT_EQ(ra->history.size(), 3u);
  EXPECT_EQ(ra->history[0].phase, "frozen");
  EXPECT_EQ(ra->history[2].phase, "finetune");
  EXPECT_TRUE(ra->history[0].val_metrics.contains("balanced_accuracy"));
  // The run's files.
  for (const char* f : {"config.json", "train_log.jsonl", "training_curves.png",
                        "checkpoints/last/model.pt", "checkpoints/last/optimizer.pt",
                        "checkpoints/last/state.json", "checkpoints/best/model.pt"}) {
    EXPECT_TRUE(std::filesystem::exists(a.Join(f))) << f;
  }
  // Only `last` is resumed from: the best checkpoint keeps no optimizer state (twice the
  // model's bytes for Adam).
  EXPECT_FALSE(std::filesystem::exists(a.Join("checkpoints/best/optimizer.pt")));
  std::ifstream log(a.Join("train_log.jsonl"));
  int lines = 0;
  for (std::string line; std::getline(log, line);) {
    EXPECT_TRUE(nlohmann::json::parse(line).contains("val_metrics"));
    ++lines;
  }
  EXPECT_EQ(lines, 3);
  auto saved = TrainConfig::FromJson(nlohmann::json::parse(std::ifstream(a.Join("config.json"))));
  ASSERT_TRUE(saved.ok());
  EXPECT_EQ(saved->ToJson(), TinyConfig().ToJson());
  // A different seed trains differently.
  TempDir c;
  TrainConfig other = TinyConfig();
  other.seed = 7;
  auto rc = Train(other, samples, samples, Context(c.path()));
  ASSERT_TRUE(rc.ok());
  EXPECT_FALSE(torch::equal(Weights(*ra->model)[0], Weights(*rc->model)[0]));
}

TEST(TrainerTest, FrozenPhaseTrainsOnlyTheHead) {
  const auto samples = FixtureSamples();
  TrainConfig c = TinyConfig();
  c.epochs = 1;
  c.frozen_epochs = 1;
  torch::manual_seed(c.seed);
  models::ModelOptions mo;
  mo.image_size = c.image_size;
  auto model = models::CreateModel("resnet18", mo);
  ASSERT_TRUE(model.ok());
  const auto before = Weights(**model);
  TempDir dir;
  TrainContext ctx = Context(dir.path());
  ctx.model = *model;
  ASSERT_TRUE(Train(c, samples, samples, ctx).ok());
  const auto named = (*model)->named_parameters();
  const auto after = Weights(**model);
  for (size_t i = 0; i < named.size(); ++i) {
    const bool head = named[i].key() == "fc.weight" || named[i].key() == "fc.bias";
    EXPECT_EQ(torch::equal(before[i], after[i]), !head) << named[i].key();
  }
  // BatchNorm statistics of the frozen backbone did not move either.
  for (size_t i = named.size(); i < before.size(); ++i) EXPECT_TRUE(torch::equal(before[i], after[i]));
}

class StopAfter : public ProgressListener {
 public:
  explicit StopAfter(int epochs) : epochs_(epochs) {}
  void OnEpoch(const EpochRecord&) override { ++seen_; }
  bool ShouldStop() override { return seen_ >= epochs_; }
  int seen() const { return seen_; }

 private:
  int epochs_, seen_ = 0;
};

// Trains `c` into `dir` and stops it after `epochs` epochs, as an interrupted run ends
// (Cancelled, its checkpoints kept for a resume). Call under ASSERT_NO_FATAL_FAILURE.
void TrainInterrupted(const TrainConfig& c, const std::vector<data::Sample>& train,
                      const std::vector<data::Sample>& val, const std::string& dir,
                      int epochs = 2) {
  StopAfter stop(epochs);
  TrainContext ctx = Context(dir);
  ctx.listener = &stop;
  ASSERT_THAT(Train(c, train, val, ctx), StatusIs(absl::StatusCode::kCancelled,
                                                  HasSubstr(absl::StrCat("after epoch ", epochs))));
}

TEST(TrainerTest, ResumeEndsWhereTheUninterruptedRunEnds) {
  const auto samples = FixtureSamples();
  TrainConfig c = TinyConfig();
  c.epochs = 4;
  c.ema_decay = 0.9;
  // Batch mixing too: its draws must depend on the seed, epoch and step only.
  c.mixup_alpha = 0.4;
  c.cutmix_alpha = 1.0;
  TempDir full_dir, split_dir;
  auto full = Train(c, samples, samples, Context(full_dir.path()));
  ASSERT_TRUE(full.ok()) << full.status();

  // Interrupted in the fine-tuning phase.
  ASSERT_NO_FATAL_FAILURE(TrainInterrupted(c, samples, samples, split_dir.path()));
  TrainContext second = Context(split_dir.path());
  second.resume = true;
  auto resumed = Train(c, samples, samples, second);
  ASSERT_TRUE(resumed.ok()) << resumed.status();
  EXPECT_EQ(resumed->history.size(), 4u);
  ExpectIdentical(Weights(*full->model), Weights(*resumed->model));
  // The average carries on from the checkpoint too (it once restarted from the
  // resumed weights: torch::load appended the saved average to the fresh one).
  std::vector<torch::Tensor> full_ema, resumed_ema;
  torch::load(full_ema, full->last_checkpoint + "/ema.pt");
  torch::load(resumed_ema, resumed->last_checkpoint + "/ema.pt");
  ExpectIdentical(full_ema, resumed_ema);
}

// A run stopped between the two renames that put a checkpoint in place where the filesystem
// cannot exchange names (ReplaceDirectory) finds `last` moved aside to last.old: the
// resume takes it back and trains only the epochs left.
TEST(TrainerTest, AResumeTakesBackACheckpointMovedAside) {
  const auto samples = FixtureSamples();
  TrainConfig c = TinyConfig();
  c.epochs = 3;
  TempDir dir;
  ASSERT_NO_FATAL_FAILURE(TrainInterrupted(c, samples, samples, dir.path()));
  std::filesystem::rename(dir.Join("checkpoints/last"), dir.Join("checkpoints/last.old"));
  StopAfter count(100);
  TrainContext second = Context(dir.path());
  second.resume = true;
  second.listener = &count;
  auto resumed = Train(c, samples, samples, second);
  ASSERT_TRUE(resumed.ok()) << resumed.status();
  EXPECT_EQ(count.seen(), 1) << "the resume trained from the start";
  EXPECT_EQ(resumed->history.size(), 3u);
  EXPECT_FALSE(std::filesystem::exists(dir.Join("checkpoints/last.old")));
}

// Files larger than `bytes` cannot be written while it lives (write() fails with EFBIG, as
// it fails with ENOSPC on a full disk).
class FileSizeLimit {
 public:
  explicit FileSizeLimit(rlim_t bytes) {
    old_handler_ = std::signal(SIGXFSZ, SIG_IGN);
    EXPECT_EQ(getrlimit(RLIMIT_FSIZE, &old_), 0);
    rlimit limited = old_;
    limited.rlim_cur = bytes;
    EXPECT_EQ(setrlimit(RLIMIT_FSIZE, &limited), 0);
  }
  ~FileSizeLimit() {
    setrlimit(RLIMIT_FSIZE, &old_);
    std::signal(SIGXFSZ, old_handler_);
  }

 private:
  rlimit old_{};
  void (*old_handler_)(int) = nullptr;
};

// LibTorch's zip writer throws from a destructor when a write fails, which aborted the
// trainer on a full disk (CI). Now the run ends with the errno, and no half-written
// checkpoint keeps the space.
TEST(TrainerTest, ACheckpointThatCannotBeWrittenIsAnErrorNotACrash) {
  const auto samples = FixtureSamples();
  TrainConfig c = TinyConfig();
  c.epochs = 1;
  TempDir dir;
  absl::StatusOr<TrainResult> result;
  {
    FileSizeLimit limit(1 << 20);  // The config and the log fit; ResNet-18's 45 MB do not.
    result = Train(c, samples, samples, Context(dir.path()));
  }
  EXPECT_THAT(result.status(),
              StatusIs(absl::StatusCode::kInternal,
                       AllOf(HasSubstr("saving checkpoint"), HasSubstr("File too large"))));
  EXPECT_FALSE(std::filesystem::exists(dir.Join("checkpoints/last.tmp")));
  EXPECT_FALSE(std::filesystem::exists(dir.Join("checkpoints/last")));
}

// --resume continues the recipe the run started with: a key that shapes the weights may
// not change (the message names each), one that only says how the run goes may.
TEST(TrainerTest, AResumeRefusesAnotherRecipe) {
  const auto samples = FixtureSamples();
  TrainConfig c = TinyConfig();
  TempDir dir;
  ASSERT_NO_FATAL_FAILURE(TrainInterrupted(c, samples, samples, dir.path()));
  TrainContext again = Context(dir.path());
  again.resume = true;
  TrainConfig other = c;
  other.lr = 3e-4;
  other.epochs = 5;
  EXPECT_THAT(Train(other, samples, samples, again).status(),
              StatusIs(absl::StatusCode::kFailedPrecondition,
                       AllOf(HasSubstr("resuming with another recipe"),
                             HasSubstr("lr 0.001 -> 0.0003"), HasSubstr("epochs 3 -> 5"))));
  TrainConfig how = c;
  how.threads = 2;
  how.num_workers = 0;
  how.progress_interval_s = 5;
  how.select_epoch = "last";
  auto resumed = Train(how, samples, samples, again);
  ASSERT_TRUE(resumed.ok()) << resumed.status();
  EXPECT_EQ(resumed->history.size(), 3u);
}

// A damaged optimizer state (a copy cut short) stops the resume with the file's name.
TEST(TrainerTest, ResumingFromADamagedOptimizerStateIsAnError) {
  const auto samples = FixtureSamples();
  TrainConfig c = TinyConfig();
  TempDir dir;
  // Stopped in the fine-tuning phase, whose optimizer the resume loads.
  ASSERT_NO_FATAL_FAILURE(TrainInterrupted(c, samples, samples, dir.path()));
  const std::string state = dir.Join("checkpoints/last/optimizer.pt");
  std::filesystem::resize_file(state, std::filesystem::file_size(state) / 2);
  TrainContext second = Context(dir.path());
  second.resume = true;
  EXPECT_THAT(Train(c, samples, samples, second).status(),
              StatusIs(absl::StatusCode::kDataLoss, HasSubstr("optimizer.pt")));
}

// select_epoch "last": the checkpoint handed on is the last epoch's (its EMA weights),
// whatever epoch the monitor preferred, also when a finished run is resumed with the key
// switched; the monitor's best is still reported.
TEST(TrainerTest, SelectEpochLastHandsOnTheLastEpochsAverage) {
  const auto samples = FixtureSamples();
  TrainConfig c = TinyConfig();
  c.epochs = 4;
  c.ema_decay = 0.9;
  // The validation image count never improves: the monitor's best is the first epoch on
  // every machine, so "best" hands on another checkpoint than "last".
  c.monitor = "n";
  const auto selected_weights = [](const TrainResult& r) {
    auto model = models::CreateModel("resnet18", {.num_classes = 7, .image_size = 32});
    EXPECT_TRUE(model.ok());
    EXPECT_TRUE(LoadTrainCheckpoint(**model, r.best_checkpoint).ok());
    std::vector<torch::Tensor> state = (*model)->parameters();
    for (const auto& b : (*model)->buffers()) state.push_back(b);
    return state;
  };
  std::vector<torch::Tensor> average;
  for (const std::string select : {"last", "best"}) {
    SCOPED_TRACE(select);
    c.select_epoch = select;
    TempDir dir;
    auto r = Train(c, samples, samples, Context(dir.path()));
    ASSERT_TRUE(r.ok()) << r.status();
    EXPECT_EQ(r->monitor_best_epoch, 0);
    EXPECT_EQ(r->best_epoch, select == "last" ? 3 : 0);
    average.clear();
    torch::load(average, r->last_checkpoint + "/ema.pt");
    if (select == "last") {
      ExpectIdentical(selected_weights(*r), average);
      continue;
    }
    EXPECT_FALSE(torch::equal(selected_weights(*r)[0], average[0]));
    // The finished run resumed with "last": nothing trains, the last epoch is handed on.
    c.select_epoch = "last";
    TrainContext again = Context(dir.path());
    again.resume = true;
    auto resumed = Train(c, samples, samples, again);
    ASSERT_TRUE(resumed.ok()) << resumed.status();
    EXPECT_EQ(resumed->best_epoch, 3);
    EXPECT_EQ(resumed->history.size(), 4u);
    ExpectIdentical(selected_weights(*resumed), average);
  }
}

// A model trained on every image to ship has no validation images: each epoch is the
// model so far, patience cannot stop it, the log says there was no validation (null,
// not a made-up loss) and an interrupted run resumes from that log.
TEST(TrainerTest, WithoutValidationTheLastEpochIsTheModel) {
  const auto samples = FixtureSamples();
  TrainConfig c = TinyConfig();
  c.epochs = 3;
  c.patience = 1;
  TempDir full_dir, split_dir;
  auto full = Train(c, samples, {}, Context(full_dir.path()));
  ASSERT_TRUE(full.ok()) << full.status();
  EXPECT_EQ(full->epochs_run, 3);
  EXPECT_FALSE(full->early_stopped);
  EXPECT_EQ(full->best_epoch, 2);
  for (const EpochRecord& r : full->history) {
    EXPECT_TRUE(r.best);
    EXPECT_TRUE(r.val_metrics.empty());
  }
  models::ModelOptions mo;
  mo.image_size = c.image_size;
  auto best = models::CreateModel(c.architecture, mo);
  ASSERT_TRUE(best.ok());
  ASSERT_TRUE(LoadTrainCheckpoint(**best, full->best_checkpoint).ok());
  ExpectIdentical(Weights(*full->model), Weights(**best));
  std::ifstream log(full_dir.Join("train_log.jsonl"));
  std::string line;
  ASSERT_TRUE(std::getline(log, line));
  EXPECT_TRUE(nlohmann::json::parse(line)["val_loss"].is_null()) << line;
  EXPECT_TRUE(std::filesystem::exists(full_dir.Join("training_curves.png")));

  ASSERT_NO_FATAL_FAILURE(TrainInterrupted(c, samples, {}, split_dir.path()));
  TrainContext second = Context(split_dir.path());
  second.resume = true;
  auto resumed = Train(c, samples, {}, second);
  ASSERT_TRUE(resumed.ok()) << resumed.status();
  EXPECT_EQ(resumed->history.size(), 3u);
  ExpectIdentical(Weights(*full->model), Weights(*resumed->model));
  EXPECT_THAT(Train(c, {}, samples, Context(split_dir.path())),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("training samples")));
}

// The best checkpoint of an EMA run holds the averaged state, batch norm's running
// statistics included: with a decay so close to 1 that the average never leaves the
// initial model, the checkpoint's statistics are still the initial ones (mean 0,
// variance 1) while the live model's have moved.
TEST(TrainerTest, EmaAveragesBatchNormStatisticsWithTheWeights) {
  const auto samples = FixtureSamples();
  TrainConfig c = TinyConfig();
  c.epochs = 2;
  c.ema_decay = 1.0 - 1e-12;
  TempDir dir;
  auto r = Train(c, samples, samples, Context(dir.path()));
  ASSERT_TRUE(r.ok()) << r.status();
  auto live = r->model->named_buffers();
  ASSERT_TRUE(live.contains("bn1.running_var")) << "buffer names changed";
  EXPECT_GT((live["bn1.running_var"] - 1).abs().max().item<double>(), 1e-3);

  models::ModelOptions mo;
  mo.image_size = c.image_size;
  auto saved = models::CreateModel(c.architecture, mo);
  ASSERT_TRUE(saved.ok()) << saved.status();
  ASSERT_TRUE(LoadTrainCheckpoint(**saved, r->best_checkpoint).ok());
  for (const auto& b : (*saved)->named_buffers()) {
    if (absl::EndsWith(b.key(), "running_mean")) {
      EXPECT_LT(b.value().abs().max().item<double>(), 1e-6) << b.key();
    } else if (absl::EndsWith(b.key(), "running_var")) {
      EXPECT_LT((b.value() - 1).abs().max().item<double>(), 1e-6) << b.key();
    }
  }
}

// bf16 autocast on the CPU (fp32 master weights; ResNet channels-last): trains, keeps
// every parameter fp32, says how it ran, and gives the same weights for the same seed.
TEST(TrainerTest, Bf16AutocastTrainsWithFp32MasterWeights) {
  const auto samples = FixtureSamples();
  TrainConfig c = TinyConfig();
  c.precision = "bf16";
  c.epochs = 2;
  c.frozen_epochs = 0;
  TempDir a, b;
  auto ra = Train(c, samples, samples, Context(a.path()));
  ASSERT_TRUE(ra.ok()) << ra.status();
  EXPECT_EQ(ra->numerics, "bf16 autocast, channels-last");
  EXPECT_EQ(ra->numerics_reason, "bf16 (requested)");
  for (const auto& p : ra->model->named_parameters()) {
    EXPECT_EQ(p.value().scalar_type(), torch::kFloat32) << p.key();
  }
  for (const auto& r : ra->history) EXPECT_TRUE(std::isfinite(r.train_loss));
  // Channels-last weights, gradients through the bf16 casts, 1x1 downsample convs
  // (whose size-1 dimensions may carry other strides): still the fused pass.
  for (const auto& r : ra->history) EXPECT_EQ(r.optimizer_step, "fused AdamW");
  auto rb = Train(c, samples, samples, Context(b.path()));
  ASSERT_TRUE(rb.ok()) << rb.status();
  const auto wa = Weights(*ra->model), wb = Weights(*rb->model);
  ASSERT_EQ(wa.size(), wb.size());
  for (size_t i = 0; i < wa.size(); ++i) EXPECT_TRUE(torch::equal(wa[i], wb[i])) << i;
  // fp32 says so too.
  c.precision = "fp32";
  c.epochs = 1;
  TempDir d;
  auto rf = Train(c, samples, samples, Context(d.path()));
  ASSERT_TRUE(rf.ok()) << rf.status();
  EXPECT_EQ(rf->numerics, "fp32");
}

// 13 images in batches of 4 would leave a last batch of one image, which batch norm
// cannot train on: it is dropped rather than failing the run.
TEST(TrainerTest, ALastBatchOfOneImageIsDropped) {
  auto samples = FixtureSamples();
  samples.pop_back();
  ASSERT_EQ(samples.size() % 4, 1u);
  TrainConfig c = TinyConfig();
  c.precision = "fp32";
  c.epochs = 1;
  c.frozen_epochs = 0;
  TempDir dir;
  auto r = Train(c, samples, samples, Context(dir.path()));
  ASSERT_TRUE(r.ok()) << r.status();
  ASSERT_EQ(r->history.size(), 1u);
  EXPECT_TRUE(std::isfinite(r->history[0].train_loss));
}

// samples_per_epoch fixes an epoch's draws (and steps) whatever the pool's size; the
// steps on CPU fp32 take the fused AdamW pass (a layout that made it fall back to
// LibTorch's step would show here).
TEST(TrainerTest, SamplesPerEpochSetsTheEpochAndStepsAreFused) {
  const auto samples = FixtureSamples();
  ASSERT_EQ(samples.size(), 14u);
  TrainConfig c = TinyConfig();
  c.precision = "fp32";
  c.epochs = 2;
  c.frozen_epochs = 0;
  c.sampler = "balanced";
  c.samples_per_epoch = 10;
  TempDir dir;
  auto r = Train(c, samples, {}, Context(dir.path()));
  ASSERT_TRUE(r.ok()) << r.status();
  ASSERT_EQ(r->history.size(), 2u);
  for (const auto& e : r->history) {
    EXPECT_EQ(e.images, 10);
    EXPECT_EQ(e.optimizer_step, "fused AdamW");
  }
  c.samples_per_epoch = 0;  // The pool's size.
  TempDir dir2;
  r = Train(c, samples, {}, Context(dir2.path()));
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->history.back().images, 14);
  c.sampler = "shuffle";
  c.samples_per_epoch = 10;
  EXPECT_THAT(
      Train(c, samples, {}, Context(dir2.path())).status(),
      StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("samples_per_epoch needs sampler")));
}

TEST(TrainerTest, TheDatasLabelSetSizesTheModel) {
  // A 3-class model: labels remapped onto {0, 1, 2}; the metrics are per the 3 classes.
  auto samples = FixtureSamples();
  for (auto& s : samples) s.label %= 3;
  TrainConfig c = TinyConfig();
  c.precision = "fp32";
  c.epochs = 1;
  c.frozen_epochs = 0;
  TempDir dir;
  TrainContext ctx = Context(dir.path());
  ctx.classes = *LabelSet::Create({"benign", "melanoma", "other"}, std::vector<std::string>{"melanoma"});
  auto r = Train(c, samples, samples, ctx);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->model->num_classes(), 3);
  EXPECT_EQ(r->history[0].val_metrics["labels"], nlohmann::json({"benign", "melanoma", "other"}));
  EXPECT_EQ(r->history[0].val_metrics["malignant_classes"], nlohmann::json({"melanoma"}));
  EXPECT_TRUE(r->history[0].val_metrics["melanoma_recall"].is_null()) << "no 'mel' class";
  auto pred = PredictSamples(*r->model, samples, c.Preprocess(), "cpu", 4, 1);
  ASSERT_TRUE(pred.ok()) << pred.status();
  EXPECT_EQ(pred->logits[0].size(), 3u);
  // A label outside the set is an error, not a crash.
  samples[0].label = 3;
  EXPECT_THAT(Train(c, samples, samples, ctx),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("outside the 3 classes")));
}

// Mixup / CutMix change the updates (mix_prob 0 does not), and a mixed run repeats.
TEST(TrainerTest, BatchMixingTrainsOnMixedBatchesReproducibly) {
  const auto samples = FixtureSamples();
  TrainConfig plain = TinyConfig();
  plain.epochs = 2;
  TrainConfig mixed = plain;
  mixed.cutmix_alpha = 1.0;
  mixed.mixup_alpha = 0.4;
  TrainConfig never = mixed;
  never.mix_prob = 0;
  TempDir a, b, c, d;
  auto rp = Train(plain, samples, samples, Context(a.path()));
  auto rm = Train(mixed, samples, samples, Context(b.path()));
  auto rm2 = Train(mixed, samples, samples, Context(c.path()));
  auto rn = Train(never, samples, samples, Context(d.path()));
  ASSERT_TRUE(rp.ok() && rm.ok() && rm2.ok() && rn.ok());
  ExpectIdentical(Weights(*rp->model), Weights(*rn->model));
  ExpectIdentical(Weights(*rm->model), Weights(*rm2->model));
  EXPECT_FALSE(torch::equal(Weights(*rp->model)[0], Weights(*rm->model)[0]));
}

// Teacher answers for `samples` as `skinlesion cv` writes them: every image answered
// `probs`, its label as the data has it.
std::string TeacherAnswers(const std::vector<data::Sample>& samples, const eval::Probs& probs,
                           const std::string& path) {
  eval::RoundAnswers a;
  a.views = "none";
  a.ood_method = "energy";
  for (const auto& s : samples) {
    a.image_ids.push_back(s.image_id);
    a.labels.push_back(s.label);
    a.probs.push_back(probs);
    a.ood_units.push_back(0);
  }
  auto text = eval::RoundAnswersToCsv(a, LabelSet::Ham10000());
  EXPECT_TRUE(text.ok()) << text.status();
  std::ofstream(path) << *text;
  return path;
}

double MeanProbability(models::Classifier& model, const std::vector<data::Sample>& samples,
                       const TrainConfig& c, int k) {
  auto pred = PredictSamples(model, samples, c.Preprocess(), "cpu", 4, 1);
  EXPECT_TRUE(pred.ok()) << pred.status();
  double sum = 0;
  for (const auto& logits : pred->logits) {
    sum += torch::softmax(torch::tensor(logits), 0)[k].item<double>();
  }
  return sum / pred->logits.size();
}

// Distillation: a student trained only on a teacher that calls every image vasc (class 6)
// learns to say vasc, which the labels alone never teach it; answers that miss a training
// image or label it otherwise are refused before training.
TEST(TrainerTest, DistillationLearnsTheTeachersAnswers) {
  const auto samples = FixtureSamples();
  TempDir dir;
  TrainConfig c = TinyConfig();
  c.frozen_epochs = 0;
  c.epochs = 4;
  c.lr = 3e-3;
  c.augmentation = "none";
  c.label_smoothing = 0;
  c.mixup_alpha = 0.4;  // Teacher answers mixed with the images.
  auto hard = Train(c, samples, samples, Context(dir.Join("hard")));
  ASSERT_TRUE(hard.ok()) << hard.status();
  c.distill_answers =
      TeacherAnswers(samples, {0.01, 0.01, 0.01, 0.01, 0.01, 0.01, 0.94}, dir.Join("a.csv"));
  c.distill_weight = 1.0;
  c.distill_temperature = 1.0;
  auto soft = Train(c, samples, samples, Context(dir.Join("soft")));
  ASSERT_TRUE(soft.ok()) << soft.status();
  for (const auto& e : soft->history) EXPECT_TRUE(std::isfinite(e.train_loss));
  const double p_hard = MeanProbability(*hard->model, samples, c, 6);
  const double p_soft = MeanProbability(*soft->model, samples, c, 6);
  EXPECT_GT(p_soft, 0.5) << "hard labels only: " << p_hard;
  EXPECT_GT(p_soft, p_hard + 0.2);
  const auto config = nlohmann::json::parse(std::ifstream(dir.Join("soft/config.json")));
  EXPECT_EQ(config["distill_answers"], c.distill_answers);

  // A second file answers the same images akiec (class 0): the mean of the two teaches,
  // half akiec, half vasc.
  c.distill_answers +=
      ":" + TeacherAnswers(samples, {0.94, 0.01, 0.01, 0.01, 0.01, 0.01, 0.01}, dir.Join("b.csv"));
  auto two = Train(c, samples, samples, Context(dir.Join("two")));
  ASSERT_TRUE(two.ok()) << two.status();
  const double p_akiec = MeanProbability(*two->model, samples, c, 0);
  const double p_vasc = MeanProbability(*two->model, samples, c, 6);
  EXPECT_GT(p_akiec, 0.25);
  EXPECT_GT(p_vasc, 0.25);
  EXPECT_GT(p_akiec + p_vasc, 0.7);
  c.epochs = 1;

  std::vector<data::Sample> fewer(samples.begin() + 1, samples.end());
  c.distill_answers =
      TeacherAnswers(fewer, {0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.4}, dir.Join("fewer.csv"));
  EXPECT_THAT(
      Train(c, samples, samples, Context(dir.Join("fewer"))).status(),
      StatusIs(absl::StatusCode::kInvalidArgument,
               AllOf(HasSubstr("no teacher answer for 1 of"), HasSubstr(samples[0].image_id))));
  std::vector<data::Sample> relabelled = samples;
  relabelled[2].label = (relabelled[2].label + 1) % 7;
  c.distill_answers =
      TeacherAnswers(relabelled, {0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.4}, dir.Join("other.csv"));
  EXPECT_THAT(Train(c, samples, samples, Context(dir.Join("other"))).status(),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       AllOf(HasSubstr("carry another label"), HasSubstr(samples[2].image_id))));
  c.distill_answers = dir.Join("absent.csv");
  EXPECT_THAT(Train(c, samples, samples, Context(dir.Join("absent"))).status(),
              StatusIs(absl::StatusCode::kNotFound, HasSubstr("absent.csv")));
}

TEST(TrainerTest, InvalidConfigListsEveryProblem) {
  TrainConfig c = TinyConfig();
  c.epochs = 0;
  c.optimizer = "adam";
  c.loss = "mse";
  c.cutmix_alpha = -1;
  c.mix_prob = 2;
  EXPECT_THAT(
      c.Validate(),
      StatusIs(absl::StatusCode::kInvalidArgument,
               AllOf(HasSubstr("epochs must be >= 1"), HasSubstr("unknown optimizer 'adam'"),
                     HasSubstr("unknown loss 'mse'"), HasSubstr("cutmix_alpha must be in [0, 10]"),
                     HasSubstr("mix_prob must be in [0, 1]"))));
  EXPECT_THAT(TrainConfig::FromJson({{"epochs", "ten"}, {"lrr", 1}}),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       AllOf(HasSubstr("'epochs' has the wrong type"), HasSubstr("unknown key 'lrr'"))));
  TempDir dir;
  c = TinyConfig();
  c.architecture = "resnet9000";
  EXPECT_THAT(Train(c, FixtureSamples(), FixtureSamples(), Context(dir.path())),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("resnet9000")));
}

TEST(DistributedTest, EnvParsing) {
  std::map<std::string, std::string> env = {{"MASTER_ADDR", "10.0.0.1"}, {"MASTER_PORT", "29501"},
                                            {"RANK", "1"}, {"WORLD_SIZE", "4"}};
  auto get = [&](const char* k) -> const char* {
    auto it = env.find(k);
    return it == env.end() ? nullptr : it->second.c_str();
  };
  auto o = DistributedOptionsFromEnv(get);
  ASSERT_TRUE(o.ok()) << o.status();
  EXPECT_EQ(o->master_addr, "10.0.0.1");
  EXPECT_EQ(o->master_port, 29501);
  EXPECT_EQ(o->rank, 1);
  EXPECT_EQ(o->world_size, 4);
  env["RANK"] = "4";
  EXPECT_THAT(DistributedOptionsFromEnv(get), StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("outside")));
  env["RANK"] = "x";
  EXPECT_THAT(DistributedOptionsFromEnv(get), StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("not an integer")));
  env.erase("WORLD_SIZE");
  EXPECT_THAT(DistributedOptionsFromEnv(get), StatusIs(absl::StatusCode::kNotFound, HasSubstr("WORLD_SIZE")));
}

// Two processes on loopback end with identical weights, equal to one process with
// the same global batch. ViT (LayerNorm, no BatchNorm) so the equality is exact
// up to float summation order.
TEST(DistributedTest, TwoRanksMatchSingleProcess) {
  auto samples = FixtureSamples();
  samples.resize(12);  // Whole global batches: the sharded sampler drops a partial one.
  TrainConfig c = TinyConfig();
  c.architecture = "vit_custom";
  c.augmentation = "none";  // Augmentation is keyed by the position in each rank's loader.
  c.frozen_epochs = 0;
  c.epochs = 2;
  c.batch_size = 4;
  c.label_smoothing = 0;
  // The data-parallel arithmetic is what is compared (1e-4): fp32 on every machine,
  // not `auto`'s bf16 where the CPU has it (two half batches round differently).
  c.precision = "fp32";
  auto make_model = [&] {
    torch::manual_seed(c.seed);
    models::ModelOptions mo;
    mo.image_size = c.image_size;
    mo.vit = {.patch_size = 8, .hidden_dim = 32, .num_layers = 2, .num_heads = 2, .mlp_dim = 64};
    return *models::CreateModel("vit_custom", mo);
  };
  TempDir single_dir, ddp_dir;
  TrainContext single_ctx = Context(single_dir.path());
  single_ctx.model = make_model();
  auto single = Train(c, samples, samples, single_ctx);
  ASSERT_TRUE(single.ok()) << single.status();
  const auto expected = Weights(*single->model);

  const int port = 29000 + static_cast<int>(::getpid() % 1000);
  std::vector<pid_t> children;
  for (int rank = 0; rank < 2; ++rank) {
    const pid_t pid = ::fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {
      DistributedOptions o;
      o.master_port = port;
      o.rank = rank;
      o.world_size = 2;
      o.timeout_s = 60;
      auto reducer = CreateProcessGroupReducer(o);
      if (!reducer.ok()) ::_exit(10);
      TrainContext ctx = Context(ddp_dir.Join("rank" + std::to_string(rank)));
      ctx.model = make_model();
      ctx.reducer = reducer->get();
      auto r = Train(c, samples, samples, ctx);
      if (!r.ok()) ::_exit(11);
      torch::save(Weights(*r->model), ddp_dir.Join("weights" + std::to_string(rank) + ".pt"));
      ::_exit(0);
    }
    children.push_back(pid);
  }
  for (pid_t pid : children) {
    int status = 0;
    ::waitpid(pid, &status, 0);
    ASSERT_TRUE(WIFEXITED(status)) << "rank crashed";
    ASSERT_EQ(WEXITSTATUS(status), 0);
  }
  std::vector<torch::Tensor> w0, w1;
  torch::load(w0, ddp_dir.Join("weights0.pt"));
  torch::load(w1, ddp_dir.Join("weights1.pt"));
  ExpectIdentical(w0, w1);
  ASSERT_EQ(w0.size(), expected.size());
  bool moved = false;
  for (size_t i = 0; i < w0.size(); ++i) {
    EXPECT_TRUE(torch::allclose(w0[i], expected[i], /*rtol=*/1e-4, /*atol=*/1e-5)) << "tensor " << i;
  }
  const auto initial = Weights(*make_model());
  for (size_t i = 0; i < w0.size(); ++i) moved |= !torch::equal(w0[i], initial[i]);
  EXPECT_TRUE(moved);
}

}  // namespace
}  // namespace skinlesion::train
