#include "skinlesion/train/config.h"

#include <filesystem>
#include <fstream>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "skinlesion/testing/testing.h"

namespace skinlesion::train {
namespace {

using ::testing::AllOf;
using ::testing::HasSubstr;
using ::skinlesion::testing::StatusIs;

TEST(TrainChoicesTest, TheDefaultsParse) {
  auto choices = TrainConfig().Choices();
  ASSERT_TRUE(choices.ok()) << choices.status();
  EXPECT_EQ(choices->sampler, SamplerKind::kShuffle);
  EXPECT_EQ(choices->class_weighting, data::ClassWeighting::kSqrtInverseFrequency);
  EXPECT_EQ(choices->optimizer, OptimizerKind::kAdamW);
  EXPECT_EQ(choices->schedule, ScheduleOptions::Kind::kCosineWarmRestarts);
  EXPECT_EQ(choices->loss, LossKind::kWeightedCrossEntropy);
  EXPECT_EQ(choices->precision, TrainPrecision::kAuto);
}

TEST(TrainChoicesTest, EveryStringBecomesItsEnum) {
  TrainConfig c;
  c.sampler = "balanced";
  c.class_weighting = "inverse";
  c.optimizer = "sgd";
  c.schedule = "warmup_cosine";
  c.loss = "logit_adjusted";
  c.precision = "bf16";
  auto choices = c.Choices();
  ASSERT_TRUE(choices.ok()) << choices.status();
  EXPECT_EQ(choices->sampler, SamplerKind::kBalanced);
  EXPECT_EQ(choices->class_weighting, data::ClassWeighting::kInverseFrequency);
  EXPECT_EQ(choices->optimizer, OptimizerKind::kSgd);
  EXPECT_EQ(choices->schedule, ScheduleOptions::Kind::kWarmupCosine);
  EXPECT_EQ(choices->loss, LossKind::kLogitAdjusted);
  EXPECT_EQ(choices->precision, TrainPrecision::kBf16);
  c.precision = "fp16";
  c.loss = "focal";
  EXPECT_EQ(c.Choices()->precision, TrainPrecision::kFp16);
  EXPECT_EQ(c.Choices()->loss, LossKind::kFocal);
  EXPECT_EQ(LossKindName(LossKind::kFocal), "focal");
}

TEST(TrainChoicesTest, EveryBadChoiceIsNamedWithTheAcceptedOnes) {
  TrainConfig c;
  c.sampler = "random";
  c.class_weighting = "log";
  c.optimizer = "adam";
  c.schedule = "linear";
  c.loss = "mse";
  c.precision = "int8";
  c.epochs = 0;
  c.recall_target = 1.5;
  c.referral_confidence = 1;
  c.samples_per_epoch = -1;
  c.augmentation = "heavy";
  const absl::Status s = c.Validate();
  EXPECT_THAT(
      s,
      StatusIs(absl::StatusCode::kInvalidArgument,
               AllOf(HasSubstr("unknown sampler 'random' (expected shuffle, balanced)"),
                     HasSubstr("unknown class_weighting 'log' (expected inverse, sqrt)"),
                     HasSubstr("unknown optimizer 'adam' (expected adamw, sgd)"),
                     HasSubstr("unknown schedule 'linear'"), HasSubstr("unknown loss 'mse'"),
                     HasSubstr("unknown precision 'int8' (expected auto, fp32, bf16, fp16)"),
                     HasSubstr("epochs must be >= 1"), HasSubstr("recall_target must be in [0, 1]"),
                     HasSubstr("referral_confidence must be in [0, 1)"),
                     HasSubstr("samples_per_epoch must be >= 0"),
                     HasSubstr("unknown augmentation 'heavy' (expected none, light, medical, "
                               "medical_illuminant)"))));
  EXPECT_EQ(c.Choices().status(), s);
  TrainConfig no_class;
  no_class.recall_target_class = "";
  EXPECT_THAT(no_class.Validate(), StatusIs(absl::StatusCode::kInvalidArgument,
                                            HasSubstr("recall_target_class is empty")));
  no_class.recall_target = 0;
  EXPECT_TRUE(no_class.Validate().ok());
}

TEST(TrainConfigTest, SelectEpochIsBestOrLastAndLastRunsEveryEpoch) {
  TrainConfig c;
  c.select_epoch = "median";
  EXPECT_THAT(c.Validate(), StatusIs(absl::StatusCode::kInvalidArgument,
                                     HasSubstr("select_epoch 'median' is not best or last")));
  c.select_epoch = "last";  // The default patience (8) would stop by the monitor.
  EXPECT_THAT(c.Validate(),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("select_epoch last runs every epoch: set patience 0")));
  c.patience = 0;
  EXPECT_TRUE(c.Validate().ok());
  auto round_trip = TrainConfig::FromJson(c.ToJson());
  ASSERT_TRUE(round_trip.ok()) << round_trip.status();
  EXPECT_EQ(round_trip->select_epoch, "last");
}

// The evaluation and serving geometry: the centre crop by default, the whole image
// squashed with "resize"; anything else is named in the error.
TEST(TrainConfigTest, ResizeChoosesTheEvaluationGeometry) {
  TrainConfig c;
  EXPECT_EQ(c.Preprocess().mode, ResizeMode::kResizeShorterThenCenterCrop);
  auto parsed = TrainConfig::FromJson(nlohmann::json{{"resize", "resize"}});
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  EXPECT_TRUE(parsed->Validate().ok());
  EXPECT_EQ(parsed->Preprocess().mode, ResizeMode::kDirectResize);
  EXPECT_EQ(parsed->ToJson()["resize"], "resize");
  c.resize = "stretch";
  EXPECT_THAT(
      c.Validate(),
      StatusIs(absl::StatusCode::kInvalidArgument,
               HasSubstr("resize must be shorter_side_center_crop or resize, got 'stretch'")));
}

TEST(TrainConfigTest, DistillationKeysRoundTripAndAreChecked) {
  TrainConfig c;
  c.distill_answers = "a/out_of_fold_flips.csv:b/out_of_fold_flips.csv";
  c.distill_weight = 0.7;
  c.distill_temperature = 3;
  auto round_trip = TrainConfig::FromJson(c.ToJson());
  ASSERT_TRUE(round_trip.ok()) << round_trip.status();
  EXPECT_EQ(round_trip->distill_answers, c.distill_answers);
  EXPECT_EQ(round_trip->distill_weight, 0.7);
  EXPECT_EQ(round_trip->distill_temperature, 3);
  c.distill_weight = 1.5;
  c.distill_temperature = 0;
  EXPECT_THAT(c.Validate(), StatusIs(absl::StatusCode::kInvalidArgument,
                                     AllOf(HasSubstr("distill_weight must be in [0, 1]"),
                                           HasSubstr("distill_temperature must be in (0, 20]"))));
}

// The recipes committed under configs/ (the bundled model's among them) stay valid
// as keys are added or renamed.
TEST(TrainConfigTest, EveryCommittedRecipeIsValid) {
  int checked = 0;
  for (const auto& entry : std::filesystem::directory_iterator(testing::SourcePath("configs"))) {
    if (entry.path().extension() != ".json") continue;
    std::ifstream in(entry.path());
    const auto j = nlohmann::json::parse(in, nullptr, /*allow_exceptions=*/false);
    ASSERT_FALSE(j.is_discarded()) << entry.path();
    const auto c = TrainConfig::FromJson(j);
    ASSERT_TRUE(c.ok()) << entry.path() << ": " << c.status();
    EXPECT_TRUE(c->Validate().ok()) << entry.path() << ": " << c->Validate();
    ++checked;
  }
  EXPECT_GE(checked, 5);
}

}  // namespace
}  // namespace skinlesion::train
