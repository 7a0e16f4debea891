#include "skinlesion/data/catalogue.h"

#include <algorithm>
#include <array>
#include <cstdio>
#include <filesystem>
#include <set>
#include <system_error>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "skinlesion/common/classes.h"
#include "skinlesion/common/logging.h"
#include "skinlesion/common/status.h"

namespace skinlesion::data {
namespace {

constexpr size_t kMissingExamples = 5;

// Preference of an extension (lower wins), or -1 when it is not an image.
int ExtensionRank(const std::string& extension) {
  const std::string ext = absl::AsciiStrToLower(extension);
  if (ext == ".jpg") return 0;
  if (ext == ".jpeg") return 1;
  if (ext == ".png") return 2;
  return -1;
}

}  // namespace

absl::StatusOr<ImageIndex> ImageIndex::Build(const std::vector<std::string>& dirs) {
  namespace fs = std::filesystem;
  ImageIndex index;
  bool any_dir = false;
  for (size_t d = 0; d < dirs.size(); ++d) {
    std::error_code ec;
    if (!fs::is_directory(dirs[d], ec)) continue;
    any_dir = true;
    fs::directory_iterator it(dirs[d], ec);
    if (ec) {
      return absl::PermissionDeniedError(absl::StrCat("cannot list ", dirs[d], ": ", ec.message()));
    }
    for (; it != fs::directory_iterator(); it.increment(ec)) {
      if (ec) break;
      const fs::path& p = it->path();
      const int ext_rank = ExtensionRank(p.extension().string());
      if (ext_rank < 0) continue;
      std::error_code type_ec;
      if (!it->is_regular_file(type_ec)) continue;
      const int rank = static_cast<int>(d) * 8 + ext_rank;
      auto [pos, inserted] = index.paths_.try_emplace(p.stem().string(), Entry{p.string(), rank});
      if (!inserted && rank < pos->second.rank) pos->second = Entry{p.string(), rank};
    }
    if (ec) {
      return absl::PermissionDeniedError(absl::StrCat("cannot list ", dirs[d], ": ", ec.message()));
    }
  }
  if (!any_dir) {
    return absl::NotFoundError(
        absl::StrCat("no image directory found (looked for ", absl::StrJoin(dirs, ", "), ")"));
  }
  if (index.paths_.empty()) {
    return absl::NotFoundError(
        absl::StrCat("no .jpg or .png files in ", absl::StrJoin(dirs, ", ")));
  }
  return index;
}

const std::string* ImageIndex::Find(absl::string_view image_id) const {
  auto it = paths_.find(image_id);
  return it == paths_.end() ? nullptr : &it->second.path;
}

Catalogue AttachImages(std::vector<Sample> rows, const ImageIndex& index,
                       absl::string_view source) {
  Catalogue catalogue;
  catalogue.rows_total = static_cast<int>(rows.size());
  catalogue.samples.reserve(rows.size());
  for (Sample& row : rows) {
    if (const std::string* path = index.Find(row.image_id)) {
      row.path = *path;
      catalogue.samples.push_back(std::move(row));
    } else {
      ++catalogue.rows_missing_image;
      if (catalogue.missing_examples.size() < kMissingExamples) {
        catalogue.missing_examples.push_back(row.image_id);
      }
    }
  }
  if (catalogue.rows_missing_image > 0) {
    SL_LOG(WARNING) << source << ": " << catalogue.rows_missing_image << " of "
                    << catalogue.rows_total << " rows have no image file and are skipped (e.g. "
                    << absl::StrJoin(catalogue.missing_examples, ", ") << ")";
  }
  return catalogue;
}

Catalogue CatalogueWithoutImages(std::vector<Sample> rows) {
  Catalogue catalogue;
  catalogue.rows_total = static_cast<int>(rows.size());
  catalogue.samples = std::move(rows);
  return catalogue;
}

absl::StatusOr<LabelSet> SortedLabelSet(const std::set<std::string>& codes, absl::string_view source) {
  if (codes.size() < 2) {
    return absl::InvalidArgumentError(absl::StrCat(source, ": ", codes.size(),
                                                   " class(es) found; a classifier needs at least 2"));
  }
  absl::StatusOr<LabelSet> set = LabelSet::Create(std::vector<std::string>(codes.begin(), codes.end()));
  if (!set.ok()) return Annotate(set.status(), source);
  return set;
}

absl::Status RemapLabels(Catalogue& catalogue, const LabelSet& target) {
  if (catalogue.classes == target) return absl::OkStatus();
  std::vector<int> to(catalogue.classes.size(), -1);
  std::vector<std::string> unknown;
  for (const ClassInfo& c : catalogue.classes) {
    if (std::optional<int> index = target.IndexOf(c.code)) {
      to[c.index] = *index;
    } else {
      unknown.push_back(c.code);
    }
  }
  if (!unknown.empty()) {
    return absl::InvalidArgumentError(absl::StrCat("the data have class(es) ", absl::StrJoin(unknown, ", "),
                                                   " that the model does not know (its classes: ",
                                                   target.ToString(), ")"));
  }
  for (Sample& s : catalogue.samples) {
    if (s.label >= 0 && s.label < static_cast<int>(to.size())) s.label = to[s.label];
  }
  catalogue.classes = target;
  return absl::OkStatus();
}

absl::Status LineError(absl::string_view source, int line, absl::string_view message) {
  return absl::InvalidArgumentError(absl::StrCat(source, " line ", line, ": ", message));
}

absl::StatusOr<std::vector<CsvRecord>> ParseTable(absl::string_view text,
                                                  absl::string_view source) {
  auto records = ParseCsv(text);
  if (!records.ok()) {
    return absl::InvalidArgumentError(absl::StrCat(source, " ", records.status().message()));
  }
  if (records->empty()) return absl::InvalidArgumentError(absl::StrCat(source, " is empty"));
  const size_t width = records->front().fields.size();
  for (const CsvRecord& record : *records) {
    if (record.fields.size() != width) {
      return LineError(source, record.line,
                       absl::StrCat("expected ", width, " fields, found ", record.fields.size()));
    }
  }
  return records;
}

std::string Summary(const Catalogue& catalogue) {
  std::vector<int> counts(catalogue.classes.size(), 0);
  std::set<absl::string_view> lesions;
  for (const Sample& s : catalogue.samples) {
    if (s.label >= 0 && s.label < catalogue.classes.size()) ++counts[s.label];
    lesions.insert(s.lesion_id);
  }
  const size_t n = catalogue.samples.size();
  std::string out = absl::StrFormat(
      "%d images, %d lesions (%.2f images/lesion)", n, lesions.size(),
      lesions.empty() ? 0.0 : static_cast<double>(n) / static_cast<double>(lesions.size()));
  if (catalogue.rows_missing_image > 0) {
    absl::StrAppendFormat(&out, "; %d of %d metadata rows skipped (no image file)",
                          catalogue.rows_missing_image, catalogue.rows_total);
  }
  absl::StrAppend(&out, "\nclass   images       %\n");
  for (const ClassInfo& c : catalogue.classes) {
    const double pct = n == 0 ? 0.0 : 100.0 * counts[c.index] / static_cast<double>(n);
    absl::StrAppendFormat(&out, "%-6s %7d  %5.1f%%\n", c.code, counts[c.index], pct);
  }
  return out;
}

}  // namespace skinlesion::data
