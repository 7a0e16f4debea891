#include "skinlesion/data/dataset.h"

#include <filesystem>
#include <string>

#include "gtest/gtest.h"
#include "skinlesion/common/classes.h"
#include "skinlesion/data/isic.h"
#include "skinlesion/testing/testing.h"

namespace skinlesion::data {
namespace {

using ::skinlesion::testing::IsOk;
using ::skinlesion::testing::StatusIs;
using ::skinlesion::testing::TempDir;
using ::skinlesion::testing::WriteFile;
using ::testing::HasSubstr;

int ClassIndexOf(const LabelSet& classes, const char* code) { return classes.IndexOf(code).value_or(-1); }

TEST(DatasetTest, TheHeaderNamesTheFormat) {
  EXPECT_EQ(*CsvFormatOf({"lesion_id", "image_id", "dx", "dx_type", "age", "sex", "localization"}),
            DatasetFormat::kHam10000);
  EXPECT_EQ(*CsvFormatOf({"image", "MEL", "NV", "BCC", "AKIEC", "BKL", "DF", "VASC"}), DatasetFormat::kIsic);
  EXPECT_EQ(*CsvFormatOf({"image", "MEL", "NV", "BCC", "AK", "BKL", "DF", "VASC", "SCC", "UNK"}),
            DatasetFormat::kIsic);
  EXPECT_EQ(*CsvFormatOf({"Image", "Label", "patient_id"}), DatasetFormat::kPlainCsv);
  EXPECT_THAT(CsvFormatOf({"file", "class"}),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("plain CSV (image,label")));
}

TEST(DatasetTest, PlainCsvGroupsByPatientThenLesionAndKeepsMetadata) {
  auto rows = ParsePlainCsv(
      "image,label,lesion_id,patient_id,age,sex,localization,dataset\n"
      "a.jpg,MEL,L1,P1,63,female,back,clinic\n"
      "b.png,nv,L2,,NA,male,face,clinic\n"
      "c,bcc,,,,,,\n",
      "labels.csv");
  ASSERT_THAT(rows, IsOk());
  // The label set is the classes found, alphabetically.
  EXPECT_EQ(rows->classes.codes(), (std::vector<std::string>{"bcc", "mel", "nv"}));
  const std::vector<Sample>& r = rows->rows;
  ASSERT_EQ(r.size(), 3u);
  EXPECT_EQ(r[0].image_id, "a");
  EXPECT_EQ(r[0].label, ClassIndexOf(rows->classes, "mel"));
  EXPECT_EQ(r[2].label, ClassIndexOf(rows->classes, "bcc"));
  EXPECT_EQ(r[0].lesion_id, "P1") << "the patient is the strictest group";
  EXPECT_EQ(r[0].age, 63.0);
  EXPECT_EQ(r[0].sex, "female");
  EXPECT_EQ(r[0].localization, "back");
  EXPECT_EQ(r[0].dataset, "clinic");
  EXPECT_EQ(r[1].image_id, "b");
  EXPECT_EQ(r[1].lesion_id, "L2");
  EXPECT_FALSE(r[1].age.has_value());
  EXPECT_EQ(r[2].lesion_id, "c") << "no group column: the image is its own group";
}

TEST(DatasetTest, PlainCsvErrorsNameTheLine) {
  EXPECT_THAT(ParsePlainCsv("image,label\na.jpg,mel\nb.jpg,naevus?\n", "labels.csv"),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("labels.csv line 3: class code 'naevus?' must be")));
  EXPECT_THAT(ParsePlainCsv("image,label\na.jpg,mel\nb.jpg,\n", "labels.csv"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("line 3: empty label")));
  EXPECT_THAT(ParsePlainCsv("image,label\na.jpg,mel\nb.jpg,MEL\n", "labels.csv"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("1 class(es) found")));
  EXPECT_THAT(ParsePlainCsv("image,label\na.jpg,mel\na.png,nv\n", "labels.csv"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("line 3: duplicate image 'a'")));
  EXPECT_THAT(ParsePlainCsv("image,label,age\na.jpg,mel,old\n", "labels.csv"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("line 2: bad age 'old'")));
  EXPECT_THAT(ParsePlainCsv("image,class\na.jpg,mel\n", "labels.csv"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("missing column 'label'")));
  EXPECT_THAT(ParsePlainCsv("image,label\n,mel\n", "labels.csv"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("line 2: empty image")));
  // Any class code is a class; one is left out only when asked, and counted.
  auto all = ParsePlainCsv("image,label\na.jpg,mel\nb.jpg,SCC\nc.jpg,scc\nd.jpg,nv\n", "labels.csv");
  ASSERT_THAT(all, IsOk());
  EXPECT_EQ(all->classes.codes(), (std::vector<std::string>{"mel", "nv", "scc"}));
  EXPECT_TRUE(all->classes.IsMalignant(2)) << "scc is a known malignant class";
  std::map<std::string, int> skipped;
  auto rows = ParsePlainCsv("image,label\na.jpg,mel\nb.jpg,SCC\nc.jpg,scc\nd.jpg,nv\n", "labels.csv", {"scc"},
                            &skipped);
  ASSERT_THAT(rows, IsOk());
  EXPECT_EQ(rows->rows.size(), 2u);
  EXPECT_EQ(rows->classes.codes(), (std::vector<std::string>{"mel", "nv"}));
  EXPECT_EQ(skipped["scc"], 2);
}

TEST(DatasetTest, Isic2019IsEightClassesWithSccAndUnkLeftOutOnlyWhenAsked) {
  const std::string text =
      "image,MEL,NV,BCC,AK,BKL,DF,VASC,SCC,UNK\n"
      "ISIC_1,0.0,0.0,0.0,1.0,0.0,0.0,0.0,0.0,0.0\n"
      "ISIC_2,0.0,0.0,0.0,0.0,0.0,0.0,0.0,1.0,0.0\n"
      "ISIC_3,1.0,0.0,0.0,0.0,0.0,0.0,0.0,0.0,0.0\n";
  // scc is an eighth class (an ISIC 2019 model), alphabetically between nv and vasc.
  auto eight = ParseIsicGroundTruth(text, "gt.csv");
  ASSERT_THAT(eight, IsOk());
  EXPECT_EQ(eight->classes.ToString(), "akiec, bcc, bkl, df, mel, nv, scc, vasc");
  ASSERT_EQ(eight->rows.size(), 3u);
  EXPECT_EQ(eight->rows[0].label, ClassIndexOf(eight->classes, "akiec")) << "AK is akiec";
  EXPECT_EQ(eight->rows[1].label, 6);
  // UNK is never a class.
  EXPECT_THAT(ParseIsicGroundTruth(text + "ISIC_4,0,0,0,0,0,0,0,0,1\n", "gt.csv"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("gt.csv line 5: class 'UNK'")));
  // Left out, scc gives HAM10000's seven.
  std::map<std::string, int> skipped;
  auto rows = ParseIsicGroundTruth(text, "gt.csv", {"scc", "unk"}, &skipped);
  ASSERT_THAT(rows, IsOk());
  EXPECT_EQ(rows->classes, LabelSet::Ham10000());
  ASSERT_EQ(rows->rows.size(), 2u);
  EXPECT_EQ(rows->rows[1].label, ClassIndexOf(LabelSet::Ham10000(), "mel"));
  EXPECT_EQ(skipped["scc"], 1);
}

TEST(DatasetTest, ClassFoldersAndCsvsLoadThroughOneEntryPoint) {
  TempDir dir;
  namespace fs = std::filesystem;
  fs::create_directories(dir.Join("folders/mel"));
  fs::create_directories(dir.Join("folders/NV"));
  fs::create_directories(dir.Join("folders/empty"));
  WriteFile(dir.Join("folders/mel/m1.jpg"), "x");
  WriteFile(dir.Join("folders/mel/m2.png"), "x");
  WriteFile(dir.Join("folders/NV/n1.jpg"), "x");
  WriteFile(dir.Join("folders/NV/notes.txt"), "not an image");
  // A class folder without images is an error unless skipped.
  EXPECT_THAT(LoadDataset(dir.Join("folders"), ""),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("folder 'empty' has no .jpg or .png image")));
  auto folders = LoadDataset(dir.Join("folders"), "", {.skip_labels = {"empty"}});
  ASSERT_THAT(folders, IsOk());
  EXPECT_EQ(folders->format, DatasetFormat::kClassFolders);
  ASSERT_EQ(folders->catalogue.samples.size(), 3u);
  EXPECT_EQ(folders->catalogue.samples[0].image_id, "n1");
  // The folders are the classes: a 2-class model.
  EXPECT_EQ(folders->catalogue.classes.codes(), (std::vector<std::string>{"mel", "nv"}));
  EXPECT_EQ(folders->catalogue.samples[0].label, 1);
  EXPECT_EQ(folders->catalogue.samples[1].label, 0);
  EXPECT_EQ(folders->skipped_labels["empty"], 0);
  // The same image in two class folders is refused.
  WriteFile(dir.Join("folders/NV/m1.jpg"), "x");
  EXPECT_THAT(LoadDataset(dir.Join("folders"), "", {.skip_labels = {"empty"}}),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("image 'm1' is in two places")));

  // A plain CSV over a flat image folder: a missing image is counted and named.
  fs::create_directories(dir.Join("flat"));
  WriteFile(dir.Join("flat/a.jpg"), "x");
  WriteFile(dir.Join("flat/b.jpg"), "x");
  WriteFile(dir.Join("labels.csv"), "image,label,patient_id\na.jpg,mel,P1\nb.jpg,nv,P1\nc.jpg,bcc,P2\n");
  auto plain = LoadDataset(dir.Join("flat"), dir.Join("labels.csv"));
  ASSERT_THAT(plain, IsOk());
  EXPECT_EQ(plain->format, DatasetFormat::kPlainCsv);
  EXPECT_EQ(plain->catalogue.samples.size(), 2u);
  EXPECT_EQ(plain->catalogue.rows_missing_image, 1);
  ASSERT_FALSE(plain->catalogue.missing_examples.empty());
  EXPECT_EQ(plain->catalogue.missing_examples[0], "c");

  // An unknown header says what it expects; no CSV and no class folder says so too.
  WriteFile(dir.Join("weird.csv"), "file,class\na.jpg,mel\n");
  EXPECT_THAT(LoadDataset(dir.Join("flat"), dir.Join("weird.csv")),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("unrecognised header 'file,class'")));
  EXPECT_THAT(LoadDataset(dir.Join("flat"), ""),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("no class subfolder with images")));
}

}  // namespace
}  // namespace skinlesion::data
