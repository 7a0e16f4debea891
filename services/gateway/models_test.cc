// VersionFileCache: the gateway's memory of model versions' files.
#include "services/gateway/models.h"

#include "gtest/gtest.h"

namespace skinlesion::gateway {
namespace {

std::shared_ptr<const VersionFileCache::Files> OneFile(const std::string& content) {
  return std::make_shared<const VersionFileCache::Files>(
      VersionFileCache::Files{{"card.md", content}});
}

TEST(VersionFileCacheTest, KeepsTheMostRecentlyUsed) {
  VersionFileCache cache(2);
  EXPECT_EQ(cache.Find("m/1"), nullptr);
  cache.Put("m/1", OneFile("one"));
  cache.Put("m/2", OneFile("two"));
  ASSERT_NE(cache.Find("m/1"), nullptr);  // m/1 is now the most recent.
  cache.Put("m/3", OneFile("three"));     // m/2 goes.
  EXPECT_EQ(cache.Find("m/2"), nullptr);
  ASSERT_NE(cache.Find("m/1"), nullptr);
  EXPECT_EQ(cache.Find("m/1")->at("card.md"), "one");
  ASSERT_NE(cache.Find("m/3"), nullptr);
}

}  // namespace
}  // namespace skinlesion::gateway
