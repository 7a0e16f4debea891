#include "skinlesion/models/state_dict.h"

#include <filesystem>
#include <fstream>

#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "skinlesion/common/csv.h"
#include "skinlesion/common/logging.h"
#include "skinlesion/common/status.h"
#include "skinlesion/models/pth_reader.h"
#include "skinlesion/models/safetensors.h"
#include "skinlesion/models/weight_names.h"

namespace skinlesion::models {
namespace {

std::string Shape(const torch::Tensor& t) { return absl::StrCat("[", absl::StrJoin(t.sizes(), ", "), "]"); }

}  // namespace

TensorMap GetStateDict(const torch::nn::Module& module) {
  TensorMap out;
  for (const auto& p : module.named_parameters()) out[p.key()] = p.value().detach();
  for (const auto& b : module.named_buffers()) out[b.key()] = b.value().detach();
  return out;
}

absl::StatusOr<LoadReport> LoadStateDict(Classifier& model, TensorMap state, const LoadOptions& options) {
  if (options.adapt) SL_RETURN_IF_ERROR(model.AdaptStateDict(state));
  TensorMap targets = GetStateDict(model);
  LoadReport report;

  const std::vector<std::string> head = model.HeadKeys();
  if (options.replace_head_on_class_mismatch && !head.empty()) {
    auto ck = state.find(head[0]);
    auto mine = targets.find(head[0]);
    if (ck != state.end() && mine != targets.end() && ck->second.dim() == 2 && mine->second.dim() == 2 &&
        ck->second.size(1) == mine->second.size(1) && ck->second.size(0) != mine->second.size(0)) {
      SL_LOG(INFO) << "replacing the classification head of " << model.architecture() << ": checkpoint has "
                   << ck->second.size(0) << " classes, model " << mine->second.size(0)
                   << " (keeping the new head's initialisation)";
      for (const auto& key : head) {
        auto it = state.find(key);
        auto t = targets.find(key);
        if (it != state.end() && t != targets.end() && it->second.dim() >= 1 && it->second.size(0) == ck->second.size(0)) {
          state.erase(it);
          targets.erase(t);
        }
      }
      report.head_replaced = true;
    }
  }

  std::vector<std::string> missing, unexpected, mismatched;
  for (const auto& [name, target] : targets) {
    auto it = state.find(name);
    if (it == state.end()) {
      if (absl::EndsWith(name, ".num_batches_tracked")) {
        report.defaulted.push_back(name);
      } else {
        missing.push_back(name);
      }
    } else if (it->second.sizes() != target.sizes()) {
      mismatched.push_back(absl::StrCat(name, " (checkpoint ", Shape(it->second), ", model ", Shape(target), ")"));
    }
  }
  for (const auto& [name, t] : state) {
    if (!targets.count(name)) unexpected.push_back(name);
  }
  if (!missing.empty() || !unexpected.empty() || !mismatched.empty()) {
    std::string message = absl::StrCat("state dict does not match ", model.architecture(), ":");
    if (!missing.empty()) absl::StrAppend(&message, " missing ", missing.size(), ": ", absl::StrJoin(missing, ", "), ";");
    if (!unexpected.empty()) {
      absl::StrAppend(&message, " unexpected ", unexpected.size(), ": ", absl::StrJoin(unexpected, ", "), ";");
    }
    if (!mismatched.empty()) {
      absl::StrAppend(&message, " shape mismatch ", mismatched.size(), ": ", absl::StrJoin(mismatched, ", "), ";");
    }
    message.pop_back();
    return absl::InvalidArgumentError(message);
  }
  torch::NoGradGuard no_grad;
  for (auto& [name, target] : targets) {
    auto it = state.find(name);
    if (it == state.end()) {
      target.zero_();  // num_batches_tracked
      continue;
    }
    target.copy_(it->second);
    ++report.loaded;
  }
  return report;
}

absl::StatusOr<TensorMap> ReadWeightsFile(const std::string& path) {
  char magic[4] = {};
  {
    std::ifstream in(path, std::ios::binary);
    if (!in) return absl::NotFoundError(absl::StrCat("cannot open ", path));
    in.read(magic, 4);
  }
  TensorMap raw;
  if (std::memcmp(magic, "PK\x03\x04", 4) == 0) {
    SL_ASSIGN_OR_RETURN(raw, ReadPth(path));
  } else {
    SL_ASSIGN_OR_RETURN(Safetensors st, ReadSafetensors(path));
    raw = std::move(st.tensors);
  }
  auto converted = ConvertToTorchvision(std::move(raw));
  if (!converted.ok()) return Annotate(converted.status(), path);
  return converted;
}

absl::StatusOr<LoadReport> LoadWeightsFile(Classifier& model, const std::string& path, const LoadOptions& options) {
  SL_ASSIGN_OR_RETURN(TensorMap state, ReadWeightsFile(path));
  auto report = LoadStateDict(model, std::move(state), options);
  if (!report.ok()) return Annotate(report.status(), path);
  return report;
}

absl::Status SaveCheckpoint(const Classifier& model, const std::string& dir, int64_t image_size,
                            const std::vector<std::string>& labels, const VitConfig& vit, bool fp16) {
  if (!labels.empty() && static_cast<int64_t>(labels.size()) != model.num_classes()) {
    return absl::InvalidArgumentError(absl::StrCat(labels.size(), " labels for a model of ", model.num_classes(), " classes"));
  }
  ModelManifest m;
  m.architecture = model.architecture();
  m.image_size = static_cast<int>(image_size);
  if (!labels.empty()) {
    auto classes = LabelSet::Create(labels);
    if (!classes.ok())
      return absl::InvalidArgumentError(absl::StrCat("labels: ", classes.status().message()));
    m.classes = *std::move(classes);
  } else if (model.num_classes() != LabelSet::Ham10000().size()) {
    return absl::InvalidArgumentError(absl::StrCat("labels are required for a model of ",
                                                   model.num_classes(),
                                                   " classes (without them: HAM10000's 7)"));
  }
  if (m.architecture == "vit_custom") m.vit = vit;
  // What a reader will get back: the same checks as every manifest reading.
  const std::string manifest = m.ToJson().dump(2) + "\n";
  SL_RETURN_IF_ERROR(ModelManifest::ParseText(manifest, dir + "/" + kManifestFile).status());
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) return absl::InternalError(absl::StrCat("cannot create ", dir, ": ", ec.message()));
  TensorMap state = GetStateDict(model);
  if (fp16) {
    for (auto& [name, tensor] : state) {
      if (tensor.is_floating_point()) tensor = tensor.to(torch::kCPU, torch::kHalf);
    }
  }
  SL_RETURN_IF_ERROR(WriteSafetensors(dir + "/" + kWeightsFile, state,
                                      {{"skinlesion.manifest", manifest}, {"format", "pt"}}));
  return WriteFileAtomically(dir + "/" + kManifestFile, manifest);
}

absl::StatusOr<Checkpoint> LoadCheckpoint(const std::string& dir) {
  const std::string path = dir + "/" + kManifestFile;
  SL_ASSIGN_OR_RETURN(std::string text, ReadFileToString(path, size_t{1} << 20));
  SL_ASSIGN_OR_RETURN(ModelManifest manifest, ModelManifest::ParseText(text, path));
  ModelOptions options;
  options.num_classes = manifest.classes.size();
  options.image_size = manifest.image_size;
  options.vit = manifest.vit.value_or(VitConfig{});
  SL_ASSIGN_OR_RETURN(std::shared_ptr<Classifier> model,
                      CreateModel(manifest.architecture, options));
  SL_ASSIGN_OR_RETURN(Safetensors st, ReadSafetensors(dir + "/" + kWeightsFile));
  LoadOptions strict;
  strict.replace_head_on_class_mismatch = false;
  auto report = LoadStateDict(*model, std::move(st.tensors), strict);
  if (!report.ok()) return Annotate(report.status(), dir);
  model->eval();
  return Checkpoint{std::move(manifest), std::move(model)};
}

}  // namespace skinlesion::models
