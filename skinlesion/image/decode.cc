#include "skinlesion/image/decode.h"

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <exception>
#include <fstream>
#include <new>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "opencv2/core.hpp"
#include "opencv2/core/hal/intrin.hpp"
#include "opencv2/imgcodecs.hpp"
#include "skinlesion/common/status.h"

namespace skinlesion {
namespace {

uint32_t Be16(const uint8_t* p) { return (uint32_t{p[0]} << 8) | p[1]; }
uint32_t Be32(const uint8_t* p) {
  return (uint32_t{p[0]} << 24) | (uint32_t{p[1]} << 16) | (uint32_t{p[2]} << 8) | p[3];
}
uint32_t Le16(const uint8_t* p) { return uint32_t{p[0]} | (uint32_t{p[1]} << 8); }
uint32_t Le24(const uint8_t* p) { return Le16(p) | (uint32_t{p[2]} << 16); }
uint32_t Le32(const uint8_t* p) { return Le24(p) | (uint32_t{p[3]} << 24); }

bool HasAt(const uint8_t* p, size_t n, size_t offset, absl::string_view magic) {
  return n >= offset + magic.size() && std::memcmp(p + offset, magic.data(), magic.size()) == 0;
}

absl::Status Truncated(absl::string_view format, absl::string_view what) {
  return absl::InvalidArgumentError(absl::StrCat("truncated ", format, " data: ", what));
}
absl::Status Malformed(absl::string_view format, absl::string_view what) {
  return absl::InvalidArgumentError(absl::StrCat("malformed ", format, " data: ", what));
}

// JPEG start-of-frame markers: C0-CF except DHT (C4), JPG (C8) and DAC (CC).
bool IsSof(uint8_t m) { return m >= 0xC0 && m <= 0xCF && m != 0xC4 && m != 0xC8 && m != 0xCC; }

// Walks the JPEG marker segments. With `to_end`, also walks every scan's
// entropy-coded data and requires the EOI marker; otherwise stops at the first SOFn.
absl::Status WalkJpeg(const uint8_t* p, size_t n, bool to_end, ImageInfo* info) {
  constexpr absl::string_view kFmt = "JPEG";
  size_t pos = 2;  // After SOI.
  bool have_sof = false;
  for (;;) {
    if (pos >= n) {
      return Truncated(kFmt, have_sof ? "no end-of-image marker" : "no frame header");
    }
    if (p[pos] != 0xFF) {
      // Extraneous bytes before a marker: libjpeg skips them (with a warning), so the
      // walk does too and stays in step with what the decoder will read.
      const void* ff = std::memchr(p + pos, 0xFF, n - pos);
      if (ff == nullptr) return Truncated(kFmt, "no marker after extraneous bytes");
      pos = static_cast<size_t>(static_cast<const uint8_t*>(ff) - p);
    }
    while (pos < n && p[pos] == 0xFF) ++pos;  // Fill bytes.
    if (pos >= n) return Truncated(kFmt, "ends inside a marker");
    const uint8_t marker = p[pos++];
    if (marker == 0xD9) {  // EOI
      if (!have_sof) return Malformed(kFmt, "end of image before the frame header");
      return absl::OkStatus();
    }
    if (marker == 0x00) continue;  // A stuffed zero outside scan data: junk, as libjpeg.
    if (marker == 0xD8) return Malformed(kFmt, "a second start-of-image marker");
    if (marker == 0x01 || (marker >= 0xD0 && marker <= 0xD7)) continue;  // No length.
    if (n - pos < 2) return Truncated(kFmt, "ends inside a segment length");
    const size_t length = Be16(p + pos);
    if (length < 2) return Malformed(kFmt, "segment length below 2");
    if (n - pos < length) return Truncated(kFmt, "ends inside a marker segment");
    const uint8_t* segment = p + pos + 2;
    if (IsSof(marker)) {
      if (have_sof) return Malformed(kFmt, "more than one frame header");
      if (length < 8) return Malformed(kFmt, "frame header too short");
      info->height = static_cast<int>(Be16(segment + 1));
      info->width = static_cast<int>(Be16(segment + 3));
      if (info->width == 0) return Malformed(kFmt, "zero width");
      if (info->height == 0) {
        return Malformed(kFmt, "height defined by a DNL marker is not supported");
      }
      have_sof = true;
      if (!to_end) return absl::OkStatus();
    }
    pos += length;
    if (marker == 0xDA) {  // SOS: entropy-coded data follows, up to the next marker.
      if (!have_sof) return Malformed(kFmt, "scan before the frame header");
      for (;;) {
        const void* ff = std::memchr(p + pos, 0xFF, n - pos);
        if (ff == nullptr) return Truncated(kFmt, "ends inside scan data");
        const size_t at = static_cast<size_t>(static_cast<const uint8_t*>(ff) - p);
        if (at + 1 >= n) return Truncated(kFmt, "ends inside scan data");
        const uint8_t next = p[at + 1];
        if (next == 0x00 || (next >= 0xD0 && next <= 0xD7)) {
          pos = at + 2;  // Stuffed byte or restart marker: still scan data.
        } else if (next == 0xFF) {
          pos = at + 1;  // Fill byte before a marker.
        } else {
          pos = at;  // A real marker.
          break;
        }
      }
    }
  }
}

absl::Status ProbePng(const uint8_t* p, size_t n, ImageInfo* info) {
  constexpr absl::string_view kFmt = "PNG";
  // Signature (8), IHDR length and type (8), IHDR data (13), CRC (4).
  if (n < 33) return Truncated(kFmt, "shorter than the IHDR chunk");
  if (Be32(p + 8) != 13 || !HasAt(p, n, 12, "IHDR")) {
    return Malformed(kFmt, "the first chunk is not a 13-byte IHDR");
  }
  const uint32_t width = Be32(p + 16);
  const uint32_t height = Be32(p + 20);
  if (width == 0 || height == 0 || width > 0x7FFFFFFF || height > 0x7FFFFFFF) {
    return Malformed(kFmt, absl::StrCat("invalid dimensions ", width, "x", height));
  }
  info->width = static_cast<int>(width);
  info->height = static_cast<int>(height);
  return absl::OkStatus();
}

absl::Status ProbeWebp(const uint8_t* p, size_t n, ImageInfo* info) {
  constexpr absl::string_view kFmt = "WebP";
  if (n < 20) return Truncated(kFmt, "shorter than the first chunk header");
  const uint64_t riff_size = Le32(p + 4);
  if (riff_size < 12) return Malformed(kFmt, "RIFF size too small");
  if (riff_size + 8 > n) return Truncated(kFmt, "shorter than its RIFF size");
  const uint8_t* chunk = p + 12;
  const uint64_t chunk_size = Le32(chunk + 4);
  const uint8_t* payload = chunk + 8;
  const size_t available = n - 20;
  uint32_t width = 0, height = 0;
  if (std::memcmp(chunk, "VP8 ", 4) == 0) {
    if (chunk_size < 10 || available < 10) return Truncated(kFmt, "VP8 frame header");
    const uint32_t tag = Le24(payload);
    if ((tag & 1) != 0) return Malformed(kFmt, "the VP8 frame is not a key frame");
    if (payload[3] != 0x9D || payload[4] != 0x01 || payload[5] != 0x2A) {
      return Malformed(kFmt, "bad VP8 start code");
    }
    width = Le16(payload + 6) & 0x3FFF;
    height = Le16(payload + 8) & 0x3FFF;
  } else if (std::memcmp(chunk, "VP8L", 4) == 0) {
    if (chunk_size < 5 || available < 5) return Truncated(kFmt, "VP8L header");
    if (payload[0] != 0x2F) return Malformed(kFmt, "bad VP8L signature");
    const uint32_t bits = Le32(payload + 1);
    if ((bits >> 29) != 0) return Malformed(kFmt, "unknown VP8L version");
    width = (bits & 0x3FFF) + 1;
    height = ((bits >> 14) & 0x3FFF) + 1;
  } else if (std::memcmp(chunk, "VP8X", 4) == 0) {
    if (chunk_size < 10 || available < 10) return Truncated(kFmt, "VP8X header");
    if ((payload[0] & 0x02) != 0) return Malformed(kFmt, "animated WebP is not supported");
    width = Le24(payload + 4) + 1;
    height = Le24(payload + 7) + 1;
  } else {
    return Malformed(kFmt, "the first chunk is not VP8, VP8L or VP8X");
  }
  if (width == 0 || height == 0) return Malformed(kFmt, "zero width or height");
  info->width = static_cast<int>(width);
  info->height = static_cast<int>(height);
  return absl::OkStatus();
}

absl::Status ProbeBmp(const uint8_t* p, size_t n, ImageInfo* info) {
  constexpr absl::string_view kFmt = "BMP";
  if (n < 18) return Truncated(kFmt, "shorter than the file header");
  const uint32_t header_size = Le32(p + 14);
  int64_t width = 0, height = 0;
  if (header_size == 12) {  // BITMAPCOREHEADER: unsigned 16-bit sides.
    if (n < 26) return Truncated(kFmt, "core header");
    width = Le16(p + 18);
    height = Le16(p + 20);
  } else if (header_size >= 40 && header_size <= 124) {  // BITMAPINFOHEADER .. V5.
    if (n < 26) return Truncated(kFmt, "info header");
    width = static_cast<int32_t>(Le32(p + 18));
    height = static_cast<int32_t>(Le32(p + 22));
    if (height < 0) height = -height;  // Top-down; int64 so INT32_MIN is safe.
  } else {
    return Malformed(kFmt, absl::StrCat("unsupported header size ", header_size));
  }
  if (width <= 0 || height <= 0) {
    return Malformed(kFmt, absl::StrCat("invalid dimensions ", width, "x", height));
  }
  if (width > 0x7FFFFFFF || height > 0x7FFFFFFF) {
    return Malformed(kFmt, "dimensions out of range");
  }
  info->width = static_cast<int>(width);
  info->height = static_cast<int>(height);
  return absl::OkStatus();
}

absl::StatusOr<ImageInfo> Probe(absl::string_view bytes, bool jpeg_to_end) {
  if (bytes.empty()) return absl::InvalidArgumentError("empty image data");
  const auto* p = reinterpret_cast<const uint8_t*>(bytes.data());
  const size_t n = bytes.size();
  ImageInfo info;
  const std::optional<ImageFormat> format = SniffImageFormat(bytes);
  if (!format.has_value()) return absl::InvalidArgumentError(UnsupportedFormatMessage(bytes));
  info.format = *format;
  switch (*format) {
    case ImageFormat::kJpeg:
      SL_RETURN_IF_ERROR(WalkJpeg(p, n, jpeg_to_end, &info));
      break;
    case ImageFormat::kPng:
      SL_RETURN_IF_ERROR(ProbePng(p, n, &info));
      break;
    case ImageFormat::kWebp:
      SL_RETURN_IF_ERROR(ProbeWebp(p, n, &info));
      break;
    case ImageFormat::kBmp:
      SL_RETURN_IF_ERROR(ProbeBmp(p, n, &info));
      break;
  }
  return info;
}

// BGR to RGB in place. cv::cvtColor measured about 1 ms slower per 600 x 450 image
// right after imdecode; this is one pass of 16-pixel deinterleave/interleave steps.
void SwapRedBlue(cv::Mat& image) {
  const int cols = image.cols;
  for (int y = 0; y < image.rows; ++y) {
    uint8_t* p = image.ptr<uint8_t>(y);
    int x = 0;
#if CV_SIMD128
    for (; x + 16 <= cols; x += 16) {
      cv::v_uint8x16 b, g, r;
      cv::v_load_deinterleave(p + 3 * x, b, g, r);
      cv::v_store_interleave(p + 3 * x, r, g, b);
    }
#endif
    for (; x < cols; ++x) std::swap(p[3 * x], p[3 * x + 2]);
  }
}

// cv::imdecode picks its decoder by signature alone, first match in a fixed order:
// BMP, HDR, JPEG, WebP, ..., PNG, DICOM (GDCM), ..., GDAL. Our BMP, JPEG and PNG
// magics are exactly OpenCV's signatures for them and no earlier decoder can claim
// those bytes. The WebP decoder's signature is stricter (libwebp must parse the
// first 32 bytes), so a WebP-looking file that libwebp rejects falls through; every
// later decoder wants bytes at offset 0 that "RIFF" is not, except DICOM ("DICM" at
// 128) and GDAL ("DTED" at 140), which decode through temporary files with large
// libraries we do not want to expose. Refuse those markers outright.
absl::Status CheckDecoderDispatch(absl::string_view bytes, ImageFormat format) {
  if (format != ImageFormat::kWebp) return absl::OkStatus();
  const auto* p = reinterpret_cast<const uint8_t*>(bytes.data());
  if (HasAt(p, bytes.size(), 128, "DICM") || HasAt(p, bytes.size(), 140, "DTED")) {
    return Malformed("WebP", "carries a DICOM or DTED signature");
  }
  return absl::OkStatus();
}

absl::Status CheckLimits(const ImageInfo& info, const DecodeLimits& limits) {
  if (info.width > limits.max_side || info.height > limits.max_side) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "image is ", info.width, "x", info.height, ", a side over the limit of ", limits.max_side));
  }
  const uint64_t pixels = uint64_t(info.width) * uint64_t(info.height);
  if (pixels > limits.max_pixels) {
    return absl::ResourceExhaustedError(absl::StrCat("image is ", info.width, "x", info.height,
                                                     " = ", pixels, " pixels, over the limit of ",
                                                     limits.max_pixels));
  }
  return absl::OkStatus();
}

int CeilDiv(int a, int b) { return (a + b - 1) / b; }

absl::StatusOr<DecodePlan> Plan(const ImageInfo& info, const DecodeLimits& limits) {
  SL_RETURN_IF_ERROR(CheckLimits(info, limits));
  DecodePlan plan{.info = info, .scale = 1, .width = info.width, .height = info.height};
  if (info.format == ImageFormat::kJpeg && limits.reduce_to_side > 0) {
    const int shorter = std::min(info.width, info.height);
    for (int scale : {8, 4, 2}) {
      if (CeilDiv(shorter, scale) >= limits.reduce_to_side) {
        plan.scale = scale;
        break;
      }
    }
    plan.width = CeilDiv(info.width, plan.scale);
    plan.height = CeilDiv(info.height, plan.scale);
  }
  if (limits.max_decoded_pixels > 0 && plan.pixels() > limits.max_decoded_pixels) {
    return absl::ResourceExhaustedError(absl::StrCat(
        ImageFormatName(info.format), " image of ", info.width, "x", info.height, " decodes to ",
        plan.pixels(), " pixels, over the decode budget of ", limits.max_decoded_pixels,
        info.format == ImageFormat::kJpeg ? "" : " (only JPEGs decode at reduced scale: "
                                                 "send a JPEG or a smaller image)"));
  }
  return plan;
}

}  // namespace

absl::StatusOr<ImageInfo> ProbeImage(absl::string_view bytes) {
  return Probe(bytes, /*jpeg_to_end=*/false);
}

absl::StatusOr<DecodePlan> PlanDecode(absl::string_view bytes, const DecodeLimits& limits) {
  if (bytes.size() > limits.max_bytes) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "image data is ", bytes.size(), " bytes, over the limit of ", limits.max_bytes));
  }
  SL_ASSIGN_OR_RETURN(const ImageInfo info, Probe(bytes, /*jpeg_to_end=*/false));
  return Plan(info, limits);
}

absl::StatusOr<cv::Mat> DecodeImage(absl::string_view bytes, const DecodeLimits& limits) {
  if (bytes.size() > limits.max_bytes) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "image data is ", bytes.size(), " bytes, over the limit of ", limits.max_bytes));
  }
  if (bytes.size() > size_t{0x7FFFFFFF}) {  // cv::Mat columns are int.
    return absl::ResourceExhaustedError("image data over 2 GiB");
  }
  SL_ASSIGN_OR_RETURN(const ImageInfo info, Probe(bytes, /*jpeg_to_end=*/true));
  SL_ASSIGN_OR_RETURN(const DecodePlan plan, Plan(info, limits));
  const absl::string_view name = ImageFormatName(info.format);
  SL_RETURN_IF_ERROR(CheckDecoderDispatch(bytes, info.format));

  // A header over the bytes (no copy); imdecode only reads it.
  const cv::Mat encoded(1, static_cast<int>(bytes.size()), CV_8UC1,
                        const_cast<char*>(bytes.data()));
  const int flags = plan.scale == 8   ? cv::IMREAD_REDUCED_COLOR_8
                    : plan.scale == 4 ? cv::IMREAD_REDUCED_COLOR_4
                    : plan.scale == 2 ? cv::IMREAD_REDUCED_COLOR_2
                                      : cv::IMREAD_COLOR;
  cv::Mat image;
  try {
    image = cv::imdecode(encoded, flags);
  } catch (const cv::Exception& e) {
    return absl::InvalidArgumentError(
        absl::StrCat("cannot decode ", name, " data: ", e.err.empty() ? e.what() : e.err));
  } catch (const std::bad_alloc&) {
    return absl::ResourceExhaustedError(absl::StrCat("out of memory decoding ", name, " data"));
  }
  if (image.empty()) {
    return absl::InvalidArgumentError(absl::StrCat("cannot decode ", name, " data (corrupt or ",
                                                   "an unsupported variant of the format)"));
  }
  const bool same = image.cols == plan.width && image.rows == plan.height;
  const bool rotated = info.format == ImageFormat::kJpeg && image.cols == plan.height &&
                       image.rows == plan.width;  // EXIF orientation 5-8.
  if (image.type() != CV_8UC3 || !(same || rotated)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "decoded ", name, " image is ", image.cols, "x", image.rows, " with type ", image.type(),
        "; the header said ", info.width, "x", info.height,
        plan.scale > 1 ? absl::StrCat(" (1/", plan.scale, " scale: ", plan.width, "x", plan.height, ")")
                       : ""));
  }
  SwapRedBlue(image);
  return image;
}

absl::StatusOr<cv::Mat> DecodeImageFile(const std::string& path, const DecodeLimits& limits) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    return absl::NotFoundError(absl::StrCat("cannot open ", path, ": ", std::strerror(errno)));
  }
  in.seekg(0, std::ios::end);
  const std::streamoff size = in.tellg();
  if (size < 0) return absl::InvalidArgumentError(absl::StrCat("cannot size ", path));
  if (static_cast<uint64_t>(size) > limits.max_bytes) {
    return absl::ResourceExhaustedError(
        absl::StrCat(path, " is ", size, " bytes, over the limit of ", limits.max_bytes));
  }
  in.seekg(0);
  std::string data(static_cast<size_t>(size), '\0');
  in.read(data.data(), size);
  if (!in) return absl::DataLossError(absl::StrCat("short read of ", path));
  auto image = DecodeImage(data, limits);
  if (!image.ok()) return Annotate(image.status(), path);
  return image;
}

}  // namespace skinlesion
