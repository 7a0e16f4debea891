// The children of a job: real fork/exec of /bin/sh, log tails, exit descriptions and
// the SIGTERM-then-SIGKILL stop.
#include "skinlesion/jobs/process.h"

#include <signal.h>
#include <sys/wait.h>

#include <chrono>
#include <string>
#include <thread>
#include <vector>

#include "gtest/gtest.h"
#include "skinlesion/common/csv.h"
#include "skinlesion/testing/testing.h"

namespace skinlesion::jobs {
namespace {

using ::skinlesion::testing::IsOk;
using ::skinlesion::testing::TempDir;
using ::skinlesion::testing::WriteFile;
using ::testing::HasSubstr;
using Clock = std::chrono::steady_clock;

// Waits (without a deadline of its own: the test's timeout is the limit) for every child.
void WaitAll(std::vector<Child>& children) {
  while (!ReapExited(children)) WaitForAnExit(children, Clock::now() + std::chrono::seconds(5));
}

TEST(ProcessTest, SpawnRunsWithItsEnvironmentAndLogs) {
  TempDir dir;
  auto pid = Spawn({"/bin/sh", "-c", "echo out $SL_TEST_VALUE; echo err >&2; read x; exit 3"},
                   {"SL_TEST_VALUE=42"}, dir.Join("out.log"), dir.Join("err.log"));
  ASSERT_THAT(pid, IsOk());
  std::vector<Child> children = {{.pid = *pid}};
  WaitAll(children);
  ASSERT_TRUE(children[0].exited);
  EXPECT_EQ(DescribeExit(children[0].status), "exited with code 3");  // stdin is /dev/null: read ends.
  EXPECT_EQ(ReadFileToString(dir.Join("out.log"), 1024).value_or(""), "out 42\n");
  EXPECT_EQ(ReadFileToString(dir.Join("err.log"), 1024).value_or(""), "err\n");

  auto missing = Spawn({"/nonexistent/binary"}, {}, dir.Join("out.log"), dir.Join("err2.log"));
  ASSERT_THAT(missing, IsOk());
  children = {{.pid = *missing}};
  WaitAll(children);
  EXPECT_EQ(DescribeExit(children[0].status), "exited with code 127");
  EXPECT_THAT(ReadFileToString(dir.Join("err2.log"), 1024).value_or(""), HasSubstr("exec of the skinlesion CLI failed"));
  EXPECT_FALSE(Spawn({"/bin/true"}, {}, dir.Join("no/such/dir/out.log"), dir.Join("err.log")).ok());
}

TEST(ProcessTest, DescribeExitNamesSignals) {
  EXPECT_EQ(DescribeExit(0), "exited with code 0");
  EXPECT_THAT(DescribeExit(SIGKILL), HasSubstr("killed by signal 9"));
  EXPECT_THAT(DescribeExit(SIGKILL), HasSubstr("possibly out of memory"));
  EXPECT_THAT(DescribeExit(SIGSEGV), HasSubstr("killed by signal 11"));
}

TEST(ProcessTest, FileTailReturnsCompleteNewLines) {
  TempDir dir;
  const std::string path = dir.Join("log");
  WriteFile(path, "written before the tail started\n");
  FileTail tail(path);
  EXPECT_TRUE(tail.Read(false).empty());
  WriteFile(path, "written before the tail started\none\ntw");
  EXPECT_EQ(tail.Read(false), std::vector<std::string>{"one"});
  WriteFile(path, "written before the tail started\none\ntwo\r\nstep 1\rstep 2\rstep 3\nlast");
  EXPECT_EQ(tail.Read(false), (std::vector<std::string>{"two", "step 3"}));
  EXPECT_EQ(tail.Read(true), std::vector<std::string>{"last"});
  WriteFile(path, "written before the tail started\none\ntwo\r\nstep 1\rstep 2\rstep 3\nlast" + std::string(5000, 'x') + "\n");
  const std::vector<std::string> long_line = tail.Read(false);
  ASSERT_EQ(long_line.size(), 1u);
  EXPECT_EQ(long_line[0].size(), kMaxLogLine);
}

// A child that ignores SIGTERM is killed after the grace period; one that honours it
// ends at once.
TEST(ProcessTest, StopAllEscalatesToSigkillAfterTheGrace) {
  TempDir dir;
  auto stubborn = Spawn({"/bin/sh", "-c", "trap '' TERM; echo ready; while true; do sleep 0.05; done"}, {},
                        dir.Join("out.log"), dir.Join("err.log"));
  auto polite = Spawn({"/bin/sh", "-c", "exec sleep 60"}, {}, dir.Join("out2.log"), dir.Join("err.log"));
  ASSERT_THAT(stubborn, IsOk());
  ASSERT_THAT(polite, IsOk());
  // The trap must be set before the stop, or SIGTERM ends the shell.
  while (ReadFileToString(dir.Join("out.log"), 64).value_or("").empty()) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  std::vector<Child> children = {{.pid = *stubborn, .rank = 0}, {.pid = *polite, .rank = 1}};
  EXPECT_FALSE(ReapExited(children));
  StopAll(children, std::chrono::milliseconds(300));
  ASSERT_TRUE(children[0].exited && children[1].exited);
  EXPECT_TRUE(WIFSIGNALED(children[0].status));
  EXPECT_EQ(WTERMSIG(children[0].status), SIGKILL);
  EXPECT_TRUE(WIFSIGNALED(children[1].status));
  EXPECT_EQ(WTERMSIG(children[1].status), SIGTERM);
  EXPECT_TRUE(ReapExited(children));
}

TEST(ProcessTest, FreePortIsALoopbackPort) {
  auto port = FreePort();
  ASSERT_THAT(port, IsOk());
  EXPECT_GT(*port, 0);
  EXPECT_LT(*port, 65536);
}

}  // namespace
}  // namespace skinlesion::jobs
