// Image formats recognised by their magic bytes: the one sniffing rule shared by the
// decoder (skinlesion/image/decode.h) and the gateway's early checks. OpenCV-free
// and allocation-free, so services that never decode (the gateway) can use it.
//
//   if (!SniffImageFormat(bytes)) ...  // not a JPEG, PNG, WebP or BMP
#ifndef SKINLESION_IMAGE_FORMAT_H_
#define SKINLESION_IMAGE_FORMAT_H_

#include <optional>
#include <string>

#include "absl/strings/string_view.h"

namespace skinlesion {

enum class ImageFormat { kJpeg, kPng, kWebp, kBmp };

// "jpeg", "png", "webp", "bmp".
absl::string_view ImageFormatName(ImageFormat format);

// The accepted format whose signature `bytes` start with: JPEG (FF D8 FF), PNG (its
// 8-byte signature), WebP ("RIFF" + 4 bytes + "WEBP"), BMP ("BM"); nullopt otherwise.
// Only the signature: the header may still be malformed (ProbeImage checks it).
std::optional<ImageFormat> SniffImageFormat(absl::string_view bytes);

// A few formats we refuse, named for a friendlier message ("GIF", "TIFF",
// "ISO-BMFF (HEIF/AVIF)", "JPEG 2000", "PDF", "RIFF (not WebP)"); "" when unknown.
absl::string_view KnownUnsupportedFormat(absl::string_view bytes);

// "unsupported image format GIF; accepted: JPEG, PNG, WebP, BMP" (the name left out
// when unknown): the message for bytes SniffImageFormat refuses.
std::string UnsupportedFormatMessage(absl::string_view bytes);

}  // namespace skinlesion

#endif  // SKINLESION_IMAGE_FORMAT_H_
