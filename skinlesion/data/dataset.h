// The datasets a user brings, in four layouts, as one Catalogue:
//   HAM10000   HAM10000_metadata.csv (ham10000.h)
//   ISIC       one-hot ground truth, 2018 or 2019 columns (isic.h)
//   plain CSV  image,label plus optional columns:
//                lesion_id, patient_id  groups for lesion/patient-disjoint splits
//                                       (patient_id wins when both are given)
//                age, sex, localization, dataset  metadata for subgroup reports
//              e.g.
//                image,label,patient_id,age,sex
//                clinic_0001.jpg,mel,P17,63,female
//              `image` is an id or a file name (its extension is dropped); labels are
//              class codes (any letter case; 1-32 of a-z, 0-9, '_', '-'), any set of them.
//   folders    <dir>/<class code>/<image>.jpg|png, one subfolder per class
// and the images found under the data folder (Kaggle layout, flat, or the class
// folders). Which layout: the metadata CSV's header decides; without a CSV, the data
// folder's HAM10000_metadata.csv if it has one, else its class subfolders.
//
// The label set (Catalogue::classes): HAM10000's 7 for HAM10000 metadata and ISIC 2018,
// plus scc for ISIC 2019; for a plain CSV or class folders, the classes found,
// alphabetically (a 3-folder dataset trains a 3-class model). Classes in
// DatasetOptions::skip_labels are left out (rows counted).
//
// Every bad row is an error naming its file and line (bad label, missing or repeated
// image, bad age); images that are missing are counted and listed in the catalogue
// (never silently dropped).
#ifndef SKINLESION_DATA_DATASET_H_
#define SKINLESION_DATA_DATASET_H_

#include <map>
#include <set>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "skinlesion/data/catalogue.h"

namespace skinlesion::data {

enum class DatasetFormat { kHam10000, kIsic, kPlainCsv, kClassFolders };

// "HAM10000 metadata", "ISIC one-hot ground truth", "plain CSV", "class folders".
const char* DatasetFormatName(DatasetFormat format);

struct DatasetOptions {
  // Lower-case labels outside the project's classes to leave out (counted), e.g.
  // {"scc", "unk"} for ISIC 2019.
  std::set<std::string> skip_labels;
};

struct Dataset {
  DatasetFormat format = DatasetFormat::kHam10000;
  std::string source;  // The CSV or folder the labels came from.
  Catalogue catalogue;
  std::map<std::string, int> skipped_labels;  // Rows left out per skipped label.
};

// The layout a CSV header names (fields as read): HAM10000 (lesion_id, image_id, dx),
// ISIC (image + class columns), plain (image + label). InvalidArgument naming what a
// header needs otherwise.
absl::StatusOr<DatasetFormat> CsvFormatOf(const std::vector<std::string>& header);

// Parses plain-CSV text (no file-system access); rows in file order, empty paths.
absl::StatusOr<LabelledRows> ParsePlainCsv(absl::string_view text, absl::string_view source,
                                                  const std::set<std::string>& skip_labels = {},
                                                  std::map<std::string, int>* skipped = nullptr);

// One subfolder per class under `dir`; lesion ids are the image ids. InvalidArgument
// for a subfolder name that is not a class code (unless skipped; hidden folders are
// ignored), fewer than 2 classes, or no image at all.
absl::StatusOr<Dataset> LoadClassFolders(const std::string& dir, const DatasetOptions& options = {});

// `metadata` may be empty (see above).
absl::StatusOr<Dataset> LoadDataset(const std::string& data_dir, const std::string& metadata,
                                    const DatasetOptions& options = {});

}  // namespace skinlesion::data

#endif  // SKINLESION_DATA_DATASET_H_
