#include "skinlesion/common/tta.h"

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"

namespace skinlesion {

absl::string_view TtaName(Tta tta) {
  switch (tta) {
    case Tta::kNone:
      return "none";
    case Tta::kFlips:
      return "flips";
    case Tta::kDihedral:
      return "dihedral";
  }
  return "none";
}

absl::StatusOr<Tta> ParseTta(absl::string_view text) {
  const std::string lower = absl::AsciiStrToLower(text);
  for (const Tta tta : {Tta::kNone, Tta::kFlips, Tta::kDihedral}) {
    if (lower == TtaName(tta)) return tta;
  }
  return absl::InvalidArgumentError(
      absl::StrCat("test-time augmentation must be none, flips or dihedral, not \"", text, "\""));
}

int TtaViewCount(Tta tta) {
  switch (tta) {
    case Tta::kNone:
      return 1;
    case Tta::kFlips:
      return 3;
    case Tta::kDihedral:
      return 8;
  }
  return 1;
}

}  // namespace skinlesion
