#include "skinlesion/models/weight_names.h"

#include <torch/torch.h>

#include "gtest/gtest.h"
#include "skinlesion/models/model_zoo.h"
#include "skinlesion/models/state_dict.h"
#include "skinlesion/testing/testing.h"

namespace skinlesion::models {
namespace {

using ::skinlesion::testing::IsOk;
using ::skinlesion::testing::StatusIs;
using ::testing::HasSubstr;

TEST(WeightNamesTest, TimmVitToTorchvision) {
  const int64_t d = 8;
  TensorMap timm = {
      {"patch_embed.proj.weight", torch::randn({d, 3, 4, 4})}, {"patch_embed.proj.bias", torch::randn({d})},
      {"cls_token", torch::randn({1, 1, d})},                   {"pos_embed", torch::randn({1, 5, d})},
      {"blocks.0.norm1.weight", torch::randn({d})},            {"blocks.0.attn.qkv.weight", torch::randn({3 * d, d})},
      {"blocks.0.attn.qkv.bias", torch::randn({3 * d})},       {"blocks.0.attn.proj.weight", torch::randn({d, d})},
      {"blocks.0.mlp.fc1.weight", torch::randn({16, d})},      {"blocks.0.mlp.fc2.bias", torch::randn({d})},
      {"blocks.10.norm2.bias", torch::randn({d})},             {"norm.weight", torch::randn({d})},
      {"head.weight", torch::randn({21843, d})},
  };
  EXPECT_EQ(DetectWeightLayout(timm), WeightLayout::kTimmVit);
  auto tv = ConvertToTorchvision(timm);
  ASSERT_THAT(tv, IsOk());
  EXPECT_TRUE(torch::equal(tv->at("conv_proj.weight"), timm.at("patch_embed.proj.weight")));
  EXPECT_TRUE(torch::equal(tv->at("class_token"), timm.at("cls_token")));
  EXPECT_TRUE(torch::equal(tv->at("encoder.pos_embedding"), timm.at("pos_embed")));
  EXPECT_TRUE(torch::equal(tv->at("encoder.layers.encoder_layer_0.self_attention.in_proj_weight"),
                           timm.at("blocks.0.attn.qkv.weight")));
  EXPECT_TRUE(tv->count("encoder.layers.encoder_layer_0.self_attention.out_proj.weight"));
  EXPECT_TRUE(tv->count("encoder.layers.encoder_layer_0.mlp.0.weight"));
  EXPECT_TRUE(tv->count("encoder.layers.encoder_layer_0.mlp.3.bias"));
  EXPECT_TRUE(tv->count("encoder.layers.encoder_layer_10.ln_2.bias"));
  EXPECT_TRUE(tv->count("encoder.ln.weight"));
  EXPECT_TRUE(tv->count("heads.head.weight"));
  EXPECT_EQ(tv->size(), timm.size());
}

TEST(WeightNamesTest, TimmPositionEmbeddingWithoutClassSlotAndFlatToken) {
  TensorMap timm = {{"cls_token", torch::randn({4})}, {"pos_embed", torch::randn({1, 4, 4})},
                    {"patch_embed.proj.weight", torch::randn({4, 3, 2, 2})}};
  auto tv = ConvertToTorchvision(timm);
  ASSERT_THAT(tv, IsOk());
  EXPECT_EQ(tv->at("class_token").sizes(), (std::vector<int64_t>{1, 1, 4}));
  EXPECT_EQ(tv->at("encoder.pos_embedding").sizes(), (std::vector<int64_t>{1, 5, 4}));
  EXPECT_EQ(tv->at("encoder.pos_embedding")[0][0].abs().sum().item<float>(), 0.0f);
}

TEST(WeightNamesTest, HuggingFaceVitToTorchvision) {
  const int64_t d = 8;
  TensorMap hf = {
      {"vit.embeddings.cls_token", torch::randn({1, 1, d})},
      {"vit.embeddings.position_embeddings", torch::randn({1, 5, d})},
      {"vit.embeddings.patch_embeddings.projection.weight", torch::randn({d, 3, 4, 4})},
      {"vit.encoder.layer.0.attention.attention.query.weight", torch::randn({d, d})},
      {"vit.encoder.layer.0.attention.attention.key.weight", torch::randn({d, d})},
      {"vit.encoder.layer.0.attention.attention.value.weight", torch::randn({d, d})},
      {"vit.encoder.layer.0.attention.attention.query.bias", torch::randn({d})},
      {"vit.encoder.layer.0.attention.attention.key.bias", torch::randn({d})},
      {"vit.encoder.layer.0.attention.attention.value.bias", torch::randn({d})},
      {"vit.encoder.layer.0.attention.output.dense.weight", torch::randn({d, d})},
      {"vit.encoder.layer.0.intermediate.dense.weight", torch::randn({16, d})},
      {"vit.encoder.layer.0.output.dense.weight", torch::randn({d, 16})},
      {"vit.encoder.layer.0.layernorm_before.weight", torch::randn({d})},
      {"vit.encoder.layer.0.layernorm_after.bias", torch::randn({d})},
      {"vit.layernorm.weight", torch::randn({d})},
      {"vit.pooler.dense.weight", torch::randn({d, d})},
      {"classifier.weight", torch::randn({2, d})},
  };
  EXPECT_EQ(DetectWeightLayout(hf), WeightLayout::kHuggingFaceVit);
  auto tv = ConvertToTorchvision(hf);
  ASSERT_THAT(tv, IsOk());
  const std::string l0 = "encoder.layers.encoder_layer_0.";
  EXPECT_TRUE(torch::equal(tv->at(l0 + "self_attention.in_proj_weight"),
                           torch::cat({hf.at("vit.encoder.layer.0.attention.attention.query.weight"),
                                       hf.at("vit.encoder.layer.0.attention.attention.key.weight"),
                                       hf.at("vit.encoder.layer.0.attention.attention.value.weight")})));
  EXPECT_EQ(tv->at(l0 + "self_attention.in_proj_bias").sizes(), (std::vector<int64_t>{3 * d}));
  for (const char* k : {"self_attention.out_proj.weight", "mlp.0.weight", "mlp.3.weight", "ln_1.weight", "ln_2.bias"}) {
    EXPECT_TRUE(tv->count(l0 + k)) << k;
  }
  EXPECT_TRUE(tv->count("class_token"));
  EXPECT_TRUE(tv->count("encoder.pos_embedding"));
  EXPECT_TRUE(tv->count("conv_proj.weight"));
  EXPECT_TRUE(tv->count("encoder.ln.weight"));
  EXPECT_TRUE(tv->count("heads.head.weight"));
  EXPECT_FALSE(tv->count("vit.pooler.dense.weight"));
}

TEST(WeightNamesTest, HuggingFaceMissingKeyIsAnError) {
  TensorMap hf = {{"vit.embeddings.patch_embeddings.projection.weight", torch::randn({4, 3, 2, 2})},
                  {"vit.encoder.layer.2.attention.attention.query.weight", torch::randn({4, 4})}};
  EXPECT_THAT(ConvertToTorchvision(hf), StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("layer 2 has no key weight")));
}

TEST(WeightNamesTest, StripsDataParallelPrefixAndKeepsTorchvision) {
  TensorMap sd = {{"module.fc.weight", torch::ones({2, 2})}, {"module.fc.bias", torch::ones({2})}};
  auto tv = ConvertToTorchvision(sd);
  ASSERT_THAT(tv, IsOk());
  EXPECT_TRUE(tv->count("fc.weight"));
  EXPECT_EQ(DetectWeightLayout(*tv), WeightLayout::kTorchvision);
}

}  // namespace
}  // namespace skinlesion::models
