// PublishRun: what a finished job puts in the registry, and that a job is published
// once even when the trainer is killed between publishing and recording success.
#include "skinlesion/jobs/publish.h"

#include <filesystem>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "skinlesion/common/hash.h"
#include "skinlesion/manifest/manifest.h"
#include "skinlesion/registry/registry.h"
#include "skinlesion/testing/testing.h"

namespace skinlesion::jobs {
namespace {

using ::skinlesion::testing::IsOk;
using ::skinlesion::testing::StatusIs;
using ::skinlesion::testing::TempDir;
using ::skinlesion::testing::WriteFile;
using ::testing::HasSubstr;

class PublishRunTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto r = registry::Registry::Create({.root = dir_.Join("registry")});
    ASSERT_TRUE(r.ok()) << r.status();
    registry_ = std::move(*r);
  }

  // A finished run directory as `skinlesion train` leaves it.
  v1::Job Job(const std::string& id, double balanced_accuracy) {
    const std::string run = dir_.Join("runs/" + id);
    std::filesystem::create_directories(run + "/model");
    std::filesystem::create_directories(run + "/report");
    const nlohmann::json metrics = {{"balanced_accuracy", balanced_accuracy},
                                    {"melanoma_recall", balanced_accuracy}};
    WriteFile(run + "/model/model.safetensors", "weights of " + id);
    WriteFile(run + "/model/manifest.json",
              nlohmann::json({{"architecture", "resnet18"}, {"image_size", 32}, {"metrics", metrics}})
                  .dump());
    WriteFile(run + "/report/metrics.json", metrics.dump());
    WriteFile(run + "/report/confusion_matrix.png", "png bytes");
    v1::Job job;
    job.set_id(id);
    job.set_run_dir(run);
    job.mutable_config()->set_model_name("ham");
    job.mutable_config()->set_promote_to_production(true);
    return job;
  }

  TempDir dir_;
  std::unique_ptr<registry::Registry> registry_;
};

TEST_F(PublishRunTest, PublishesOncePerJob) {
  std::vector<std::string> notes;
  const v1::Job job = Job("job-a", 0.6);
  auto first = PublishRun(*registry_, job, &notes);
  ASSERT_TRUE(first.ok()) << first.status();
  EXPECT_EQ(first->version(), 1);
  EXPECT_EQ(first->alias(), "production");
  auto info = registry_->GetVersion("ham", 1);
  ASSERT_TRUE(info.ok()) << info.status();
  EXPECT_EQ(info->manifest["job_id"], "job-a");
  EXPECT_TRUE(info->manifest["parent_version"].is_null());
  EXPECT_EQ(info->manifest["promotion_gates"]["metrics"][0], "balanced_accuracy");
  EXPECT_EQ(info->manifest["format"], kManifestFormat);  // Written back through ModelManifest.
  EXPECT_EQ(first->sha256(), Sha256Hex("weights of job-a"));
  EXPECT_TRUE(notes.empty());

  // The trainer restarts and finishes the same job again: no second version.
  auto again = PublishRun(*registry_, job, &notes);
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_EQ(again->version(), 1);
  EXPECT_EQ(registry_->ListVersions("ham").value(), std::vector<int64_t>{1});
  ASSERT_EQ(notes.size(), 1u);
  EXPECT_THAT(notes[0], HasSubstr("already published by this job"));

  // Another job is a new version, with its parent; worse metrics keep production.
  notes.clear();
  auto worse = PublishRun(*registry_, Job("job-b", 0.3), &notes);
  ASSERT_TRUE(worse.ok()) << worse.status();
  EXPECT_EQ(worse->version(), 2);
  EXPECT_EQ(worse->alias(), "staging");
  EXPECT_EQ(registry_->GetVersion("ham", 2)->manifest["parent_version"], 1);
  EXPECT_EQ(registry_->GetAlias("ham", "production")->version, 1);
  EXPECT_EQ(registry_->GetAlias("ham", "staging")->version, 2);
  ASSERT_EQ(notes.size(), 1u);
  EXPECT_THAT(notes[0], HasSubstr("production not moved"));
}

// A run whose manifest a server could not read is not published.
TEST_F(PublishRunTest, AnUnservableManifestIsNotPublished) {
  std::vector<std::string> notes;
  const v1::Job job = Job("job-c", 0.6);
  WriteFile(job.run_dir() + "/model/manifest.json",
            nlohmann::json({{"architecture", "resnet18"}, {"labels", "mel,nv"}}).dump());
  EXPECT_THAT(PublishRun(*registry_, job, &notes),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("\"labels\" must be an array")));
  EXPECT_FALSE(registry_->ListVersions("ham").ok() && !registry_->ListVersions("ham")->empty());
}

}  // namespace
}  // namespace skinlesion::jobs
