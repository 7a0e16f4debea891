#include "skinlesion/inference/kserve_service.h"

#include <algorithm>
#include <bit>
#include <cstring>
#include <memory>
#include <numeric>
#include <utility>

#include "absl/base/thread_annotations.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/synchronization/mutex.h"
#include "skinlesion/common/classes.h"
#include "skinlesion/common/status.h"

namespace skinlesion::inference {
namespace {

static_assert(std::endian::native == std::endian::little,
              "raw tensor contents are little-endian; this code copies them as is");

namespace pb = ::inference;

constexpr char kImageInput[] = "image";
constexpr char kTensorInput[] = "input";
constexpr char kProbabilitiesOutput[] = "probabilities";
constexpr char kLogitsOutput[] = "logits";
// Per-image outputs returned when requested by name ([N, 1]).
constexpr char kMalignancyRiskOutput[] = "malignancy_risk";
constexpr char kReferOutput[] = "refer";
constexpr char kOodOutput[] = "out_of_distribution";
constexpr char kOodScoreOutput[] = "ood_score";
constexpr char kClassificationParameter[] = "classification";

std::string ShapeString(const google::protobuf::RepeatedField<int64_t>& shape) {
  return absl::StrCat("[", absl::StrJoin(shape, ","), "]");
}

absl::StatusOr<int64_t> ParseVersion(const std::string& version) {
  if (version.empty()) return 0;
  int64_t value = 0;
  if (!absl::SimpleAtoi(version, &value) || value < 1) {
    return absl::InvalidArgumentError(absl::StrCat(
        "model version '", version,
        "' is not a version number (an integer >= 1, or empty for the current version)"));
  }
  return value;
}

absl::Status CheckVersionLoaded(const serving::ServedModelStatus& model, int64_t version) {
  if (version == 0) return absl::OkStatus();
  if (std::find(model.loaded_versions.begin(), model.loaded_versions.end(), version) !=
      model.loaded_versions.end()) {
    return absl::OkStatus();
  }
  return absl::NotFoundError(
      absl::StrCat("model '", model.name, "' has no loaded version ", version,
                   " (loaded: ", absl::StrJoin(model.loaded_versions, ", "), ")"));
}

absl::Status CheckReady(const serving::ServedModelStatus& model) {
  if (model.ready) return absl::OkStatus();
  return absl::UnavailableError(
      absl::StrCat("model '", model.name, "' has no version loaded yet",
                   model.last_error.empty() ? "" : "; last load error: ", model.last_error));
}

// Splits a raw BYTES tensor: each element is a 4-byte little-endian length + bytes.
absl::StatusOr<std::vector<std::string>> SplitRawBytes(const std::string& raw,
                                                       const std::string& name) {
  std::vector<std::string> elements;
  size_t pos = 0;
  while (pos < raw.size()) {
    if (raw.size() - pos < 4) {
      return absl::InvalidArgumentError(
          absl::StrCat("raw contents of input '", name,
                       "' end inside the 4-byte length prefix of element ", elements.size()));
    }
    uint32_t length = 0;
    std::memcpy(&length, raw.data() + pos, 4);
    pos += 4;
    if (raw.size() - pos < length) {
      return absl::InvalidArgumentError(
          absl::StrCat("raw contents of input '", name, "': element ", elements.size(),
                       " declares ", length, " bytes but only ", raw.size() - pos, " remain"));
    }
    elements.emplace_back(raw.data() + pos, length);
    pos += length;
  }
  return elements;
}

void AppendRawBytes(const std::string& element, std::string* raw) {
  const uint32_t length = static_cast<uint32_t>(element.size());
  raw->append(reinterpret_cast<const char*>(&length), 4);
  raw->append(element);
}

absl::StatusOr<std::vector<RequestedOutput>> ParseOutputs(const pb::ModelInferRequest& request,
                                                          int num_classes) {
  std::vector<RequestedOutput> outputs;
  if (request.outputs().empty()) {
    outputs.push_back({RequestedOutput::Kind::kProbabilities, kProbabilitiesOutput, 0});
    outputs.push_back({RequestedOutput::Kind::kLogits, kLogitsOutput, 0});
    return outputs;
  }
  for (const pb::ModelInferRequest::InferRequestedOutputTensor& requested : request.outputs()) {
    RequestedOutput out;
    out.name = requested.name();
    if (out.name == kProbabilitiesOutput) {
      out.kind = RequestedOutput::Kind::kProbabilities;
    } else if (out.name == kLogitsOutput) {
      out.kind = RequestedOutput::Kind::kLogits;
    } else if (out.name == kMalignancyRiskOutput) {
      out.kind = RequestedOutput::Kind::kMalignancyRisk;
    } else if (out.name == kReferOutput) {
      out.kind = RequestedOutput::Kind::kRefer;
    } else if (out.name == kOodOutput) {
      out.kind = RequestedOutput::Kind::kOutOfDistribution;
    } else if (out.name == kOodScoreOutput) {
      out.kind = RequestedOutput::Kind::kOodScore;
    } else {
      return absl::InvalidArgumentError(
          absl::StrCat("unknown output '", out.name,
                       "': the outputs are 'probabilities', 'logits', 'malignancy_risk', 'refer', "
                       "'out_of_distribution' and 'ood_score'"));
    }
    for (const RequestedOutput& previous : outputs) {
      if (previous.name == out.name) {
        return absl::InvalidArgumentError(
            absl::StrCat("output '", out.name, "' is requested twice"));
      }
    }
    const auto it = requested.parameters().find(kClassificationParameter);
    if (it != requested.parameters().end()) {
      const pb::InferParameter& parameter = it->second;
      if (parameter.parameter_choice_case() != pb::InferParameter::kInt64Param ||
          parameter.int64_param() < 1 || parameter.int64_param() > num_classes) {
        return absl::InvalidArgumentError(
            absl::StrCat("output '", out.name,
                         "': parameter 'classification' must be an int64 "
                         "in 1..",
                         num_classes, " (how many top classes to return)"));
      }
      out.classification = static_cast<int>(parameter.int64_param());
    }
    outputs.push_back(std::move(out));
  }
  return outputs;
}

absl::Status ParseBytesInput(const pb::ModelInferRequest::InferInputTensor& input,
                             const std::string* raw, int max_items,
                             std::vector<serving::InferRequest>* items) {
  const auto& shape = input.shape();
  if (!(shape.size() == 1 || (shape.size() == 2 && shape[1] == 1)) || shape[0] < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("input 'image' must have shape [N] or [N,1] (one encoded image per "
                     "element), got ",
                     ShapeString(shape)));
  }
  const int64_t n = shape[0];
  if (n == 0) return absl::InvalidArgumentError("input 'image' holds no image (shape [0])");
  if (n > max_items) {
    return absl::InvalidArgumentError(
        absl::StrCat("input 'image' holds ", n, " images; at most ", max_items, " per request"));
  }
  std::vector<std::string> elements;
  if (raw != nullptr) {
    SL_ASSIGN_OR_RETURN(elements, SplitRawBytes(*raw, kImageInput));
    if (static_cast<int64_t>(elements.size()) != n) {
      return absl::InvalidArgumentError(absl::StrCat("raw contents of input 'image' hold ",
                                                     elements.size(), " elements, shape ",
                                                     ShapeString(shape), " needs ", n));
    }
  } else {
    const auto& contents = input.contents().bytes_contents();
    if (contents.size() != n) {
      return absl::InvalidArgumentError(absl::StrCat("input 'image' has ", contents.size(),
                                                     " elements in contents.bytes_contents, shape ",
                                                     ShapeString(shape), " needs ", n));
    }
    elements.assign(contents.begin(), contents.end());
  }
  for (size_t i = 0; i < elements.size(); ++i) {
    if (elements[i].empty()) {
      return absl::InvalidArgumentError(absl::StrCat("input 'image' element ", i, " is empty"));
    }
    serving::InferRequest item;
    item.encoded_image = std::move(elements[i]);
    items->push_back(std::move(item));
  }
  return absl::OkStatus();
}

absl::Status ParseTensorInput(const pb::ModelInferRequest::InferInputTensor& input,
                              const std::string* raw, const serving::ServedModelStatus& model,
                              int64_t version, int max_items,
                              std::vector<serving::InferRequest>* items) {
  SL_RETURN_IF_ERROR(CheckReady(model));
  const auto& shape = input.shape();
  // The current version's size; a pinned other version is checked by the core.
  const bool know_size = version == 0 || version == model.spec.version;
  const int64_t s = model.spec.image_size;
  const bool ok_shape = shape.size() == 4 && shape[0] >= 0 && shape[1] == 3 && shape[2] > 0 &&
                        shape[2] == shape[3] && shape[2] <= (1 << 15) &&
                        (!know_size || shape[2] == s);
  if (!ok_shape) {
    return absl::InvalidArgumentError(
        absl::StrCat("input 'input' must have shape [N,3,", know_size ? absl::StrCat(s) : "S", ",",
                     know_size ? absl::StrCat(s) : "S", "] (preprocessed images of model '",
                     model.name, "'), got ", ShapeString(shape)));
  }
  const int64_t n = shape[0];
  if (n == 0) return absl::InvalidArgumentError("input 'input' holds no image (shape [0,...])");
  if (n > max_items) {
    return absl::InvalidArgumentError(
        absl::StrCat("input 'input' holds ", n, " images; at most ", max_items, " per request"));
  }
  const int64_t per_item = 3 * shape[2] * shape[3];
  const int64_t count = n * per_item;
  const float* data = nullptr;
  if (raw != nullptr) {
    if (static_cast<int64_t>(raw->size()) != count * 4) {
      return absl::InvalidArgumentError(
          absl::StrCat("raw contents of input 'input' have ", raw->size(), " bytes, shape ",
                       ShapeString(shape), " FP32 needs ", count * 4));
    }
    data = reinterpret_cast<const float*>(raw->data());
  } else {
    const auto& contents = input.contents().fp32_contents();
    if (contents.size() != count) {
      return absl::InvalidArgumentError(absl::StrCat("input 'input' has ", contents.size(),
                                                     " values in contents.fp32_contents, shape ",
                                                     ShapeString(shape), " needs ", count));
    }
    data = contents.data();
  }
  for (int64_t i = 0; i < n; ++i) {
    serving::InferRequest item;
    item.tensor.resize(per_item);
    std::memcpy(item.tensor.data(), reinterpret_cast<const char*>(data) + i * per_item * 4,
                per_item * 4);
    items->push_back(std::move(item));
  }
  return absl::OkStatus();
}

// Class indices by descending value (stable for ties).
std::vector<int> Ranked(const std::vector<float>& values) {
  std::vector<int> order(values.size());
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](int a, int b) { return values[a] > values[b]; });
  return order;
}

}  // namespace

absl::StatusOr<ParsedInfer> ParseModelInfer(const pb::ModelInferRequest& request,
                                            const serving::ServedModelStatus& model, int max_items,
                                            absl::Time deadline) {
  if (request.inputs_size() != 1) {
    return absl::InvalidArgumentError(absl::StrCat(
        "ModelInfer takes exactly one input, 'image' (BYTES, encoded images) or 'input' (FP32 "
        "[N,3,S,S], preprocessed); got ",
        request.inputs_size()));
  }
  const pb::ModelInferRequest::InferInputTensor& input = request.inputs(0);
  ParsedInfer parsed;
  parsed.raw = !request.raw_input_contents().empty();
  if (parsed.raw) {
    if (request.raw_input_contents_size() != request.inputs_size()) {
      return absl::InvalidArgumentError(
          absl::StrCat("raw_input_contents has ", request.raw_input_contents_size(),
                       " entries for ", request.inputs_size(), " input(s)"));
    }
    if (input.has_contents()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "input '", input.name(), "' has both contents and raw_input_contents; send one"));
    }
  }
  SL_ASSIGN_OR_RETURN(const int64_t version, ParseVersion(request.model_version()));
  SL_RETURN_IF_ERROR(CheckVersionLoaded(model, version));
  SL_ASSIGN_OR_RETURN(parsed.outputs, ParseOutputs(request, model.spec.classes.size()));

  const std::string* raw = parsed.raw ? &request.raw_input_contents(0) : nullptr;
  if (input.name() == kImageInput) {
    if (input.datatype() != "BYTES") {
      return absl::InvalidArgumentError(absl::StrCat(
          "input 'image' must have datatype BYTES (encoded images), got '", input.datatype(), "'"));
    }
    SL_RETURN_IF_ERROR(ParseBytesInput(input, raw, max_items, &parsed.items));
  } else if (input.name() == kTensorInput) {
    if (input.datatype() != "FP32") {
      return absl::InvalidArgumentError(absl::StrCat(
          "input 'input' must have datatype FP32 (preprocessed [N,3,S,S] images), got '",
          input.datatype(), "'"));
    }
    SL_RETURN_IF_ERROR(ParseTensorInput(input, raw, model, version, max_items, &parsed.items));
  } else {
    return absl::InvalidArgumentError(
        absl::StrCat("unknown input '", input.name(), "': model '", model.name,
                     "' takes 'image' (BYTES, encoded images) or 'input' (FP32 [N,3,S,S])"));
  }
  for (serving::InferRequest& item : parsed.items) {
    item.model = model.name;
    item.version = version;
    item.deadline = deadline;
    item.grouped = parsed.items.size() > 1;  // Submitted together: one batch.
  }
  return parsed;
}

void FillModelInferResponse(const pb::ModelInferRequest& request, const ParsedInfer& parsed,
                            const std::vector<serving::InferResult>& results,
                            pb::ModelInferResponse* response) {
  const int64_t n = static_cast<int64_t>(results.size());
  if (n > 0) {
    response->set_model_name(results.front().model);
    response->set_model_version(absl::StrCat(results.front().version));
    auto& parameters = *response->mutable_parameters();
    parameters["model_sha256"].set_string_param(results.front().sha256);
    // The views the answers average (their "logits" output is then the log of the
    // views' mean softmax).
    parameters["test_time_views"].set_string_param(
        std::string(TtaName(results.front().test_time_views)));
    // The version's referral operating point (one version per call), as decimal strings
    // (InferParameter has no floating-point member).
    if (const serving::InferResult& r = results.front(); r.refer_risk_threshold.has_value()) {
      parameters["refer_risk_threshold"].set_string_param(
          absl::StrFormat("%.6g", *r.refer_risk_threshold));
      parameters["refer_target_sensitivity"].set_string_param(
          absl::StrFormat("%.6g", r.refer_target_sensitivity));
      parameters["refer_sensitivity_confidence"].set_string_param(
          absl::StrFormat("%.6g", r.refer_sensitivity_confidence));
    }
  }
  response->set_id(request.id());
  for (const RequestedOutput& out : parsed.outputs) {
    pb::ModelInferResponse::InferOutputTensor* tensor = response->add_outputs();
    tensor->set_name(out.name);
    std::string* raw = parsed.raw ? response->add_raw_output_contents() : nullptr;
    if (out.kind != RequestedOutput::Kind::kProbabilities &&
        out.kind != RequestedOutput::Kind::kLogits) {
      // One value per image, [N, 1]: FP32 scores or BOOL flags.
      const bool flag = out.kind == RequestedOutput::Kind::kRefer ||
                        out.kind == RequestedOutput::Kind::kOutOfDistribution;
      tensor->set_datatype(flag ? "BOOL" : "FP32");
      tensor->add_shape(n);
      tensor->add_shape(1);
      for (const serving::InferResult& r : results) {
        if (flag) {
          const bool v =
              out.kind == RequestedOutput::Kind::kRefer ? r.refer : r.out_of_distribution;
          if (raw != nullptr) {
            raw->push_back(v ? 1 : 0);
          } else {
            tensor->mutable_contents()->add_bool_contents(v);
          }
        } else {
          const float v = out.kind == RequestedOutput::Kind::kMalignancyRisk
                              ? r.malignancy_risk
                              : static_cast<float>(r.ood_score);
          if (raw != nullptr) {
            raw->append(reinterpret_cast<const char*>(&v), sizeof(float));
          } else {
            tensor->mutable_contents()->add_fp32_contents(v);
          }
        }
      }
      continue;
    }
    auto values_of = [&](const serving::InferResult& r) -> const std::vector<float>& {
      return out.kind == RequestedOutput::Kind::kLogits ? r.logits : r.probabilities;
    };
    if (out.classification > 0) {
      tensor->set_datatype("BYTES");
      tensor->add_shape(n);
      tensor->add_shape(out.classification);
      for (const serving::InferResult& r : results) {
        const std::vector<float>& values = values_of(r);
        const std::vector<int> order = Ranked(values);
        for (int k = 0; k < out.classification && k < static_cast<int>(order.size()); ++k) {
          const std::string label =
              absl::StrFormat("%f:%d:%s", values[order[k]], order[k], r.classes.at(order[k]).code);
          if (raw != nullptr) {
            AppendRawBytes(label, raw);
          } else {
            tensor->mutable_contents()->add_bytes_contents(label);
          }
        }
      }
      continue;
    }
    tensor->set_datatype("FP32");
    tensor->add_shape(n);
    // Every result of one request comes from one version (ParseModelInfer pins it).
    const size_t num_classes = results.empty() ? 0 : values_of(results.front()).size();
    tensor->add_shape(static_cast<int64_t>(num_classes));
    for (const serving::InferResult& r : results) {
      const std::vector<float>& values = values_of(r);
      if (raw != nullptr) {
        raw->append(reinterpret_cast<const char*>(values.data()), sizeof(float) * values.size());
      } else {
        for (float v : values) tensor->mutable_contents()->add_fp32_contents(v);
      }
    }
  }
}

KServeServiceImpl::KServeServiceImpl(serving::ServingCore* core,
                                     const std::atomic<bool>* shutting_down, KServeOptions options)
    : core_(core), shutting_down_(shutting_down), options_(std::move(options)) {}

grpc::Status KServeServiceImpl::ServerLive(grpc::ServerContext* context,
                                           const pb::ServerLiveRequest* request,
                                           pb::ServerLiveResponse* response) {
  response->set_live(true);
  return grpc::Status::OK;
}

grpc::Status KServeServiceImpl::ServerReady(grpc::ServerContext* context,
                                            const pb::ServerReadyRequest* request,
                                            pb::ServerReadyResponse* response) {
  response->set_ready(!shutting_down_->load() && core_->Ready());
  return grpc::Status::OK;
}

grpc::Status KServeServiceImpl::ModelReady(grpc::ServerContext* context,
                                           const pb::ModelReadyRequest* request,
                                           pb::ModelReadyResponse* response) {
  absl::StatusOr<serving::ServedModelStatus> model = FindServedModel(*core_, request->name());
  if (!model.ok()) return ToGrpcStatus(model.status());
  const absl::StatusOr<int64_t> version = ParseVersion(request->version());
  if (!version.ok()) return ToGrpcStatus(version.status());
  response->set_ready(!shutting_down_->load() && model->ready &&
                      CheckVersionLoaded(*model, *version).ok());
  return grpc::Status::OK;
}

grpc::Status KServeServiceImpl::ServerMetadata(grpc::ServerContext* context,
                                               const pb::ServerMetadataRequest* request,
                                               pb::ServerMetadataResponse* response) {
  response->set_name(options_.server_name);
  response->set_version(options_.server_version);
  response->add_extensions("classification");
  return grpc::Status::OK;
}

grpc::Status KServeServiceImpl::ModelMetadata(grpc::ServerContext* context,
                                              const pb::ModelMetadataRequest* request,
                                              pb::ModelMetadataResponse* response) {
  const absl::Status status = [&]() -> absl::Status {
    SL_ASSIGN_OR_RETURN(const serving::ServedModelStatus model,
                        FindServedModel(*core_, request->name()));
    SL_ASSIGN_OR_RETURN(const int64_t version, ParseVersion(request->version()));
    SL_RETURN_IF_ERROR(CheckVersionLoaded(model, version));
    SL_RETURN_IF_ERROR(CheckReady(model));
    response->set_name(model.name);
    for (int64_t v : model.loaded_versions) response->add_versions(absl::StrCat(v));
    response->set_platform("pytorch_libtorch");
    auto add = [](auto* list, const char* name, const char* datatype,
                  std::initializer_list<int64_t> shape) {
      pb::ModelMetadataResponse::TensorMetadata* tensor = list->Add();
      tensor->set_name(name);
      tensor->set_datatype(datatype);
      for (int64_t d : shape) tensor->add_shape(d);
    };
    const int64_t s = model.spec.image_size;
    add(response->mutable_inputs(), kImageInput, "BYTES", {-1});
    add(response->mutable_inputs(), kTensorInput, "FP32", {-1, 3, s, s});
    const int64_t num_classes = model.spec.classes.size();
    add(response->mutable_outputs(), kProbabilitiesOutput, "FP32", {-1, num_classes});
    add(response->mutable_outputs(), kLogitsOutput, "FP32", {-1, num_classes});
    add(response->mutable_outputs(), kMalignancyRiskOutput, "FP32", {-1, 1});
    add(response->mutable_outputs(), kReferOutput, "BOOL", {-1, 1});
    add(response->mutable_outputs(), kOodOutput, "BOOL", {-1, 1});
    add(response->mutable_outputs(), kOodScoreOutput, "FP32", {-1, 1});
    return absl::OkStatus();
  }();
  return ToGrpcStatus(status);
}

grpc::Status KServeServiceImpl::ModelInfer(grpc::ServerContext* context,
                                           const pb::ModelInferRequest* request,
                                           pb::ModelInferResponse* response) {
  return ToGrpcStatus(DoModelInfer(*context, *request, response));
}

absl::Status KServeServiceImpl::DoModelInfer(const grpc::ServerContext& context,
                                             const pb::ModelInferRequest& request,
                                             pb::ModelInferResponse* response) {
  SL_ASSIGN_OR_RETURN(const serving::ServedModelStatus model,
                      FindServedModel(*core_, request.model_name()));
  SL_ASSIGN_OR_RETURN(
      ParsedInfer parsed,
      ParseModelInfer(request, model, options_.max_items_per_request, DeadlineOf(context)));
  const std::string client = ClientOf(context);
  for (serving::InferRequest& item : parsed.items) item.client = client;
  // Every item goes to the core at once so that the batcher can group them.
  struct Join {
    explicit Join(size_t n) : remaining(n), results(n, absl::UnknownError("not run")) {}
    absl::Mutex mu;
    absl::CondVar cv;  // With mu: remaining reached 0.
    size_t remaining ABSL_GUARDED_BY(mu);
    std::vector<absl::StatusOr<serving::InferResult>> results ABSL_GUARDED_BY(mu);
  };
  const size_t n = parsed.items.size();
  auto join = std::make_shared<Join>(n);
  for (size_t i = 0; i < n; ++i) {
    core_->InferAsync(std::move(parsed.items[i]),
                      [join, i](absl::StatusOr<serving::InferResult> result) {
                        absl::MutexLock lock(&join->mu);
                        join->results[i] = std::move(result);
                        if (--join->remaining == 0) join->cv.SignalAll();
                      });
  }
  std::vector<serving::InferResult> results;
  {
    absl::MutexLock lock(&join->mu);
    while (join->remaining != 0) join->cv.Wait(&join->mu);
    for (size_t i = 0; i < n; ++i) {
      if (!join->results[i].ok()) {
        const absl::Status& status = join->results[i].status();
        if (n == 1) return status;
        return absl::Status(status.code(),
                            absl::StrCat("item ", i, " of ", n, ": ", status.message()));
      }
      results.push_back(*std::move(join->results[i]));
    }
  }
  // One [N, num_classes] tensor needs one label set: a hot reload to a version with
  // other classes between the items of an unpinned request is retried by the client.
  for (const serving::InferResult& r : results) {
    if (r.classes != results.front().classes) {
      return absl::UnavailableError(
          absl::StrCat("model '", model.name, "' changed to a version with other classes (",
                       r.classes.ToString(), " vs ", results.front().classes.ToString(),
                       ") during this request; retry"));
    }
  }
  FillModelInferResponse(request, parsed, results, response);
  return absl::OkStatus();
}

}  // namespace skinlesion::inference
