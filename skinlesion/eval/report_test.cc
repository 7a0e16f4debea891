#include "skinlesion/eval/report.h"

#include <filesystem>
#include <fstream>
#include <functional>

#include "gtest/gtest.h"
#include "skinlesion/common/rng.h"
#include "skinlesion/testing/testing.h"

namespace skinlesion::eval {
namespace {

using ::skinlesion::testing::SourcePath;
using ::skinlesion::testing::TempDir;

TEST(ReportTest, WritesMetricsAndPlotsAndCalibrates) {
  // Over-confident logits (true temperature 3): calibration must lower the ECE.
  Rng rng(5);
  ReportInput in;
  auto draw = [&](std::vector<int>& labels, std::vector<Probs>& logits, int n) {
    for (int i = 0; i < n; ++i) {
      const int y = static_cast<int>(rng.UniformInt(kHam10000NumClasses));
      Probs z(kHam10000NumClasses);
      for (float& v : z) v = static_cast<float>(rng.Normal() * 3);
      z[y] += 4.5f;
      labels.push_back(y);
      logits.push_back(z);
    }
  };
  draw(in.labels, in.logits, 600);
  draw(in.val_labels, in.val_logits, 600);
  const std::string images = SourcePath("tests/fixtures/ham10000/images");
  for (size_t i = 0; i < in.labels.size(); ++i) {
    in.image_paths.push_back(images + (i % 2 ? "/ISIC_0024698.jpg" : "/ISIC_0031901.jpg"));
  }
  in.context = {{"model", "test"}};
  TempDir dir;
  auto j = WriteReport(in, dir.Join("report"));
  ASSERT_TRUE(j.ok()) << j.status();
  EXPECT_GT((*j)["temperature"].get<double>(), 1.2);
  EXPECT_LT((*j)["ece"].get<double>(), (*j)["uncalibrated"]["ece"].get<double>());
  // Temperature scaling never changes the argmax.
  EXPECT_DOUBLE_EQ((*j)["accuracy"].get<double>(), (*j)["uncalibrated"]["accuracy"].get<double>());
  EXPECT_EQ((*j)["context"]["model"], "test");
  for (const char* f : {"metrics.json", "confusion_matrix.png", "roc_curves.png", "reliability.png",
                        "reliability_uncalibrated.png", "test_examples.png"}) {
    EXPECT_GT(std::filesystem::file_size(dir.Join(std::string("report/") + f)), 1000u) << f;
  }
  std::ifstream f(dir.Join("report/metrics.json"));
  const auto parsed = nlohmann::json::parse(f);
  for (const char* key : {"accuracy", "balanced_accuracy", "macro_f1", "macro_auc", "per_class", "ece"}) {
    EXPECT_TRUE(parsed.contains(key)) << key;
  }
  EXPECT_TRUE(parsed["per_class"]["mel"].contains("recall"));
  // No threshold given or fitted: the referral block measures the uncertainty rules.
  EXPECT_EQ(parsed["referral"]["threshold_source"], "none");
  EXPECT_TRUE(parsed["referral"]["policy"]["malignancy_risk_threshold"].is_null());
  // No decision rule given or fitted: the most probable class.
  EXPECT_EQ(parsed["decision"]["rule"], "plain");
  EXPECT_EQ(parsed["decision"]["source"], "none");
}

// A model biased towards the common class (nv scores a bonus on every image): the
// decision rule fitted on validation data names rare classes more often, and the
// test's balanced accuracy rises above the plain rule's, reported side by side.
// HAM10000-like class shares (index order).
const std::vector<double> kShares = {0.03, 0.05, 0.11, 0.01, 0.11, 0.67, 0.02};

// n cases drawn with kShares: logits N(0, 1), +2 for the true class and +nv_bonus(y)
// for nv (a model that leans towards naevi).
void DrawSkewed(Rng& rng, int n, const std::function<float(int)>& nv_bonus,
                std::vector<int>& labels, std::vector<Probs>& logits) {
  for (int i = 0; i < n; ++i) {
    double u = rng.Uniform(), acc = 0;
    int y = 0;
    while (y < 6 && (acc += kShares[y]) < u) ++y;
    Probs z(kHam10000NumClasses);
    for (float& v : z) v = static_cast<float>(rng.Normal());
    z[y] += 2.0f;
    z[5] += nv_bonus(y);
    labels.push_back(y);
    logits.push_back(z);
  }
}

TEST(ReportTest, FitsTheDecisionRuleForBalancedAccuracy) {
  Rng rng(11);
  const auto always = [](int) { return 1.5f; };  // The bias towards nv.
  ReportInput in;
  DrawSkewed(rng, 3000, always, in.labels, in.logits);
  DrawSkewed(rng, 3000, always, in.val_labels, in.val_logits);
  in.fit_decision = true;
  in.decision.prior = kShares;
  TempDir dir;
  auto j = WriteReport(in, dir.Join("report"));
  ASSERT_TRUE(j.ok()) << j.status();
  const nlohmann::json& d = (*j)["decision"];
  EXPECT_EQ(d["rule"], "prior_adjusted");
  EXPECT_EQ(d["source"], "fitted_on_val");
  EXPECT_GT(d["tau"].get<double>(), 0.0);
  EXPECT_GT(d["validation"]["balanced_accuracy"].get<double>(),
            d["validation"]["balanced_accuracy_plain"].get<double>());
  EXPECT_GT((*j)["balanced_accuracy"].get<double>(),
            d["plain"]["balanced_accuracy"].get<double>() + 0.03);
  // Accuracy pays for it (fewer nv named), which the report shows too.
  EXPECT_LT((*j)["accuracy"].get<double>(), d["plain"]["accuracy"].get<double>());

  // Given instead of fitted (evaluate: the manifest's rule), the same numbers come back.
  ReportInput given = in;
  given.fit_decision = false;
  given.decision.tau = d["tau"].get<double>();
  given.temperature = (*j)["temperature"].get<double>();
  given.val_labels.clear();
  given.val_logits.clear();
  auto again = WriteReport(given, dir.Join("again"));
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_EQ((*again)["decision"]["source"], "given");
  EXPECT_DOUBLE_EQ((*again)["balanced_accuracy"].get<double>(),
                   (*j)["balanced_accuracy"].get<double>());
}

// The melanoma recall floor on top of the fitted tau: the validation melanoma recall
// reaches the target, the test's rises with it, and the rule without the floor is
// reported beside it; the bias travels as "decision.bias".
TEST(ReportTest, FitsTheMelanomaRecallFloorOnTopOfTau) {
  Rng rng(12);
  const auto melanomas = [](int y) { return y == 4 ? 1.5f : 0.0f; };  // Melanomas look like naevi.
  ReportInput in;
  DrawSkewed(rng, 3000, melanomas, in.labels, in.logits);
  DrawSkewed(rng, 3000, melanomas, in.val_labels, in.val_logits);
  in.fit_decision = true;
  in.decision.prior = kShares;
  in.recall_target_class = 4;
  in.recall_target = 0.8;
  TempDir dir;
  auto j = WriteReport(in, dir.Join("report"));
  ASSERT_TRUE(j.ok()) << j.status();
  const nlohmann::json& d = (*j)["decision"];
  ASSERT_TRUE(d.contains("recall_floor")) << d.dump();
  const nlohmann::json& floor = d["recall_floor"];
  EXPECT_EQ(floor["class"], "mel");
  EXPECT_TRUE(floor["reached"].get<bool>());
  EXPECT_GT(floor["bias"].get<double>(), 0.0);
  EXPECT_GE(floor["validation"]["recall"].get<double>(), 0.8);
  EXPECT_LT(floor["validation"]["recall_before"].get<double>(), 0.8);
  ASSERT_EQ(d["bias"].size(), 7u);
  EXPECT_DOUBLE_EQ(d["bias"][4].get<double>(), floor["bias"].get<double>());
  EXPECT_EQ(d["rule"], "prior_adjusted");
  const double mel = (*j)["per_class"]["mel"]["recall"].get<double>();
  EXPECT_GT(mel, 0.75);
  EXPECT_GT(mel, d["without_floor"]["melanoma_recall"].get<double>() + 0.05);

  // Off (target 0): no bias, no floor block.
  ReportInput off = in;
  off.recall_target = 0;
  auto plain = WriteReport(off, dir.Join("off"));
  ASSERT_TRUE(plain.ok()) << plain.status();
  EXPECT_FALSE((*plain)["decision"].contains("recall_floor"));
  EXPECT_FALSE((*plain)["decision"].contains("bias"));
  EXPECT_DOUBLE_EQ((*plain)["per_class"]["mel"]["recall"].get<double>(),
                   d["without_floor"]["melanoma_recall"].get<double>());
}

// The operating point fitted on validation data: the validation malignant
// sensitivity of the risk rule reaches the target, and the test block uses that
// threshold.
TEST(ReportTest, FitsTheReferralThresholdOnValidationData) {
  Rng rng(9);
  ReportInput in;
  auto draw = [&](std::vector<int>& labels, std::vector<Probs>& logits, int n) {
    for (int i = 0; i < n; ++i) {
      const int y = static_cast<int>(rng.UniformInt(kHam10000NumClasses));
      Probs z(kHam10000NumClasses);
      for (float& v : z) v = static_cast<float>(rng.Normal() * 2);
      z[y] += 2.0f;
      labels.push_back(y);
      logits.push_back(z);
    }
  };
  draw(in.labels, in.logits, 700);
  draw(in.val_labels, in.val_logits, 700);
  in.fit_risk_threshold = true;
  in.referral.target_sensitivity = 0.9;
  TempDir dir;
  auto j = WriteReport(in, dir.Join("report"));
  ASSERT_TRUE(j.ok()) << j.status();
  const nlohmann::json& r = (*j)["referral"];
  EXPECT_EQ(r["threshold_source"], "fitted_on_val");
  const double t = r["policy"]["malignancy_risk_threshold"].get<double>();
  EXPECT_GT(t, 0.0);
  EXPECT_LT(t, 1.0);
  EXPECT_GE(r["validation"]["risk_rule"]["malignant_sensitivity"]["value"].get<double>(), 0.9);
  // On the test draw the same threshold lands near the target (same distribution).
  EXPECT_GT(r["risk_rule"]["malignant_sensitivity"]["value"].get<double>(), 0.8);
  // The whole rule refers at least what the risk rule does.
  EXPECT_GE(r["malignant_sensitivity"]["value"].get<double>(),
            r["risk_rule"]["malignant_sensitivity"]["value"].get<double>());
  const auto ci = r["melanoma_sensitivity"]["ci95"];
  EXPECT_LE(ci[0].get<double>(), r["melanoma_sensitivity"]["value"].get<double>());
  EXPECT_GE(ci[1].get<double>(), r["melanoma_sensitivity"]["value"].get<double>());
}

}  // namespace
}  // namespace skinlesion::eval
