// ReadModelSpec and CheckGoldenSet.
#include <algorithm>
#include <cmath>
#include <filesystem>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "skinlesion/common/csv.h"
#include "skinlesion/common/hash.h"
#include "skinlesion/common/logging.h"
#include "skinlesion/common/status.h"
#include "skinlesion/image/preprocess.h"
#include "skinlesion/serving/batcher.h"
#include "skinlesion/serving/preprocessing.h"
#include "skinlesion/serving/serving.h"

namespace skinlesion::serving {

absl::StatusOr<ModelSpec> ReadModelSpec(const std::string& directory) {
  SL_ASSIGN_OR_RETURN(ModelManifest manifest, ReadModelManifest(directory));
  ModelSpec spec;
  static_cast<ModelManifest&>(spec) = std::move(manifest);
  spec.directory = directory;
  SL_RETURN_IF_ERROR(Annotate(ValidatePreprocessOptions(PreprocessOptionsFor(spec)), directory, "/",
                              kManifestFile, ": \"preprocessing\""));
  return spec;
}

absl::Status CheckGoldenSet(const ModelSpec& spec, ModelInstance& instance) {
  const std::string what = absl::StrCat(spec.name, " v", spec.version);
  if (!spec.golden_set.has_value()) {
    SL_LOG(INFO) << "serving: " << what << " has no golden_set: nothing to check";
    return absl::OkStatus();
  }
  const GoldenSet& golden = *spec.golden_set;
  const double tolerance = golden.ToleranceFor(instance.precision());
  const size_t per = 3 * static_cast<size_t>(spec.image_size) * spec.image_size;
  std::vector<float> input(per);
  for (const GoldenItem& item : golden.items) {
    const std::string path = spec.directory + "/" + item.file;
    SL_ASSIGN_OR_RETURN(const std::string bytes, ReadFileToString(path, size_t{64} << 20));
    SL_RETURN_IF_ERROR(Annotate(DecodeAndPreprocess(spec, bytes, DecodeLimits{}, input.data()),
                                "golden file ", path));
    SL_ASSIGN_OR_RETURN(const ScoredRun run, instance.RunScored(input.data(), 1));
    if (run.logits.size() != static_cast<size_t>(spec.classes.size())) {
      return absl::InternalError(absl::StrCat(what, ": the model returned ", run.logits.size(),
                                              " logits for golden file ", item.file));
    }
    InferResult r;
    FillPrediction(spec, run.logits.data(), std::nullopt, r);
    int worst = 0;
    double worst_diff = -1;
    for (int k = 0; k < spec.classes.size(); ++k) {
      const double d = std::fabs(static_cast<double>(r.probabilities[k]) - item.probabilities[k]);
      if (!(d <= worst_diff)) {  // NaN counts as the worst.
        worst = k;
        worst_diff = d;
      }
    }
    if (!(worst_diff <= tolerance)) {
      return absl::FailedPreconditionError(
          absl::StrFormat("%s: golden set mismatch on %s: P(%s) = %.6f, expected %.6f (|diff| %.3g "
                          "> tolerance %.3g for %s)",
                          what, item.file, spec.classes.at(worst).code, r.probabilities[worst],
                          item.probabilities[worst], worst_diff, tolerance,
                          std::string(PrecisionName(instance.precision()))));
    }
  }
  SL_LOG(INFO) << "serving: " << what << " matches its golden set (" << golden.items.size()
               << " items, tolerance " << tolerance << " for "
               << PrecisionName(instance.precision()) << ")";
  return absl::OkStatus();
}

PreprocessOptions PreprocessOptionsFor(const ModelSpec& spec) {
  PreprocessOptions options;
  options.size = spec.image_size;
  options.mode = spec.resize == "resize" ? ResizeMode::kDirectResize
                                         : ResizeMode::kResizeShorterThenCenterCrop;
  options.mean = spec.mean;
  options.std = spec.std;
  options.shades_of_gray_p = spec.shades_of_gray_p;
  return options;
}

DecodeLimits DecodeLimitsFor(const ModelSpec& spec, DecodeLimits base) {
  base.reduce_to_side = ReducedDecodeSide(PreprocessOptionsFor(spec));
  return base;
}

uint64_t DecodePixelBudget(const ModelSpec& spec, int factor, int64_t min_pixels) {
  if (factor <= 0) return 0;
  const uint64_t input = uint64_t(spec.image_size) * uint64_t(spec.image_size);
  return std::max<uint64_t>(uint64_t(factor) * input, static_cast<uint64_t>(std::max<int64_t>(min_pixels, 0)));
}

}  // namespace skinlesion::serving
