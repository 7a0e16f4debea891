#include "skinlesion/data/ham10000.h"

#include <array>
#include <cmath>
#include <unordered_map>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "skinlesion/common/classes.h"
#include "skinlesion/common/csv.h"
#include "skinlesion/common/status.h"

namespace skinlesion::data {
namespace {

enum Column { kLesionId, kImageId, kDx, kDxType, kAge, kSex, kLocalization, kDataset, kNumColumns };
constexpr std::array<absl::string_view, kNumColumns> kColumnNames = {
    "lesion_id", "image_id", "dx", "dx_type", "age", "sex", "localization", "dataset"};
constexpr int kNumRequired = kDataset;  // Every column before `dataset`.
constexpr double kMaxAge = 130.0;

// Blank and the spellings of "not available" seen in copies of the metadata.
bool IsMissingAge(absl::string_view value) {
  for (absl::string_view missing : {"", "na", "n/a", "nan", "unknown"}) {
    if (absl::EqualsIgnoreCase(value, missing)) return true;
  }
  return false;
}

}  // namespace

absl::StatusOr<std::vector<Sample>> ParseHam10000Metadata(absl::string_view text,
                                                          absl::string_view source) {
  SL_ASSIGN_OR_RETURN(const std::vector<CsvRecord> records, ParseTable(text, source));

  const CsvRecord& header = records.front();
  std::array<int, kNumColumns> column;
  column.fill(-1);
  for (size_t i = 0; i < header.fields.size(); ++i) {
    const std::string name = absl::AsciiStrToLower(absl::StripAsciiWhitespace(header.fields[i]));
    for (int c = 0; c < kNumColumns; ++c) {
      if (name != kColumnNames[c]) continue;
      if (column[c] >= 0) {
        return LineError(source, header.line, absl::StrCat("column '", name, "' appears twice"));
      }
      column[c] = static_cast<int>(i);
    }
  }
  std::vector<absl::string_view> missing;
  for (int c = 0; c < kNumRequired; ++c) {
    if (column[c] < 0) missing.push_back(kColumnNames[c]);
  }
  if (!missing.empty()) {
    return LineError(source, header.line,
                     absl::StrCat("missing required column(s) ", absl::StrJoin(missing, ", "),
                                  " (header must name lesion_id, image_id, dx, dx_type, age, "
                                  "sex, localization and optionally dataset)"));
  }

  std::vector<Sample> rows;
  rows.reserve(records.size() - 1);
  std::unordered_map<std::string, int> first_line;  // image_id -> line.
  first_line.reserve(records.size());
  for (size_t r = 1; r < records.size(); ++r) {
    const CsvRecord& record = records[r];
    auto field = [&](Column c) -> absl::string_view {
      return column[c] < 0 ? absl::string_view()
                           : absl::StripAsciiWhitespace(record.fields[column[c]]);
    };
    Sample s;
    s.lesion_id = std::string(field(kLesionId));
    s.image_id = std::string(field(kImageId));
    if (s.lesion_id.empty()) return LineError(source, record.line, "empty lesion_id");
    if (s.image_id.empty()) return LineError(source, record.line, "empty image_id");
    auto cls = LabelSet::Ham10000().Find(field(kDx));
    if (!cls.ok()) return LineError(source, record.line, cls.status().message());
    s.label = cls->index;
    const absl::string_view age = field(kAge);
    if (!IsMissingAge(age)) {
      double years = 0;
      if (!absl::SimpleAtod(age, &years) || !std::isfinite(years) || years < 0 || years > kMaxAge) {
        return LineError(source, record.line, absl::StrCat("bad age '", age, "'"));
      }
      s.age = years;
    }
    s.dx_type = std::string(field(kDxType));
    s.sex = std::string(field(kSex));
    s.localization = std::string(field(kLocalization));
    s.dataset = std::string(field(kDataset));
    auto [it, inserted] = first_line.try_emplace(s.image_id, record.line);
    if (!inserted) {
      return LineError(
          source, record.line,
          absl::StrCat("duplicate image_id '", s.image_id, "' (first on line ", it->second, ")"));
    }
    rows.push_back(std::move(s));
  }
  return rows;
}

std::vector<std::string> Ham10000ImageDirs(const std::string& image_root) {
  return {image_root + "/HAM10000_images_part_1", image_root + "/HAM10000_images_part_2", image_root};
}

absl::StatusOr<Catalogue> LoadHam10000(const std::string& metadata_csv,
                                       const std::string& image_root,
                                       const Ham10000Options& options) {
  SL_ASSIGN_OR_RETURN(const std::string text,
                      ReadFileToString(metadata_csv, /*max_bytes=*/size_t{64} << 20));
  SL_ASSIGN_OR_RETURN(std::vector<Sample> rows, ParseHam10000Metadata(text, metadata_csv));
  if (!options.require_images) return CatalogueWithoutImages(std::move(rows));
  auto index = ImageIndex::Build(Ham10000ImageDirs(image_root));
  if (!index.ok()) return Annotate(index.status(), "HAM10000 images under ", image_root);
  return AttachImages(std::move(rows), *index, metadata_csv);
}

}  // namespace skinlesion::data
