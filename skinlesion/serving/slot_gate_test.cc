#include "skinlesion/serving/slot_gate.h"

#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <optional>
#include <vector>
#include <thread>
#include <utility>

#include "gtest/gtest.h"
#include "skinlesion/testing/testing.h"

namespace skinlesion::serving {
namespace {

using ::skinlesion::testing::IsOk;
using ::skinlesion::testing::StatusIs;
using ::testing::HasSubstr;

absl::Time Soon() { return absl::Now() + absl::Milliseconds(50); }

TEST(SlotGateTest, HoldsAtMostItsSlots) {
  SlotGate gate(2, 0, "decode");
  auto a = gate.Acquire(absl::InfiniteFuture());
  auto b = gate.Acquire(absl::InfiniteFuture());
  ASSERT_THAT(a, IsOk());
  ASSERT_THAT(b, IsOk());
  EXPECT_EQ(gate.held(), 2);
  // No one may wait: refused at once, and the message says why.
  EXPECT_THAT(gate.Acquire(absl::InfiniteFuture()),
              StatusIs(absl::StatusCode::kResourceExhausted, HasSubstr("2 decode slot(s) are busy")));
  { auto released = std::move(*a); }
  EXPECT_EQ(gate.held(), 1);
  EXPECT_THAT(gate.Acquire(absl::InfiniteFuture()), IsOk());  // Released again at once.
  EXPECT_EQ(gate.held(), 1);
}

TEST(SlotGateTest, WaitersGetAReleasedSlotOrTheirDeadline) {
  SlotGate gate(1, 1, "explanation", " of model ham");
  std::optional<SlotGate::Slot> held;
  {
    auto s = gate.Acquire(absl::InfiniteFuture());
    ASSERT_THAT(s, IsOk());
    held.emplace(std::move(*s));
  }
  EXPECT_THAT(gate.Acquire(Soon()), StatusIs(absl::StatusCode::kDeadlineExceeded,
                                             HasSubstr("1 explanation slot(s) of model ham")));
  EXPECT_EQ(gate.waiting(), 0);
  // A waiter gets the slot as soon as it is released.
  std::thread waiter([&] {
    auto s = gate.Acquire(absl::Now() + absl::Seconds(30));
    EXPECT_THAT(s, IsOk());
  });
  while (gate.waiting() == 0) std::this_thread::yield();
  // One waiter is the most: the next is refused without waiting.
  EXPECT_THAT(gate.Acquire(absl::InfiniteFuture()),
              StatusIs(absl::StatusCode::kResourceExhausted, HasSubstr("")));
  held.reset();
  waiter.join();
  EXPECT_EQ(gate.held(), 0);
  // A deadline already past: refused even with a slot free.
  EXPECT_THAT(gate.Acquire(absl::Now() - absl::Seconds(1)),
              StatusIs(absl::StatusCode::kDeadlineExceeded, HasSubstr("")));
}

TEST(SlotGateTest, CloseWakesWaitersAndRefusesNewcomers) {
  SlotGate gate(1, kUnlimitedWaiters, "decode");
  auto held = gate.Acquire(absl::InfiniteFuture());
  ASSERT_THAT(held, IsOk());
  absl::Status waited;
  std::thread waiter([&] { waited = gate.Acquire(absl::InfiniteFuture()).status(); });
  while (gate.waiting() == 0) std::this_thread::yield();
  gate.Close();
  waiter.join();
  EXPECT_THAT(waited, StatusIs(absl::StatusCode::kUnavailable, HasSubstr("")));
  EXPECT_THAT(gate.Acquire(absl::InfiniteFuture()), StatusIs(absl::StatusCode::kUnavailable, HasSubstr("")));
  EXPECT_EQ(gate.held(), 1);  // The held slot stays valid until released.
}

TEST(SlotGateTest, OneClientCannotTakeEverySlotAndWaitingPlace) {
  SlotGate gate(2, 4, "large-image decode", "", /*max_per_key=*/1);
  auto a = gate.Acquire(absl::InfiniteFuture(), "10.0.0.1");
  ASSERT_THAT(a, IsOk());
  // The same client again: refused at once, though a slot is free.
  EXPECT_THAT(gate.Acquire(absl::InfiniteFuture(), "10.0.0.1"),
              StatusIs(absl::StatusCode::kResourceExhausted,
                       HasSubstr("this client already has 1 large-image decode(s)")));
  // Another client gets the free slot; an unnamed caller is not capped.
  auto b = gate.Acquire(absl::InfiniteFuture(), "10.0.0.2");
  ASSERT_THAT(b, IsOk());
  EXPECT_EQ(gate.held(), 2);
  // Released (also through a move): the client may come back.
  SlotGate::Slot moved = std::move(*a);
  { SlotGate::Slot gone = std::move(moved); }
  auto again = gate.Acquire(absl::InfiniteFuture(), "10.0.0.1");
  EXPECT_THAT(again, IsOk());
  // A wait that times out does not leave the client counted.
  SlotGate one(1, 4, "decode", "", 1);
  auto held = one.Acquire(absl::InfiniteFuture(), "x");
  ASSERT_THAT(held, IsOk());
  EXPECT_THAT(one.Acquire(Soon(), "y"), StatusIs(absl::StatusCode::kDeadlineExceeded, HasSubstr("")));
  { auto released = std::move(*held); }
  EXPECT_THAT(one.Acquire(absl::InfiniteFuture(), "y"), IsOk());
}

TEST(SlotGateTest, MovedSlotsReleaseOnce) {
  SlotGate gate(1, 0, "decode");
  auto a = gate.Acquire(absl::InfiniteFuture());
  ASSERT_THAT(a, IsOk());
  SlotGate::Slot moved = std::move(*a);
  SlotGate::Slot again = std::move(moved);
  EXPECT_EQ(gate.held(), 1);
  auto b = std::move(again);
  EXPECT_EQ(gate.held(), 1);
  { SlotGate::Slot gone = std::move(b); }
  EXPECT_EQ(gate.held(), 0);
}

TEST(BackgroundRunnerTest, RunsWorkOnLowPriorityThreadsAndReturnsItsStatus) {
  BackgroundRunner runner(2, 10);
  EXPECT_TRUE(runner.lowered());  // Raising one's nice value needs no privilege.
  std::thread::id caller = std::this_thread::get_id(), ran_on;
  int nice_there = -100;
  EXPECT_THAT(runner.Run([&] {
    ran_on = std::this_thread::get_id();
    errno = 0;
    nice_there = getpriority(PRIO_PROCESS, static_cast<id_t>(syscall(SYS_gettid)));
    return absl::OkStatus();
  }), IsOk());
  EXPECT_NE(ran_on, caller);
  EXPECT_GE(nice_there, 10);
  EXPECT_THAT(runner.Run([] { return absl::InvalidArgumentError("bad image"); }),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("bad image")));
  // Concurrent callers all get their own result.
  std::vector<std::thread> callers;
  std::atomic<int> sum{0};
  for (int i = 1; i <= 8; ++i) {
    callers.emplace_back([&, i] {
      EXPECT_THAT(runner.Run([&, i] {
        sum += i;
        return absl::OkStatus();
      }), IsOk());
    });
  }
  for (std::thread& t : callers) t.join();
  EXPECT_EQ(sum.load(), 36);
}

}  // namespace
}  // namespace skinlesion::serving
