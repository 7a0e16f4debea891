// The durable job queue of skinlesion-trainer: jobs and their events in SQLite.
//
// Tables (WAL journal, synchronous=FULL: a committed change survives kill -9 and
// power loss):
//   jobs(id, state, config, created, started, finished, failure_reason, run_dir,
//        attempt, pid, published, notes, progress)
//   events(job_id, sequence, time, event)   -- event: a JobEvent as JSON
//
// State machine (anything else is FailedPrecondition):
//   QUEUED  -> RUNNING | CANCELLED
//   RUNNING -> SUCCEEDED | FAILED | CANCELLED | QUEUED (trainer stopped; resumes)
//
// Thread-safety: every method may be called from any thread (one connection,
// db_, used only under mu_; each method takes mu_ for its whole statement or
// transaction). One process owns a database at a time (the trainer); a second
// opener would see SQLITE_BUSY -> Unavailable.
#ifndef SKINLESION_JOBS_STORE_H_
#define SKINLESION_JOBS_STORE_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "skinlesion/v1/training.pb.h"

struct sqlite3;

namespace skinlesion::jobs {

bool IsTerminal(v1::JobState state);
// "queued", "running", ... ("unspecified" for anything else).
std::string StateName(v1::JobState state);
// Whether `from` -> `to` is allowed by the state machine above.
bool IsAllowedTransition(v1::JobState from, v1::JobState to);

class JobStore {
 public:
  // Opens (creating when missing) the database at `path`.
  static absl::StatusOr<std::unique_ptr<JobStore>> Open(const std::string& path);
  ~JobStore();

  // A new QUEUED job with a fresh id ("job-<time>-<random>") and `created` = now.
  absl::StatusOr<v1::Job> Create(const v1::TrainingConfig& config) ABSL_LOCKS_EXCLUDED(mu_);
  // NotFound when there is no such job.
  absl::StatusOr<v1::Job> Get(absl::string_view id) const ABSL_LOCKS_EXCLUDED(mu_);
  // Jobs in any of `states` (all when empty), oldest first.
  absl::StatusOr<std::vector<v1::Job>> List(const std::vector<v1::JobState>& states) const
      ABSL_LOCKS_EXCLUDED(mu_);

  // Reads the job, lets `mutate` change it (state, progress, notes, ...) and
  // writes it back in one transaction. A state change must be allowed
  // (FailedPrecondition otherwise, nothing written); entering RUNNING sets
  // `started`, entering a terminal state sets `finished`. Returns the new job.
  absl::StatusOr<v1::Job> Update(absl::string_view id, const std::function<void(v1::Job&)>& mutate)
      ABSL_LOCKS_EXCLUDED(mu_);

  // The process id of the running job's child (0: none).
  absl::Status SetPid(absl::string_view id, int64_t pid) ABSL_LOCKS_EXCLUDED(mu_);
  absl::StatusOr<int64_t> GetPid(absl::string_view id) const ABSL_LOCKS_EXCLUDED(mu_);

  // Appends an event; its sequence (1, 2, ... per job) and time are assigned here.
  absl::StatusOr<v1::JobEvent> AppendEvent(absl::string_view id, v1::JobEvent event)
      ABSL_LOCKS_EXCLUDED(mu_);
  // The job's events with sequence > after, in order (at most `limit`).
  absl::StatusOr<std::vector<v1::JobEvent>> Events(absl::string_view id, int64_t after,
                                                   int limit = 10000) const
      ABSL_LOCKS_EXCLUDED(mu_);

  const std::string& path() const { return path_; }

 private:
  JobStore(sqlite3* db, std::string path) : db_(db), path_(std::move(path)) {}
  absl::StatusOr<v1::Job> GetLocked(absl::string_view id) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::Status WriteLocked(const v1::Job& job) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  mutable absl::Mutex mu_;
  sqlite3* db_ ABSL_GUARDED_BY(mu_);  // The one connection (closed by the destructor).
  std::string path_;
};

}  // namespace skinlesion::jobs

#endif  // SKINLESION_JOBS_STORE_H_
