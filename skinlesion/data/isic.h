// ISIC 2018 Task 3 ground truth (the HAM10000 challenge release and its
// validation/test sets): one-hot CSV
//   image,MEL,NV,BCC,AKIEC,BKL,DF,VASC
//   ISIC_0034524,0.0,1.0,0.0,0.0,0.0,0.0,0.0
// Class columns are mapped by name (any order, any letter case) through
// ClassFromCode(), so labels use the project's class indices, not the column order.
// ISIC sets carry no lesion ids: each Sample's lesion_id is its image id.
#ifndef SKINLESION_DATA_ISIC_H_
#define SKINLESION_DATA_ISIC_H_

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "skinlesion/data/catalogue.h"

namespace skinlesion::data {

struct IsicOptions {
  // As Ham10000Options::require_images: false keeps every row without a path.
  bool require_images = true;
};

// Parses the ground-truth text (no file-system access). Errors are InvalidArgument
// naming `source` and the line: a header that is not `image` plus each of the 7
// class codes exactly once, a wrong field count, an empty or repeated image id, a
// value other than 0/1 (1.0, 0.0, ...), or a row without exactly one 1.
absl::StatusOr<std::vector<Sample>> ParseIsicGroundTruth(
    absl::string_view text, absl::string_view source = "ISIC ground truth");

// Reads `ground_truth_csv` and attaches images `<image_dir>/<image>.jpg` (or .png);
// rows without an image are skipped, counted and logged once.
absl::StatusOr<Catalogue> LoadIsic2018(const std::string& ground_truth_csv,
                                       const std::string& image_dir,
                                       const IsicOptions& options = {});

}  // namespace skinlesion::data

#endif  // SKINLESION_DATA_ISIC_H_
