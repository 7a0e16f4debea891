// ImageNet's channel statistics: the input normalisation of every model trained here,
// as torchvision's pretrained weights expect it. The one place they are written.
#ifndef SKINLESION_COMMON_IMAGENET_H_
#define SKINLESION_COMMON_IMAGENET_H_

#include <array>

namespace skinlesion {

inline constexpr std::array<float, 3> kImageNetMean{0.485f, 0.456f, 0.406f};
inline constexpr std::array<float, 3> kImageNetStd{0.229f, 0.224f, 0.225f};

}  // namespace skinlesion

#endif  // SKINLESION_COMMON_IMAGENET_H_
