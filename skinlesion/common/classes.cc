#include "skinlesion/common/classes.h"

#include "skinlesion/common/logging.h"
#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace skinlesion {
namespace {

constexpr std::array<ClassInfo, kNumClasses> kClasses = {{
    {0, "akiec", "Actinic keratosis / intraepithelial carcinoma", MalignancyGroup::kMalignant},
    {1, "bcc", "Basal cell carcinoma", MalignancyGroup::kMalignant},
    {2, "bkl", "Benign keratosis-like lesion", MalignancyGroup::kBenign},
    {3, "df", "Dermatofibroma", MalignancyGroup::kBenign},
    {4, "mel", "Melanoma", MalignancyGroup::kMalignant},
    {5, "nv", "Melanocytic nevus", MalignancyGroup::kBenign},
    {6, "vasc", "Vascular lesion", MalignancyGroup::kBenign},
}};

}  // namespace

const std::array<ClassInfo, kNumClasses>& AllClasses() { return kClasses; }

absl::StatusOr<ClassInfo> ClassFromCode(absl::string_view code) {
  const std::string lower = absl::AsciiStrToLower(absl::StripAsciiWhitespace(code));
  for (const ClassInfo& c : kClasses) {
    if (c.code == lower) return c;
  }
  std::vector<absl::string_view> codes;
  for (const ClassInfo& c : kClasses) codes.push_back(c.code);
  return absl::InvalidArgumentError(absl::StrCat("unknown lesion class '", code,
                                                 "' (expected one of ",
                                                 absl::StrJoin(codes, ", "), ")"));
}

const ClassInfo& ClassAt(int index) {
  SL_CHECK(index >= 0 && index < kNumClasses) << "class index " << index << " out of range";
  return kClasses[index];
}

bool IsMalignant(int index) { return ClassAt(index).group == MalignancyGroup::kMalignant; }

absl::string_view MalignancyGroupName(MalignancyGroup group) {
  return group == MalignancyGroup::kMalignant ? "malignant" : "benign";
}

}  // namespace skinlesion
