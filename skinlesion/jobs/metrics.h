// Prometheus metrics of skinlesion-trainer (registered on a prometheus::Registry
// that the binary exposes on --metrics_port):
//   skinlesion_trainer_jobs{state}                     gauge: jobs in each state
//   skinlesion_trainer_job_progress{job}               gauge 0..1 of running jobs
//   skinlesion_trainer_train_loss{job}                 gauge: running mean loss
//   skinlesion_trainer_images_per_second{job}          gauge: training throughput
//   skinlesion_trainer_job_duration_seconds{state}     histogram: start -> end
//   skinlesion_trainer_jobs_submitted_total            counter
// Thread-safe (prometheus-cpp families are).
#ifndef SKINLESION_JOBS_METRICS_H_
#define SKINLESION_JOBS_METRICS_H_

#include <map>
#include <string>

#include "prometheus/counter.h"
#include "prometheus/family.h"
#include "prometheus/gauge.h"
#include "prometheus/histogram.h"
#include "prometheus/registry.h"

namespace skinlesion::jobs {

class JobMetrics {
 public:
  explicit JobMetrics(prometheus::Registry& registry);

  void SetStateCounts(const std::map<std::string, int>& counts);  // state name -> jobs
  void Submitted();
  void Progress(const std::string& job, double fraction, double loss, double images_per_second);
  // A job ended in `state` after `seconds` of running; its per-job gauges go.
  void Finished(const std::string& job, const std::string& state, double seconds);

 private:
  prometheus::Family<prometheus::Gauge>& jobs_;
  prometheus::Family<prometheus::Gauge>& progress_;
  prometheus::Family<prometheus::Gauge>& loss_;
  prometheus::Family<prometheus::Gauge>& images_per_second_;
  prometheus::Family<prometheus::Histogram>& duration_;
  prometheus::Counter& submitted_;
};

}  // namespace skinlesion::jobs

#endif  // SKINLESION_JOBS_METRICS_H_
