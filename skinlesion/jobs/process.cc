// Spawn, FreePort, DescribeExit, FileTail and stopping the children of a job.
#include "skinlesion/jobs/process.h"

#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <filesystem>
#include <thread>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"

extern char** environ;

namespace skinlesion::jobs {

absl::StatusOr<pid_t> Spawn(const std::vector<std::string>& args,
                            const std::vector<std::string>& extra_env,
                            const std::string& stdout_path, const std::string& stderr_path) {
  // Everything the child needs is prepared before fork(): after it, only
  // async-signal-safe calls.
  std::vector<std::string> env_strings;
  for (char** e = environ; *e != nullptr; ++e) {
    const std::string entry = *e;
    const std::string key = entry.substr(0, entry.find('='));
    bool overridden = false;
    for (const std::string& x : extra_env) overridden |= absl::StartsWith(x, key + "=");
    if (!overridden) env_strings.push_back(entry);
  }
  for (const std::string& x : extra_env) env_strings.push_back(x);
  std::vector<char*> envp, argv;
  for (std::string& s : env_strings) envp.push_back(s.data());
  envp.push_back(nullptr);
  std::vector<std::string> args_copy = args;
  for (std::string& s : args_copy) argv.push_back(s.data());
  argv.push_back(nullptr);
  const int out_fd = ::open(stdout_path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  const int err_fd = ::open(stderr_path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  const int null_fd = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
  if (out_fd < 0 || err_fd < 0 || null_fd < 0) {
    for (int fd : {out_fd, err_fd, null_fd}) {
      if (fd >= 0) ::close(fd);
    }
    return absl::InternalError(
        absl::StrCat("cannot open the log files ", stdout_path, ", ", stderr_path));
  }
  const pid_t parent = ::getpid();
  const pid_t pid = ::fork();
  if (pid == 0) {
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (::getppid() != parent) ::_exit(111);  // The parent died before prctl.
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, nullptr);  // The trainer blocks SIGTERM for sigwait.
    ::signal(SIGPIPE, SIG_DFL);
    ::setpgid(0, 0);  // Its own process group: a stop signal reaches its helpers too.
    ::dup2(null_fd, 0);
    ::dup2(out_fd, 1);
    ::dup2(err_fd, 2);
    ::execve(argv[0], argv.data(), envp.data());
    static const char kMessage[] = "skinlesion-trainer: exec of the skinlesion CLI failed\n";
    (void)!::write(2, kMessage, sizeof(kMessage) - 1);
    ::_exit(127);
  }
  const int fork_errno = errno;
  ::close(out_fd);
  ::close(err_fd);
  ::close(null_fd);
  if (pid < 0)
    return absl::ResourceExhaustedError(absl::StrCat("fork failed: ", strerror(fork_errno)));
  return pid;
}

absl::StatusOr<int> FreePort() {
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return absl::InternalError("socket() failed");
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = 0;
  socklen_t len = sizeof(addr);
  if (::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0 ||
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
    ::close(fd);
    return absl::InternalError("cannot find a free port for MASTER_PORT");
  }
  ::close(fd);
  return ntohs(addr.sin_port);
}

std::string DescribeExit(int status) {
  if (WIFEXITED(status)) return absl::StrCat("exited with code ", WEXITSTATUS(status));
  if (WIFSIGNALED(status)) {
    const int sig = WTERMSIG(status);
    std::string text = absl::StrCat("killed by signal ", sig, " (", strsignal(sig), ")");
    if (sig == SIGKILL) absl::StrAppend(&text, ", possibly out of memory");
    return text;
  }
  return absl::StrCat("ended with wait status ", status);
}

FileTail::FileTail(std::string path) : path_(std::move(path)) {
  std::error_code ec;
  const auto size = std::filesystem::file_size(path_, ec);
  offset_ = ec ? 0 : static_cast<int64_t>(size);
}

std::vector<std::string> FileTail::Read(bool flush) {
  std::vector<std::string> lines;
  const int fd = ::open(path_.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd >= 0) {
    char buffer[65536];
    while (true) {
      const ssize_t n = ::pread(fd, buffer, sizeof(buffer), offset_);
      if (n <= 0) break;
      offset_ += n;
      partial_.append(buffer, static_cast<size_t>(n));
    }
    ::close(fd);
  }
  size_t start = 0;
  for (size_t nl; (nl = partial_.find('\n', start)) != std::string::npos; start = nl + 1) {
    lines.push_back(partial_.substr(start, nl - start));
  }
  partial_.erase(0, start);
  if (flush && !partial_.empty()) {
    lines.push_back(partial_);
    partial_.clear();
  }
  for (std::string& line : lines) {
    if (!line.empty() && line.back() == '\r') line.pop_back();
    // Progress lines rewritten with '\r': keep the last.
    if (const size_t cr = line.rfind('\r'); cr != std::string::npos) line.erase(0, cr + 1);
    if (line.size() > kMaxLogLine) line.resize(kMaxLogLine);
  }
  return lines;
}

void SignalRunning(const std::vector<Child>& children, int sig) {
  for (const Child& c : children) {
    if (!c.exited) {
      ::kill(-c.pid, sig);
      ::kill(c.pid, sig);
    }
  }
}

bool ReapExited(std::vector<Child>& children) {
  bool all = true;
  for (Child& c : children) {
    if (c.exited) continue;
    int status = 0;
    if (::waitpid(c.pid, &status, WNOHANG) == c.pid) {
      c.exited = true;
      c.status = status;
    } else {
      all = false;
    }
  }
  return all;
}

void WaitForAnExit(const std::vector<Child>& children, std::chrono::steady_clock::time_point deadline) {
  std::vector<pollfd> fds;
  bool pidfds = true;
  for (const Child& c : children) {
    if (c.exited) continue;
    // A zombie still has its pidfd (readable at once); only a reaped pid has none.
    const int fd = static_cast<int>(::syscall(SYS_pidfd_open, c.pid, 0));
    if (fd < 0) {
      pidfds = errno == ESRCH;  // Reaped meanwhile: nothing to wait for. ENOSYS: nap.
      if (!pidfds) break;
      continue;
    }
    fds.push_back({.fd = fd, .events = POLLIN, .revents = 0});
  }
  const auto left = std::chrono::ceil<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
  const int timeout_ms = static_cast<int>(std::clamp<int64_t>(left.count(), 0, 60'000));
  if (!pidfds) {
    std::this_thread::sleep_for(std::chrono::milliseconds(std::min(timeout_ms, 20)));
  } else if (!fds.empty()) {
    ::poll(fds.data(), fds.size(), timeout_ms);
  }
  for (const pollfd& p : fds) ::close(p.fd);
}

void StopAll(std::vector<Child>& children, std::chrono::milliseconds grace) {
  SignalRunning(children, SIGTERM);
  const auto kill_at = std::chrono::steady_clock::now() + grace;
  bool killed = false;
  while (!ReapExited(children)) {
    if (!killed && std::chrono::steady_clock::now() >= kill_at) {
      SignalRunning(children, SIGKILL);
      killed = true;
    }
    WaitForAnExit(children, killed ? std::chrono::steady_clock::now() + std::chrono::seconds(1) : kill_at);
  }
}

}  // namespace skinlesion::jobs
