#include "skinlesion/serving/sources.h"

#include "gtest/gtest.h"
#include "skinlesion/common/hash.h"
#include "skinlesion/testing/testing.h"

namespace skinlesion::serving {
namespace {

using ::skinlesion::testing::IsOk;
using ::skinlesion::testing::StatusIs;
using ::skinlesion::testing::TempDir;
using ::skinlesion::testing::WriteFile;
using ::testing::HasSubstr;

TEST(LocalRegistrySourceTest, ResolvesAliasesAndPinnedVersionsAndVerifies) {
  TempDir dir;
  const std::string root = dir.Join("registry");
  auto registry = registry::Registry::Create({.root = root});
  ASSERT_THAT(registry, IsOk());
  WriteFile(dir.Join("w"), "weights");
  for (int i = 0; i < 2; ++i) {
    ASSERT_THAT((*registry)->Publish("ham", {{"model.safetensors", dir.Join("w")}},
                                     {{"architecture", "x"}}),
                IsOk());
  }
  ASSERT_THAT((*registry)->SetAlias("ham", "production", 1, "test"), IsOk());

  auto source = LocalRegistrySource::Create(root);
  ASSERT_THAT(source, IsOk());
  EXPECT_EQ(*(*source)->Resolve("ham", "production"), 1);
  EXPECT_EQ(*(*source)->Resolve("ham", "2"), 2);
  EXPECT_THAT((*source)->Resolve("ham", "3"), StatusIs(absl::StatusCode::kNotFound, ::testing::_));
  EXPECT_THAT((*source)->Resolve("ham", "staging"),
              StatusIs(absl::StatusCode::kNotFound, ::testing::_));
  EXPECT_THAT((*source)->Resolve("other", "production"),
              StatusIs(absl::StatusCode::kNotFound, ::testing::_));

  auto path = (*source)->Fetch("ham", 2);
  ASSERT_THAT(path, IsOk());
  EXPECT_EQ(*path, root + "/ham/versions/2");
  WriteFile(*path + "/model.safetensors", "tampered");
  EXPECT_THAT((*source)->Fetch("ham", 2),
              StatusIs(absl::StatusCode::kDataLoss, HasSubstr("checksum mismatch")));
  EXPECT_THAT((*source)->Fetch("ham", 9), StatusIs(absl::StatusCode::kNotFound, ::testing::_));

  EXPECT_THAT(LocalRegistrySource::Create(dir.Join("typo")),
              StatusIs(absl::StatusCode::kNotFound, HasSubstr("typo")));
}

TEST(DirectorySourceTest, ServesOneDirectoryAsVersionOne) {
  TempDir dir;
  WriteFile(dir.Join("model.safetensors"), "weights");
  WriteFile(dir.Join("manifest.json"),
            nlohmann::json({{"architecture", "x"}, {"sha256", Sha256Hex("weights")}}).dump());
  auto source = DirectorySource::Create(dir.path(), "bundled");
  ASSERT_THAT(source, IsOk());
  EXPECT_EQ(*(*source)->Resolve("bundled", "production"), 1);
  EXPECT_THAT((*source)->Resolve("other", "production"),
              StatusIs(absl::StatusCode::kNotFound, HasSubstr("bundled")));
  EXPECT_EQ(*(*source)->Fetch("bundled", 1), dir.path());
  EXPECT_THAT((*source)->Fetch("bundled", 2), StatusIs(absl::StatusCode::kNotFound, ::testing::_));

  WriteFile(dir.Join("model.safetensors"), "changed");
  EXPECT_THAT((*source)->Fetch("bundled", 1),
              StatusIs(absl::StatusCode::kDataLoss, HasSubstr("checksum mismatch")));

  // Registry-style "files" entries are verified too.
  WriteFile(dir.Join("manifest.json"),
            nlohmann::json(
                {{"architecture", "x"},
                 {"files", {{{"name", "model.safetensors"}, {"sha256", Sha256Hex("weights")}}}}})
                .dump());
  EXPECT_THAT((*source)->Fetch("bundled", 1), StatusIs(absl::StatusCode::kDataLoss, ::testing::_));
  WriteFile(dir.Join("model.safetensors"), "weights");
  EXPECT_THAT((*source)->Fetch("bundled", 1), IsOk());

  EXPECT_THAT(DirectorySource::Create(dir.Join("none"), "x"),
              StatusIs(absl::StatusCode::kNotFound, ::testing::_));
  EXPECT_THAT(DirectorySource::Create(dir.path(), ""),
              StatusIs(absl::StatusCode::kInvalidArgument, ::testing::_));
}

}  // namespace
}  // namespace skinlesion::serving
