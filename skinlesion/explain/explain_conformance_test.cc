// Explanation heatmaps against torchvision 0.14 (make_explain_reference.py): the
// same seeded random weights and input; Grad-CAM from forward/backward hooks,
// attention rollout from torchvision's encoder blocks run with need_weights=True.
// Tolerance: max |diff| <= 1e-3 on heat in [0, 1]; logits as the model-zoo
// conformance (1e-4 * max(1, max |logit|)).
#include <cstdlib>
#include <iostream>

#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include "gtest/gtest.h"
#include "skinlesion/common/csv.h"
#include "skinlesion/explain/explain.h"
#include "skinlesion/models/model_zoo.h"
#include "skinlesion/models/safetensors.h"
#include "skinlesion/models/state_dict.h"
#include "skinlesion/testing/testing.h"

namespace skinlesion::explain {
namespace {

using ::skinlesion::testing::IsOk;
using ::skinlesion::testing::SourcePath;
using ::skinlesion::testing::TempDir;

constexpr double kHeatTolerance = 1e-3;

std::string Python() {
  const char* p = std::getenv("SKINLESION_PYTHON");
  return p != nullptr ? p : "/usr/bin/python3";
}

bool SlowEnabled() {
  const char* p = std::getenv("SKINLESION_CONFORMANCE_SLOW");
  return p != nullptr && std::string(p) == "1";
}

double MaxAbsDiff(const std::vector<float>& a, const torch::Tensor& b) {
  const torch::Tensor t = torch::tensor(a).reshape(b.sizes());
  return (t - b.to(torch::kFloat32)).abs().max().item<double>();
}

void CheckCase(const std::string& dir, const nlohmann::json& c) {
  const std::string name = c["case"];
  SCOPED_TRACE(name);
  models::ModelOptions options;
  options.num_classes = c["num_classes"];
  options.image_size = c["image_size"];
  if (!c["vit"].is_null()) {
    options.vit = {c["vit"]["patch_size"], c["vit"]["hidden_dim"], c["vit"]["num_layers"],
                   c["vit"]["num_heads"], c["vit"]["mlp_dim"]};
  }
  auto model = models::CreateModel(c["architecture"].get<std::string>(), options);
  ASSERT_THAT(model, IsOk());
  models::LoadOptions strict;
  strict.replace_head_on_class_mismatch = false;
  ASSERT_THAT(models::LoadWeightsFile(**model, dir + "/" + name + ".safetensors", strict), IsOk());
  (*model)->eval();
  auto io = models::ReadSafetensors(dir + "/" + name + "_io.safetensors");
  ASSERT_THAT(io, IsOk());
  const torch::Tensor& x = io->tensors.at("x");
  const torch::Tensor& logits = io->tensors.at("logits");
  const double logit_tolerance = 1e-4 * std::max(1.0, logits.abs().max().item<double>());
  const std::string method = c["method"];

  std::vector<std::pair<std::string, int64_t>> maps;  // reference key, target
  if (method == kAttentionRollout) {
    maps.emplace_back("heat", 0);
  } else {
    for (int64_t t : c["targets"]) maps.emplace_back("heat_" + std::to_string(t), t);
  }
  int nonzero = 0;
  for (const auto& [key, target] : maps) {
    const torch::Tensor& expected = io->tensors.at(key);
    if (expected.max().item<double>() > 0) ++nonzero;
    absl::StatusOr<Heatmap> heat = Explain(**model, x, target);
    ASSERT_THAT(heat, IsOk()) << key;
    EXPECT_EQ(heat->method, method);
    ASSERT_EQ(heat->height, expected.size(0));
    ASSERT_EQ(heat->width, expected.size(1));
    const double diff = MaxAbsDiff(heat->heat, expected);
    const double logit_diff = MaxAbsDiff(heat->logits, logits[0]);
    std::cout << "[explain-conformance] " << name << " " << key << " (" << heat->height << "x"
              << heat->width << ", reference mean " << expected.mean().item<double>()
              << ", ours " << torch::tensor(heat->heat).mean().item<double>()
              << "): max abs diff " << diff << ", logits " << logit_diff << "\n";
    EXPECT_LE(diff, kHeatTolerance) << key;
    EXPECT_LE(logit_diff, logit_tolerance) << key;
  }
  // Random weights can zero a class's Grad-CAM map; the case must still test something.
  EXPECT_GE(nonzero, std::min<int>(2, static_cast<int>(maps.size())));
}

void GenerateAndCheck(const std::string& cases) {
  TempDir dir;
  const std::string log_path = dir.Join("log.txt");
  const std::string cmd = Python() + " " + SourcePath("skinlesion/explain/make_explain_reference.py") + " " +
                          dir.path() + " --cases " + cases + " > " + log_path + " 2>&1";
  const int rc = std::system(cmd.c_str());
  auto log = ReadFileToString(log_path, 1 << 20);
  ASSERT_EQ(rc, 0) << "make_explain_reference.py failed (needs " << Python()
                   << " with torch and torchvision):\n"
                   << (log.ok() ? *log : "");
  auto text = ReadFileToString(dir.Join("cases.json"), 1 << 20);
  ASSERT_THAT(text, IsOk());
  const nlohmann::json json = nlohmann::json::parse(*text);
  ASSERT_FALSE(json.empty());
  for (const auto& c : json) CheckCase(dir.path(), c);
}

class ExplainConformanceTest : public ::testing::Test {
 protected:
  void SetUp() override { torch::set_num_threads(2); }
};

TEST_F(ExplainConformanceTest, MatchesTorchvisionHooksAndRollout) {
  GenerateAndCheck("resnet18:112,densenet121:96,efficientnet_b0:96,vit_custom:64,vit_ti_16:64");
}

TEST_F(ExplainConformanceTest, SlowLargeModels) {
  if (!SlowEnabled()) GTEST_SKIP() << "set SKINLESION_CONFORMANCE_SLOW=1 (ctest -L slow)";
  GenerateAndCheck("resnet50:224,vgg16_bn:64,vit_b_16:224");
}

}  // namespace
}  // namespace skinlesion::explain
