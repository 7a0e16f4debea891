#include "skinlesion/jobs/validate.h"

#include <filesystem>

#include "gtest/gtest.h"
#include "skinlesion/testing/testing.h"

namespace skinlesion::jobs {
namespace {

using ::skinlesion::testing::IsOk;
using ::skinlesion::testing::SourcePath;
using ::skinlesion::testing::StatusIs;
using ::skinlesion::testing::TempDir;
using ::testing::AllOf;
using ::testing::HasSubstr;

v1::TrainingConfig Good() {
  v1::TrainingConfig c;
  c.set_model_name("ham10000-test");
  c.set_architecture("resnet18");
  c.set_data_dir(SourcePath("tests/fixtures/ham10000/images"));
  c.set_metadata_file(SourcePath("tests/fixtures/ham10000/metadata_subset.csv"));
  c.set_image_size(32);
  c.set_epochs(2);
  c.set_batch_size(4);
  c.set_learning_rate(1e-3);
  c.set_extra_json(R"({"frozen_epochs": 1, "num_workers": 1, "threads": 1})");
  return c;
}

TEST(ValidateTest, AGoodConfigPasses) { EXPECT_THAT(ValidateTrainingConfig(Good()), IsOk()); }

TEST(ValidateTest, ListsEveryProblemAtOnce) {
  v1::TrainingConfig c = Good();
  c.set_model_name("../etc");
  c.set_architecture("resnet9000");
  c.set_data_dir("/no/such/data");
  c.set_metadata_file("");
  c.set_split_file("/no/such/split.csv");
  c.set_world_size(1000);
  c.set_epochs(-3);
  c.set_learning_rate(-1);
  c.set_extra_json(R"({"frozen_epochs": 1, "optimizer": "adam", "colour": "blue"})");
  EXPECT_THAT(
      ValidateTrainingConfig(c),
      StatusIs(absl::StatusCode::kInvalidArgument,
               AllOf(HasSubstr("model_name"), HasSubstr("unknown architecture 'resnet9000'"),
                     HasSubstr("data_dir /no/such/data is not a directory"),
                     HasSubstr("split_file /no/such/split.csv does not exist"),
                     HasSubstr("world_size must be in 0..64"), HasSubstr("epochs must be >= 1"),
                     HasSubstr("learning_rate must be > 0"), HasSubstr("unknown key 'colour'"),
                     HasSubstr("unknown optimizer 'adam'"))));
}

TEST(ValidateTest, DataFolderIsHam10000OrClassFoldersOrHasALabelsCsv) {
  TempDir dir;
  v1::TrainingConfig c = Good();
  c.set_data_dir(dir.path());
  c.set_metadata_file("");
  c.set_split_file("");
  EXPECT_THAT(ValidateTrainingConfig(c),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("no HAM10000_metadata.csv and no class subfolders")));
  std::filesystem::create_directories(dir.Join("melanoma"));
  EXPECT_THAT(ValidateTrainingConfig(c), IsOk());
  c.set_metadata_file(dir.Join("labels.csv"));
  EXPECT_THAT(ValidateTrainingConfig(c),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("labels.csv does not exist")));
}

TEST(ValidateTest, ImpossibleHyperParametersOfTheMergedConfig) {
  v1::TrainingConfig c = Good();
  c.set_extra_json(R"({"frozen_epochs": 1, "optimizer": "adam", "grad_accum": 0})");
  EXPECT_THAT(ValidateTrainingConfig(c),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       AllOf(HasSubstr("unknown optimizer 'adam'"), HasSubstr("grad_accum"))));
  // An architecture named only in extra_json is checked too.
  c.set_architecture("");
  c.set_extra_json(R"({"architecture": "lenet"})");
  EXPECT_THAT(ValidateTrainingConfig(c), StatusIs(absl::StatusCode::kInvalidArgument,
                                                  HasSubstr("unknown architecture 'lenet'")));
}

TEST(ValidateTest, RequiredFieldsAndBadExtraJson) {
  v1::TrainingConfig c;
  c.set_extra_json("[1, 2]");
  EXPECT_THAT(ValidateTrainingConfig(c),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       AllOf(HasSubstr("model_name"), HasSubstr("data_dir is required"),
                             HasSubstr("extra_json must be a JSON object"))));
  EXPECT_THAT(TrainConfigJson(c),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("extra_json")));
}

TEST(ValidateTest, TrainConfigJsonMergesTypedFieldsOverExtraJson) {
  v1::TrainingConfig c = Good();
  c.set_extra_json(R"({"epochs": 9, "patience": 0})");
  c.set_seed(7);
  c.set_loss("focal");
  auto j = TrainConfigJson(c);
  ASSERT_THAT(j, IsOk());
  EXPECT_EQ((*j)["epochs"], 2);
  EXPECT_EQ((*j)["patience"], 0);
  EXPECT_EQ((*j)["architecture"], "resnet18");
  EXPECT_EQ((*j)["lr"], 1e-3);
  EXPECT_EQ((*j)["seed"], 7);
  EXPECT_EQ((*j)["loss"], "focal");
  EXPECT_EQ((*j)["image_size"], 32);
  EXPECT_FALSE(j->contains("augmentation"));
  EXPECT_EQ(MetadataPath(c), c.metadata_file());
  c.clear_metadata_file();
  EXPECT_EQ(MetadataPath(c), c.data_dir() + "/HAM10000_metadata.csv");
}

}  // namespace
}  // namespace skinlesion::jobs
