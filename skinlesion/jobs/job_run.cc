// JobRun: one attempt of a training job as child processes; see job_run.h.
#include "skinlesion/jobs/job_run.h"

#include <sys/wait.h>

#include <algorithm>
#include <filesystem>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "skinlesion/common/csv.h"
#include "skinlesion/common/status.h"
#include "skinlesion/jobs/progress.h"
#include "skinlesion/jobs/validate.h"

namespace skinlesion::jobs {
namespace {

bool ExitedOk(const Child& c) { return WIFEXITED(c.status) && WEXITSTATUS(c.status) == 0; }

}  // namespace

void RunControl::Cancel() {
  absl::MutexLock lock(&mu_);
  cancel_ = true;
  cv_.SignalAll();
}

void RunControl::Stop() {
  absl::MutexLock lock(&mu_);
  stop_ = true;
  cv_.SignalAll();
}

RunControl::Request RunControl::request() const {
  absl::MutexLock lock(&mu_);
  return cancel_ ? Request::kCancel : stop_ ? Request::kStop : Request::kNone;
}

void RunControl::Wait(absl::Duration timeout) {
  absl::MutexLock lock(&mu_);
  if (!cancel_ && !stop_) cv_.WaitWithTimeout(&mu_, timeout);
}

JobRun::JobRun(v1::Job job, Options options, RunControl& control)
    : job_(std::move(job)),
      options_(std::move(options)),
      control_(control),
      world_size_(std::max(1, job_.config().world_size())),
      progress_path_(job_.run_dir() + "/progress.jsonl"),
      progress_(job_.progress()) {}

RunOutcome JobRun::Run() {
  if (absl::Status prepared = Prepare(); !prepared.ok()) {
    return {.end = RunOutcome::End::kFailed, .failure_reason = std::string(prepared.message())};
  }
  if (absl::Status spawned = Spawn(); !spawned.ok()) {
    Stop();  // The ranks that did start.
    return Finish(RunOutcome::End::kFailed,
                  absl::StrCat("cannot start the training process: ", spawned.message()));
  }
  return Finish(Monitor(), "");
}

// The run directory, its job_config.json, the command line and the environment.
absl::Status JobRun::Prepare() {
  const v1::TrainingConfig& config = job_.config();
  const std::string& run_dir = job_.run_dir();
  std::error_code ec;
  std::filesystem::create_directories(run_dir + "/logs", ec);
  auto train_config = TrainConfigJson(config);
  absl::Status prepared =
      ec ? absl::InternalError(absl::StrCat("cannot create ", run_dir, ": ", ec.message()))
         : train_config.status();
  if (prepared.ok()) {
    prepared = WriteFileAtomically(run_dir + "/job_config.json", train_config->dump(2) + "\n");
  }
  SL_RETURN_IF_ERROR(Annotate(prepared, "cannot prepare the run"));
  args_ = {options_.cli_path,
           "train",
           "--data=" + config.data_dir(),
           "--out=" + run_dir,
           "--config=" + run_dir + "/job_config.json",
           "--device=" + options_.device};
  // Without a labels CSV the data folder says what it is (HAM10000 metadata or class folders).
  if (!config.metadata_file().empty()) args_.push_back("--metadata=" + config.metadata_file());
  if (!config.split_file().empty()) args_.push_back("--split=" + config.split_file());
  if (job_.attempt() > 1) args_.push_back("--resume");
  if (world_size_ > 1) {
    SL_ASSIGN_OR_RETURN(const int port, options_.launcher->FreePort());
    dist_env_ = {"MASTER_ADDR=127.0.0.1", absl::StrCat("MASTER_PORT=", port),
                 absl::StrCat("WORLD_SIZE=", world_size_)};
  }
  return absl::OkStatus();
}

// One child per rank; stops at the first that cannot start. The tails start at their
// files' current ends, before the children write (a resumed job's old lines are skipped).
absl::Status JobRun::Spawn() {
  LogLine(absl::StrCat("attempt ", job_.attempt(),
                       job_.attempt() > 1 ? " (resuming from the last checkpoint)" : "", ": ",
                       absl::StrJoin(args_, " "), " --progress_jsonl=", progress_path_,
                       world_size_ > 1 ? absl::StrCat(" x", world_size_, " ranks") : ""));
  progress_tail_ = FileTail(progress_path_);
  absl::Status status;
  for (int rank = 0; rank < world_size_ && status.ok(); ++rank) {
    std::vector<std::string> rank_args = args_;
    if (rank == 0) rank_args.push_back("--progress_jsonl=" + progress_path_);
    std::vector<std::string> env = dist_env_;
    if (world_size_ > 1) env.push_back(absl::StrCat("RANK=", rank));
    const std::string logs = absl::StrCat(job_.run_dir(), "/logs/rank", rank);
    stderr_tails_.emplace_back(logs + ".stderr");
    auto pid = options_.launcher->Launch(rank_args, env, logs + ".stdout", logs + ".stderr");
    if (pid.ok()) {
      children_.push_back({.pid = *pid, .rank = rank});
    } else {
      status = pid.status();
    }
  }
  if (!children_.empty()) (void)options_.store->SetPid(job_.id(), children_.front().pid);
  return status;
}

void JobRun::HandleProgressLine(absl::string_view line) {
  const ProgressEvent kind = ApplyProgressLine(line, progress_);
  if (kind == ProgressEvent::kNone) return;
  (void)options_.store->Update(job_.id(),
                               [&](v1::Job& stored) { *stored.mutable_progress() = progress_; });
  v1::JobEvent e;
  *e.mutable_progress() = progress_;
  options_.emit(job_.id(), std::move(e));
  if (options_.metrics != nullptr) {
    const bool done = kind == ProgressEvent::kPhase;
    options_.metrics->Progress(job_.id(), done ? 1.0 : ProgressFraction(progress_),
                               progress_.loss(), progress_.images_per_second());
  }
}

void JobRun::Pump(bool flush) {
  for (const std::string& line : progress_tail_.Read(flush)) HandleProgressLine(line);
  for (size_t i = 0; i < stderr_tails_.size(); ++i) {
    for (std::string& line : stderr_tails_[i].Read(flush)) {
      if (world_size_ > 1) line = absl::StrCat("[rank ", i, "] ", line);
      last_lines_.push_back(line);
      if (static_cast<int>(last_lines_.size()) > options_.stderr_tail_lines)
        last_lines_.pop_front();
      LogLine(std::move(line));
    }
  }
}

RunOutcome::End JobRun::Monitor() {
  while (true) {
    Pump(false);
    // Every child exited: Finish reads their exit codes.
    if (options_.launcher->Reap(children_)) return RunOutcome::End::kSucceeded;
    const auto failed = std::find_if(children_.begin(), children_.end(),
                                     [](const Child& c) { return c.exited && !ExitedOk(c); });
    if (failed != children_.end()) {  // One rank died: the others would wait for it forever.
      failed_rank_ = failed->rank;
      Stop();
      return RunOutcome::End::kFailed;  // Finish names the failed rank.
    }
    if (const RunControl::Request request = control_.request();
        request != RunControl::Request::kNone) {
      Stop();
      return request == RunControl::Request::kCancel ? RunOutcome::End::kCancelled
                                                     : RunOutcome::End::kStopped;
    }
    control_.Wait(options_.poll_interval);
  }
}

void JobRun::Stop() { options_.launcher->Stop(children_, options_.kill_grace); }

RunOutcome JobRun::Finish(RunOutcome::End end, std::string failure) {
  Pump(true);
  (void)options_.store->SetPid(job_.id(), 0);
  const bool exited = end == RunOutcome::End::kSucceeded || end == RunOutcome::End::kFailed;
  if (exited && failure.empty()) failure = ExitFailure();
  if (!failure.empty()) end = RunOutcome::End::kFailed;
  return {.end = end, .failure_reason = std::move(failure)};
}

std::string JobRun::ExitFailure() const {
  // The rank that failed first on its own, not one stopped because of it.
  auto failed = std::find_if(children_.begin(), children_.end(),
                             [&](const Child& c) { return c.rank == failed_rank_; });
  if (failed == children_.end()) {
    failed = std::find_if(children_.begin(), children_.end(),
                          [](const Child& c) { return !ExitedOk(c); });
  }
  if (failed == children_.end()) return "";
  std::string failure =
      absl::StrCat(world_size_ > 1 ? absl::StrCat("rank ", failed->rank, ": ") : "",
                   "skinlesion train ", options_.launcher->DescribeExit(failed->status));
  if (!last_lines_.empty()) {
    absl::StrAppend(&failure, "; last stderr lines:\n", absl::StrJoin(last_lines_, "\n"));
  }
  return failure;
}

void JobRun::LogLine(std::string text) {
  v1::JobEvent e;
  e.set_log_line(std::move(text));
  options_.emit(job_.id(), std::move(e));
}

}  // namespace skinlesion::jobs
