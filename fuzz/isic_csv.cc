// Fuzzes the ISIC 2018 Task 3 ground-truth parser and a k-fold split of what it
// accepts (every image its own lesion), with the split file round trip.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>

#include "fuzz/require.h"
#include "absl/container/flat_hash_set.h"
#include "absl/strings/string_view.h"
#include "skinlesion/common/classes.h"
#include "skinlesion/data/catalogue.h"
#include "skinlesion/data/isic.h"
#include "skinlesion/data/split.h"

using skinlesion::fuzz::Require;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace skinlesion::data;
  const absl::string_view text(reinterpret_cast<const char*>(data), size);
  auto rows = ParseIsicGroundTruth(text);
  if (!rows.ok()) {
    Require(rows.status().code() == absl::StatusCode::kInvalidArgument);
    return 0;
  }
  absl::flat_hash_set<std::string> ids;
  for (const Sample& s : rows->rows) {
    Require(!s.image_id.empty() && s.lesion_id == s.image_id);
    Require(s.label >= 0 && s.label < rows->classes.size());
    Require(ids.insert(s.image_id).second);
  }
  Catalogue catalogue = CatalogueWithoutImages(std::move(rows->rows));
  catalogue.classes = rows->classes;
  if (catalogue.samples.size() < 2) return 0;
  auto folds = MakeKFold(catalogue, 2, size);
  Require(folds.ok());
  Require(folds->Count("fold0") + folds->Count("fold1") ==
          static_cast<int>(catalogue.samples.size()));
  const int difference = folds->Count("fold0") - folds->Count("fold1");
  Require(difference >= -1 && difference <= 1);  // One image per lesion: balanced folds.
  auto parsed = ParseSplit(folds->ToCsv());
  Require(parsed.ok() && parsed->Digest() == folds->Digest());
  return 0;
}
