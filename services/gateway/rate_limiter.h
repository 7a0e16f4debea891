// A per-client token bucket: each client (an IP address) may send `rate` requests
// a second on average with bursts of up to `burst`. Thread-safe.
//
//   RateLimiter limiter({.rate = 20, .burst = 40});
//   if (auto wait = limiter.Admit(ip, absl::Now()); wait > absl::ZeroDuration()) -> 429
#ifndef SERVICES_GATEWAY_RATE_LIMITER_H_
#define SERVICES_GATEWAY_RATE_LIMITER_H_

#include <cstddef>
#include <string>
#include <unordered_map>

#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"

namespace skinlesion::gateway {

class RateLimiter {
 public:
  struct Options {
    double rate = 20;  // Tokens per second; <= 0 turns the limiter off.
    int burst = 40;    // Bucket size (at least 1 when on).
    // Clients remembered at most; beyond it full (idle) buckets are forgotten.
    size_t max_clients = 100000;
  };
  explicit RateLimiter(Options options);

  bool enabled() const { return options_.rate > 0; }

  // Takes a token of `client` at `now`: ZeroDuration when admitted, else how long
  // until a token is available (the request is refused and takes nothing).
  absl::Duration Admit(const std::string& client, absl::Time now) ABSL_LOCKS_EXCLUDED(mu_);

  size_t clients() const ABSL_LOCKS_EXCLUDED(mu_);

 private:
  struct Bucket {
    double tokens = 0;
    absl::Time last;
  };
  void Prune(absl::Time now) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  Options options_;
  mutable absl::Mutex mu_;
  std::unordered_map<std::string, Bucket> buckets_ ABSL_GUARDED_BY(mu_);
};

}  // namespace skinlesion::gateway

#endif  // SERVICES_GATEWAY_RATE_LIMITER_H_
