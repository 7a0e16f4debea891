#include "skinlesion/image/format.h"

#include <string>

#include "gtest/gtest.h"

namespace skinlesion {
namespace {

using sv = absl::string_view;

TEST(ImageFormatTest, SignaturesAreRecognised) {
  EXPECT_EQ(SniffImageFormat("\xff\xd8\xff\xe0 rest"), ImageFormat::kJpeg);
  EXPECT_EQ(SniffImageFormat("\x89PNG\r\n\x1a\n...."), ImageFormat::kPng);
  EXPECT_EQ(SniffImageFormat(sv("RIFF\x10\0\0\0WEBPVP8 ", 16)), ImageFormat::kWebp);
  EXPECT_EQ(SniffImageFormat("BM\x36\0\0\0"), ImageFormat::kBmp);
  EXPECT_EQ(ImageFormatName(ImageFormat::kWebp), "webp");
}

TEST(ImageFormatTest, EverythingElseIsRefusedAndNamedWhereKnown) {
  for (sv bytes : {sv(""), sv("\xff\xd8"), sv("\x89PNG\r\n"), sv("RIFF\x10\0\0\0WAVEfmt ", 16),
                   sv("B"), sv("hello"), sv("GIF89a..."), sv("%PDF-1.7")}) {
    EXPECT_FALSE(SniffImageFormat(bytes).has_value()) << bytes;
  }
  EXPECT_EQ(KnownUnsupportedFormat("GIF87a"), "GIF");
  EXPECT_EQ(KnownUnsupportedFormat(sv("II*\0\x08\0\0\0", 8)), "TIFF");
  EXPECT_EQ(KnownUnsupportedFormat(sv("\0\0\0\x18" "ftypheic", 12)), "ISO-BMFF (HEIF/AVIF)");
  EXPECT_EQ(KnownUnsupportedFormat(sv("RIFF\x10\0\0\0WAVE", 12)), "RIFF (not WebP)");
  EXPECT_EQ(KnownUnsupportedFormat("hello"), "");
  EXPECT_EQ(UnsupportedFormatMessage("GIF89a"),
            "unsupported image format GIF; accepted: JPEG, PNG, WebP, BMP");
  EXPECT_EQ(UnsupportedFormatMessage("hello"),
            "unsupported image format; accepted: JPEG, PNG, WebP, BMP");
}

}  // namespace
}  // namespace skinlesion
