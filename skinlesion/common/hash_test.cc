#include "skinlesion/common/hash.h"

#include "gtest/gtest.h"
#include "skinlesion/testing/testing.h"

namespace skinlesion {
namespace {

TEST(HashTest, KnownVectors) {
  EXPECT_EQ(Sha256Hex(""), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  EXPECT_EQ(Sha256Hex("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
}

TEST(HashTest, FileMatchesInMemory) {
  skinlesion::testing::TempDir dir;
  std::string big(200000, 'x');
  big[12345] = 'y';
  skinlesion::testing::WriteFile(dir.Join("f"), big);
  auto h = Sha256File(dir.Join("f"));
  ASSERT_TRUE(h.ok());
  EXPECT_EQ(*h, Sha256Hex(big));
  EXPECT_FALSE(Sha256File(dir.Join("nope")).ok());
}

}  // namespace
}  // namespace skinlesion
