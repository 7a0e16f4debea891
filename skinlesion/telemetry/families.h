// The one way project code declares a Prometheus metric family, and the bucket sets
// its histograms share (so a dashboard compares like with like across services):
//
//   prometheus::Family<prometheus::Counter>& requests =
//       telemetry::AddCounter(registry, "skinlesion_x_requests_total", "Requests by outcome");
//   requests.Add({{"outcome", "ok"}}).Increment();
//   telemetry::AddHistogram(registry, "skinlesion_x_seconds", "Time of x")
//       .Add({}, telemetry::RequestSecondsBuckets()).Observe(0.02);
//
// Families live as long as `registry`; adding one of an existing name with the same
// type returns it (prometheus-cpp's rule). Thread-safe as prometheus-cpp is.
// LibTorch- and gRPC-free (prometheus-cpp core only).
#ifndef SKINLESION_TELEMETRY_FAMILIES_H_
#define SKINLESION_TELEMETRY_FAMILIES_H_

#include <string>

#include "prometheus/counter.h"
#include "prometheus/family.h"
#include "prometheus/gauge.h"
#include "prometheus/histogram.h"
#include "prometheus/registry.h"

namespace skinlesion::telemetry {

prometheus::Family<prometheus::Counter>& AddCounter(prometheus::Registry& registry,
                                                    const std::string& name,
                                                    const std::string& help);
prometheus::Family<prometheus::Gauge>& AddGauge(prometheus::Registry& registry,
                                                const std::string& name, const std::string& help);
prometheus::Family<prometheus::Histogram>& AddHistogram(prometheus::Registry& registry,
                                                        const std::string& name,
                                                        const std::string& help);

// Request and stage latencies in seconds: 0.5 ms to 30 s.
const prometheus::Histogram::BucketBoundaries& RequestSecondsBuckets();
// Model loads in seconds: 0.1 s to 5 min.
const prometheus::Histogram::BucketBoundaries& LoadSecondsBuckets();
// Training jobs in seconds: 10 s to a day.
const prometheus::Histogram::BucketBoundaries& JobSecondsBuckets();
// Requests per batch: powers of two, 1 to 128.
const prometheus::Histogram::BucketBoundaries& BatchSizeBuckets();

}  // namespace skinlesion::telemetry

#endif  // SKINLESION_TELEMETRY_FAMILIES_H_
