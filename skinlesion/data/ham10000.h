// HAM10000 (Tschandl et al. 2018): metadata parser and catalogue loader.
//
// Reads both published variants of HAM10000_metadata.csv, mapping columns by header
// name (any order, case-insensitive; unknown extra columns are ignored):
//   Kaggle     lesion_id,image_id,dx,dx_type,age,sex,localization          (7 columns)
//   Dataverse  lesion_id,image_id,dx,dx_type,age,sex,localization,dataset  (8 columns)
// and finds images in the Kaggle layout (<root>/HAM10000_images_part_1/ and
// _part_2/) or in one flat folder (<root>/*.jpg or *.png).
//
// Example:
//   SL_ASSIGN_OR_RETURN(Catalogue cat,
//       LoadHam10000(root + "/HAM10000_metadata.csv", root, {}));
//   SL_LOG(INFO) << Summary(cat);
#ifndef SKINLESION_DATA_HAM10000_H_
#define SKINLESION_DATA_HAM10000_H_

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "skinlesion/data/catalogue.h"

namespace skinlesion::data {

struct Ham10000Options {
  // true (default): look up every row's image and skip (count, warn about) rows
  // without one; NotFound when the image root has no image directory.
  // false: keep every row with an empty Sample::path and never touch the image
  // root (splits are computed from the metadata alone).
  bool require_images = true;
};

// Parses the metadata text (no file-system access). Rows come back in file order
// with empty paths. Errors are InvalidArgument naming `source` and the 1-based line:
//   "HAM10000_metadata.csv line 17: unknown lesion class 'xyz' (...)"
// for a missing required column, a wrong field count, an empty lesion_id or
// image_id, an unknown dx, an age that is not blank/NA and not a number in
// [0, 130], or an image_id seen before.
absl::StatusOr<std::vector<Sample>> ParseHam10000Metadata(
    absl::string_view text, absl::string_view source = "HAM10000_metadata.csv");

// Reads `metadata_csv` (errors name that path) and attaches images under
// `image_root` as described above.
// Where HAM10000's images are under `image_root`, in order of preference: the Kaggle
// layout's two part folders, then the root itself (a flat folder).
std::vector<std::string> Ham10000ImageDirs(const std::string& image_root);

absl::StatusOr<Catalogue> LoadHam10000(const std::string& metadata_csv,
                                       const std::string& image_root,
                                       const Ham10000Options& options = {});

}  // namespace skinlesion::data

#endif  // SKINLESION_DATA_HAM10000_H_
