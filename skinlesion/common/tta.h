// Test-time augmentation: the views of an image whose softmax outputs are averaged
// into one answer. A dermoscopic lesion has no "up", so the symmetries of the square
// are views of the same lesion.
//
//   none      the image alone.
//   flips     the image, its left-right and its up-down mirror (3 views).
//   dihedral  the 8 symmetries of the square: 4 rotations by 90 degrees, each also
//             mirrored (8 views; square inputs only).
//
// LibTorch-free (the manifest records a model's choice); models/numerics.h runs it.
#ifndef SKINLESION_COMMON_TTA_H_
#define SKINLESION_COMMON_TTA_H_

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace skinlesion {

enum class Tta { kNone, kFlips, kDihedral };

// "none" / "flips" / "dihedral".
absl::string_view TtaName(Tta tta);
// Accepts the names above (case-insensitive); InvalidArgument naming them otherwise.
absl::StatusOr<Tta> ParseTta(absl::string_view text);
// 1, 3 or 8.
int TtaViewCount(Tta tta);

}  // namespace skinlesion

#endif  // SKINLESION_COMMON_TTA_H_
