// PosixLauncher: the ProcessLauncher of real child processes (process.h).
#include "skinlesion/jobs/launcher.h"

namespace skinlesion::jobs {

absl::StatusOr<pid_t> PosixLauncher::Launch(const std::vector<std::string>& args,
                                            const std::vector<std::string>& extra_env,
                                            const std::string& stdout_path,
                                            const std::string& stderr_path) {
  return Spawn(args, extra_env, stdout_path, stderr_path);
}

absl::StatusOr<int> PosixLauncher::FreePort() { return jobs::FreePort(); }

bool PosixLauncher::Reap(std::vector<Child>& children) { return ReapExited(children); }

void PosixLauncher::Stop(std::vector<Child>& children, absl::Duration grace) {
  StopAll(children, absl::ToChronoMilliseconds(grace));
}

std::string PosixLauncher::DescribeExit(int wait_status) const {
  return jobs::DescribeExit(wait_status);
}

}  // namespace skinlesion::jobs
