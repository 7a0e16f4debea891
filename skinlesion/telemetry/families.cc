#include "skinlesion/telemetry/families.h"

namespace skinlesion::telemetry {

prometheus::Family<prometheus::Counter>& AddCounter(prometheus::Registry& registry,
                                                    const std::string& name,
                                                    const std::string& help) {
  return prometheus::BuildCounter().Name(name).Help(help).Register(registry);
}

prometheus::Family<prometheus::Gauge>& AddGauge(prometheus::Registry& registry,
                                                const std::string& name, const std::string& help) {
  return prometheus::BuildGauge().Name(name).Help(help).Register(registry);
}

prometheus::Family<prometheus::Histogram>& AddHistogram(prometheus::Registry& registry,
                                                        const std::string& name,
                                                        const std::string& help) {
  return prometheus::BuildHistogram().Name(name).Help(help).Register(registry);
}

const prometheus::Histogram::BucketBoundaries& RequestSecondsBuckets() {
  static const auto* const b = new prometheus::Histogram::BucketBoundaries{
      0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30};
  return *b;
}

const prometheus::Histogram::BucketBoundaries& LoadSecondsBuckets() {
  static const auto* const b =
      new prometheus::Histogram::BucketBoundaries{0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300};
  return *b;
}

const prometheus::Histogram::BucketBoundaries& JobSecondsBuckets() {
  static const auto* const b = new prometheus::Histogram::BucketBoundaries{
      10, 30, 60, 300, 900, 1800, 3600, 7200, 14400, 28800, 86400};
  return *b;
}

const prometheus::Histogram::BucketBoundaries& BatchSizeBuckets() {
  static const auto* const b =
      new prometheus::Histogram::BucketBoundaries{1, 2, 4, 8, 16, 32, 64, 128};
  return *b;
}

}  // namespace skinlesion::telemetry
