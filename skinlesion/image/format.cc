#include "skinlesion/image/format.h"

#include <string>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"

namespace skinlesion {
namespace {

bool HasAt(absl::string_view bytes, size_t offset, absl::string_view magic) {
  return bytes.size() >= offset + magic.size() && bytes.substr(offset, magic.size()) == magic;
}

}  // namespace

absl::string_view ImageFormatName(ImageFormat format) {
  switch (format) {
    case ImageFormat::kJpeg:
      return "jpeg";
    case ImageFormat::kPng:
      return "png";
    case ImageFormat::kWebp:
      return "webp";
    case ImageFormat::kBmp:
      return "bmp";
  }
  return "unknown";
}

std::optional<ImageFormat> SniffImageFormat(absl::string_view bytes) {
  if (absl::StartsWith(bytes, "\xff\xd8\xff")) return ImageFormat::kJpeg;
  if (absl::StartsWith(bytes, "\x89PNG\r\n\x1a\n")) return ImageFormat::kPng;
  if (absl::StartsWith(bytes, "RIFF") && HasAt(bytes, 8, "WEBP")) return ImageFormat::kWebp;
  if (absl::StartsWith(bytes, "BM")) return ImageFormat::kBmp;
  return std::nullopt;
}

absl::string_view KnownUnsupportedFormat(absl::string_view bytes) {
  using sv = absl::string_view;
  auto starts = [&](sv magic) { return absl::StartsWith(bytes, magic); };
  if (starts("GIF87a") || starts("GIF89a")) return "GIF";
  if (starts(sv("II*\0", 4)) || starts(sv("MM\0*", 4))) return "TIFF";
  if (HasAt(bytes, 4, "ftyp")) return "ISO-BMFF (HEIF/AVIF)";
  if (starts(sv("\0\0\0\x0cjP  ", 8)) || starts("\xff\x4f\xff\x51")) return "JPEG 2000";
  if (starts("%PDF")) return "PDF";
  if (starts("RIFF")) return "RIFF (not WebP)";
  return "";
}

std::string UnsupportedFormatMessage(absl::string_view bytes) {
  const absl::string_view known = KnownUnsupportedFormat(bytes);
  return absl::StrCat("unsupported image format", known.empty() ? "" : " ", known,
                      "; accepted: JPEG, PNG, WebP, BMP");
}

}  // namespace skinlesion
