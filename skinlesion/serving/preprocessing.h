// The image preprocessing a model version expects: its manifest's "preprocessing"
// (size, resize mode, mean, std; validated by ReadModelSpec) as the options of
// skinlesion/image/preprocess.h. The serving core, the CLI's Predictor and anything
// else that feeds a published model use this one mapping.
#ifndef SKINLESION_SERVING_PREPROCESSING_H_
#define SKINLESION_SERVING_PREPROCESSING_H_

#include "skinlesion/image/preprocess.h"
#include "skinlesion/serving/serving.h"

namespace skinlesion::serving {

PreprocessOptions PreprocessOptionsFor(const ModelSpec& spec);

}  // namespace skinlesion::serving

#endif  // SKINLESION_SERVING_PREPROCESSING_H_
