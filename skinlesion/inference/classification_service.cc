#include "skinlesion/inference/classification_service.h"

#include <algorithm>
#include <atomic>
#include <deque>
#include <future>
#include <memory>
#include <numeric>
#include <thread>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "skinlesion/common/classes.h"

namespace skinlesion::inference {
namespace {

v1::MalignancyGroup ToProto(MalignancyGroup group) {
  return group == MalignancyGroup::kMalignant ? v1::MALIGNANCY_GROUP_MALIGNANT
                                              : v1::MALIGNANCY_GROUP_BENIGN;
}

void FillLesionClass(const ClassInfo& info, v1::LesionClass* lesion) {
  lesion->set_index(info.index);
  lesion->set_code(info.code);
  lesion->set_name(info.name);
  lesion->set_group(ToProto(info.group));
}

void FillClass(const LabelSet& classes, int index, float probability, v1::ClassProbability* out) {
  FillLesionClass(classes.at(index), out->mutable_lesion_class());
  out->set_probability(probability);
}

}  // namespace

absl::StatusOr<serving::InferRequest> ToInferRequest(const v1::ClassifyRequest& request,
                                                     absl::Time deadline,
                                                     const std::string& client) {
  if (request.image().empty()) {
    return absl::InvalidArgumentError("image is empty: send the encoded JPEG/PNG/WebP/BMP bytes");
  }
  if (request.version() < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("version must be >= 0 (0: current), got ", request.version()));
  }
  serving::InferRequest out;
  out.model = request.model();
  out.version = request.version();
  out.encoded_image = request.image();
  out.deadline = deadline;
  out.client = client;
  return out;
}

int EffectiveTopK(int requested, int default_top_k) {
  if (requested == 0) requested = default_top_k;
  return std::clamp(requested, 1, kMaxClasses);
}

void FillClassifyResponse(const serving::InferResult& result, int top_k, const std::string& alias,
                          v1::ClassifyResponse* response) {
  const int num_classes = static_cast<int>(result.probabilities.size());
  for (int i = 0; i < num_classes; ++i) {
    FillClass(result.classes, i, result.probabilities[i], response->add_probabilities());
  }
  std::vector<int> order(num_classes);
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(),
                   [&](int a, int b) { return result.probabilities[a] > result.probabilities[b]; });
  for (int i = 0; i < top_k && i < num_classes; ++i) {
    FillClass(result.classes, order[i], result.probabilities[order[i]], response->add_top());
  }
  response->set_malignancy_risk(result.malignancy_risk);
  response->set_refer(result.refer);
  response->set_refer_reason(result.refer_reason);
  response->set_refer_rule(std::string(ReferRuleName(result.refer_rule)));
  response->set_refer_risk_threshold(static_cast<float>(result.refer_risk_threshold.value_or(0.0)));
  response->set_refer_target_sensitivity(static_cast<float>(result.refer_target_sensitivity));
  response->set_refer_sensitivity_confidence(
      static_cast<float>(result.refer_sensitivity_confidence));
  response->set_test_time_views(std::string(TtaName(result.test_time_views)));
  response->set_out_of_distribution(result.out_of_distribution);
  response->set_ood_score(static_cast<float>(result.ood_score));
  if (result.out_of_distribution) response->set_ood_message(kOodMessage);
  v1::ModelRef* model = response->mutable_model();
  model->set_name(result.model);
  model->set_version(result.version);
  model->set_alias(alias);
  model->set_sha256(result.sha256);
  v1::Timing* timing = response->mutable_timing();
  timing->set_queue_ms(result.queue_ms);
  timing->set_compute_ms(result.compute_ms);
  timing->set_total_ms(result.total_ms);
  timing->set_batch_size(result.batch_size);
}

ClassificationServiceImpl::ClassificationServiceImpl(serving::ServingCore* core,
                                                     ClassificationOptions options)
    : core_(core), options_(options) {}

std::string ClassificationServiceImpl::AliasOf(const std::string& model, int64_t version) const {
  for (const serving::ServedModelStatus& status : core_->Models()) {
    if (status.name == model && status.ready && status.spec.version == version) {
      return status.alias;
    }
  }
  return "";
}

absl::Status ClassificationServiceImpl::Respond(const absl::StatusOr<serving::InferResult>& result,
                                                const v1::ClassifyRequest& request,
                                                absl::Time deadline, const std::string& client,
                                                v1::ClassifyResponse* response) {
  response->set_request_id(request.request_id());
  if (!result.ok()) return result.status();
  FillClassifyResponse(*result, EffectiveTopK(request.top_k(), options_.default_top_k),
                       AliasOf(result->model, result->version), response);
  if (!request.explain()) return absl::OkStatus();
  serving::ExplainRequest explain;
  explain.model = result->model;
  explain.version = result->version;
  explain.encoded_image = request.image();
  explain.target_class = result->top_class;
  explain.deadline = deadline;
  explain.client = client;
  absl::StatusOr<serving::Explanation> explanation = core_->Explain(explain);
  if (!explanation.ok()) {
    return absl::Status(explanation.status().code(),
                        absl::StrCat("explanation: ", explanation.status().message()));
  }
  v1::Explanation* out = response->mutable_explanation();
  out->set_method(explanation->method);
  out->set_width(explanation->width);
  out->set_height(explanation->height);
  out->set_covers(explanation->covers);
  out->mutable_heat()->Add(explanation->heat.begin(), explanation->heat.end());
  return absl::OkStatus();
}

grpc::Status ClassificationServiceImpl::Classify(grpc::ServerContext* context,
                                                 const v1::ClassifyRequest* request,
                                                 v1::ClassifyResponse* response) {
  const absl::Time deadline = DeadlineOf(*context);
  const std::string client = ClientOf(*context);
  absl::StatusOr<serving::InferRequest> infer = ToInferRequest(*request, deadline, client);
  if (!infer.ok()) return ToGrpcStatus(infer.status());
  const absl::StatusOr<serving::InferResult> result = core_->Infer(*std::move(infer));
  return ToGrpcStatus(Respond(result, *request, deadline, client, response));
}

grpc::Status ClassificationServiceImpl::ClassifyStream(
    grpc::ServerContext* context,
    grpc::ServerReaderWriter<v1::ClassifyResponse, v1::ClassifyRequest>* stream) {
  using Result = absl::StatusOr<serving::InferResult>;
  struct Pending {
    v1::ClassifyRequest request;  // The image is dropped once submitted, unless explain.
    std::future<Result> result;
  };
  // Shared by the handler thread (reads, submits) and the writer thread.
  struct Queue {
    absl::Mutex mu;
    absl::CondVar cv;  // With mu: pending changed, reading_done or write_failed set.
    std::deque<Pending> pending ABSL_GUARDED_BY(mu);  // In request order.
    bool reading_done ABSL_GUARDED_BY(mu) = false;
  } q;
  std::atomic<bool> write_failed{false};  // Set under q.mu; also read without it.

  // The writer answers in request order as results complete; the handler thread
  // keeps reading and submitting so that later requests batch with earlier ones.
  std::thread writer([&] {
    while (true) {
      Pending item;
      {
        absl::MutexLock lock(&q.mu);
        while (q.pending.empty() && !q.reading_done) q.cv.Wait(&q.mu);
        if (q.pending.empty()) return;
        item = std::move(q.pending.front());
        q.pending.pop_front();
      }
      q.cv.SignalAll();
      const Result result = item.result.get();
      v1::ClassifyResponse response;
      // Explanations run here, one at a time per stream, after their prediction.
      const absl::Status status =
          Respond(result, item.request, DeadlineOf(*context), ClientOf(*context), &response);
      if (!status.ok()) {
        response.Clear();
        response.set_request_id(item.request.request_id());
        response.set_error_code(static_cast<int>(status.code()));
        response.set_error_message(std::string(status.message()));
      }
      if (!write_failed && !stream->Write(response)) {
        {
          absl::MutexLock lock(&q.mu);
          write_failed = true;
        }
        q.cv.SignalAll();
      }
    }
  });

  v1::ClassifyRequest request;
  while (stream->Read(&request)) {
    {
      absl::MutexLock lock(&q.mu);
      while (static_cast<int>(q.pending.size()) >= options_.max_stream_in_flight && !write_failed) {
        q.cv.Wait(&q.mu);
      }
      if (write_failed) break;
    }
    auto promise = std::make_shared<std::promise<Result>>();
    Pending item{.request = std::move(request), .result = promise->get_future()};
    absl::StatusOr<serving::InferRequest> infer =
        ToInferRequest(item.request, DeadlineOf(*context), ClientOf(*context));
    if (!item.request.explain()) item.request.clear_image();
    if (infer.ok()) {
      core_->InferAsync(*std::move(infer),
                        [promise](Result result) { promise->set_value(std::move(result)); });
    } else {
      promise->set_value(infer.status());
    }
    {
      absl::MutexLock lock(&q.mu);
      q.pending.push_back(std::move(item));
    }
    q.cv.SignalAll();
    request.Clear();
  }
  {
    absl::MutexLock lock(&q.mu);
    q.reading_done = true;
  }
  q.cv.SignalAll();
  writer.join();
  if (write_failed) {
    return grpc::Status(grpc::StatusCode::CANCELLED,
                        "the client stopped receiving ClassifyStream responses");
  }
  if (context->IsCancelled()) {
    return grpc::Status(grpc::StatusCode::CANCELLED, "ClassifyStream cancelled");
  }
  return grpc::Status::OK;
}

grpc::Status ClassificationServiceImpl::ListServedModels(grpc::ServerContext* context,
                                                         const v1::ListServedModelsRequest* request,
                                                         v1::ListServedModelsResponse* response) {
  for (const serving::ServedModelStatus& status : core_->Models()) {
    v1::ServedModel* served = response->add_models();
    v1::ModelRef* model = served->mutable_model();
    model->set_name(status.name);
    model->set_alias(status.alias);
    served->set_ready(status.ready);
    if (status.ready) {
      model->set_version(status.spec.version);
      model->set_sha256(status.spec.sha256);
      served->set_architecture(status.spec.architecture);
      served->set_input_size(status.spec.image_size);
      for (const ClassInfo& c : status.spec.classes) FillLesionClass(c, served->add_classes());
    }
  }
  return grpc::Status::OK;
}

}  // namespace skinlesion::inference
