#include "skinlesion/data/ham10000.h"

#include <filesystem>
#include <map>
#include <set>
#include <string>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "skinlesion/common/classes.h"
#include "skinlesion/common/csv.h"
#include "skinlesion/testing/testing.h"

namespace skinlesion::data {
namespace {

using ::skinlesion::testing::IsOk;
using ::skinlesion::testing::SourcePath;
using ::skinlesion::testing::StatusIs;
using ::skinlesion::testing::TempDir;
using ::skinlesion::testing::WriteFile;
using ::testing::HasSubstr;

constexpr char kHeader8[] = "lesion_id,image_id,dx,dx_type,age,sex,localization,dataset\n";
constexpr char kHeader7[] = "lesion_id,image_id,dx,dx_type,age,sex,localization\n";

std::string Row8(int i, const std::string& dx = "nv", const std::string& age = "45") {
  return absl::StrCat("HAM_", 1000 + i, ",ISIC_", 2000 + i, ",", dx, ",histo,", age,
                      ",male,back,vidir_modern\n");
}

int Label(const char* code) { return LabelSet::Ham10000().Find(code)->index; }

TEST(Ham10000Test, ParsesTheFullDataverseMetadata) {
  auto text = ReadFileToString(SourcePath("tests/fixtures/ham10000/HAM10000_metadata.csv"),
                               size_t{64} << 20);
  ASSERT_THAT(text, IsOk());
  auto rows = ParseHam10000Metadata(*text);
  ASSERT_THAT(rows, IsOk());
  ASSERT_EQ(rows->size(), 10015u);
  std::map<int, int> per_class;
  std::set<std::string> lesions;
  int no_age = 0;
  for (const Sample& s : *rows) {
    ++per_class[s.label];
    lesions.insert(s.lesion_id);
    if (!s.age) ++no_age;
    EXPECT_TRUE(s.path.empty());
  }
  EXPECT_EQ(lesions.size(), 7470u);
  EXPECT_EQ(per_class[Label("nv")], 6705);
  EXPECT_EQ(per_class[Label("mel")], 1113);
  EXPECT_EQ(per_class[Label("bkl")], 1099);
  EXPECT_EQ(per_class[Label("bcc")], 514);
  EXPECT_EQ(per_class[Label("akiec")], 327);
  EXPECT_EQ(per_class[Label("vasc")], 142);
  EXPECT_EQ(per_class[Label("df")], 115);
  EXPECT_EQ(no_age, 57);
  const Sample& first = rows->front();
  EXPECT_EQ(first.lesion_id, "HAM_0000118");
  EXPECT_EQ(first.image_id, "ISIC_0027419");
  EXPECT_EQ(first.label, Label("bkl"));
  EXPECT_EQ(first.dx_type, "histo");
  EXPECT_EQ(first.age, 80.0);
  EXPECT_EQ(first.sex, "male");
  EXPECT_EQ(first.localization, "scalp");
  EXPECT_EQ(first.dataset, "vidir_modern");
}

TEST(Ham10000Test, ParsesTheKaggleVariantWithColumnsByName) {
  // 7 columns, ages written as floats, blank age, CRLF, columns in another order.
  const std::string text =
      "image_id,lesion_id,dx,dx_type,age,sex,localization\r\n"
      "ISIC_0027419,HAM_0000118,bkl,histo,80.0,male,scalp\r\n"
      "ISIC_0025030,HAM_0000118,BKL,histo,,male,scalp\r\n";
  auto rows = ParseHam10000Metadata(text);
  ASSERT_THAT(rows, IsOk());
  ASSERT_EQ(rows->size(), 2u);
  EXPECT_EQ((*rows)[0].image_id, "ISIC_0027419");
  EXPECT_EQ((*rows)[0].lesion_id, "HAM_0000118");
  EXPECT_EQ((*rows)[0].age, 80.0);
  EXPECT_EQ((*rows)[0].dataset, "");
  EXPECT_EQ((*rows)[1].label, Label("bkl"));
  EXPECT_FALSE((*rows)[1].age.has_value());
}

TEST(Ham10000Test, MissingColumnsAreNamed) {
  EXPECT_THAT(ParseHam10000Metadata("lesion_id,image_id,age,sex\nHAM_1,ISIC_1,5,male\n"),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("missing required column(s) dx, dx_type, localization")));
  EXPECT_THAT(ParseHam10000Metadata(""),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("empty")));
}

TEST(Ham10000Test, UnknownClassNamesTheLine) {
  std::string text = kHeader8;
  for (int i = 0; i < 15; ++i) text += Row8(i);  // Lines 2..16.
  text += Row8(15, "xyz");                       // Line 17.
  EXPECT_THAT(ParseHam10000Metadata(text),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("HAM10000_metadata.csv line 17: unknown lesion class 'xyz'")));
}

TEST(Ham10000Test, MalformedRowsAreErrorsWithTheLine) {
  const std::string good = std::string(kHeader8) + Row8(1);
  struct Case {
    std::string bad_row;
    std::string message;
  };
  const Case cases[] = {
      {"HAM_9,ISIC_9,nv,histo,45,male,back\n", "line 3: expected 8 fields, found 7"},
      {",ISIC_9,nv,histo,45,male,back,x\n", "line 3: empty lesion_id"},
      {"HAM_9, ,nv,histo,45,male,back,x\n", "line 3: empty image_id"},
      {Row8(9, "nv", "forty"), "line 3: bad age 'forty'"},
      {Row8(9, "nv", "-5"), "line 3: bad age '-5'"},
      {Row8(9, "nv", "inf"), "line 3: bad age 'inf'"},
      {Row8(9, "nv", "400"), "line 3: bad age '400'"},
      {Row8(1), "line 3: duplicate image_id 'ISIC_2001' (first on line 2)"},
      {"HAM_9,\"ISIC_9,nv,histo\n", "line 3: unterminated quoted field"},
  };
  for (const Case& c : cases) {
    EXPECT_THAT(ParseHam10000Metadata(good + c.bad_row),
                StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr(c.message)))
        << c.bad_row;
  }
  // "NA" and blank ages are missing values, not errors.
  auto rows = ParseHam10000Metadata(good + Row8(2, "nv", "NA") + Row8(3, "nv", ""));
  ASSERT_THAT(rows, IsOk());
  EXPECT_FALSE((*rows)[1].age.has_value());
  EXPECT_FALSE((*rows)[2].age.has_value());
}

TEST(Ham10000Test, LoadsTheFixtureImagesFromAFlatFolder) {
  auto catalogue = LoadHam10000(SourcePath("tests/fixtures/ham10000/metadata_subset.csv"),
                                SourcePath("tests/fixtures/ham10000/images"));
  ASSERT_THAT(catalogue, IsOk());
  EXPECT_EQ(catalogue->rows_total, 14);
  EXPECT_EQ(catalogue->rows_missing_image, 0);
  ASSERT_EQ(catalogue->samples.size(), 14u);
  std::map<int, int> per_class;
  for (const Sample& s : catalogue->samples) {
    EXPECT_TRUE(std::filesystem::exists(s.path)) << s.path;
    EXPECT_EQ(std::filesystem::path(s.path).stem().string(), s.image_id);
    ++per_class[s.label];
  }
  for (int c = 0; c < kHam10000NumClasses; ++c) EXPECT_EQ(per_class[c], 2) << LabelSet::Ham10000().at(c).code;
  const std::string summary = Summary(*catalogue);
  EXPECT_THAT(summary, HasSubstr("14 images, 14 lesions (1.00 images/lesion)"));
  EXPECT_THAT(summary, HasSubstr("mel          2   14.3%"));
}

TEST(Ham10000Test, KaggleLayoutSkipsAndCountsRowsWithoutImages) {
  TempDir dir;
  namespace fs = std::filesystem;
  fs::create_directories(dir.Join("HAM10000_images_part_1"));
  fs::create_directories(dir.Join("HAM10000_images_part_2"));
  std::string metadata = kHeader7;
  for (int i = 0; i < 10; ++i) {
    metadata += absl::StrCat("HAM_", i, ",ISIC_", i, ",mel,histo,50.0,female,back\n");
  }
  WriteFile(dir.Join("HAM10000_metadata.csv"), metadata);
  // Images 0-2 in part 1 (2 as .png), 3-5 in part 2; 6-9 missing. Other files ignored.
  WriteFile(dir.Join("HAM10000_images_part_1/ISIC_0.jpg"), "x");
  WriteFile(dir.Join("HAM10000_images_part_1/ISIC_1.JPG"), "x");
  WriteFile(dir.Join("HAM10000_images_part_1/ISIC_2.png"), "x");
  WriteFile(dir.Join("HAM10000_images_part_1/ISIC_6.txt"), "x");
  for (int i = 3; i < 6; ++i)
    WriteFile(dir.Join(absl::StrCat("HAM10000_images_part_2/ISIC_", i, ".jpg")), "x");
  fs::create_directories(dir.Join("HAM10000_images_part_2/ISIC_7.jpg"));  // A directory.

  auto catalogue = LoadHam10000(dir.Join("HAM10000_metadata.csv"), dir.path());
  ASSERT_THAT(catalogue, IsOk());
  EXPECT_EQ(catalogue->rows_total, 10);
  EXPECT_EQ(catalogue->rows_missing_image, 4);
  EXPECT_EQ(catalogue->missing_examples,
            (std::vector<std::string>{"ISIC_6", "ISIC_7", "ISIC_8", "ISIC_9"}));
  ASSERT_EQ(catalogue->samples.size(), 6u);
  EXPECT_EQ(catalogue->samples[0].path, dir.Join("HAM10000_images_part_1/ISIC_0.jpg"));
  EXPECT_EQ(catalogue->samples[1].path, dir.Join("HAM10000_images_part_1/ISIC_1.JPG"));
  EXPECT_EQ(catalogue->samples[2].path, dir.Join("HAM10000_images_part_1/ISIC_2.png"));
  EXPECT_EQ(catalogue->samples[5].path, dir.Join("HAM10000_images_part_2/ISIC_5.jpg"));
  EXPECT_THAT(Summary(*catalogue), HasSubstr("4 of 10 metadata rows skipped"));
}

TEST(Ham10000Test, JpgIsPreferredOverPngAndPartFoldersOverTheRoot) {
  TempDir dir;
  std::filesystem::create_directories(dir.Join("HAM10000_images_part_1"));
  WriteFile(dir.Join("m.csv"), std::string(kHeader8) + Row8(1) + Row8(2));
  WriteFile(dir.Join("ISIC_2001.jpg"), "x");
  WriteFile(dir.Join("HAM10000_images_part_1/ISIC_2001.png"), "x");
  WriteFile(dir.Join("ISIC_2002.png"), "x");
  WriteFile(dir.Join("ISIC_2002.jpg"), "x");
  auto catalogue = LoadHam10000(dir.Join("m.csv"), dir.path());
  ASSERT_THAT(catalogue, IsOk());
  ASSERT_EQ(catalogue->samples.size(), 2u);
  EXPECT_EQ(catalogue->samples[0].path, dir.Join("HAM10000_images_part_1/ISIC_2001.png"));
  EXPECT_EQ(catalogue->samples[1].path, dir.Join("ISIC_2002.jpg"));
}

TEST(Ham10000Test, MetadataOnlyCatalogueNeedsNoImages) {
  auto catalogue = LoadHam10000(SourcePath("tests/fixtures/ham10000/HAM10000_metadata.csv"),
                                "/nonexistent/images", Ham10000Options{.require_images = false});
  ASSERT_THAT(catalogue, IsOk());
  EXPECT_EQ(catalogue->samples.size(), 10015u);
  EXPECT_EQ(catalogue->rows_total, 10015);
  EXPECT_EQ(catalogue->rows_missing_image, 0);
  EXPECT_THAT(Summary(*catalogue), HasSubstr("10015 images, 7470 lesions (1.34 images/lesion)"));
}

TEST(Ham10000Test, FileErrorsNameThePath) {
  EXPECT_THAT(
      LoadHam10000("/nonexistent/HAM10000_metadata.csv", "/nonexistent"),
      StatusIs(absl::StatusCode::kNotFound, HasSubstr("/nonexistent/HAM10000_metadata.csv")));
  EXPECT_THAT(LoadHam10000(SourcePath("tests/fixtures/ham10000/metadata_subset.csv"),
                           "/nonexistent/images"),
              StatusIs(absl::StatusCode::kNotFound, HasSubstr("/nonexistent/images")));
  TempDir empty;
  EXPECT_THAT(LoadHam10000(SourcePath("tests/fixtures/ham10000/metadata_subset.csv"), empty.path()),
              StatusIs(absl::StatusCode::kNotFound, HasSubstr("no .jpg or .png files")));
  TempDir dir;
  WriteFile(dir.Join("HAM10000_metadata.csv"), std::string(kHeader8) + Row8(1, "zz"));
  EXPECT_THAT(LoadHam10000(dir.Join("HAM10000_metadata.csv"), dir.path()),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr(dir.Join("HAM10000_metadata.csv") + " line 2")));
}

// The fuzzer's seed corpus: files named bad_* are rejected, the others parse.
TEST(Ham10000Test, SeedCorpusFilesParseOrFailByName) {
  int files = 0;
  for (const auto& e :
       std::filesystem::directory_iterator(SourcePath("fuzz/corpus/ham10000_csv"))) {
    auto text = ReadFileToString(e.path().string(), 1 << 20);
    ASSERT_THAT(text, IsOk());
    const bool bad = e.path().filename().string().starts_with("bad_");
    EXPECT_EQ(ParseHam10000Metadata(*text).ok(), !bad) << e.path();
    ++files;
  }
  EXPECT_GE(files, 8);
}

}  // namespace
}  // namespace skinlesion::data
