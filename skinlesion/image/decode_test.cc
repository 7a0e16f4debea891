#include "skinlesion/image/decode.h"

#include <cmath>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "opencv2/core.hpp"
#include "opencv2/imgcodecs.hpp"
#include "opencv2/imgproc.hpp"
#include "skinlesion/common/rng.h"
#include "skinlesion/testing/testing.h"

namespace skinlesion {
namespace {

using ::skinlesion::testing::IsOk;
using ::skinlesion::testing::SourcePath;
using ::skinlesion::testing::StatusIs;
using ::testing::HasSubstr;

std::string ReadBytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

std::vector<std::string> FixtureJpegs() {
  std::vector<std::string> paths;
  for (const auto& e :
       std::filesystem::directory_iterator(SourcePath("tests/fixtures/ham10000/images"))) {
    if (e.path().extension() == ".jpg") paths.push_back(e.path().string());
  }
  std::sort(paths.begin(), paths.end());
  return paths;
}

// A deterministic RGB image whose channels differ, so a BGR/RGB mix-up shows.
cv::Mat TestRgb(int rows, int cols) {
  cv::Mat rgb(rows, cols, CV_8UC3);
  Rng rng(7);
  for (int y = 0; y < rows; ++y) {
    for (int x = 0; x < cols; ++x) {
      rgb.at<cv::Vec3b>(y, x) = cv::Vec3b(static_cast<uint8_t>(200 + (x % 50)),
                                          static_cast<uint8_t>(y * 255 / std::max(1, rows - 1)),
                                          static_cast<uint8_t>(rng.UniformInt(40)));
    }
  }
  return rgb;
}

// Encodes an RGB image with OpenCV (which takes BGR).
std::string Encode(const cv::Mat& rgb, const std::string& ext, std::vector<int> params = {}) {
  cv::Mat bgr;
  if (rgb.channels() == 3) {
    cv::cvtColor(rgb, bgr, cv::COLOR_RGB2BGR);
  } else {
    bgr = rgb;
  }
  std::vector<uint8_t> buf;
  EXPECT_TRUE(cv::imencode(ext, bgr, buf, params)) << ext;
  return std::string(buf.begin(), buf.end());
}

void ExpectSameImage(const cv::Mat& a, const cv::Mat& b) {
  ASSERT_EQ(a.size(), b.size());
  ASSERT_EQ(a.type(), b.type());
  EXPECT_EQ(cv::norm(a, b, cv::NORM_INF), 0.0);
}

void PutBe32(std::string& s, size_t at, uint32_t v) {
  for (int i = 0; i < 4; ++i) s[at + i] = static_cast<char>((v >> (24 - 8 * i)) & 0xFF);
}
void PutLe32(std::string& s, size_t at, uint32_t v) {
  for (int i = 0; i < 4; ++i) s[at + i] = static_cast<char>((v >> (8 * i)) & 0xFF);
}
std::string Le32(uint32_t v) {
  std::string s(4, '\0');
  PutLe32(s, 0, v);
  return s;
}

TEST(ImageDecodeTest, FixtureJpegsDecodeToRgbLikeImread) {
  const auto paths = FixtureJpegs();
  ASSERT_GE(paths.size(), 10u);
  for (const auto& path : paths) {
    SCOPED_TRACE(path);
    const std::string bytes = ReadBytes(path);
    auto info = ProbeImage(bytes);
    ASSERT_THAT(info, IsOk());
    EXPECT_EQ(info->format, ImageFormat::kJpeg);
    EXPECT_EQ(info->width, 224);
    EXPECT_EQ(info->height, 224);

    auto rgb = DecodeImage(bytes);
    ASSERT_THAT(rgb, IsOk());
    EXPECT_EQ(rgb->type(), CV_8UC3);
    EXPECT_TRUE(rgb->isContinuous());
    cv::Mat expected = cv::imread(path, cv::IMREAD_COLOR);
    cv::cvtColor(expected, expected, cv::COLOR_BGR2RGB);
    ExpectSameImage(*rgb, expected);
  }
}

TEST(ImageDecodeTest, DecodeImageFileReadsFixturesAndNamesThePath) {
  const std::string path = FixtureJpegs().front();
  auto rgb = DecodeImageFile(path);
  ASSERT_THAT(rgb, IsOk());
  EXPECT_EQ(rgb->size(), cv::Size(224, 224));

  EXPECT_THAT(DecodeImageFile("/nonexistent/x.jpg"),
              StatusIs(absl::StatusCode::kNotFound, HasSubstr("/nonexistent/x.jpg")));
  DecodeLimits tiny;
  tiny.max_bytes = 100;
  EXPECT_THAT(DecodeImageFile(path, tiny),
              StatusIs(absl::StatusCode::kResourceExhausted, HasSubstr(path)));

  testing::TempDir dir;
  testing::WriteFile(dir.Join("bad.jpg"), "\xff\xd8\xff\xe0 not really");
  EXPECT_THAT(DecodeImageFile(dir.Join("bad.jpg")),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("bad.jpg")));
}

TEST(ImageDecodeTest, LosslessFormatsRoundTripExactlyInRgbOrder) {
  const cv::Mat rgb = TestRgb(23, 37);  // Not square: catches width/height swaps.
  struct Case {
    std::string ext;
    std::vector<int> params;
    ImageFormat format;
  };
  const std::vector<Case> cases = {
      {".png", {}, ImageFormat::kPng},
      {".bmp", {}, ImageFormat::kBmp},
      {".webp", {cv::IMWRITE_WEBP_QUALITY, 101}, ImageFormat::kWebp},  // > 100: lossless.
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.ext);
    const std::string bytes = Encode(rgb, c.ext, c.params);
    auto info = ProbeImage(bytes);
    ASSERT_THAT(info, IsOk());
    EXPECT_EQ(info->format, c.format);
    EXPECT_EQ(ImageFormatName(info->format), c.ext.substr(1));
    EXPECT_EQ(info->width, 37);
    EXPECT_EQ(info->height, 23);
    auto decoded = DecodeImage(bytes);
    ASSERT_THAT(decoded, IsOk());
    ExpectSameImage(*decoded, rgb);
  }
}

TEST(ImageDecodeTest, LossyWebpAndJpegDecodeCloseToTheOriginal) {
  const cv::Mat rgb = TestRgb(40, 60);
  for (const std::string ext : {".webp", ".jpg"}) {
    SCOPED_TRACE(ext);
    const std::string bytes = Encode(rgb, ext);
    auto info = ProbeImage(bytes);
    ASSERT_THAT(info, IsOk());
    EXPECT_EQ(info->width, 60);
    EXPECT_EQ(info->height, 40);
    auto decoded = DecodeImage(bytes);
    ASSERT_THAT(decoded, IsOk());
    ASSERT_EQ(decoded->size(), rgb.size());
    // Mean absolute error small; a channel swap (R about 220, B about 20) would be huge.
    EXPECT_LT(cv::norm(*decoded, rgb, cv::NORM_L1) / rgb.total() / 3, 12.0);
  }
}

TEST(ImageDecodeTest, GrayAndAlphaAndSixteenBitBecomeEightBitRgb) {
  cv::Mat gray(10, 12, CV_8UC1);
  cv::randu(gray, 0, 256);
  for (const std::string ext : {".png", ".jpg", ".bmp"}) {
    SCOPED_TRACE(ext);
    auto decoded = DecodeImage(Encode(gray, ext));
    ASSERT_THAT(decoded, IsOk());
    ASSERT_EQ(decoded->type(), CV_8UC3);
    std::vector<cv::Mat> ch;
    cv::split(*decoded, ch);
    EXPECT_EQ(cv::norm(ch[0], ch[1], cv::NORM_INF), 0.0);
    EXPECT_EQ(cv::norm(ch[0], ch[2], cv::NORM_INF), 0.0);
    if (ext != ".jpg") {
      EXPECT_EQ(cv::norm(ch[0], gray, cv::NORM_INF), 0.0);
    }
  }

  cv::Mat rgba(8, 9, CV_8UC4, cv::Scalar(10, 20, 30, 128));  // BGRA for OpenCV.
  auto decoded = DecodeImage(Encode(rgba, ".png"));
  ASSERT_THAT(decoded, IsOk());
  ASSERT_EQ(decoded->type(), CV_8UC3);
  EXPECT_EQ(decoded->at<cv::Vec3b>(0, 0), cv::Vec3b(30, 20, 10));  // RGB.

  cv::Mat deep(5, 6, CV_16UC3, cv::Scalar(0, 32768, 65535));  // RGB; Encode swaps.
  decoded = DecodeImage(Encode(deep, ".png"));
  ASSERT_THAT(decoded, IsOk());
  ASSERT_EQ(decoded->type(), CV_8UC3);
  EXPECT_EQ(decoded->at<cv::Vec3b>(2, 3), cv::Vec3b(0, 128, 255));  // High bytes.
}

TEST(ImageDecodeTest, TopDownBmpIsProbedWithPositiveHeightAndDecodedUpright) {
  const cv::Mat rgb = TestRgb(6, 4);  // 4 px * 3 bytes = 12: rows need no padding.
  std::string bmp = "BM" + Le32(54 + 6 * 12) + Le32(0) + Le32(54);
  bmp += Le32(40) + Le32(4) + Le32(static_cast<uint32_t>(-6));  // Negative: top-down.
  bmp += std::string("\x01\x00\x18\x00", 4) + Le32(0) + Le32(6 * 12) + Le32(2835) + Le32(2835) +
         Le32(0) + Le32(0);
  ASSERT_EQ(bmp.size(), 54u);
  for (int y = 0; y < 6; ++y) {  // First stored row is the top row.
    for (int x = 0; x < 4; ++x) {
      const cv::Vec3b p = rgb.at<cv::Vec3b>(y, x);
      bmp += static_cast<char>(p[2]);  // BGR.
      bmp += static_cast<char>(p[1]);
      bmp += static_cast<char>(p[0]);
    }
  }
  auto info = ProbeImage(bmp);
  ASSERT_THAT(info, IsOk());
  EXPECT_EQ(info->format, ImageFormat::kBmp);
  EXPECT_EQ(info->width, 4);
  EXPECT_EQ(info->height, 6);
  auto decoded = DecodeImage(bmp);
  ASSERT_THAT(decoded, IsOk());
  ExpectSameImage(*decoded, rgb);

  // INT32_MIN height must not overflow anything.
  std::string evil = bmp;
  PutLe32(evil, 22, 0x80000000u);
  EXPECT_THAT(DecodeImage(evil), StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("BMP")));
  // A large top-down height is a limit, not a format, problem.
  evil = bmp;
  PutLe32(evil, 22, static_cast<uint32_t>(-20000));
  EXPECT_THAT(DecodeImage(evil), StatusIs(absl::StatusCode::kResourceExhausted, HasSubstr("side")));
  // Zero width.
  evil = bmp;
  PutLe32(evil, 18, 0);
  EXPECT_THAT(DecodeImage(evil), StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("BMP")));
}

TEST(ImageDecodeTest, WebpExtendedFormatHeaderIsParsed) {
  // Wrap a simple lossy WebP's VP8 chunk in a VP8X container of the same canvas.
  const std::string simple = Encode(TestRgb(30, 50), ".webp", {cv::IMWRITE_WEBP_QUALITY, 90});
  ASSERT_EQ(simple.substr(12, 4), "VP8 ");
  const std::string vp8_chunk = simple.substr(12);
  std::string vp8x = std::string("VP8X") + Le32(10) + std::string(4, '\0');
  vp8x += std::string("\x31\x00\x00\x1d\x00\x00", 6);  // 49 + 1 = 50 wide, 29 + 1 = 30 high.
  const std::string body = "WEBP" + vp8x + vp8_chunk;
  const std::string extended = "RIFF" + Le32(static_cast<uint32_t>(body.size())) + body;
  auto info = ProbeImage(extended);
  ASSERT_THAT(info, IsOk());
  EXPECT_EQ(info->format, ImageFormat::kWebp);
  EXPECT_EQ(info->width, 50);
  EXPECT_EQ(info->height, 30);
  auto decoded = DecodeImage(extended);
  ASSERT_THAT(decoded, IsOk());
  EXPECT_EQ(decoded->size(), cv::Size(50, 30));

  // A huge canvas is refused from the header alone.
  std::string huge = extended;
  huge[24] = '\xff';
  huge[25] = '\xff';
  huge[26] = '\x00';  // 65536 wide.
  EXPECT_THAT(DecodeImage(huge), StatusIs(absl::StatusCode::kResourceExhausted, ::testing::_));
  // Animation is refused.
  std::string animated = extended;
  animated[20] = '\x02';
  EXPECT_THAT(DecodeImage(animated),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("animated")));
}

TEST(ImageDecodeTest, ForgedHugePngHeaderIsRefusedBeforeDecoding) {
  std::string png = Encode(TestRgb(4, 4), ".png");
  PutBe32(png, 16, 100000);
  PutBe32(png, 20, 100000);
  auto info = ProbeImage(png);
  ASSERT_THAT(info, IsOk());
  EXPECT_EQ(info->width, 100000);
  EXPECT_EQ(info->height, 100000);
  EXPECT_THAT(DecodeImage(png),
              StatusIs(absl::StatusCode::kResourceExhausted, HasSubstr("100000x100000")));
  // Within max_side but over max_pixels.
  PutBe32(png, 16, 10000);
  PutBe32(png, 20, 10000);
  EXPECT_THAT(DecodeImage(png),
              StatusIs(absl::StatusCode::kResourceExhausted, HasSubstr("pixels")));
  // Over the PNG maximum.
  PutBe32(png, 16, 0x80000000u);
  EXPECT_THAT(ProbeImage(png), StatusIs(absl::StatusCode::kInvalidArgument, ::testing::_));
}

TEST(ImageDecodeTest, LimitsAreEnforced) {
  const std::string bytes = ReadBytes(FixtureJpegs().front());  // 224 x 224.
  DecodeLimits limits;
  limits.max_bytes = bytes.size() - 1;
  EXPECT_THAT(DecodeImage(bytes, limits),
              StatusIs(absl::StatusCode::kResourceExhausted, HasSubstr("bytes")));
  limits = DecodeLimits();
  limits.max_side = 223;
  EXPECT_THAT(DecodeImage(bytes, limits),
              StatusIs(absl::StatusCode::kResourceExhausted, HasSubstr("224x224")));
  limits = DecodeLimits();
  limits.max_pixels = 224 * 224 - 1;
  EXPECT_THAT(DecodeImage(bytes, limits),
              StatusIs(absl::StatusCode::kResourceExhausted, HasSubstr("50176 pixels")));
  limits.max_pixels = 224 * 224;
  EXPECT_THAT(DecodeImage(bytes, limits), IsOk());
}

TEST(ImageDecodeTest, TruncatedFilesAreInvalidArgument) {
  const std::string jpeg = ReadBytes(FixtureJpegs().front());
  EXPECT_THAT(DecodeImage(jpeg.substr(0, jpeg.size() / 2)),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("truncated JPEG")));
  // Every cut of the JPEG fails cleanly, including one missing only the EOI.
  for (size_t cut :
       {size_t{1}, size_t{3}, size_t{10}, size_t{100}, jpeg.size() - 2, jpeg.size() - 1}) {
    SCOPED_TRACE(cut);
    EXPECT_THAT(DecodeImage(jpeg.substr(0, cut)),
                StatusIs(absl::StatusCode::kInvalidArgument, ::testing::_));
  }
  const cv::Mat rgb = TestRgb(32, 32);
  for (const std::string ext : {".png", ".webp", ".bmp"}) {
    SCOPED_TRACE(ext);
    const std::string bytes = Encode(rgb, ext);
    for (size_t cut : {size_t{2}, size_t{12}, size_t{30}, bytes.size() / 2, bytes.size() - 1}) {
      SCOPED_TRACE(cut);
      EXPECT_THAT(DecodeImage(bytes.substr(0, cut)),
                  StatusIs(absl::StatusCode::kInvalidArgument, ::testing::_));
    }
  }
}

TEST(ImageDecodeTest, WebpThatLibwebpRejectsNeverReachesOtherDecoders) {
  // Found by the fuzzer: a WebP whose VP8 header libwebp rejects, with "DTED" at
  // offset 140, made cv::imdecode hand the bytes to GDAL through a temporary file.
  std::string webp = Encode(TestRgb(30, 50), ".webp", {cv::IMWRITE_WEBP_QUALITY, 90});
  ASSERT_GT(webp.size(), 150u);
  webp.replace(140, 4, "DTED");
  EXPECT_THAT(DecodeImage(webp), StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("DTED")));
  webp.replace(128, 4, "DICM");
  EXPECT_THAT(DecodeImage(webp), StatusIs(absl::StatusCode::kInvalidArgument, ::testing::_));
}

TEST(ImageDecodeTest, TrailingBytesAfterJpegEndAreIgnored) {
  const std::string jpeg = ReadBytes(FixtureJpegs().front());
  auto a = DecodeImage(jpeg);
  auto b = DecodeImage(jpeg + "trailing junk \xff\xd9\xff");
  ASSERT_THAT(a, IsOk());
  ASSERT_THAT(b, IsOk());
  ExpectSameImage(*a, *b);
}

TEST(ImageDecodeTest, UnsupportedAndGarbageInputs) {
  EXPECT_THAT(DecodeImage(""), StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("empty")));
  EXPECT_THAT(ProbeImage(""), StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("empty")));
  EXPECT_THAT(
      DecodeImage("GIF89a\x01\x00\x01\x00\x80\x00\x00"),
      StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("unsupported image format GIF")));
  EXPECT_THAT(DecodeImage(std::string("II*\0\x08\0\0\0", 8)),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("unsupported image format")));
  EXPECT_THAT(DecodeImage("hello, world"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("unsupported image format")));
  EXPECT_THAT(DecodeImage("RIFF\x10\0\0\0WAVEfmt "),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("unsupported image format")));
  Rng rng(1);
  std::string garbage(4096, '\0');
  for (char& c : garbage) c = static_cast<char>(rng.UniformInt(256));
  garbage[0] = 'x';
  EXPECT_THAT(DecodeImage(garbage), StatusIs(absl::StatusCode::kInvalidArgument, ::testing::_));
  // Valid magic, garbage after it.
  for (const std::string& magic :
       {std::string("\xff\xd8\xff"), std::string("\x89PNG\r\n\x1a\n"), std::string("BM")}) {
    EXPECT_THAT(DecodeImage(magic + garbage),
                StatusIs(absl::StatusCode::kInvalidArgument, ::testing::_));
  }
}

// Inserts an EXIF APP1 segment with the given orientation right after the SOI.
std::string WithExifOrientation(const std::string& jpeg, uint16_t orientation) {
  std::string tiff = std::string("MM\0*", 4) + std::string("\0\0\0\x08", 4);  // IFD at 8.
  tiff += std::string("\0\x01", 2);                                           // 1 entry.
  tiff += std::string("\x01\x12\0\x03\0\0\0\x01", 8);  // Orientation, SHORT, count 1.
  tiff += static_cast<char>(orientation >> 8);
  tiff += static_cast<char>(orientation & 0xFF);
  tiff += std::string("\0\0", 2);      // Value padding.
  tiff += std::string("\0\0\0\0", 4);  // No next IFD.
  const std::string payload = std::string("Exif\0\0", 6) + tiff;
  const size_t length = payload.size() + 2;
  std::string app1 = "\xff\xe1";
  app1 += static_cast<char>(length >> 8);
  app1 += static_cast<char>(length & 0xFF);
  return jpeg.substr(0, 2) + app1 + payload + jpeg.substr(2);
}

TEST(ImageDecodeTest, ExifOrientationIsApplied) {
  // Wide, with a bright block in the top-left corner so rotations are obvious.
  cv::Mat rgb(32, 64, CV_8UC3, cv::Scalar(20, 40, 60));
  rgb(cv::Rect(0, 0, 16, 8)).setTo(cv::Scalar(250, 250, 250));
  const std::string plain = Encode(rgb, ".jpg", {cv::IMWRITE_JPEG_QUALITY, 95});
  auto upright = DecodeImage(plain);
  ASSERT_THAT(upright, IsOk());
  ASSERT_EQ(upright->size(), cv::Size(64, 32));

  const std::string rotated_bytes = WithExifOrientation(plain, 6);
  auto info = ProbeImage(rotated_bytes);
  ASSERT_THAT(info, IsOk());
  EXPECT_EQ(info->width, 64);  // The header is not rotated...
  EXPECT_EQ(info->height, 32);
  auto rotated = DecodeImage(rotated_bytes);
  ASSERT_THAT(rotated, IsOk());
  ASSERT_EQ(rotated->size(), cv::Size(32, 64));  // ...the decoded image is.
  cv::Mat expected;
  cv::rotate(*upright, expected, cv::ROTATE_90_CLOCKWISE);  // Orientation 6.
  ExpectSameImage(*rotated, expected);
  // The bright block moved to the top-right corner.
  EXPECT_GT(rotated->at<cv::Vec3b>(2, 29)[0], 200);
  EXPECT_LT(rotated->at<cv::Vec3b>(60, 2)[0], 100);

  // Orientation 1 changes nothing.
  auto same = DecodeImage(WithExifOrientation(plain, 1));
  ASSERT_THAT(same, IsOk());
  ExpectSameImage(*same, *upright);
}

// A smooth photo-like image: what DCT scaling is for (sharp 1-px patterns alias).
cv::Mat SmoothRgb(int rows, int cols) {
  cv::Mat rgb(rows, cols, CV_8UC3);
  for (int y = 0; y < rows; ++y) {
    for (int x = 0; x < cols; ++x) {
      const double u = double(x) / cols, v = double(y) / rows;
      rgb.at<cv::Vec3b>(y, x) =
          cv::Vec3b(static_cast<uint8_t>(120 + 100 * std::sin(6 * u)),
                    static_cast<uint8_t>(90 + 80 * std::cos(5 * v)),
                    static_cast<uint8_t>(60 + 50 * std::sin(4 * (u + v))));
    }
  }
  return rgb;
}

TEST(ImageDecodeTest, PlanPicksTheSmallestScaleThatKeepsTheShorterSide) {
  const std::string jpeg = Encode(SmoothRgb(1500, 2000), ".jpg", {cv::IMWRITE_JPEG_QUALITY, 90});
  struct Case {
    int reduce_to_side, scale, width, height;
  };
  // Shorter side 1500: 1/8 -> 188, 1/4 -> 375, 1/2 -> 750.
  for (const Case& c : {Case{0, 1, 2000, 1500}, Case{100, 8, 250, 188}, Case{188, 8, 250, 188},
                        Case{189, 4, 500, 375}, Case{448, 2, 1000, 750}, Case{751, 1, 2000, 1500}}) {
    DecodeLimits limits;
    limits.reduce_to_side = c.reduce_to_side;
    auto plan = PlanDecode(jpeg, limits);
    ASSERT_THAT(plan, IsOk());
    EXPECT_EQ(plan->scale, c.scale) << c.reduce_to_side;
    EXPECT_EQ(plan->width, c.width) << c.reduce_to_side;
    EXPECT_EQ(plan->height, c.height) << c.reduce_to_side;
    EXPECT_EQ(plan->info.width, 2000);
    auto image = DecodeImage(jpeg, limits);
    ASSERT_THAT(image, IsOk());
    EXPECT_EQ(image->size(), cv::Size(c.width, c.height)) << c.reduce_to_side;
  }
  // Other formats always decode at full size.
  const std::string png = Encode(SmoothRgb(300, 400), ".png");
  DecodeLimits limits;
  limits.reduce_to_side = 10;
  auto plan = PlanDecode(png, limits);
  ASSERT_THAT(plan, IsOk());
  EXPECT_EQ(plan->scale, 1);
  auto image = DecodeImage(png, limits);
  ASSERT_THAT(image, IsOk());
  EXPECT_EQ(image->size(), cv::Size(400, 300));
}

TEST(ImageDecodeTest, ReducedJpegIsCloseToTheFullDecodeShrunk) {
  const cv::Mat rgb = SmoothRgb(1200, 1600);
  const std::string jpeg = Encode(rgb, ".jpg", {cv::IMWRITE_JPEG_QUALITY, 92});
  auto full = DecodeImage(jpeg);
  ASSERT_THAT(full, IsOk());
  DecodeLimits limits;
  limits.reduce_to_side = 150;  // 1/8: 200x150.
  auto reduced = DecodeImage(jpeg, limits);
  ASSERT_THAT(reduced, IsOk());
  ASSERT_EQ(reduced->size(), cv::Size(200, 150));
  cv::Mat shrunk;
  cv::resize(*full, shrunk, reduced->size(), 0, 0, cv::INTER_AREA);
  cv::Mat diff;
  cv::absdiff(*reduced, shrunk, diff);
  const cv::Scalar mean = cv::mean(diff);
  // RGB order kept (a swap would show as a difference of ~60 on red and blue).
  for (int c = 0; c < 3; ++c) EXPECT_LT(mean[c], 2.0) << c;
  double worst = 0;
  cv::minMaxLoc(diff.reshape(1), nullptr, &worst);
  EXPECT_LT(worst, 16.0);
}

TEST(ImageDecodeTest, ReducedJpegKeepsTheExifRotation) {
  cv::Mat rgb = SmoothRgb(400, 800);
  rgb(cv::Rect(0, 0, 200, 100)).setTo(cv::Scalar(250, 250, 250));
  const std::string jpeg =
      WithExifOrientation(Encode(rgb, ".jpg", {cv::IMWRITE_JPEG_QUALITY, 95}), 6);
  DecodeLimits limits;
  limits.reduce_to_side = 100;  // 1/4: 200x100, rotated to 100x200.
  auto image = DecodeImage(jpeg, limits);
  ASSERT_THAT(image, IsOk());
  ASSERT_EQ(image->size(), cv::Size(100, 200));
  EXPECT_GT(image->at<cv::Vec3b>(5, 95)[0], 200);  // The block: top-right.
}

TEST(ImageDecodeTest, DecodedPixelBudgetCountsTheReducedSize) {
  const std::string jpeg = Encode(SmoothRgb(1200, 1600), ".jpg");  // 1.92 Mpx
  const std::string png = Encode(SmoothRgb(1200, 1600), ".png");
  DecodeLimits limits;
  limits.max_decoded_pixels = 500'000;
  // Full size: over the budget, refused from the header.
  EXPECT_THAT(PlanDecode(jpeg, limits),
              StatusIs(absl::StatusCode::kResourceExhausted, HasSubstr("decode budget")));
  EXPECT_THAT(DecodeImage(jpeg, limits), StatusIs(absl::StatusCode::kResourceExhausted, HasSubstr("")));
  auto png_status = DecodeImage(png, limits);
  EXPECT_THAT(png_status, StatusIs(absl::StatusCode::kResourceExhausted,
                                   HasSubstr("only JPEGs decode at reduced scale")));
  // Reduced to 1/4 (400x300 = 120,000 pixels): within it.
  limits.reduce_to_side = 300;
  auto plan = PlanDecode(jpeg, limits);
  ASSERT_THAT(plan, IsOk());
  EXPECT_EQ(plan->pixels(), 400u * 300u);
  EXPECT_THAT(DecodeImage(jpeg, limits), IsOk());
  EXPECT_THAT(PlanDecode(png, limits), StatusIs(absl::StatusCode::kResourceExhausted, HasSubstr("")));
  // The header limits still come first.
  limits.max_pixels = 1'000'000;
  EXPECT_THAT(PlanDecode(jpeg, limits),
              StatusIs(absl::StatusCode::kResourceExhausted, HasSubstr("over the limit")));
  // Bytes over the limit and non-images: as DecodeImage.
  limits = DecodeLimits{};
  limits.max_bytes = 10;
  EXPECT_THAT(PlanDecode(jpeg, limits), StatusIs(absl::StatusCode::kResourceExhausted, HasSubstr("")));
  EXPECT_THAT(PlanDecode("hello", DecodeLimits{}), StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("")));
}

TEST(ImageDecodeTest, MutatedFilesNeverCrash) {
  std::vector<std::string> seeds = {ReadBytes(FixtureJpegs().front())};
  const cv::Mat rgb = TestRgb(16, 16);
  for (const std::string ext : {".png", ".webp", ".bmp"}) seeds.push_back(Encode(rgb, ext));
  Rng rng(99);
  int decoded = 0;
  for (const std::string& seed : seeds) {
    for (int round = 0; round < 60; ++round) {
      std::string bytes = seed;
      const int flips = 1 + static_cast<int>(rng.UniformInt(8));
      for (int i = 0; i < flips; ++i) {
        // Mostly in the headers, where the parsers live.
        const size_t at =
            rng.UniformInt(std::min<size_t>(bytes.size(), rng.Bernoulli(0.7) ? 64 : bytes.size()));
        bytes[at] = static_cast<char>(rng.UniformInt(256));
      }
      DecodeLimits limits;
      limits.max_pixels = 4'000'000;
      auto result = DecodeImage(bytes, limits);
      if (result.ok()) {
        ++decoded;
        EXPECT_EQ(result->type(), CV_8UC3);
      } else {
        EXPECT_TRUE(result.status().code() == absl::StatusCode::kInvalidArgument ||
                    result.status().code() == absl::StatusCode::kResourceExhausted)
            << result.status();
      }
    }
  }
  EXPECT_GT(decoded, 0);
}

}  // namespace
}  // namespace skinlesion
