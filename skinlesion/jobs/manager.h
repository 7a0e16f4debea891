// The job manager of skinlesion-trainer: a durable queue (JobStore) and a
// scheduler that runs each job as child processes of the `skinlesion` CLI:
//
//   skinlesion train --data D --metadata M [--split S] --out RUNS/<id>
//       --config RUNS/<id>/job_config.json --progress_jsonl RUNS/<id>/progress.jsonl
//       --device DEV [--resume]
//
// (world_size N > 1: N such processes with MASTER_ADDR=127.0.0.1, MASTER_PORT=<free>,
// RANK, WORLD_SIZE; rank 0 reports and exports). Children get SIGKILL when the
// manager's process dies (PR_SET_PDEATHSIG), so nothing outlives a killed trainer;
// a job found RUNNING when the manager starts goes back to QUEUED and its next
// start passes --resume (exact resume from RUNS/<id>/checkpoints/last).
//
// Each attempt is a JobRun (job_run.h: prepare, spawn, pump progress, monitor, stop)
// whose children are started through a ProcessLauncher (launcher.h: real processes,
// or a fake in tests). The child's progress file and stderr are tailed into
// JobEvents (stored, then fanned out to Watch). A child that exits non-zero or by a
// signal fails the job with the exit code / signal and its last stderr lines; the
// manager keeps going. On success the run is published to the registry (PublishRun
// in publish.h, docs/trainer.md), `staging` moves to it, and `production` too when
// asked (a promotion gate refusing is a note on the job, which still succeeds).
//
// Thread-safety: every public method may be called from any thread (the gRPC
// handlers do), except that Start() and Shutdown() must not race each other.
// mu_ guards the scheduler's bookkeeping (running_, slots_in_use_, started_, each
// Running's `done`); events_mu_ only orders the wake-ups of Watch (it guards no
// data: the events are in the store). Lock order: mu_ before events_mu_, before
// the store's mutex (the scheduler and Cancel call the store and Emit under mu_) and
// before a Running's RunControl mutex (Cancel and Shutdown make their request under
// mu_); events_mu_ and a RunControl's mutex are held only around a check, a change
// or a wait, never across a call.
#ifndef SKINLESION_JOBS_MANAGER_H_
#define SKINLESION_JOBS_MANAGER_H_

#include <atomic>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "skinlesion/jobs/job_run.h"
#include "skinlesion/jobs/launcher.h"
#include "skinlesion/jobs/metrics.h"
#include "skinlesion/jobs/store.h"
#include "skinlesion/registry/registry.h"
#include "skinlesion/v1/training.pb.h"

namespace skinlesion::jobs {

class JobManager {
 public:
  struct Options {
    std::string db_path;                     // SQLite database (created if missing).
    std::string runs_dir;                    // Run directories: <runs_dir>/<job id>.
    std::string cli_path;                    // The `skinlesion` binary.
    std::string device = "cpu";              // --device of the children.
    int max_concurrent_jobs = 1;             // Devices: a job of world_size N takes min(N, this).
    registry::Registry* registry = nullptr;  // Publish target; required.
    absl::Duration kill_grace = absl::Seconds(10);  // SIGTERM -> SIGKILL.
    absl::Duration poll_interval = absl::Milliseconds(200);
    int stderr_tail_lines = 20;     // Lines of stderr in a failure reason.
    JobMetrics* metrics = nullptr;  // Optional.
    // Starts the children; nullptr: a PosixLauncher of the manager's own (real
    // processes). Tests pass a fake; it must outlive the manager.
    ProcessLauncher* launcher = nullptr;
  };

  // Opens the store and re-queues jobs left RUNNING by a previous process.
  // Nothing runs before Start().
  static absl::StatusOr<std::unique_ptr<JobManager>> Create(const Options& options);
  ~JobManager();  // Calls Shutdown().

  void Start() ABSL_LOCKS_EXCLUDED(mu_);
  // Stops scheduling, stops running children (SIGTERM, then SIGKILL after
  // kill_grace), puts their jobs back to QUEUED (they resume on the next start)
  // and ends every Watch. Idempotent.
  void Shutdown() ABSL_LOCKS_EXCLUDED(mu_, events_mu_);

  // Validates (ValidateTrainingConfig) and queues. Paths are made absolute.
  absl::StatusOr<v1::Job> Submit(v1::TrainingConfig config) ABSL_LOCKS_EXCLUDED(mu_);
  absl::StatusOr<v1::Job> Get(const std::string& id) const;
  absl::StatusOr<std::vector<v1::Job>> List(const std::vector<v1::JobState>& states) const;
  // QUEUED -> CANCELLED at once; RUNNING -> the children are stopped and the job
  // becomes CANCELLED (waits for that, up to kill_grace + 5 s). A finished job is
  // FailedPrecondition; an unknown one NotFound.
  absl::StatusOr<v1::Job> Cancel(const std::string& id) ABSL_LOCKS_EXCLUDED(mu_);

  // Replays the job's stored events, then sends new ones as they come. Returns OK
  // after the terminal state event, Cancelled when `cancelled()` turns true,
  // Unavailable on Shutdown, NotFound for an unknown job. `send` returning false
  // (the client went away) ends with Cancelled.
  absl::Status Watch(const std::string& id, const std::function<bool(const v1::JobEvent&)>& send,
                     const std::function<bool()>& cancelled) ABSL_LOCKS_EXCLUDED(events_mu_);

  JobStore& store() { return *store_; }

 private:
  struct Running;
  explicit JobManager(Options options, std::unique_ptr<JobStore> store);
  void SchedulerLoop() ABSL_LOCKS_EXCLUDED(mu_);
  // One attempt of a job (a JobRun) on its own thread; maps its outcome to the
  // job's state (QUEUED, CANCELLED, FAILED, or publishes and SUCCEEDED), then frees
  // its slots and marks it done.
  void RunJob(std::shared_ptr<Running> running) ABSL_LOCKS_EXCLUDED(mu_);
  JobRun::Options RunOptions();
  // The end of a run that succeeded: PublishRun, then SUCCEEDED (FAILED if refused).
  void Publish(const std::string& id, JobRun& run);
  void Fail(const std::string& id, const std::string& reason);
  // Transition at a run's end; an error is logged (nothing else to do with it).
  void EndRun(const std::string& id, v1::JobState to, const std::function<void(v1::Job&)>& mutate);
  void LogLine(const std::string& id, std::string text) ABSL_LOCKS_EXCLUDED(events_mu_);
  // Changes the state (store), then appends the state event and wakes watchers.
  // Called with or without mu_ held (never with events_mu_).
  absl::StatusOr<v1::Job> Transition(const std::string& id, v1::JobState to,
                                     const std::function<void(v1::Job&)>& mutate);
  void Emit(const std::string& id, v1::JobEvent event) ABSL_LOCKS_EXCLUDED(events_mu_);
  void RefreshStateGauges();
  int Slots(const v1::Job& job) const;

  const Options options_;
  std::unique_ptr<JobStore> store_;
  const std::unique_ptr<ProcessLauncher> owned_launcher_;  // When options_.launcher is null.
  ProcessLauncher* const launcher_;                        // options_.launcher or owned_launcher_.

  mutable absl::Mutex mu_;
  absl::CondVar cv_;  // With mu_: scheduler wake-ups, a Running's `done`.
  // Pairs with events_cv_; taken after mu_ when both are held, never before it.
  absl::Mutex events_mu_ ABSL_ACQUIRED_AFTER(mu_);
  absl::CondVar events_cv_;  // With events_mu_: new events for watchers.
  std::map<std::string, std::shared_ptr<Running>> running_ ABSL_GUARDED_BY(mu_);
  int slots_in_use_ ABSL_GUARDED_BY(mu_) = 0;
  bool started_ ABSL_GUARDED_BY(mu_) = false;
  // Set under mu_; read without it (Watch, under events_mu_), hence atomic.
  std::atomic<bool> shutdown_{false};
  // Assigned by Start() under mu_, joined by Shutdown() without it: Start() and
  // Shutdown() must not race (the trainer calls them from its main thread).
  std::thread scheduler_;
};

}  // namespace skinlesion::jobs

#endif  // SKINLESION_JOBS_MANAGER_H_
