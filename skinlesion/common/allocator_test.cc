// Each case runs in a child process (EXPECT_EXIT): malloc settings are process-wide
// and the first call of TuneAllocatorForTensors() decides for the whole process.
#include "skinlesion/common/allocator.h"

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>

#if defined(__GLIBC__)
#include <malloc.h>
#endif

#include "gtest/gtest.h"

namespace skinlesion {
namespace {

#if defined(__GLIBC__)
constexpr size_t kBlock = size_t{20} << 20;  // An activation of a batch of 8.

// Bytes of the 20 MiB block served by mmap, and bytes kept free in the heap after
// the block is freed.
struct BlockFate {
  size_t mmapped = 0;
  size_t kept_after_free = 0;
};

BlockFate AllocateAndFree() {
  const size_t mmapped_before = mallinfo2().hblkhd;
  char* volatile p = static_cast<char*>(std::malloc(kBlock));
  std::memset(p, 1, kBlock);
  BlockFate fate;
  fate.mmapped = mallinfo2().hblkhd - mmapped_before;
  std::free(p);
  fate.kept_after_free = mallinfo2().fordblks;
  return fate;
}

// Arenas malloc has handed out (malloc_info's <heap nr="..."> entries) after another
// thread has allocated a large block and freed it.
int ArenasAfterAThreadAllocates() {
  std::thread([] {
    char* volatile p = static_cast<char*>(std::malloc(kBlock));
    std::memset(p, 1, kBlock);
    std::free(p);
  }).join();
  char* text = nullptr;
  size_t size = 0;
  FILE* f = open_memstream(&text, &size);
  malloc_info(0, f);
  std::fclose(f);
  const std::string info(text, size);
  std::free(text);
  int arenas = 0;
  for (size_t at = info.find("<heap nr="); at != std::string::npos;
       at = info.find("<heap nr=", at + 1)) {
    ++arenas;
  }
  return arenas;
}

TEST(AllocatorTest, LargeBlocksComeFromTheHeapAndStayAfterFree) {
  EXPECT_EXIT(
      {
        unsetenv("SKINLESION_MALLOC_DEFAULTS");
        unsetenv("GLIBC_TUNABLES");
        const AllocatorTuning& t = TuneAllocatorForTensors();
        const BlockFate fate = AllocateAndFree();
        const bool ok = t.applied && fate.mmapped == 0 && fate.kept_after_free >= kBlock &&
                        &TuneAllocatorForTensors() == &t;
        std::exit(ok ? 0 : 1);
      },
      ::testing::ExitedWithCode(0), "");
}

// Threads allocate from the main heap, where the trim threshold keeps freed memory;
// with glibc's defaults the thread gets an arena of its own.
TEST(AllocatorTest, ThreadsShareOneArena) {
  EXPECT_EXIT(
      {
        unsetenv("SKINLESION_MALLOC_DEFAULTS");
        unsetenv("GLIBC_TUNABLES");
        unsetenv("MALLOC_ARENA_MAX");
        const bool applied = TuneAllocatorForTensors().applied;
        std::exit(applied && ArenasAfterAThreadAllocates() == 1 ? 0 : 1);
      },
      ::testing::ExitedWithCode(0), "");
  EXPECT_EXIT(
      {
        setenv("SKINLESION_MALLOC_DEFAULTS", "1", 1);
        TuneAllocatorForTensors();
        std::exit(ArenasAfterAThreadAllocates() >= 2 ? 0 : 1);
      },
      ::testing::ExitedWithCode(0), "");
}

// What the tuning changes: with glibc's defaults the same block is mapped for the
// allocation and handed back on free (so the next one faults its pages in again).
TEST(AllocatorTest, WithoutItTheBlockIsMappedAndReturned) {
  EXPECT_EXIT(
      {
        const BlockFate fate = AllocateAndFree();
        std::exit(fate.mmapped >= kBlock && fate.kept_after_free < kBlock ? 0 : 1);
      },
      ::testing::ExitedWithCode(0), "");
}

TEST(AllocatorTest, TheEnvironmentCanKeepTheDefaults) {
  EXPECT_EXIT(
      {
        setenv("SKINLESION_MALLOC_DEFAULTS", "1", 1);
        const AllocatorTuning& t = TuneAllocatorForTensors();
        const BlockFate fate = AllocateAndFree();
        std::exit(!t.applied && fate.mmapped >= kBlock &&
                          t.description.find("SKINLESION_MALLOC_DEFAULTS") != std::string::npos
                      ? 0
                      : 1);
      },
      ::testing::ExitedWithCode(0), "");
  EXPECT_EXIT(
      {
        unsetenv("SKINLESION_MALLOC_DEFAULTS");
        setenv("MALLOC_TRIM_THRESHOLD_", "4096", 1);
        const AllocatorTuning& t = TuneAllocatorForTensors();
        std::exit(!t.applied && t.description.find("environment") != std::string::npos ? 0 : 1);
      },
      ::testing::ExitedWithCode(0), "");
  EXPECT_EXIT(
      {
        unsetenv("SKINLESION_MALLOC_DEFAULTS");
        setenv("MALLOC_ARENA_MAX", "4", 1);
        const AllocatorTuning& t = TuneAllocatorForTensors();
        std::exit(!t.applied && t.description.find("MALLOC_ARENA_MAX") != std::string::npos ? 0
                                                                                            : 1);
      },
      ::testing::ExitedWithCode(0), "");
}
#endif

}  // namespace
}  // namespace skinlesion
