// A counting gate: at most `slots` holders at once, at most `max_waiting` callers
// waiting for a slot, each until its deadline; and BackgroundRunner, low-priority
// threads. The serving core bounds explanations and heavy image decodes with the gate
// and runs heavy decodes on the runner.
//
//   SlotGate gate(/*slots=*/1, /*max_waiting=*/4, "large-image decode");
//   SL_ASSIGN_OR_RETURN(SlotGate::Slot slot, gate.Acquire(deadline));
//   ...  // the slot is released when `slot` goes out of scope
//
// Thread-safe. The gate must outlive its slots; deadlines are its clock's.
#ifndef SKINLESION_SERVING_SLOT_GATE_H_
#define SKINLESION_SERVING_SLOT_GATE_H_

#include <functional>
#include <limits>
#include <map>
#include <memory>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "skinlesion/serving/clock.h"

namespace skinlesion::serving {

class SlotGate {
 public:
  // A held slot; movable, released on destruction.
  class Slot {
   public:
    Slot(Slot&& other) noexcept;
    Slot& operator=(Slot&& other) noexcept;
    Slot(const Slot&) = delete;
    Slot& operator=(const Slot&) = delete;
    ~Slot();

   private:
    friend class SlotGate;
    Slot(SlotGate* gate, std::string key) : gate_(gate), key_(std::move(key)) {}
    SlotGate* gate_;
    std::string key_;
  };

  // `what` names the slots in error messages ("explanation", "large-image decode");
  // `context` ends them (" of model ham10000"). `max_per_key`: how many slots one key
  // (a client) may hold or wait for at once (fairness); kUnlimitedWaiters: no cap.
  // `clock` (which must outlive the gate) reads the time and runs the timed waits.
  SlotGate(int slots, int max_waiting, std::string what, std::string context = "",
           int max_per_key = std::numeric_limits<int>::max(), Clock& clock = Clock::Real());
  SlotGate(const SlotGate&) = delete;
  SlotGate& operator=(const SlotGate&) = delete;

  // A slot, at once or after waiting until `deadline` (InfiniteFuture: no limit).
  // ResourceExhausted when every slot is held and max_waiting callers already wait;
  // DeadlineExceeded when the deadline passes first (or has passed); Unavailable
  // once Close() was called.
  // With a non-empty `key`, ResourceExhausted at once when that key already holds or
  // waits for max_per_key slots.
  absl::StatusOr<Slot> Acquire(absl::Time deadline, const std::string& key = "")
      ABSL_LOCKS_EXCLUDED(mu_);

  // Wakes every waiter with Unavailable and refuses later Acquire() calls; held slots
  // stay valid until released.
  void Close() ABSL_LOCKS_EXCLUDED(mu_);

  int held() const ABSL_LOCKS_EXCLUDED(mu_);
  int waiting() const ABSL_LOCKS_EXCLUDED(mu_);

 private:
  void Release(const std::string& key) ABSL_LOCKS_EXCLUDED(mu_);
  void ForgetKey(const std::string& key) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const int slots_;
  const int max_waiting_;
  const std::string what_;
  const std::string context_;
  const int max_per_key_;
  Clock& clock_;
  mutable absl::Mutex mu_;
  int held_ ABSL_GUARDED_BY(mu_) = 0;
  int waiting_ ABSL_GUARDED_BY(mu_) = 0;
  bool closed_ ABSL_GUARDED_BY(mu_) = false;
  // Slots held or waited for, by non-empty key.
  std::map<std::string, int> per_key_ ABSL_GUARDED_BY(mu_);
};

inline constexpr int kUnlimitedWaiters = std::numeric_limits<int>::max();

// A few long-lived threads at a lower scheduling priority (a higher nice value) that
// run the work handed to them, one piece per thread at a time; the caller waits for
// its result. The serving core decodes heavy images on them: on a small machine the
// kernel then gives the batch worker the cores first, and a flood of large images
// slows everyone else far less (docs/serving.md).
class BackgroundRunner {
 public:
  // `threads` >= 1; `nice` 0..19 added to each thread's nice value (Linux:
  // setpriority on the thread; elsewhere, or if refused, normal priority).
  BackgroundRunner(int threads, int nice);
  ~BackgroundRunner();  // Finishes queued work, then joins.
  BackgroundRunner(const BackgroundRunner&) = delete;
  BackgroundRunner& operator=(const BackgroundRunner&) = delete;

  // Runs `work` on one of the threads and returns its status (blocking).
  absl::Status Run(std::function<absl::Status()> work);

  // Whether the threads run at the lower priority (setpriority succeeded on all).
  bool lowered() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace skinlesion::serving

#endif  // SKINLESION_SERVING_SLOT_GATE_H_
