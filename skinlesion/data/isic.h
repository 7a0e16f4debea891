// ISIC one-hot ground truth: the 2018 Task 3 column set (the HAM10000 challenge
// release and its validation/test sets)
//   image,MEL,NV,BCC,AKIEC,BKL,DF,VASC
//   ISIC_0034524,0.0,1.0,0.0,0.0,0.0,0.0,0.0
// and the 2019 one (AK for akiec, plus SCC and UNK)
//   image,MEL,NV,BCC,AK,BKL,DF,VASC,SCC,UNK
// Class columns are mapped by name (any order, any letter case) through
// code ("AK" is akiec), so labels index the label set, not the column order. The label
// set is HAM10000's 7 classes, plus scc when the file has an SCC column (ISIC 2019: an
// 8-class model) unless scc is in `skip_labels`. UNK is never a class: a row labelled
// UNK is an error naming its line unless "unk" is in `skip_labels`; skipped rows are
// left out and counted. ISIC sets carry no lesion ids: each Sample's lesion_id is its
// image id.
#ifndef SKINLESION_DATA_ISIC_H_
#define SKINLESION_DATA_ISIC_H_

#include <map>
#include <set>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "skinlesion/data/catalogue.h"

namespace skinlesion::data {

struct IsicOptions {
  // As Ham10000Options::require_images: false keeps every row without a path.
  bool require_images = true;
  // Lower-case class names outside the project's classes whose rows are left out
  // (e.g. {"scc", "unk"} for ISIC 2019); counted in `skipped`.
  std::set<std::string> skip_labels;
};

// Parses the ground-truth text (no file-system access). Errors are InvalidArgument
// naming `source` and the line: a header that is not `image` plus each of the 7
// class codes exactly once, a wrong field count, an empty or repeated image id, a
// value other than 0/1 (1.0, 0.0, ...), or a row without exactly one 1.
absl::StatusOr<LabelledRows> ParseIsicGroundTruth(
    absl::string_view text, absl::string_view source = "ISIC ground truth",
    const std::set<std::string>& skip_labels = {}, std::map<std::string, int>* skipped = nullptr);

// Reads `ground_truth_csv` and attaches images `<image_dir>/<image>.jpg` (or .png);
// rows without an image are skipped, counted and logged once.
// `skipped` (optional): rows left out per skipped class.
absl::StatusOr<Catalogue> LoadIsic2018(const std::string& ground_truth_csv,
                                       const std::string& image_dir,
                                       const IsicOptions& options = {},
                                       std::map<std::string, int>* skipped = nullptr);

}  // namespace skinlesion::data

#endif  // SKINLESION_DATA_ISIC_H_
