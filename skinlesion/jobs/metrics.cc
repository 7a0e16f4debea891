#include "skinlesion/jobs/metrics.h"

#include "skinlesion/telemetry/families.h"

namespace skinlesion::jobs {

JobMetrics::JobMetrics(prometheus::Registry& registry)
    : jobs_(telemetry::AddGauge(registry, "skinlesion_trainer_jobs", "Training jobs by state")),
      progress_(telemetry::AddGauge(registry, "skinlesion_trainer_job_progress",
                                    "Fraction of a running job's epochs done (0..1)")),
      loss_(telemetry::AddGauge(registry, "skinlesion_trainer_train_loss",
                                "Running mean training loss of the current epoch")),
      images_per_second_(telemetry::AddGauge(registry, "skinlesion_trainer_images_per_second",
                                             "Training throughput of a running job")),
      duration_(telemetry::AddHistogram(registry, "skinlesion_trainer_job_duration_seconds",
                                        "Running time of finished jobs, by final state")),
      submitted_(telemetry::AddCounter(registry, "skinlesion_trainer_jobs_submitted_total",
                                       "Jobs accepted by SubmitJob")
                     .Add({})) {
  // Exported at 0 from the start: the failed-jobs alert takes increase() of the
  // count, which a series born at its first observation would never show.
  for (const char* state : {"succeeded", "failed", "cancelled"}) {
    duration_.Add({{"state", state}}, telemetry::JobSecondsBuckets());
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
  duration_.Add({{"state", state}}, telemetry::JobSecondsBuckets()).Observe(seconds);
  for (auto* family : {&progress_, &loss_, &images_per_second_}) {
    if (family->Has({{"job", job}})) family->Remove(&family->Add({{"job", job}}));
  }
}

}  // namespace skinlesion::jobs
