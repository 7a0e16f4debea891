#include "skinlesion/common/logging.h"

#include <sys/time.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <string>

namespace skinlesion::logging {
namespace {

Level MinLevel() {
  static const Level level = [] {
    const char* env = std::getenv("SKINLESION_LOG_LEVEL");
    if (env == nullptr) return Level::INFO;
    const std::string v(env);
    if (v == "DEBUG") return Level::DEBUG;
    if (v == "WARNING") return Level::WARNING;
    if (v == "ERROR") return Level::ERROR;
    return Level::INFO;
  }();
  return level;
}

const char* Basename(const char* path) {
  const char* slash = std::strrchr(path, '/');
  return slash ? slash + 1 : path;
}

}  // namespace

bool Enabled(Level level) { return level >= MinLevel(); }

Message::Message(Level level, const char* file, int line) : level_(level) {
  static constexpr char kLetters[] = {'D', 'I', 'W', 'E', 'F'};
  timeval tv;
  gettimeofday(&tv, nullptr);
  tm t;
  localtime_r(&tv.tv_sec, &t);
  char buf[64];
  std::snprintf(buf, sizeof(buf), "%c%04d%02d%02d %02d:%02d:%02d.%03d ",
                kLetters[static_cast<int>(level)], t.tm_year + 1900, t.tm_mon + 1, t.tm_mday,
                t.tm_hour, t.tm_min, t.tm_sec, static_cast<int>(tv.tv_usec / 1000));
  stream_ << buf << Basename(file) << ':' << line << "] ";
}

Message::~Message() {
  stream_ << '\n';
  const std::string text = stream_.str();
  std::fwrite(text.data(), 1, text.size(), stderr);
  if (level_ == Level::FATAL) {
    std::fflush(stderr);
    std::abort();
  }
}

}  // namespace skinlesion::logging
