#include "skinlesion/jobs/store.h"

#include <sqlite3.h>
#include <sys/random.h>

#include <chrono>
#include <cstdio>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "google/protobuf/util/json_util.h"
#include "google/protobuf/util/time_util.h"
#include "nlohmann/json.hpp"
#include "skinlesion/common/status.h"
#include "skinlesion/rpc/job_state.h"

namespace skinlesion::jobs {
namespace {

using google::protobuf::util::TimeUtil;

constexpr const char* kSchema = R"sql(
CREATE TABLE IF NOT EXISTS jobs (
  seq INTEGER PRIMARY KEY AUTOINCREMENT,
  id TEXT NOT NULL UNIQUE,
  state TEXT NOT NULL,
  config TEXT NOT NULL,
  created_ms INTEGER NOT NULL,
  started_ms INTEGER NOT NULL DEFAULT 0,
  finished_ms INTEGER NOT NULL DEFAULT 0,
  failure_reason TEXT NOT NULL DEFAULT '',
  run_dir TEXT NOT NULL DEFAULT '',
  attempt INTEGER NOT NULL DEFAULT 0,
  pid INTEGER NOT NULL DEFAULT 0,
  published_model TEXT NOT NULL DEFAULT '',
  published_version INTEGER NOT NULL DEFAULT 0,
  published_sha256 TEXT NOT NULL DEFAULT '',
  published_alias TEXT NOT NULL DEFAULT '',
  notes TEXT NOT NULL DEFAULT '[]',
  progress TEXT NOT NULL DEFAULT '{}'
);
CREATE INDEX IF NOT EXISTS jobs_state ON jobs(state);
CREATE TABLE IF NOT EXISTS events (
  job_id TEXT NOT NULL,
  sequence INTEGER NOT NULL,
  time_ms INTEGER NOT NULL,
  event TEXT NOT NULL,
  PRIMARY KEY (job_id, sequence)
);
)sql";

constexpr const char* kJobColumns =
    "id, state, config, created_ms, started_ms, finished_ms, failure_reason, run_dir, attempt, "
    "published_model, published_version, published_sha256, notes, progress, published_alias";

absl::Status SqlError(sqlite3* db, absl::string_view what) {
  const int code = sqlite3_errcode(db);
  const std::string message = absl::StrCat("job store: ", what, ": ", sqlite3_errmsg(db));
  if (code == SQLITE_BUSY || code == SQLITE_LOCKED) return absl::UnavailableError(message);
  if (code == SQLITE_CORRUPT || code == SQLITE_NOTADB) return absl::DataLossError(message);
  return absl::InternalError(message);
}

// A prepared statement, finalized on scope exit.
class Statement {
 public:
  Statement(sqlite3* db, const std::string& sql) : db_(db) {
    if (sqlite3_prepare_v2(db, sql.c_str(), -1, &stmt_, nullptr) != SQLITE_OK) stmt_ = nullptr;
  }
  ~Statement() { sqlite3_finalize(stmt_); }
  absl::Status ok() const { return stmt_ ? absl::OkStatus() : SqlError(db_, "prepare"); }
  void Bind(int i, absl::string_view text) {
    sqlite3_bind_text(stmt_, i, text.data(), static_cast<int>(text.size()), SQLITE_TRANSIENT);
  }
  void Bind(int i, int64_t v) { sqlite3_bind_int64(stmt_, i, v); }
  // SQLITE_ROW / SQLITE_DONE, or an error status.
  absl::StatusOr<int> Step() {
    const int rc = sqlite3_step(stmt_);
    if (rc == SQLITE_ROW || rc == SQLITE_DONE) return rc;
    return SqlError(db_, "step");
  }
  std::string Text(int i) const {
    const unsigned char* t = sqlite3_column_text(stmt_, i);
    return t ? std::string(reinterpret_cast<const char*>(t), sqlite3_column_bytes(stmt_, i)) : "";
  }
  int64_t Int(int i) const { return sqlite3_column_int64(stmt_, i); }

 private:
  sqlite3* db_;
  sqlite3_stmt* stmt_ = nullptr;
};

absl::Status Exec(sqlite3* db, const char* sql) {
  char* error = nullptr;
  if (sqlite3_exec(db, sql, nullptr, nullptr, &error) != SQLITE_OK) {
    absl::Status s = SqlError(db, error ? error : sql);
    sqlite3_free(error);
    return s;
  }
  return absl::OkStatus();
}

int64_t NowMs() { return absl::ToUnixMillis(absl::Now()); }

void SetTime(int64_t ms, google::protobuf::Timestamp* t) {
  if (ms > 0) *t = TimeUtil::MillisecondsToTimestamp(ms);
}

int64_t ToMs(const google::protobuf::Timestamp& t) { return TimeUtil::TimestampToMilliseconds(t); }

std::string ToJson(const google::protobuf::Message& m) {
  std::string out;
  google::protobuf::util::JsonPrintOptions options;
  options.preserve_proto_field_names = true;
  (void)google::protobuf::util::MessageToJsonString(m, &out, options);
  return out;
}

absl::Status FromJson(const std::string& text, google::protobuf::Message* m) {
  const auto s = google::protobuf::util::JsonStringToMessage(text, m);
  if (!s.ok())
    return absl::DataLossError(absl::StrCat("job store: bad stored JSON: ", s.ToString()));
  return absl::OkStatus();
}

v1::JobState StateFromName(const std::string& name) {
  for (int s = v1::JOB_STATE_QUEUED; s <= v1::JOB_STATE_CANCELLED; ++s) {
    if (StateName(static_cast<v1::JobState>(s)) == name) return static_cast<v1::JobState>(s);
  }
  return v1::JOB_STATE_UNSPECIFIED;
}

absl::StatusOr<v1::Job> ReadJob(const Statement& st) {
  v1::Job job;
  job.set_id(st.Text(0));
  job.set_state(StateFromName(st.Text(1)));
  SL_RETURN_IF_ERROR(FromJson(st.Text(2), job.mutable_config()));
  // mutable_x() creates the field: only call it for times that are set.
  if (st.Int(3) > 0) SetTime(st.Int(3), job.mutable_created());
  if (st.Int(4) > 0) SetTime(st.Int(4), job.mutable_started());
  if (st.Int(5) > 0) SetTime(st.Int(5), job.mutable_finished());
  job.set_failure_reason(st.Text(6));
  job.set_run_dir(st.Text(7));
  job.set_attempt(static_cast<int32_t>(st.Int(8)));
  if (!st.Text(9).empty()) {
    job.mutable_published()->set_name(st.Text(9));
    job.mutable_published()->set_version(st.Int(10));
    job.mutable_published()->set_sha256(st.Text(11));
    job.mutable_published()->set_alias(st.Text(14));
  }
  const nlohmann::json notes = nlohmann::json::parse(st.Text(12), nullptr, false);
  if (notes.is_array()) {
    for (const auto& n : notes) {
      if (n.is_string()) job.add_notes(n.get<std::string>());
    }
  }
  SL_RETURN_IF_ERROR(FromJson(st.Text(13), job.mutable_progress()));
  return job;
}

std::string NewJobId() {
  uint32_t random = 0;
  if (getrandom(&random, sizeof(random), 0) != sizeof(random)) {
    random = static_cast<uint32_t>(std::chrono::steady_clock::now().time_since_epoch().count());
  }
  return absl::StrCat("job-", absl::FormatTime("%Y%m%d-%H%M%S", absl::Now(), absl::UTCTimeZone()),
                      "-", absl::StrFormat("%08x", random));
}

}  // namespace

bool IsTerminal(v1::JobState state) {
  return state == v1::JOB_STATE_SUCCEEDED || state == v1::JOB_STATE_FAILED ||
         state == v1::JOB_STATE_CANCELLED;
}

std::string StateName(v1::JobState state) { return rpc::JobStateName(state); }

bool IsAllowedTransition(v1::JobState from, v1::JobState to) {
  if (from == v1::JOB_STATE_QUEUED) {
    return to == v1::JOB_STATE_RUNNING || to == v1::JOB_STATE_CANCELLED;
  }
  if (from == v1::JOB_STATE_RUNNING) {
    return to == v1::JOB_STATE_SUCCEEDED || to == v1::JOB_STATE_FAILED ||
           to == v1::JOB_STATE_CANCELLED || to == v1::JOB_STATE_QUEUED;
  }
  return false;
}

absl::StatusOr<std::unique_ptr<JobStore>> JobStore::Open(const std::string& path) {
  sqlite3* db = nullptr;
  if (sqlite3_open_v2(path.c_str(), &db,
                      SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_FULLMUTEX,
                      nullptr) != SQLITE_OK) {
    absl::Status s = absl::UnavailableError(absl::StrCat(
        "job store: cannot open ", path, ": ", db ? sqlite3_errmsg(db) : "out of memory"));
    sqlite3_close(db);
    return s;
  }
  std::unique_ptr<JobStore> store(new JobStore(db, path));
  sqlite3_busy_timeout(db, 2000);
  SL_RETURN_IF_ERROR(Exec(db, "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL;"));
  SL_RETURN_IF_ERROR(Exec(db, kSchema));
  return store;
}

JobStore::~JobStore() { sqlite3_close(db_); }

absl::StatusOr<v1::Job> JobStore::Create(const v1::TrainingConfig& config) {
  absl::MutexLock lock(&mu_);
  v1::Job job;
  job.set_id(NewJobId());
  job.set_state(v1::JOB_STATE_QUEUED);
  *job.mutable_config() = config;
  SetTime(NowMs(), job.mutable_created());
  Statement st(db_, "INSERT INTO jobs (id, state, config, created_ms) VALUES (?, ?, ?, ?)");
  SL_RETURN_IF_ERROR(st.ok());
  st.Bind(1, job.id());
  st.Bind(2, StateName(job.state()));
  st.Bind(3, ToJson(config));
  st.Bind(4, ToMs(job.created()));
  SL_RETURN_IF_ERROR(st.Step().status());
  return job;
}

absl::StatusOr<v1::Job> JobStore::GetLocked(absl::string_view id) const {
  Statement st(db_, absl::StrCat("SELECT ", kJobColumns, " FROM jobs WHERE id = ?"));
  SL_RETURN_IF_ERROR(st.ok());
  st.Bind(1, id);
  SL_ASSIGN_OR_RETURN(const int rc, st.Step());
  if (rc != SQLITE_ROW) return absl::NotFoundError(absl::StrCat("no job '", id, "'"));
  return ReadJob(st);
}

absl::StatusOr<v1::Job> JobStore::Get(absl::string_view id) const {
  absl::MutexLock lock(&mu_);
  return GetLocked(id);
}

absl::StatusOr<std::vector<v1::Job>> JobStore::List(const std::vector<v1::JobState>& states) const {
  absl::MutexLock lock(&mu_);
  std::string sql = absl::StrCat("SELECT ", kJobColumns, " FROM jobs");
  if (!states.empty()) {
    absl::StrAppend(&sql, " WHERE state IN (");
    for (size_t i = 0; i < states.size(); ++i) absl::StrAppend(&sql, i ? ", ?" : "?");
    absl::StrAppend(&sql, ")");
  }
  absl::StrAppend(&sql, " ORDER BY seq");
  Statement st(db_, sql);
  SL_RETURN_IF_ERROR(st.ok());
  for (size_t i = 0; i < states.size(); ++i) st.Bind(static_cast<int>(i) + 1, StateName(states[i]));
  std::vector<v1::Job> jobs;
  while (true) {
    SL_ASSIGN_OR_RETURN(const int rc, st.Step());
    if (rc != SQLITE_ROW) break;
    SL_ASSIGN_OR_RETURN(v1::Job job, ReadJob(st));
    jobs.push_back(std::move(job));
  }
  return jobs;
}

absl::Status JobStore::WriteLocked(const v1::Job& job) {
  Statement st(db_,
               "UPDATE jobs SET state = ?, config = ?, started_ms = ?, finished_ms = ?, "
               "failure_reason = ?, run_dir = ?, attempt = ?, published_model = ?, "
               "published_version = ?, published_sha256 = ?, notes = ?, progress = ?, "
               "published_alias = ? WHERE id = ?");
  SL_RETURN_IF_ERROR(st.ok());
  st.Bind(1, StateName(job.state()));
  st.Bind(2, ToJson(job.config()));
  st.Bind(3, job.has_started() ? ToMs(job.started()) : 0);
  st.Bind(4, job.has_finished() ? ToMs(job.finished()) : 0);
  st.Bind(5, job.failure_reason());
  st.Bind(6, job.run_dir());
  st.Bind(7, static_cast<int64_t>(job.attempt()));
  st.Bind(8, job.published().name());
  st.Bind(9, job.published().version());
  st.Bind(10, job.published().sha256());
  nlohmann::json notes = nlohmann::json::array();
  for (const std::string& n : job.notes()) notes.push_back(n);
  st.Bind(11, notes.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace));
  st.Bind(12, ToJson(job.progress()));
  st.Bind(13, job.published().alias());
  st.Bind(14, job.id());
  SL_RETURN_IF_ERROR(st.Step().status());
  return absl::OkStatus();
}

absl::StatusOr<v1::Job> JobStore::Update(absl::string_view id,
                                         const std::function<void(v1::Job&)>& mutate) {
  absl::MutexLock lock(&mu_);
  SL_RETURN_IF_ERROR(Exec(db_, "BEGIN IMMEDIATE"));
  auto result = [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) -> absl::StatusOr<v1::Job> {
    SL_ASSIGN_OR_RETURN(v1::Job job, GetLocked(id));
    const v1::JobState before = job.state();
    mutate(job);
    job.set_id(std::string(id));
    if (job.state() != before) {
      if (!IsAllowedTransition(before, job.state())) {
        return absl::FailedPreconditionError(absl::StrCat(
            "job ", id, " is ", StateName(before), ", cannot become ", StateName(job.state())));
      }
      if (job.state() == v1::JOB_STATE_RUNNING) SetTime(NowMs(), job.mutable_started());
      if (IsTerminal(job.state())) SetTime(NowMs(), job.mutable_finished());
    }
    SL_RETURN_IF_ERROR(WriteLocked(job));
    return job;
  }();
  SL_RETURN_IF_ERROR(Exec(db_, result.ok() ? "COMMIT" : "ROLLBACK"));
  return result;
}

absl::Status JobStore::SetPid(absl::string_view id, int64_t pid) {
  absl::MutexLock lock(&mu_);
  Statement st(db_, "UPDATE jobs SET pid = ? WHERE id = ?");
  SL_RETURN_IF_ERROR(st.ok());
  st.Bind(1, pid);
  st.Bind(2, id);
  SL_RETURN_IF_ERROR(st.Step().status());
  if (sqlite3_changes(db_) == 0) return absl::NotFoundError(absl::StrCat("no job '", id, "'"));
  return absl::OkStatus();
}

absl::StatusOr<int64_t> JobStore::GetPid(absl::string_view id) const {
  absl::MutexLock lock(&mu_);
  Statement st(db_, "SELECT pid FROM jobs WHERE id = ?");
  SL_RETURN_IF_ERROR(st.ok());
  st.Bind(1, id);
  SL_ASSIGN_OR_RETURN(const int rc, st.Step());
  if (rc != SQLITE_ROW) return absl::NotFoundError(absl::StrCat("no job '", id, "'"));
  return st.Int(0);
}

absl::StatusOr<v1::JobEvent> JobStore::AppendEvent(absl::string_view id, v1::JobEvent event) {
  absl::MutexLock lock(&mu_);
  SL_RETURN_IF_ERROR(Exec(db_, "BEGIN IMMEDIATE"));
  auto result = [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) -> absl::StatusOr<v1::JobEvent> {
    Statement next(db_, "SELECT COALESCE(MAX(sequence), 0) + 1 FROM events WHERE job_id = ?");
    SL_RETURN_IF_ERROR(next.ok());
    next.Bind(1, id);
    SL_RETURN_IF_ERROR(next.Step().status());
    event.set_job_id(std::string(id));
    event.set_sequence(next.Int(0));
    const int64_t now = NowMs();
    SetTime(now, event.mutable_time());
    Statement st(db_, "INSERT INTO events (job_id, sequence, time_ms, event) VALUES (?, ?, ?, ?)");
    SL_RETURN_IF_ERROR(st.ok());
    st.Bind(1, id);
    st.Bind(2, event.sequence());
    st.Bind(3, now);
    st.Bind(4, ToJson(event));
    SL_RETURN_IF_ERROR(st.Step().status());
    return event;
  }();
  SL_RETURN_IF_ERROR(Exec(db_, result.ok() ? "COMMIT" : "ROLLBACK"));
  return result;
}

absl::StatusOr<std::vector<v1::JobEvent>> JobStore::Events(absl::string_view id, int64_t after,
                                                           int limit) const {
  absl::MutexLock lock(&mu_);
  Statement st(
      db_, "SELECT event FROM events WHERE job_id = ? AND sequence > ? ORDER BY sequence LIMIT ?");
  SL_RETURN_IF_ERROR(st.ok());
  st.Bind(1, id);
  st.Bind(2, after);
  st.Bind(3, static_cast<int64_t>(limit));
  std::vector<v1::JobEvent> events;
  while (true) {
    SL_ASSIGN_OR_RETURN(const int rc, st.Step());
    if (rc != SQLITE_ROW) break;
    v1::JobEvent e;
    SL_RETURN_IF_ERROR(FromJson(st.Text(0), &e));
    events.push_back(std::move(e));
  }
  return events;
}

}  // namespace skinlesion::jobs
