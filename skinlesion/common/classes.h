// The diagnostic classes a model predicts: its label set.
//
// A model's classes come from its data and travel with it (the manifest's "labels"
// and "malignant" fields), so a model trained on ISIC 2019's 8 classes or a binary
// melanoma-vs-other model is served, explained and shown with its own labels. The 7
// HAM10000 classes are the default (LabelSet::Ham10000()).
//
// Index order is the order of the codes given; the loaders sort them alphabetically
// (the order of torchvision's ImageFolder and of most published HAM10000 models:
// akiec, bcc, bkl, df, mel, nv, vasc), so a logit index means the same class in the
// model, its manifest, the metrics and the APIs. Codes are matched case-insensitively.
//
// Malignancy grouping: the known codes (KnownClass) carry their group (akiec, bcc, mel
// and scc malignant or pre-malignant; the rest benign); a label set may list its
// malignant codes explicitly instead (a clinic's own labels). Unknown codes are benign
// unless listed.
//
//   const LabelSet& ham = LabelSet::Ham10000();
//   absl::StatusOr<LabelSet> own = LabelSet::Create({"benign", "melanoma"}, {{"melanoma"}});
#ifndef SKINLESION_COMMON_CLASSES_H_
#define SKINLESION_COMMON_CLASSES_H_

#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace skinlesion {

// The HAM10000 label set's size (the default model's class count).
inline constexpr int kHam10000NumClasses = 7;
// More classes than this is not a lesion classifier's label set (and keeps a bad
// manifest from allocating without bound).
inline constexpr int kMaxClasses = 1000;

enum class MalignancyGroup {
  kBenign,
  // Malignant or pre-malignant (akiec is an in-situ carcinoma / precursor).
  kMalignant,
};

struct ClassInfo {
  int index = 0;       // Logit index, 0..size-1.
  std::string code;    // Lower case: "mel".
  std::string name;    // English name: "Melanoma" (the code for an unknown code).
  MalignancyGroup group = MalignancyGroup::kBenign;
};

// OK when `code` (as given: lower case) is a valid class code: 1-32 characters of
// [a-z0-9_-]; InvalidArgument saying so otherwise.
absl::Status CheckClassCode(absl::string_view code);

// The name and default group of a well-known code (HAM10000's 7, ISIC 2019's scc),
// case-insensitively; nullopt for other codes. index is 0.
std::optional<ClassInfo> KnownClass(absl::string_view code);

class LabelSet {
 public:
  // The 7 HAM10000 classes, alphabetical.
  static const LabelSet& Ham10000();

  // `codes` in index order: at least 2, at most kMaxClasses, unique after lower-casing,
  // each 1-32 characters of [a-z0-9_-]. `malignant`, when given, lists the malignant
  // codes (each one of `codes`; the others are benign); otherwise KnownClass decides.
  // InvalidArgument naming the offending code otherwise.
  static absl::StatusOr<LabelSet> Create(const std::vector<std::string>& codes,
                                         const std::optional<std::vector<std::string>>& malignant = std::nullopt);

  int size() const { return static_cast<int>(classes_.size()); }
  // index must be in [0, size()).
  const ClassInfo& at(int index) const;
  const std::vector<ClassInfo>& classes() const { return classes_; }
  std::vector<ClassInfo>::const_iterator begin() const { return classes_.begin(); }
  std::vector<ClassInfo>::const_iterator end() const { return classes_.end(); }

  // The class with `code` (case-insensitive, surrounding spaces ignored), or
  // InvalidArgument listing the valid codes.
  absl::StatusOr<ClassInfo> Find(absl::string_view code) const;
  // Its index, or nullopt.
  std::optional<int> IndexOf(absl::string_view code) const;

  bool IsMalignant(int index) const { return at(index).group == MalignancyGroup::kMalignant; }
  bool HasMalignant() const;

  std::vector<std::string> codes() const;
  std::vector<std::string> malignant_codes() const;
  // "akiec, bcc, bkl, df, mel, nv, vasc".
  std::string ToString() const;

  bool operator==(const LabelSet& other) const;
  bool operator!=(const LabelSet& other) const { return !(*this == other); }

 private:
  std::vector<ClassInfo> classes_;
};

absl::string_view MalignancyGroupName(MalignancyGroup group);  // "benign" / "malignant"

}  // namespace skinlesion

#endif  // SKINLESION_COMMON_CLASSES_H_
