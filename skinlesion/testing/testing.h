// Test helpers shared by every test binary.
#ifndef SKINLESION_TESTING_TESTING_H_
#define SKINLESION_TESTING_TESTING_H_

#include <chrono>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "gmock/gmock.h"

namespace skinlesion::testing {

// Absolute path of a file in the source tree, e.g. SourcePath("tests/fixtures/x.jpg").
// Uses $SKINLESION_SOURCE_DIR (set by CTest) or the path compiled in.
std::string SourcePath(const std::string& relative);

// A fresh directory under $TMPDIR, removed with its content on destruction.
class TempDir {
 public:
  TempDir();
  ~TempDir();
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::string& path() const { return path_; }
  std::string Join(const std::string& name) const { return path_ + "/" + name; }

 private:
  std::string path_;
};

// Writes `content` to `path`, failing the test on error.
void WriteFile(const std::string& path, const std::string& content);

// A binary under test in a child process, stdout and stderr into `out_path`
// (truncated, or appended to with `append`: a restarted service keeps one log).
// The child dies with the test (PR_SET_PDEATHSIG) and is SIGKILLed by the
// destructor if still running.
class ChildProcess {
 public:
  ChildProcess(std::vector<std::string> args, const std::string& out_path, bool append = false);
  ~ChildProcess();
  ChildProcess(const ChildProcess&) = delete;
  ChildProcess& operator=(const ChildProcess&) = delete;
  int pid() const { return pid_; }
  // Waits up to `timeout` for the exit: the raw wait status, or -1 on timeout.
  int Wait(std::chrono::milliseconds timeout);

 private:
  int pid_ = -1;
};

inline const absl::Status& GetStatus(const absl::Status& s) { return s; }
template <typename T>
const absl::Status& GetStatus(const absl::StatusOr<T>& s) {
  return s.status();
}

// EXPECT_THAT(result, StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("line 3")));
MATCHER_P2(StatusIs, code, message_matcher, "") {
  const absl::Status& s = GetStatus(arg);
  *result_listener << "status is " << s;
  return s.code() == code &&
         ::testing::ExplainMatchResult(message_matcher, std::string(s.message()), result_listener);
}

MATCHER(IsOk, "") {
  const absl::Status& s = GetStatus(arg);
  *result_listener << "status is " << s;
  return s.ok();
}

}  // namespace skinlesion::testing

#endif  // SKINLESION_TESTING_TESTING_H_
