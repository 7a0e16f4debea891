// Converting other projects' ViT checkpoints to torchvision names.
//
//   timm  (vit_base_patch16_224.augreg_in21k ...): patch_embed.proj, cls_token,
//         pos_embed, blocks.N.{norm1, attn.qkv, attn.proj, norm2, mlp.fc1, mlp.fc2},
//         norm, head
//   Hugging Face (google/vit-base-patch16-224-in21k ...): [vit.]embeddings.{cls_token,
//         position_embeddings, patch_embeddings.projection},
//         [vit.]encoder.layer.N.{attention.attention.{query,key,value},
//         attention.output.dense, intermediate.dense, output.dense,
//         layernorm_before, layernorm_after}, [vit.]layernorm, classifier
//
// q/k/v are concatenated into in_proj_weight/in_proj_bias (timm's qkv already is
// that layout); a class token stored as [D] or [1, D] becomes [1, 1, D]; position
// embeddings without the class position ([1, g*g, D], timm's no_embed_class) get a
// zero class row. HF's pooler (unused by classification) is dropped with a log
// line. Note HF ViTs use LayerNorm eps 1e-12 where torchvision uses 1e-6: logits
// differ slightly (well under 1e-3 in practice).
#ifndef SKINLESION_MODELS_WEIGHT_NAMES_H_
#define SKINLESION_MODELS_WEIGHT_NAMES_H_

#include "absl/status/statusor.h"
#include "skinlesion/models/classifier.h"

namespace skinlesion::models {

enum class WeightLayout { kTorchvision, kTimmVit, kHuggingFaceVit };
const char* WeightLayoutName(WeightLayout layout);

// From the keys (after stripping a DataParallel "module." prefix).
WeightLayout DetectWeightLayout(const TensorMap& state);

// Detects the layout and converts to torchvision names; also strips a "module."
// prefix present on every key. Torchvision input is returned unchanged.
// Inconsistent input (q without k, a layer index that does not parse) ->
// InvalidArgument.
absl::StatusOr<TensorMap> ConvertToTorchvision(TensorMap state);

}  // namespace skinlesion::models

#endif  // SKINLESION_MODELS_WEIGHT_NAMES_H_
