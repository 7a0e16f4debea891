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

}  // namespace
}  // namespace skinlesion::eval
