// A per-client token bucket: each client (an IP address) may send `rate` requests
// a second on average with bursts of up to `burst`. Thread-safe.
//
//   RateLimiter limiter({.rate = 20, .burst = 40});
//   if (auto wait = limiter.Admit(ip, absl::Now()); wait > absl::ZeroDuration()) -> 429
#ifndef SERVICES_GATEWAY_RATE_LIMITER_H_
#define SERVICES_GATEWAY_RATE_LIMITER_H_

#include <cstddef>
#include <mutex>
#include <string>
#include <unordered_map>

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
  absl::Duration Admit(const std::string& client, absl::Time now);

  size_t clients() const;

 private:
  struct Bucket {
    double tokens = 0;
    absl::Time last;
  };
  void Prune(absl::Time now);  // mu_ held.

  Options options_;
  mutable std::mutex mu_;
  std::unordered_map<std::string, Bucket> buckets_;  // Guarded by mu_.
};

}  // namespace skinlesion::gateway

#endif  // SERVICES_GATEWAY_RATE_LIMITER_H_
