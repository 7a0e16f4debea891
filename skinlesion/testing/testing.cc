#include "skinlesion/testing/testing.h"

#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>

namespace skinlesion::testing {

std::string SourcePath(const std::string& relative) {
  const char* env = std::getenv("SKINLESION_SOURCE_DIR");
  const std::string root = env != nullptr ? env : SKINLESION_SOURCE_DIR_DEFAULT;
  return root + "/" + relative;
}

TempDir::TempDir() {
  const char* tmp = std::getenv("TMPDIR");
  std::string pattern = std::string(tmp != nullptr ? tmp : "/tmp") + "/skinlesion_test_XXXXXX";
  char* made = ::mkdtemp(pattern.data());
  if (made == nullptr) std::abort();
  path_ = made;
}

TempDir::~TempDir() {
  std::error_code ec;
  std::filesystem::remove_all(path_, ec);
}

void WriteFile(const std::string& path, const std::string& content) {
  std::ofstream out(path, std::ios::binary);
  out.write(content.data(), static_cast<std::streamsize>(content.size()));
  ASSERT_TRUE(out.good()) << "cannot write " << path;
}

}  // namespace skinlesion::testing
