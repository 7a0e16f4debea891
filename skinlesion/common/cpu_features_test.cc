#include "skinlesion/common/cpu_features.h"

#include <fstream>
#include <set>
#include <sstream>
#include <string>

#include <gtest/gtest.h>

namespace skinlesion {
namespace {

// The kernel's view of the same CPU: the "flags" line of /proc/cpuinfo (Linux only;
// the kernel also hides features the OS does not enable, as our XGETBV check does).
std::set<std::string> KernelFlags() {
  std::ifstream in("/proc/cpuinfo");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("flags", 0) == 0) {
      std::istringstream words(line.substr(line.find(':') + 1));
      std::set<std::string> flags;
      for (std::string w; words >> w;) flags.insert(w);
      return flags;
    }
  }
  return {};
}

TEST(CpuFeaturesTest, AgreesWithTheKernel) {
  const std::set<std::string> kernel = KernelFlags();
  if (kernel.empty()) GTEST_SKIP() << "no /proc/cpuinfo flags (not x86 Linux)";
  const CpuFeatures& f = DetectCpuFeatures();
  EXPECT_EQ(f.avx2, kernel.count("avx2") == 1);
  EXPECT_EQ(f.avx512f, kernel.count("avx512f") == 1);
  EXPECT_EQ(f.avx512bw, kernel.count("avx512bw") == 1);
  EXPECT_EQ(f.avx512_vnni, kernel.count("avx512_vnni") == 1);
  EXPECT_EQ(f.avx512_bf16, kernel.count("avx512_bf16") == 1);
  EXPECT_EQ(f.amx_bf16, kernel.count("amx_bf16") == 1);
  EXPECT_EQ(f.native_bf16(), kernel.count("avx512_bf16") + kernel.count("amx_bf16") > 0);
  EXPECT_GE(f.logical_cpus, 1);
  EXPECT_FALSE(f.model_name.empty());
}

TEST(CpuFeaturesTest, FlagListNamesWhatIsSet) {
  CpuFeatures f;
  EXPECT_EQ(f.FlagList(), "none");
  f.avx2 = true;
  f.avx512_bf16 = true;
  EXPECT_EQ(f.FlagList(), "avx2 avx512_bf16");
  EXPECT_TRUE(f.native_bf16());
  f.avx512_bf16 = false;
  EXPECT_FALSE(f.native_bf16());
  f.amx_bf16 = true;
  EXPECT_TRUE(f.native_bf16());
}

TEST(CpuFeaturesTest, DisablingFeaturesTurnsThemOff) {
  CpuFeatures f;
  f.avx2 = f.avx512f = f.avx512_bf16 = f.amx_bf16 = true;
  auto g = WithFeaturesDisabled(f, "avx512_bf16, amx_bf16");
  ASSERT_TRUE(g.ok()) << g.status();
  EXPECT_FALSE(g->native_bf16());
  EXPECT_TRUE(g->avx512f);
  EXPECT_TRUE(WithFeaturesDisabled(f, "")->native_bf16());
  EXPECT_FALSE(WithFeaturesDisabled(f, "avx512_bf16,nonsense").ok());
}

}  // namespace
}  // namespace skinlesion
