#include "skinlesion/data/isic.h"

#include <algorithm>
#include <set>
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

absl::StatusOr<LabelledRows> ParseIsicGroundTruth(absl::string_view text,
                                                         absl::string_view source,
                                                         const std::set<std::string>& skip_labels,
                                                         std::map<std::string, int>* skipped) {
  SL_ASSIGN_OR_RETURN(const std::vector<CsvRecord> records, ParseTable(text, source));

  const CsvRecord& header = records.front();
  if (header.fields.empty() ||
      !absl::EqualsIgnoreCase(absl::StripAsciiWhitespace(header.fields[0]), "image")) {
    return LineError(source, header.line, "first column must be 'image'");
  }
  // code_of_column[i] is field i's class code (i >= 1); "unk" is not a class.
  std::vector<std::string> code_of_column(header.fields.size());
  std::set<std::string> codes;
  bool has_scc = false;
  for (size_t i = 1; i < header.fields.size(); ++i) {
    std::string name = absl::AsciiStrToLower(absl::StripAsciiWhitespace(header.fields[i]));
    if (name == "ak") name = "akiec";
    if (name == "scc") has_scc = true;
    if (name != "unk" && name != "scc" && !LabelSet::Ham10000().IndexOf(name).has_value()) {
      return LineError(source, header.line, LabelSet::Ham10000().Find(header.fields[i]).status().message());
    }
    if (!codes.insert(name).second && name != "unk") {
      return LineError(source, header.line,
                       absl::StrCat("class column '", header.fields[i], "' appears twice"));
    }
    code_of_column[i] = name;
  }
  std::vector<std::string> missing;
  for (const ClassInfo& c : LabelSet::Ham10000()) {
    if (!codes.contains(c.code)) missing.push_back(c.code);
  }
  if (!missing.empty()) {
    return LineError(source, header.line,
                     absl::StrCat("missing class column(s) ", absl::StrJoin(missing, ", ")));
  }
  std::vector<std::string> class_codes = LabelSet::Ham10000().codes();
  if (has_scc && !skip_labels.contains("scc")) class_codes.push_back("scc");
  std::sort(class_codes.begin(), class_codes.end());
  SL_ASSIGN_OR_RETURN(LabelSet classes, LabelSet::Create(class_codes));
  std::vector<int> label_of_column(header.fields.size(), -1);
  for (size_t i = 1; i < header.fields.size(); ++i) {
    label_of_column[i] = classes.IndexOf(code_of_column[i]).value_or(-1);
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
      const std::string& name = code_of_column[column];
      if (!skip_labels.contains(name)) {
        return LineError(source, record.line,
                         absl::StrCat("class '", header.fields[column], "' is not one of the classes (",
                                      classes.ToString(), "); leave such rows out with --skip_labels ",
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
  return LabelledRows{std::move(rows), std::move(classes)};
}

absl::StatusOr<Catalogue> LoadIsic2018(const std::string& ground_truth_csv,
                                       const std::string& image_dir, const IsicOptions& options,
                                       std::map<std::string, int>* skipped) {
  SL_ASSIGN_OR_RETURN(const std::string text,
                      ReadFileToString(ground_truth_csv, /*max_bytes=*/size_t{64} << 20));
  SL_ASSIGN_OR_RETURN(LabelledRows parsed,
                      ParseIsicGroundTruth(text, ground_truth_csv, options.skip_labels, skipped));
  Catalogue catalogue;
  if (!options.require_images) {
    catalogue = CatalogueWithoutImages(std::move(parsed.rows));
  } else {
    auto index = ImageIndex::Build({image_dir});
    if (!index.ok()) return Annotate(index.status(), "ISIC images");
    catalogue = AttachImages(std::move(parsed.rows), *index, ground_truth_csv);
  }
  catalogue.classes = std::move(parsed.classes);
  return catalogue;
}

}  // namespace skinlesion::data
