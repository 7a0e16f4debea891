#include "skinlesion/data/dataset.h"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <optional>
#include <unordered_map>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/strip.h"
#include "skinlesion/common/classes.h"
#include "skinlesion/common/csv.h"
#include "skinlesion/common/status.h"
#include "skinlesion/data/ham10000.h"
#include "skinlesion/data/isic.h"

namespace skinlesion::data {
namespace {

namespace fs = std::filesystem;

std::string Lower(absl::string_view s) { return absl::AsciiStrToLower(absl::StripAsciiWhitespace(s)); }

// "clinic_0001.jpg" -> "clinic_0001"; an id without an image extension is kept.
std::string ImageIdOf(absl::string_view image) {
  std::string id(absl::StripAsciiWhitespace(image));
  const size_t slash = id.find_last_of('/');
  if (slash != std::string::npos) id = id.substr(slash + 1);
  for (absl::string_view ext : {".jpg", ".jpeg", ".png"}) {
    if (id.size() > ext.size() && absl::EndsWithIgnoreCase(id, ext)) return id.substr(0, id.size() - ext.size());
  }
  return id;
}

bool IsMissing(absl::string_view value) {
  for (absl::string_view missing : {"", "na", "n/a", "nan", "unknown"}) {
    if (absl::EqualsIgnoreCase(value, missing)) return true;
  }
  return false;
}

// The catalogue of `rows` with their images under `dirs`, or the error that none is there.
absl::StatusOr<Catalogue> WithImages(std::vector<Sample> rows, const std::vector<std::string>& dirs,
                                     absl::string_view source) {
  auto index = ImageIndex::Build(dirs);
  if (!index.ok()) return Annotate(index.status(), "images of ", source);
  return AttachImages(std::move(rows), *index, source);
}

}  // namespace

const char* DatasetFormatName(DatasetFormat format) {
  switch (format) {
    case DatasetFormat::kHam10000: return "HAM10000 metadata";
    case DatasetFormat::kIsic: return "ISIC one-hot ground truth";
    case DatasetFormat::kPlainCsv: return "plain CSV";
    case DatasetFormat::kClassFolders: return "class folders";
  }
  return "?";
}

absl::StatusOr<DatasetFormat> CsvFormatOf(const std::vector<std::string>& header) {
  std::vector<std::string> names;
  for (const std::string& f : header) names.push_back(Lower(f));
  auto has = [&](absl::string_view n) { return std::find(names.begin(), names.end(), n) != names.end(); };
  if (has("image_id") && has("dx") && has("lesion_id")) return DatasetFormat::kHam10000;
  if (has("image") && has("label")) return DatasetFormat::kPlainCsv;
  if (!names.empty() && names[0] == "image" && (has("mel") || has("nv"))) return DatasetFormat::kIsic;
  return absl::InvalidArgumentError(absl::StrCat(
      "unrecognised header '", absl::StrJoin(header, ","),
      "': expected HAM10000 metadata (lesion_id,image_id,dx,...), an ISIC one-hot ground truth "
      "(image,MEL,NV,BCC,AKIEC|AK,BKL,DF,VASC[,SCC,UNK]) or a plain CSV (image,label[,lesion_id|patient_id,"
      "age,sex,localization,dataset])"));
}

absl::StatusOr<LabelledRows> ParsePlainCsv(absl::string_view text, absl::string_view source,
                                                  const std::set<std::string>& skip_labels,
                                                  std::map<std::string, int>* skipped) {
  SL_ASSIGN_OR_RETURN(const std::vector<CsvRecord> records, ParseTable(text, source));
  const CsvRecord& header = records.front();
  std::unordered_map<std::string, int> column;
  for (size_t i = 0; i < header.fields.size(); ++i) {
    const std::string name = Lower(header.fields[i]);
    if (!column.try_emplace(name, static_cast<int>(i)).second) {
      return LineError(source, header.line, absl::StrCat("column '", name, "' appears twice"));
    }
  }
  for (const char* required : {"image", "label"}) {
    if (!column.contains(required)) {
      return LineError(source, header.line, absl::StrCat("missing column '", required, "'"));
    }
  }
  auto field = [&](const CsvRecord& r, const char* name) -> absl::string_view {
    auto it = column.find(name);
    return it == column.end() ? absl::string_view() : absl::StripAsciiWhitespace(r.fields[it->second]);
  };
  std::vector<Sample> rows;
  std::vector<std::string> row_labels;
  std::set<std::string> codes;
  std::unordered_map<std::string, int> first_line;
  for (size_t r = 1; r < records.size(); ++r) {
    const CsvRecord& record = records[r];
    Sample s;
    s.image_id = ImageIdOf(field(record, "image"));
    if (s.image_id.empty()) return LineError(source, record.line, "empty image");
    const std::string label = Lower(field(record, "label"));
    if (skip_labels.contains(label)) {
      if (skipped != nullptr) ++(*skipped)[label];
      continue;
    }
    // Any class code: the label set is the classes found (SortedLabelSet).
    if (absl::Status valid = CheckClassCode(label); !valid.ok()) {
      return LineError(source, record.line, label.empty() ? absl::string_view("empty label") : valid.message());
    }
    codes.insert(label);
    row_labels.push_back(label);
    // Group for splits: the patient (strictest), else the lesion, else the image.
    const absl::string_view patient = field(record, "patient_id");
    const absl::string_view lesion = field(record, "lesion_id");
    s.lesion_id = std::string(!patient.empty() ? patient : !lesion.empty() ? lesion : absl::string_view(s.image_id));
    const absl::string_view age = field(record, "age");
    if (!IsMissing(age)) {
      double years = 0;
      if (!absl::SimpleAtod(age, &years) || !std::isfinite(years) || years < 0 || years > 130) {
        return LineError(source, record.line, absl::StrCat("bad age '", age, "'"));
      }
      s.age = years;
    }
    s.sex = std::string(field(record, "sex"));
    s.localization = std::string(field(record, "localization"));
    s.dataset = std::string(field(record, "dataset"));
    auto [it, inserted] = first_line.try_emplace(s.image_id, record.line);
    if (!inserted) {
      return LineError(source, record.line,
                       absl::StrCat("duplicate image '", s.image_id, "' (first on line ", it->second, ")"));
    }
    rows.push_back(std::move(s));
  }
  SL_ASSIGN_OR_RETURN(LabelSet classes, SortedLabelSet(codes, source));
  for (size_t i = 0; i < rows.size(); ++i) rows[i].label = *classes.IndexOf(row_labels[i]);
  return LabelledRows{std::move(rows), std::move(classes)};
}

absl::StatusOr<Dataset> LoadClassFolders(const std::string& dir, const DatasetOptions& options) {
  Dataset out;
  out.format = DatasetFormat::kClassFolders;
  out.source = dir;
  std::error_code ec;
  struct Folder {
    std::string name, label;
    std::vector<std::string> files;  // Images, sorted.
  };
  std::vector<Folder> folders;
  for (const auto& entry : fs::directory_iterator(dir, ec)) {
    // Hidden folders (.git, .ipynb_checkpoints) are not classes.
    const std::string name = entry.path().filename().string();
    if (!entry.is_directory() || absl::StartsWith(name, ".")) continue;
    Folder folder{name, Lower(name), {}};
    std::error_code list_ec;
    for (const auto& file : fs::directory_iterator(entry.path(), list_ec)) {
      const std::string ext = Lower(file.path().extension().string());
      if (file.is_regular_file() && (ext == ".jpg" || ext == ".jpeg" || ext == ".png")) {
        folder.files.push_back(file.path().string());
      }
    }
    if (list_ec) return absl::NotFoundError(absl::StrCat(entry.path().string(), ": ", list_ec.message()));
    std::sort(folder.files.begin(), folder.files.end());
    folders.push_back(std::move(folder));
  }
  if (ec) return absl::NotFoundError(absl::StrCat(dir, ": ", ec.message()));
  std::sort(folders.begin(), folders.end(), [](const Folder& a, const Folder& b) { return a.name < b.name; });
  size_t images = 0;
  for (const Folder& f : folders) images += options.skip_labels.contains(f.label) ? 0 : f.files.size();
  if (images == 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        dir, " has no HAM10000_metadata.csv and no class subfolder with images (akiec/, bcc/, ...); give a "
             "labels CSV with --metadata"));
  }
  // The classes: every folder not skipped (alphabetical, as torchvision's ImageFolder).
  std::set<std::string> codes;
  for (const Folder& f : folders) {
    if (options.skip_labels.contains(f.label)) {
      out.skipped_labels[f.label] += static_cast<int>(f.files.size());
      continue;
    }
    if (f.files.empty()) {
      return absl::InvalidArgumentError(absl::StrCat(dir, ": folder '", f.name,
                                                     "' has no .jpg or .png image: a class needs examples; "
                                                     "remove it or leave it out with --skip_labels ",
                                                     f.label));
    }
    if (!codes.insert(f.label).second) {
      return absl::InvalidArgumentError(absl::StrCat(dir, ": two folders are class '", f.label, "'"));
    }
  }
  SL_ASSIGN_OR_RETURN(const LabelSet classes, SortedLabelSet(codes, dir + " (class folders)"));
  std::vector<Sample> rows;
  std::unordered_map<std::string, std::string> folder_of_image;
  for (const Folder& f : folders) {
    const std::optional<int> cls = classes.IndexOf(f.label);
    if (!cls.has_value()) continue;  // Skipped.
    for (const std::string& file : f.files) {
      Sample s;
      s.image_id = ImageIdOf(file);
      s.lesion_id = s.image_id;
      s.label = *cls;
      s.path = file;
      auto [it, inserted] = folder_of_image.try_emplace(s.image_id, f.name);
      if (!inserted) {
        return absl::InvalidArgumentError(absl::StrCat("image '", s.image_id, "' is in two places: ", it->second,
                                                       "/ and ", f.name, "/ (one label per image)"));
      }
      rows.push_back(std::move(s));
    }
  }
  out.catalogue.rows_total = static_cast<int>(rows.size());
  out.catalogue.samples = std::move(rows);
  out.catalogue.classes = classes;
  return out;
}

absl::StatusOr<Dataset> LoadDataset(const std::string& data_dir, const std::string& metadata,
                                    const DatasetOptions& options) {
  std::string csv = metadata;
  if (csv.empty()) {
    const std::string ham = data_dir + "/HAM10000_metadata.csv";
    std::error_code ec;
    if (!fs::exists(ham, ec)) return LoadClassFolders(data_dir, options);
    csv = ham;
  }
  SL_ASSIGN_OR_RETURN(const std::string text, ReadFileToString(csv, size_t{64} << 20));
  // The header: the first record of the table.
  SL_ASSIGN_OR_RETURN(const std::vector<CsvRecord> head, ParseTable(text.substr(0, text.find('\n') + 1), csv));
  absl::StatusOr<DatasetFormat> format = CsvFormatOf(head.front().fields);
  if (!format.ok()) return Annotate(format.status(), csv);
  Dataset out;
  out.format = *format;
  out.source = csv;
  switch (*format) {
    // The text read once above is parsed here (the Load* helpers would read it again).
    case DatasetFormat::kHam10000: {
      SL_ASSIGN_OR_RETURN(std::vector<Sample> rows, ParseHam10000Metadata(text, csv));
      SL_ASSIGN_OR_RETURN(out.catalogue, WithImages(std::move(rows), Ham10000ImageDirs(data_dir), csv));
      break;
    }
    case DatasetFormat::kIsic: {
      SL_ASSIGN_OR_RETURN(LabelledRows parsed, ParseIsicGroundTruth(text, csv, options.skip_labels, &out.skipped_labels));
      SL_ASSIGN_OR_RETURN(out.catalogue, WithImages(std::move(parsed.rows), {data_dir}, csv));
      out.catalogue.classes = std::move(parsed.classes);
      break;
    }
    case DatasetFormat::kPlainCsv: {
      SL_ASSIGN_OR_RETURN(LabelledRows parsed, ParsePlainCsv(text, csv, options.skip_labels, &out.skipped_labels));
      SL_ASSIGN_OR_RETURN(out.catalogue, WithImages(std::move(parsed.rows), {data_dir}, csv));
      out.catalogue.classes = std::move(parsed.classes);
      break;
    }
    case DatasetFormat::kClassFolders:
      break;  // Not a CSV format.
  }
  return out;
}

}  // namespace skinlesion::data
