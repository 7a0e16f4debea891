#include "skinlesion/jobs/manager.h"

#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <deque>
#include <filesystem>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "google/protobuf/util/time_util.h"
#include "nlohmann/json.hpp"
#include "skinlesion/common/csv.h"
#include "skinlesion/common/logging.h"
#include "skinlesion/common/status.h"
#include "skinlesion/jobs/process.h"
#include "skinlesion/jobs/progress.h"
#include "skinlesion/jobs/validate.h"
#include "skinlesion/manifest/manifest.h"


namespace skinlesion::jobs {
namespace fs = std::filesystem;
namespace {

using google::protobuf::util::TimeUtil;

}  // namespace

struct JobManager::Running {
  std::string id;
  int slots = 1;
  std::atomic<bool> cancel{false};
  std::atomic<bool> stop{false};
  // Wakes the monitor loop early (cancel, stop); mu guards no data (cancel and
  // stop are atomics), it only pairs with cv.
  absl::Mutex mu;
  absl::CondVar cv;
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
    v1::JobEvent line;
    line.set_log_line("trainer restarted: job re-queued, it resumes from its last checkpoint");
    manager->Emit(job.id(), line);
    SL_RETURN_IF_ERROR(manager->Transition(job.id(), v1::JOB_STATE_QUEUED, nullptr).status());
    SL_RETURN_IF_ERROR(manager->store_->SetPid(job.id(), 0));
  }
  manager->RefreshStateGauges();
  return manager;
}

JobManager::JobManager(Options options, std::unique_ptr<JobStore> store)
    : options_(std::move(options)), store_(std::move(store)) {}

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
      for (auto& [id, r] : running_) {
        r->stop = true;
        r->cv.SignalAll();
      }
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
    r->cancel = true;
    r->cv.SignalAll();
  }
  // The run's finish() sets done under mu_ and signals cv_: wait for it (no polling).
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

// Publishes RUN/model (+ the report) as a new version; see manager.h.
absl::StatusOr<v1::ModelRef> PublishRun(registry::Registry& registry, const v1::Job& job,
                                        std::vector<std::string>* notes) {
  const std::string model = job.config().model_name();
  const std::string model_dir = job.run_dir() + "/model";
  const std::string report_dir = job.run_dir() + "/report";
  std::map<std::string, std::string> files;
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(model_dir, ec)) {
    const std::string name = entry.path().filename().string();
    if (entry.is_regular_file() && name != "manifest.json") files[name] = entry.path().string();
  }
  if (ec)
    return absl::FailedPreconditionError(
        absl::StrCat("no model directory ", model_dir, ": ", ec.message()));
  if (!fs::is_regular_file(report_dir + "/metrics.json", ec)) {
    return absl::FailedPreconditionError(absl::StrCat(report_dir, "/metrics.json is missing"));
  }
  files["metrics.json"] = report_dir + "/metrics.json";
  for (const auto& entry : fs::directory_iterator(report_dir, ec)) {
    if (entry.is_regular_file() && entry.path().extension() == ".png") {
      files.emplace(entry.path().filename().string(), entry.path().string());
    }
  }
  // Read as a server will read it: a job whose model could not be served fails here.
  SL_ASSIGN_OR_RETURN(ModelManifest model_manifest, ReadModelManifest(model_dir));
  nlohmann::json& doc = model_manifest.document;
  doc["job_id"] = job.id();
  auto production = registry.GetAlias(model, "production");
  doc["parent_version"] = production.ok() ? nlohmann::json(production->version) : nlohmann::json();
  doc["promotion_gates"] = {{"metrics", {"balanced_accuracy", "melanoma_recall"}}};
  const nlohmann::json manifest = model_manifest.ToJson();
  // A trainer killed after publishing but before recording success publishes this
  // job again on restart: reuse the version that already carries its job id.
  int64_t version = 0;
  if (auto versions = registry.ListVersions(model); versions.ok()) {
    for (auto it = versions->rbegin(); it != versions->rend() && version == 0; ++it) {
      auto info = registry.GetVersion(model, *it);
      if (info.ok() && info->manifest.value("job_id", "") == job.id()) version = *it;
    }
  }
  if (version != 0) {
    notes->push_back(absl::StrCat("version ", version,
                                  " was already published by this job (before a restart)"));
  } else {
    SL_ASSIGN_OR_RETURN(version, registry.Publish(model, files, manifest));
  }
  const std::string reason = absl::StrCat("training job ", job.id());
  // `staging` holds the newest candidate whatever its metrics: the gates guard
  // `production`, not the review slot.
  SL_RETURN_IF_ERROR(registry.SetAlias(model, "staging", version, reason, /*force=*/true));
  v1::ModelRef ref;
  ref.set_name(model);
  ref.set_version(version);
  ref.set_alias("staging");
  ref.set_sha256(model_manifest.sha256);
  if (job.config().promote_to_production()) {
    const absl::Status s = registry.SetAlias(model, "production", version, reason);
    if (s.ok()) {
      ref.set_alias("production");
    } else {
      notes->push_back(
          absl::StrCat("production not moved to version ", version, ": ", s.message()));
    }
  }
  return ref;
}

void JobManager::RunJob(std::shared_ptr<Running> r) {
  const std::string& id = r->id;
  auto finish = [&] {
    absl::MutexLock lock(&mu_);
    slots_in_use_ -= r->slots;
    r->done = true;
    cv_.SignalAll();
  };
  auto fail = [&](const std::string& reason) {
    SL_LOG(WARNING) << "job " << id << " failed: " << reason;
    auto s =
        Transition(id, v1::JOB_STATE_FAILED, [&](v1::Job& j) { j.set_failure_reason(reason); });
    if (!s.ok()) SL_LOG(ERROR) << "job " << id << ": " << s.status();
  };
  auto log_line = [&](const std::string& text) {
    v1::JobEvent e;
    e.set_log_line(text);
    Emit(id, e);
  };

  auto job_or = store_->Get(id);
  if (!job_or.ok()) {
    SL_LOG(ERROR) << "job " << id << ": " << job_or.status();
    finish();
    return;
  }
  const v1::Job job = *job_or;
  const v1::TrainingConfig& config = job.config();
  const std::string run_dir = job.run_dir();
  std::error_code ec;
  fs::create_directories(run_dir + "/logs", ec);
  auto train_config = TrainConfigJson(config);
  absl::Status prepared =
      ec ? absl::InternalError(absl::StrCat("cannot create ", run_dir, ": ", ec.message()))
         : train_config.status();
  if (prepared.ok()) {
    prepared = WriteFileAtomically(run_dir + "/job_config.json", train_config->dump(2) + "\n");
  }
  if (!prepared.ok()) {
    fail(absl::StrCat("cannot prepare the run: ", prepared.message()));
    finish();
    return;
  }

  const bool resume = job.attempt() > 1;
  const std::string progress_path = run_dir + "/progress.jsonl";
  std::vector<std::string> args = {options_.cli_path,
                                   "train",
                                   "--data=" + config.data_dir(),
                                   "--out=" + run_dir,
                                   "--config=" + run_dir + "/job_config.json",
                                   "--device=" + options_.device};
  // Without a labels CSV the data folder says what it is (HAM10000 metadata or class folders).
  if (!config.metadata_file().empty()) args.push_back("--metadata=" + config.metadata_file());
  if (!config.split_file().empty()) args.push_back("--split=" + config.split_file());
  if (resume) args.push_back("--resume");
  const int world_size = std::max(1, config.world_size());
  std::vector<std::string> dist_env;
  if (world_size > 1) {
    auto port = FreePort();
    if (!port.ok()) {
      fail(std::string(port.status().message()));
      finish();
      return;
    }
    dist_env = {"MASTER_ADDR=127.0.0.1", absl::StrCat("MASTER_PORT=", *port),
                absl::StrCat("WORLD_SIZE=", world_size)};
  }
  log_line(absl::StrCat("attempt ", job.attempt(),
                        resume ? " (resuming from the last checkpoint)" : "", ": ",
                        absl::StrJoin(args, " "), " --progress_jsonl=", progress_path,
                        world_size > 1 ? absl::StrCat(" x", world_size, " ranks") : ""));

  FileTail progress_tail(progress_path);
  std::vector<FileTail> stderr_tails;
  std::vector<Child> children;
  std::deque<std::string> last_lines;
  absl::Status spawn_status;
  for (int rank = 0; rank < world_size; ++rank) {
    std::vector<std::string> rank_args = args;
    if (rank == 0) rank_args.push_back("--progress_jsonl=" + progress_path);
    std::vector<std::string> env = dist_env;
    if (world_size > 1) env.push_back(absl::StrCat("RANK=", rank));
    const std::string err_path = absl::StrCat(run_dir, "/logs/rank", rank, ".stderr");
    stderr_tails.emplace_back(err_path);
    auto pid =
        Spawn(rank_args, env, absl::StrCat(run_dir, "/logs/rank", rank, ".stdout"), err_path);
    if (!pid.ok()) {
      spawn_status = pid.status();
      break;
    }
    children.push_back({.pid = *pid, .rank = rank});
  }
  if (!children.empty()) (void)store_->SetPid(id, children.front().pid);

  v1::JobProgress progress = job.progress();
  auto handle_progress_line = [&](const std::string& line) {
    const ProgressEvent kind = ApplyProgressLine(line, progress);
    if (kind == ProgressEvent::kNone) return;
    (void)store_->Update(id, [&](v1::Job& stored) { *stored.mutable_progress() = progress; });
    v1::JobEvent e;
    *e.mutable_progress() = progress;
    Emit(id, e);
    if (options_.metrics != nullptr) {
      const bool done = kind == ProgressEvent::kPhase;
      options_.metrics->Progress(id, done ? 1.0 : ProgressFraction(progress), progress.loss(),
                                 progress.images_per_second());
    }
  };
  auto pump = [&](bool flush) {
    for (const std::string& line : progress_tail.Read(flush)) handle_progress_line(line);
    for (size_t i = 0; i < stderr_tails.size(); ++i) {
      for (std::string& line : stderr_tails[i].Read(flush)) {
        if (world_size > 1) line = absl::StrCat("[rank ", i, "] ", line);
        last_lines.push_back(line);
        if (static_cast<int>(last_lines.size()) > options_.stderr_tail_lines)
          last_lines.pop_front();
        log_line(line);
      }
    }
  };

  auto reap = [&] { return ReapExited(children); };
  // SIGTERM, then SIGKILL after the grace period; waits for every child.
  auto stop_all = [&] { StopAll(children, absl::ToChronoMilliseconds(options_.kill_grace)); };

  std::string failure;
  if (!spawn_status.ok())
    failure = absl::StrCat("cannot start the training process: ", spawn_status.message());
  enum class End { kExited, kCancelled, kStopped } end = End::kExited;
  if (!failure.empty()) {
    stop_all();
  } else {
    while (true) {
      pump(false);
      const bool all_exited = reap();
      if (all_exited) break;
      bool crashed = false;
      for (const Child& c : children) {
        crashed |= c.exited && !(WIFEXITED(c.status) && WEXITSTATUS(c.status) == 0);
      }
      if (crashed) {  // One rank died: the others would wait for it forever.
        stop_all();
        break;
      }
      if (r->cancel || r->stop) {
        end = r->cancel ? End::kCancelled : End::kStopped;
        stop_all();
        break;
      }
      absl::MutexLock lock(&r->mu);
      r->cv.WaitWithTimeout(&r->mu, options_.poll_interval);
    }
  }
  pump(true);
  (void)store_->SetPid(id, 0);
  if (end == End::kExited && failure.empty()) {
    for (const Child& c : children) {
      if (!(WIFEXITED(c.status) && WEXITSTATUS(c.status) == 0)) {
        failure = absl::StrCat(world_size > 1 ? absl::StrCat("rank ", c.rank, ": ") : "",
                               "skinlesion train ", DescribeExit(c.status));
        break;
      }
    }
    if (!failure.empty() && !last_lines.empty()) {
      absl::StrAppend(&failure, "; last stderr lines:\n", absl::StrJoin(last_lines, "\n"));
    }
  }

  if (end == End::kStopped) {
    log_line(
        "trainer stopping: job re-queued, it resumes from its last checkpoint on the next start");
    auto s = Transition(id, v1::JOB_STATE_QUEUED, nullptr);
    if (!s.ok()) SL_LOG(ERROR) << "job " << id << ": " << s.status();
  } else if (end == End::kCancelled) {
    auto s = Transition(id, v1::JOB_STATE_CANCELLED,
                        [](v1::Job& j) { j.add_notes("cancelled while running"); });
    if (!s.ok()) SL_LOG(ERROR) << "job " << id << ": " << s.status();
  } else if (!failure.empty()) {
    fail(failure);
  } else {
    handle_progress_line(R"({"event": "phase", "phase": "publish"})");
    auto current = store_->Get(id);
    std::vector<std::string> notes;
    auto published =
        current.ok() ? PublishRun(*options_.registry, *current, &notes) : current.status();
    if (!published.ok()) {
      fail(absl::StrCat("publishing to the registry failed: ", published.status().message()));
    } else {
      for (const std::string& n : notes) log_line(n);
      log_line(absl::StrCat("published ", published->name(), " version ", published->version(),
                            " (", published->alias(), ")"));
      auto s = Transition(id, v1::JOB_STATE_SUCCEEDED, [&](v1::Job& j) {
        *j.mutable_published() = *published;
        for (const std::string& n : notes) j.add_notes(n);
      });
      if (!s.ok()) SL_LOG(ERROR) << "job " << id << ": " << s.status();
    }
  }
  finish();
}

}  // namespace skinlesion::jobs
