#include "skinlesion/registry/registry.h"

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <set>
#include <thread>

#include "gtest/gtest.h"
#include "skinlesion/common/hash.h"
#include "skinlesion/testing/testing.h"

namespace skinlesion::registry {
namespace {

using ::skinlesion::testing::IsOk;
using ::skinlesion::testing::StatusIs;
using ::skinlesion::testing::TempDir;
using ::skinlesion::testing::WriteFile;
using ::testing::ElementsAre;
using ::testing::HasSubstr;

class RegistryTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto r = Registry::Create({.root = dir_.Join("registry")});
    ASSERT_TRUE(r.ok()) << r.status();
    registry_ = std::move(*r);
    weights_ = dir_.Join("weights.bin");
    WriteFile(weights_, std::string(1000, 'w'));
  }

  int64_t PublishWith(double balanced_accuracy, double mel_recall, bool gated = true) {
    nlohmann::json manifest = {
        {"architecture", "resnet18"},
        {"metrics", {{"balanced_accuracy", balanced_accuracy}, {"melanoma_recall", mel_recall}}}};
    if (gated) {
      manifest["promotion_gates"] = {{"metrics", {"balanced_accuracy", "melanoma_recall"}}};
    }
    auto v = registry_->Publish("ham-resnet", {{"model.safetensors", weights_}}, manifest);
    EXPECT_TRUE(v.ok()) << v.status();
    return v.value_or(-1);
  }

  TempDir dir_;
  std::unique_ptr<Registry> registry_;
  std::string weights_;
};

TEST_F(RegistryTest, PublishListGetVerify) {
  EXPECT_EQ(PublishWith(0.5, 0.5), 1);
  EXPECT_EQ(PublishWith(0.6, 0.6), 2);
  EXPECT_THAT(registry_->ListModels(), ElementsAre("ham-resnet"));
  EXPECT_THAT(*registry_->ListVersions("ham-resnet"), ElementsAre(1, 2));
  auto info = registry_->GetVersion("ham-resnet", 2);
  ASSERT_TRUE(info.ok()) << info.status();
  EXPECT_EQ(info->manifest["architecture"], "resnet18");
  EXPECT_EQ(info->manifest["version"], 2);
  EXPECT_EQ(info->manifest["model"], "ham-resnet");
  EXPECT_FALSE(info->manifest["created"].get<std::string>().empty());
  ASSERT_EQ(info->files.size(), 1u);
  EXPECT_EQ(info->files[0].size, 1000);
  EXPECT_EQ(info->files[0].sha256, Sha256Hex(std::string(1000, 'w')));
  EXPECT_THAT(registry_->Verify("ham-resnet", 2), IsOk());
  EXPECT_THAT(registry_->GetVersion("ham-resnet", 3), StatusIs(absl::StatusCode::kNotFound, HasSubstr("version 3")));
  EXPECT_THAT(registry_->ListVersions("other"), StatusIs(absl::StatusCode::kNotFound, HasSubstr("other")));
}

TEST_F(RegistryTest, EmptyFilesArePublished) {
  WriteFile(dir_.Join("empty"), "");
  auto v = registry_->Publish("m", {{"empty.txt", dir_.Join("empty")}}, nlohmann::json::object());
  ASSERT_TRUE(v.ok()) << v.status();
  auto info = registry_->GetVersion("m", *v);
  ASSERT_TRUE(info.ok()) << info.status();
  ASSERT_EQ(info->files.size(), 1u);
  EXPECT_EQ(info->files[0].size, 0);
  EXPECT_EQ(info->files[0].sha256, Sha256Hex(""));
  EXPECT_THAT(registry_->Verify("m", *v), IsOk());
}

TEST_F(RegistryTest, TamperedFileFailsVerification) {
  PublishWith(0.5, 0.5);
  WriteFile(registry_->root() + "/ham-resnet/versions/1/model.safetensors", std::string(1000, 'x'));
  EXPECT_THAT(registry_->Verify("ham-resnet", 1),
              StatusIs(absl::StatusCode::kDataLoss, HasSubstr("checksum mismatch for model.safetensors")));
}

TEST_F(RegistryTest, BadNamesAreInvalidArgument) {
  for (const char* name : {"", "../etc", "a/b", "UPPER", ".hidden", "a..b", "x y", "é"}) {
    EXPECT_THAT(registry_->Publish(name, {{"f", weights_}}, nlohmann::json::object()),
                StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("invalid model name")))
        << name;
  }
  EXPECT_THAT(registry_->Publish(std::string(65, 'a'), {{"f", weights_}}, nlohmann::json::object()),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("longer than 64")));
  EXPECT_THAT(registry_->Publish("m", {{"../x", weights_}}, nlohmann::json::object()),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("invalid file name")));
  PublishWith(0.5, 0.5);
  EXPECT_THAT(registry_->SetAlias("ham-resnet", "../prod", 1, ""),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("invalid alias name")));
  EXPECT_THAT(registry_->Publish("m", {{"f", dir_.Join("missing")}}, nlohmann::json::object()),
              StatusIs(absl::StatusCode::kNotFound, HasSubstr("missing")));
}

TEST_F(RegistryTest, AliasesHistoryAndGates) {
  PublishWith(0.70, 0.60);
  PublishWith(0.75, 0.55);  // Better balanced accuracy, worse melanoma recall.
  PublishWith(0.80, 0.65);
  ASSERT_THAT(registry_->SetAlias("ham-resnet", "production", 1, "first"), IsOk());
  EXPECT_THAT(registry_->SetAlias("ham-resnet", "production", 2, "try"),
              StatusIs(absl::StatusCode::kFailedPrecondition,
                       HasSubstr("melanoma_recall 0.55 < 0.6 of v1")));
  EXPECT_EQ(registry_->GetAlias("ham-resnet", "production")->version, 1);
  ASSERT_THAT(registry_->SetAlias("ham-resnet", "production", 3, "better"), IsOk());
  ASSERT_THAT(registry_->SetAlias("ham-resnet", "production", 2, "rollback", /*force=*/true), IsOk());
  ASSERT_THAT(registry_->SetAlias("ham-resnet", "staging", 3, "nightly"), IsOk());
  EXPECT_EQ(registry_->GetAlias("ham-resnet", "production")->version, 2);
  EXPECT_THAT(registry_->GetVersion("ham-resnet", 3)->aliases, ElementsAre("staging"));
  EXPECT_THAT(registry_->GetAlias("ham-resnet", "canary"), StatusIs(absl::StatusCode::kNotFound, HasSubstr("canary")));

  auto history = registry_->AliasHistory("ham-resnet");
  ASSERT_TRUE(history.ok());
  ASSERT_EQ(history->size(), 4u);
  EXPECT_EQ((*history)[0].from_version, 0);
  EXPECT_EQ((*history)[0].to_version, 1);
  EXPECT_EQ((*history)[2].reason, "rollback");
  EXPECT_TRUE((*history)[2].forced);
  EXPECT_EQ((*history)[3].alias, "staging");
}

TEST_F(RegistryTest, AModelWithOtherClassesNeedsAForcedPromotion) {
  PublishWith(0.50, 0.40);
  ASSERT_THAT(registry_->SetAlias("ham-resnet", "production", 1, "first"), IsOk());
  // A 3-class model with "better" numbers: its metrics do not compare with v1's.
  nlohmann::json manifest = {
      {"architecture", "resnet18"},
      {"labels", {"benign", "melanoma", "other"}},
      {"metrics", {{"balanced_accuracy", 0.9}, {"melanoma_recall", 0.9}}},
      {"promotion_gates", {{"metrics", {"balanced_accuracy", "melanoma_recall"}}}}};
  ASSERT_THAT(registry_->Publish("ham-resnet", {{"model.safetensors", weights_}}, manifest), IsOk());
  EXPECT_THAT(registry_->SetAlias("ham-resnet", "production", 2, "try"),
              StatusIs(absl::StatusCode::kFailedPrecondition,
                       HasSubstr("its classes [benign, melanoma, other] differ from v1's [akiec, bcc")));
  EXPECT_THAT(registry_->SetAlias("ham-resnet", "production", 2, "new label set", /*force=*/true), IsOk());
  // The HAM10000 codes spelled out are the same classes as no labels at all.
  manifest["labels"] = {"akiec", "bcc", "bkl", "df", "mel", "nv", "vasc"};
  ASSERT_THAT(registry_->Publish("ham-resnet", {{"model.safetensors", weights_}}, manifest), IsOk());
  ASSERT_THAT(registry_->SetAlias("ham-resnet", "staging", 1, "old"), IsOk());
  EXPECT_THAT(registry_->SetAlias("ham-resnet", "staging", 3, "same classes"), IsOk());
  // Classes that cannot be read do not pass the gates either.
  manifest["labels"] = "akiec,bcc";
  ASSERT_THAT(registry_->Publish("ham-resnet", {{"model.safetensors", weights_}}, manifest), IsOk());
  EXPECT_THAT(registry_->SetAlias("ham-resnet", "staging", 4, "unreadable"),
              StatusIs(absl::StatusCode::kFailedPrecondition,
                       HasSubstr("its classes cannot be compared: the new version's manifest: \"labels\" must be an array")));
}

// Gates compare figures measured on the same images only: validation figures, another
// split's test figures or cross-validated ones do not say which model is better.
TEST_F(RegistryTest, MetricsMeasuredOnOtherImagesNeedAForcedPromotion) {
  auto publish = [&](double ba, const nlohmann::json& context) {
    nlohmann::json metrics = {{"balanced_accuracy", ba}, {"melanoma_recall", ba}};
    if (!context.is_null()) metrics["context"] = context;
    nlohmann::json manifest = {
        {"architecture", "resnet18"},
        {"metrics", metrics},
        {"promotion_gates", {{"metrics", {"balanced_accuracy", "melanoma_recall"}}}}};
    auto v = registry_->Publish("ham-resnet", {{"model.safetensors", weights_}}, manifest);
    EXPECT_TRUE(v.ok()) << v.status();
    return v.value_or(-1);
  };
  const nlohmann::json oof = {{"partition", "out_of_fold"}, {"split_digest", "201fd97fdbe8a46b"}};
  const nlohmann::json test_a = {{"partition", "test"}, {"split_digest", "aaaaaaaaaaaaaaaa"}};
  const nlohmann::json test_b = {{"partition", "test"}, {"split_digest", "bbbbbbbbbbbbbbbb"}};
  ASSERT_EQ(publish(0.60, oof), 1);
  ASSERT_THAT(registry_->SetAlias("ham-resnet", "production", 1, "bundled"), IsOk());
  // Better-looking test figures of another split: not comparable, blocked with the reason.
  ASSERT_EQ(publish(0.90, test_a), 2);
  EXPECT_THAT(
      registry_->SetAlias("ham-resnet", "production", 2, "try"),
      StatusIs(absl::StatusCode::kFailedPrecondition,
               HasSubstr("its metrics were measured on 'test' of split aaaaaaaaaaaa, v1's on "
                         "'out_of_fold' of split 201fd97fdbe8: different images do not compare")));
  ASSERT_THAT(registry_->SetAlias("ham-resnet", "production", 2, "reviewed", /*force=*/true),
              IsOk());
  // The same split's test images: compared as numbers, both ways.
  ASSERT_EQ(publish(0.85, test_a), 3);
  EXPECT_THAT(registry_->SetAlias("ham-resnet", "production", 3, "worse"),
              StatusIs(absl::StatusCode::kFailedPrecondition,
                       HasSubstr("balanced_accuracy 0.85 < 0.9 of v2")));
  ASSERT_EQ(publish(0.95, test_a), 4);
  EXPECT_THAT(registry_->SetAlias("ham-resnet", "production", 4, "better"), IsOk());
  // Same partition name, another split: not comparable either.
  ASSERT_EQ(publish(0.99, test_b), 5);
  EXPECT_THAT(registry_->SetAlias("ham-resnet", "production", 5, "try"),
              StatusIs(absl::StatusCode::kFailedPrecondition,
                       HasSubstr("different images do not compare")));
  // A manifest that does not record its images is compared as before (numbers only).
  ASSERT_EQ(publish(0.97, nullptr), 6);
  EXPECT_THAT(registry_->SetAlias("ham-resnet", "production", 6, "legacy"), IsOk());
}

TEST_F(RegistryTest, RetentionKeepsNewestAndAliased) {
  for (int i = 0; i < 6; ++i) PublishWith(0.5, 0.5, /*gated=*/false);
  ASSERT_THAT(registry_->SetAlias("ham-resnet", "production", 2, ""), IsOk());
  auto removed = registry_->ApplyRetention("ham-resnet", 2);
  ASSERT_TRUE(removed.ok()) << removed.status();
  EXPECT_THAT(*removed, ElementsAre(1, 3, 4));
  EXPECT_THAT(*registry_->ListVersions("ham-resnet"), ElementsAre(2, 5, 6));
  EXPECT_EQ(PublishWith(0.5, 0.5), 7);  // Numbers are never reused.
}

// Two processes publish at once: every version number is claimed exactly once.
TEST_F(RegistryTest, ConcurrentPublishersGetUniqueVersions) {
  constexpr int kEach = 15;
  std::vector<pid_t> children;
  for (int c = 0; c < 2; ++c) {
    const pid_t pid = ::fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {
      auto r = Registry::Create({.root = registry_->root()});
      int ok = 0;
      for (int i = 0; i < kEach; ++i) {
        nlohmann::json m = {{"publisher", c}, {"i", i}};
        if (r.ok() && (*r)->Publish("race", {{"w.bin", weights_}}, m).ok()) ++ok;
      }
      ::_exit(ok == kEach ? 0 : 1);
    }
    children.push_back(pid);
  }
  for (pid_t pid : children) {
    int status = 0;
    ::waitpid(pid, &status, 0);
    EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  }
  auto versions = registry_->ListVersions("race");
  ASSERT_TRUE(versions.ok());
  ASSERT_EQ(versions->size(), 2u * kEach);
  std::set<std::pair<int, int>> published;
  for (int64_t v = 1; v <= 2 * kEach; ++v) {
    EXPECT_EQ((*versions)[v - 1], v);
    auto info = registry_->GetVersion("race", v);
    ASSERT_TRUE(info.ok());
    EXPECT_EQ(info->manifest["version"], v);
    published.insert({info->manifest["publisher"].get<int>(), info->manifest["i"].get<int>()});
  }
  EXPECT_EQ(published.size(), 2u * kEach);  // No publication was lost or duplicated.
}

// A publisher killed at arbitrary moments never leaves a partial version visible.
TEST_F(RegistryTest, KilledPublisherLeavesNoPartialVersion) {
  const std::string big = dir_.Join("big.bin");
  WriteFile(big, std::string(8 << 20, 'b'));
  for (int round = 0; round < 6; ++round) {
    const pid_t pid = ::fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {
      auto r = Registry::Create({.root = registry_->root()});
      for (;;) (void)(*r)->Publish("killed", {{"a.bin", big}, {"b.bin", weights_}}, {{"x", 1}});
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20 + 37 * round));
    ::kill(pid, SIGKILL);
    int status = 0;
    ::waitpid(pid, &status, 0);
    auto versions = registry_->ListVersions("killed");
    if (!versions.ok()) continue;  // Killed before the first version.
    for (int64_t v : *versions) {
      EXPECT_THAT(registry_->Verify("killed", v), IsOk()) << "round " << round << " v" << v;
    }
  }
  ASSERT_THAT(registry_->CollectGarbage("killed", /*min_age_s=*/0), IsOk());
  EXPECT_TRUE(std::filesystem::is_empty(registry_->root() + "/killed/.staging"));
}

TEST_F(RegistryTest, StateTokenChangesOnPublishAndAlias) {
  PublishWith(0.5, 0.5);
  const std::string t1 = *registry_->StateToken("ham-resnet");
  PublishWith(0.6, 0.6);
  const std::string t2 = *registry_->StateToken("ham-resnet");
  ASSERT_THAT(registry_->SetAlias("ham-resnet", "staging", 2, ""), IsOk());
  const std::string t3 = *registry_->StateToken("ham-resnet");
  ASSERT_THAT(registry_->SetAlias("ham-resnet", "staging", 2, "again"), IsOk());  // Same version.
  const std::string t4 = *registry_->StateToken("ham-resnet");
  EXPECT_NE(t1, t2);
  EXPECT_NE(t2, t3);
  EXPECT_NE(t3, t4);
  EXPECT_EQ(t4, *registry_->StateToken("ham-resnet"));
}

}  // namespace
}  // namespace skinlesion::registry
