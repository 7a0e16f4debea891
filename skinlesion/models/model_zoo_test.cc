#include "skinlesion/models/model_zoo.h"

#include <set>

#include <torch/torch.h>

#include "gtest/gtest.h"
#include "skinlesion/common/logging.h"
#include "skinlesion/models/vit.h"
#include "skinlesion/testing/testing.h"

namespace skinlesion::models {
namespace {

using ::skinlesion::testing::IsOk;
using ::skinlesion::testing::StatusIs;
using ::testing::HasSubstr;

class ModelZooTest : public ::testing::Test {
 protected:
  void SetUp() override { torch::set_num_threads(2); }
};

TEST_F(ModelZooTest, UnknownArchitectureListsValidNames) {
  auto model = CreateModel("resnet19");
  EXPECT_THAT(model, StatusIs(absl::StatusCode::kInvalidArgument,
                              AllOf(HasSubstr("resnet19"), HasSubstr("resnet18"), HasSubstr("vit_b_16"))));
}

TEST_F(ModelZooTest, RejectsBadOptions) {
  ModelOptions options;
  options.num_classes = 0;
  EXPECT_THAT(CreateModel("resnet18", options), StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("num_classes")));
  options = {};
  options.image_size = 100;
  EXPECT_THAT(CreateModel("vit_b_16", options), StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("patch")));
  options = {};
  options.vit.num_heads = 5;
  EXPECT_THAT(CreateModel("vit_custom", options), StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("heads")));
}

// Parameter counts of torchvision 0.14's models with 1000 classes.
TEST_F(ModelZooTest, ParameterCountsMatchTorchvision) {
  const std::vector<std::pair<std::string, int64_t>> expected = {
      {"resnet18", 11689512},       {"resnet34", 21797672},        {"resnet50", 25557032},
      {"densenet121", 7978856},     {"efficientnet_b0", 5288548},  {"efficientnet_b3", 12233232},
      {"vit_b_16", 86567656},
  };
  ModelOptions options;
  options.num_classes = 1000;
  for (const auto& [name, params] : expected) {
    auto model = CreateModel(name, options);
    ASSERT_THAT(model, IsOk());
    int64_t n = 0;
    for (const auto& p : (*model)->parameters()) n += p.numel();
    EXPECT_EQ(n, params) << name;
  }
}

// One of each family (the rest differ only in sizes; the parameter-count and
// conformance tests cover them).
class ForwardBackwardTest : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override { torch::set_num_threads(2); }
};

TEST_P(ForwardBackwardTest, TrainAndEvalForward) {
  const std::string name = GetParam();
  ModelOptions options;
  options.image_size = 32;
  options.vit = {8, 32, 2, 2, 64};
  auto model = CreateModel(name, options);
  ASSERT_THAT(model, IsOk());
  EXPECT_EQ((*model)->architecture(), name);
  EXPECT_EQ((*model)->num_classes(), 7);
  torch::Tensor x = torch::randn({2, 3, 32, 32});
  // Backward through the deeper CNNs costs 10-20 s on the shared 2-core VM; one of
  // each block type (BasicBlock, MBConv, ViT) is enough for a unit test.
  if (name != "resnet50" && name != "densenet121") {
    (*model)->train();
    torch::Tensor y = (*model)->forward(x);
    EXPECT_EQ(y.sizes(), (std::vector<int64_t>{2, 7}));
    y.sum().backward();
  }
  (*model)->eval();
  torch::NoGradGuard no_grad;
  EXPECT_EQ((*model)->forward(x).sizes(), (std::vector<int64_t>{2, 7}));
  auto params = (*model)->named_parameters();
  for (const auto& key : (*model)->HeadKeys()) EXPECT_NE(params.find(key), nullptr) << key;
}

INSTANTIATE_TEST_SUITE_P(Families, ForwardBackwardTest,
                         ::testing::Values("resnet18", "resnet50", "densenet121", "efficientnet_b0",
                                           "vit_custom", "vit_ti_16"));

TEST_F(ModelZooTest, TorchvisionKeyNames) {
  ModelOptions options;
  options.image_size = 32;
  auto keys = [&](const std::string& name) {
    auto model = CreateModel(name, options);
    SL_CHECK(model.ok());
    std::set<std::string> k;
    for (const auto& p : (*model)->named_parameters()) k.insert(p.key());
    for (const auto& b : (*model)->named_buffers()) k.insert(b.key());
    return k;
  };
  auto r = keys("resnet50");
  for (const char* k : {"conv1.weight", "bn1.running_mean", "bn1.num_batches_tracked",
                        "layer1.0.downsample.0.weight", "layer1.0.downsample.1.running_var",
                        "layer4.2.conv3.weight", "fc.bias"}) {
    EXPECT_TRUE(r.count(k)) << k;
  }
  auto d = keys("densenet121");
  for (const char* k : {"features.conv0.weight", "features.norm0.weight",
                        "features.denseblock1.denselayer1.norm1.weight",
                        "features.denseblock4.denselayer16.conv2.weight",
                        "features.transition3.conv.weight", "features.norm5.bias", "classifier.weight"}) {
    EXPECT_TRUE(d.count(k)) << k;
  }
  auto e = keys("efficientnet_b0");
  for (const char* k : {"features.0.0.weight", "features.0.1.running_mean", "features.1.0.block.0.0.weight",
                        "features.1.0.block.1.fc1.bias", "features.2.0.block.2.fc2.weight",
                        "features.2.0.block.3.1.weight", "features.8.0.weight", "classifier.1.weight"}) {
    EXPECT_TRUE(e.count(k)) << k;
  }
  auto v = keys("vit_ti_16");
  for (const char* k : {"conv_proj.weight", "class_token", "encoder.pos_embedding",
                        "encoder.layers.encoder_layer_0.ln_1.weight",
                        "encoder.layers.encoder_layer_0.self_attention.in_proj_weight",
                        "encoder.layers.encoder_layer_0.self_attention.in_proj_bias",
                        "encoder.layers.encoder_layer_0.self_attention.out_proj.weight",
                        "encoder.layers.encoder_layer_11.mlp.0.weight",
                        "encoder.layers.encoder_layer_11.mlp.3.bias", "encoder.ln.weight",
                        "heads.head.weight"}) {
    EXPECT_TRUE(v.count(k)) << k;
  }
}

TEST_F(ModelZooTest, VitAcceptsOtherInputSizes) {
  ModelOptions options;
  options.image_size = 32;
  options.vit = {8, 32, 1, 2, 64};
  auto model = CreateModel("vit_custom", options);
  ASSERT_THAT(model, IsOk());
  (*model)->eval();
  torch::NoGradGuard no_grad;
  EXPECT_EQ((*model)->forward(torch::randn({1, 3, 48, 64})).sizes(), (std::vector<int64_t>{1, 7}));
}

TEST_F(ModelZooTest, InterpolatePositionEmbeddingKeepsTokenAndIdentity) {
  torch::Tensor pos = torch::randn({1, 1 + 16, 8});
  auto same = InterpolatePositionEmbedding(pos, 4, 4);
  ASSERT_THAT(same, IsOk());
  EXPECT_TRUE(torch::equal(*same, pos));
  auto bigger = InterpolatePositionEmbedding(pos, 6, 6);
  ASSERT_THAT(bigger, IsOk());
  EXPECT_EQ(bigger->sizes(), (std::vector<int64_t>{1, 37, 8}));
  EXPECT_TRUE(torch::equal(bigger->select(1, 0), pos.select(1, 0)));
  // Corners are preserved with align_corners=True.
  EXPECT_TRUE(torch::allclose(bigger->select(1, 1), pos.select(1, 1), 1e-5, 1e-5));
  EXPECT_THAT(InterpolatePositionEmbedding(torch::randn({1, 1 + 15, 8}), 4, 4),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("square")));
}

TEST_F(ModelZooTest, StatsCountParametersAndMacs) {
  ModelOptions options;
  options.num_classes = 1000;
  auto stats = ComputeModelStats("resnet18", options);
  ASSERT_THAT(stats, IsOk());
  EXPECT_EQ(stats->parameters, 11689512);
  // torchvision reports 1.81 GFLOPS (GMACs) for resnet18 at 224.
  EXPECT_NEAR(stats->macs / 1e9, 1.81, 0.02);
  options.num_classes = 7;
  options.image_size = 32;
  EXPECT_THAT(ComputeModelStats("nope", options), StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("nope")));
}

TEST_F(ModelZooTest, FormatModelTable) {
  const std::string table = FormatModelTable(224, {"resnet18", "bogus"});
  EXPECT_THAT(table, HasSubstr("GFLOPs"));
  EXPECT_THAT(table, HasSubstr("(224x224, 7 classes)"));
  EXPECT_THAT(table, ::testing::ContainsRegex("resnet18 +11\\.18 +1\\.8[0-9] +3\\.6[0-9]"));
  EXPECT_THAT(table, HasSubstr("unknown architecture"));
}

}  // namespace
}  // namespace skinlesion::models
