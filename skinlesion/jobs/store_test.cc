#include "skinlesion/jobs/store.h"

#include <thread>

#include "gtest/gtest.h"
#include "skinlesion/testing/testing.h"

namespace skinlesion::jobs {
namespace {

using ::skinlesion::testing::IsOk;
using ::skinlesion::testing::StatusIs;
using ::skinlesion::testing::TempDir;
using ::testing::HasSubstr;

v1::TrainingConfig Config(const std::string& model) {
  v1::TrainingConfig c;
  c.set_model_name(model);
  c.set_architecture("resnet18");
  c.set_epochs(2);
  c.set_extra_json(R"({"frozen_epochs": 1})");
  return c;
}

TEST(JobStoreTest, CreateGetListAndFilterByState) {
  TempDir dir;
  auto store = JobStore::Open(dir.Join("jobs.db"));
  ASSERT_THAT(store, IsOk());
  auto a = (*store)->Create(Config("model-a"));
  auto b = (*store)->Create(Config("model-b"));
  ASSERT_THAT(a, IsOk());
  ASSERT_THAT(b, IsOk());
  EXPECT_NE(a->id(), b->id());
  EXPECT_EQ(a->state(), v1::JOB_STATE_QUEUED);
  EXPECT_TRUE(a->has_created());

  auto got = (*store)->Get(a->id());
  ASSERT_THAT(got, IsOk());
  EXPECT_EQ(got->config().model_name(), "model-a");
  EXPECT_EQ(got->config().extra_json(), R"({"frozen_epochs": 1})");
  EXPECT_THAT((*store)->Get("job-nope"),
              StatusIs(absl::StatusCode::kNotFound, HasSubstr("job-nope")));

  ASSERT_THAT((*store)->Update(b->id(), [](v1::Job& j) { j.set_state(v1::JOB_STATE_RUNNING); }),
              IsOk());
  auto queued = (*store)->List({v1::JOB_STATE_QUEUED});
  ASSERT_THAT(queued, IsOk());
  ASSERT_EQ(queued->size(), 1u);
  EXPECT_EQ((*queued)[0].id(), a->id());
  auto all = (*store)->List({});
  ASSERT_EQ(all->size(), 2u);
  EXPECT_EQ((*all)[0].id(), a->id());  // Oldest first.
  auto both = (*store)->List({v1::JOB_STATE_QUEUED, v1::JOB_STATE_RUNNING});
  EXPECT_EQ(both->size(), 2u);
  EXPECT_TRUE((*store)->List({v1::JOB_STATE_FAILED})->empty());
}

TEST(JobStoreTest, StateMachineRejectsIllegalTransitionsAndStampsTimes) {
  TempDir dir;
  auto store = *JobStore::Open(dir.Join("jobs.db"));
  const v1::Job job = *store->Create(Config("m"));
  // QUEUED -> SUCCEEDED skips RUNNING.
  EXPECT_THAT(store->Update(job.id(), [](v1::Job& j) { j.set_state(v1::JOB_STATE_SUCCEEDED); }),
              StatusIs(absl::StatusCode::kFailedPrecondition,
                       HasSubstr("queued, cannot become succeeded")));
  EXPECT_EQ(store->Get(job.id())->state(), v1::JOB_STATE_QUEUED);  // Nothing written.

  auto running = store->Update(job.id(), [](v1::Job& j) {
    j.set_state(v1::JOB_STATE_RUNNING);
    j.set_attempt(1);
    j.set_run_dir("/runs/x");
  });
  ASSERT_THAT(running, IsOk());
  EXPECT_TRUE(running->has_started());
  EXPECT_FALSE(running->has_finished());
  // RUNNING -> QUEUED (the trainer stopped) -> RUNNING again.
  ASSERT_THAT(store->Update(job.id(), [](v1::Job& j) { j.set_state(v1::JOB_STATE_QUEUED); }),
              IsOk());
  ASSERT_THAT(store->Update(job.id(), [](v1::Job& j) { j.set_state(v1::JOB_STATE_RUNNING); }),
              IsOk());
  auto failed = store->Update(job.id(), [](v1::Job& j) {
    j.set_state(v1::JOB_STATE_FAILED);
    j.set_failure_reason("exited with code 1");
  });
  ASSERT_THAT(failed, IsOk());
  EXPECT_TRUE(failed->has_finished());
  // Terminal states are final.
  for (v1::JobState to : {v1::JOB_STATE_QUEUED, v1::JOB_STATE_RUNNING, v1::JOB_STATE_CANCELLED}) {
    EXPECT_THAT(
        store->Update(job.id(), [to](v1::Job& j) { j.set_state(to); }),
        StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("failed, cannot become")));
  }
  EXPECT_THAT(store->Update("job-missing", [](v1::Job&) {}),
              StatusIs(absl::StatusCode::kNotFound, HasSubstr("job-missing")));

  EXPECT_TRUE(IsAllowedTransition(v1::JOB_STATE_QUEUED, v1::JOB_STATE_CANCELLED));
  EXPECT_TRUE(IsAllowedTransition(v1::JOB_STATE_RUNNING, v1::JOB_STATE_CANCELLED));
  EXPECT_FALSE(IsAllowedTransition(v1::JOB_STATE_CANCELLED, v1::JOB_STATE_QUEUED));
  EXPECT_TRUE(IsTerminal(v1::JOB_STATE_SUCCEEDED));
  EXPECT_FALSE(IsTerminal(v1::JOB_STATE_RUNNING));
}

TEST(JobStoreTest, EverythingSurvivesReopening) {
  TempDir dir;
  std::string id;
  {
    auto store = *JobStore::Open(dir.Join("jobs.db"));
    id = store->Create(Config("durable"))->id();
    (void)store->Create(Config("second"));
    ASSERT_THAT(
        store->Update(id,
                      [](v1::Job& j) {
                        j.set_state(v1::JOB_STATE_RUNNING);
                        j.set_attempt(2);
                        j.set_run_dir("/runs/durable");
                        j.mutable_progress()->set_epoch(1);
                        j.mutable_progress()->set_loss(0.5);
                        (*j.mutable_progress()->mutable_validation_metrics())["balanced_accuracy"] =
                            0.75;
                        j.mutable_published()->set_name("durable");
                        j.mutable_published()->set_version(3);
                        j.mutable_published()->set_alias("staging");
                        j.add_notes("a note");
                      }),
        IsOk());
    ASSERT_THAT(store->SetPid(id, 4242), IsOk());
    v1::JobEvent e;
    e.set_log_line("hello");
    ASSERT_THAT(store->AppendEvent(id, e), IsOk());
  }
  auto store = *JobStore::Open(dir.Join("jobs.db"));
  auto job = store->Get(id);
  ASSERT_THAT(job, IsOk());
  EXPECT_EQ(job->state(), v1::JOB_STATE_RUNNING);
  EXPECT_EQ(job->attempt(), 2);
  EXPECT_EQ(job->run_dir(), "/runs/durable");
  EXPECT_EQ(job->progress().epoch(), 1);
  EXPECT_DOUBLE_EQ(job->progress().validation_metrics().at("balanced_accuracy"), 0.75);
  EXPECT_EQ(job->published().version(), 3);
  EXPECT_EQ(job->published().alias(), "staging");
  ASSERT_EQ(job->notes_size(), 1);
  EXPECT_EQ(job->notes(0), "a note");
  EXPECT_EQ(*store->GetPid(id), 4242);
  auto events = store->Events(id, 0);
  ASSERT_THAT(events, IsOk());
  ASSERT_EQ(events->size(), 1u);
  EXPECT_EQ((*events)[0].log_line(), "hello");
  EXPECT_EQ(store->List({v1::JOB_STATE_QUEUED})->size(), 1u);
}

TEST(JobStoreTest, EventsAreNumberedPerJobAndReadAfterASequence) {
  TempDir dir;
  auto store = *JobStore::Open(dir.Join("jobs.db"));
  const std::string a = store->Create(Config("a"))->id();
  const std::string b = store->Create(Config("b"))->id();
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < 10; ++i) {
        v1::JobEvent e;
        e.mutable_progress()->set_step(t * 100 + i);
        ASSERT_THAT(store->AppendEvent(t % 2 ? b : a, e), IsOk());
      }
    });
  }
  for (auto& t : threads) t.join();
  auto events = *store->Events(a, 0);
  ASSERT_EQ(events.size(), 20u);
  for (size_t i = 0; i < events.size(); ++i) {
    EXPECT_EQ(events[i].sequence(), static_cast<int64_t>(i) + 1);
    EXPECT_EQ(events[i].job_id(), a);
    EXPECT_TRUE(events[i].has_time());
  }
  auto tail = *store->Events(a, 15);
  ASSERT_EQ(tail.size(), 5u);
  EXPECT_EQ(tail[0].sequence(), 16);
  EXPECT_EQ(store->Events(b, 0, 3)->size(), 3u);
  EXPECT_TRUE(store->Events("job-unknown", 0)->empty());
}

TEST(JobStoreTest, OpenFailsClearlyOnAnUnusablePath) {
  TempDir dir;
  EXPECT_THAT(JobStore::Open(dir.Join("no/such/dir/jobs.db")),
              StatusIs(absl::StatusCode::kUnavailable, HasSubstr("cannot open")));
  skinlesion::testing::WriteFile(dir.Join("garbage.db"), std::string(4096, 'x'));
  EXPECT_THAT(JobStore::Open(dir.Join("garbage.db")),
              StatusIs(absl::StatusCode::kDataLoss, HasSubstr("job store")));
}

TEST(JobStoreTest, StateNames) {
  EXPECT_EQ(StateName(v1::JOB_STATE_QUEUED), "queued");
  EXPECT_EQ(StateName(v1::JOB_STATE_CANCELLED), "cancelled");
  EXPECT_EQ(StateName(v1::JOB_STATE_UNSPECIFIED), "unspecified");
}

}  // namespace
}  // namespace skinlesion::jobs
