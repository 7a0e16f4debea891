// KServe v2 / Open Inference Protocol (inference.GRPCInferenceService) over a
// serving::ServingCore, for Triton / KServe clients.
//
// Every served model has two inputs (a request uses exactly one of them):
//   "image"  BYTES [N]  (or [N, 1]): one encoded JPEG/PNG/WebP/BMP image per element,
//   "input"  FP32 [N, 3, S, S]: preprocessed images (S: the version's image_size),
// and two outputs, "probabilities" (calibrated) and "logits", FP32 [N, 7]. A
// requested output may carry the "classification" parameter (int64 k, the KServe /
// Triton classification extension): it then comes back as BYTES [N, k] strings
// "probability:index:code", most probable first.
// Contents are read from InferTensorContents or raw_input_contents (BYTES elements
// prefixed with their 4-byte little-endian length); outputs are written raw when the
// request was raw, typed otherwise. The N items go to the core concurrently, so they
// are batched together.
#ifndef SKINLESION_INFERENCE_KSERVE_SERVICE_H_
#define SKINLESION_INFERENCE_KSERVE_SERVICE_H_

#include <atomic>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "kserve/grpc_predict_v2.grpc.pb.h"
#include "skinlesion/inference/service_util.h"
#include "skinlesion/serving/serving.h"

namespace skinlesion::inference {

struct KServeOptions {
  std::string server_name = "skinlesion";
  std::string server_version;
  // Most images / tensors one ModelInfer may carry.
  int max_items_per_request = 1024;
};

// One ModelInfer output as requested.
struct RequestedOutput {
  // kProbabilities / kLogits: FP32 [N, 7] (classification: BYTES top-k). The others,
  // returned only when asked for by name: FP32 or BOOL [N, 1].
  enum class Kind {
    kProbabilities,
    kLogits,
    kMalignancyRisk,
    kRefer,
    kOutOfDistribution,
    kOodScore
  };
  Kind kind = Kind::kProbabilities;
  std::string name;
  int classification = 0;  // > 0: top-k class strings (BYTES) instead of FP32.
};

// A ModelInfer request turned into core requests.
struct ParsedInfer {
  std::vector<serving::InferRequest> items;
  std::vector<RequestedOutput> outputs;
  bool raw = false;  // The request used raw_input_contents: answer in raw_output_contents.
};

// Validates `request` against `model` (the served model it names) and splits it into
// one core request per image. InvalidArgument / NotFound with the offending field.
absl::StatusOr<ParsedInfer> ParseModelInfer(const ::inference::ModelInferRequest& request,
                                            const serving::ServedModelStatus& model, int max_items,
                                            absl::Time deadline);

// Builds the response for `results` (one per item, all OK).
void FillModelInferResponse(const ::inference::ModelInferRequest& request,
                            const ParsedInfer& parsed,
                            const std::vector<serving::InferResult>& results,
                            ::inference::ModelInferResponse* response);

class KServeServiceImpl final : public ::inference::GRPCInferenceService::Service {
 public:
  // `core` and `shutting_down` outlive the service; ServerReady is false once
  // *shutting_down is set.
  KServeServiceImpl(serving::ServingCore* core, const std::atomic<bool>* shutting_down,
                    KServeOptions options);

  grpc::Status ServerLive(grpc::ServerContext* context,
                          const ::inference::ServerLiveRequest* request,
                          ::inference::ServerLiveResponse* response) override;
  grpc::Status ServerReady(grpc::ServerContext* context,
                           const ::inference::ServerReadyRequest* request,
                           ::inference::ServerReadyResponse* response) override;
  grpc::Status ModelReady(grpc::ServerContext* context,
                          const ::inference::ModelReadyRequest* request,
                          ::inference::ModelReadyResponse* response) override;
  grpc::Status ServerMetadata(grpc::ServerContext* context,
                              const ::inference::ServerMetadataRequest* request,
                              ::inference::ServerMetadataResponse* response) override;
  grpc::Status ModelMetadata(grpc::ServerContext* context,
                             const ::inference::ModelMetadataRequest* request,
                             ::inference::ModelMetadataResponse* response) override;
  grpc::Status ModelInfer(grpc::ServerContext* context,
                          const ::inference::ModelInferRequest* request,
                          ::inference::ModelInferResponse* response) override;

 private:
  absl::Status DoModelInfer(const grpc::ServerContext& context,
                            const ::inference::ModelInferRequest& request,
                            ::inference::ModelInferResponse* response);

  serving::ServingCore* core_;
  const std::atomic<bool>* shutting_down_;
  KServeOptions options_;
};

}  // namespace skinlesion::inference

#endif  // SKINLESION_INFERENCE_KSERVE_SERVICE_H_
