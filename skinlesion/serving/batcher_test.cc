// The batching rules (batcher.h) on a FakeClock: delays, queue times and deadlines
// are exact, and no test waits on the wall clock.
#include "skinlesion/serving/batcher.h"

#include <memory>
#include <thread>
#include <vector>

#include "gtest/gtest.h"
#include "skinlesion/serving/clock.h"
#include "skinlesion/serving/test_fakes.h"
#include "skinlesion/testing/testing.h"

namespace skinlesion::serving {
namespace {

using ::skinlesion::serving::testing::FakeModel;
using ::skinlesion::serving::testing::Results;
using ::skinlesion::testing::IsOk;
using ::skinlesion::testing::StatusIs;
using ::testing::HasSubstr;
using Result = absl::StatusOr<InferResult>;

constexpr int kInputSize = 4;  // Fake models take [3, 4, 4] inputs.

class BatcherTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto version = std::make_shared<LoadedVersion>();
    version->spec.name = "ham";
    version->spec.version = 1;
    version->spec.image_size = kInputSize;
    version->spec.document = nlohmann::json::object();
    auto instance = fake_.Loader()(version->spec);
    ASSERT_TRUE(instance.ok()) << instance.status();
    version->instance = *std::move(instance);
    version_ = std::move(version);
    options_.max_batch_size = 4;
    options_.max_queue_delay = absl::Milliseconds(30);
    options_.skip_delay_after_lone_arrivals = 0;
  }

  void TearDown() override {
    fake_.Open();
    if (batcher_ != nullptr) batcher_->Shutdown(absl::ZeroDuration());
  }

  void Start() {
    batcher_ = std::make_unique<Batcher>("ham", options_, DecodeLimits{}, nullptr, clock_);
  }

  // Queues a tensor request received now; its result lands in results_.
  void Enqueue(absl::Time deadline = absl::InfiniteFuture(), bool grouped = false) {
    PendingRequest r;
    r.version = version_;
    r.input.assign(3 * kInputSize * kInputSize, 0.5f);
    r.received = clock_.Now();
    r.deadline = deadline;
    r.grouped = grouped;
    r.done = results_.Callback();
    ASSERT_THAT(batcher_->Enqueue(std::move(r)), IsOk());
  }

  // Waits for `n` results in all, and returns them.
  std::vector<Result> WaitResults(size_t n) {
    EXPECT_TRUE(results_.WaitCount(n)) << "fewer than " << n << " results";
    return results_.Get();
  }
  size_t ResultCount() { return results_.Get().size(); }

  FakeClock clock_;
  FakeModel fake_;
  BatchingOptions options_;
  std::shared_ptr<const LoadedVersion> version_;
  Results results_;  // Outlives batcher_, which answers into it.
  std::unique_ptr<Batcher> batcher_;
};

// The batch never fills: it runs when max_queue_delay has passed, not a tick before.
TEST_F(BatcherTest, ARequestAloneWaitsExactlyTheDelay) {
  Start();
  Enqueue();
  ASSERT_TRUE(clock_.AwaitTimedWaiters(1));  // The worker waits for company.
  clock_.Advance(absl::Milliseconds(29));
  EXPECT_EQ(clock_.timed_waiters(), 1);
  EXPECT_EQ(ResultCount(), 0u);
  EXPECT_TRUE(fake_.batch_sizes().empty());
  clock_.Advance(absl::Milliseconds(1));
  const std::vector<Result> results = WaitResults(1);
  ASSERT_THAT(results[0], IsOk());
  EXPECT_EQ(results[0]->batch_size, 1);
  EXPECT_EQ(results[0]->queue_ms, 30.0);
  EXPECT_EQ(results[0]->total_ms, 30.0);
  EXPECT_EQ(results[0]->compute_ms, 0.0);
}

// Requests that arrive within the delay of the oldest run together; a full batch
// runs at once; the delay counts from the oldest request.
TEST_F(BatcherTest, RequestsArrivingTogetherShareABatch) {
  Start();
  Enqueue();
  clock_.Advance(absl::Milliseconds(10));
  Enqueue();
  Enqueue();
  clock_.Advance(absl::Milliseconds(19));
  EXPECT_EQ(ResultCount(), 0u);
  clock_.Advance(absl::Milliseconds(1));  // 30 ms after the oldest.
  std::vector<Result> results = WaitResults(3);
  EXPECT_EQ(fake_.batch_sizes(), std::vector<int>{3});
  std::vector<double> queue_ms;
  for (const Result& r : results) {
    ASSERT_THAT(r, IsOk());
    EXPECT_EQ(r->batch_size, 3);
    queue_ms.push_back(r->queue_ms);
  }
  EXPECT_EQ(queue_ms, (std::vector<double>{30.0, 20.0, 20.0}));

  // Four (max_batch_size) need no time at all; the fifth waits for the delay.
  fake_.ResetRuns();
  for (int i = 0; i < 5; ++i) Enqueue();
  results = WaitResults(7);
  EXPECT_EQ(fake_.batch_sizes(), std::vector<int>{4});
  for (size_t i = 3; i < 7; ++i) EXPECT_EQ(results[i]->queue_ms, 0.0);
  clock_.Advance(absl::Milliseconds(30));
  results = WaitResults(8);
  EXPECT_EQ(fake_.batch_sizes(), (std::vector<int>{4, 1}));
  EXPECT_EQ(results[7]->queue_ms, 30.0);
}

// A request that queued while a batch ran has waited for the worker, not for
// company: when the batch ends it still gets the delay for the clients just answered
// to send again (closed-loop traffic), instead of running alone at once.
TEST_F(BatcherTest, ARequestQueuedDuringABatchWaitsForTheNextClientsFromItsEnd) {
  Start();
  fake_.Close();
  for (int i = 0; i < 4; ++i) Enqueue();  // Full: runs at once, held by the gate.
  ASSERT_TRUE(fake_.WaitRuns(1));
  Enqueue();                               // Queues while the batch runs...
  clock_.Advance(absl::Milliseconds(50));  // ...for longer than the delay.
  fake_.Open();
  WaitResults(4);
  ASSERT_TRUE(clock_.AwaitTimedWaiters(1)) << "the straggler ran without waiting for company";
  for (int i = 0; i < 3; ++i) Enqueue();  // The answered clients come back: a full batch.
  std::vector<Result> results = WaitResults(8);
  EXPECT_EQ(fake_.batch_sizes(), (std::vector<int>{4, 4}));
  EXPECT_EQ(results[4]->queue_ms, 50.0);

  // Nobody comes: the straggler runs the delay after the batch ended, not before.
  fake_.Close();
  for (int i = 0; i < 4; ++i) Enqueue();
  ASSERT_TRUE(fake_.WaitRuns(3));
  Enqueue();
  clock_.Advance(absl::Milliseconds(50));
  fake_.Open();
  WaitResults(12);
  ASSERT_TRUE(clock_.AwaitTimedWaiters(1));
  clock_.Advance(absl::Milliseconds(29));
  EXPECT_EQ(ResultCount(), 12u);
  clock_.Advance(absl::Milliseconds(1));
  results = WaitResults(13);
  EXPECT_EQ(fake_.batch_sizes(), (std::vector<int>{4, 4, 4, 1}));
  EXPECT_EQ(results[12]->queue_ms, 80.0);
}

// Sequential traffic: after skip_delay_after_lone_arrivals arrivals that found the
// batcher idle, a lone request waits a tenth of the delay; grouped requests never do.
TEST_F(BatcherTest, ALoneRequestIsNotHeldForTheFullDelay) {
  options_.max_queue_delay = absl::Milliseconds(1000);
  options_.skip_delay_after_lone_arrivals = 2;
  Start();
  for (int i = 0; i < 3; ++i) {
    Enqueue();
    clock_.Advance(absl::Milliseconds(100));
    if (i == 0) {
      EXPECT_EQ(ResultCount(), 0u) << "the first arrival has no history: it waits";
      clock_.Advance(absl::Milliseconds(900));
    }
    const std::vector<Result> results = WaitResults(i + 1);
    ASSERT_THAT(results[i], IsOk());
    EXPECT_EQ(results[i]->queue_ms, i == 0 ? 1000.0 : 100.0) << "arrival " << i;
  }
  // Grouped requests (one KServe call's items) wait for each other.
  Enqueue(absl::InfiniteFuture(), /*grouped=*/true);
  clock_.Advance(absl::Milliseconds(100));
  EXPECT_EQ(ResultCount(), 3u);
  Enqueue(absl::InfiniteFuture(), /*grouped=*/true);
  clock_.Advance(absl::Milliseconds(900));
  const std::vector<Result> results = WaitResults(5);
  EXPECT_EQ(results[3]->batch_size, 2);
  EXPECT_EQ(results[3]->queue_ms, 1000.0);
  EXPECT_EQ(results[4]->queue_ms, 900.0);
}

// A deadline that passes while the request waits for its batch: DeadlineExceeded
// without compute; the rest of the batch runs.
TEST_F(BatcherTest, ADeadlineThatPassesWhileQueuedIsDeadlineExceeded) {
  Start();
  Enqueue(clock_.Now() + absl::Milliseconds(10));
  Enqueue();
  clock_.Advance(absl::Milliseconds(10));
  EXPECT_EQ(ResultCount(), 0u);  // Answered when its batch is due, not before.
  clock_.Advance(absl::Milliseconds(20));
  const std::vector<Result> results = WaitResults(2);
  EXPECT_THAT(results[0], StatusIs(absl::StatusCode::kDeadlineExceeded,
                                   HasSubstr("deadline passed after 30ms in the queue of ham")));
  ASSERT_THAT(results[1], IsOk());
  EXPECT_EQ(results[1]->batch_size, 1);
  EXPECT_EQ(fake_.batch_sizes(), std::vector<int>{1});
}

// Shutdown drains what is queued for at most `drain` of the clock's time.
TEST_F(BatcherTest, ShutdownDrainsForTheClocksTime) {
  options_.max_batch_size = 1;
  Start();
  fake_.Close();
  for (int i = 0; i < 3; ++i) Enqueue();
  ASSERT_TRUE(fake_.WaitRuns(1));  // The first runs (held); two are queued.
  std::thread shutdown([&] { batcher_->Shutdown(absl::Milliseconds(20)); });
  ASSERT_TRUE(clock_.AwaitTimedWaiters(1));  // Draining.
  clock_.Advance(absl::Milliseconds(19));
  EXPECT_EQ(ResultCount(), 0u);
  EXPECT_EQ(batcher_->queue_depth(), 2);
  clock_.Advance(absl::Milliseconds(1));
  std::vector<Result> results = WaitResults(2);  // The queued two.
  for (const Result& r : results) {
    EXPECT_THAT(r, StatusIs(absl::StatusCode::kUnavailable, HasSubstr("shut down before")));
  }
  fake_.Open();
  shutdown.join();
  results = WaitResults(3);
  EXPECT_THAT(results[2], IsOk());
}

}  // namespace
}  // namespace skinlesion::serving
