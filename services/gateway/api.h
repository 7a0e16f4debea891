// The gateway's REST API v1 (docs/gateway.md): the pure pieces, free of HTTP and
// of network calls, so that they can be unit-tested and fuzzed.
//
// - ApiError: an HTTP status + the JSON body {"code", "message"} (+ Retry-After),
//   carried through absl::Status by ToStatus / ToApiError (the handlers' one error
//   style: they return absl::Status(Or), the HTTP server sends it).
// - MapGrpcStatus: every upstream gRPC status -> ApiError, in one place.
// - Parse*Query: query parameters -> typed values (400 bad_request on any problem).
// - JobConfigFromJson: a job config JSON object -> v1::TrainingConfig, listing every
//   type problem at once.
// - *Json: responses of inference, the registry and the trainer -> the API's JSON.
#ifndef SERVICES_GATEWAY_API_H_
#define SERVICES_GATEWAY_API_H_

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "grpcpp/support/status.h"
#include "nlohmann/json.hpp"
#include "skinlesion/rpc/job_state.h"
#include "skinlesion/rpc/status.h"
#include "skinlesion/v1/classification.pb.h"
#include "skinlesion/v1/registry.pb.h"
#include "skinlesion/v1/training.pb.h"

namespace skinlesion::gateway {

// Query parameters as httplib keeps them (a key may repeat).
using QueryParams = std::multimap<std::string, std::string>;

struct ApiError {
  int status = 500;
  std::string code;       // snake_case, one of the contract's codes.
  std::string message;    // A readable sentence.
  int retry_after_s = 0;  // > 0: the response carries Retry-After.
  // Extra detail lines (e.g. every problem of a job config); empty: none.
  std::vector<std::string> problems;

  nlohmann::json ToJson() const;
};

ApiError BadRequest(std::string message);
ApiError NotFound(std::string message);

// An ApiError as an absl::Status (never OK): its payload keeps every field, so that
// ToApiError gives it back unchanged. The Status code follows the HTTP status (404
// NotFound, 503 Unavailable, ...) for readers of logs only.
absl::Status ToStatus(const ApiError& error);
// The ApiError of a non-OK status: the one ToStatus stored; otherwise
// InvalidArgument (a parser's complaint) is 400 bad_request with its message, and
// anything else 500 internal "Internal error." (the details stay in the log).
ApiError ToApiError(const absl::Status& status);

// Which upstream a status came from: decides the names in messages and the code of
// INVALID_ARGUMENT (inference: invalid_image, the others: bad_request).
enum class Upstream { kInference, kRegistry, kTrainer };
const char* UpstreamName(Upstream upstream);  // "inference" | "registry" | "trainer"

// "UNAVAILABLE", "DEADLINE_EXCEEDED", ... (the label of upstream_errors_total).
using rpc::GrpcCodeName;

// The one mapping of upstream gRPC failures (status must not be OK):
//   INVALID_ARGUMENT    400 invalid_image (inference) / bad_request
//   NOT_FOUND           404 not_found
//   ALREADY_EXISTS, ABORTED 409 conflict
//   FAILED_PRECONDITION 412 failed_precondition
//   OUT_OF_RANGE        400 bad_request
//   PERMISSION_DENIED   403 forbidden
//   UNAVAILABLE, RESOURCE_EXHAUSTED 503 inference_unavailable (inference) /
//                       service_unavailable, Retry-After
//   DEADLINE_EXCEEDED   504 upstream_timeout
//   UNAUTHENTICATED     502 internal (the gateway's own credentials were refused)
//   anything else       502 internal; the message names the gRPC code.
// Client errors (4xx) carry the upstream's message; 5xx name the code only (the
// details, e.g. addresses, stay in the gateway's log).
ApiError MapGrpcStatus(Upstream upstream, const grpc::Status& status);

// Seconds a client should wait after a 503 / 429.
inline constexpr int kRetryAfterSeconds = 1;

// POST /api/v1/predictions?explain=true&model=NAME&top_k=3
struct PredictionQuery {
  bool explain = false;
  std::string model;  // Empty: inference's default model.
  int top_k = 3;
};
// Unknown keys, repeated keys, a top_k outside 1..kMaxClasses (the answer has at
// most the model's number of classes), a bad boolean or a model name
// that is not [A-Za-z0-9][A-Za-z0-9._-]{0,63} are 400 bad_request.
absl::StatusOr<PredictionQuery> ParsePredictionQuery(const QueryParams& params);

// GET /api/v1/jobs?state=running[,queued...]: the states (empty: all).
absl::StatusOr<std::vector<v1::JobState>> ParseJobsQuery(const QueryParams& params);

// A registry model name / alias / job id / file name as they may appear in a path
// (the router's regexes already restrict the characters; these check lengths and
// the file rules: png / json / md only, no path separators, no leading dot).
bool IsValidName(const std::string& name);
bool IsValidModelFileName(const std::string& name);
// "123" -> 123 (1 .. 2^53); anything else is InvalidArgument.
absl::StatusOr<int64_t> ParseVersion(const std::string& text);

// The job config of POST /api/v1/jobs: a JSON object whose keys are TrainingConfig
// fields (snake_case or lowerCamelCase); any other key goes into extra_json (which
// may itself be given as an object or as a string holding one). Every problem
// (not an object, wrong JSON type, integer out of range, bad extra_json) is listed
// in one InvalidArgument: "invalid job config: a; b".
absl::StatusOr<v1::TrainingConfig> JobConfigFromJson(const std::string& body);

// PUT /api/v1/models/{name}/aliases/{alias} body: {"version": 2, "reason": "...",
// "force": false}.
struct SetAliasBody {
  int64_t version = 0;
  std::string reason;
  bool force = false;
};
absl::StatusOr<SetAliasBody> ParseSetAliasBody(const std::string& body);

// A class as the API names it: {"class": code, "label": name, "malignant": bool}.
nlohmann::json LesionClassJson(const v1::LesionClass& c);

// The 200 body of a prediction (see docs/gateway.md). `gateway_ms` is the time
// from the request's arrival to now; the explanation is included when asked for
// and present in the response.
nlohmann::json PredictionJson(const v1::ClassifyResponse& response,
                              const std::string& prediction_id, double gateway_ms, bool explain);

// The text every prediction carries.
extern const char kDisclaimer[];

// RFC 3339 UTC ("2026-11-26T07:00:00Z"; fractional seconds when present); empty
// for an unset (zero) timestamp.
std::string Rfc3339(const google::protobuf::Timestamp& t);

// The manifest of a version (its manifest_json parsed; {} when unparsable).
nlohmann::json ManifestOf(const v1::ModelVersion& v);

// One entry of "versions" in GET /api/v1/models: the manifest's headline metrics with
// what they were measured on ("partition": test, val, fold<k> or out_of_fold; "n").
nlohmann::json VersionSummaryJson(const v1::ModelVersion& v);
// The model card of GET /api/v1/models/{name}/versions/{version}; `metrics` is the
// parsed metrics.json (null when the version has none).
nlohmann::json ModelCardJson(const v1::ModelVersion& v, const nlohmann::json& metrics);

// A job as GET /api/v1/jobs lists it; `events` (last 50 progress events, oldest
// first) is added for GET /api/v1/jobs/{id} when non-null.
nlohmann::json JobJson(const v1::Job& job);
nlohmann::json JobEventJson(const v1::JobEvent& event);
using rpc::JobStateName;  // "queued", "running", ... (skinlesion/rpc/job_state.h)

}  // namespace skinlesion::gateway

#endif  // SERVICES_GATEWAY_API_H_
