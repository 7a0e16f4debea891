// ApplyProgressLine and ProgressFraction: the lines `skinlesion train --progress_jsonl`
// writes, and the ones a job's progress must survive (torn, foreign, not JSON).
#include "skinlesion/jobs/progress.h"

#include "gtest/gtest.h"

namespace skinlesion::jobs {
namespace {

TEST(ProgressTest, StepEpochAndPhaseLines) {
  v1::JobProgress p;
  EXPECT_EQ(ApplyProgressLine(R"({"event":"progress","phase":"finetune","epoch":2,"epochs":10,)"
                              R"("step":40,"steps":160,"loss":1.25,"images_per_second":76.5,"eta_seconds":300})",
                              p),
            ProgressEvent::kProgress);
  EXPECT_EQ(p.phase(), "finetune");
  EXPECT_EQ(p.epoch(), 2);
  EXPECT_EQ(p.epochs(), 10);
  EXPECT_EQ(p.step(), 40);
  EXPECT_EQ(p.steps(), 160);
  EXPECT_DOUBLE_EQ(p.loss(), 1.25);
  EXPECT_DOUBLE_EQ(p.images_per_second(), 76.5);
  EXPECT_DOUBLE_EQ(p.eta_seconds(), 300);
  EXPECT_DOUBLE_EQ(ProgressFraction(p), 0.225);  // (2 + 40/160) / 10

  EXPECT_EQ(ApplyProgressLine(R"({"event":"epoch","epoch":3,"train_loss":1.1,"images_per_second":80,)"
                              R"("val_loss":0.9,"val_metrics":{"balanced_accuracy":0.42,"note":"x"}})",
                              p),
            ProgressEvent::kEpoch);
  EXPECT_EQ(p.phase(), "finetune");  // Kept when the line has none.
  EXPECT_EQ(p.epoch(), 3);
  EXPECT_EQ(p.step(), p.steps());
  EXPECT_DOUBLE_EQ(p.loss(), 1.1);
  ASSERT_EQ(p.validation_metrics().size(), 2u);  // Numbers only, and the loss.
  EXPECT_DOUBLE_EQ(p.validation_metrics().at("balanced_accuracy"), 0.42);
  EXPECT_DOUBLE_EQ(p.validation_metrics().at("val_loss"), 0.9);
  EXPECT_DOUBLE_EQ(ProgressFraction(p), 0.4);

  EXPECT_EQ(ApplyProgressLine(R"({"event":"phase","phase":"evaluate"})", p), ProgressEvent::kPhase);
  EXPECT_EQ(p.phase(), "evaluate");
  EXPECT_DOUBLE_EQ(p.eta_seconds(), 0);
}

TEST(ProgressTest, OtherLinesLeaveTheProgressAlone) {
  v1::JobProgress p;
  p.set_epoch(5);
  p.set_epochs(4);
  const v1::JobProgress before = p;
  for (const char* line : {"", "not json", R"({"event":"progress","epoch":)", R"({"event":"unknown"})", "[1,2]",
                           R"({"epoch":7})"}) {
    EXPECT_EQ(ApplyProgressLine(line, p), ProgressEvent::kNone) << line;
    EXPECT_EQ(p.SerializeAsString(), before.SerializeAsString()) << line;
  }
  EXPECT_DOUBLE_EQ(ProgressFraction(p), 1.0);  // Clamped.
  EXPECT_DOUBLE_EQ(ProgressFraction(v1::JobProgress()), 0.0);
}

}  // namespace
}  // namespace skinlesion::jobs
