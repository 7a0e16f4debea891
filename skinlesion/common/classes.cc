#include "skinlesion/common/classes.h"

#include <algorithm>
#include <array>
#include <set>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "skinlesion/common/logging.h"

namespace skinlesion {
namespace {

struct Known {
  absl::string_view code, name;
  MalignancyGroup group;
};

constexpr std::array<Known, 8> kKnown = {{
    {"akiec", "Actinic keratosis / intraepithelial carcinoma", MalignancyGroup::kMalignant},
    {"bcc", "Basal cell carcinoma", MalignancyGroup::kMalignant},
    {"bkl", "Benign keratosis-like lesion", MalignancyGroup::kBenign},
    {"df", "Dermatofibroma", MalignancyGroup::kBenign},
    {"mel", "Melanoma", MalignancyGroup::kMalignant},
    {"nv", "Melanocytic nevus", MalignancyGroup::kBenign},
    {"scc", "Squamous cell carcinoma", MalignancyGroup::kMalignant},
    {"vasc", "Vascular lesion", MalignancyGroup::kBenign},
}};

std::string Normalise(absl::string_view code) {
  return absl::AsciiStrToLower(absl::StripAsciiWhitespace(code));
}

}  // namespace

absl::Status CheckClassCode(absl::string_view code) {
  const bool valid = !code.empty() && code.size() <= 32 &&
                     std::all_of(code.begin(), code.end(), [](char c) {
                       return absl::ascii_islower(c) || absl::ascii_isdigit(c) || c == '_' || c == '-';
                     });
  if (valid) return absl::OkStatus();
  return absl::InvalidArgumentError(
      absl::StrCat("class code '", code, "' must be 1-32 characters of a-z, 0-9, '_' or '-'"));
}

std::optional<ClassInfo> KnownClass(absl::string_view code) {
  const std::string lower = Normalise(code);
  for (const Known& k : kKnown) {
    if (k.code == lower) return ClassInfo{0, std::string(k.code), std::string(k.name), k.group};
  }
  return std::nullopt;
}

const LabelSet& LabelSet::Ham10000() {
  static const LabelSet* const kHam = [] {
    absl::StatusOr<LabelSet> set = Create({"akiec", "bcc", "bkl", "df", "mel", "nv", "vasc"});
    SL_CHECK(set.ok()) << set.status();
    return new LabelSet(*std::move(set));
  }();
  return *kHam;
}

absl::StatusOr<LabelSet> LabelSet::Create(const std::vector<std::string>& codes,
                                          const std::optional<std::vector<std::string>>& malignant) {
  if (codes.size() < 2 || codes.size() > static_cast<size_t>(kMaxClasses)) {
    return absl::InvalidArgumentError(absl::StrCat("a label set needs 2 to ", kMaxClasses,
                                                   " classes, got ", codes.size()));
  }
  LabelSet set;
  std::set<std::string> seen;
  for (const std::string& raw : codes) {
    const std::string code = Normalise(raw);
    if (absl::Status valid = CheckClassCode(code); !valid.ok()) return valid;
    if (!seen.insert(code).second) {
      return absl::InvalidArgumentError(absl::StrCat("class code '", code, "' appears twice"));
    }
    ClassInfo info = KnownClass(code).value_or(ClassInfo{0, code, code, MalignancyGroup::kBenign});
    info.index = static_cast<int>(set.classes_.size());
    set.classes_.push_back(std::move(info));
  }
  if (malignant.has_value()) {
    for (ClassInfo& c : set.classes_) c.group = MalignancyGroup::kBenign;
    for (const std::string& raw : *malignant) {
      const std::optional<int> index = set.IndexOf(raw);
      if (!index.has_value()) {
        return absl::InvalidArgumentError(absl::StrCat("malignant class '", raw,
                                                       "' is not one of the labels (",
                                                       set.ToString(), ")"));
      }
      set.classes_[*index].group = MalignancyGroup::kMalignant;
    }
  }
  return set;
}

const ClassInfo& LabelSet::at(int index) const {
  SL_CHECK(index >= 0 && index < size()) << "class index " << index << " out of range [0, " << size() << ")";
  return classes_[index];
}

absl::StatusOr<ClassInfo> LabelSet::Find(absl::string_view code) const {
  if (std::optional<int> index = IndexOf(code)) return classes_[*index];
  return absl::InvalidArgumentError(absl::StrCat("unknown lesion class '", code, "' (expected one of ",
                                                 ToString(), ")"));
}

std::optional<int> LabelSet::IndexOf(absl::string_view code) const {
  const std::string lower = Normalise(code);
  for (const ClassInfo& c : classes_) {
    if (c.code == lower) return c.index;
  }
  return std::nullopt;
}

bool LabelSet::HasMalignant() const {
  return std::any_of(classes_.begin(), classes_.end(),
                     [](const ClassInfo& c) { return c.group == MalignancyGroup::kMalignant; });
}

std::vector<std::string> LabelSet::codes() const {
  std::vector<std::string> out;
  for (const ClassInfo& c : classes_) out.push_back(c.code);
  return out;
}

std::vector<std::string> LabelSet::malignant_codes() const {
  std::vector<std::string> out;
  for (const ClassInfo& c : classes_) {
    if (c.group == MalignancyGroup::kMalignant) out.push_back(c.code);
  }
  return out;
}

std::string LabelSet::ToString() const { return absl::StrJoin(codes(), ", "); }

bool LabelSet::operator==(const LabelSet& other) const {
  if (size() != other.size()) return false;
  for (int i = 0; i < size(); ++i) {
    if (classes_[i].code != other.classes_[i].code || classes_[i].group != other.classes_[i].group) {
      return false;
    }
  }
  return true;
}

absl::string_view MalignancyGroupName(MalignancyGroup group) {
  return group == MalignancyGroup::kMalignant ? "malignant" : "benign";
}

}  // namespace skinlesion
