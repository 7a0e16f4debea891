#include "skinlesion/models/numerics.h"

#include <ATen/autocast_mode.h>
#include <torch/torch.h>

#include "absl/strings/str_cat.h"
#include "skinlesion/common/cpu_features.h"

namespace skinlesion::models {

std::string Numerics::Describe() const {
  std::string s(PrecisionName(precision));
  if (channels_last) s += ", channels-last";
  return s;
}

Numerics ChooseNumerics(PrecisionChoice choice, const Classifier& model,
                        const torch::Device& device, std::optional<Precision> pinned,
                        std::optional<bool> native_bf16) {
  PrecisionContext context;
  context.cuda = device.is_cuda();
  context.native_bf16 = native_bf16.value_or(CpuFeaturesForThisProcess().native_bf16());
  context.pinned = pinned;
  const PrecisionDecision decision = ResolvePrecision(choice, context);
  Numerics n;
  n.precision = decision.precision;
  n.reason = decision.reason;
  // Every CNN of the zoo has a feature map; the ViT has none and no 4-D activations
  // past its patch projection.
  n.channels_last = n.precision == Precision::kBf16 && model.HasFeatureMap();
  return n;
}

namespace {

void Convert(torch::Tensor& t, const Numerics& numerics) {
  if (!t.defined() || !t.is_floating_point()) return;
  torch::Tensor converted = t.to(numerics.dtype());
  if (numerics.channels_last && converted.dim() == 4) {
    converted = converted.contiguous(torch::MemoryFormat::ChannelsLast);
  }
  t.set_data(converted);
}

}  // namespace

void PrepareModel(Classifier& model, const Numerics& numerics) {
  torch::NoGradGuard no_grad;
  for (torch::Tensor& p : model.parameters(/*recurse=*/true)) Convert(p, numerics);
  for (torch::Tensor& b : model.buffers(/*recurse=*/true)) Convert(b, numerics);
}

absl::StatusOr<Numerics> PrepareForInference(Classifier& model, PrecisionChoice choice,
                                             const torch::Device& device,
                                             std::optional<Precision> pinned) {
  Numerics numerics = ChooseNumerics(choice, model, device, pinned);
  try {
    PrepareModel(model, numerics);
  } catch (const c10::Error& e) {
    return absl::InternalError(
        absl::StrCat("converting to ", numerics.Describe(), ": ", e.what_without_backtrace()));
  }
  return numerics;
}

void ToChannelsLast(Classifier& model) {
  torch::NoGradGuard no_grad;
  for (torch::Tensor& p : model.parameters(/*recurse=*/true)) {
    if (p.dim() == 4) p.set_data(p.contiguous(torch::MemoryFormat::ChannelsLast));
  }
}

torch::Tensor PrepareInput(const torch::Tensor& x, const Numerics& numerics,
                           const torch::Device& device) {
  torch::Tensor y = x.to(device, numerics.dtype());
  if (numerics.channels_last && y.dim() == 4) y = y.contiguous(torch::MemoryFormat::ChannelsLast);
  return y;
}

torch::Tensor ForwardLogits(Classifier& model, const torch::Tensor& x, const Numerics& numerics,
                            const torch::Device& device) {
  return model.forward(PrepareInput(x, numerics, device))
      .to(torch::kCPU, torch::kFloat32)
      .contiguous();
}

torch::Tensor TtaView(const torch::Tensor& x, Tta tta, int view) {
  TORCH_CHECK(view >= 0 && view < TtaViewCount(tta), "test-time view ", view, " out of range for ",
              std::string(TtaName(tta)));
  TORCH_CHECK(x.dim() == 4, "test-time views need an [N, C, H, W] batch");
  torch::Tensor y = x;
  if (view >= 4) {
    TORCH_CHECK(x.size(2) == x.size(3), "dihedral test-time views need square images, not ",
                x.size(2), "x", x.size(3));
    y = y.transpose(2, 3);
  }
  switch (view % 4) {
    case 1:
      return y.flip({3});
    case 2:
      return y.flip({2});
    case 3:
      return y.flip({2, 3});
    default:
      return y;
  }
}

torch::Tensor ForwardTta(Classifier& model, const torch::Tensor& x, Tta tta,
                         const Numerics& numerics, const torch::Device& device,
                         const torch::Tensor& plain) {
  const torch::Tensor first = plain.defined() ? plain : ForwardLogits(model, x, numerics, device);
  if (tta == Tta::kNone) return first;
  torch::Tensor p = torch::softmax(first, 1);
  const int views = TtaViewCount(tta);
  for (int v = 1; v < views; ++v)
    p += torch::softmax(ForwardLogits(model, TtaView(x, tta, v), numerics, device), 1);
  return torch::log(p / views);
}

AutocastGuard::AutocastGuard(bool cuda, bool fp16, bool bf16) : active_(fp16 || bf16), cuda_(cuda) {
  if (!active_) return;
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wdeprecated-declarations"  // Renamed in LibTorch 2.4.
  if (cuda_) {
    at::autocast::set_autocast_gpu_dtype(fp16 ? at::kHalf : at::kBFloat16);
    at::autocast::set_enabled(true);
  } else {
    at::autocast::set_autocast_cpu_dtype(at::kBFloat16);
    at::autocast::set_cpu_enabled(true);
  }
#pragma GCC diagnostic pop
}

AutocastGuard::~AutocastGuard() {
  if (!active_) return;
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wdeprecated-declarations"
  cuda_ ? at::autocast::set_enabled(false) : at::autocast::set_cpu_enabled(false);
#pragma GCC diagnostic pop
  at::autocast::clear_cache();
}

}  // namespace skinlesion::models
