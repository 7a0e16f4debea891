// One attempt of a training job, from its run directory to the end of its
// children (docs/trainer.md, "Job states"), in steps:
//
//   Prepare  RUN/logs, RUN/job_config.json (TrainConfigJson), the command line
//              CLI train --data=D --out=RUN --config=RUN/job_config.json --device=DEV
//                  [--metadata=M] [--split=S] [--resume]   (--resume from attempt 2)
//            and, for world_size N > 1, MASTER_ADDR/MASTER_PORT (a free port)/WORLD_SIZE
//   Spawn    logs the command line, starts one child per rank (RANK=r when N > 1;
//            rank 0 alone gets --progress_jsonl=RUN/progress.jsonl), records rank 0's pid
//   Pump     turns new progress lines into progress events (stored on the job, metrics)
//            and new stderr lines into log_line events ("[rank R] " when N > 1),
//            keeping the last stderr_tail_lines for a failure reason
//   Monitor  pumps every poll_interval until every child has exited; a rank that
//            fails stops the others (they would wait for it forever); a cancel or
//            stop request (RunControl) wakes it at once and stops the children
//   Stop     SIGTERM, then SIGKILL after kill_grace (ProcessLauncher::Stop)
//   Finish   a last pump (lines without '\n' too), pid 0, and the outcome.
//
// The caller (JobManager::RunJob) turns the outcome into the job's next state and,
// on success, publishes the run.
//
// Thread-safety: a JobRun is used by one thread (its job's). RunControl is shared
// between that thread and the ones that cancel or stop the job; its mu_ guards the
// request.
#ifndef SKINLESION_JOBS_JOB_RUN_H_
#define SKINLESION_JOBS_JOB_RUN_H_

#include <deque>
#include <functional>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "skinlesion/jobs/launcher.h"
#include "skinlesion/jobs/metrics.h"
#include "skinlesion/jobs/process.h"
#include "skinlesion/jobs/store.h"
#include "skinlesion/v1/training.pb.h"

namespace skinlesion::jobs {

// Asks a running job to end: Cancel (the job becomes CANCELLED) or Stop (the trainer
// is shutting down: the job goes back to QUEUED). Cancel wins when both are asked.
class RunControl {
 public:
  enum class Request { kNone, kCancel, kStop };

  void Cancel() ABSL_LOCKS_EXCLUDED(mu_);
  void Stop() ABSL_LOCKS_EXCLUDED(mu_);
  Request request() const ABSL_LOCKS_EXCLUDED(mu_);
  // Returns after `timeout`, or at once when a request is (or was already) made.
  void Wait(absl::Duration timeout) ABSL_LOCKS_EXCLUDED(mu_);

 private:
  mutable absl::Mutex mu_;
  absl::CondVar cv_;  // With mu_: a new request.
  bool cancel_ ABSL_GUARDED_BY(mu_) = false;
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
};

// How a run ended.
struct RunOutcome {
  enum class End {
    kSucceeded,  // Every child exited with code 0: publish the run.
    kFailed,     // failure_reason says why (preparing, starting, an exit code or signal).
    kCancelled,  // RunControl::Cancel; the children were stopped.
    kStopped,    // RunControl::Stop; the children were stopped.
  };
  End end = End::kSucceeded;
  // kFailed: "cannot prepare the run: ...", "cannot start the training process: ...",
  // or "[rank R: ]skinlesion train exited with code N" / "... killed by signal S (...)"
  // and "; last stderr lines:\n..." when there are any.
  std::string failure_reason;
};

class JobRun {
 public:
  struct Options {
    std::string cli_path;  // The `skinlesion` binary (args[0]).
    std::string device = "cpu";
    absl::Duration kill_grace = absl::Seconds(10);
    absl::Duration poll_interval = absl::Milliseconds(200);
    int stderr_tail_lines = 20;
    ProcessLauncher* launcher = nullptr;  // Required.
    JobStore* store = nullptr;            // Required: the job's progress and pid.
    JobMetrics* metrics = nullptr;        // Optional.
    // Required: stores the job's event and wakes its watchers (JobManager::Emit).
    std::function<void(const std::string& job_id, v1::JobEvent event)> emit;
  };

  // `job` is RUNNING with its attempt and run_dir set (the scheduler's transition).
  JobRun(v1::Job job, Options options, RunControl& control);

  // Prepare, Spawn, Monitor (with Pump and Stop), Finish; see the file comment.
  RunOutcome Run();

  // Applies one progress line (the format of `skinlesion train --progress_jsonl`):
  // stored on the job, a progress event and the metrics. The manager's own phases
  // ("publish") come through here too.
  void HandleProgressLine(absl::string_view line);

 private:
  // Each step as in the file comment. Prepare's and Spawn's errors are the failure
  // reason ("cannot prepare the run: ...", FreePort's message; Spawn's is prefixed
  // by Run).
  absl::Status Prepare();
  absl::Status Spawn();
  void Pump(bool flush);
  // kSucceeded when every child has exited (Finish reads their exit codes), kFailed
  // when a rank failed and the others were stopped, kCancelled / kStopped on request.
  RunOutcome::End Monitor();
  void Stop();
  // The last pump, pid 0, and the outcome: `failure` when not empty (a failed start),
  // else, for kSucceeded and kFailed, the children's exits decide.
  RunOutcome Finish(RunOutcome::End end, std::string failure);
  // Why the children failed ("" when they all exited with code 0): the rank that
  // stopped the others, else the first that did not exit with code 0.
  std::string ExitFailure() const;
  void LogLine(std::string text);

  const v1::Job job_;
  const Options options_;
  RunControl& control_;
  int world_size_ = 1;
  std::string progress_path_;
  std::vector<std::string> args_;      // Every rank's command line (rank 0 adds --progress_jsonl).
  std::vector<std::string> dist_env_;  // MASTER_ADDR, MASTER_PORT, WORLD_SIZE when world_size > 1.
  v1::JobProgress progress_;
  FileTail progress_tail_;
  std::vector<FileTail> stderr_tails_;  // One per rank.
  std::vector<Child> children_;
  int failed_rank_ = -1;                // The rank whose failure stopped the others (-1: none).
  std::deque<std::string> last_lines_;  // The last stderr lines of every rank.
};

}  // namespace skinlesion::jobs

#endif  // SKINLESION_JOBS_JOB_RUN_H_
