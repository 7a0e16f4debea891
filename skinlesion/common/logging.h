// Minimal structured logging to stderr and fatal checks.
//
// Abseil's logging is not in Debian 12's Abseil (20220623), so the project has its
// own: one line per message, `I20261125 12:00:00.123 file.cc:42] text`.
//   SL_LOG(INFO) << "loaded " << n << " images";
//   SL_CHECK(ptr != nullptr) << "why it must hold";
// Thread-safe: each message is written with one call. The minimum level comes from
// the SKINLESION_LOG_LEVEL environment variable (DEBUG, INFO, WARNING, ERROR).
#ifndef SKINLESION_COMMON_LOGGING_H_
#define SKINLESION_COMMON_LOGGING_H_

#include <sstream>

namespace skinlesion::logging {

enum class Level { DEBUG = 0, INFO = 1, WARNING = 2, ERROR = 3, FATAL = 4 };

bool Enabled(Level level);

class Message {
 public:
  Message(Level level, const char* file, int line);
  ~Message();  // Writes the line; aborts for FATAL.
  Message(const Message&) = delete;
  Message& operator=(const Message&) = delete;
  std::ostream& stream() { return stream_; }

 private:
  Level level_;
  std::ostringstream stream_;
};

// Swallows the stream expression when the level is disabled.
struct Voidify {
  void operator&(std::ostream&) {}
};

}  // namespace skinlesion::logging

#define SL_LOG(level)                                                                   \
  !::skinlesion::logging::Enabled(::skinlesion::logging::Level::level)                 \
      ? (void)0                                                                         \
      : ::skinlesion::logging::Voidify() &                                              \
            ::skinlesion::logging::Message(::skinlesion::logging::Level::level, __FILE__, \
                                           __LINE__)                                    \
                .stream()

#define SL_CHECK(cond)                                                                 \
  (cond) ? (void)0                                                                     \
         : ::skinlesion::logging::Voidify() &                                          \
               ::skinlesion::logging::Message(::skinlesion::logging::Level::FATAL,     \
                                              __FILE__, __LINE__)                      \
                       .stream()                                                       \
                   << "Check failed: " #cond " "

#endif  // SKINLESION_COMMON_LOGGING_H_
