#include "services/gateway/rate_limiter.h"

#include <algorithm>

namespace skinlesion::gateway {

RateLimiter::RateLimiter(Options options) : options_(options) {
  options_.burst = std::max(1, options_.burst);
}

absl::Duration RateLimiter::Admit(const std::string& client, absl::Time now) {
  if (!enabled()) return absl::ZeroDuration();
  absl::MutexLock lock(&mu_);
  auto it = buckets_.find(client);
  if (it == buckets_.end()) {
    if (buckets_.size() >= options_.max_clients) Prune(now);
    it =
        buckets_.emplace(client, Bucket{.tokens = static_cast<double>(options_.burst), .last = now})
            .first;
  }
  Bucket& b = it->second;
  if (now > b.last) {
    b.tokens = std::min<double>(options_.burst,
                                b.tokens + absl::ToDoubleSeconds(now - b.last) * options_.rate);
    b.last = now;
  }
  if (b.tokens >= 1.0) {
    b.tokens -= 1.0;
    return absl::ZeroDuration();
  }
  return absl::Seconds((1.0 - b.tokens) / options_.rate);
}

size_t RateLimiter::clients() const {
  absl::MutexLock lock(&mu_);
  return buckets_.size();
}

void RateLimiter::Prune(absl::Time now) {
  // A bucket that has refilled completely behaves like a new one: forget it.
  for (auto it = buckets_.begin(); it != buckets_.end();) {
    const double tokens =
        it->second.tokens + absl::ToDoubleSeconds(now - it->second.last) * options_.rate;
    it = tokens >= options_.burst ? buckets_.erase(it) : std::next(it);
  }
  // Still full of active clients: drop an arbitrary half rather than grow forever.
  if (buckets_.size() >= options_.max_clients) {
    size_t n = buckets_.size() / 2;
    for (auto it = buckets_.begin(); it != buckets_.end() && n > 0; --n) it = buckets_.erase(it);
  }
}

}  // namespace skinlesion::gateway
