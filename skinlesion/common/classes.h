// The 7 HAM10000 diagnostic classes, defined once for every component.
//
// Index order is alphabetical by code (akiec, bcc, bkl, df, mel, nv, vasc), the
// order of torchvision's ImageFolder and of most published HAM10000 models, so a
// logit index means the same class everywhere (models, manifests, metrics, APIs).
// The ISIC 2018 Task 3 CSV uses another column order; its reader maps columns by
// name through ClassFromCode().
#ifndef SKINLESION_COMMON_CLASSES_H_
#define SKINLESION_COMMON_CLASSES_H_

#include <array>
#include <string>
#include "absl/strings/string_view.h"

#include "absl/status/statusor.h"

namespace skinlesion {

inline constexpr int kNumClasses = 7;

enum class MalignancyGroup {
  kBenign,
  // Malignant or pre-malignant (akiec is an in-situ carcinoma / precursor).
  kMalignant,
};

struct ClassInfo {
  int index;                 // Logit index, 0..kNumClasses-1.
  absl::string_view code;     // HAM10000 `dx` code, lower case: "mel".
  absl::string_view name;     // English name: "Melanoma".
  MalignancyGroup group;
};

// All classes in index order.
const std::array<ClassInfo, kNumClasses>& AllClasses();

// Looks a class up by its code, case-insensitively ("MEL" and "mel" both work).
// Returns InvalidArgument listing the valid codes otherwise.
absl::StatusOr<ClassInfo> ClassFromCode(absl::string_view code);

// The class at `index`; index must be in [0, kNumClasses).
const ClassInfo& ClassAt(int index);

bool IsMalignant(int index);

absl::string_view MalignancyGroupName(MalignancyGroup group);  // "benign" / "malignant"

}  // namespace skinlesion

#endif  // SKINLESION_COMMON_CLASSES_H_
