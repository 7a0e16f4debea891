#include "skinlesion/eval/cross_validation.h"

#include <cmath>
#include <optional>

#include "gtest/gtest.h"
#include "skinlesion/testing/testing.h"

namespace skinlesion::eval {
namespace {

using ::skinlesion::testing::IsOk;
using ::skinlesion::testing::StatusIs;
using ::testing::HasSubstr;

nlohmann::json Round(double bacc, double auc, double mel, std::optional<double> referral) {
  nlohmann::json m = {{"n", 100}, {"balanced_accuracy", bacc}, {"macro_auc", auc}, {"melanoma_recall", mel}};
  if (referral) m["referral"] = {{"malignant_sensitivity", {{"value", *referral}, {"k", 9}}}};
  return m;
}

TEST(CrossValidationTest, MeanSampleSdAndRangePerMetric) {
  auto cv = SummariseFolds({{.fold = 2, .metrics = Round(0.6, 0.9, 0.5, 0.9), .train_minutes = 12},
                            {.fold = 0, .metrics = Round(0.5, 0.8, 0.3, 0.8), .train_minutes = 10},
                            {.fold = 1, .metrics = Round(0.7, 1.0, 0.4, std::nullopt), .train_minutes = 11}});
  ASSERT_THAT(cv, IsOk());
  const nlohmann::json& b = (*cv)["summary"]["balanced_accuracy"];
  EXPECT_NEAR(b["mean"].get<double>(), 0.6, 1e-12);
  EXPECT_NEAR(b["sd"].get<double>(), 0.1, 1e-12);  // Sample sd of 0.5, 0.6, 0.7.
  EXPECT_DOUBLE_EQ(b["min"].get<double>(), 0.5);
  EXPECT_DOUBLE_EQ(b["max"].get<double>(), 0.7);
  EXPECT_EQ(b["n"], 3);
  // Rows come out in fold order.
  EXPECT_EQ((*cv)["folds"][0]["fold"], 0);
  EXPECT_EQ((*cv)["folds"][2]["fold"], 2);
  // A metric one round lacks is summarised over the others.
  const nlohmann::json& r = (*cv)["summary"]["referral/malignant_sensitivity/value"];
  EXPECT_EQ(r["n"], 2);
  EXPECT_NEAR(r["mean"].get<double>(), 0.85, 1e-12);
  EXPECT_FALSE((*cv)["folds"][1].contains("referral/malignant_sensitivity/value"));
  EXPECT_NEAR((*cv)["train_minutes"]["mean"].get<double>(), 11, 1e-12);
  EXPECT_EQ((*cv)["folds"][0]["logged_minutes"], 0.0);
  // Metrics nobody reported are not in the summary.
  EXPECT_FALSE((*cv)["summary"].contains("ece"));

  const std::string md = CrossValidationMarkdown(*cv);
  EXPECT_THAT(md, HasSubstr("| 0 | 100 | 10.0 | 0.5000 |"));
  EXPECT_THAT(md, HasSubstr("| mean ± sd | | 11.0 ± 1.0 | 0.6000 ± 0.1000 |"));
  EXPECT_THAT(md, HasSubstr(" – |"));  // Fold 1 has no referral figure.
}

// A recall floor's rounds carry the rule without it beside the rule's own figures.
TEST(CrossValidationTest, TheRuleWithoutItsFloorIsSummarisedToo) {
  nlohmann::json a = Round(0.62, 0.94, 0.70, std::nullopt),
                 b = Round(0.64, 0.94, 0.66, std::nullopt);
  a["decision"] = {{"without_floor", {{"balanced_accuracy", 0.63}, {"melanoma_recall", 0.52}}}};
  b["decision"] = {{"without_floor", {{"balanced_accuracy", 0.65}, {"melanoma_recall", 0.56}}}};
  auto cv = SummariseFolds({{.fold = 0, .metrics = a}, {.fold = 1, .metrics = b}});
  ASSERT_THAT(cv, IsOk());
  EXPECT_NEAR((*cv)["summary"]["decision/without_floor/melanoma_recall"]["mean"].get<double>(),
              0.54, 1e-12);
  EXPECT_NEAR((*cv)["summary"]["melanoma_recall"]["mean"].get<double>(), 0.68, 1e-12);
  EXPECT_THAT(CrossValidationMarkdown(*cv), HasSubstr("melanoma_recall without floor"));
}

TEST(CrossValidationTest, OneRoundHasNoSpreadAndBadInputIsRefused) {
  auto one = SummariseFolds({{.fold = 3, .metrics = Round(0.55, 0.9, 0.4, std::nullopt), .train_minutes = 5}});
  ASSERT_THAT(one, IsOk());
  EXPECT_EQ((*one)["summary"]["balanced_accuracy"]["sd"].get<double>(), 0.0);
  EXPECT_THAT(SummariseFolds({}), StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("no finished")));
  EXPECT_THAT(SummariseFolds({{.fold = 1, .metrics = Round(0.5, 0.5, 0.5, std::nullopt)},
                              {.fold = 1, .metrics = Round(0.5, 0.5, 0.5, std::nullopt)}}),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("twice")));
}

TEST(CrossValidationTest, AnUnknownCostIsLeftOutNotAveragedAsZero) {
  // Round 0 ran elsewhere (its metrics kept, its training log not): its cost is unknown.
  auto cv = SummariseFolds({{.fold = 0, .metrics = Round(0.54, 0.92, 0.5, std::nullopt)},
                            {.fold = 1, .metrics = Round(0.56, 0.93, 0.6, std::nullopt), .train_minutes = 20,
                             .logged_minutes = 25},
                            {.fold = 2, .metrics = Round(0.52, 0.91, 0.4, std::nullopt), .train_minutes = 24,
                             .logged_minutes = 30}});
  ASSERT_THAT(cv, IsOk());
  EXPECT_TRUE((*cv)["folds"][0]["train_minutes"].is_null());
  EXPECT_DOUBLE_EQ((*cv)["train_minutes"]["mean"].get<double>(), 22.0);
  EXPECT_EQ((*cv)["train_minutes"]["n"].get<int>(), 2);
  EXPECT_EQ((*cv)["summary"]["balanced_accuracy"]["n"].get<int>(), 3) << "its metrics still count";
  const std::string md = CrossValidationMarkdown(*cv);
  EXPECT_THAT(md, HasSubstr("| 0 | 100 | – |"));
  EXPECT_THAT(md, HasSubstr("| mean ± sd | | 22.0 ± 2.8 |"));
  // No round with a cost: no cost summary.
  auto unknown = SummariseFolds({{.fold = 0, .metrics = Round(0.5, 0.9, 0.5, std::nullopt)}});
  ASSERT_THAT(unknown, IsOk());
  EXPECT_TRUE((*unknown)["train_minutes"].is_null());
  EXPECT_THAT(CrossValidationMarkdown(*unknown), HasSubstr("| mean ± sd | | – |"));
}

// Each image is in one round's test fold: the rounds' subgroups pool into tables over
// the whole pool. Counts add up, balanced accuracy is averaged over the rounds where it
// means something (>= 2 classes), and the intervals come from the pooled counts.
TEST(CrossValidationTest, SubgroupsArePooledOverTheRounds) {
  auto group = [](const char* name, int n, double bacc, int classes, int mel_k, int mel_n) {
    return nlohmann::json{{"group", name}, {"n", n}, {"balanced_accuracy", bacc}, {"classes_present", classes},
                          {"melanoma_recall", {{"k", mel_k}, {"n", mel_n}, {"value", 0.0}}},
                          {"malignant_referred", {{"k", mel_k + 1}, {"n", mel_n + 2}, {"value", 0.0}}}};
  };
  nlohmann::json a = Round(0.5, 0.9, 0.4, std::nullopt);
  a["subgroups"] = {{"sex", {group("female", 50, 0.6, 7, 3, 10), group("male", 40, 0.4, 6, 1, 4)}}};
  nlohmann::json b = Round(0.6, 0.9, 0.5, std::nullopt);
  b["subgroups"] = {{"sex", {group("female", 60, 0.8, 7, 5, 10), group("unknown", 3, 0.0, 1, 0, 0)}}};
  auto cv = SummariseFolds({{.fold = 0, .metrics = a}, {.fold = 1, .metrics = b}});
  ASSERT_THAT(cv, IsOk());
  const nlohmann::json& sex = (*cv)["subgroups"]["sex"];
  ASSERT_EQ(sex.size(), 3u);
  EXPECT_EQ(sex[0]["group"], "female");  // Largest first.
  EXPECT_EQ(sex[0]["n"], 110);
  EXPECT_EQ(sex[0]["rounds"], 2);
  EXPECT_NEAR(sex[0]["balanced_accuracy"]["mean"].get<double>(), 0.7, 1e-12);
  EXPECT_NEAR(sex[0]["balanced_accuracy"]["min"].get<double>(), 0.6, 1e-12);
  EXPECT_EQ(sex[0]["melanoma_recall"]["k"], 8);
  EXPECT_EQ(sex[0]["melanoma_recall"]["n"], 20);
  EXPECT_NEAR(sex[0]["melanoma_recall"]["value"].get<double>(), 0.4, 1e-12);
  const double lower = sex[0]["melanoma_recall"]["ci95"][0].get<double>();
  EXPECT_GT(lower, 0.19);  // Wilson, 8 of 20: [0.219, 0.613].
  EXPECT_LT(lower, 0.23);
  EXPECT_EQ(sex[0]["malignant_referred"]["k"], 10);
  EXPECT_EQ(sex[0]["malignant_referred"]["n"], 24);
  EXPECT_EQ(sex[2]["group"], "unknown");
  EXPECT_FALSE(sex[2].contains("balanced_accuracy"));  // One class: not a balanced accuracy.
  EXPECT_FALSE(sex[2].contains("melanoma_recall"));    // No melanoma.
  const std::string md = CrossValidationMarkdown(*cv);
  EXPECT_THAT(md, HasSubstr("| sex | n | balanced accuracy | melanoma recall | malignant referred |"));
  EXPECT_THAT(md, HasSubstr("| female | 110 | 0.700 [0.600, 0.800] | 0.40 [0.22, 0.61] of 20 |"));
  EXPECT_THAT(md, HasSubstr("| unknown | 3 | – | – |"));
  // Rounds without subgroups: no tables.
  auto plain = SummariseFolds({{.fold = 0, .metrics = Round(0.5, 0.9, 0.4, std::nullopt)}});
  ASSERT_THAT(plain, IsOk());
  EXPECT_FALSE(plain->contains("subgroups"));
}

}  // namespace
}  // namespace skinlesion::eval
