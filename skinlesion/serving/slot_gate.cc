#include "skinlesion/serving/slot_gate.h"

#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <atomic>
#include <deque>
#include <future>
#include <thread>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "absl/strings/str_cat.h"
#include "skinlesion/common/logging.h"

namespace skinlesion::serving {

SlotGate::Slot::Slot(Slot&& other) noexcept
    : gate_(std::exchange(other.gate_, nullptr)), key_(std::move(other.key_)) {}

SlotGate::Slot& SlotGate::Slot::operator=(Slot&& other) noexcept {
  if (this != &other) {
    if (gate_ != nullptr) gate_->Release(key_);
    gate_ = std::exchange(other.gate_, nullptr);
    key_ = std::move(other.key_);
  }
  return *this;
}

SlotGate::Slot::~Slot() {
  if (gate_ != nullptr) gate_->Release(key_);
}

SlotGate::SlotGate(int slots, int max_waiting, std::string what, std::string context,
                   int max_per_key, Clock& clock)
    : slots_(slots),
      max_waiting_(max_waiting),
      what_(std::move(what)),
      context_(std::move(context)),
      max_per_key_(max_per_key),
      clock_(clock) {}

void SlotGate::ForgetKey(const std::string& key) {
  if (key.empty()) return;
  auto it = per_key_.find(key);
  if (it != per_key_.end() && --it->second <= 0) per_key_.erase(it);
}

absl::StatusOr<SlotGate::Slot> SlotGate::Acquire(absl::Time deadline, const std::string& key) {
  absl::MutexLock lock(&mu_);
  if (!key.empty()) {
    int& mine = per_key_[key];
    if (mine >= max_per_key_) {
      return absl::ResourceExhaustedError(absl::StrCat(
          "this client already has ", mine, " ", what_, "(s) running or waiting", context_,
          " (at most ", max_per_key_, " per client); try again shortly"));
    }
    ++mine;
  }
  const auto can_go = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return held_ < slots_ || closed_;
  };
  if (!can_go()) {
    if (waiting_ >= max_waiting_) {
      ForgetKey(key);
      return absl::ResourceExhaustedError(
          absl::StrCat("all ", slots_, " ", what_, " slot(s) are busy and ", waiting_,
                       " request(s) already wait for one", context_, "; try again shortly"));
    }
    ++waiting_;
    const bool got = clock_.AwaitWithDeadline(mu_, absl::Condition(&can_go), deadline);
    --waiting_;
    if (!got) {
      ForgetKey(key);
      return absl::DeadlineExceededError(absl::StrCat(
          "deadline passed while waiting for one of ", slots_, " ", what_, " slot(s)", context_));
    }
  }
  if (closed_) {
    ForgetKey(key);
    return absl::UnavailableError("the server is shutting down");
  }
  if (deadline <= clock_.Now()) {
    ForgetKey(key);
    return absl::DeadlineExceededError(
        absl::StrCat("deadline passed before the ", what_, " started", context_));
  }
  ++held_;
  return Slot(this, key);
}

void SlotGate::Close() {
  absl::MutexLock lock(&mu_);
  closed_ = true;  // Wakes the waiters (their condition).
}

int SlotGate::held() const {
  absl::MutexLock lock(&mu_);
  return held_;
}

int SlotGate::waiting() const {
  absl::MutexLock lock(&mu_);
  return waiting_;
}

void SlotGate::Release(const std::string& key) {
  absl::MutexLock lock(&mu_);
  --held_;  // Wakes a waiter (its condition).
  ForgetKey(key);
}

struct BackgroundRunner::Impl {
  absl::Mutex mu;
  std::deque<std::packaged_task<absl::Status()>> queue ABSL_GUARDED_BY(mu);
  bool stop ABSL_GUARDED_BY(mu) = false;
  int started ABSL_GUARDED_BY(mu) = 0;  // Threads past their priority change.
  std::atomic<int> lowered{0};
  // Filled by the constructor before it waits for the threads, joined by the
  // destructor: only the owner's thread touches the vector.
  std::vector<std::thread> threads;

  void Loop(int nice) ABSL_LOCKS_EXCLUDED(mu) {
    // On Linux a thread's nice value is its own (setpriority on the thread id).
    const id_t tid = static_cast<id_t>(syscall(SYS_gettid));
    errno = 0;
    int current = getpriority(PRIO_PROCESS, tid);
    if (errno != 0) current = 0;
    if (nice > 0 && setpriority(PRIO_PROCESS, tid, std::min(19, current + nice)) == 0) {
      lowered.fetch_add(1);
    }
    {
      absl::MutexLock lock(&mu);
      ++started;
    }
    for (;;) {
      std::packaged_task<absl::Status()> task;
      {
        absl::MutexLock lock(&mu);
        const auto ready = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) { return stop || !queue.empty(); };
        mu.Await(absl::Condition(&ready));
        if (queue.empty()) return;  // stop, and nothing left.
        task = std::move(queue.front());
        queue.pop_front();
      }
      task();
    }
  }
};

BackgroundRunner::BackgroundRunner(int threads, int nice) : impl_(std::make_unique<Impl>()) {
  for (int i = 0; i < std::max(1, threads); ++i) {
    impl_->threads.emplace_back([this, nice] { impl_->Loop(nice); });
  }
  // Ready (and lowered()) once every thread has set its priority.
  const int n = static_cast<int>(impl_->threads.size());
  Impl* impl = impl_.get();
  absl::MutexLock lock(&impl->mu);
  const auto all_started = [impl, n]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(impl->mu) { return impl->started == n; };
  impl->mu.Await(absl::Condition(&all_started));
}

BackgroundRunner::~BackgroundRunner() {
  {
    absl::MutexLock lock(&impl_->mu);
    impl_->stop = true;  // Wakes the threads (their condition).
  }
  for (std::thread& t : impl_->threads) t.join();
}

absl::Status BackgroundRunner::Run(std::function<absl::Status()> work) {
  std::packaged_task<absl::Status()> task(std::move(work));
  std::future<absl::Status> result = task.get_future();
  {
    absl::MutexLock lock(&impl_->mu);
    impl_->queue.push_back(std::move(task));
  }
  return result.get();
}

bool BackgroundRunner::lowered() const {
  return impl_->lowered.load() == static_cast<int>(impl_->threads.size());
}

}  // namespace skinlesion::serving
