// The skinlesion-trainer binary with the real `skinlesion` CLI as its jobs'
// processes, on the committed fixtures (a tiny resnet18 at 32 px): full jobs that
// publish to the registry, late watchers, cancel, crashing jobs, kill -9 and
// restart (queued stays queued, running resumes), SIGTERM, auth, TLS, metrics.
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <regex>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "google/protobuf/util/message_differencer.h"
#include "grpcpp/grpcpp.h"
#include "grpcpp/impl/codegen/client_unary_call.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "skinlesion/common/csv.h"
#include "skinlesion/jobs/store.h"
#include "skinlesion/registry/registry.h"
#include "skinlesion/telemetry/grpc_health.h"
#include "skinlesion/testing/testing.h"
#include "skinlesion/v1/registry.grpc.pb.h"
#include "skinlesion/v1/training.grpc.pb.h"

namespace skinlesion::jobs {
namespace {

namespace fs = std::filesystem;
using ::skinlesion::testing::IsOk;
using ::skinlesion::testing::SourcePath;
using ::skinlesion::testing::TempDir;
using ::skinlesion::testing::WriteFile;
using ::testing::AllOf;
using ::testing::Contains;
using ::testing::HasSubstr;
using Clock = std::chrono::steady_clock;

using Process = ::skinlesion::testing::ChildProcess;

// Also for /proc files (whose size reads as 0).
std::string Slurp(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

// Runs a command; its exit code and stdout+stderr.
std::pair<int, std::string> RunCommand(const std::string& command) {
  std::FILE* pipe = ::popen((command + " 2>&1").c_str(), "r");
  std::string out;
  char buffer[4096];
  size_t n;
  while ((n = std::fread(buffer, 1, sizeof(buffer), pipe)) > 0) out.append(buffer, n);
  const int status = ::pclose(pipe);
  return {WIFEXITED(status) ? WEXITSTATUS(status) : -1, out};
}

// Processes whose command line mentions `needle` (the jobs' run directories).
std::vector<pid_t> ProcessesMentioning(const std::string& needle) {
  std::vector<pid_t> pids;
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator("/proc", ec)) {
    const std::string name = entry.path().filename().string();
    if (name.find_first_not_of("0123456789") != std::string::npos) continue;
    std::string cmdline = Slurp(entry.path().string() + "/cmdline");
    std::replace(cmdline.begin(), cmdline.end(), '\0', ' ');
    const std::string status = Slurp(entry.path().string() + "/status");
    if (cmdline.find(needle) != std::string::npos &&
        status.find("State:\tZ") == std::string::npos) {
      pids.push_back(std::stoi(name));
    }
  }
  return pids;
}

bool NoProcessMentions(const std::string& needle, std::chrono::seconds within) {
  const auto end = Clock::now() + within;
  while (Clock::now() < end) {
    if (ProcessesMentioning(needle).empty()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  return false;
}

// The shared fixture: a split of the 14 fixture images that fills train/val/test.
class TrainerBinaryTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    fixture_dir_ = new TempDir();
    const std::string fix = SourcePath("tests/fixtures/ham10000");
    const auto [code, out] = RunCommand(
        absl::StrCat(SKINLESION_CLI_BINARY, " split --data ", fix, "/images --metadata ", fix,
                     "/metadata_subset.csv --out ", fixture_dir_->Join("split0.csv"),
                     " --train 0.34 --val 0.33 --test 0.33 --seed 1"));
    ASSERT_EQ(code, 0) << out;
    // Two lesions per class cannot fill three partitions: every other val image -> test.
    std::vector<std::string> lines = absl::StrSplit(Slurp(fixture_dir_->Join("split0.csv")), '\n');
    int n = 0;
    for (size_t i = 1; i < lines.size(); ++i) {
      std::vector<std::string> fields = absl::StrSplit(lines[i], ',');
      if (fields.size() >= 3 && fields[2] == "val" && (n++ % 2)) {
        fields[2] = "test";
        lines[i] = absl::StrJoin(fields, ",");
      }
    }
    WriteFile(fixture_dir_->Join("split.csv"), absl::StrJoin(lines, "\n"));
  }
  static void TearDownTestSuite() {
    delete fixture_dir_;
    fixture_dir_ = nullptr;
  }

  static v1::TrainingConfig TinyConfig(const std::string& model, int epochs) {
    const std::string fix = SourcePath("tests/fixtures/ham10000");
    v1::TrainingConfig c;
    c.set_model_name(model);
    c.set_architecture("resnet18");
    c.set_data_dir(fix + "/images");
    c.set_metadata_file(fix + "/metadata_subset.csv");
    c.set_split_file(fixture_dir_->Join("split.csv"));
    c.set_image_size(32);
    c.set_epochs(epochs);
    c.set_batch_size(4);
    c.set_extra_json(
        R"({"frozen_epochs": 1, "num_workers": 1, "threads": 1, "progress_interval_s": 0, "patience": 0})");
    return c;
  }

  // Starts the trainer on `state` (a directory) and waits for its port.
  void StartTrainer(const std::vector<std::string>& extra = {}) {
    std::vector<std::string> args = {SKINLESION_TRAINER_BINARY,
                                     "--state_dir=" + dir_.Join("state"),
                                     "--registry_root=" + dir_.Join("registry"),
                                     "--cli=" SKINLESION_CLI_BINARY,
                                     "--address=127.0.0.1",
                                     "--port=0",
                                     "--device=cpu",
                                     "--kill_grace_s=3"};
    args.insert(args.end(), extra.begin(), extra.end());
    log_ = dir_.Join(absl::StrCat("trainer", starts_++, ".log"));
    trainer_ = std::make_unique<Process>(args, log_, /*append=*/true);  // Restarts keep one log.
    const std::regex listening("listening on 127\\.0\\.0\\.1:([0-9]+)");
    port_ = 0;
    for (int i = 0; i < 3000 && port_ == 0; ++i) {
      std::smatch m;
      const std::string text = Slurp(log_);
      if (std::regex_search(text, m, listening)) {
        port_ = std::stoi(m[1]);
      } else if (trainer_->Wait(std::chrono::milliseconds(10)) != -1) {
        break;
      }
    }
    ASSERT_GT(port_, 0) << Slurp(log_);
    channel_ =
        grpc::CreateChannel(absl::StrCat("127.0.0.1:", port_), grpc::InsecureChannelCredentials());
    stub_ = v1::TrainerService::NewStub(channel_);
  }

  grpc::Status Submit(const v1::TrainingConfig& config, v1::Job* job,
                      const std::string& token = "") {
    grpc::ClientContext context;
    if (!token.empty()) context.AddMetadata("authorization", "Bearer " + token);
    v1::SubmitJobRequest request;
    *request.mutable_config() = config;
    return stub_->SubmitJob(&context, request, job);
  }
  v1::Job Get(const std::string& id) {
    grpc::ClientContext context;
    v1::GetJobRequest request;
    request.set_id(id);
    v1::Job job;
    const grpc::Status s = stub_->GetJob(&context, request, &job);
    EXPECT_TRUE(s.ok()) << s.error_message();
    return job;
  }
  grpc::Status Cancel(const std::string& id, v1::Job* job, const std::string& token = "") {
    grpc::ClientContext context;
    if (!token.empty()) context.AddMetadata("authorization", "Bearer " + token);
    v1::CancelJobRequest request;
    request.set_id(id);
    return stub_->CancelJob(&context, request, job);
  }
  // Polls until `done(job)` or the timeout; the last job seen.
  v1::Job WaitFor(const std::string& id, const std::function<bool(const v1::Job&)>& done,
                  std::chrono::seconds timeout = std::chrono::seconds(90)) {
    const auto end = Clock::now() + timeout;
    v1::Job job;
    while (Clock::now() < end) {
      job = Get(id);
      if (done(job)) return job;
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    ADD_FAILURE() << "timed out waiting for job " << id << ": " << job.DebugString() << "\n"
                  << Slurp(log_);
    return job;
  }
  static bool Finished(const v1::Job& job) { return IsTerminal(job.state()); }
  std::vector<v1::JobEvent> WatchAll(const std::string& id, grpc::Status* status) {
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(120));
    v1::WatchJobRequest request;
    request.set_id(id);
    auto reader = stub_->WatchJob(&context, request);
    std::vector<v1::JobEvent> events;
    v1::JobEvent e;
    while (reader->Read(&e)) events.push_back(e);
    *status = reader->Finish();
    return events;
  }

  static TempDir* fixture_dir_;
  TempDir dir_;
  std::unique_ptr<Process> trainer_;
  std::string log_;
  int starts_ = 0;
  int port_ = 0;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<v1::TrainerService::Stub> stub_;
};
TempDir* TrainerBinaryTest::fixture_dir_ = nullptr;

std::string HttpGet(int port, const std::string& path) {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    ::close(fd);
    return "";
  }
  const std::string request = absl::StrCat("GET ", path, " HTTP/1.0\r\nHost: localhost\r\n\r\n");
  (void)!::write(fd, request.data(), request.size());
  std::string response;
  char buffer[4096];
  ssize_t n;
  while ((n = ::read(fd, buffer, sizeof(buffer))) > 0)
    response.append(buffer, static_cast<size_t>(n));
  ::close(fd);
  return response;
}

// A full job: trains through the real CLI, publishes a version with the report,
// moves staging; production stays because the gate refuses (a better production
// exists): a note, the job still succeeds. Watchers live and late see the same
// events; metrics and the CLI agree.
TEST_F(TrainerBinaryTest, FullJobPublishesAndLateWatchReplays) {
  // Production v1: a (fake) model with perfect metrics, so the gate refuses v2.
  {
    auto registry = registry::Registry::Create({.root = dir_.Join("registry")});
    ASSERT_THAT(registry, IsOk());
    WriteFile(dir_.Join("w.safetensors"), "weights");
    auto v =
        (*registry)->Publish("ham10000-test", {{"model.safetensors", dir_.Join("w.safetensors")}},
                             {{"metrics", {{"balanced_accuracy", 1.0}, {"melanoma_recall", 1.0}}}});
    ASSERT_THAT(v, IsOk());
    ASSERT_THAT((*registry)->SetAlias("ham10000-test", "production", *v, "seed"), IsOk());
  }
  StartTrainer({"--metrics_port=0"});
  std::smatch m;
  const std::string startup = Slurp(log_);
  ASSERT_TRUE(
      std::regex_search(startup, m, std::regex("metrics on 127\\.0\\.0\\.1:([0-9]+)/metrics")))
      << startup;
  const int metrics_port = std::stoi(m[1]);
  v1::TrainingConfig config = TinyConfig("ham10000-test", 2);
  config.set_promote_to_production(true);
  v1::Job job;
  ASSERT_TRUE(Submit(config, &job).ok());
  ASSERT_FALSE(job.id().empty());
  EXPECT_EQ(job.state(), v1::JOB_STATE_QUEUED);

  std::vector<v1::JobEvent> live;
  grpc::Status live_status;
  std::thread watcher([&] { live = WatchAll(job.id(), &live_status); });
  job = WaitFor(job.id(), Finished);
  watcher.join();
  ASSERT_EQ(job.state(), v1::JOB_STATE_SUCCEEDED) << job.failure_reason() << Slurp(log_);
  EXPECT_EQ(job.attempt(), 1);
  EXPECT_EQ(job.published().name(), "ham10000-test");
  EXPECT_EQ(job.published().version(), 2);
  EXPECT_EQ(job.published().alias(), "staging");
  EXPECT_EQ(job.published().sha256().size(), 64u);
  ASSERT_EQ(job.notes_size(), 1);
  EXPECT_THAT(job.notes(0),
              AllOf(HasSubstr("production not moved"), HasSubstr("balanced_accuracy")));
  EXPECT_EQ(job.progress().phase(), "publish");

  auto registry = registry::Registry::Create({.root = dir_.Join("registry")});
  auto aliases = (*registry)->Aliases("ham10000-test");
  ASSERT_THAT(aliases, IsOk());
  EXPECT_EQ((*aliases)["staging"], 2);
  EXPECT_EQ((*aliases)["production"], 1);
  auto version = (*registry)->GetVersion("ham10000-test", 2);
  ASSERT_THAT(version, IsOk());
  EXPECT_EQ(version->manifest["job_id"], job.id());
  EXPECT_EQ(version->manifest["parent_version"], 1);
  EXPECT_EQ(version->manifest["promotion_gates"]["metrics"][1], "melanoma_recall");
  EXPECT_TRUE(version->manifest["metrics"].contains("balanced_accuracy"));
  EXPECT_TRUE(version->manifest.contains("golden_set"));
  std::vector<std::string> files;
  for (const auto& f : version->files) files.push_back(f.name);
  EXPECT_THAT(files, AllOf(Contains("model.safetensors"), Contains("metrics.json"),
                           Contains("confusion_matrix.png"), Contains("roc_curves.png"),
                           Contains("golden_0.jpg")));
  EXPECT_THAT((*registry)->Verify("ham10000-test", 2), IsOk());

  // The live watcher saw the whole job; a watcher joining now gets the same replay.
  EXPECT_TRUE(live_status.ok()) << live_status.error_message();
  grpc::Status late_status;
  const std::vector<v1::JobEvent> late = WatchAll(job.id(), &late_status);
  EXPECT_TRUE(late_status.ok()) << late_status.error_message();
  ASSERT_EQ(late.size(), live.size());
  for (size_t i = 0; i < late.size(); ++i) {
    EXPECT_EQ(late[i].sequence(), static_cast<int64_t>(i) + 1);
    EXPECT_TRUE(google::protobuf::util::MessageDifferencer::Equals(late[i], live[i]))
        << late[i].DebugString() << " vs " << live[i].DebugString();
  }
  std::vector<v1::JobState> states;
  int progress = 0, epochs_with_metrics = 0, logs = 0;
  for (const auto& e : late) {
    if (e.event_case() == v1::JobEvent::kState) states.push_back(e.state());
    if (e.has_progress()) {
      ++progress;
      EXPECT_EQ(e.progress().epochs(), 2);
      if (e.progress().validation_metrics().count("balanced_accuracy")) ++epochs_with_metrics;
    }
    if (e.event_case() == v1::JobEvent::kLogLine) ++logs;
  }
  EXPECT_EQ(states, (std::vector<v1::JobState>{v1::JOB_STATE_QUEUED, v1::JOB_STATE_RUNNING,
                                               v1::JOB_STATE_SUCCEEDED}));
  EXPECT_GE(progress, 4);
  EXPECT_GE(epochs_with_metrics, 2);
  EXPECT_GE(logs, 2);

  // Metrics.
  const std::string metrics = HttpGet(metrics_port, "/metrics");
  EXPECT_THAT(metrics, HasSubstr("skinlesion_trainer_jobs{state=\"succeeded\"} 1"));
  EXPECT_THAT(metrics, HasSubstr("skinlesion_trainer_jobs_submitted_total 1"));
  EXPECT_THAT(metrics,
              HasSubstr("skinlesion_trainer_job_duration_seconds_count{state=\"succeeded\"} 1"));
  // Exported at 0 before the first failure (the failed-jobs alert's increase()).
  EXPECT_THAT(metrics,
              HasSubstr("skinlesion_trainer_job_duration_seconds_count{state=\"failed\"} 0"));

  // The CLI: list with a state filter, and watch of a finished job.
  const std::string target = absl::StrCat(" --trainer=127.0.0.1:", port_);
  auto [code, out] =
      RunCommand(absl::StrCat(SKINLESION_CLI_BINARY, " jobs list --state=succeeded", target));
  EXPECT_EQ(code, 0) << out;
  EXPECT_THAT(out, AllOf(HasSubstr(job.id()), HasSubstr("published ham10000-test v2 (staging)")));
  std::tie(code, out) =
      RunCommand(absl::StrCat(SKINLESION_CLI_BINARY, " jobs list --state=failed", target));
  EXPECT_THAT(out, HasSubstr("no jobs"));
  std::tie(code, out) =
      RunCommand(absl::StrCat(SKINLESION_CLI_BINARY, " jobs watch ", job.id(), target));
  EXPECT_EQ(code, 0) << out;
  EXPECT_THAT(out,
              AllOf(HasSubstr("state: succeeded"), HasSubstr("epoch 2/2"), HasSubstr("img/s")));
  std::tie(code, out) =
      RunCommand(absl::StrCat(SKINLESION_CLI_BINARY, " jobs list --state=sleeping", target));
  EXPECT_EQ(code, 2);
  EXPECT_THAT(out, HasSubstr("unknown state 'sleeping'"));
}

// Cancel a queued job (at once) and a running one (its process is gone); a job
// whose split file is garbage fails with the exit code and its stderr while the
// trainer keeps serving; SIGTERM puts a running job back to queued and exits 0.
TEST_F(TrainerBinaryTest, CancelCrashAndSigterm) {
  StartTrainer();
  v1::Job running, queued;
  ASSERT_TRUE(Submit(TinyConfig("long", 200), &running).ok());
  ASSERT_TRUE(Submit(TinyConfig("behind", 2), &queued).ok());
  running = WaitFor(running.id(), [](const v1::Job& j) { return j.progress().steps() > 0; });
  ASSERT_EQ(running.state(), v1::JOB_STATE_RUNNING) << running.failure_reason();
  EXPECT_FALSE(ProcessesMentioning(running.run_dir()).empty()) << running.DebugString();

  v1::Job cancelled;
  ASSERT_TRUE(Cancel(queued.id(), &cancelled).ok());
  EXPECT_EQ(cancelled.state(), v1::JOB_STATE_CANCELLED);
  EXPECT_FALSE(cancelled.has_started());
  grpc::Status s = Cancel(queued.id(), &cancelled);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_THAT(s.error_message(), HasSubstr("already cancelled"));

  const auto begin = Clock::now();
  ASSERT_TRUE(Cancel(running.id(), &cancelled).ok());
  EXPECT_EQ(cancelled.state(), v1::JOB_STATE_CANCELLED);
  EXPECT_LT(Clock::now() - begin, std::chrono::seconds(8));
  EXPECT_TRUE(NoProcessMentions(running.run_dir(), std::chrono::seconds(5)));

  // A split file that exists (so SubmitJob accepts it) but is not a split.
  WriteFile(dir_.Join("bad_split.csv"), "this,is\nnot a split\n");
  v1::TrainingConfig bad = TinyConfig("crashy", 2);
  bad.set_split_file(dir_.Join("bad_split.csv"));
  v1::Job crashed;
  ASSERT_TRUE(Submit(bad, &crashed).ok());
  crashed = WaitFor(crashed.id(), Finished);
  EXPECT_EQ(crashed.state(), v1::JOB_STATE_FAILED);
  EXPECT_THAT(crashed.failure_reason(), AllOf(HasSubstr("skinlesion train exited with code"),
                                              HasSubstr("last stderr lines"), HasSubstr("split")));

  // The training process killed from outside (as the OOM killer does).
  v1::Job oom;
  ASSERT_TRUE(Submit(TinyConfig("oom", 200), &oom).ok());
  oom = WaitFor(oom.id(), [](const v1::Job& j) { return j.progress().steps() > 0; });
  const std::vector<pid_t> children = ProcessesMentioning(oom.run_dir());
  ASSERT_EQ(children.size(), 1u);
  ASSERT_EQ(::kill(children[0], SIGKILL), 0);
  oom = WaitFor(oom.id(), Finished);
  EXPECT_EQ(oom.state(), v1::JOB_STATE_FAILED);
  EXPECT_THAT(oom.failure_reason(),
              HasSubstr("killed by signal 9 (Killed), possibly out of memory"));

  // Still serving: list by state.
  {
    grpc::ClientContext context;
    v1::ListJobsRequest request;
    request.add_states(v1::JOB_STATE_CANCELLED);
    v1::ListJobsResponse response;
    ASSERT_TRUE(stub_->ListJobs(&context, request, &response).ok());
    EXPECT_EQ(response.jobs_size(), 2);
  }

  // SIGTERM with a job running: exit 0, the job is queued again.
  v1::Job interrupted;
  ASSERT_TRUE(Submit(TinyConfig("interrupted", 200), &interrupted).ok());
  interrupted =
      WaitFor(interrupted.id(), [](const v1::Job& j) { return j.progress().steps() > 0; });
  ASSERT_EQ(::kill(trainer_->pid(), SIGTERM), 0);
  const int status = trainer_->Wait(std::chrono::seconds(15));
  ASSERT_NE(status, -1) << "still running 15 s after SIGTERM";
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 0) << Slurp(log_);
  EXPECT_TRUE(NoProcessMentions(interrupted.run_dir(), std::chrono::seconds(5)));
  auto store = JobStore::Open(dir_.Join("state/jobs.db"));
  ASSERT_THAT(store, IsOk());
  EXPECT_EQ((*store)->Get(interrupted.id())->state(), v1::JOB_STATE_QUEUED);
  EXPECT_EQ((*store)->Get(crashed.id())->state(), v1::JOB_STATE_FAILED);
}

// kill -9 of the trainer mid-job: the child dies with it; on restart the queued
// job is still queued and the running one resumes from its checkpoint (--resume)
// and finishes, publishing to staging and production.
TEST_F(TrainerBinaryTest, KillDashNineThenRestartResumes) {
  StartTrainer();
  v1::Job job, waiting;
  v1::TrainingConfig config = TinyConfig("resumed", 30);  // ~0.5 s per epoch here.
  config.set_promote_to_production(true);
  ASSERT_TRUE(Submit(config, &job).ok());
  ASSERT_TRUE(Submit(TinyConfig("waiting", 2), &waiting).ok());
  // Past the first epoch's checkpoint.
  job = WaitFor(job.id(), [](const v1::Job& j) {
    return j.progress().epoch() >= 1 && j.progress().step() > 0;
  });
  ASSERT_TRUE(fs::exists(job.run_dir() + "/checkpoints/last/state.json"));
  ASSERT_FALSE(ProcessesMentioning(job.run_dir()).empty());

  ASSERT_EQ(::kill(trainer_->pid(), SIGKILL), 0);
  ASSERT_NE(trainer_->Wait(std::chrono::seconds(5)), -1);
  EXPECT_TRUE(NoProcessMentions(job.run_dir(), std::chrono::seconds(5)))
      << "a child outlived the trainer";
  {
    auto store = JobStore::Open(dir_.Join("state/jobs.db"));
    ASSERT_THAT(store, IsOk());
    EXPECT_EQ((*store)->Get(job.id())->state(), v1::JOB_STATE_RUNNING);  // As the trainer left it.
    EXPECT_EQ((*store)->Get(waiting.id())->state(), v1::JOB_STATE_QUEUED);
  }

  StartTrainer();
  EXPECT_EQ(Get(waiting.id()).state(), v1::JOB_STATE_QUEUED);  // Behind the resumed job.
  job = WaitFor(job.id(), Finished);
  ASSERT_EQ(job.state(), v1::JOB_STATE_SUCCEEDED) << job.failure_reason();
  EXPECT_EQ(job.attempt(), 2);
  EXPECT_EQ(job.published().version(), 1);
  EXPECT_EQ(job.published().alias(), "production");
  EXPECT_THAT(Slurp(job.run_dir() + "/logs/rank0.stderr"), HasSubstr("resuming from"));
  grpc::Status status;
  const auto events = WatchAll(job.id(), &status);
  ASSERT_TRUE(status.ok());
  std::string log;
  std::vector<v1::JobState> states;
  for (const auto& e : events) {
    if (e.event_case() == v1::JobEvent::kLogLine) absl::StrAppend(&log, e.log_line(), "\n");
    if (e.event_case() == v1::JobEvent::kState) states.push_back(e.state());
  }
  EXPECT_THAT(log, AllOf(HasSubstr("trainer restarted"), HasSubstr("--resume")));
  EXPECT_EQ(states, (std::vector<v1::JobState>{v1::JOB_STATE_QUEUED, v1::JOB_STATE_RUNNING,
                                               v1::JOB_STATE_QUEUED, v1::JOB_STATE_RUNNING,
                                               v1::JOB_STATE_SUCCEEDED}));
  auto registry = registry::Registry::Create({.root = dir_.Join("registry")});
  EXPECT_EQ((*(*registry)->Aliases("resumed"))["production"], 1);
  const v1::Job next = Get(waiting.id());
  EXPECT_TRUE(next.state() == v1::JOB_STATE_QUEUED || next.state() == v1::JOB_STATE_RUNNING);
}

// world_size 2: two `skinlesion train` ranks (MASTER_ADDR/PORT, RANK, WORLD_SIZE);
// rank 0 exports, the job publishes.
TEST_F(TrainerBinaryTest, DataParallelJobRunsTwoRanks) {
  StartTrainer();
  v1::TrainingConfig config = TinyConfig("ddp", 2);
  config.set_world_size(2);
  v1::Job job;
  ASSERT_TRUE(Submit(config, &job).ok());
  job = WaitFor(job.id(), Finished);
  ASSERT_EQ(job.state(), v1::JOB_STATE_SUCCEEDED) << job.failure_reason();
  EXPECT_EQ(job.published().version(), 1);
  EXPECT_TRUE(fs::exists(job.run_dir() + "/logs/rank1.stderr"));
  grpc::Status status;
  std::string log;
  for (const auto& e : WatchAll(job.id(), &status)) absl::StrAppend(&log, e.log_line(), "\n");
  EXPECT_THAT(log, AllOf(HasSubstr("x2 ranks"), HasSubstr("[rank 1] ")));
}

// Validation lists every problem; SubmitJob, CancelJob and the hosted registry's
// SetAlias need the token; reads do not; health and unknown jobs.
TEST_F(TrainerBinaryTest, ValidationAuthAndErrors) {
  WriteFile(dir_.Join("token"), "s3cret-token\n");
  StartTrainer({"--token_file=" + dir_.Join("token")});
  v1::Job job;
  grpc::Status s = Submit(TinyConfig("m", 2), &job);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_THAT(s.error_message(), HasSubstr("Bearer"));
  s = Submit(TinyConfig("m", 2), &job, "wrong-token");
  EXPECT_EQ(s.error_code(), grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_THAT(s.error_message(), ::testing::Not(HasSubstr("s3cret")));
  s = Cancel("job-x", &job);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::UNAUTHENTICATED);
  {
    auto registry_stub = v1::RegistryService::NewStub(channel_);
    grpc::ClientContext context;
    v1::SetAliasRequest request;
    request.set_model("m");
    request.set_alias("production");
    request.set_version(1);
    v1::Alias response;
    s = registry_stub->SetAlias(&context, request, &response);
    EXPECT_EQ(s.error_code(), grpc::StatusCode::UNAUTHENTICATED);
    grpc::ClientContext list_context;
    v1::ListModelsResponse models;
    EXPECT_TRUE(registry_stub->ListModels(&list_context, v1::ListModelsRequest(), &models).ok());
  }

  v1::TrainingConfig bad = TinyConfig("Bad Name!", 2);
  bad.set_architecture("resnet9000");
  bad.set_data_dir(dir_.Join("nowhere"));
  bad.set_metadata_file("");
  bad.set_batch_size(-1);
  bad.set_extra_json(R"({"frozen_epochs": 1, "optimizer": "adam"})");
  s = Submit(bad, &job, "s3cret-token");
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(
      s.error_message(),
      AllOf(HasSubstr("model_name"), HasSubstr("unknown architecture 'resnet9000'"),
            HasSubstr("is not a directory"),
            HasSubstr("batch_size must be >= 1"), HasSubstr("unknown optimizer 'adam'")));

  // grpc.health.v1.Health/Check of the whole server: SERVING.
  {
    int serving = -1;
    const grpc::Status h =
        telemetry::CheckGrpcHealth(channel_, "", absl::Seconds(5), &serving);
    ASSERT_TRUE(h.ok()) << h.error_message();
    EXPECT_EQ(serving, telemetry::kHealthServing);
  }

  s = Cancel("job-unknown", &job, "s3cret-token");
  EXPECT_EQ(s.error_code(), grpc::StatusCode::NOT_FOUND);
  {
    grpc::ClientContext context;
    v1::GetJobRequest request;
    request.set_id("job-unknown");
    EXPECT_EQ(stub_->GetJob(&context, request, &job).error_code(), grpc::StatusCode::NOT_FOUND);
  }
  {
    grpc::Status watch_status;
    WatchAll("job-unknown", &watch_status);
    EXPECT_EQ(watch_status.error_code(), grpc::StatusCode::NOT_FOUND);
  }
  // The CLI sends the token from --token_file; a bad --set is rejected locally.
  const std::string target = absl::StrCat(" --trainer=127.0.0.1:", port_);
  auto [code, out] = RunCommand(absl::StrCat(SKINLESION_CLI_BINARY, " jobs cancel job-unknown",
                                             target, " --token_file=", dir_.Join("token")));
  EXPECT_EQ(code, 1);
  EXPECT_THAT(out, HasSubstr("no job 'job-unknown'"));
  std::tie(code, out) =
      RunCommand(absl::StrCat(SKINLESION_CLI_BINARY, " jobs cancel job-unknown", target));
  EXPECT_THAT(out, HasSubstr("Bearer"));
  std::tie(code, out) = RunCommand(absl::StrCat(
      SKINLESION_CLI_BINARY, " jobs submit --set=model_name=x,architecture=lenet,frozen_epochs=1",
      target, " --token_file=", dir_.Join("token"), " --data=", dir_.Join("nowhere")));
  EXPECT_EQ(code, 2) << out;
  EXPECT_THAT(out,
              AllOf(HasSubstr("unknown architecture 'lenet'"), HasSubstr("is not a directory")));
  {
    grpc::ClientContext context;
    v1::ListJobsResponse response;
    ASSERT_TRUE(stub_->ListJobs(&context, v1::ListJobsRequest(), &response).ok());
    EXPECT_EQ(response.jobs_size(), 0);
  }
  // A job file: TrainingConfig fields plus `skinlesion train` options (extra_json).
  const std::string fix = SourcePath("tests/fixtures/ham10000");
  nlohmann::json job_file = {{"model_name", "from-cli"},
                             {"architecture", "resnet18"},
                             {"data_dir", fix + "/images"},
                             {"image_size", 32},
                             {"batch_size", 4},
                             {"frozen_epochs", 1},
                             {"num_workers", 1},
                             {"threads", 1},
                             {"optimizer", "adam"}};
  WriteFile(dir_.Join("job.json"), job_file.dump());
  const std::string submit =
      absl::StrCat(SKINLESION_CLI_BINARY, " jobs submit --config=", dir_.Join("job.json"), target,
                   " --token_file=", dir_.Join("token"), " --metadata=", fix,
                   "/metadata_subset.csv --split=", fixture_dir_->Join("split.csv"));
  std::tie(code, out) = RunCommand(submit);
  EXPECT_EQ(code, 2) << out;
  EXPECT_THAT(out, HasSubstr("unknown optimizer 'adam'"));  // It went through extra_json.
  std::tie(code, out) = RunCommand(submit + " --set=optimizer=sgd,epochs=2 --follow");
  EXPECT_EQ(code, 0) << out;
  EXPECT_THAT(
      out, AllOf(HasSubstr("submitted job-"), HasSubstr("state: running"), HasSubstr("epoch 2/2"),
                 HasSubstr("state: succeeded"), HasSubstr("published from-cli v1 (staging)")));
}

// TLS with a self-signed certificate made here by openssl.
TEST_F(TrainerBinaryTest, ServesTls) {
  if (::access("/usr/bin/openssl", X_OK) != 0) GTEST_SKIP() << "no openssl binary";
  const auto [code, out] = RunCommand(
      absl::StrCat("/usr/bin/openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=localhost "
                   "-addext subjectAltName=DNS:localhost,IP:127.0.0.1 -keyout ",
                   dir_.Join("key.pem"), " -out ", dir_.Join("cert.pem")));
  ASSERT_EQ(code, 0) << out;
  StartTrainer({"--tls_cert=" + dir_.Join("cert.pem"), "--tls_key=" + dir_.Join("key.pem")});
  const std::string target = absl::StrCat("127.0.0.1:", port_);
  grpc::SslCredentialsOptions ssl;
  ssl.pem_root_certs = Slurp(dir_.Join("cert.pem"));
  auto secure = v1::TrainerService::NewStub(grpc::CreateChannel(target, grpc::SslCredentials(ssl)));
  {
    grpc::ClientContext context;
    v1::ListJobsResponse response;
    const grpc::Status s = secure->ListJobs(&context, v1::ListJobsRequest(), &response);
    EXPECT_TRUE(s.ok()) << s.error_message();
  }
  {
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(3));
    v1::ListJobsResponse response;
    EXPECT_FALSE(stub_->ListJobs(&context, v1::ListJobsRequest(), &response).ok());  // Plaintext.
  }
  auto [cli_code, cli_out] = RunCommand(absl::StrCat(
      SKINLESION_CLI_BINARY, " jobs list --trainer=", target, " --tls_ca=", dir_.Join("cert.pem")));
  EXPECT_EQ(cli_code, 0) << cli_out;
  EXPECT_THAT(cli_out, HasSubstr("no jobs"));
}

TEST_F(TrainerBinaryTest, BadFlagsFailClearly) {
  auto [code, out] =
      RunCommand(absl::StrCat(SKINLESION_TRAINER_BINARY, " --registry_root=", dir_.Join("r")));
  EXPECT_EQ(code, 1);
  EXPECT_THAT(out, HasSubstr("--state_dir is required"));
  std::tie(code, out) =
      RunCommand(absl::StrCat(SKINLESION_TRAINER_BINARY, " --state_dir=", dir_.Join("s"),
                              " --registry_root=", dir_.Join("r"), " --cli=/no/such/cli"));
  EXPECT_EQ(code, 1);
  EXPECT_THAT(out, HasSubstr("/no/such/cli is not an executable file"));
  std::tie(code, out) =
      RunCommand(absl::StrCat(SKINLESION_TRAINER_BINARY, " --state_dir=", dir_.Join("s"),
                              " --registry_root=", dir_.Join("r"), " --tls_cert=x"));
  EXPECT_THAT(out, HasSubstr("--tls_cert and --tls_key go together"));
  // A second trainer on the same state directory.
  StartTrainer();
  std::tie(code, out) = RunCommand(absl::StrCat(
      SKINLESION_TRAINER_BINARY, " --state_dir=", dir_.Join("state"),
      " --registry_root=", dir_.Join("registry"), " --cli=" SKINLESION_CLI_BINARY " --port=0"));
  EXPECT_EQ(code, 1);
  EXPECT_THAT(out, HasSubstr("another skinlesion-trainer is using --state_dir"));
}

}  // namespace
}  // namespace skinlesion::jobs
