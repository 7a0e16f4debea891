// The image preprocessing a model version expects: its manifest's "preprocessing"
// (size, resize mode, mean, std; validated by ReadModelSpec) as the options of
// skinlesion/image/preprocess.h. The serving core, the CLI's Predictor and anything
// else that feeds a published model use this one mapping.
#ifndef SKINLESION_SERVING_PREPROCESSING_H_
#define SKINLESION_SERVING_PREPROCESSING_H_

#include <cstdint>

#include "skinlesion/image/decode.h"
#include "skinlesion/image/preprocess.h"
#include "skinlesion/serving/serving.h"

namespace skinlesion::serving {

PreprocessOptions PreprocessOptionsFor(const ModelSpec& spec);

// `base` with reduce_to_side set for `spec` (ReducedDecodeSide of its
// preprocessing). Every path that feeds a served model
// decodes with it (serving core, golden-set check, the CLI's Predictor), so one
// image gets the same input everywhere.
DecodeLimits DecodeLimitsFor(const ModelSpec& spec, DecodeLimits base = {});

// The decoded-pixel budget of one image for `spec`: max(factor * size^2,
// min_pixels); 0 when factor is 0 (no budget).
uint64_t DecodePixelBudget(const ModelSpec& spec, int factor, int64_t min_pixels);

}  // namespace skinlesion::serving

#endif  // SKINLESION_SERVING_PREPROCESSING_H_
