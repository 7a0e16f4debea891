// JobManager with a fake ProcessLauncher (no real processes): the command line and
// environment of each rank, progress and stderr turned into events, success and
// publishing, exit codes and signals, a crashed rank stopping the others, cancel,
// shutdown and resume, and a training process that cannot start.
#include "skinlesion/jobs/manager.h"

#include <signal.h>
#include <sys/wait.h>

#include <filesystem>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "skinlesion/common/csv.h"
#include "skinlesion/jobs/launcher.h"
#include "skinlesion/registry/registry.h"
#include "skinlesion/testing/testing.h"

namespace skinlesion::jobs {
namespace {

using ::skinlesion::testing::IsOk;
using ::skinlesion::testing::TempDir;
using ::skinlesion::testing::WriteFile;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::StartsWith;

// What a fake child does. It "runs" at Launch: appends its lines to the files it was
// given and, with leaves_model, writes a finished run (RUN/model, RUN/report).
struct FakeChild {
  absl::Status launch_error;                // Launch fails with it; nothing runs.
  std::vector<std::string> progress_lines;  // To --progress_jsonl (rank 0 only has it).
  std::vector<std::string> stderr_lines;    // Each ends with '\n' unless it has its own end.
  std::string stderr_tail;                  // Written last, without '\n'.
  bool leaves_model = false;
  std::optional<int> wait_status;  // Its exit, seen by the next Reap; none: runs until stopped.
};

// One Launch as the fake received it.
struct Launched {
  std::vector<std::string> args;
  std::vector<std::string> env;
  std::string stdout_path;
  std::string stderr_path;
  pid_t pid = 0;  // 0: the launch failed.
};

std::string ArgValue(const std::vector<std::string>& args, const std::string& flag) {
  for (const std::string& a : args) {
    if (absl::StartsWith(a, flag + "=")) return a.substr(flag.size() + 1);
  }
  return "";
}

int RankOf(const Launched& launch) {
  for (const std::string& e : launch.env) {
    if (absl::StartsWith(e, "RANK=")) return std::stoi(e.substr(5));
  }
  return 0;
}

void AppendToFile(const std::string& path, const std::string& text) {
  const std::string before = ReadFileToString(path, 1 << 20).value_or("");
  WriteFile(path, before + text);
}

// A finished run directory as `skinlesion train` leaves it.
void WriteFinishedRun(const std::string& run) {
  std::filesystem::create_directories(run + "/model");
  std::filesystem::create_directories(run + "/report");
  const nlohmann::json metrics = {{"balanced_accuracy", 0.6}, {"melanoma_recall", 0.6}};
  WriteFile(run + "/model/model.safetensors", "weights");
  WriteFile(run + "/model/manifest.json",
            nlohmann::json({{"architecture", "resnet18"}, {"image_size", 32}, {"metrics", metrics}})
                .dump());
  WriteFile(run + "/report/metrics.json", metrics.dump());
}

class FakeLauncher final : public ProcessLauncher {
 public:
  // Chooses what the child of each launch does (`index`: 0, 1, ... over the test).
  using Script = std::function<FakeChild(const Launched& launch, int index)>;

  void SetScript(Script script) ABSL_LOCKS_EXCLUDED(mu_) {
    absl::MutexLock lock(&mu_);
    script_ = std::move(script);
  }
  void SetFreePort(absl::StatusOr<int> port) ABSL_LOCKS_EXCLUDED(mu_) {
    absl::MutexLock lock(&mu_);
    free_port_ = std::move(port);
  }

  absl::StatusOr<pid_t> Launch(const std::vector<std::string>& args,
                               const std::vector<std::string>& extra_env,
                               const std::string& stdout_path,
                               const std::string& stderr_path) override ABSL_LOCKS_EXCLUDED(mu_) {
    absl::MutexLock lock(&mu_);
    Launched launch{
        .args = args, .env = extra_env, .stdout_path = stdout_path, .stderr_path = stderr_path};
    const FakeChild child = script_(launch, static_cast<int>(launches_.size()));
    if (!child.launch_error.ok()) {
      launches_.push_back(launch);
      return child.launch_error;
    }
    if (const std::string progress = ArgValue(args, "--progress_jsonl"); !progress.empty()) {
      std::string text;
      for (const std::string& line : child.progress_lines) absl::StrAppend(&text, line, "\n");
      AppendToFile(progress, text);
    }
    std::string err;
    for (const std::string& line : child.stderr_lines) absl::StrAppend(&err, line, "\n");
    AppendToFile(stderr_path, err + child.stderr_tail);
    if (child.leaves_model) WriteFinishedRun(ArgValue(args, "--out"));
    launch.pid = next_pid_++;
    exits_[launch.pid] = child.wait_status;
    launches_.push_back(launch);
    cv_.SignalAll();
    return launch.pid;
  }

  absl::StatusOr<int> FreePort() override ABSL_LOCKS_EXCLUDED(mu_) {
    absl::MutexLock lock(&mu_);
    return free_port_;
  }

  bool Reap(std::vector<Child>& children) override ABSL_LOCKS_EXCLUDED(mu_) {
    absl::MutexLock lock(&mu_);
    bool all = true;
    for (Child& c : children) {
      if (!c.exited && exits_.at(c.pid).has_value()) {
        c.exited = true;
        c.status = *exits_.at(c.pid);
      }
      all &= c.exited;
    }
    return all;
  }

  void Stop(std::vector<Child>& children, absl::Duration /*grace*/) override
      ABSL_LOCKS_EXCLUDED(mu_) {
    absl::MutexLock lock(&mu_);
    for (Child& c : children) {
      if (c.exited) continue;
      c.exited = true;
      c.status = SIGTERM;  // The wait status of a child ended by SIGTERM.
      stopped_.push_back(c.pid);
    }
  }

  std::string DescribeExit(int wait_status) const override {
    return jobs::DescribeExit(wait_status);
  }

  // Waits (at most 30 s) until `n` children were launched, failed launches included.
  bool WaitForLaunches(size_t n) ABSL_LOCKS_EXCLUDED(mu_) {
    absl::MutexLock lock(&mu_);
    const absl::Time deadline = absl::Now() + absl::Seconds(30);
    while (launches_.size() < n) {
      if (cv_.WaitWithDeadline(&mu_, deadline)) return launches_.size() >= n;
    }
    return true;
  }
  std::vector<Launched> launches() const ABSL_LOCKS_EXCLUDED(mu_) {
    absl::MutexLock lock(&mu_);
    return launches_;
  }
  // The children that Stop ended.
  std::vector<pid_t> stopped() const ABSL_LOCKS_EXCLUDED(mu_) {
    absl::MutexLock lock(&mu_);
    return stopped_;
  }

 private:
  mutable absl::Mutex mu_;
  absl::CondVar cv_;  // With mu_: a launch.
  Script script_ ABSL_GUARDED_BY(mu_) = [](const Launched&, int) { return FakeChild(); };
  absl::StatusOr<int> free_port_ ABSL_GUARDED_BY(mu_) = 29555;
  pid_t next_pid_ ABSL_GUARDED_BY(mu_) = 4001;
  std::map<pid_t, std::optional<int>> exits_ ABSL_GUARDED_BY(mu_);
  std::vector<Launched> launches_ ABSL_GUARDED_BY(mu_);
  std::vector<pid_t> stopped_ ABSL_GUARDED_BY(mu_);
};

FakeChild Succeeds() {
  FakeChild child;
  child.progress_lines = {
      R"({"event":"progress","phase":"frozen","epoch":0,"epochs":1,"step":1,"steps":2,"loss":2.5,"images_per_second":40})",
      "not json",
      R"({"event":"epoch","epoch":0,"phase":"frozen","train_loss":2.0,"val_loss":1.5,"val_metrics":{"balanced_accuracy":0.6}})",
      R"({"event":"phase","phase":"exported"})"};
  child.stderr_lines = {"loading data"};
  child.stderr_tail = "done";
  child.leaves_model = true;
  child.wait_status = 0;
  return child;
}

FakeChild RunsUntilStopped() { return FakeChild(); }

FakeChild Exits(int wait_status, std::vector<std::string> stderr_lines = {}) {
  FakeChild child;
  child.wait_status = wait_status;
  child.stderr_lines = std::move(stderr_lines);
  return child;
}

class JobManagerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto r = registry::Registry::Create({.root = dir_.Join("registry")});
    ASSERT_TRUE(r.ok()) << r.status();
    registry_ = std::move(*r);
    std::filesystem::create_directories(dir_.Join("data"));
    WriteFile(dir_.Join("data/HAM10000_metadata.csv"), "lesion_id,image_id,dx\n");
    WriteFile(dir_.Join("split.csv"), "image_id,split\n");
  }

  std::unique_ptr<JobManager> NewManager() {
    JobManager::Options options;
    options.db_path = dir_.Join("jobs.db");
    options.runs_dir = dir_.Join("runs");
    options.cli_path = "/bin/true";  // Must be an executable file; the fake never runs it.
    options.max_concurrent_jobs = 2;
    options.registry = registry_.get();
    options.kill_grace = absl::Seconds(1);
    options.poll_interval = absl::Milliseconds(10);
    options.launcher = &launcher_;
    auto manager = JobManager::Create(options);
    EXPECT_THAT(manager, IsOk());
    return manager.ok() ? std::move(*manager) : nullptr;
  }

  v1::TrainingConfig Config(int world_size = 1) {
    v1::TrainingConfig config;
    config.set_model_name("ham");
    config.set_architecture("resnet18");
    config.set_data_dir(dir_.Join("data"));
    config.set_world_size(world_size);
    return config;
  }

  v1::Job Submit(JobManager& manager, const v1::TrainingConfig& config) {
    auto job = manager.Submit(config);
    EXPECT_THAT(job, IsOk());
    return job.value_or(v1::Job());
  }

  // The job's events up to its terminal state (Watch returns there; 30 s at most).
  static std::vector<v1::JobEvent> WatchToEnd(JobManager& manager, const std::string& id) {
    std::vector<v1::JobEvent> events;
    const absl::Time deadline = absl::Now() + absl::Seconds(30);
    const absl::Status s = manager.Watch(
        id,
        [&](const v1::JobEvent& e) {
          events.push_back(e);
          return true;
        },
        [&] { return absl::Now() > deadline; });
    EXPECT_THAT(s, IsOk());
    return events;
  }

  static std::string LogOf(const std::vector<v1::JobEvent>& events) {
    std::string log;
    for (const v1::JobEvent& e : events) {
      if (e.event_case() == v1::JobEvent::kLogLine) absl::StrAppend(&log, e.log_line(), "\n");
    }
    return log;
  }

  TempDir dir_;
  std::unique_ptr<registry::Registry> registry_;
  FakeLauncher launcher_;  // Declared before any manager: outlives them.
};

TEST_F(JobManagerTest, SucceedsWithProgressAndIsPublished) {
  launcher_.SetScript([](const Launched&, int) { return Succeeds(); });
  auto manager = NewManager();
  ASSERT_NE(manager, nullptr);
  v1::TrainingConfig config = Config();
  config.set_metadata_file(dir_.Join("data/HAM10000_metadata.csv"));
  config.set_split_file(dir_.Join("split.csv"));
  const v1::Job submitted = Submit(*manager, config);
  manager->Start();
  const std::vector<v1::JobEvent> events = WatchToEnd(*manager, submitted.id());

  std::vector<std::string> phases;
  for (const v1::JobEvent& e : events) {
    if (e.event_case() == v1::JobEvent::kProgress) phases.push_back(e.progress().phase());
  }
  // Three progress lines (the one that is not JSON is skipped), then the trainer's publish.
  EXPECT_THAT(phases, ElementsAre("frozen", "frozen", "exported", "publish"));
  ASSERT_FALSE(events.empty());
  EXPECT_EQ(events.back().state(), v1::JOB_STATE_SUCCEEDED);
  const std::string log = LogOf(events);
  EXPECT_THAT(log, HasSubstr("attempt 1: /bin/true train"));
  EXPECT_THAT(log, HasSubstr("loading data\ndone\n"));  // The last line without '\n' too.
  EXPECT_THAT(log, HasSubstr("published ham version 1 (staging)"));

  const v1::Job job = manager->Get(submitted.id()).value();
  EXPECT_EQ(job.state(), v1::JOB_STATE_SUCCEEDED);
  EXPECT_EQ(job.attempt(), 1);
  EXPECT_EQ(job.published().version(), 1);
  EXPECT_EQ(job.published().alias(), "staging");
  EXPECT_EQ(job.progress().validation_metrics().at("balanced_accuracy"), 0.6);
  EXPECT_EQ(registry_->GetAlias("ham", "staging")->version, 1);
  EXPECT_EQ(manager->store().GetPid(job.id()).value(), 0);

  // The exact command line: no --resume on attempt 1, no distributed environment.
  const std::string run = dir_.Join("runs/" + job.id());
  EXPECT_EQ(job.run_dir(), run);
  const std::vector<Launched> launches = launcher_.launches();
  ASSERT_EQ(launches.size(), 1u);
  EXPECT_THAT(launches[0].args,
              ElementsAre("/bin/true", "train", "--data=" + dir_.Join("data"), "--out=" + run,
                          "--config=" + run + "/job_config.json", "--device=cpu",
                          "--metadata=" + dir_.Join("data/HAM10000_metadata.csv"),
                          "--split=" + dir_.Join("split.csv"),
                          "--progress_jsonl=" + run + "/progress.jsonl"));
  EXPECT_TRUE(launches[0].env.empty());
  EXPECT_EQ(launches[0].stdout_path, run + "/logs/rank0.stdout");
  EXPECT_EQ(launches[0].stderr_path, run + "/logs/rank0.stderr");
  const nlohmann::json written =
      nlohmann::json::parse(ReadFileToString(run + "/job_config.json", 1 << 20).value_or("{}"));
  EXPECT_EQ(written.value("architecture", ""), "resnet18");
}

TEST_F(JobManagerTest, AnExitCodeOrSignalFailsWithTheLastStderrLines) {
  launcher_.SetScript([](const Launched&, int index) {
    return index == 0 ? Exits(W_EXITCODE(3, 0), {"reading split", "no such split 'x'"})
                      : Exits(SIGKILL);
  });
  auto manager = NewManager();
  ASSERT_NE(manager, nullptr);
  const v1::Job exits = Submit(*manager, Config());
  manager->Start();
  WatchToEnd(*manager, exits.id());
  const v1::Job failed = manager->Get(exits.id()).value();
  EXPECT_EQ(failed.state(), v1::JOB_STATE_FAILED);
  EXPECT_EQ(
      failed.failure_reason(),
      "skinlesion train exited with code 3; last stderr lines:\nreading split\nno such split 'x'");

  const v1::Job killed = Submit(*manager, Config());
  WatchToEnd(*manager, killed.id());
  EXPECT_EQ(manager->Get(killed.id())->failure_reason(),
            "skinlesion train killed by signal 9 (Killed), possibly out of memory");
  EXPECT_TRUE(launcher_.stopped().empty());
  EXPECT_FALSE(registry_->ListVersions("ham").ok() && !registry_->ListVersions("ham")->empty());
}

TEST_F(JobManagerTest, ACrashedRankStopsTheOthers) {
  launcher_.SetScript([](const Launched& launch, int) {
    return RankOf(launch) == 1 ? Exits(W_EXITCODE(1, 0), {"NCCL error"}) : RunsUntilStopped();
  });
  auto manager = NewManager();
  ASSERT_NE(manager, nullptr);
  const v1::Job submitted = Submit(*manager, Config(/*world_size=*/2));
  manager->Start();
  const std::string log = LogOf(WatchToEnd(*manager, submitted.id()));
  const v1::Job job = manager->Get(submitted.id()).value();
  EXPECT_EQ(job.state(), v1::JOB_STATE_FAILED);
  EXPECT_THAT(job.failure_reason(), StartsWith("rank 1: skinlesion train exited with code 1"));
  EXPECT_THAT(job.failure_reason(), HasSubstr("last stderr lines:\n[rank 1] NCCL error"));
  EXPECT_THAT(log, HasSubstr(" x2 ranks"));

  const std::vector<Launched> launches = launcher_.launches();
  ASSERT_EQ(launches.size(), 2u);
  EXPECT_EQ(launcher_.stopped(), std::vector<pid_t>{launches[0].pid});  // Rank 0, stopped.
  const std::string run = job.run_dir();
  EXPECT_THAT(launches[0].env,
              ElementsAre("MASTER_ADDR=127.0.0.1", "MASTER_PORT=29555", "WORLD_SIZE=2", "RANK=0"));
  EXPECT_THAT(launches[1].env,
              ElementsAre("MASTER_ADDR=127.0.0.1", "MASTER_PORT=29555", "WORLD_SIZE=2", "RANK=1"));
  EXPECT_EQ(launches[0].args.back(), "--progress_jsonl=" + run + "/progress.jsonl");
  std::vector<std::string> rank0_args = launches[0].args;
  rank0_args.pop_back();
  EXPECT_EQ(launches[1].args, rank0_args);  // Only rank 0 reports progress.
  EXPECT_EQ(launches[1].stderr_path, run + "/logs/rank1.stderr");
}

TEST_F(JobManagerTest, CancelStopsTheChildren) {
  launcher_.SetScript([](const Launched&, int) { return RunsUntilStopped(); });
  auto manager = NewManager();
  ASSERT_NE(manager, nullptr);
  const v1::Job submitted = Submit(*manager, Config());
  manager->Start();
  ASSERT_TRUE(launcher_.WaitForLaunches(1));
  auto cancelled = manager->Cancel(submitted.id());
  ASSERT_THAT(cancelled, IsOk());
  EXPECT_EQ(cancelled->state(), v1::JOB_STATE_CANCELLED);
  EXPECT_THAT(cancelled->notes(), ElementsAre("cancelled while running"));
  EXPECT_EQ(launcher_.stopped(), std::vector<pid_t>{launcher_.launches()[0].pid});
  EXPECT_EQ(manager->store().GetPid(submitted.id()).value(), 0);
}

TEST_F(JobManagerTest, ShutdownRequeuesAndTheNextManagerResumes) {
  launcher_.SetScript(
      [](const Launched&, int index) { return index == 0 ? RunsUntilStopped() : Succeeds(); });
  auto first = NewManager();
  ASSERT_NE(first, nullptr);
  const v1::Job submitted = Submit(*first, Config());
  first->Start();
  ASSERT_TRUE(launcher_.WaitForLaunches(1));
  first->Shutdown();
  EXPECT_EQ(first->Get(submitted.id())->state(), v1::JOB_STATE_QUEUED);
  EXPECT_EQ(launcher_.stopped(), std::vector<pid_t>{launcher_.launches()[0].pid});
  first.reset();

  auto second = NewManager();
  ASSERT_NE(second, nullptr);
  second->Start();
  const std::string log = LogOf(WatchToEnd(*second, submitted.id()));
  EXPECT_THAT(log, HasSubstr("trainer stopping: job re-queued"));
  EXPECT_THAT(log, HasSubstr("attempt 2 (resuming from the last checkpoint): /bin/true train"));
  const v1::Job job = second->Get(submitted.id()).value();
  EXPECT_EQ(job.state(), v1::JOB_STATE_SUCCEEDED);
  EXPECT_EQ(job.attempt(), 2);
  const std::vector<Launched> launches = launcher_.launches();
  ASSERT_EQ(launches.size(), 2u);
  EXPECT_THAT(launches[0].args, ::testing::Not(::testing::Contains("--resume")));
  EXPECT_THAT(launches[1].args, ::testing::Contains("--resume"));
}

TEST_F(JobManagerTest, ATrainingProcessThatCannotStartFailsTheJob) {
  launcher_.SetScript([](const Launched& launch, int) {
    FakeChild child = RunsUntilStopped();
    if (RankOf(launch) == 1 || launch.env.empty()) {
      child.launch_error =
          absl::ResourceExhaustedError("fork failed: Resource temporarily unavailable");
    }
    return child;
  });
  auto manager = NewManager();
  ASSERT_NE(manager, nullptr);
  const v1::Job single = Submit(*manager, Config());
  manager->Start();
  WatchToEnd(*manager, single.id());
  EXPECT_EQ(manager->Get(single.id())->failure_reason(),
            "cannot start the training process: fork failed: Resource temporarily unavailable");
  EXPECT_TRUE(launcher_.stopped().empty());

  // Rank 1 cannot start: rank 0, started, is stopped.
  const v1::Job pair = Submit(*manager, Config(/*world_size=*/2));
  WatchToEnd(*manager, pair.id());
  EXPECT_EQ(manager->Get(pair.id())->state(), v1::JOB_STATE_FAILED);
  EXPECT_THAT(manager->Get(pair.id())->failure_reason(),
              StartsWith("cannot start the training process: fork failed"));
  const std::vector<Launched> launches = launcher_.launches();
  ASSERT_EQ(launches.size(), 3u);
  EXPECT_EQ(launcher_.stopped(), std::vector<pid_t>{launches[1].pid});
}

TEST_F(JobManagerTest, NoFreePortFailsADistributedJob) {
  launcher_.SetFreePort(absl::InternalError("cannot find a free port for MASTER_PORT"));
  auto manager = NewManager();
  ASSERT_NE(manager, nullptr);
  const v1::Job submitted = Submit(*manager, Config(/*world_size=*/2));
  manager->Start();
  WatchToEnd(*manager, submitted.id());
  const v1::Job job = manager->Get(submitted.id()).value();
  EXPECT_EQ(job.state(), v1::JOB_STATE_FAILED);
  EXPECT_EQ(job.failure_reason(), "cannot find a free port for MASTER_PORT");
  EXPECT_TRUE(launcher_.launches().empty());
}

}  // namespace
}  // namespace skinlesion::jobs
