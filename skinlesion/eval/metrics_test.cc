#include "skinlesion/eval/metrics.h"

#include <cmath>

#include "gtest/gtest.h"
#include "skinlesion/common/rng.h"
#include "skinlesion/testing/testing.h"

namespace skinlesion::eval {
namespace {

using ::skinlesion::testing::StatusIs;
using ::testing::HasSubstr;

// A probability vector with `top` on class `k` and the rest spread evenly.
Probs Peak(int k, float top) {
  Probs p(kHam10000NumClasses, (1.0f - top) / (kHam10000NumClasses - 1));
  p[k] = top;
  return p;
}

TEST(RocAucTest, HandComputed) {
  // sklearn's documented example: 0.75.
  EXPECT_DOUBLE_EQ(RocAuc({0.1, 0.4, 0.35, 0.8}, {false, false, true, true}), 0.75);
  // A tie between a positive and a negative counts 1/2.
  EXPECT_DOUBLE_EQ(RocAuc({0.5, 0.5}, {true, false}), 0.5);
  EXPECT_DOUBLE_EQ(RocAuc({0.9, 0.1, 0.2}, {true, false, false}), 1.0);
  EXPECT_TRUE(std::isnan(RocAuc({0.1, 0.2}, {false, false})));
  const RocCurve roc = ComputeRoc({0.1, 0.4, 0.35, 0.8}, {false, false, true, true});
  // Thresholds 0.8, 0.4, 0.35, 0.1 -> (0,.5) (.5,.5) (.5,1) (1,1).
  ASSERT_EQ(roc.fpr.size(), 5u);
  EXPECT_DOUBLE_EQ(roc.tpr[1], 0.5);
  EXPECT_DOUBLE_EQ(roc.fpr[2], 0.5);
  EXPECT_DOUBLE_EQ(roc.tpr[3], 1.0);
  EXPECT_DOUBLE_EQ(roc.fpr[4], 1.0);
}

TEST(MetricsTest, HandComputedClassificationMetrics) {
  // true: akiec akiec bcc mel mel nv ; predicted: akiec bcc bcc mel nv nv
  const std::vector<int> labels = {0, 0, 1, 4, 4, 5};
  const std::vector<Probs> probs = {Peak(0, 0.9f), Peak(1, 0.6f), Peak(1, 0.7f),
                                    Peak(4, 0.8f), Peak(5, 0.5f), Peak(5, 0.9f)};
  auto m = ComputeMetrics(labels, probs);
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_DOUBLE_EQ(m->accuracy, 4.0 / 6);
  // Recalls: akiec 1/2, bcc 1, mel 1/2, nv 1 -> 0.75 (absent classes excluded).
  EXPECT_DOUBLE_EQ(m->balanced_accuracy, 0.75);
  EXPECT_DOUBLE_EQ(m->per_class[0].precision, 1.0);
  EXPECT_DOUBLE_EQ(m->per_class[1].precision, 0.5);
  EXPECT_DOUBLE_EQ(m->per_class[5].precision, 0.5);
  EXPECT_DOUBLE_EQ(m->per_class[4].recall, 0.5);
  EXPECT_NEAR(m->per_class[0].f1, 2.0 / 3, 1e-12);
  EXPECT_NEAR(m->macro_f1, 2.0 / 3, 1e-12);
  EXPECT_DOUBLE_EQ(m->macro_precision, 0.75);
  EXPECT_EQ(m->per_class[4].support, 2);
  EXPECT_EQ(m->per_class[2].support, 0);
  EXPECT_EQ(m->confusion[4][5], 1);
  EXPECT_EQ(m->confusion[0][1], 1);
  // Weighted F1: every present class has F1 2/3.
  EXPECT_NEAR(m->weighted_f1, 2.0 / 3, 1e-12);
  // Every label is within the top 2 here.
  EXPECT_DOUBLE_EQ(m->top2_accuracy, 1.0);
  // Malignant group {akiec, bcc, mel}: risk >= .5 for samples 0..3 and for sample 4?
  // Sample 4 (mel, Peak(nv,.5)): risk = 3 * (0.5/6) = 0.25 -> missed.
  EXPECT_DOUBLE_EQ(m->malignant_sensitivity, 4.0 / 5);
  EXPECT_DOUBLE_EQ(m->malignant_specificity, 1.0);
  // NLL by hand.
  const double expected_nll =
      -(std::log(0.9) + std::log(0.4 / 6) + std::log(0.7) + std::log(0.8) + std::log(0.5 / 6) +
        std::log(0.9)) / 6;
  EXPECT_NEAR(m->nll, expected_nll, 1e-6);
  // Brier of sample 0: (0.1)^2 + 6 * (0.1/6)^2.
  Probs p0 = Peak(0, 0.9f);
  double b0 = 0;
  for (int k = 0; k < kHam10000NumClasses; ++k) b0 += std::pow(p0[k] - (k == 0), 2);
  EXPECT_NEAR(b0, 0.01 + 6 * std::pow(0.1 / 6, 2), 1e-6);
}

TEST(MetricsTest, MelanomaSensitivityAtSpecificity) {
  // 10 non-melanoma with mel scores .0 .. .9, 4 melanomas with .85 .75 .55 .05.
  std::vector<int> labels;
  std::vector<Probs> probs;
  for (int i = 0; i < 10; ++i) {
    labels.push_back(5);
    probs.push_back(Peak(5, 0.5f));
    probs.back()[4] = 0.1f * i / 2;  // 0 .. .45
  }
  for (float s : {0.44f, 0.38f, 0.28f, 0.02f}) {
    labels.push_back(4);
    probs.push_back(Peak(5, 0.5f));
    probs.back()[4] = s;
  }
  auto m = ComputeMetrics(labels, probs);
  ASSERT_TRUE(m.ok());
  // Negatives' mel scores: 0,.05,...,.45. Specificity >= .9 allows 1 false positive
  // (.45): threshold .44 catches 1 of 4 melanomas. Specificity >= .8 allows 2 (.45, .40):
  // threshold .38 catches 2 of 4.
  EXPECT_DOUBLE_EQ(m->mel_sensitivity_at_spec90, 0.25);
  EXPECT_DOUBLE_EQ(m->mel_sensitivity_at_spec80, 0.5);
}

TEST(MetricsTest, ExpectedCalibrationErrorByHand) {
  // Two samples at confidence .9 (one right, one wrong), one at .65 right:
  // bin (.867,.933]: acc .5, conf .9, n 2; bin (.6,.667]: acc 1, conf .65, n 1.
  const std::vector<int> labels = {0, 1, 2};
  const std::vector<Probs> probs = {Peak(0, 0.9f), Peak(0, 0.9f), Peak(2, 0.65f)};
  std::vector<CalibrationBin> bins;
  const double ece = ExpectedCalibrationError(labels, probs, 15, &bins);
  EXPECT_NEAR(ece, (0.4 * 2 + 0.35 * 1) / 3.0, 1e-6);
  ASSERT_EQ(bins.size(), 15u);
  EXPECT_EQ(bins[13].count, 2);
  EXPECT_NEAR(bins[13].accuracy, 0.5, 1e-12);
  EXPECT_EQ(bins[9].count, 1);
}

TEST(MetricsTest, PerfectPredictions) {
  std::vector<int> labels;
  std::vector<Probs> probs;
  for (int k = 0; k < kHam10000NumClasses; ++k) {
    for (int r = 0; r < 3; ++r) {
      labels.push_back(k);
      probs.push_back(Peak(k, 1.0f));
    }
  }
  auto m = ComputeMetrics(labels, probs);
  ASSERT_TRUE(m.ok());
  EXPECT_DOUBLE_EQ(m->accuracy, 1.0);
  EXPECT_DOUBLE_EQ(m->balanced_accuracy, 1.0);
  EXPECT_DOUBLE_EQ(m->macro_auc, 1.0);
  EXPECT_DOUBLE_EQ(m->malignant_auc, 1.0);
  EXPECT_NEAR(m->ece, 0.0, 1e-9);
  EXPECT_NEAR(m->brier, 0.0, 1e-9);
  const auto j = MetricsToJson(*m);
  EXPECT_EQ(j["per_class"]["mel"]["support"], 3);
  EXPECT_EQ(j["labels"][4], "mel");
  EXPECT_DOUBLE_EQ(j["melanoma_recall"].get<double>(), 1.0);
  EXPECT_EQ(j["confusion_matrix"][6][6], 3);
}

TEST(MetricsTest, RejectsBadInput) {
  EXPECT_THAT(ComputeMetrics({}, {}), StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("no samples")));
  EXPECT_THAT(ComputeMetrics({0}, {}), StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("1 labels")));
  EXPECT_THAT(ComputeMetrics({7}, {Peak(0, 1)}), StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("out of range")));
  Probs nan = Peak(0, 1);
  nan[2] = std::nanf("");
  EXPECT_THAT(ComputeMetrics({0}, {nan}), StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("non-finite")));
}

TEST(TemperatureTest, RecoversTheGeneratingTemperature) {
  // Labels drawn from softmax(z / 2): the fitted temperature must be close to 2.
  Rng rng(11);
  std::vector<Probs> logits;
  std::vector<int> labels;
  for (int i = 0; i < 20000; ++i) {
    Probs z(kHam10000NumClasses);
    for (float& v : z) v = static_cast<float>(3.0 * rng.Normal());
    const Probs p = Softmax({z}, 2.0)[0];
    double u = rng.Uniform(), acc = 0;
    int label = kHam10000NumClasses - 1;
    for (int k = 0; k < kHam10000NumClasses; ++k) {
      acc += p[k];
      if (u < acc) {
        label = k;
        break;
      }
    }
    logits.push_back(z);
    labels.push_back(label);
  }
  auto t = FitTemperature(labels, logits);
  ASSERT_TRUE(t.ok());
  EXPECT_NEAR(*t, 2.0, 0.1);
  // Calibrating lowers the NLL against T = 1.
  auto before = ComputeMetrics(labels, Softmax(logits, 1.0));
  auto after = ComputeMetrics(labels, Softmax(logits, *t));
  EXPECT_LT(after->nll, before->nll);
  EXPECT_LT(after->ece, before->ece);
}

}  // namespace
}  // namespace skinlesion::eval
