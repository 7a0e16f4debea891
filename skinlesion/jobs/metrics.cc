#include "skinlesion/jobs/metrics.h"

namespace skinlesion::jobs {
namespace {

const prometheus::Histogram::BucketBoundaries& DurationBuckets() {
  static const auto* b = new prometheus::Histogram::BucketBoundaries{
      10, 30, 60, 300, 900, 1800, 3600, 7200, 14400, 28800, 86400};
  return *b;
}

}  // namespace

JobMetrics::JobMetrics(prometheus::Registry& registry)
    : jobs_(prometheus::BuildGauge()
                .Name("skinlesion_trainer_jobs")
                .Help("Training jobs by state")
                .Register(registry)),
      progress_(prometheus::BuildGauge()
                    .Name("skinlesion_trainer_job_progress")
                    .Help("Fraction of a running job's epochs done (0..1)")
                    .Register(registry)),
      loss_(prometheus::BuildGauge()
                .Name("skinlesion_trainer_train_loss")
                .Help("Running mean training loss of the current epoch")
                .Register(registry)),
      images_per_second_(prometheus::BuildGauge()
                             .Name("skinlesion_trainer_images_per_second")
                             .Help("Training throughput of a running job")
                             .Register(registry)),
      duration_(prometheus::BuildHistogram()
                    .Name("skinlesion_trainer_job_duration_seconds")
                    .Help("Running time of finished jobs, by final state")
                    .Register(registry)),
      submitted_(prometheus::BuildCounter()
                     .Name("skinlesion_trainer_jobs_submitted_total")
                     .Help("Jobs accepted by SubmitJob")
                     .Register(registry)
                     .Add({})) {
  // Exported at 0 from the start: the failed-jobs alert takes increase() of the
  // count, which a series born at its first observation would never show.
  for (const char* state : {"succeeded", "failed", "cancelled"}) {
    duration_.Add({{"state", state}}, DurationBuckets());
  }
}

void JobMetrics::SetStateCounts(const std::map<std::string, int>& counts) {
  for (const auto& [state, n] : counts) jobs_.Add({{"state", state}}).Set(n);
}

void JobMetrics::Submitted() { submitted_.Increment(); }

void JobMetrics::Progress(const std::string& job, double fraction, double loss,
                          double images_per_second) {
  progress_.Add({{"job", job}}).Set(fraction);
  loss_.Add({{"job", job}}).Set(loss);
  images_per_second_.Add({{"job", job}}).Set(images_per_second);
}

void JobMetrics::Finished(const std::string& job, const std::string& state, double seconds) {
  duration_.Add({{"state", state}}, DurationBuckets()).Observe(seconds);
  for (auto* family : {&progress_, &loss_, &images_per_second_}) {
    if (family->Has({{"job", job}})) family->Remove(&family->Add({{"job", job}}));
  }
}

}  // namespace skinlesion::jobs
