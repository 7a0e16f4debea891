// The child processes of a training job (one per rank): spawning, log tails, exit
// descriptions and stopping. LibTorch-free, so it is unit-tested on its own.
//
//   std::vector<Child> children;
//   SL_ASSIGN_OR_RETURN(const pid_t pid, Spawn({"/usr/bin/skinlesion", "train", ...}, env,
//                                              "rank0.stdout", "rank0.stderr"));
//   children.push_back({.pid = pid});
//   FileTail tail("rank0.stderr");
//   while (!ReapExited(children)) { for (auto& line : tail.Read(false)) ...; }
//   StopAll(children, std::chrono::seconds(10));  // SIGTERM, SIGKILL after the grace
#ifndef SKINLESION_JOBS_PROCESS_H_
#define SKINLESION_JOBS_PROCESS_H_

#include <sys/types.h>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace skinlesion::jobs {

// Longest log line kept (longer ones are cut).
inline constexpr size_t kMaxLogLine = 2000;

// A child process of a job (one per rank).
struct Child {
  pid_t pid = -1;
  int rank = 0;
  bool exited = false;
  int status = 0;  // waitpid status once exited.
};

// fork/exec of `args` (args[0] a path) with stdout/stderr appended to files and
// `extra_env` ("KEY=value", overriding) added to the environment, stdin /dev/null, in
// its own process group. The child dies with the thread that forked it
// (PR_SET_PDEATHSIG). InternalError when a log file cannot be opened,
// ResourceExhausted when fork fails; a failed exec exits the child with code 127.
absl::StatusOr<pid_t> Spawn(const std::vector<std::string>& args, const std::vector<std::string>& extra_env,
                            const std::string& stdout_path, const std::string& stderr_path);

// A TCP port on 127.0.0.1 that was free a moment ago (for MASTER_PORT).
absl::StatusOr<int> FreePort();

// "exited with code 2", "killed by signal 9 (Killed), possibly out of memory".
std::string DescribeExit(int wait_status);

// Reads the bytes appended to a file since the last call and splits them into
// complete lines (at most kMaxLogLine bytes each; of a line rewritten with '\r',
// the last version).
class FileTail {
 public:
  FileTail() = default;
  // Starts at the file's current end (what a restarted job wrote before is skipped).
  explicit FileTail(std::string path);
  // New complete lines; with `flush`, a last line without '\n' too.
  std::vector<std::string> Read(bool flush);

 private:
  std::string path_;
  int64_t offset_ = 0;
  std::string partial_;
};

// Sends `sig` to every child not yet exited and to its process group.
void SignalRunning(const std::vector<Child>& children, int sig);

// Reaps the children that have exited (WNOHANG), recording their status; true when
// every child has exited.
bool ReapExited(std::vector<Child>& children);

// Blocks until a child not yet reaped may have exited, or `deadline` passes: poll()
// on pidfds (Linux >= 5.3), so waiting costs no wake-ups; a 20 ms nap where
// pidfd_open is missing.
void WaitForAnExit(const std::vector<Child>& children, std::chrono::steady_clock::time_point deadline);

// SIGTERM to every running child, SIGKILL to those still running after `grace`;
// returns once every child is reaped.
void StopAll(std::vector<Child>& children, std::chrono::milliseconds grace);

}  // namespace skinlesion::jobs

#endif  // SKINLESION_JOBS_PROCESS_H_
