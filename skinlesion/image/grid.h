// Augmentation previews: a grid of one image under many draws of a pipeline, for
// eyeballing what a preset does (the `skinlesion augment-grid` tool).
#ifndef SKINLESION_IMAGE_GRID_H_
#define SKINLESION_IMAGE_GRID_H_

#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "opencv2/core/mat.hpp"
#include "skinlesion/image/augment.h"

namespace skinlesion {

// A (rows * tile) x (cols * tile) CV_8UC3 RGB grid. Tiles are filled row-major;
// tile 0 is `rgb` itself, tile k >= 1 is `rgb` after pipeline.Apply with
// Rng(DeriveSeed({seed, k})). Each image is brought to tile x tile by Resize()
// (shorter side + centre crop, bilinear) and labelled in its top-left corner,
// "original" or "#k" (white on a black box inside the top quarter of the tile;
// no labels when tile < 48). Requires a non-empty CV_8UC3 image, rows, cols >= 1
// and 8 <= tile <= 4096 (SL_CHECK).
cv::Mat MakeAugmentationGrid(const cv::Mat& rgb, const Pipeline& pipeline, uint64_t seed, int rows,
                             int cols, int tile);

// Writes an RGB (CV_8UC3) image with cv::imwrite, the format chosen by the
// extension (.png, .jpg, .webp, .bmp, ...). InvalidArgument for an unknown
// extension or a wrong image type, NotFound when the directory does not exist,
// Internal when the write fails.
absl::Status WriteImage(const std::string& path, const cv::Mat& rgb);

}  // namespace skinlesion

#endif  // SKINLESION_IMAGE_GRID_H_
