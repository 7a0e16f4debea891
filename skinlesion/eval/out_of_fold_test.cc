#include "skinlesion/eval/out_of_fold.h"

#include <string>

#include "absl/strings/str_replace.h"
#include "gtest/gtest.h"
#include "skinlesion/testing/testing.h"

namespace skinlesion::eval {
namespace {

using ::skinlesion::testing::StatusIs;
using ::testing::HasSubstr;

RoundAnswers TwoImages() {
  RoundAnswers a;
  a.views = "flips";
  a.temperature = 1.25;
  a.ood_method = "mahalanobis";
  a.image_ids = {"ISIC_0000001", "ISIC_0000002"};
  a.labels = {4, 5};  // mel, nv
  a.probs = {{0.05f, 0.05f, 0.1f, 0.0f, 0.6f, 0.2f, 0.0f},
             {0.0f, 0.0f, 0.1f, 0.0f, 0.1f, 0.8f, 0.0f}};
  a.ood_units = {-0.25, 3.5};
  return a;
}

TEST(OutOfFoldTest, RoundTripKeepsEveryAnswer) {
  const LabelSet& classes = LabelSet::Ham10000();
  const RoundAnswers a = TwoImages();
  auto text = RoundAnswersToCsv(a, classes);
  ASSERT_TRUE(text.ok()) << text.status();
  EXPECT_EQ(text->substr(0, text->find('\n')),
            "image_id,label,views,temperature,ood_method,ood_units,p_akiec,p_bcc,p_bkl,p_df,p_mel,"
            "p_nv,p_vasc");
  auto back = ParseRoundAnswers(*text, classes);
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(back->views, "flips");
  EXPECT_DOUBLE_EQ(back->temperature, 1.25);
  EXPECT_EQ(back->ood_method, "mahalanobis");
  EXPECT_EQ(back->image_ids, a.image_ids);
  EXPECT_EQ(back->labels, a.labels);
  EXPECT_EQ(back->probs, a.probs);
  EXPECT_EQ(back->ood_units, a.ood_units);
  EXPECT_EQ(RoundAnswersFile("flips"), "out_of_fold_flips.csv");
}

TEST(OutOfFoldTest, BadFilesAreRefusedWithTheLine) {
  const LabelSet& classes = LabelSet::Ham10000();
  const std::string good = *RoundAnswersToCsv(TwoImages(), classes);
  auto refuses = [&](const std::string& text, const std::string& why) {
    EXPECT_THAT(ParseRoundAnswers(text, classes),
                StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr(why)))
        << text;
  };
  refuses(absl::StrReplaceAll(good, {{"p_vasc", "p_scc"}}), "the header is not");
  refuses(good.substr(0, good.find('\n') + 1), "no rows");
  refuses(absl::StrReplaceAll(good, {{",mel,", ",unk,"}}), "line 2: label 'unk'");
  refuses(absl::StrReplaceAll(good, {{"ISIC_0000002", "ISIC_0000001"}}),
          "line 3: an empty or repeated image_id");
  refuses(absl::StrReplaceAll(good, {{"0.6,0.2", "0.9,0.2"}}), "line 2: probabilities sum to");
  refuses(absl::StrReplaceAll(good, {{"0.6,0.2", "1.6,-0.8"}}), "outside [0, 1]");
  refuses(absl::StrReplaceAll(good, {{"-0.25", "nan"}}), "not a finite number");
  refuses(absl::StrReplaceAll(good, {{"1.25", "0"}}), "temperature must be > 0");
  refuses(absl::StrReplaceAll(good, {{"flips", "sideways"}}), "views 'sideways'");
  refuses(absl::StrReplaceAll(good, {{"mahalanobis", "knn"}}), "ood_method 'knn'");
  // The constant columns must stay constant.
  const size_t second = good.find("ISIC_0000002");
  std::string mixed = good;
  mixed.replace(mixed.find("flips", second), 5, "none");
  refuses(mixed, "line 3: views, temperature and ood_method must be the same");
  refuses(good + "ISIC_3,nv,flips\n", "line 4: 3 fields, not 13");
  RoundAnswers uneven = TwoImages();
  uneven.ood_units.pop_back();
  EXPECT_THAT(RoundAnswersToCsv(uneven, classes),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("differ in length")));
}

// A file on disk: read whole, its parse errors named by its path, a missing or too large
// file refused.
TEST(OutOfFoldTest, ReadRoundAnswersNamesTheFile) {
  const LabelSet& classes = LabelSet::Ham10000();
  skinlesion::testing::TempDir dir;
  const std::string good = *RoundAnswersToCsv(TwoImages(), classes);
  const std::string path = dir.Join("out_of_fold_flips.csv");
  skinlesion::testing::WriteFile(path, good);
  auto read = ReadRoundAnswers(path, classes);
  ASSERT_TRUE(read.ok()) << read.status();
  EXPECT_EQ(read->image_ids, TwoImages().image_ids);
  EXPECT_THAT(ReadRoundAnswers(path, classes, good.size() - 1),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("over the limit")));
  skinlesion::testing::WriteFile(path, absl::StrReplaceAll(good, {{",mel,", ",unk,"}}));
  EXPECT_THAT(ReadRoundAnswers(path, classes),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr(path + ": out-of-fold answers line 2: label 'unk'")));
  EXPECT_THAT(ReadRoundAnswers(dir.Join("absent.csv"), classes),
              StatusIs(absl::StatusCode::kNotFound, HasSubstr("absent.csv")));
}

}  // namespace
}  // namespace skinlesion::eval
