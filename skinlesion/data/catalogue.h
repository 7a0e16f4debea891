// The catalogue of a dataset: one Sample per labelled image, whatever the source
// (HAM10000 metadata, ISIC 2018 ground truth), plus what was left out and why.
//
// Readers (ham10000.h, isic.h) parse the metadata text into rows, then attach image
// files found by indexing a few directories once (ImageIndex) instead of probing
// the file system per row. Rows whose image is absent are skipped and counted, so a
// partial copy of a dataset (as in ../shared/data) still loads.
#ifndef SKINLESION_DATA_CATALOGUE_H_
#define SKINLESION_DATA_CATALOGUE_H_

#include <cstddef>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "skinlesion/common/classes.h"
#include "skinlesion/common/csv.h"

namespace skinlesion::data {

struct Sample {
  std::string image_id;   // "ISIC_0027419"
  std::string lesion_id;  // "HAM_0000118"; the image id for sources without lesion ids
  int label = -1;         // Class index into the catalogue's label set.
  std::string path;       // Image file; empty when the catalogue was built without images.
  // HAM10000 metadata; empty (or nullopt) where the source does not have it.
  std::string dx_type;        // histo, follow_up, consensus, confocal
  std::optional<double> age;  // Years; nullopt when the metadata leaves it blank.
  std::string sex;            // male, female, unknown
  std::string localization;   // back, face, ...
  std::string dataset;        // vidir_modern, rosendahl, ... (8-column release only)
};

struct Catalogue {
  std::vector<Sample> samples;                // In metadata order.
  // What the samples' labels index: HAM10000's 7 for HAM10000 and ISIC 2018 data, the
  // classes found for the other formats (dataset.h).
  LabelSet classes = LabelSet::Ham10000();
  int rows_total = 0;                         // Data rows of the metadata file.
  int rows_missing_image = 0;                 // Rows skipped because no image file was found.
  std::vector<std::string> missing_examples;  // A few image ids of skipped rows.
};

// Image files of a dataset, indexed by image id (file name without extension).
// Only .jpg, .jpeg and .png files (any letter case) are indexed; when one id has
// several files the first directory wins, and within a directory .jpg beats .jpeg
// beats .png, so the result does not depend on directory listing order.
// Rows of a labels file and the label set their `label`s index.
struct LabelledRows {
  std::vector<Sample> rows;
  LabelSet classes;
};

// The label set of `codes` (distinct, lower case) in alphabetical order, the order
// torchvision's ImageFolder gives; InvalidArgument for fewer than 2 classes or a code
// LabelSet rejects, naming `source`.
absl::StatusOr<LabelSet> SortedLabelSet(const std::set<std::string>& codes, absl::string_view source);

// Re-indexes the samples' labels to `target` (a model's label set, for evaluating it on
// these data): every class of the catalogue must be one of target's, else
// InvalidArgument naming the classes the model does not know.
absl::Status RemapLabels(Catalogue& catalogue, const LabelSet& target);

class ImageIndex {
 public:
  // Lists each existing directory of `dirs` once (not recursively). Directories
  // that do not exist are ignored; NotFound when none of them exists or none
  // holds an image.
  static absl::StatusOr<ImageIndex> Build(const std::vector<std::string>& dirs);

  // The file for `image_id`, or nullptr.
  const std::string* Find(absl::string_view image_id) const;
  size_t size() const { return paths_.size(); }

 private:
  struct Entry {
    std::string path;
    int rank;  // Lower is preferred: directory position * 8 + extension rank.
  };
  absl::flat_hash_map<std::string, Entry> paths_;
};

// Keeps the rows whose image is in `index` (setting Sample::path), counts the others
// and logs one warning naming how many were skipped with a few examples.
// `source` names the metadata in the warning.
Catalogue AttachImages(std::vector<Sample> rows, const ImageIndex& index, absl::string_view source);

// A catalogue of all rows, without image paths (for splits computed from metadata).
Catalogue CatalogueWithoutImages(std::vector<Sample> rows);

// InvalidArgument "<source> line <line>: <message>": how readers report a bad row.
absl::Status LineError(absl::string_view source, int line, absl::string_view message);

// Parses metadata CSV text for a reader: the header first, then data records that
// each have as many fields as the header (else LineError). Errors name `source`.
absl::StatusOr<std::vector<CsvRecord>> ParseTable(absl::string_view text, absl::string_view source);

// A human-readable summary: images, per-class counts and percentages, lesions,
// images per lesion and the rows skipped for a missing image.
std::string Summary(const Catalogue& catalogue);

}  // namespace skinlesion::data

#endif  // SKINLESION_DATA_CATALOGUE_H_
