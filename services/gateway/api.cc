#include "services/gateway/api.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <set>

#include "absl/strings/ascii.h"
#include "absl/strings/cord.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "skinlesion/common/classes.h"
#include "skinlesion/manifest/manifest.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/time/time.h"
#include "google/protobuf/descriptor.h"
#include "google/protobuf/util/json_util.h"

namespace skinlesion::gateway {

using nlohmann::json;

const char kDisclaimer[] =
    "Research software, not a diagnostic device. The result is a model's estimate from one "
    "photo and can be wrong; it does not replace an examination by a dermatologist. See a "
    "doctor about any lesion that worries you, changes, bleeds or itches.";

json ApiError::ToJson() const {
  json j = {{"code", code}, {"message", message}};
  if (!problems.empty()) j["problems"] = problems;
  return j;
}

ApiError BadRequest(std::string message) {
  return {.status = 400, .code = "bad_request", .message = std::move(message)};
}

ApiError NotFound(std::string message) {
  return {.status = 404, .code = "not_found", .message = std::move(message)};
}

namespace {

// The payload of a Status made by ToStatus.
constexpr char kApiErrorPayload[] = "type.skinlesion.dev/gateway.ApiError";

absl::StatusCode StatusCodeOfHttp(int http) {
  switch (http) {
    case 400:
    case 415:
      return absl::StatusCode::kInvalidArgument;
    case 401:
      return absl::StatusCode::kUnauthenticated;
    case 403:
      return absl::StatusCode::kPermissionDenied;
    case 404:
      return absl::StatusCode::kNotFound;
    case 409:
      return absl::StatusCode::kAlreadyExists;
    case 412:
      return absl::StatusCode::kFailedPrecondition;
    case 413:
    case 429:
      return absl::StatusCode::kResourceExhausted;
    case 503:
      return absl::StatusCode::kUnavailable;
    case 504:
      return absl::StatusCode::kDeadlineExceeded;
    default:
      return http >= 500 ? absl::StatusCode::kInternal : absl::StatusCode::kUnknown;
  }
}

}  // namespace

absl::Status ToStatus(const ApiError& error) {
  absl::Status status(StatusCodeOfHttp(error.status), error.message);
  if (status.ok()) status = absl::UnknownError(error.message);
  const json payload = {{"status", error.status},
                        {"code", error.code},
                        {"message", error.message},
                        {"retry_after_s", error.retry_after_s},
                        {"problems", error.problems}};
  status.SetPayload(kApiErrorPayload,
                    absl::Cord(payload.dump(-1, ' ', false, json::error_handler_t::replace)));
  return status;
}

ApiError ToApiError(const absl::Status& status) {
  if (const auto payload = status.GetPayload(kApiErrorPayload)) {
    const json j = json::parse(std::string(*payload), nullptr, /*allow_exceptions=*/false);
    if (j.is_object()) {
      return {.status = j.value("status", 500),
              .code = j.value("code", "internal"),
              .message = j.value("message", ""),
              .retry_after_s = j.value("retry_after_s", 0),
              .problems = j.value("problems", std::vector<std::string>{})};
    }
  }
  if (status.code() == absl::StatusCode::kInvalidArgument) {
    return BadRequest(std::string(status.message()));
  }
  return {.status = 500, .code = "internal", .message = "Internal error."};
}

const char* UpstreamName(Upstream upstream) {
  switch (upstream) {
    case Upstream::kInference:
      return "inference";
    case Upstream::kRegistry:
      return "registry";
    case Upstream::kTrainer:
      return "trainer";
  }
  return "unknown";
}

ApiError MapGrpcStatus(Upstream upstream, const grpc::Status& status) {
  const std::string name = UpstreamName(upstream);
  const std::string detail =
      status.error_message().empty() ? GrpcCodeName(status.error_code()) : status.error_message();
  const bool inference = upstream == Upstream::kInference;
  switch (status.error_code()) {
    case grpc::StatusCode::INVALID_ARGUMENT:
      if (inference) {
        return {.status = 400,
                .code = "invalid_image",
                .message = absl::StrCat("The image was refused: ", detail)};
      }
      return {.status = 400, .code = "bad_request", .message = detail};
    case grpc::StatusCode::OUT_OF_RANGE:
      return {.status = 400, .code = "bad_request", .message = detail};
    case grpc::StatusCode::NOT_FOUND:
      return {.status = 404, .code = "not_found", .message = detail};
    case grpc::StatusCode::ALREADY_EXISTS:
    case grpc::StatusCode::ABORTED:
      return {.status = 409, .code = "conflict", .message = detail};
    case grpc::StatusCode::FAILED_PRECONDITION:
      return {.status = 412, .code = "failed_precondition", .message = detail};
    case grpc::StatusCode::PERMISSION_DENIED:
      return {.status = 403, .code = "forbidden", .message = detail};
    case grpc::StatusCode::UNAVAILABLE:
    case grpc::StatusCode::RESOURCE_EXHAUSTED:
      return {
          .status = 503,
          .code = inference ? "inference_unavailable" : "service_unavailable",
          .message = absl::StrCat(
              "The ", name, " service is ",
              status.error_code() == grpc::StatusCode::UNAVAILABLE ? "unavailable" : "overloaded",
              " (", GrpcCodeName(status.error_code()), "); try again shortly."),
          .retry_after_s = kRetryAfterSeconds};
    case grpc::StatusCode::DEADLINE_EXCEEDED:
      return {.status = 504,
              .code = "upstream_timeout",
              .message = absl::StrCat("The ", name, " service did not answer in time.")};
    case grpc::StatusCode::UNAUTHENTICATED:
      return {.status = 502,
              .code = "internal",
              .message = absl::StrCat("The ", name,
                                      " service refused the gateway's credentials "
                                      "(UNAUTHENTICATED).")};
    default:
      return {.status = 502,
              .code = "internal",
              .message = absl::StrCat("The ", name, " service failed (",
                                      GrpcCodeName(status.error_code()), ").")};
  }
}

namespace {

absl::StatusOr<bool> ParseBool(const std::string& key, const std::string& value) {
  const std::string v = absl::AsciiStrToLower(value);
  if (v == "true" || v == "1" || v == "yes" || v.empty()) return true;
  if (v == "false" || v == "0" || v == "no") return false;
  return absl::InvalidArgumentError(
      absl::StrCat("query parameter '", key, "' must be true or false"));
}

absl::Status CheckKeys(const QueryParams& params, const std::set<std::string>& allowed) {
  for (auto it = params.begin(); it != params.end(); it = params.upper_bound(it->first)) {
    if (allowed.count(it->first) == 0) {
      std::string shown = it->first.substr(0, 64);
      for (char& c : shown) {
        if (!absl::ascii_isprint(static_cast<unsigned char>(c))) c = '?';
      }
      return absl::InvalidArgumentError(absl::StrCat(
          "unknown query parameter '", shown, "' (allowed: ", absl::StrJoin(allowed, ", "), ")"));
    }
    if (params.count(it->first) > 1) {
      return absl::InvalidArgumentError(
          absl::StrCat("query parameter '", it->first, "' is given more than once"));
    }
  }
  return absl::OkStatus();
}

}  // namespace

bool IsValidName(const std::string& name) {
  if (name.empty() || name.size() > 128) return false;
  if (!absl::ascii_isalnum(static_cast<unsigned char>(name[0]))) return false;
  for (char c : name) {
    if (!absl::ascii_isalnum(static_cast<unsigned char>(c)) && c != '.' && c != '_' && c != '-')
      return false;
  }
  return true;
}

bool IsValidModelFileName(const std::string& name) {
  if (!IsValidName(name) || absl::StrContains(name, "..")) return false;
  return absl::EndsWith(name, ".png") || absl::EndsWith(name, ".json") ||
         absl::EndsWith(name, ".md");
}

absl::StatusOr<int64_t> ParseVersion(const std::string& text) {
  int64_t v = 0;
  if (text.empty() || text.size() > 16 || !absl::SimpleAtoi(text, &v) || v < 1 ||
      v > (int64_t{1} << 53)) {
    return absl::InvalidArgumentError(
        absl::StrCat("'", text.substr(0, 32), "' is not a version number (1, 2, ...)"));
  }
  return v;
}

absl::StatusOr<PredictionQuery> ParsePredictionQuery(const QueryParams& params) {
  if (absl::Status s = CheckKeys(params, {"explain", "model", "top_k"}); !s.ok()) return s;
  PredictionQuery q;
  if (auto it = params.find("explain"); it != params.end()) {
    absl::StatusOr<bool> b = ParseBool("explain", it->second);
    if (!b.ok()) return b.status();
    q.explain = *b;
  }
  if (auto it = params.find("model"); it != params.end()) {
    if (!IsValidName(it->second) || it->second.size() > 64) {
      return absl::InvalidArgumentError(
          "query parameter 'model' must be a model name: letters, digits, '.', '_', '-' "
          "(at most 64, starting with a letter or digit)");
    }
    q.model = it->second;
  }
  if (auto it = params.find("top_k"); it != params.end()) {
    int k = 0;
    if (!absl::SimpleAtoi(it->second, &k) || k < 1 || k > kMaxClasses) {
      return absl::InvalidArgumentError(absl::StrCat("query parameter 'top_k' must be an integer in 1..", kMaxClasses,
                                                     " (the answer has at most the model's number of classes)"));
    }
    q.top_k = k;
  }
  return q;
}

absl::StatusOr<std::vector<v1::JobState>> ParseJobsQuery(const QueryParams& params) {
  if (absl::Status s = CheckKeys(params, {"state"}); !s.ok()) return s;
  std::vector<v1::JobState> states;
  auto it = params.find("state");
  if (it == params.end()) return states;
  for (absl::string_view part : absl::StrSplit(it->second, ',', absl::SkipWhitespace())) {
    const std::string p = absl::AsciiStrToLower(absl::StripAsciiWhitespace(part));
    bool found = false;
    for (v1::JobState s : {v1::JOB_STATE_QUEUED, v1::JOB_STATE_RUNNING, v1::JOB_STATE_SUCCEEDED,
                           v1::JOB_STATE_FAILED, v1::JOB_STATE_CANCELLED}) {
      if (p == JobStateName(s)) {
        if (std::find(states.begin(), states.end(), s) == states.end()) states.push_back(s);
        found = true;
      }
    }
    if (!found) {
      return absl::InvalidArgumentError(
          "query parameter 'state' must be a comma-separated list of queued, running, "
          "succeeded, failed, cancelled");
    }
  }
  return states;
}

absl::StatusOr<v1::TrainingConfig> JobConfigFromJson(const std::string& body) {
  const json j = json::parse(body, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) {
    return absl::InvalidArgumentError("invalid job config: the body is not valid JSON");
  }
  if (!j.is_object()) {
    return absl::InvalidArgumentError("invalid job config: the body must be a JSON object");
  }
  namespace pb = google::protobuf;
  const pb::Descriptor* descriptor = v1::TrainingConfig::descriptor();
  const pb::Reflection* reflection = v1::TrainingConfig::GetReflection();
  v1::TrainingConfig config;
  json extra = json::object();
  json explicit_extra = json::object();
  std::vector<std::string> problems;
  for (const auto& [key, value] : j.items()) {
    const pb::FieldDescriptor* field = descriptor->FindFieldByName(key);
    if (field == nullptr) field = descriptor->FindFieldByCamelcaseName(key);
    if (field == nullptr) {
      extra[key] = value;
      continue;
    }
    const std::string name = field->name();
    if (name == "extra_json") {
      json inner = value;
      if (value.is_string()) {
        inner = json::parse(value.get<std::string>(), nullptr, false);
      }
      if (!inner.is_object()) {
        problems.push_back("extra_json must be a JSON object (or a string holding one)");
      } else {
        explicit_extra = inner;
      }
      continue;
    }
    switch (field->cpp_type()) {
      case pb::FieldDescriptor::CPPTYPE_STRING:
        if (!value.is_string()) {
          problems.push_back(absl::StrCat(name, " must be a string"));
        } else {
          reflection->SetString(&config, field, value.get<std::string>());
        }
        break;
      case pb::FieldDescriptor::CPPTYPE_BOOL:
        if (!value.is_boolean()) {
          problems.push_back(absl::StrCat(name, " must be true or false"));
        } else {
          reflection->SetBool(&config, field, value.get<bool>());
        }
        break;
      case pb::FieldDescriptor::CPPTYPE_DOUBLE:
        if (!value.is_number()) {
          problems.push_back(absl::StrCat(name, " must be a number"));
        } else {
          reflection->SetDouble(&config, field, value.get<double>());
        }
        break;
      case pb::FieldDescriptor::CPPTYPE_INT32:
      case pb::FieldDescriptor::CPPTYPE_INT64:
      case pb::FieldDescriptor::CPPTYPE_UINT64: {
        const bool is_int32 = field->cpp_type() == pb::FieldDescriptor::CPPTYPE_INT32;
        const bool is_unsigned = field->cpp_type() == pb::FieldDescriptor::CPPTYPE_UINT64;
        const char* what = is_int32      ? "an integer in -2147483648..2147483647"
                           : is_unsigned ? "a non-negative integer"
                                         : "an integer";
        if (value.is_number_unsigned()) {
          const uint64_t u = value.get<uint64_t>();
          if (is_unsigned) {
            reflection->SetUInt64(&config, field, u);
          } else if (is_int32 && u <= static_cast<uint64_t>(std::numeric_limits<int32_t>::max())) {
            reflection->SetInt32(&config, field, static_cast<int32_t>(u));
          } else if (!is_int32 && u <= static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
            reflection->SetInt64(&config, field, static_cast<int64_t>(u));
          } else {
            problems.push_back(absl::StrCat(name, " must be ", what));
          }
        } else if (value.is_number_integer()) {  // Negative.
          const int64_t v = value.get<int64_t>();
          if (is_unsigned) {
            problems.push_back(absl::StrCat(name, " must be ", what));
          } else if (is_int32 && v >= std::numeric_limits<int32_t>::min()) {
            reflection->SetInt32(&config, field, static_cast<int32_t>(v));
          } else if (!is_int32) {
            reflection->SetInt64(&config, field, v);
          } else {
            problems.push_back(absl::StrCat(name, " must be ", what));
          }
        } else {
          problems.push_back(absl::StrCat(name, " must be ", what));
        }
        break;
      }
      default:
        problems.push_back(absl::StrCat(name, " cannot be set through the API"));
    }
  }
  // Keys outside TrainingConfig win over the same keys inside extra_json only when
  // both are given; an explicit extra_json key is kept otherwise.
  for (const auto& [key, value] : explicit_extra.items()) {
    if (!extra.contains(key)) extra[key] = value;
  }
  if (!problems.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat("invalid job config: ", absl::StrJoin(problems, "; ")));
  }
  if (!extra.empty()) config.set_extra_json(extra.dump());
  return config;
}

absl::StatusOr<SetAliasBody> ParseSetAliasBody(const std::string& body) {
  const json j = json::parse(body, nullptr, false);
  if (j.is_discarded() || !j.is_object()) {
    return absl::InvalidArgumentError(
        "the body must be a JSON object {\"version\": N, \"reason\": \"...\", \"force\": false}");
  }
  SetAliasBody out;
  std::vector<std::string> problems;
  for (const auto& [key, value] : j.items()) {
    if (key == "version") {
      if (!value.is_number_integer() || value.get<int64_t>() < 1) {
        problems.push_back("version must be an integer >= 1");
      } else {
        out.version = value.get<int64_t>();
      }
    } else if (key == "reason") {
      if (!value.is_string()) {
        problems.push_back("reason must be a string");
      } else {
        out.reason = value.get<std::string>();
      }
    } else if (key == "force") {
      if (!value.is_boolean()) {
        problems.push_back("force must be true or false");
      } else {
        out.force = value.get<bool>();
      }
    } else {
      problems.push_back(absl::StrCat("unknown field '", key.substr(0, 64), "'"));
    }
  }
  if (out.version == 0 && problems.empty()) problems.push_back("version is required");
  if (!problems.empty()) return absl::InvalidArgumentError(absl::StrJoin(problems, "; "));
  return out;
}

json LesionClassJson(const v1::LesionClass& c) {
  return {{"class", c.code()},
          {"label", c.name()},
          {"malignant", c.group() == v1::MALIGNANCY_GROUP_MALIGNANT}};
}

namespace {

json ClassJson(const v1::ClassProbability& p) {
  json j = LesionClassJson(p.lesion_class());
  j["probability"] = p.probability();
  return j;
}

// Rounds to 3 decimals (timings in ms).
double Round3(double v) { return std::round(v * 1000.0) / 1000.0; }

// What part of the photo the heatmap covers, as the inference service says; an
// older server that does not say computed it on the model's input, the centred
// square (shorter side + centre crop).
std::string ExplanationCovers(const v1::Explanation& e) {
  return e.covers().empty() ? "center-square" : e.covers();
}

}  // namespace

json PredictionJson(const v1::ClassifyResponse& r, const std::string& prediction_id,
                    double gateway_ms, bool explain) {
  json probabilities = json::array();
  for (const auto& p : r.probabilities()) probabilities.push_back(ClassJson(p));
  json top = json::array();
  for (const auto& p : r.top()) top.push_back(ClassJson(p));
  json out = {
      {"prediction_id", prediction_id},
      {"model",
       {{"name", r.model().name()},
        {"version", r.model().version()},
        {"sha256", r.model().sha256()},
        {"test_time_views", r.test_time_views().empty() ? "none" : r.test_time_views()}}},
      {"probabilities", std::move(probabilities)},
      {"top", std::move(top)},
      {"top_class", r.top().empty() ? "" : r.top(0).lesion_class().code()},
      {"confidence", r.top().empty() ? 0.0f : r.top(0).probability()},
      {"malignancy_risk", r.malignancy_risk()},
      {"refer", r.refer()},
      {"refer_rule", r.refer_rule()},
      {"out_of_distribution", r.out_of_distribution()},
      {"ood_score", r.ood_score()},
      {"ood_message", r.ood_message()},
      {"refer_reason", r.refer_reason()},
      {"referral",
       {{"malignancy_risk_threshold",
         r.refer_risk_threshold() > 0 ? json(r.refer_risk_threshold()) : json(nullptr)},
        {"target_sensitivity",
         r.refer_target_sensitivity() > 0 ? json(r.refer_target_sensitivity()) : json(nullptr)},
        {"sensitivity_confidence", r.refer_sensitivity_confidence() > 0
                                       ? json(r.refer_sensitivity_confidence())
                                       : json(nullptr)}}},
      {"timing",
       {{"queue_ms", Round3(r.timing().queue_ms())},
        {"compute_ms", Round3(r.timing().compute_ms())},
        {"inference_ms", Round3(r.timing().total_ms())},
        {"gateway_ms", Round3(gateway_ms)},
        {"batch_size", r.timing().batch_size()}}},
  };
  if (explain && r.has_explanation()) {
    const v1::Explanation& e = r.explanation();
    json heat = json::array();
    for (float v : e.heat()) heat.push_back(std::isfinite(v) ? std::clamp(v, 0.0f, 1.0f) : 0.0f);
    out["explanation"] = {{"method", e.method()},
                          {"width", e.width()},
                          {"height", e.height()},
                          {"covers", ExplanationCovers(e)},
                          {"heat", std::move(heat)}};
  }
  out["disclaimer"] = kDisclaimer;
  return out;
}

std::string Rfc3339(const google::protobuf::Timestamp& t) {
  if (t.seconds() == 0 && t.nanos() == 0) return "";
  const absl::Time time = absl::FromUnixSeconds(t.seconds()) + absl::Nanoseconds(t.nanos());
  return absl::FormatTime("%Y-%m-%d%ET%H:%M:%E*SZ", time, absl::UTCTimeZone());
}

json ManifestOf(const v1::ModelVersion& v) {
  json m = json::parse(v.manifest_json(), nullptr, false);
  if (m.is_discarded() || !m.is_object()) return json::object();
  return m;
}

namespace {

json NumberOr(const json& object, const char* key, json fallback) {
  if (object.is_object() && object.contains(key) && object[key].is_number()) return object[key];
  return fallback;
}

json StringOr(const json& object, const char* key) {
  if (object.is_object() && object.contains(key) && object[key].is_string()) return object[key];
  return nullptr;
}

std::string CreatedOf(const v1::ModelVersion& v, const json& manifest) {
  if (v.has_created()) return Rfc3339(v.created());
  const json c = StringOr(manifest, "created");
  return c.is_string() ? c.get<std::string>() : "";
}

}  // namespace

json VersionSummaryJson(const v1::ModelVersion& v) {
  const json manifest = ManifestOf(v);
  const json metrics = manifest.contains("metrics") ? manifest["metrics"] : json();
  json summary = json::object();
  for (const char* key :
       {"accuracy", "balanced_accuracy", "macro_f1", "macro_auc", "melanoma_recall"}) {
    summary[key] = NumberOr(metrics, key, nullptr);
  }
  // What the figures were measured on: the report's partition ("test", "val", "fold2",
  // "out_of_fold") and its number of images, so that a reader can tell held-out test
  // figures from validation or cross-validated ones.
  const json context = metrics.is_object() ? metrics.value("context", json()) : json();
  summary["partition"] = StringOr(context, "partition");
  summary["n"] = NumberOr(metrics, "n", nullptr);
  return {{"version", v.version()},
          {"created", CreatedOf(v, manifest)},
          {"architecture", StringOr(manifest, "architecture")},
          {"image_size", NumberOr(manifest, "image_size", nullptr)},
          {"aliases", std::vector<std::string>(v.aliases().begin(), v.aliases().end())},
          {"metrics", metrics.is_object() ? summary : json()}};
}

json ModelCardJson(const v1::ModelVersion& v, const json& metrics) {
  const json manifest = ManifestOf(v);
  json temperature = nullptr;
  if (manifest.contains("calibration")) {
    temperature = NumberOr(manifest["calibration"], "temperature", nullptr);
  }
  json files = json::array();
  for (const v1::FileInfo& f : v.files()) {
    if (!absl::EndsWith(f.path(), ".png") || !IsValidModelFileName(f.path())) continue;
    files.push_back({{"name", f.path()},
                     {"url", absl::StrCat("/api/v1/models/", v.model(), "/versions/", v.version(),
                                          "/files/", f.path())}});
  }
  // Read as a server reads it: what it classifies, or why a server would refuse it.
  const absl::StatusOr<ModelManifest> typed = ModelManifest::Parse(manifest, "manifest.json");
  return {{"name", v.model()},
          {"version", v.version()},
          {"created", CreatedOf(v, manifest)},
          {"architecture", StringOr(manifest, "architecture")},
          {"image_size", NumberOr(manifest, "image_size", nullptr)},
          {"temperature", temperature},
          {"classes", typed.ok() ? json(typed->classes.codes()) : json(nullptr)},
          {"manifest_error", typed.ok() ? json(nullptr) : json(std::string(typed.status().message()))},
          {"aliases", std::vector<std::string>(v.aliases().begin(), v.aliases().end())},
          {"metrics", metrics},
          {"manifest", manifest},
          {"files", std::move(files)}};
}

json JobJson(const v1::Job& job) {
  const v1::JobProgress& p = job.progress();
  json val_ba = nullptr;
  if (auto it = p.validation_metrics().find("balanced_accuracy");
      it != p.validation_metrics().end() && std::isfinite(it->second)) {
    val_ba = it->second;
  }
  auto finite = [](double v) -> json { return std::isfinite(v) ? json(v) : json(nullptr); };
  return {{"job_id", job.id()},
          {"state", JobStateName(job.state())},
          {"name", job.config().model_name()},
          {"created", Rfc3339(job.created())},
          {"started", Rfc3339(job.started())},
          {"finished", Rfc3339(job.finished())},
          {"phase", p.phase()},
          {"epoch", p.epoch()},
          {"epochs", p.epochs() > 0 ? p.epochs() : job.config().epochs()},
          {"step", p.step()},
          {"steps", p.steps()},
          {"loss", finite(p.loss())},
          {"val_balanced_accuracy", val_ba},
          {"throughput", finite(p.images_per_second())},
          {"eta_s", finite(p.eta_seconds())},
          {"published_version", job.has_published() && job.published().version() > 0
                                    ? json(job.published().version())
                                    : json(nullptr)},
          // The alias the published version reached ("staging", or "production" when
          // the job asked for it and the gates let it through), and why not when they
          // did not: the job's notes.
          {"published_alias", job.has_published() && !job.published().alias().empty()
                                  ? json(job.published().alias())
                                  : json(nullptr)},
          {"notes", std::vector<std::string>(job.notes().begin(), job.notes().end())},
          {"error", job.failure_reason()}};
}

json JobEventJson(const v1::JobEvent& e) {
  json out = {{"sequence", e.sequence()}, {"time", Rfc3339(e.time())}};
  switch (e.event_case()) {
    case v1::JobEvent::kProgress: {
      const v1::JobProgress& p = e.progress();
      json metrics = json::object();
      for (const auto& [k, v] : p.validation_metrics()) {
        if (std::isfinite(v)) metrics[k] = v;
      }
      out["type"] = "progress";
      out["phase"] = p.phase();
      out["epoch"] = p.epoch();
      out["epochs"] = p.epochs();
      out["step"] = p.step();
      out["steps"] = p.steps();
      out["loss"] = std::isfinite(p.loss()) ? json(p.loss()) : json(nullptr);
      out["throughput"] =
          std::isfinite(p.images_per_second()) ? json(p.images_per_second()) : json(nullptr);
      out["eta_s"] = std::isfinite(p.eta_seconds()) ? json(p.eta_seconds()) : json(nullptr);
      out["validation_metrics"] = std::move(metrics);
      break;
    }
    case v1::JobEvent::kState:
      out["type"] = "state";
      out["state"] = JobStateName(e.state());
      break;
    case v1::JobEvent::kLogLine:
      out["type"] = "log";
      out["line"] = e.log_line();
      break;
    default:
      out["type"] = "unknown";
  }
  return out;
}

}  // namespace skinlesion::gateway
