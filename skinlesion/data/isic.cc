#include "skinlesion/data/isic.h"

#include <array>
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

// 1 for "1", "1.0", ...; 0 for "0", "0.0", ...; -1 otherwise.
int OneHotValue(absl::string_view text) {
  double v = 0;
  if (!absl::SimpleAtod(text, &v)) return -1;
  if (v == 1.0) return 1;
  if (v == 0.0) return 0;
  return -1;
}

}  // namespace

absl::StatusOr<std::vector<Sample>> ParseIsicGroundTruth(absl::string_view text,
                                                         absl::string_view source,
                                                         const std::set<std::string>& skip_labels,
                                                         std::map<std::string, int>* skipped) {
  SL_ASSIGN_OR_RETURN(const std::vector<CsvRecord> records, ParseTable(text, source));

  const CsvRecord& header = records.front();
  if (header.fields.empty() ||
      !absl::EqualsIgnoreCase(absl::StripAsciiWhitespace(header.fields[0]), "image")) {
    return LineError(source, header.line, "first column must be 'image'");
  }
  // label_of_column[i] is the class index of field i (i >= 1); -1 for a class outside
  // the project's (ISIC 2019's SCC and UNK), named in foreign[i].
  std::vector<int> label_of_column(header.fields.size(), -1);
  std::vector<std::string> foreign(header.fields.size());
  std::array<bool, kNumClasses> seen{};
  for (size_t i = 1; i < header.fields.size(); ++i) {
    const std::string name = absl::AsciiStrToLower(absl::StripAsciiWhitespace(header.fields[i]));
    if (name == "scc" || name == "unk") {
      foreign[i] = name;
      continue;
    }
    auto cls = ClassFromCode(name == "ak" ? absl::string_view("akiec") : absl::string_view(header.fields[i]));
    if (!cls.ok()) return LineError(source, header.line, cls.status().message());
    if (seen[cls->index]) {
      return LineError(source, header.line,
                       absl::StrCat("class column '", header.fields[i], "' appears twice"));
    }
    seen[cls->index] = true;
    label_of_column[i] = cls->index;
  }
  std::vector<absl::string_view> missing;
  for (const ClassInfo& c : AllClasses()) {
    if (!seen[c.index]) missing.push_back(c.code);
  }
  if (!missing.empty()) {
    return LineError(source, header.line,
                     absl::StrCat("missing class column(s) ", absl::StrJoin(missing, ", ")));
  }

  std::vector<Sample> rows;
  rows.reserve(records.size() - 1);
  std::unordered_map<std::string, int> first_line;
  first_line.reserve(records.size());
  for (size_t r = 1; r < records.size(); ++r) {
    const CsvRecord& record = records[r];
    Sample s;
    s.image_id = std::string(absl::StripAsciiWhitespace(record.fields[0]));
    if (s.image_id.empty()) return LineError(source, record.line, "empty image id");
    int ones = 0;
    size_t column = 0;
    for (size_t i = 1; i < record.fields.size(); ++i) {
      const absl::string_view value = absl::StripAsciiWhitespace(record.fields[i]);
      const int v = OneHotValue(value);
      if (v < 0) {
        return LineError(
            source, record.line,
            absl::StrCat("value '", value, "' in column ", header.fields[i], " is not 0 or 1"));
      }
      if (v == 1) {
        ++ones;
        s.label = label_of_column[i];
        column = i;
      }
    }
    if (ones != 1) {
      return LineError(source, record.line,
                       absl::StrCat("expected exactly one class set to 1, found ", ones));
    }
    if (s.label < 0) {
      const std::string& name = foreign[column];
      if (!skip_labels.contains(name)) {
        return LineError(source, record.line,
                         absl::StrCat("class '", header.fields[column],
                                      "' is not one of this model's classes (akiec, bcc, bkl, df, mel, "
                                      "nv, vasc); leave such rows out with --skip_labels ",
                                      name));
      }
      if (skipped != nullptr) ++(*skipped)[name];
      continue;
    }
    s.lesion_id = s.image_id;
    auto [it, inserted] = first_line.try_emplace(s.image_id, record.line);
    if (!inserted) {
      return LineError(
          source, record.line,
          absl::StrCat("duplicate image '", s.image_id, "' (first on line ", it->second, ")"));
    }
    rows.push_back(std::move(s));
  }
  return rows;
}

absl::StatusOr<Catalogue> LoadIsic2018(const std::string& ground_truth_csv,
                                       const std::string& image_dir, const IsicOptions& options,
                                       std::map<std::string, int>* skipped) {
  SL_ASSIGN_OR_RETURN(const std::string text,
                      ReadFileToString(ground_truth_csv, /*max_bytes=*/size_t{64} << 20));
  SL_ASSIGN_OR_RETURN(std::vector<Sample> rows,
                      ParseIsicGroundTruth(text, ground_truth_csv, options.skip_labels, skipped));
  if (!options.require_images) return CatalogueWithoutImages(std::move(rows));
  auto index = ImageIndex::Build({image_dir});
  if (!index.ok()) return Annotate(index.status(), "ISIC images");
  return AttachImages(std::move(rows), *index, ground_truth_csv);
}

}  // namespace skinlesion::data
