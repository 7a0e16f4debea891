#include "skinlesion/jobs/manager.h"

#include <unistd.h>

#include <algorithm>
#include <filesystem>

#include "absl/strings/str_cat.h"
#include "google/protobuf/util/time_util.h"
#include "skinlesion/common/logging.h"
#include "skinlesion/common/status.h"
#include "skinlesion/jobs/job_run.h"
#include "skinlesion/jobs/publish.h"
#include "skinlesion/jobs/validate.h"

namespace skinlesion::jobs {
namespace fs = std::filesystem;
using google::protobuf::util::TimeUtil;

struct JobManager::Running {
  std::string id;
  int slots = 1;
  RunControl control;  // Cancel and Shutdown wake the run's monitor loop through it.
  // Guarded by JobManager::mu_ (an annotation cannot name another object's
  // mutex); signalled on JobManager::cv_.
  bool done = false;
  std::thread thread;
};

absl::StatusOr<std::unique_ptr<JobManager>> JobManager::Create(const Options& options) {
  if (options.registry == nullptr) return absl::InvalidArgumentError("JobManager needs a registry");
  if (options.max_concurrent_jobs < 1)
    return absl::InvalidArgumentError("max_concurrent_jobs must be >= 1");
  std::error_code ec;
  if (!fs::is_regular_file(options.cli_path, ec) || ::access(options.cli_path.c_str(), X_OK) != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("the skinlesion CLI ", options.cli_path, " is not an executable file"));
  }
  fs::create_directories(options.runs_dir, ec);
  if (ec)
    return absl::InternalError(
        absl::StrCat("cannot create ", options.runs_dir, ": ", ec.message()));
  SL_ASSIGN_OR_RETURN(std::unique_ptr<JobStore> store, JobStore::Open(options.db_path));
  std::unique_ptr<JobManager> manager(new JobManager(options, std::move(store)));
  // A job still RUNNING belonged to a process that died (kill -9, crash, power
  // loss): its children died with it (PR_SET_PDEATHSIG). Queue it again; its next
  // start resumes from the last checkpoint.
  SL_ASSIGN_OR_RETURN(const std::vector<v1::Job> orphans,
                      manager->store_->List({v1::JOB_STATE_RUNNING}));
  for (const v1::Job& job : orphans) {
    manager->LogLine(job.id(),
                     "trainer restarted: job re-queued, it resumes from its last checkpoint");
    SL_RETURN_IF_ERROR(manager->Transition(job.id(), v1::JOB_STATE_QUEUED, nullptr).status());
    SL_RETURN_IF_ERROR(manager->store_->SetPid(job.id(), 0));
  }
  manager->RefreshStateGauges();
  return manager;
}

JobManager::JobManager(Options options, std::unique_ptr<JobStore> store)
    : options_(std::move(options)),
      store_(std::move(store)),
      owned_launcher_(options_.launcher == nullptr ? std::make_unique<PosixLauncher>() : nullptr),
      launcher_(options_.launcher != nullptr ? options_.launcher : owned_launcher_.get()) {}

JobManager::~JobManager() { Shutdown(); }

void JobManager::Start() {
  absl::MutexLock lock(&mu_);
  if (started_ || shutdown_) return;
  started_ = true;
  scheduler_ = std::thread([this] { SchedulerLoop(); });
}

void JobManager::Shutdown() {
  std::vector<std::shared_ptr<Running>> running;
  {
    absl::MutexLock lock(&mu_);
    if (!shutdown_) {
      shutdown_ = true;
      for (auto& [id, r] : running_) r->control.Stop();
    }
    for (auto& [id, r] : running_) running.push_back(r);
  }
  cv_.SignalAll();
  { absl::MutexLock lock(&events_mu_); }
  events_cv_.SignalAll();
  if (scheduler_.joinable()) scheduler_.join();
  for (auto& r : running) {
    if (r->thread.joinable()) r->thread.join();
  }
  absl::MutexLock lock(&mu_);
  running_.clear();
}

int JobManager::Slots(const v1::Job& job) const {
  return std::clamp(job.config().world_size(), 1, options_.max_concurrent_jobs);
}

void JobManager::SchedulerLoop() {
  absl::MutexLock lock(&mu_);
  while (!shutdown_) {
    for (auto it = running_.begin(); it != running_.end();) {
      if (it->second->done) {
        if (it->second->thread.joinable()) it->second->thread.join();
        it = running_.erase(it);
      } else {
        ++it;
      }
    }
    bool started_one = false;
    if (slots_in_use_ < options_.max_concurrent_jobs) {
      auto queued = store_->List({v1::JOB_STATE_QUEUED});
      if (!queued.ok()) {
        SL_LOG(ERROR) << "job store: " << queued.status();
      } else if (!queued->empty()) {
        const v1::Job& next = queued->front();
        const int slots = Slots(next);
        if (slots_in_use_ + slots <= options_.max_concurrent_jobs) {
          const std::string run_dir = options_.runs_dir + "/" + next.id();
          auto job = Transition(next.id(), v1::JOB_STATE_RUNNING, [&](v1::Job& j) {
            j.set_attempt(j.attempt() + 1);
            j.set_run_dir(run_dir);
            j.clear_failure_reason();
          });
          if (job.ok()) {
            auto r = std::make_shared<Running>();
            r->id = next.id();
            r->slots = slots;
            slots_in_use_ += slots;
            running_[r->id] = r;
            r->thread = std::thread([this, r] { RunJob(r); });
            started_one = true;
          } else {
            SL_LOG(ERROR) << "cannot start job " << next.id() << ": " << job.status();
          }
        }
      }
    }
    if (!started_one) cv_.WaitWithTimeout(&mu_, absl::Seconds(1));
  }
}

absl::StatusOr<v1::Job> JobManager::Transition(const std::string& id, v1::JobState to,
                                               const std::function<void(v1::Job&)>& mutate) {
  SL_ASSIGN_OR_RETURN(v1::Job job, store_->Update(id, [&](v1::Job& j) {
    j.set_state(to);
    if (mutate) mutate(j);
  }));
  v1::JobEvent event;
  event.set_state(to);
  Emit(id, event);
  if (options_.metrics != nullptr && IsTerminal(to)) {
    const double seconds =
        job.has_started() ? static_cast<double>(TimeUtil::TimestampToMilliseconds(job.finished()) -
                                                TimeUtil::TimestampToMilliseconds(job.started())) /
                                1000.0
                          : 0.0;
    options_.metrics->Finished(id, StateName(to), seconds);
  }
  RefreshStateGauges();
  return job;
}

void JobManager::Emit(const std::string& id, v1::JobEvent event) {
  auto stored = store_->AppendEvent(id, std::move(event));
  if (!stored.ok())
    SL_LOG(ERROR) << "cannot store an event of job " << id << ": " << stored.status();
  {
    // Taking the lock orders the notification after a watcher's check.
    absl::MutexLock lock(&events_mu_);
  }
  events_cv_.SignalAll();
}

void JobManager::RefreshStateGauges() {
  if (options_.metrics == nullptr) return;
  auto jobs = store_->List({});
  if (!jobs.ok()) return;
  std::map<std::string, int> counts;
  for (int s = v1::JOB_STATE_QUEUED; s <= v1::JOB_STATE_CANCELLED; ++s) {
    counts[StateName(static_cast<v1::JobState>(s))] = 0;
  }
  for (const v1::Job& job : *jobs) counts[StateName(job.state())]++;
  options_.metrics->SetStateCounts(counts);
}

absl::StatusOr<v1::Job> JobManager::Submit(v1::TrainingConfig config) {
  auto absolute = [](const std::string& path) {
    std::error_code ec;
    return path.empty() ? path : fs::absolute(path, ec).lexically_normal().string();
  };
  config.set_data_dir(absolute(config.data_dir()));
  config.set_split_file(absolute(config.split_file()));
  config.set_metadata_file(absolute(config.metadata_file()));
  if (config.world_size() == 0) config.set_world_size(1);
  SL_RETURN_IF_ERROR(ValidateTrainingConfig(config));
  {
    absl::MutexLock lock(&mu_);
    if (shutdown_) return absl::UnavailableError("the trainer is shutting down");
  }
  SL_ASSIGN_OR_RETURN(v1::Job job, store_->Create(config));
  v1::JobEvent event;
  event.set_state(v1::JOB_STATE_QUEUED);
  Emit(job.id(), event);
  if (options_.metrics != nullptr) options_.metrics->Submitted();
  RefreshStateGauges();
  SL_LOG(INFO) << "job " << job.id() << " queued: " << config.architecture() << " -> "
               << config.model_name();
  cv_.SignalAll();
  return job;
}

absl::StatusOr<v1::Job> JobManager::Get(const std::string& id) const { return store_->Get(id); }

absl::StatusOr<std::vector<v1::Job>> JobManager::List(
    const std::vector<v1::JobState>& states) const {
  return store_->List(states);
}

absl::StatusOr<v1::Job> JobManager::Cancel(const std::string& id) {
  std::shared_ptr<Running> r;
  {
    absl::MutexLock lock(&mu_);
    SL_ASSIGN_OR_RETURN(const v1::Job job, store_->Get(id));
    if (IsTerminal(job.state())) {
      return absl::FailedPreconditionError(
          absl::StrCat("job ", id, " already ", StateName(job.state())));
    }
    auto it = running_.find(id);
    if (it == running_.end() || it->second->done) {
      // Queued (the scheduler takes jobs under mu_, so it cannot start it now).
      return Transition(id, v1::JOB_STATE_CANCELLED,
                        [](v1::Job& j) { j.add_notes("cancelled while queued"); });
    }
    r = it->second;
    r->control.Cancel();
  }
  // RunJob sets done under mu_ and signals cv_: wait for it (no polling).
  const absl::Time deadline = absl::Now() + options_.kill_grace + absl::Seconds(5);
  {
    absl::MutexLock lock(&mu_);
    while (!r->done) {
      if (cv_.WaitWithDeadline(&mu_, deadline)) break;  // Timed out.
    }
  }
  return store_->Get(id);
}

absl::Status JobManager::Watch(const std::string& id,
                               const std::function<bool(const v1::JobEvent&)>& send,
                               const std::function<bool()>& cancelled) {
  SL_RETURN_IF_ERROR(store_->Get(id).status());
  int64_t last = 0;
  int idle_terminal_polls = 0;
  while (true) {
    SL_ASSIGN_OR_RETURN(const v1::Job job, store_->Get(id));
    SL_ASSIGN_OR_RETURN(const std::vector<v1::JobEvent> events, store_->Events(id, last));
    for (const v1::JobEvent& e : events) {
      if (!send(e)) return absl::CancelledError("the watcher went away");
      last = e.sequence();
      if (e.event_case() == v1::JobEvent::kState && IsTerminal(e.state())) return absl::OkStatus();
    }
    // The terminal state event is appended right after the state changes; a
    // process killed in between leaves none, so give up after two empty polls.
    if (events.empty() && IsTerminal(job.state()) && ++idle_terminal_polls >= 2)
      return absl::OkStatus();
    if (cancelled()) return absl::CancelledError("watch cancelled");
    absl::MutexLock lock(&events_mu_);
    if (shutdown_) return absl::UnavailableError("the trainer is shutting down");
    if (events.size() < 10000) events_cv_.WaitWithTimeout(&events_mu_, absl::Milliseconds(250));
  }
}

// Runs the job's attempt (JobRun) and moves the job to where its outcome says.
void JobManager::RunJob(std::shared_ptr<Running> r) {
  const std::string& id = r->id;
  auto job = store_->Get(id);
  if (!job.ok()) {
    SL_LOG(ERROR) << "job " << id << ": " << job.status();
  } else {
    JobRun run(*std::move(job), RunOptions(), r->control);
    const RunOutcome outcome = run.Run();
    switch (outcome.end) {
      case RunOutcome::End::kStopped:
        LogLine(id,
                "trainer stopping: job re-queued, it resumes from its last checkpoint on the "
                "next start");
        EndRun(id, v1::JOB_STATE_QUEUED, nullptr);
        break;
      case RunOutcome::End::kCancelled:
        EndRun(id, v1::JOB_STATE_CANCELLED,
               [](v1::Job& j) { j.add_notes("cancelled while running"); });
        break;
      case RunOutcome::End::kFailed:
        Fail(id, outcome.failure_reason);
        break;
      case RunOutcome::End::kSucceeded:
        Publish(id, run);
        break;
    }
  }
  absl::MutexLock lock(&mu_);
  slots_in_use_ -= r->slots;
  r->done = true;
  cv_.SignalAll();
}

JobRun::Options JobManager::RunOptions() {
  return {
      .cli_path = options_.cli_path,
      .device = options_.device,
      .kill_grace = options_.kill_grace,
      .poll_interval = options_.poll_interval,
      .stderr_tail_lines = options_.stderr_tail_lines,
      .launcher = launcher_,
      .store = store_.get(),
      .metrics = options_.metrics,
      .emit = [this](const std::string& id, v1::JobEvent event) { Emit(id, std::move(event)); }};
}

// Publishes the run (PublishRun): SUCCEEDED with the published version and the
// notes, or FAILED when the registry refuses it.
void JobManager::Publish(const std::string& id, JobRun& run) {
  run.HandleProgressLine(R"({"event": "phase", "phase": "publish"})");
  auto current = store_->Get(id);
  std::vector<std::string> notes;
  auto published =
      current.ok() ? PublishRun(*options_.registry, *current, &notes) : current.status();
  if (!published.ok()) {
    Fail(id, absl::StrCat("publishing to the registry failed: ", published.status().message()));
    return;
  }
  for (const std::string& n : notes) LogLine(id, n);
  LogLine(id, absl::StrCat("published ", published->name(), " version ", published->version(), " (",
                           published->alias(), ")"));
  EndRun(id, v1::JOB_STATE_SUCCEEDED, [&](v1::Job& j) {
    *j.mutable_published() = *published;
    for (const std::string& n : notes) j.add_notes(n);
  });
}

void JobManager::Fail(const std::string& id, const std::string& reason) {
  SL_LOG(WARNING) << "job " << id << " failed: " << reason;
  EndRun(id, v1::JOB_STATE_FAILED, [&](v1::Job& j) { j.set_failure_reason(reason); });
}

void JobManager::EndRun(const std::string& id, v1::JobState to,
                        const std::function<void(v1::Job&)>& mutate) {
  auto s = Transition(id, to, mutate);
  if (!s.ok()) SL_LOG(ERROR) << "job " << id << ": " << s.status();
}

void JobManager::LogLine(const std::string& id, std::string text) {
  v1::JobEvent e;
  e.set_log_line(std::move(text));
  Emit(id, std::move(e));
}

}  // namespace skinlesion::jobs
