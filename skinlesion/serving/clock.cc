#include "skinlesion/serving/clock.h"

#include <algorithm>
#include <vector>

#include "skinlesion/common/logging.h"

namespace skinlesion::serving {
namespace {

class RealClock final : public Clock {
 public:
  absl::Time Now() override { return absl::Now(); }
  bool AwaitWithDeadline(absl::Mutex& mu, const absl::Condition& cond, absl::Time deadline) override
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) {
    return mu.AwaitWithDeadline(cond, deadline);
  }
};

}  // namespace

Clock& Clock::Real() {
  static Clock* const clock = new RealClock();
  return *clock;
}

FakeClock::FakeClock(absl::Time start) : now_(start) {}

absl::Time FakeClock::Now() {
  absl::MutexLock lock(&mu_);
  return now_;
}

bool FakeClock::AwaitWithDeadline(absl::Mutex& mu, const absl::Condition& cond,
                                  absl::Time deadline) {
  if (deadline == absl::InfiniteFuture()) {
    mu.Await(cond);
    return true;
  }
  Waiter w{&mu, deadline};
  std::list<Waiter*>::iterator it;
  {
    absl::MutexLock lock(&mu_);
    if (now_ >= deadline) return cond.Eval();
    it = waiters_.insert(waiters_.end(), &w);
  }
  // Advance() sets w.reached under `mu`; its unlock re-evaluates this condition.
  const auto woken = [&] { return w.reached || cond.Eval(); };
  mu.Await(absl::Condition(&woken));
  bool result = cond.Eval();
  {
    absl::MutexLock lock(&mu_);
    waiters_.erase(it);
    if (w.pins == 0) return result;
  }
  // An Advance() is about to lock `mu` to wake `w`: let it, so that neither `w` nor
  // `mu` is used after this returns.
  mu.Unlock();
  {
    absl::MutexLock lock(&mu_);
    const auto unpinned = [&w]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return w.pins == 0; };
    mu_.Await(absl::Condition(&unpinned));
  }
  mu.Lock();
  return cond.Eval();
}

void FakeClock::Advance(absl::Duration d) {
  SL_CHECK(d >= absl::ZeroDuration()) << "a clock does not go back";
  std::vector<Waiter*> due;
  {
    absl::MutexLock lock(&mu_);
    now_ += d;
    for (Waiter* w : waiters_) {
      if (w->due || w->deadline > now_) continue;
      w->due = true;
      ++w->pins;
      due.push_back(w);
    }
  }
  // Without mu_ held: a waiter's `mu` comes before mu_ (Now() is called under it).
  for (Waiter* w : due) {
    w->mu->Lock();
    w->reached = true;
    w->mu->Unlock();
  }
  absl::MutexLock lock(&mu_);
  for (Waiter* w : due) --w->pins;
}

int FakeClock::TimedWaitersLocked() {
  return static_cast<int>(std::count_if(waiters_.begin(), waiters_.end(),
                                        [](const Waiter* w) { return !w->due; }));
}

int FakeClock::timed_waiters() {
  absl::MutexLock lock(&mu_);
  return TimedWaitersLocked();
}

bool FakeClock::AwaitTimedWaiters(int n, absl::Duration real_timeout) {
  absl::MutexLock lock(&mu_);
  const auto enough = [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return TimedWaitersLocked() >= n; };
  return mu_.AwaitWithTimeout(absl::Condition(&enough), real_timeout);
}

}  // namespace skinlesion::serving
