#include "skinlesion/models/model_zoo.h"

#include <cstdio>

#include <torch/torch.h>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "skinlesion/models/densenet.h"
#include "skinlesion/models/efficientnet.h"
#include "skinlesion/models/layers.h"
#include "skinlesion/models/resnet.h"
#include "skinlesion/models/vgg.h"
#include "skinlesion/models/vit.h"

namespace skinlesion::models {

absl::StatusOr<std::shared_ptr<Classifier>> CreateModel(absl::string_view architecture,
                                                        const ModelOptions& options) {
  const std::string name(architecture);
  if (options.num_classes <= 0) {
    return absl::InvalidArgumentError(absl::StrCat("num_classes must be positive, got ", options.num_classes));
  }
  if (options.image_size <= 0) {
    return absl::InvalidArgumentError(absl::StrCat("image_size must be positive, got ", options.image_size));
  }
  if (options.dropout >= 1.0 || options.stochastic_depth >= 1.0 || options.attention_dropout < 0 ||
      options.attention_dropout >= 1.0) {
    return absl::InvalidArgumentError("dropout probabilities must be below 1");
  }
  const bool default_dropout = options.dropout < 0;
  if (name.rfind("resnet", 0) == 0) {
    for (int depth : {18, 34, 50, 101, 152}) {
      if (name == absl::StrCat("resnet", depth)) {
        ResNetOptions o = ResNetOptions::ForDepth(depth);
        o.num_classes = options.num_classes;
        o.dropout = default_dropout ? 0.0 : options.dropout;
        return std::make_shared<ResNetImpl>(name, o);
      }
    }
  } else if (name.rfind("densenet", 0) == 0) {
    for (int depth : {121, 169, 201}) {
      if (name == absl::StrCat("densenet", depth)) {
        DenseNetOptions o = DenseNetOptions::ForDepth(depth);
        o.num_classes = options.num_classes;
        o.dropout = default_dropout ? 0.0 : options.dropout;
        return std::make_shared<DenseNetImpl>(name, o);
      }
    }
  } else if (name.rfind("efficientnet_b", 0) == 0) {
    for (int b = 0; b <= 4; ++b) {
      if (name == absl::StrCat("efficientnet_b", b)) {
        EfficientNetOptions o = EfficientNetOptions::ForVariant(b);
        o.num_classes = options.num_classes;
        if (!default_dropout) o.dropout = options.dropout;
        if (options.stochastic_depth >= 0) o.stochastic_depth_prob = options.stochastic_depth;
        return std::make_shared<EfficientNetImpl>(name, o);
      }
    }
  } else if (name == "vgg16_bn" || name == "vgg19_bn") {
    VggOptions o;
    o.depth = name == "vgg16_bn" ? 16 : 19;
    o.num_classes = options.num_classes;
    if (!default_dropout) o.dropout = options.dropout;
    return std::make_shared<VggImpl>(name, o);
  } else if (name.rfind("vit_", 0) == 0) {
    VitOptions o;
    if (name == "vit_ti_16") {
      o = VitOptions::Tiny16();
    } else if (name == "vit_s_16") {
      o = VitOptions::Small16();
    } else if (name == "vit_b_16") {
      o = VitOptions::Base16();
    } else if (name == "vit_l_16") {
      o = VitOptions::Large16();
    } else if (name == "vit_custom") {
      const VitConfig& c = options.vit;
      if (c.patch_size <= 0 || c.hidden_dim <= 0 || c.num_layers < 0 || c.num_heads <= 0 ||
          c.mlp_dim <= 0 || c.hidden_dim % c.num_heads != 0) {
        return absl::InvalidArgumentError(absl::StrCat(
            "bad vit_custom config: patch ", c.patch_size, ", width ", c.hidden_dim, ", depth ",
            c.num_layers, ", heads ", c.num_heads, " (width must divide by heads), mlp ", c.mlp_dim));
      }
      o.patch_size = c.patch_size;
      o.hidden_dim = c.hidden_dim;
      o.num_layers = c.num_layers;
      o.num_heads = c.num_heads;
      o.mlp_dim = c.mlp_dim;
    } else {
      o.patch_size = 0;  // Unknown name; falls through below.
    }
    if (o.patch_size > 0) {
      if (options.image_size % o.patch_size != 0) {
        return absl::InvalidArgumentError(absl::StrCat("image_size ", options.image_size,
                                                       " is not a multiple of the patch size ",
                                                       o.patch_size, " of ", name));
      }
      o.image_size = options.image_size;
      o.num_classes = options.num_classes;
      o.dropout = default_dropout ? 0.0 : options.dropout;
      o.attention_dropout = options.attention_dropout;
      return std::make_shared<VisionTransformerImpl>(name, o);
    }
  }
  return absl::InvalidArgumentError(absl::StrCat("unknown architecture \"", name,
                                                 "\"; valid: ", absl::StrJoin(ListArchitectures(), ", ")));
}

ModelStats ComputeModelStats(Classifier& model, int64_t image_size) {
  ModelStats stats;
  stats.architecture = model.architecture();
  for (const auto& p : model.parameters()) stats.parameters += p.numel();
  const bool was_training = model.is_training();
  model.eval();
  {
    torch::NoGradGuard no_grad;
    FlopCounter counter;
    const torch::Device device = model.parameters().empty() ? torch::Device(torch::kCPU)
                                                            : model.parameters().front().device();
    model.forward(torch::zeros({1, 3, image_size, image_size}, torch::TensorOptions().device(device)));
    stats.macs = counter.macs();
  }
  model.train(was_training);
  return stats;
}

absl::StatusOr<ModelStats> ComputeModelStats(absl::string_view architecture, const ModelOptions& options) {
  auto model = CreateModel(architecture, options);
  if (!model.ok()) return model.status();
  return ComputeModelStats(**model, options.image_size);
}

std::string FormatModelTable(int64_t image_size, const std::vector<std::string>& architectures,
                             int64_t num_classes) {
  std::string out = absl::StrFormat("%-16s %12s %10s %10s   (%lldx%lld, %lld classes)\n",
                                    "architecture", "params (M)", "GMACs", "GFLOPs",
                                    static_cast<long long>(image_size), static_cast<long long>(image_size),
                                    static_cast<long long>(num_classes));
  ModelOptions options;
  options.num_classes = num_classes;
  options.image_size = image_size;
  for (const std::string& name : architectures) {
    auto stats = ComputeModelStats(name, options);
    if (!stats.ok()) {
      absl::StrAppend(&out, absl::StrFormat("%-16s %s\n", name, stats.status().message()));
      continue;
    }
    absl::StrAppend(&out, absl::StrFormat("%-16s %12.2f %10.2f %10.2f\n", name, stats->parameters / 1e6,
                                          stats->macs / 1e9, stats->gflops()));
  }
  return out;
}

}  // namespace skinlesion::models
