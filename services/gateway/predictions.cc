#include "services/gateway/predictions.h"

#include <openssl/rand.h>

#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "skinlesion/common/logging.h"
#include "skinlesion/common/status.h"
#include "skinlesion/image/format.h"
#include "skinlesion/telemetry/families.h"

namespace skinlesion::gateway {
namespace {

bool IsImageType(const std::string& media_type) {
  return media_type == "image/jpeg" || media_type == "image/png" || media_type == "image/webp" ||
         media_type == "image/bmp";
}

std::string RandomHex(size_t bytes) {
  std::vector<unsigned char> buffer(bytes);
  SL_CHECK(RAND_bytes(buffer.data(), static_cast<int>(bytes)) == 1) << "RAND_bytes failed";
  static const char kHex[] = "0123456789abcdef";
  std::string out;
  for (unsigned char c : buffer) {
    out.push_back(kHex[c >> 4]);
    out.push_back(kHex[c & 15]);
  }
  return out;
}

double MsSince(std::chrono::steady_clock::time_point t) {
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t).count();
}

// The uploaded image: the multipart field "image", or the raw body.
absl::StatusOr<const std::string*> UploadedImage(const httplib::Request& req) {
  if (!req.is_multipart_form_data()) {
    if (std::optional<ApiError> e =
            PredictionTypeError(MediaType(req.get_header_value("Content-Type")))) {
      return ToStatus(*e);
    }
    return &req.body;
  }
  auto it = req.files.find("image");
  if (it == req.files.end()) {
    return ToStatus(BadRequest("The multipart body has no field named 'image'."));
  }
  if (req.files.count("image") > 1) {
    return ToStatus(BadRequest("The multipart body has more than one 'image' field."));
  }
  const std::string media_type = MediaType(it->second.content_type);
  // Browsers label a part they cannot type as application/octet-stream: the bytes
  // are checked by the caller.
  if (!media_type.empty() && media_type != "application/octet-stream" && !IsImageType(media_type)) {
    return ToStatus({.status = 415,
                     .code = "unsupported_media_type",
                     .message = absl::StrCat("The 'image' part is ", media_type.substr(0, 64),
                                             "; send a JPEG, PNG, WebP or BMP image.")});
  }
  return &it->second.content;
}

}  // namespace

std::optional<ApiError> PredictionTypeError(const std::string& media_type) {
  if (media_type == "multipart/form-data" || IsImageType(media_type)) return std::nullopt;
  return ApiError{.status = 415,
                  .code = "unsupported_media_type",
                  .message = absl::StrCat(
                      "Content-Type ", media_type.empty() ? "(none)" : media_type.substr(0, 64),
                      " is not supported: send multipart/form-data with an 'image' field, or "
                      "image/jpeg, image/png, image/webp or image/bmp.")};
}

Predictions::Predictions(const GatewayOptions& options, Upstreams& upstreams,
                         prometheus::Registry& registry)
    : options_(options),
      upstreams_(upstreams),
      upload_bytes_(telemetry::AddHistogram(registry, "skinlesion_gateway_upload_bytes",
                                            "Size of the uploaded images")
                        .Add({}, prometheus::Histogram::BucketBoundaries{16e3, 64e3, 256e3, 1e6,
                                                                         2e6, 4e6, 8e6, 16e6})) {}

void Predictions::Register(HttpServer& server) {
  server.Handle("POST", "/api/v1/predictions", [this](const auto& req) { return Predict(req); },
                {.check_headers = [](const httplib::Request& req) {
                  return PredictionTypeError(MediaType(req.get_header_value("Content-Type")));
                }});
}

absl::StatusOr<Reply> Predictions::Predict(const httplib::Request& req) {
  const auto start = HttpServer::RequestStart();
  SL_ASSIGN_OR_RETURN(const PredictionQuery query, ParsePredictionQuery(req.params));
  SL_ASSIGN_OR_RETURN(const std::string* image, UploadedImage(req));
  upload_bytes_.Observe(static_cast<double>(image->size()));
  if (image->size() > options_.max_upload_bytes) {
    return ToStatus({.status = 413,
                     .code = "payload_too_large",
                     .message = absl::StrCat("The image is larger than ", options_.max_upload_bytes,
                                             " bytes.")});
  }
  if (image->empty()) {
    return ToStatus({.status = 400, .code = "invalid_image", .message = "The image is empty."});
  }
  // The decoder's own signature check (inference reads the header again).
  if (!SniffImageFormat(*image).has_value()) {
    const absl::string_view known = KnownUnsupportedFormat(*image);
    return ToStatus({.status = 400,
                     .code = "invalid_image",
                     .message = absl::StrCat("The file is not a JPEG, PNG, WebP or BMP image",
                                             known.empty() ? "" : " (it is ", known,
                                             known.empty() ? "" : ")", ".")});
  }

  v1::ClassifyRequest request;
  // The image moves into the request instead of being copied (10 MB uploads): the
  // Request is httplib's own non-const object, only handed over as const, and
  // nothing reads the body after this handler.
  request.set_image(std::move(*const_cast<std::string*>(image)));
  request.set_model(query.model);
  request.set_top_k(query.top_k);
  request.set_explain(query.explain);
  v1::ClassifyResponse response;
  SL_RETURN_IF_ERROR(
      ApiStatusOf(Upstream::kInference, upstreams_.Classify(request, req.remote_addr, &response)));
  // One probability per class of the model (its own label set); a classifier has two
  // classes at least.
  if (response.probabilities_size() < 2) {
    return ToStatus({.status = 502,
                     .code = "internal",
                     .message = absl::StrCat(
                         "The inference service answered with ", response.probabilities_size(),
                         " probabilities (a model has two classes at least).")});
  }
  return JsonReply(PredictionJson(response, RandomHex(8), MsSince(start), query.explain));
}

}  // namespace skinlesion::gateway
