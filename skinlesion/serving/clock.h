// Time for the serving core. The batcher, the core and the slot gates read the time
// and wait with a deadline only through a Clock: the process's clock in production
// (Clock::Real()), a FakeClock that a test moves by hand, so that queue delays,
// deadlines and queue-time metrics are exact and no test waits on the wall clock.
//
// Timed waits belong to the clock (AwaitWithDeadline), because a waiter blocked with
// a deadline must wake when a fake clock is moved past it:
//
//   absl::MutexLock lock(&mu_);
//   clock.AwaitWithDeadline(mu_, absl::Condition(&ready_), deadline);
//
//   FakeClock clock;                     // In a test.
//   ServingOptions options;
//   options.clock = &clock;              // Outlives the core.
//   ...
//   clock.Advance(absl::Milliseconds(30));  // Wakes waiters whose deadline passed.
//
// Thread-safe.
#ifndef SKINLESION_SERVING_CLOCK_H_
#define SKINLESION_SERVING_CLOCK_H_

#include <list>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"

namespace skinlesion::serving {

class Clock {
 public:
  virtual ~Clock() = default;

  virtual absl::Time Now() = 0;

  // With `mu` held (on entry and on return; released while waiting): waits until
  // `cond` holds or this clock reaches `deadline` (InfiniteFuture: no limit), and
  // returns `cond`'s value. `cond` must depend only on state guarded by `mu`.
  virtual bool AwaitWithDeadline(absl::Mutex& mu, const absl::Condition& cond,
                                 absl::Time deadline) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) = 0;

  // absl::Now() and absl::Mutex's own deadline waits. Never destroyed.
  static Clock& Real();
};

// A clock that stands still until Advance(). Waiters whose deadline it reaches wake
// (in real time, at once); the others sleep on. Must outlive every wait on it.
class FakeClock final : public Clock {
 public:
  // A fixed default start, so that times in tests do not depend on the day.
  explicit FakeClock(absl::Time start = absl::FromUnixSeconds(1'600'000'000));

  absl::Time Now() override ABSL_LOCKS_EXCLUDED(mu_);
  bool AwaitWithDeadline(absl::Mutex& mu, const absl::Condition& cond, absl::Time deadline) override
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) ABSL_LOCKS_EXCLUDED(mu_);

  // Moves the time forward by `d` (>= 0) and wakes the waiters whose deadline is now
  // reached; returns once each of them has been made runnable (it may not have run
  // yet: wait for what it does, not for time).
  void Advance(absl::Duration d) ABSL_LOCKS_EXCLUDED(mu_);

  // Threads now blocked in AwaitWithDeadline with a finite deadline that has not
  // been reached.
  int timed_waiters() ABSL_LOCKS_EXCLUDED(mu_);
  // Blocks (for at most `real_timeout` of real time) until timed_waiters() >= n:
  // "the worker is waiting for its deadline" in a test. False on timeout.
  bool AwaitTimedWaiters(int n, absl::Duration real_timeout = absl::Seconds(10))
      ABSL_LOCKS_EXCLUDED(mu_);

 private:
  // A thread in AwaitWithDeadline, on its stack.
  struct Waiter {
    absl::Mutex* mu;
    absl::Time deadline;
    bool reached = false;  // Guarded by *mu: Advance sets it, then unlocks (a wake-up).
    bool due = false;      // Guarded by FakeClock::mu_: now_ >= deadline.
    int pins = 0;          // Guarded by FakeClock::mu_: Advance calls yet to set `reached`.
  };

  int TimedWaitersLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  absl::Mutex mu_;
  absl::Time now_ ABSL_GUARDED_BY(mu_);
  std::list<Waiter*> waiters_ ABSL_GUARDED_BY(mu_);
};

}  // namespace skinlesion::serving

#endif  // SKINLESION_SERVING_CLOCK_H_
