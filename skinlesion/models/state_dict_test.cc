#include "skinlesion/models/state_dict.h"

#include <torch/torch.h>

#include <filesystem>
#include <fstream>
#include <functional>

#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "skinlesion/common/logging.h"
#include "skinlesion/models/model_zoo.h"
#include "skinlesion/models/safetensors.h"
#include "skinlesion/testing/testing.h"

namespace skinlesion::models {
namespace {

using ::skinlesion::testing::IsOk;
using ::skinlesion::testing::SourcePath;
using ::skinlesion::testing::StatusIs;
using ::skinlesion::testing::TempDir;
using ::testing::AllOf;
using ::testing::HasSubstr;

std::shared_ptr<Classifier> Make(const std::string& arch, int64_t classes = 7, int64_t size = 32) {
  ModelOptions o;
  o.num_classes = classes;
  o.image_size = size;
  o.vit = {8, 16, 1, 2, 32};
  auto m = CreateModel(arch, o);
  SL_CHECK(m.ok()) << m.status();
  (*m)->eval();
  return *m;
}

void Randomize(Classifier& m, int seed) {
  torch::manual_seed(seed);
  torch::NoGradGuard g;
  for (auto& p : m.parameters()) p.normal_(0, 0.1);
  for (auto& b : m.named_buffers()) {
    if (b.key().find("running_var") != std::string::npos) b.value().uniform_(0.5, 1.5);
  }
}

class StateDictTest : public ::testing::Test {
 protected:
  void SetUp() override { torch::set_num_threads(2); }
};

TEST_F(StateDictTest, LoadsAnotherModelsWeights) {
  auto a = Make("resnet18"), b = Make("resnet18");
  Randomize(*a, 1);
  auto report = LoadStateDict(*b, GetStateDict(*a));
  ASSERT_THAT(report, IsOk());
  EXPECT_FALSE(report->head_replaced);
  EXPECT_EQ(report->loaded, static_cast<int>(GetStateDict(*a).size()));
  torch::NoGradGuard g;
  torch::Tensor x = torch::randn({1, 3, 32, 32});
  EXPECT_TRUE(torch::allclose(a->forward(x), b->forward(x)));
}

TEST_F(StateDictTest, ReplacesHeadWhenClassCountsDiffer) {
  auto imagenet = Make("efficientnet_b0", 1000);
  auto ours = Make("efficientnet_b0", 7);
  Randomize(*imagenet, 2);
  const torch::Tensor head_before = GetStateDict(*ours).at("classifier.1.weight").clone();
  auto report = LoadStateDict(*ours, GetStateDict(*imagenet));
  ASSERT_THAT(report, IsOk());
  EXPECT_TRUE(report->head_replaced);
  auto sd = GetStateDict(*ours);
  EXPECT_TRUE(torch::equal(sd.at("classifier.1.weight"), head_before));
  EXPECT_TRUE(torch::equal(sd.at("features.0.0.weight"), GetStateDict(*imagenet).at("features.0.0.weight")));

  LoadOptions strict;
  strict.replace_head_on_class_mismatch = false;
  EXPECT_THAT(LoadStateDict(*ours, GetStateDict(*imagenet), strict),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("classifier.1.weight (checkpoint [1000, 1280], model [7, 1280])")));
}

TEST_F(StateDictTest, ListsEveryProblemAndLeavesTheModelUnchanged) {
  auto a = Make("resnet18"), b = Make("resnet18");
  Randomize(*a, 3);
  const torch::Tensor before = GetStateDict(*b).at("layer2.0.conv2.weight").clone();
  TensorMap sd = GetStateDict(*a);
  sd.erase("conv1.weight");
  sd.erase("layer4.1.bn2.running_var");
  sd["bogus.weight"] = torch::ones({1});
  sd["layer1.0.conv1.weight"] = torch::ones({3, 3});
  EXPECT_THAT(LoadStateDict(*b, sd),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       AllOf(HasSubstr("missing 2: conv1.weight, layer4.1.bn2.running_var"),
                             HasSubstr("unexpected 1: bogus.weight"),
                             HasSubstr("layer1.0.conv1.weight (checkpoint [3, 3], model [64, 64, 3, 3])"))));
  EXPECT_TRUE(torch::equal(GetStateDict(*b).at("layer2.0.conv2.weight"), before));
}

TEST_F(StateDictTest, ToleratesMissingNumBatchesTracked) {
  auto a = Make("densenet121"), b = Make("densenet121");
  TensorMap sd = GetStateDict(*a);
  for (auto it = sd.begin(); it != sd.end();) {
    it = it->first.find("num_batches_tracked") != std::string::npos ? sd.erase(it) : std::next(it);
  }
  auto report = LoadStateDict(*b, sd);
  ASSERT_THAT(report, IsOk());
  EXPECT_FALSE(report->defaulted.empty());
}

TEST_F(StateDictTest, InterpolatesVitPositionEmbeddingsOfAnotherSize) {
  auto big = Make("vit_custom", 7, 64);   // 8x8 patches
  auto small = Make("vit_custom", 7, 32); // 4x4 patches
  Randomize(*big, 4);
  auto report = LoadStateDict(*small, GetStateDict(*big));
  ASSERT_THAT(report, IsOk());
  EXPECT_EQ(GetStateDict(*small).at("encoder.pos_embedding").sizes(), (std::vector<int64_t>{1, 17, 16}));
  LoadOptions no_adapt;
  no_adapt.adapt = false;
  EXPECT_THAT(LoadStateDict(*small, GetStateDict(*big), no_adapt),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("encoder.pos_embedding")));
}

TEST_F(StateDictTest, CheckpointRoundTrip) {
  TempDir dir;
  auto a = Make("vit_custom");
  Randomize(*a, 5);
  const std::vector<std::string> labels = {"akiec", "bcc", "bkl", "df", "mel", "nv", "vasc"};
  ASSERT_THAT(SaveCheckpoint(*a, dir.Join("ckpt"), 32, labels, {8, 16, 1, 2, 32}), IsOk());
  auto loaded = LoadCheckpoint(dir.Join("ckpt"));
  ASSERT_THAT(loaded, IsOk());
  EXPECT_EQ(loaded->manifest.architecture, "vit_custom");
  EXPECT_EQ(loaded->manifest.classes.codes(), labels);
  ASSERT_TRUE(loaded->manifest.vit.has_value());
  EXPECT_EQ(loaded->manifest.vit->hidden_dim, 16);
  EXPECT_EQ(loaded->manifest.image_size, 32);
  torch::NoGradGuard g;
  torch::Tensor x = torch::randn({2, 3, 32, 32});
  EXPECT_TRUE(torch::allclose(a->forward(x), loaded->model->forward(x)));
  auto st = ReadSafetensors(dir.Join("ckpt/model.safetensors"));
  ASSERT_THAT(st, IsOk());
  EXPECT_THAT(st->metadata.at("skinlesion.manifest"), HasSubstr("vit_custom"));

  // fp16 export: F16 floats, integer buffers kept, the same logits to half precision.
  auto r = Make("resnet18");
  Randomize(*r, 6);
  r->eval();
  ASSERT_THAT(SaveCheckpoint(*r, dir.Join("fp32"), 32, labels), IsOk());
  ASSERT_THAT(SaveCheckpoint(*r, dir.Join("fp16"), 32, labels, {}, /*fp16=*/true), IsOk());
  auto half = ReadSafetensors(dir.Join("fp16/model.safetensors"));
  ASSERT_THAT(half, IsOk());
  EXPECT_EQ(half->tensors.at("conv1.weight").scalar_type(), torch::kHalf);
  EXPECT_EQ(half->tensors.at("bn1.num_batches_tracked").scalar_type(), torch::kLong);
  EXPECT_LT(std::filesystem::file_size(dir.Join("fp16/model.safetensors")),
            std::filesystem::file_size(dir.Join("fp32/model.safetensors")) * 6 / 10);
  auto r16 = LoadCheckpoint(dir.Join("fp16"));
  ASSERT_THAT(r16, IsOk());
  torch::Tensor xr = torch::randn({2, 3, 32, 32});
  const torch::Tensor want = r->forward(xr);
  const torch::Tensor got = r16->model->forward(xr);
  EXPECT_EQ(got.scalar_type(), torch::kFloat);
  EXPECT_LT((got - want).abs().max().item<float>(), 2e-2 * want.abs().max().item<float>() + 1e-3);
  EXPECT_FALSE(torch::equal(got, want));  // It really went through half precision.

  EXPECT_THAT(SaveCheckpoint(*a, dir.Join("bad"), 32, {"one"}), StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("labels")));
}

// LoadCheckpoint reads manifest.json as every reader does (ModelManifest), so its
// errors name the file and the field, and the model it builds follows the manifest.
TEST_F(StateDictTest, CheckpointManifestIsTheModelManifest) {
  TempDir dir;
  auto three = Make("resnet18", 3);
  EXPECT_THAT(SaveCheckpoint(*three, dir.Join("unlabelled"), 32),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("labels are required")));
  ASSERT_THAT(SaveCheckpoint(*three, dir.Join("three"), 32, {"a", "b", "c"}), IsOk());
  auto loaded = LoadCheckpoint(dir.Join("three"));
  ASSERT_THAT(loaded, IsOk());
  EXPECT_EQ(loaded->model->num_classes(), 3);
  EXPECT_EQ(loaded->manifest.classes.codes(), (std::vector<std::string>{"a", "b", "c"}));
  EXPECT_FALSE(loaded->manifest.vit.has_value());
  // The file as ReadModelManifest sees it.
  auto read = ReadModelManifest(dir.Join("three"));
  ASSERT_THAT(read, IsOk());
  EXPECT_EQ(read->classes.codes(), loaded->manifest.classes.codes());

  auto rewrite = [&](const std::string& name, const std::function<void(nlohmann::json&)>& edit) {
    std::ifstream in(dir.Join(name + "/manifest.json"));
    nlohmann::json j = nlohmann::json::parse(in);
    edit(j);
    std::ofstream(dir.Join(name + "/manifest.json"), std::ios::trunc) << j.dump();
  };
  rewrite("three", [](nlohmann::json& j) { j["format"] = "other"; });
  EXPECT_THAT(LoadCheckpoint(dir.Join("three")),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       AllOf(HasSubstr("manifest.json"), HasSubstr("format"))));
  rewrite("three", [](nlohmann::json& j) {
    j["format"] = "skinlesion.checkpoint.v1";
    j["num_classes"] = -1;
  });
  EXPECT_THAT(LoadCheckpoint(dir.Join("three")),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("num_classes")));
  // Labels that do not fit the weights' head: the strict load says so.
  rewrite("three", [](nlohmann::json& j) {
    j["num_classes"] = 4;
    j["labels"] = {"a", "b", "c", "d"};
  });
  EXPECT_THAT(LoadCheckpoint(dir.Join("three")),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("fc.")));

  // A vit_custom's shape comes from "vit": without it the default shape does not fit.
  auto vit = Make("vit_custom");
  const std::vector<std::string> labels = {"akiec", "bcc", "bkl", "df", "mel", "nv", "vasc"};
  ASSERT_THAT(SaveCheckpoint(*vit, dir.Join("vit"), 32, labels, {8, 16, 1, 2, 32}), IsOk());
  rewrite("vit", [](nlohmann::json& j) { j["vit"]["num_heads"] = 0; });
  EXPECT_THAT(LoadCheckpoint(dir.Join("vit")),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("vit.num_heads")));
  rewrite("vit", [](nlohmann::json& j) { j.erase("vit"); });
  EXPECT_THAT(LoadCheckpoint(dir.Join("vit")),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("encoder")));
}

TEST_F(StateDictTest, ReadWeightsFileDispatchesOnContent) {
  TempDir dir;
  ASSERT_THAT(WriteSafetensors(dir.Join("w.bin"), {{"module.fc.weight", torch::ones({2, 2})}}), IsOk());
  auto st = ReadWeightsFile(dir.Join("w.bin"));
  ASSERT_THAT(st, IsOk());
  EXPECT_TRUE(st->count("fc.weight"));
  auto pth = ReadWeightsFile(SourcePath("skinlesion/models/testdata/tiny_state_dict.pth"));
  ASSERT_THAT(pth, IsOk());
  EXPECT_TRUE(pth->count("linear.weight"));
  EXPECT_THAT(ReadWeightsFile(dir.Join("none")), StatusIs(absl::StatusCode::kNotFound, HasSubstr("none")));
}

}  // namespace
}  // namespace skinlesion::models
