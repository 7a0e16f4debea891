#include "skinlesion/registry/seed.h"

#include <filesystem>

#include "gtest/gtest.h"
#include "skinlesion/common/hash.h"
#include "skinlesion/testing/testing.h"

namespace skinlesion::registry {
namespace {

using ::skinlesion::testing::IsOk;
using ::skinlesion::testing::StatusIs;
using ::skinlesion::testing::TempDir;
using ::skinlesion::testing::WriteFile;
using ::testing::HasSubstr;
using ::testing::UnorderedElementsAre;

class SeedTest : public ::testing::Test {
 protected:
  void SetUp() override {
    registry_ = std::move(Registry::Create({.root = dir_.Join("registry")})).value();
    model_dir_ = dir_.Join("bundled");
    std::filesystem::create_directories(model_dir_ + "/sub");
    WriteFile(model_dir_ + "/model.safetensors", "weights");
    WriteFile(model_dir_ + "/golden_1.jpg", "jpeg");
    WriteFile(model_dir_ + "/manifest.json", R"({"architecture": "resnet18", "version": 99})");
    WriteFile(model_dir_ + "/.DS_Store", "junk");
    WriteFile(model_dir_ + "/sub/x", "ignored");
  }

  TempDir dir_;
  std::unique_ptr<Registry> registry_;
  std::string model_dir_;
};

TEST_F(SeedTest, PublishesOnceAndSetsAlias) {
  auto v = SeedFromDirectory(*registry_, model_dir_, "ham10000", "production");
  ASSERT_TRUE(v.ok()) << v.status();
  EXPECT_EQ(*v, 1);
  auto info = registry_->GetAlias("ham10000", "production");
  ASSERT_TRUE(info.ok()) << info.status();
  EXPECT_EQ(info->version, 1);
  EXPECT_EQ(info->manifest["architecture"], "resnet18");
  EXPECT_EQ(info->manifest["version"], 1);  // The registry's number, not the file's.
  std::vector<std::string> names;
  for (const auto& f : info->files) names.push_back(f.name);
  EXPECT_THAT(names, UnorderedElementsAre("model.safetensors", "golden_1.jpg"));
  EXPECT_THAT(registry_->Verify("ham10000", 1), IsOk());
  EXPECT_THAT(registry_->AliasHistory("ham10000")->at(0).reason, HasSubstr("seeded from"));
  // Once the model has a version, seeding does nothing.
  EXPECT_EQ(*SeedFromDirectory(*registry_, model_dir_, "ham10000", "production"), 0);
  EXPECT_EQ(registry_->ListVersions("ham10000")->size(), 1u);
}

TEST_F(SeedTest, Errors) {
  EXPECT_THAT(SeedFromDirectory(*registry_, model_dir_, "../x", "production"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("model name")));
  EXPECT_THAT(SeedFromDirectory(*registry_, model_dir_, "m", "Prod"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("alias name")));
  EXPECT_THAT(SeedFromDirectory(*registry_, dir_.Join("missing"), "m", "production"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("does not exist")));
  WriteFile(model_dir_ + "/manifest.json", "[1, 2]");
  EXPECT_THAT(SeedFromDirectory(*registry_, model_dir_, "m", "production"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("not a JSON object")));
  std::filesystem::remove(model_dir_ + "/manifest.json");
  EXPECT_THAT(SeedFromDirectory(*registry_, model_dir_, "m", "production"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("no readable manifest.json")));
  const std::string empty = dir_.Join("empty");
  std::filesystem::create_directories(empty);
  WriteFile(empty + "/manifest.json", "{}");
  EXPECT_THAT(SeedFromDirectory(*registry_, empty, "m", "production"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("no files besides")));
  EXPECT_TRUE(registry_->ListModels().empty());
}

}  // namespace
}  // namespace skinlesion::registry
