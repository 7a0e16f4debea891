#include "skinlesion/models/weight_names.h"

#include <torch/torch.h>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "skinlesion/common/logging.h"
#include "skinlesion/common/status.h"

namespace skinlesion::models {
namespace {

bool HasKeyEndingWith(const TensorMap& state, absl::string_view suffix) {
  for (const auto& [k, v] : state) {
    if (absl::EndsWith(k, suffix)) return true;
  }
  return false;
}

TensorMap StripModulePrefix(TensorMap state) {
  if (state.empty()) return state;
  for (const auto& [k, v] : state) {
    if (!absl::StartsWith(k, "module.")) return state;
  }
  TensorMap out;
  for (auto& [k, v] : state) out[k.substr(7)] = v;
  return out;
}

std::string Layer(int64_t n) { return absl::StrCat("encoder.layers.encoder_layer_", n, "."); }

absl::Status FixClassToken(TensorMap& out) {
  auto it = out.find("class_token");
  if (it == out.end()) return absl::OkStatus();
  torch::Tensor t = it->second;
  if (t.dim() == 1) t = t.reshape({1, 1, t.size(0)});
  if (t.dim() == 2 && t.size(0) == 1) t = t.unsqueeze(0);
  it->second = t;
  return absl::OkStatus();
}

absl::Status FixPositionEmbedding(TensorMap& out) {
  auto it = out.find("encoder.pos_embedding");
  if (it == out.end()) return absl::OkStatus();
  torch::Tensor t = it->second;
  if (t.dim() == 2) t = t.unsqueeze(0);
  if (t.dim() == 3) {
    const int64_t n = t.size(1);
    const auto side = static_cast<int64_t>(std::llround(std::sqrt(static_cast<double>(n))));
    if (side * side == n) {  // No class position: prepend a zero row.
      SL_LOG(INFO) << "position embedding of " << n << " patches has no class position; adding a zero one";
      t = torch::cat({torch::zeros({1, 1, t.size(2)}, t.options()), t}, 1);
    }
  }
  it->second = t;
  return absl::OkStatus();
}

// "blocks.3.attn.qkv.weight" -> (3, "attn.qkv.weight") after `prefix`.
bool SplitLayer(absl::string_view key, absl::string_view prefix, int64_t* n, std::string* rest) {
  if (!absl::StartsWith(key, prefix)) return false;
  key.remove_prefix(prefix.size());
  const size_t dot = key.find('.');
  if (dot == absl::string_view::npos) return false;
  if (!absl::SimpleAtoi(key.substr(0, dot), n) || *n < 0) return false;
  *rest = std::string(key.substr(dot + 1));
  return true;
}

absl::StatusOr<TensorMap> FromTimm(const TensorMap& state) {
  const std::map<std::string, std::string> top = {
      {"patch_embed.proj.weight", "conv_proj.weight"}, {"patch_embed.proj.bias", "conv_proj.bias"},
      {"cls_token", "class_token"},                    {"pos_embed", "encoder.pos_embedding"},
      {"norm.weight", "encoder.ln.weight"},            {"norm.bias", "encoder.ln.bias"},
      {"head.weight", "heads.head.weight"},            {"head.bias", "heads.head.bias"},
  };
  const std::map<std::string, std::string> block = {
      {"norm1.weight", "ln_1.weight"},
      {"norm1.bias", "ln_1.bias"},
      {"attn.qkv.weight", "self_attention.in_proj_weight"},
      {"attn.qkv.bias", "self_attention.in_proj_bias"},
      {"attn.proj.weight", "self_attention.out_proj.weight"},
      {"attn.proj.bias", "self_attention.out_proj.bias"},
      {"norm2.weight", "ln_2.weight"},
      {"norm2.bias", "ln_2.bias"},
      {"mlp.fc1.weight", "mlp.0.weight"},
      {"mlp.fc1.bias", "mlp.0.bias"},
      {"mlp.fc2.weight", "mlp.3.weight"},
      {"mlp.fc2.bias", "mlp.3.bias"},
  };
  TensorMap out;
  for (const auto& [key, value] : state) {
    int64_t n;
    std::string rest;
    if (auto it = top.find(key); it != top.end()) {
      out[it->second] = value;
    } else if (SplitLayer(key, "blocks.", &n, &rest) && block.count(rest)) {
      out[Layer(n) + block.at(rest)] = value;
    } else {
      out[key] = value;  // Left for LoadStateDict to report as unexpected.
    }
  }
  SL_RETURN_IF_ERROR(FixClassToken(out));
  SL_RETURN_IF_ERROR(FixPositionEmbedding(out));
  return out;
}

absl::StatusOr<TensorMap> FromHuggingFace(const TensorMap& state) {
  const std::map<std::string, std::string> top = {
      {"embeddings.cls_token", "class_token"},
      {"embeddings.position_embeddings", "encoder.pos_embedding"},
      {"embeddings.patch_embeddings.projection.weight", "conv_proj.weight"},
      {"embeddings.patch_embeddings.projection.bias", "conv_proj.bias"},
      {"layernorm.weight", "encoder.ln.weight"},
      {"layernorm.bias", "encoder.ln.bias"},
      {"classifier.weight", "heads.head.weight"},
      {"classifier.bias", "heads.head.bias"},
  };
  const std::map<std::string, std::string> block = {
      {"attention.output.dense.weight", "self_attention.out_proj.weight"},
      {"attention.output.dense.bias", "self_attention.out_proj.bias"},
      {"intermediate.dense.weight", "mlp.0.weight"},
      {"intermediate.dense.bias", "mlp.0.bias"},
      {"output.dense.weight", "mlp.3.weight"},
      {"output.dense.bias", "mlp.3.bias"},
      {"layernorm_before.weight", "ln_1.weight"},
      {"layernorm_before.bias", "ln_1.bias"},
      {"layernorm_after.weight", "ln_2.weight"},
      {"layernorm_after.bias", "ln_2.bias"},
  };
  // (layer, "weight"/"bias") -> q, k, v
  std::map<std::pair<int64_t, std::string>, std::array<torch::Tensor, 3>> qkv;
  TensorMap out;
  for (const auto& [full_key, value] : state) {
    absl::string_view key = full_key;
    if (absl::StartsWith(key, "vit.")) key.remove_prefix(4);
    int64_t n;
    std::string rest;
    if (auto it = top.find(std::string(key)); it != top.end()) {
      out[it->second] = value;
    } else if (absl::StartsWith(key, "pooler.")) {
      SL_LOG(INFO) << "dropping Hugging Face pooler tensor " << full_key;
    } else if (SplitLayer(key, "encoder.layer.", &n, &rest)) {
      if (auto b = block.find(rest); b != block.end()) {
        out[Layer(n) + b->second] = value;
        continue;
      }
      bool matched = false;
      const char* names[] = {"query", "key", "value"};
      for (int i = 0; i < 3 && !matched; ++i) {
        for (const char* kind : {"weight", "bias"}) {
          if (rest == absl::StrCat("attention.attention.", names[i], ".", kind)) {
            qkv[{n, kind}][i] = value;
            matched = true;
            break;
          }
        }
      }
      if (!matched) out[full_key] = value;
    } else {
      out[full_key] = value;
    }
  }
  for (auto& [where, parts] : qkv) {
    for (int i = 0; i < 3; ++i) {
      if (!parts[i].defined()) {
        return absl::InvalidArgumentError(absl::StrCat("Hugging Face ViT layer ", where.first, " has no ",
                                                       i == 0 ? "query" : (i == 1 ? "key" : "value"), " ",
                                                       where.second));
      }
    }
    if (parts[0].sizes() != parts[1].sizes() || parts[0].sizes() != parts[2].sizes()) {
      return absl::InvalidArgumentError(
          absl::StrCat("Hugging Face ViT layer ", where.first, ": query/key/value ", where.second, " shapes differ"));
    }
    out[Layer(where.first) + "self_attention.in_proj_" + where.second] = torch::cat({parts[0], parts[1], parts[2]}, 0);
  }
  SL_RETURN_IF_ERROR(FixClassToken(out));
  SL_RETURN_IF_ERROR(FixPositionEmbedding(out));
  return out;
}

}  // namespace

const char* WeightLayoutName(WeightLayout layout) {
  switch (layout) {
    case WeightLayout::kTorchvision: return "torchvision";
    case WeightLayout::kTimmVit: return "timm ViT";
    case WeightLayout::kHuggingFaceVit: return "Hugging Face ViT";
  }
  return "?";
}

WeightLayout DetectWeightLayout(const TensorMap& raw) {
  const TensorMap state = StripModulePrefix(raw);
  if (state.count("patch_embed.proj.weight") || HasKeyEndingWith(state, ".attn.qkv.weight") ||
      state.count("cls_token")) {
    return WeightLayout::kTimmVit;
  }
  if (HasKeyEndingWith(state, "embeddings.patch_embeddings.projection.weight") ||
      HasKeyEndingWith(state, ".attention.attention.query.weight")) {
    return WeightLayout::kHuggingFaceVit;
  }
  return WeightLayout::kTorchvision;
}

absl::StatusOr<TensorMap> ConvertToTorchvision(TensorMap raw) {
  TensorMap state = StripModulePrefix(std::move(raw));
  const WeightLayout layout = DetectWeightLayout(state);
  switch (layout) {
    case WeightLayout::kTorchvision:
      return state;
    case WeightLayout::kTimmVit:
      SL_LOG(INFO) << "converting timm ViT names to torchvision";
      return FromTimm(state);
    case WeightLayout::kHuggingFaceVit:
      SL_LOG(INFO) << "converting Hugging Face ViT names to torchvision";
      return FromHuggingFace(state);
  }
  return state;
}

}  // namespace skinlesion::models
