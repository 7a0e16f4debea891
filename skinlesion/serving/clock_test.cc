#include "skinlesion/serving/clock.h"

#include <atomic>
#include <thread>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "gtest/gtest.h"

namespace skinlesion::serving {
namespace {

// A flag guarded by a mutex, waited for on a clock.
class Flag {
 public:
  bool AwaitOn(Clock& clock, absl::Time deadline) ABSL_LOCKS_EXCLUDED(mu_) {
    absl::MutexLock lock(&mu_);
    return clock.AwaitWithDeadline(mu_, absl::Condition(&set_), deadline);
  }
  void Set() ABSL_LOCKS_EXCLUDED(mu_) {
    absl::MutexLock lock(&mu_);
    set_ = true;
  }

 private:
  absl::Mutex mu_;
  bool set_ ABSL_GUARDED_BY(mu_) = false;
};

TEST(RealClockTest, ReadsAndWaitsOnTheProcessClock) {
  Clock& clock = Clock::Real();
  const absl::Time before = absl::Now();
  const absl::Time now = clock.Now();
  EXPECT_LE(before, now);
  EXPECT_LE(now, absl::Now());
  Flag flag;
  EXPECT_FALSE(flag.AwaitOn(clock, now - absl::Seconds(1)));  // Passed: at once.
  flag.Set();
  EXPECT_TRUE(flag.AwaitOn(clock, absl::InfiniteFuture()));
}

TEST(FakeClockTest, StandsStillUntilAdvanced) {
  FakeClock clock;
  const absl::Time start = clock.Now();
  EXPECT_EQ(start, absl::FromUnixSeconds(1'600'000'000));
  EXPECT_EQ(clock.Now(), start);
  clock.Advance(absl::Milliseconds(30));
  EXPECT_EQ(clock.Now(), start + absl::Milliseconds(30));
  EXPECT_EQ(FakeClock(absl::UnixEpoch()).Now(), absl::UnixEpoch());
}

TEST(FakeClockTest, AWaiterWakesWhenItsDeadlineIsReached) {
  FakeClock clock;
  Flag flag;
  const absl::Time deadline = clock.Now() + absl::Milliseconds(10);
  std::atomic<int> result{-1};
  std::thread waiter([&] { result = flag.AwaitOn(clock, deadline) ? 1 : 0; });
  ASSERT_TRUE(clock.AwaitTimedWaiters(1));
  clock.Advance(absl::Milliseconds(9));
  EXPECT_EQ(clock.timed_waiters(), 1);  // Not reached: still waiting.
  EXPECT_EQ(result.load(), -1);
  clock.Advance(absl::Milliseconds(1));
  waiter.join();
  EXPECT_EQ(result.load(), 0);  // The deadline, not the flag.
  EXPECT_EQ(clock.timed_waiters(), 0);
}

TEST(FakeClockTest, AWaiterWakesWhenItsConditionHolds) {
  FakeClock clock;
  Flag flag;
  std::atomic<int> result{-1};
  std::thread waiter(
      [&] { result = flag.AwaitOn(clock, clock.Now() + absl::Seconds(1)) ? 1 : 0; });
  ASSERT_TRUE(clock.AwaitTimedWaiters(1));
  flag.Set();
  waiter.join();
  EXPECT_EQ(result.load(), 1);
  // A deadline already reached does not block; nor does a condition already true.
  Flag unset;
  EXPECT_FALSE(unset.AwaitOn(clock, clock.Now()));
  EXPECT_TRUE(flag.AwaitOn(clock, clock.Now() + absl::Hours(1)));
}

TEST(FakeClockTest, OnlyWaitersWhoseDeadlinePassedWake) {
  FakeClock clock;
  const absl::Time start = clock.Now();
  std::vector<Flag> flags(3);
  std::atomic<int> woken{0};
  std::vector<std::thread> waiters;
  for (int i = 0; i < 3; ++i) {
    waiters.emplace_back([&, i] {
      flags[i].AwaitOn(clock, start + absl::Milliseconds(10 * (i + 1)));
      ++woken;
    });
  }
  ASSERT_TRUE(clock.AwaitTimedWaiters(3));
  clock.Advance(absl::Milliseconds(20));  // The first two.
  ASSERT_TRUE(clock.AwaitTimedWaiters(1));
  EXPECT_EQ(clock.timed_waiters(), 1);
  clock.Advance(absl::Milliseconds(10));
  for (std::thread& t : waiters) t.join();
  EXPECT_EQ(woken.load(), 3);
}

// Waiters that return while Advance() is waking them (their condition turned true
// at the same time) must not leave Advance() with a dangling waiter.
TEST(FakeClockTest, AdvanceRacesWithWaitersThatReturn) {
  FakeClock clock;
  for (int round = 0; round < 200; ++round) {
    Flag flag;
    std::thread waiter([&] { flag.AwaitOn(clock, clock.Now() + absl::Microseconds(1)); });
    std::thread setter([&] { flag.Set(); });
    clock.Advance(absl::Microseconds(1));
    setter.join();
    waiter.join();
  }
  EXPECT_EQ(clock.timed_waiters(), 0);
}

}  // namespace
}  // namespace skinlesion::serving
