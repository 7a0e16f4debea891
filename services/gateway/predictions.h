// POST /api/v1/predictions[?explain=true&model=NAME&top_k=3]: one image -> the
// model's probabilities for each of its classes (docs/gateway.md "Predictions").
//
// - The image: the multipart field "image" (exactly one; its part typed as an image
//   type, application/octet-stream or not at all), or the raw body typed
//   image/jpeg | png | webp | bmp. Any other Content-Type is 415 before the body is
//   read.
// - 413 over max_upload_bytes; 400 invalid_image when empty or when its signature
//   is not JPEG / PNG / WebP / BMP (SniffImageFormat, the decoder's own check),
//   naming a known unsupported format.
// - inference's Classify (retried, upstreams.h); its errors through MapGrpcStatus.
//   An answer with fewer than two probabilities is 502.
// - 200: PredictionJson (api.h) with a random prediction_id and the gateway's time.
// The image is moved into the gRPC request, never copied to disk or logged.
#ifndef SERVICES_GATEWAY_PREDICTIONS_H_
#define SERVICES_GATEWAY_PREDICTIONS_H_

#include <optional>
#include <string>

#include "absl/status/statusor.h"
#include "httplib.h"
#include "prometheus/histogram.h"
#include "prometheus/registry.h"
#include "services/gateway/api.h"
#include "services/gateway/gateway.h"
#include "services/gateway/http_server.h"
#include "services/gateway/upstreams.h"

namespace skinlesion::gateway {

// The 415 of a prediction whose Content-Type (a MediaType) is neither multipart nor
// an image type; nullopt when it is one.
std::optional<ApiError> PredictionTypeError(const std::string& media_type);

class Predictions {
 public:
  // Keeps references to `options` and `upstreams`; registers its metric in `registry`.
  Predictions(const GatewayOptions& options, Upstreams& upstreams, prometheus::Registry& registry);

  void Register(HttpServer& server);
  absl::StatusOr<Reply> Predict(const httplib::Request& req);

 private:
  const GatewayOptions& options_;
  Upstreams& upstreams_;
  prometheus::Histogram& upload_bytes_;
};

}  // namespace skinlesion::gateway

#endif  // SERVICES_GATEWAY_PREDICTIONS_H_
