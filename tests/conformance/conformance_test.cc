// Model-zoo conformance with torchvision 0.14 (see make_reference.py):
//  - torchvision -> C++: seeded random weights saved by Python as .safetensors and
//    torch.save .pth (and timm / Hugging Face renamed ViTs) load into our modules
//    and reproduce torchvision's eval-mode logits;
//  - C++ -> torchvision: checkpoints written by SaveCheckpoint load into
//    torchvision with load_state_dict(strict=True) and give our logits.
// Tolerance: max |diff| <= 1e-4 * max(1, max |logit|).
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <sstream>

#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include "gtest/gtest.h"
#include "skinlesion/common/csv.h"
#include "skinlesion/models/model_zoo.h"
#include "skinlesion/models/safetensors.h"
#include "skinlesion/models/state_dict.h"
#include "skinlesion/testing/testing.h"

namespace skinlesion::models {
namespace {

using ::skinlesion::testing::IsOk;
using ::skinlesion::testing::SourcePath;
using ::skinlesion::testing::TempDir;

std::string Python() {
  const char* p = std::getenv("SKINLESION_PYTHON");
  return p != nullptr ? p : "/usr/bin/python3";
}

bool SlowEnabled() {
  const char* p = std::getenv("SKINLESION_CONFORMANCE_SLOW");
  return p != nullptr && std::string(p) == "1";
}

// Runs make_reference.py with `args`; returns its exit status, output in *log.
int RunScript(const std::string& args, const std::string& log_path, std::string* log) {
  const std::string cmd = Python() + " " + SourcePath("tests/conformance/make_reference.py") + " " + args + " > " +
                          log_path + " 2>&1";
  const int rc = std::system(cmd.c_str());
  auto text = ReadFileToString(log_path, 1 << 20);
  *log = text.ok() ? *text : "";
  return rc;
}

double Tolerance(const torch::Tensor& y) { return 1e-4 * std::max(1.0, y.abs().max().item<double>()); }

struct Result {
  double max_diff = -1;
  double tolerance = 0;
};

// Loads OUT/<case>.<ext> into a fresh model and compares with OUT/<case>_io.
Result CheckCase(const std::string& dir, const nlohmann::json& c, const std::string& ext) {
  const std::string name = c["case"];
  ModelOptions options;
  options.num_classes = c["num_classes"];
  options.image_size = c["image_size"];
  if (c.contains("vit") && !c["vit"].is_null()) {
    options.vit = {c["vit"]["patch_size"], c["vit"]["hidden_dim"], c["vit"]["num_layers"], c["vit"]["num_heads"],
                   c["vit"]["mlp_dim"]};
  }
  auto model = CreateModel(c["architecture"].get<std::string>(), options);
  EXPECT_THAT(model, IsOk());
  if (!model.ok()) return {};
  LoadOptions strict;
  strict.replace_head_on_class_mismatch = false;
  auto report = LoadWeightsFile(**model, dir + "/" + name + ext, strict);
  EXPECT_THAT(report, IsOk()) << name << ext;
  if (!report.ok()) return {};
  auto io = ReadSafetensors(dir + "/" + name + "_io.safetensors");
  EXPECT_THAT(io, IsOk());
  if (!io.ok()) return {};
  (*model)->eval();
  torch::NoGradGuard no_grad;
  const torch::Tensor& y = io->tensors.at("y");
  const torch::Tensor out = (*model)->forward(io->tensors.at("x"));
  Result r;
  r.max_diff = (out - y).abs().max().item<double>();
  r.tolerance = Tolerance(y);
  std::cout << "[conformance] " << name << ext << ": max abs diff " << r.max_diff << " (tolerance " << r.tolerance
            << ", max |logit| " << y.abs().max().item<double>() << ")\n";
  EXPECT_LE(r.max_diff, r.tolerance) << name << ext;
  return r;
}

void GenerateAndCheck(const std::string& archs, const std::string& extra_args) {
  TempDir dir;
  std::string log;
  const int rc = RunScript("generate " + dir.path() + " --archs " + archs + " " + extra_args, dir.Join("log.txt"), &log);
  ASSERT_EQ(rc, 0) << "make_reference.py failed (needs " << Python() << " with torch and torchvision):\n" << log;
  auto text = ReadFileToString(dir.Join("cases.json"), 1 << 20);
  ASSERT_THAT(text, IsOk());
  const nlohmann::json cases = nlohmann::json::parse(*text);
  ASSERT_FALSE(cases.empty());
  for (const auto& c : cases) {
    SCOPED_TRACE(c["case"].get<std::string>());
    CheckCase(dir.path(), c, ".safetensors");
    CheckCase(dir.path(), c, ".pth");
  }
}

class ConformanceTest : public ::testing::Test {
 protected:
  void SetUp() override { torch::set_num_threads(2); }
};

TEST_F(ConformanceTest, TorchvisionWeightsReproduceLogits) {
  GenerateAndCheck("resnet18,resnet50,densenet121,efficientnet_b0,vit_custom,vit_ti_16", "--size 64");
}

// C++ checkpoints -> torchvision.
TEST_F(ConformanceTest, ExportedCheckpointsLoadInTorchvision) {
  TempDir dir;
  for (const std::string arch : {"resnet18", "densenet121", "efficientnet_b0", "vit_custom"}) {
    SCOPED_TRACE(arch);
    ModelOptions options;
    options.image_size = 64;
    options.vit = {16, 64, 2, 4, 128};
    auto model = CreateModel(arch, options);
    ASSERT_THAT(model, IsOk());
    torch::manual_seed(11);
    {
      torch::NoGradGuard no_grad;
      for (auto& p : (*model)->named_parameters()) {
        if (p.value().dim() >= 2) {
          p.value().normal_(0, 1.0 / std::sqrt(static_cast<double>(p.value()[0].numel())));
        } else {
          p.value().normal_(p.key().find("weight") != std::string::npos ? 1.0 : 0.0, 0.1);
        }
      }
      for (auto& b : (*model)->named_buffers()) {
        if (b.key().find("running_mean") != std::string::npos) b.value().normal_(0, 0.1);
        if (b.key().find("running_var") != std::string::npos) b.value().uniform_(0.5, 1.5);
      }
    }
    (*model)->eval();
    torch::Tensor x = torch::randn({2, 3, 64, 64});
    torch::Tensor y;
    {
      torch::NoGradGuard no_grad;
      y = (*model)->forward(x);
    }
    const std::string ckpt = dir.Join(arch);
    ASSERT_THAT(SaveCheckpoint(**model, ckpt, 64, {"akiec", "bcc", "bkl", "df", "mel", "nv", "vasc"}, options.vit),
                IsOk());
    ASSERT_THAT(WriteSafetensors(dir.Join(arch + "_io.safetensors"), {{"x", x}, {"y", y}}), IsOk());
    std::string log;
    const int rc = RunScript("verify " + ckpt + " " + dir.Join(arch + "_io.safetensors"), dir.Join("log.txt"), &log);
    std::cout << "[export] " << log;
    EXPECT_EQ(rc, 0) << log;
  }
}

TEST_F(ConformanceTest, SlowLargeArchitectures) {
  if (!SlowEnabled()) GTEST_SKIP() << "set SKINLESION_CONFORMANCE_SLOW=1 (ctest -L slow)";
  // One architecture per run keeps the temporary disk use to one model's files.
  for (const std::string arch : {"resnet34", "resnet101", "resnet152", "densenet169", "densenet201",
                                 "efficientnet_b1", "efficientnet_b2", "efficientnet_b3", "efficientnet_b4",
                                 "vgg16_bn", "vgg19_bn", "vit_s_16"}) {
    SCOPED_TRACE(arch);
    GenerateAndCheck(arch, "--size 64");
  }
}

TEST_F(ConformanceTest, SlowFullSizeVitB16) {
  if (!SlowEnabled()) GTEST_SKIP() << "set SKINLESION_CONFORMANCE_SLOW=1 (ctest -L slow)";
  GenerateAndCheck("vit_b_16", "--full_vit");
}

}  // namespace
}  // namespace skinlesion::models
