#include "skinlesion/data/isic.h"

#include <filesystem>
#include <string>

#include "gtest/gtest.h"
#include "skinlesion/common/classes.h"
#include "skinlesion/common/csv.h"
#include "skinlesion/testing/testing.h"

namespace skinlesion::data {
namespace {

using ::skinlesion::testing::IsOk;
using ::skinlesion::testing::StatusIs;
using ::skinlesion::testing::TempDir;
using ::skinlesion::testing::WriteFile;
using ::testing::HasSubstr;

constexpr char kHeader[] = "image,MEL,NV,BCC,AKIEC,BKL,DF,VASC\n";

int IsicLabel(const char* code) { return LabelSet::Ham10000().Find(code)->index; }

TEST(IsicTest, ParsesOneHotRowsByColumnName) {
  const std::string text = std::string(kHeader) +
                           "ISIC_0034524,0.0,1.0,0.0,0.0,0.0,0.0,0.0\n"
                           "ISIC_0034525,1.0,0.0,0.0,0.0,0.0,0.0,0.0\n"
                           "ISIC_0034526,0,0,0,0,0,0,1\n";
  auto rows = ParseIsicGroundTruth(text);
  ASSERT_THAT(rows, IsOk());
  ASSERT_EQ(rows->rows.size(), 3u);
  EXPECT_EQ(rows->classes, LabelSet::Ham10000());
  EXPECT_EQ(rows->rows[0].image_id, "ISIC_0034524");
  EXPECT_EQ(rows->rows[0].lesion_id, "ISIC_0034524");
  EXPECT_EQ(rows->rows[0].label, IsicLabel("nv"));
  EXPECT_EQ(rows->rows[1].label, IsicLabel("mel"));
  EXPECT_EQ(rows->rows[2].label, IsicLabel("vasc"));

  // Same data, columns in the project's order and lower case.
  auto reordered =
      ParseIsicGroundTruth("image,akiec,bcc,bkl,df,mel,nv,vasc\nISIC_1,0,0,0,0,0,1.0,0\n");
  ASSERT_THAT(reordered, IsOk());
  EXPECT_EQ(reordered->rows[0].label, IsicLabel("nv"));
}

TEST(IsicTest, BadRowsAreErrorsWithTheLine) {
  const std::string good = std::string(kHeader) + "ISIC_1,0,1,0,0,0,0,0\n";
  struct Case {
    std::string bad_row;
    std::string message;
  };
  const Case cases[] = {
      {"ISIC_2,1,1,0,0,0,0,0\n", "line 3: expected exactly one class set to 1, found 2"},
      {"ISIC_2,0,0,0,0,0,0,0\n", "line 3: expected exactly one class set to 1, found 0"},
      {"ISIC_2,0.5,0.5,0,0,0,0,0\n", "line 3: value '0.5' in column MEL is not 0 or 1"},
      {"ISIC_2,0,x,0,0,0,0,1\n", "line 3: value 'x' in column NV is not 0 or 1"},
      {"ISIC_2,0,,0,0,0,0,1\n", "line 3: value '' in column NV is not 0 or 1"},
      {"ISIC_2,0,1,0,0,0,0\n", "line 3: expected 8 fields, found 7"},
      {",0,1,0,0,0,0,0\n", "line 3: empty image id"},
      {"ISIC_1,0,1,0,0,0,0,0\n", "line 3: duplicate image 'ISIC_1' (first on line 2)"},
  };
  for (const Case& c : cases) {
    EXPECT_THAT(ParseIsicGroundTruth(good + c.bad_row, "gt.csv"),
                StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("gt.csv " + c.message)))
        << c.bad_row;
  }
}

TEST(IsicTest, HeaderMustNameEveryClassOnce) {
  EXPECT_THAT(ParseIsicGroundTruth("image,MEL,NV\nISIC_1,1,0\n"),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("line 1: missing class column(s) akiec, bcc, bkl, df, vasc")));
  EXPECT_THAT(ParseIsicGroundTruth("image,MEL,NV,BCC,AKIEC,BKL,DF,VASC,FOO\n"),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("line 1: unknown lesion class 'FOO'")));
  // ISIC 2019's extra columns are known (SCC is an eighth class, UNK rows are refused
  // or skipped: DatasetTest).
  EXPECT_THAT(ParseIsicGroundTruth("image,MEL,NV,BCC,AK,BKL,DF,VASC,SCC,UNK\n"), IsOk());
  EXPECT_THAT(ParseIsicGroundTruth("image,MEL,NV,BCC,AKIEC,BKL,DF,VASC,mel\n"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("appears twice")));
  EXPECT_THAT(
      ParseIsicGroundTruth("id,MEL,NV,BCC,AKIEC,BKL,DF,VASC\n"),
      StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("first column must be 'image'")));
  EXPECT_THAT(ParseIsicGroundTruth("\n\n"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("empty")));
}

TEST(IsicTest, LoadsImagesFromAFolder) {
  TempDir dir;
  std::filesystem::create_directories(dir.Join("images"));
  WriteFile(dir.Join("gt.csv"), std::string(kHeader) +
                                    "ISIC_1,0,1,0,0,0,0,0\n"
                                    "ISIC_2,0,0,1,0,0,0,0\n"
                                    "ISIC_3,0,0,0,0,0,1,0\n");
  WriteFile(dir.Join("images/ISIC_1.jpg"), "x");
  WriteFile(dir.Join("images/ISIC_3.png"), "x");
  auto catalogue = LoadIsic2018(dir.Join("gt.csv"), dir.Join("images"));
  ASSERT_THAT(catalogue, IsOk());
  EXPECT_EQ(catalogue->rows_total, 3);
  EXPECT_EQ(catalogue->rows_missing_image, 1);
  EXPECT_EQ(catalogue->missing_examples, std::vector<std::string>{"ISIC_2"});
  ASSERT_EQ(catalogue->samples.size(), 2u);
  EXPECT_EQ(catalogue->samples[0].path, dir.Join("images/ISIC_1.jpg"));
  EXPECT_EQ(catalogue->samples[1].path, dir.Join("images/ISIC_3.png"));
  EXPECT_EQ(catalogue->samples[1].label, IsicLabel("df"));

  auto without = LoadIsic2018(dir.Join("gt.csv"), "/nonexistent", {.require_images = false});
  ASSERT_THAT(without, IsOk());
  EXPECT_EQ(without->samples.size(), 3u);
  EXPECT_THAT(LoadIsic2018(dir.Join("gt.csv"), dir.Join("nope")),
              StatusIs(absl::StatusCode::kNotFound, HasSubstr(dir.Join("nope"))));
}

// The fuzzer's seed corpus: files named bad_* are rejected, the others parse.
TEST(IsicTest, SeedCorpusFilesParseOrFailByName) {
  int files = 0;
  for (const auto& e : std::filesystem::directory_iterator(
           ::skinlesion::testing::SourcePath("fuzz/corpus/isic_csv"))) {
    auto text = ReadFileToString(e.path().string(), 1 << 20);
    ASSERT_THAT(text, IsOk());
    const bool bad = e.path().filename().string().starts_with("bad_");
    EXPECT_EQ(ParseIsicGroundTruth(*text).ok(), !bad) << e.path();
    ++files;
  }
  EXPECT_GE(files, 10);
}

}  // namespace
}  // namespace skinlesion::data
