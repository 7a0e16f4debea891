// skinlesion.v1.ClassificationService over a serving::ServingCore.
//
//   Classify          one image -> calibrated probabilities, top-k, malignancy risk,
//                     refer flag, model provenance, timing. Errors are the call's
//                     status (absl codes mapped 1:1).
//   ClassifyStream    bulk: every request is submitted as it arrives (so they batch
//                     in the core) and answered in request order; a failed item is
//                     answered with error_code / error_message and the stream goes on.
//   ListServedModels  the core's served models and their current versions.
#ifndef SKINLESION_INFERENCE_CLASSIFICATION_SERVICE_H_
#define SKINLESION_INFERENCE_CLASSIFICATION_SERVICE_H_

#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "skinlesion/inference/service_util.h"
#include "skinlesion/serving/serving.h"
#include "skinlesion/v1/classification.grpc.pb.h"

namespace skinlesion::inference {

struct ClassificationOptions {
  int default_top_k = 3;
  // ClassifyStream: requests submitted to the core and not yet answered, per stream.
  int max_stream_in_flight = 32;
};

// The core request for `request` from `client` (ClientOf) (InvalidArgument for an
// empty image or a negative version). An explanation (request.explain()) is asked
// for separately, after the prediction (ServingCore::Explain).
absl::StatusOr<serving::InferRequest> ToInferRequest(const v1::ClassifyRequest& request,
                                                     absl::Time deadline,
                                                     const std::string& client);

// top_k as served: 0 -> `default_top_k`, otherwise clamped to [1, kMaxClasses] (the
// response has at most the model's number of classes).
int EffectiveTopK(int requested, int default_top_k);

// Fills `response` from a core result. `alias`: the alias that resolves to the
// result's version now ("" if none).
void FillClassifyResponse(const serving::InferResult& result, int top_k, const std::string& alias,
                          v1::ClassifyResponse* response);

class ClassificationServiceImpl final : public v1::ClassificationService::Service {
 public:
  // `core` outlives the service.
  explicit ClassificationServiceImpl(serving::ServingCore* core,
                                     ClassificationOptions options = {});

  grpc::Status Classify(grpc::ServerContext* context, const v1::ClassifyRequest* request,
                        v1::ClassifyResponse* response) override;
  grpc::Status ClassifyStream(
      grpc::ServerContext* context,
      grpc::ServerReaderWriter<v1::ClassifyResponse, v1::ClassifyRequest>* stream) override;
  grpc::Status ListServedModels(grpc::ServerContext* context,
                                const v1::ListServedModelsRequest* request,
                                v1::ListServedModelsResponse* response) override;

 private:
  // The response for a finished request (or its error status).
  // With request.explain(): also the explanation of the result's top class, by the
  // version that made the prediction (its error, prefixed, fails the response).
  absl::Status Respond(const absl::StatusOr<serving::InferResult>& result,
                       const v1::ClassifyRequest& request, absl::Time deadline,
                       const std::string& client, v1::ClassifyResponse* response);
  std::string AliasOf(const std::string& model, int64_t version) const;

  serving::ServingCore* core_;
  ClassificationOptions options_;
};

}  // namespace skinlesion::inference

#endif  // SKINLESION_INFERENCE_CLASSIFICATION_SERVICE_H_
