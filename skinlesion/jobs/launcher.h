// What a training job needs of the operating system to run its children, behind one
// small interface so that JobRun and JobManager are tested with a fake (no real
// processes): start a child, find a free port for MASTER_PORT, see which children
// have exited, stop the rest, and describe a wait status. PosixLauncher is the real
// one, over the functions of process.h.
//
// A child's logs and the progress file are plain files that JobRun tails (FileTail):
// a fake "writes" its child's output by appending to the paths it was given.
//
// Thread-safety: a launcher is shared by every running job, so its methods may be
// called from several threads at once (PosixLauncher holds no state; a fake guards
// its own). A given `children` vector is used by one thread (its JobRun).
#ifndef SKINLESION_JOBS_LAUNCHER_H_
#define SKINLESION_JOBS_LAUNCHER_H_

#include <sys/types.h>

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "skinlesion/jobs/process.h"

namespace skinlesion::jobs {

class ProcessLauncher {
 public:
  virtual ~ProcessLauncher() = default;

  // Starts `args` (args[0] a path) with `extra_env` ("KEY=value", overriding) added to
  // the environment and stdout/stderr appended to the two files; the child's pid.
  // ResourceExhausted when no process can be started (fork failed), InternalError
  // when a log file cannot be opened.
  virtual absl::StatusOr<pid_t> Launch(const std::vector<std::string>& args,
                                       const std::vector<std::string>& extra_env,
                                       const std::string& stdout_path,
                                       const std::string& stderr_path) = 0;
  // A TCP port on 127.0.0.1 that was free a moment ago (MASTER_PORT).
  virtual absl::StatusOr<int> FreePort() = 0;
  // Without blocking, records which children have exited (Child::exited, with the
  // wait status in Child::status); true when every child has.
  virtual bool Reap(std::vector<Child>& children) = 0;
  // SIGTERM to every child still running, SIGKILL to those still running after
  // `grace`; returns once every child is reaped.
  virtual void Stop(std::vector<Child>& children, absl::Duration grace) = 0;
  // "exited with code 2", "killed by signal 9 (Killed), possibly out of memory".
  virtual std::string DescribeExit(int wait_status) const = 0;
};

// Real processes: Spawn, FreePort, ReapExited, StopAll and DescribeExit of process.h.
class PosixLauncher final : public ProcessLauncher {
 public:
  absl::StatusOr<pid_t> Launch(const std::vector<std::string>& args,
                               const std::vector<std::string>& extra_env,
                               const std::string& stdout_path,
                               const std::string& stderr_path) override;
  absl::StatusOr<int> FreePort() override;
  bool Reap(std::vector<Child>& children) override;
  void Stop(std::vector<Child>& children, absl::Duration grace) override;
  std::string DescribeExit(int wait_status) const override;
};

}  // namespace skinlesion::jobs

#endif  // SKINLESION_JOBS_LAUNCHER_H_
