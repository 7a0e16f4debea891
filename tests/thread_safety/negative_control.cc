// The negative control of the thread-safety check (check_thread_safety.py): a
// guarded member read without its mutex. clang -Wthread-safety must reject this
// file as it is and accept it with -DSKINLESION_TS_FIXED (the read under the lock),
// so the check cannot pass because the analysis silently stopped running.
#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"

namespace skinlesion::thread_safety_control {

class Counter {
 public:
  void Add(int n) ABSL_LOCKS_EXCLUDED(mu_) {
    absl::MutexLock lock(&mu_);
    value_ += n;
  }
  int Get() const ABSL_LOCKS_EXCLUDED(mu_) {
#ifdef SKINLESION_TS_FIXED
    absl::MutexLock lock(&mu_);
#endif
    return value_;  // Without the lock: "reading variable 'value_' requires holding mutex 'mu_'".
  }

 private:
  mutable absl::Mutex mu_;
  int value_ ABSL_GUARDED_BY(mu_) = 0;
};

int Use() {
  Counter c;
  c.Add(1);
  return c.Get();
}

}  // namespace skinlesion::thread_safety_control
