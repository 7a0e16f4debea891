// The gRPC front ends against a fake ServingCore, through a real in-process server
// on 127.0.0.1:0 and the real generated stubs.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cstring>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "gmock/gmock.h"
#include "grpcpp/generic/generic_stub.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "kserve/grpc_predict_v2.grpc.pb.h"
#include "prometheus/registry.h"
#include "prometheus/text_serializer.h"
#include "skinlesion/inference/inference_server.h"
#include "skinlesion/telemetry/grpc_health.h"
#include "skinlesion/v1/classification.grpc.pb.h"

namespace skinlesion::inference {
namespace {

using serving::InferRequest;
using serving::InferResult;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::SizeIs;

constexpr char kClassificationService[] = "skinlesion.v1.ClassificationService";
constexpr char kKServeService[] = "inference.GRPCInferenceService";
constexpr int kImageSize = 4;  // Tiny [3,4,4] tensors.
constexpr int kTensorSize = 3 * kImageSize * kImageSize;
constexpr std::array<float, 7> kProbs = {0.05f, 0.1f, 0.05f, 0.02f, 0.6f, 0.15f, 0.03f};

InferResult MakeResult(int batch_size = 2) {
  InferResult r;
  r.probabilities.assign(kProbs.begin(), kProbs.end());
  r.logits.resize(kProbs.size());
  for (int i = 0; i < 7; ++i) r.logits[i] = std::log(kProbs[i]) + 1.0f;
  r.top_class = 4;
  r.confidence = 0.6f;
  r.malignancy_risk = 0.75f;
  r.refer = true;
  r.refer_rule = ReferRule::kMalignancyRisk;
  r.refer_reason = "margin 0.45 below 0.5";
  r.refer_risk_threshold = 0.18;
  r.refer_target_sensitivity = 0.9;
  r.refer_sensitivity_confidence = 0.95;
  r.test_time_views = Tta::kFlips;
  r.ood_score = 2.5;
  r.ood_checked = true;
  r.out_of_distribution = true;
  r.model = "ham10000";
  r.version = 3;
  r.sha256 = "ab12";
  r.batch_size = batch_size;
  r.queue_ms = 1.5;
  r.compute_ms = 7.25;
  r.total_ms = 9.0;
  return r;
}

// Answers with `handler` (default: MakeResult(), or a status chosen by the image
// bytes "status:<code>"); InferAsync completes on its own thread.
class FakeCore : public serving::ServingCore {
 public:
  FakeCore() {
    serving::ServedModelStatus model;
    model.name = "ham10000";
    model.alias = "production";
    model.ready = true;
    model.spec.name = "ham10000";
    model.spec.version = 3;
    model.spec.sha256 = "ab12";
    model.spec.architecture = "resnet18";
    model.spec.image_size = kImageSize;
    model.loaded_versions = {2, 3};
    models_.push_back(model);
  }
  ~FakeCore() override { JoinThreads(); }

  absl::StatusOr<InferResult> Infer(InferRequest request) override {
    {
      std::lock_guard<std::mutex> lock(mu_);
      seen_.push_back(request);
    }
    if (handler_) return handler_(request);
    if (request.encoded_image.rfind("status:", 0) == 0) {
      const int code = std::stoi(request.encoded_image.substr(7));
      return absl::Status(static_cast<absl::StatusCode>(code),
                          "fake failure " + request.encoded_image);
    }
    return MakeResult();
  }
  void InferAsync(InferRequest request,
                  std::function<void(absl::StatusOr<InferResult>)> done) override {
    std::lock_guard<std::mutex> lock(threads_mu_);
    threads_.emplace_back([this, request = std::move(request), done = std::move(done)]() mutable {
      done(Infer(std::move(request)));
    });
  }
  // Default: a 3 x 2 Grad-CAM map; or `explain_handler`.
  absl::StatusOr<serving::Explanation> Explain(const serving::ExplainRequest& request) override {
    {
      std::lock_guard<std::mutex> lock(mu_);
      explains_.push_back(request);
    }
    if (explain_handler_) return explain_handler_(request);
    serving::Explanation e;
    e.method = "grad-cam";
    e.width = 3;
    e.height = 2;
    e.covers = "center-square";
    e.heat = {0.0f, 0.2f, 0.4f, 0.6f, 0.8f, 1.0f};
    return e;
  }
  bool Ready() const override { return ready_.load(); }
  std::vector<serving::ServedModelStatus> Models() const override {
    std::lock_guard<std::mutex> lock(mu_);
    return models_;
  }
  void Shutdown(absl::Duration drain) override {
    shutdown_calls_++;
    ready_ = false;
  }

  void set_handler(std::function<absl::StatusOr<InferResult>(const InferRequest&)> handler) {
    handler_ = std::move(handler);
  }
  void set_explain_handler(
      std::function<absl::StatusOr<serving::Explanation>(const serving::ExplainRequest&)> handler) {
    explain_handler_ = std::move(handler);
  }
  std::vector<serving::ExplainRequest> explains() const {
    std::lock_guard<std::mutex> lock(mu_);
    return explains_;
  }
  void set_ready(bool ready) { ready_ = ready; }
  std::vector<InferRequest> seen() const {
    std::lock_guard<std::mutex> lock(mu_);
    return seen_;
  }
  int shutdown_calls() const { return shutdown_calls_.load(); }
  void JoinThreads() {
    std::vector<std::thread> threads;
    {
      std::lock_guard<std::mutex> lock(threads_mu_);
      threads.swap(threads_);
    }
    for (std::thread& t : threads) t.join();
  }

 private:
  mutable std::mutex mu_;
  std::vector<serving::ServedModelStatus> models_;
  std::vector<InferRequest> seen_;
  std::function<absl::StatusOr<InferResult>(const InferRequest&)> handler_;
  std::vector<serving::ExplainRequest> explains_;
  std::function<absl::StatusOr<serving::Explanation>(const serving::ExplainRequest&)>
      explain_handler_;
  std::atomic<bool> ready_{true};
  std::atomic<int> shutdown_calls_{0};
  std::mutex threads_mu_;
  std::vector<std::thread> threads_;
};

class InferenceServiceTest : public ::testing::Test {
 protected:
  void SetUp() override { StartServer(); }
  void TearDown() override {
    if (server_ != nullptr) server_->Shutdown(absl::Seconds(5));
    core_.JoinThreads();
  }
  void StartServer() {
    InferenceServerOptions options;
    options.listen_address = "127.0.0.1:0";
    options.server_version = "9.9.9";
    options.readiness_poll_interval = absl::Milliseconds(10);
    auto server = InferenceServer::Start(options, &core_, &registry_);
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = *std::move(server);
    channel_ = grpc::CreateChannel(absl::StrCat("127.0.0.1:", server_->port()),
                                   grpc::InsecureChannelCredentials());
    classify_ = v1::ClassificationService::NewStub(channel_);
    kserve_ = ::inference::GRPCInferenceService::NewStub(channel_);
  }
  static void SetDeadline(grpc::ClientContext* context, int seconds = 30) {
    context->set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(seconds));
  }
  // One Classify call on another thread; its status lands in *status when joined.
  std::thread ClassifyInBackground(grpc::Status* status) {
    return std::thread([this, status] {
      grpc::ClientContext context;
      SetDeadline(&context);
      v1::ClassifyRequest request;
      request.set_image("x");
      v1::ClassifyResponse response;
      *status = classify_->Classify(&context, request, &response);
    });
  }

  // One ClassifyStream call: writes `requests`, closes, reads every answer; the
  // call's status lands in *status.
  std::vector<v1::ClassifyResponse> ClassifyStreamAll(
      const std::vector<v1::ClassifyRequest>& requests, grpc::Status* status) {
    grpc::ClientContext context;
    SetDeadline(&context);
    auto stream = classify_->ClassifyStream(&context);
    for (const v1::ClassifyRequest& request : requests) {
      if (!stream->Write(request)) break;
    }
    stream->WritesDone();
    std::vector<v1::ClassifyResponse> responses;
    v1::ClassifyResponse response;
    while (stream->Read(&response)) responses.push_back(response);
    *status = stream->Finish();
    return responses;
  }

  static std::string ToString(const grpc::ByteBuffer& buffer) {
    std::vector<grpc::Slice> slices;
    std::string out;
    if (!buffer.Dump(&slices).ok()) return out;
    for (const grpc::Slice& s : slices)
      out.append(reinterpret_cast<const char*>(s.begin()), s.size());
    return out;
  }
  // grpc.health.v1.Health/Check: HealthCheckResponse.status (1 SERVING,
  // 2 NOT_SERVING) or -1 on an RPC error.
  int HealthStatus(const std::string& service) {
    int serving = 0;
    return telemetry::CheckGrpcHealth(channel_, service, absl::Seconds(5), &serving).ok() ? serving
                                                                                          : -1;
  }

  // What the server's gRPC interceptor recorded in registry_ (0 when absent):
  // skinlesion_grpc_requests_total{service,method,code} (code "": all codes summed),
  // and the sample count of skinlesion_grpc_request_duration_seconds{service,method}.
  double GrpcCalls(const std::string& service, const std::string& method,
                   const std::string& code = "") {
    double total = 0;
    for (const prometheus::ClientMetric& metric :
         MetricsOf("skinlesion_grpc_requests_total", service, method)) {
      for (const prometheus::ClientMetric::Label& label : metric.label) {
        if (label.name == "code" && (code.empty() || label.value == code)) {
          total += metric.counter.value;
        }
      }
    }
    return total;
  }
  uint64_t GrpcDurationCount(const std::string& service, const std::string& method) {
    uint64_t total = 0;
    for (const prometheus::ClientMetric& metric :
         MetricsOf("skinlesion_grpc_request_duration_seconds", service, method)) {
      total += metric.histogram.sample_count;
    }
    return total;
  }
  std::vector<prometheus::ClientMetric> MetricsOf(const std::string& family_name,
                                                  const std::string& service,
                                                  const std::string& method) {
    std::vector<prometheus::ClientMetric> out;
    for (const prometheus::MetricFamily& family : registry_.Collect()) {
      if (family.name != family_name) continue;
      for (const prometheus::ClientMetric& metric : family.metric) {
        int matched = 0;
        for (const prometheus::ClientMetric::Label& label : metric.label) {
          matched += (label.name == "service" && label.value == service) ||
                     (label.name == "method" && label.value == method);
        }
        if (matched == 2) out.push_back(metric);
      }
    }
    return out;
  }

  FakeCore core_;
  prometheus::Registry registry_;  // Outlives server_.
  std::unique_ptr<InferenceServer> server_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<v1::ClassificationService::Stub> classify_;
  std::unique_ptr<::inference::GRPCInferenceService::Stub> kserve_;
};

// ---------------------------------------------------------------- Classify

TEST_F(InferenceServiceTest, ClassifyFillsEveryField) {
  grpc::ClientContext context;
  SetDeadline(&context, 30);
  v1::ClassifyRequest request;
  request.set_image("jpeg-bytes");
  request.set_request_id("r-1");
  v1::ClassifyResponse response;
  ASSERT_TRUE(classify_->Classify(&context, request, &response).ok());

  EXPECT_EQ(response.request_id(), "r-1");
  ASSERT_THAT(response.probabilities(), SizeIs(7));
  const std::vector<std::string> codes = {"akiec", "bcc", "bkl", "df", "mel", "nv", "vasc"};
  for (int i = 0; i < 7; ++i) {
    const v1::ClassProbability& p = response.probabilities(i);
    EXPECT_EQ(p.lesion_class().index(), i);
    EXPECT_EQ(p.lesion_class().code(), codes[i]);
    EXPECT_FLOAT_EQ(p.probability(), kProbs[i]);
  }
  EXPECT_EQ(response.probabilities(4).lesion_class().name(), "Melanoma");
  EXPECT_EQ(response.probabilities(4).lesion_class().group(), v1::MALIGNANCY_GROUP_MALIGNANT);
  EXPECT_EQ(response.probabilities(5).lesion_class().group(), v1::MALIGNANCY_GROUP_BENIGN);
  ASSERT_THAT(response.top(), SizeIs(3));  // Default top_k.
  EXPECT_EQ(response.top(0).lesion_class().code(), "mel");
  EXPECT_EQ(response.top(1).lesion_class().code(), "nv");
  EXPECT_EQ(response.top(2).lesion_class().code(), "bcc");
  EXPECT_FLOAT_EQ(response.malignancy_risk(), 0.75f);
  EXPECT_TRUE(response.refer());
  EXPECT_EQ(response.refer_reason(), "margin 0.45 below 0.5");
  EXPECT_EQ(response.refer_rule(), "malignancy_risk");
  EXPECT_FLOAT_EQ(response.refer_risk_threshold(), 0.18f);
  EXPECT_FLOAT_EQ(response.refer_target_sensitivity(), 0.9f);
  EXPECT_FLOAT_EQ(response.refer_sensitivity_confidence(), 0.95f);
  EXPECT_EQ(response.test_time_views(), "flips");
  EXPECT_TRUE(response.out_of_distribution());
  EXPECT_FLOAT_EQ(response.ood_score(), 2.5f);
  EXPECT_THAT(response.ood_message(), HasSubstr("does not look like a dermoscopic photo"));
  EXPECT_EQ(response.model().name(), "ham10000");
  EXPECT_EQ(response.model().version(), 3);
  EXPECT_EQ(response.model().alias(), "production");
  EXPECT_EQ(response.model().sha256(), "ab12");
  EXPECT_DOUBLE_EQ(response.timing().queue_ms(), 1.5);
  EXPECT_DOUBLE_EQ(response.timing().compute_ms(), 7.25);
  EXPECT_DOUBLE_EQ(response.timing().total_ms(), 9.0);
  EXPECT_EQ(response.timing().batch_size(), 2);
  EXPECT_EQ(response.error_code(), 0);

  // The core got the image and the client's deadline.
  const std::vector<InferRequest> seen = core_.seen();
  ASSERT_THAT(seen, SizeIs(1));
  EXPECT_EQ(seen[0].encoded_image, "jpeg-bytes");
  EXPECT_EQ(seen[0].model, "");
  EXPECT_EQ(seen[0].version, 0);
  EXPECT_GT(seen[0].deadline, absl::Now() + absl::Seconds(20));
  EXPECT_LT(seen[0].deadline, absl::Now() + absl::Seconds(31));
}

TEST_F(InferenceServiceTest, ClassifyPassesModelVersionAndNoDeadline) {
  grpc::ClientContext context;  // No deadline.
  v1::ClassifyRequest request;
  request.set_image("x");
  request.set_model("ham10000");
  request.set_version(2);
  v1::ClassifyResponse response;
  ASSERT_TRUE(classify_->Classify(&context, request, &response).ok());
  const std::vector<InferRequest> seen = core_.seen();
  ASSERT_THAT(seen, SizeIs(1));
  EXPECT_EQ(seen[0].model, "ham10000");
  EXPECT_EQ(seen[0].version, 2);
  EXPECT_EQ(seen[0].deadline, absl::InfiniteFuture());
}

TEST_F(InferenceServiceTest, ClassifyTopKIsClamped) {
  for (const auto& [requested, expected] :
       std::vector<std::pair<int, int>>{{1, 1}, {5, 5}, {7, 7}, {10, 7}, {-2, 1}}) {
    grpc::ClientContext context;
    v1::ClassifyRequest request;
    request.set_image("x");
    request.set_top_k(requested);
    v1::ClassifyResponse response;
    ASSERT_TRUE(classify_->Classify(&context, request, &response).ok());
    EXPECT_EQ(response.top_size(), expected) << "top_k " << requested;
  }
}

TEST_F(InferenceServiceTest, ClassifyAliasEmptyForAnOlderVersion) {
  core_.set_handler([](const InferRequest&) {
    InferResult r = MakeResult();
    r.version = 2;
    return r;
  });
  grpc::ClientContext context;
  v1::ClassifyRequest request;
  request.set_image("x");
  v1::ClassifyResponse response;
  ASSERT_TRUE(classify_->Classify(&context, request, &response).ok());
  EXPECT_EQ(response.model().version(), 2);
  EXPECT_EQ(response.model().alias(), "");
}

TEST_F(InferenceServiceTest, ClassifyRejectsEmptyImageAndBadVersionWithoutCallingTheCore) {
  {
    grpc::ClientContext context;
    v1::ClassifyRequest request;
    v1::ClassifyResponse response;
    const grpc::Status status = classify_->Classify(&context, request, &response);
    EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
    EXPECT_THAT(status.error_message(), HasSubstr("image is empty"));
  }
  {
    grpc::ClientContext context;
    v1::ClassifyRequest request;
    request.set_image("x");
    request.set_version(-1);
    request.set_explain(true);
    v1::ClassifyResponse response;
    EXPECT_EQ(classify_->Classify(&context, request, &response).error_code(),
              grpc::StatusCode::INVALID_ARGUMENT);
  }
  EXPECT_THAT(core_.seen(), SizeIs(0));
  EXPECT_THAT(core_.explains(), SizeIs(0));
}

// explain=true: after the prediction, the core explains its top class on the
// version that made it, with the same image and the call's deadline.
TEST_F(InferenceServiceTest, ClassifyExplainsTheTopClassOnThePredictionsVersion) {
  grpc::ClientContext context;
  SetDeadline(&context);
  v1::ClassifyRequest request;
  request.set_image("img");
  request.set_explain(true);
  v1::ClassifyResponse response;
  ASSERT_TRUE(classify_->Classify(&context, request, &response).ok());
  ASSERT_TRUE(response.has_explanation());
  const v1::Explanation& e = response.explanation();
  EXPECT_EQ(e.method(), "grad-cam");
  EXPECT_EQ(e.width(), 3);
  EXPECT_EQ(e.height(), 2);
  EXPECT_EQ(e.covers(), "center-square");
  EXPECT_THAT(e.heat(), ElementsAre(0.0f, 0.2f, 0.4f, 0.6f, 0.8f, 1.0f));
  EXPECT_EQ(response.top(0).lesion_class().index(), 4);  // The prediction is intact.
  const auto explains = core_.explains();
  ASSERT_THAT(explains, SizeIs(1));
  EXPECT_EQ(explains[0].model, "ham10000");
  EXPECT_EQ(explains[0].version, 3);
  EXPECT_EQ(explains[0].target_class, 4);
  EXPECT_EQ(explains[0].encoded_image, "img");
  EXPECT_TRUE(explains[0].tensor.empty());
  EXPECT_LT(explains[0].deadline, absl::Now() + absl::Seconds(31));

  // Without explain=true nothing is explained.
  grpc::ClientContext plain_context;
  request.set_explain(false);
  response.Clear();
  ASSERT_TRUE(classify_->Classify(&plain_context, request, &response).ok());
  EXPECT_FALSE(response.has_explanation());
  EXPECT_THAT(core_.explains(), SizeIs(1));
}

TEST_F(InferenceServiceTest, ClassifyExplainErrorFailsTheCallWithItsCode) {
  core_.set_explain_handler(
      [](const serving::ExplainRequest& r) -> absl::StatusOr<serving::Explanation> {
        return absl::NotFoundError(
            absl::StrCat("version ", r.version, " of model ham10000 is not loaded"));
      });
  grpc::ClientContext context;
  v1::ClassifyRequest request;
  request.set_image("img");
  request.set_explain(true);
  v1::ClassifyResponse response;
  const grpc::Status status = classify_->Classify(&context, request, &response);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_EQ(status.error_message(), "explanation: version 3 of model ham10000 is not loaded");
}

class ClassifyErrorTest : public InferenceServiceTest,
                          public ::testing::WithParamInterface<absl::StatusCode> {};

TEST_P(ClassifyErrorTest, CoreStatusMapsOneToOne) {
  const absl::StatusCode code = GetParam();
  core_.set_handler([code](const InferRequest&) -> absl::StatusOr<InferResult> {
    return absl::Status(code, "the core says no");
  });
  grpc::ClientContext context;
  v1::ClassifyRequest request;
  request.set_image("x");
  v1::ClassifyResponse response;
  const grpc::Status status = classify_->Classify(&context, request, &response);
  EXPECT_EQ(static_cast<int>(status.error_code()), static_cast<int>(code));
  EXPECT_EQ(status.error_message(), "the core says no");
}

INSTANTIATE_TEST_SUITE_P(
    Codes, ClassifyErrorTest,
    ::testing::Values(absl::StatusCode::kInvalidArgument, absl::StatusCode::kNotFound,
                      absl::StatusCode::kResourceExhausted, absl::StatusCode::kDeadlineExceeded,
                      absl::StatusCode::kUnavailable, absl::StatusCode::kInternal),
    [](const auto& info) { return absl::StrCat("code", static_cast<int>(info.param)); });

TEST_F(InferenceServiceTest, ClassifyClientDeadlinePassesWhileTheCoreWorks) {
  core_.set_handler([](const InferRequest&) -> absl::StatusOr<InferResult> {
    absl::SleepFor(absl::Milliseconds(500));
    return MakeResult();
  });
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + std::chrono::milliseconds(100));
  v1::ClassifyRequest request;
  request.set_image("x");
  v1::ClassifyResponse response;
  EXPECT_EQ(classify_->Classify(&context, request, &response).error_code(),
            grpc::StatusCode::DEADLINE_EXCEEDED);
}

// ---------------------------------------------------------------- ClassifyStream

TEST_F(InferenceServiceTest, ClassifyStreamAnswersEveryItemInOrderDespiteABadOne) {
  // The first item is the slowest: answers must still come back in request order.
  core_.set_handler([](const InferRequest& request) -> absl::StatusOr<InferResult> {
    if (request.encoded_image == "slow") absl::SleepFor(absl::Milliseconds(100));
    if (request.encoded_image == "bad") {
      return absl::InvalidArgumentError("cannot decode image: not a JPEG/PNG/WebP/BMP");
    }
    return MakeResult();
  });
  const std::vector<std::string> images = {"slow", "ok", "bad", "", "ok"};
  std::vector<v1::ClassifyRequest> requests(images.size());
  for (size_t i = 0; i < images.size(); ++i) {
    requests[i].set_image(images[i]);
    requests[i].set_request_id(absl::StrCat("id-", i));
    requests[i].set_top_k(2);
  }
  grpc::Status status;
  const std::vector<v1::ClassifyResponse> responses = ClassifyStreamAll(requests, &status);
  ASSERT_TRUE(status.ok()) << status.error_message();
  ASSERT_THAT(responses, SizeIs(5));
  for (size_t i = 0; i < responses.size(); ++i) {
    EXPECT_EQ(responses[i].request_id(), absl::StrCat("id-", i));
  }
  for (int i : {0, 1, 4}) {
    EXPECT_EQ(responses[i].error_code(), 0) << i;
    EXPECT_THAT(responses[i].top(), SizeIs(2));
    EXPECT_THAT(responses[i].probabilities(), SizeIs(7));
    EXPECT_EQ(responses[i].model().version(), 3);
  }
  EXPECT_EQ(responses[2].error_code(), static_cast<int>(grpc::StatusCode::INVALID_ARGUMENT));
  EXPECT_THAT(responses[2].error_message(), HasSubstr("cannot decode image"));
  EXPECT_THAT(responses[2].probabilities(), SizeIs(0));
  EXPECT_EQ(responses[3].error_code(), static_cast<int>(grpc::StatusCode::INVALID_ARGUMENT));
  EXPECT_THAT(responses[3].error_message(), HasSubstr("image is empty"));
}

TEST_F(InferenceServiceTest, ClassifyStreamExplainsTheItemsThatAskForIt) {
  core_.set_explain_handler(
      [](const serving::ExplainRequest& r) -> absl::StatusOr<serving::Explanation> {
        if (r.encoded_image == "unexplainable") return absl::UnimplementedError("no explanations");
        serving::Explanation e;
        e.method = "attention-rollout";
        e.width = e.height = 1;
        e.covers = "full-image";
        e.heat = {static_cast<float>(r.encoded_image.size()) / 10.0f};
        return e;
      });
  const std::vector<std::pair<std::string, bool>> items = {
      {"plain", false}, {"explain", true}, {"unexplainable", true}, {"ab", true}};
  std::vector<v1::ClassifyRequest> requests;
  for (const auto& [image, explain] : items) {
    requests.emplace_back().set_image(image);
    requests.back().set_explain(explain);
  }
  grpc::Status status;
  const std::vector<v1::ClassifyResponse> responses = ClassifyStreamAll(requests, &status);
  ASSERT_TRUE(status.ok()) << status.error_message();
  ASSERT_THAT(responses, SizeIs(4));
  EXPECT_FALSE(responses[0].has_explanation());
  ASSERT_TRUE(responses[1].has_explanation());
  EXPECT_EQ(responses[1].explanation().method(), "attention-rollout");
  EXPECT_EQ(responses[1].explanation().covers(), "full-image");
  EXPECT_THAT(responses[1].explanation().heat(), ElementsAre(0.7f));  // "explain": 7 bytes.
  EXPECT_EQ(responses[2].error_code(), static_cast<int>(grpc::StatusCode::UNIMPLEMENTED));
  EXPECT_THAT(responses[2].error_message(), HasSubstr("explanation: no explanations"));
  EXPECT_THAT(responses[3].explanation().heat(), ElementsAre(0.2f));
  EXPECT_THAT(core_.explains(), SizeIs(3));
}

TEST_F(InferenceServiceTest, ClassifyStreamManyItemsBeyondTheInFlightWindow) {
  grpc::ClientContext context;
  SetDeadline(&context);
  auto stream = classify_->ClassifyStream(&context);
  constexpr int kItems = 100;  // > max_stream_in_flight (32).
  std::thread writer([&] {
    for (int i = 0; i < kItems; ++i) {
      v1::ClassifyRequest request;
      request.set_image(i % 10 == 7 ? "status:8" : "ok");
      request.set_request_id(absl::StrCat(i));
      if (!stream->Write(request)) break;
    }
    stream->WritesDone();
  });
  int count = 0, errors = 0;
  v1::ClassifyResponse response;
  while (stream->Read(&response)) {
    EXPECT_EQ(response.request_id(), absl::StrCat(count));
    if (response.error_code() != 0) {
      EXPECT_EQ(response.error_code(), static_cast<int>(grpc::StatusCode::RESOURCE_EXHAUSTED));
      ++errors;
    }
    ++count;
  }
  writer.join();
  EXPECT_TRUE(stream->Finish().ok());
  EXPECT_EQ(count, kItems);
  EXPECT_EQ(errors, 10);
}

// ---------------------------------------------------------------- ListServedModels

TEST_F(InferenceServiceTest, ListServedModels) {
  grpc::ClientContext context;
  v1::ListServedModelsResponse response;
  ASSERT_TRUE(classify_->ListServedModels(&context, {}, &response).ok());
  ASSERT_THAT(response.models(), SizeIs(1));
  const v1::ServedModel& model = response.models(0);
  EXPECT_EQ(model.model().name(), "ham10000");
  EXPECT_EQ(model.model().version(), 3);
  EXPECT_EQ(model.model().alias(), "production");
  EXPECT_EQ(model.model().sha256(), "ab12");
  EXPECT_EQ(model.architecture(), "resnet18");
  EXPECT_EQ(model.input_size(), kImageSize);
  EXPECT_TRUE(model.ready());
}

// ---------------------------------------------------------------- KServe v2

TEST_F(InferenceServiceTest, KServeLiveReadyAndServerMetadata) {
  {
    grpc::ClientContext context;
    ::inference::ServerLiveResponse response;
    ASSERT_TRUE(kserve_->ServerLive(&context, {}, &response).ok());
    EXPECT_TRUE(response.live());
  }
  {
    grpc::ClientContext context;
    ::inference::ServerReadyResponse response;
    ASSERT_TRUE(kserve_->ServerReady(&context, {}, &response).ok());
    EXPECT_TRUE(response.ready());
  }
  core_.set_ready(false);
  {
    grpc::ClientContext context;
    ::inference::ServerReadyResponse response;
    ASSERT_TRUE(kserve_->ServerReady(&context, {}, &response).ok());
    EXPECT_FALSE(response.ready());
  }
  {
    grpc::ClientContext context;
    ::inference::ServerMetadataResponse response;
    ASSERT_TRUE(kserve_->ServerMetadata(&context, {}, &response).ok());
    EXPECT_EQ(response.name(), "skinlesion");
    EXPECT_EQ(response.version(), "9.9.9");
    EXPECT_THAT(response.extensions(), ElementsAre("classification"));
  }
}

TEST_F(InferenceServiceTest, KServeModelReady) {
  auto ready = [&](const std::string& name, const std::string& version, bool* out) {
    grpc::ClientContext context;
    ::inference::ModelReadyRequest request;
    request.set_name(name);
    request.set_version(version);
    ::inference::ModelReadyResponse response;
    const grpc::Status status = kserve_->ModelReady(&context, request, &response);
    *out = response.ready();
    return status;
  };
  bool r = false;
  ASSERT_TRUE(ready("ham10000", "", &r).ok());
  EXPECT_TRUE(r);
  ASSERT_TRUE(ready("ham10000", "2", &r).ok());
  EXPECT_TRUE(r);
  ASSERT_TRUE(ready("ham10000", "9", &r).ok());
  EXPECT_FALSE(r);
  const grpc::Status unknown = ready("nope", "", &r);
  EXPECT_EQ(unknown.error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_THAT(unknown.error_message(),
              HasSubstr("model 'nope' is not served here (served: ham10000)"));
  EXPECT_EQ(ready("ham10000", "latest", &r).error_code(), grpc::StatusCode::INVALID_ARGUMENT);
}

TEST_F(InferenceServiceTest, KServeModelMetadata) {
  grpc::ClientContext context;
  ::inference::ModelMetadataRequest request;
  request.set_name("ham10000");
  ::inference::ModelMetadataResponse response;
  ASSERT_TRUE(kserve_->ModelMetadata(&context, request, &response).ok());
  EXPECT_EQ(response.name(), "ham10000");
  EXPECT_THAT(response.versions(), ElementsAre("2", "3"));
  EXPECT_EQ(response.platform(), "pytorch_libtorch");
  ASSERT_THAT(response.inputs(), SizeIs(2));
  EXPECT_EQ(response.inputs(0).name(), "image");
  EXPECT_EQ(response.inputs(0).datatype(), "BYTES");
  EXPECT_THAT(response.inputs(0).shape(), ElementsAre(-1));
  EXPECT_EQ(response.inputs(1).name(), "input");
  EXPECT_EQ(response.inputs(1).datatype(), "FP32");
  EXPECT_THAT(response.inputs(1).shape(), ElementsAre(-1, 3, kImageSize, kImageSize));
  ASSERT_THAT(response.outputs(), SizeIs(6));
  EXPECT_EQ(response.outputs(0).name(), "probabilities");
  EXPECT_THAT(response.outputs(0).shape(), ElementsAre(-1, 7));
  EXPECT_EQ(response.outputs(1).name(), "logits");
  EXPECT_EQ(response.outputs(1).datatype(), "FP32");
  EXPECT_EQ(response.outputs(2).name(), "malignancy_risk");
  EXPECT_EQ(response.outputs(3).name(), "refer");
  EXPECT_EQ(response.outputs(3).datatype(), "BOOL");
  EXPECT_THAT(response.outputs(3).shape(), ElementsAre(-1, 1));
  EXPECT_EQ(response.outputs(4).name(), "out_of_distribution");
  EXPECT_EQ(response.outputs(5).name(), "ood_score");

  grpc::ClientContext c2;
  request.set_name("other");
  EXPECT_EQ(kserve_->ModelMetadata(&c2, request, &response).error_code(),
            grpc::StatusCode::NOT_FOUND);
  grpc::ClientContext c3;
  request.set_name("ham10000");
  request.set_version("7");
  const grpc::Status status = kserve_->ModelMetadata(&c3, request, &response);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_THAT(status.error_message(), HasSubstr("no loaded version 7 (loaded: 2, 3)"));
}

std::string RawBytes(const std::vector<std::string>& elements) {
  std::string raw;
  for (const std::string& e : elements) {
    const uint32_t n = static_cast<uint32_t>(e.size());
    raw.append(reinterpret_cast<const char*>(&n), 4);
    raw += e;
  }
  return raw;
}

std::vector<float> RawFloats(const std::string& raw) {
  std::vector<float> out(raw.size() / 4);
  std::memcpy(out.data(), raw.data(), out.size() * 4);
  return out;
}

::inference::ModelInferRequest BytesRequest(const std::vector<std::string>& images, bool raw) {
  ::inference::ModelInferRequest request;
  request.set_model_name("ham10000");
  request.set_id("req-7");
  auto* input = request.add_inputs();
  input->set_name("image");
  input->set_datatype("BYTES");
  input->add_shape(static_cast<int64_t>(images.size()));
  if (raw) {
    request.add_raw_input_contents(RawBytes(images));
  } else {
    for (const std::string& image : images) input->mutable_contents()->add_bytes_contents(image);
  }
  return request;
}

::inference::ModelInferRequest TensorRequest(int n, bool raw, int size = kImageSize) {
  ::inference::ModelInferRequest request;
  request.set_model_name("ham10000");
  auto* input = request.add_inputs();
  input->set_name("input");
  input->set_datatype("FP32");
  for (int64_t d : {int64_t{n}, int64_t{3}, int64_t{size}, int64_t{size}}) input->add_shape(d);
  std::vector<float> values(static_cast<size_t>(n) * 3 * size * size);
  for (size_t i = 0; i < values.size(); ++i) values[i] = 0.5f * static_cast<float>(i);
  if (raw) {
    request.add_raw_input_contents(
        std::string(reinterpret_cast<const char*>(values.data()), values.size() * 4));
  } else {
    for (float v : values) input->mutable_contents()->add_fp32_contents(v);
  }
  return request;
}

grpc::Status Infer(::inference::GRPCInferenceService::Stub& stub,
                   const ::inference::ModelInferRequest& request,
                   ::inference::ModelInferResponse* response) {
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
  return stub.ModelInfer(&context, request, response);
}

void ExpectProbabilitiesAndLogits(const ::inference::ModelInferResponse& response, int n,
                                  bool raw) {
  EXPECT_EQ(response.model_name(), "ham10000");
  EXPECT_EQ(response.model_version(), "3");
  ASSERT_THAT(response.outputs(), SizeIs(2));
  EXPECT_EQ(response.outputs(0).name(), "probabilities");
  EXPECT_EQ(response.outputs(1).name(), "logits");
  for (int o = 0; o < 2; ++o) {
    EXPECT_EQ(response.outputs(o).datatype(), "FP32");
    EXPECT_THAT(response.outputs(o).shape(), ElementsAre(n, 7));
  }
  std::vector<float> probabilities, logits;
  if (raw) {
    ASSERT_THAT(response.raw_output_contents(), SizeIs(2));
    EXPECT_FALSE(response.outputs(0).has_contents());
    probabilities = RawFloats(response.raw_output_contents(0));
    logits = RawFloats(response.raw_output_contents(1));
  } else {
    EXPECT_THAT(response.raw_output_contents(), SizeIs(0));
    probabilities.assign(response.outputs(0).contents().fp32_contents().begin(),
                         response.outputs(0).contents().fp32_contents().end());
    logits.assign(response.outputs(1).contents().fp32_contents().begin(),
                  response.outputs(1).contents().fp32_contents().end());
  }
  ASSERT_THAT(probabilities, SizeIs(n * 7));
  ASSERT_THAT(logits, SizeIs(n * 7));
  for (int i = 0; i < n; ++i) {
    for (int c = 0; c < 7; ++c) {
      EXPECT_FLOAT_EQ(probabilities[i * 7 + c], kProbs[c]);
      EXPECT_FLOAT_EQ(logits[i * 7 + c], std::log(kProbs[c]) + 1.0f);
    }
  }
}

TEST_F(InferenceServiceTest, KServeInferBytesContents) {
  ::inference::ModelInferResponse response;
  ASSERT_TRUE(Infer(*kserve_, BytesRequest({"img-a", "img-b"}, false), &response).ok());
  ExpectProbabilitiesAndLogits(response, 2, false);
  EXPECT_EQ(response.id(), "req-7");
  EXPECT_EQ(response.parameters().at("model_sha256").string_param(), "ab12");
  // The version's referral operating point.
  EXPECT_EQ(response.parameters().at("refer_risk_threshold").string_param(), "0.18");
  EXPECT_EQ(response.parameters().at("refer_target_sensitivity").string_param(), "0.9");
  EXPECT_EQ(response.parameters().at("refer_sensitivity_confidence").string_param(), "0.95");
  EXPECT_EQ(response.parameters().at("test_time_views").string_param(), "flips");
  std::vector<std::string> images;
  for (const InferRequest& r : core_.seen()) {
    images.push_back(r.encoded_image);
    EXPECT_EQ(r.model, "ham10000");
    EXPECT_TRUE(r.tensor.empty());
    EXPECT_LT(r.deadline, absl::Now() + absl::Seconds(31));
  }
  std::sort(images.begin(), images.end());
  EXPECT_THAT(images, ElementsAre("img-a", "img-b"));
}

TEST_F(InferenceServiceTest, KServeInferBytesRawAndNByOneShape) {
  ::inference::ModelInferRequest request = BytesRequest({"a", std::string("b\0c", 3), "d"}, true);
  request.mutable_inputs(0)->add_shape(1);  // [3, 1], as tritonclient sends np.array([[b]]).
  ::inference::ModelInferResponse response;
  ASSERT_TRUE(Infer(*kserve_, request, &response).ok());
  ExpectProbabilitiesAndLogits(response, 3, true);
  std::vector<std::string> images;
  for (const InferRequest& r : core_.seen()) images.push_back(r.encoded_image);
  std::sort(images.begin(), images.end());
  EXPECT_THAT(images, ElementsAre("a", std::string("b\0c", 3), "d"));
}

TEST_F(InferenceServiceTest, KServeInferFp32TypedAndRaw) {
  for (bool raw : {false, true}) {
    SCOPED_TRACE(raw ? "raw" : "typed");
    core_.JoinThreads();
    const size_t before = core_.seen().size();
    ::inference::ModelInferResponse response;
    ASSERT_TRUE(Infer(*kserve_, TensorRequest(2, raw), &response).ok());
    ExpectProbabilitiesAndLogits(response, 2, raw);
    std::vector<InferRequest> seen = core_.seen();
    seen.erase(seen.begin(), seen.begin() + before);
    ASSERT_THAT(seen, SizeIs(2));
    std::sort(seen.begin(), seen.end(), [](const InferRequest& a, const InferRequest& b) {
      return a.tensor[0] < b.tensor[0];
    });
    for (int i = 0; i < 2; ++i) {
      ASSERT_THAT(seen[i].tensor, SizeIs(kTensorSize));
      EXPECT_TRUE(seen[i].encoded_image.empty());
      for (int j = 0; j < kTensorSize; ++j) {
        EXPECT_EQ(seen[i].tensor[j], 0.5f * static_cast<float>(i * kTensorSize + j));
      }
    }
  }
}

TEST_F(InferenceServiceTest, KServeRequestedOutputsAndClassification) {
  ::inference::ModelInferRequest request = BytesRequest({"a"}, false);
  request.add_outputs()->set_name("logits");
  auto* classes = request.add_outputs();
  classes->set_name("probabilities");
  (*classes->mutable_parameters())["classification"].set_int64_param(2);
  ::inference::ModelInferResponse response;
  ASSERT_TRUE(Infer(*kserve_, request, &response).ok());
  ASSERT_THAT(response.outputs(), SizeIs(2));
  EXPECT_EQ(response.outputs(0).name(), "logits");
  EXPECT_THAT(response.outputs(0).contents().fp32_contents(), SizeIs(7));
  EXPECT_EQ(response.outputs(1).name(), "probabilities");
  EXPECT_EQ(response.outputs(1).datatype(), "BYTES");
  EXPECT_THAT(response.outputs(1).shape(), ElementsAre(1, 2));
  EXPECT_THAT(response.outputs(1).contents().bytes_contents(),
              ElementsAre("0.600000:4:mel", "0.150000:5:nv"));

  // Raw: the class strings come length-prefixed.
  request = BytesRequest({"a"}, true);
  auto* raw_classes = request.add_outputs();
  raw_classes->set_name("probabilities");
  (*raw_classes->mutable_parameters())["classification"].set_int64_param(1);
  response.Clear();
  ASSERT_TRUE(Infer(*kserve_, request, &response).ok());
  ASSERT_THAT(response.raw_output_contents(), SizeIs(1));
  EXPECT_EQ(response.raw_output_contents(0), RawBytes({"0.600000:4:mel"}));
}

struct BadInferCase {
  std::string name;
  std::function<void(::inference::ModelInferRequest*)> mutate;
  grpc::StatusCode code;
  std::string message;
};

TEST_F(InferenceServiceTest, KServeInferRejectsBadRequestsWithClearMessages) {
  const std::vector<BadInferCase> cases = {
      {"bytes input declared FP32", [](auto* r) { r->mutable_inputs(0)->set_datatype("FP32"); },
       grpc::StatusCode::INVALID_ARGUMENT, "input 'image' must have datatype BYTES"},
      {"tensor input declared FP64",
       [](auto* r) {
         *r = TensorRequest(1, false);
         r->mutable_inputs(0)->set_datatype("FP64");
       },
       grpc::StatusCode::INVALID_ARGUMENT, "input 'input' must have datatype FP32"},
      {"tensor of the wrong size", [](auto* r) { *r = TensorRequest(1, false, 5); },
       grpc::StatusCode::INVALID_ARGUMENT, "must have shape [N,3,4,4]"},
      {"tensor of rank 3",
       [](auto* r) {
         *r = TensorRequest(1, true);
         r->mutable_inputs(0)->mutable_shape()->RemoveLast();
       },
       grpc::StatusCode::INVALID_ARGUMENT, "got [1,3,4]"},
      {"tensor values missing",
       [](auto* r) {
         *r = TensorRequest(2, false);
         r->mutable_inputs(0)->mutable_contents()->mutable_fp32_contents()->RemoveLast();
       },
       grpc::StatusCode::INVALID_ARGUMENT,
       "has 95 values in contents.fp32_contents, shape [2,3,4,4] needs 96"},
      {"raw tensor bytes short",
       [](auto* r) {
         *r = TensorRequest(1, true);
         r->mutable_raw_input_contents(0)->pop_back();
       },
       grpc::StatusCode::INVALID_ARGUMENT, "have 191 bytes, shape [1,3,4,4] FP32 needs 192"},
      {"bytes shape says 3, 2 given", [](auto* r) { r->mutable_inputs(0)->set_shape(0, 3); },
       grpc::StatusCode::INVALID_ARGUMENT,
       "has 2 elements in contents.bytes_contents, shape [3] needs 3"},
      {"bytes of rank 2 [2,2]", [](auto* r) { r->mutable_inputs(0)->add_shape(2); },
       grpc::StatusCode::INVALID_ARGUMENT, "must have shape [N] or [N,1]"},
      {"raw bytes truncated",
       [](auto* r) {
         *r = BytesRequest({"abc", "def"}, true);
         r->mutable_raw_input_contents(0)->pop_back();
       },
       grpc::StatusCode::INVALID_ARGUMENT, "element 1 declares 3 bytes but only 2 remain"},
      {"raw bytes element count",
       [](auto* r) {
         *r = BytesRequest({"abc", "def"}, true);
         r->mutable_inputs(0)->set_shape(0, 1);
       },
       grpc::StatusCode::INVALID_ARGUMENT, "hold 2 elements, shape [1] needs 1"},
      {"empty element",
       [](auto* r) { r->mutable_inputs(0)->mutable_contents()->set_bytes_contents(1, ""); },
       grpc::StatusCode::INVALID_ARGUMENT, "element 1 is empty"},
      {"no input", [](auto* r) { r->clear_inputs(); }, grpc::StatusCode::INVALID_ARGUMENT,
       "exactly one input"},
      {"unknown input name", [](auto* r) { r->mutable_inputs(0)->set_name("pixels"); },
       grpc::StatusCode::INVALID_ARGUMENT, "unknown input 'pixels'"},
      {"contents and raw", [](auto* r) { r->add_raw_input_contents("x"); },
       grpc::StatusCode::INVALID_ARGUMENT, "both contents and raw_input_contents"},
      {"unknown output", [](auto* r) { r->add_outputs()->set_name("features"); },
       grpc::StatusCode::INVALID_ARGUMENT, "unknown output 'features'"},
      {"bad classification",
       [](auto* r) {
         auto* o = r->add_outputs();
         o->set_name("probabilities");
         (*o->mutable_parameters())["classification"].set_int64_param(9);
       },
       grpc::StatusCode::INVALID_ARGUMENT, "'classification' must be an int64 in 1..7"},
      {"unknown model", [](auto* r) { r->set_model_name("isic"); }, grpc::StatusCode::NOT_FOUND,
       "model 'isic' is not served here"},
      {"unloaded version", [](auto* r) { r->set_model_version("1"); }, grpc::StatusCode::NOT_FOUND,
       "no loaded version 1 (loaded: 2, 3)"},
      {"version not a number", [](auto* r) { r->set_model_version("v3"); },
       grpc::StatusCode::INVALID_ARGUMENT, "'v3' is not a version number"},
  };
  for (const BadInferCase& c : cases) {
    SCOPED_TRACE(c.name);
    ::inference::ModelInferRequest request = BytesRequest({"a", "b"}, false);
    c.mutate(&request);
    ::inference::ModelInferResponse response;
    const grpc::Status status = Infer(*kserve_, request, &response);
    EXPECT_EQ(status.error_code(), c.code);
    EXPECT_THAT(status.error_message(), HasSubstr(c.message));
  }
  EXPECT_THAT(core_.seen(), SizeIs(0));
}

TEST_F(InferenceServiceTest, KServeInferItemErrorFailsTheCallWithItsCode) {
  ::inference::ModelInferResponse response;
  const grpc::Status status =
      Infer(*kserve_, BytesRequest({"ok", "status:4", "ok"}, false), &response);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::DEADLINE_EXCEEDED);
  EXPECT_THAT(status.error_message(), HasSubstr("item 1 of 3: fake failure"));
  const grpc::Status single = Infer(*kserve_, BytesRequest({"status:14"}, true), &response);
  EXPECT_EQ(single.error_code(), grpc::StatusCode::UNAVAILABLE);
  EXPECT_EQ(single.error_message(), "fake failure status:14");
}

TEST_F(InferenceServiceTest, KServeTensorNeedsALoadedModel) {
  core_.set_ready(false);
  // FakeCore's Models() still reports ready; a not-ready model is tested directly.
  serving::ServedModelStatus model = core_.Models()[0];
  model.ready = false;
  model.last_error = "weights missing";
  const absl::StatusOr<ParsedInfer> parsed =
      ParseModelInfer(TensorRequest(1, false), model, 16, absl::InfiniteFuture());
  EXPECT_EQ(parsed.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(std::string(parsed.status().message()),
              HasSubstr("last load error: weights missing"));
  // A pinned older version's size is left to the core (it may differ).
  ::inference::ModelInferRequest request = TensorRequest(1, false, 8);
  request.set_model_version("2");
  model.ready = true;
  EXPECT_TRUE(ParseModelInfer(request, model, 16, absl::InfiniteFuture()).ok());
  EXPECT_EQ(
      ParseModelInfer(TensorRequest(17, true), model, 16, absl::InfiniteFuture()).status().code(),
      absl::StatusCode::kInvalidArgument);
}

// ---------------------------------------------------------------- health, reflection

TEST_F(InferenceServiceTest, HealthFollowsCoreReadiness) {
  core_.set_ready(false);
  const absl::Time until = absl::Now() + absl::Seconds(5);
  while (HealthStatus("") != 2 && absl::Now() < until) absl::SleepFor(absl::Milliseconds(10));
  EXPECT_EQ(HealthStatus(""), 2);  // NOT_SERVING
  EXPECT_EQ(HealthStatus("skinlesion.v1.ClassificationService"), 2);
  EXPECT_EQ(HealthStatus("inference.GRPCInferenceService"), 2);
  EXPECT_FALSE(server_->serving());
  core_.set_ready(true);
  while (HealthStatus("") != 1 && absl::Now() < until) absl::SleepFor(absl::Milliseconds(10));
  EXPECT_EQ(HealthStatus(""), 1);  // SERVING
  EXPECT_EQ(HealthStatus("skinlesion.v1.ClassificationService"), 1);
  EXPECT_EQ(HealthStatus("inference.GRPCInferenceService"), 1);
  EXPECT_TRUE(server_->serving());
  EXPECT_EQ(HealthStatus("no.such.Service"), -1);  // NOT_FOUND
}

TEST(InferenceServerStartTest, NotServingUntilTheCoreIsReady) {
  FakeCore core;
  core.set_ready(false);
  InferenceServerOptions options;
  options.listen_address = "127.0.0.1:0";
  auto server = InferenceServer::Start(options, &core, nullptr);
  ASSERT_TRUE(server.ok()) << server.status();
  absl::SleepFor(absl::Milliseconds(300));  // Several readiness polls.
  EXPECT_FALSE((*server)->serving());
  core.set_ready(true);
  const absl::Time until = absl::Now() + absl::Seconds(5);
  while (!(*server)->serving() && absl::Now() < until) absl::SleepFor(absl::Milliseconds(10));
  EXPECT_TRUE((*server)->serving());
  (*server)->Shutdown(absl::Seconds(1));
  EXPECT_FALSE((*server)->serving());
  EXPECT_EQ(core.shutdown_calls(), 1);
  (*server)->Shutdown(absl::Seconds(1));  // Idempotent.
  EXPECT_EQ(core.shutdown_calls(), 1);
}

TEST(InferenceServerStartTest, BusyPortIsUnavailable) {
  FakeCore core;
  InferenceServerOptions options;
  options.listen_address = "127.0.0.1:0";
  auto first = InferenceServer::Start(options, &core, nullptr);
  ASSERT_TRUE(first.ok());
  options.listen_address = absl::StrCat("127.0.0.1:", (*first)->port());
  auto second = InferenceServer::Start(options, &core, nullptr);
  EXPECT_EQ(second.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(std::string(second.status().message()), HasSubstr("cannot serve gRPC on"));
}

TEST_F(InferenceServiceTest, ReflectionListsTheServices) {
  grpc::GenericStub stub(channel_);
  grpc::CompletionQueue cq;
  grpc::ClientContext context;
  SetDeadline(&context, 10);
  auto call = stub.PrepareCall(
      &context, "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo", &cq);
  void* tag = nullptr;
  bool ok = false;
  auto step = [&](int id) {
    EXPECT_TRUE(cq.Next(&tag, &ok));
    EXPECT_EQ(tag, reinterpret_cast<void*>(id));
    return ok;
  };
  call->StartCall(reinterpret_cast<void*>(1));
  ASSERT_TRUE(step(1));
  // ServerReflectionRequest{list_services: ""} (field 7, length-delimited).
  grpc::Slice slice(std::string("\x3a\x00", 2));
  call->Write(grpc::ByteBuffer(&slice, 1), reinterpret_cast<void*>(2));
  ASSERT_TRUE(step(2));
  grpc::ByteBuffer response;
  call->Read(&response, reinterpret_cast<void*>(3));
  ASSERT_TRUE(step(3));
  call->WritesDone(reinterpret_cast<void*>(4));
  step(4);
  grpc::Status status;
  call->Finish(&status, reinterpret_cast<void*>(5));
  step(5);
  EXPECT_TRUE(status.ok()) << status.error_message();
  const std::string bytes = ToString(response);
  EXPECT_THAT(bytes, HasSubstr("skinlesion.v1.ClassificationService"));
  EXPECT_THAT(bytes, HasSubstr("inference.GRPCInferenceService"));
  EXPECT_THAT(bytes, HasSubstr("grpc.health.v1.Health"));
  EXPECT_THAT(bytes, HasSubstr("grpc.reflection.v1alpha.ServerReflection"));
  cq.Shutdown();
  while (cq.Next(&tag, &ok)) {
  }
}

// ---------------------------------------------------------------- shutdown, metrics

TEST_F(InferenceServiceTest, ShutdownDrainsCallsInFlight) {
  absl::Notification started;
  core_.set_handler([&](const InferRequest&) -> absl::StatusOr<InferResult> {
    started.Notify();
    absl::SleepFor(absl::Milliseconds(300));
    return MakeResult();
  });
  grpc::Status status;
  std::thread client = ClassifyInBackground(&status);
  started.WaitForNotification();
  const absl::Time start = absl::Now();
  server_->Shutdown(absl::Seconds(5));
  client.join();
  EXPECT_TRUE(status.ok()) << status.error_message();
  EXPECT_LT(absl::Now() - start, absl::Seconds(4));
  EXPECT_FALSE(server_->serving());
  EXPECT_EQ(core_.shutdown_calls(), 1);
  // New calls are refused.
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(2));
  ::inference::ServerLiveResponse live;
  EXPECT_FALSE(kserve_->ServerLive(&context, {}, &live).ok());
  // The drained call is counted; the refused one never reached a handler or the
  // interceptor.
  EXPECT_EQ(GrpcCalls(kClassificationService, "Classify", "OK"), 1);
  EXPECT_EQ(GrpcCalls(kKServeService, "ServerLive"), 0);
}

TEST_F(InferenceServiceTest, ShutdownAfterTheDrainDeadlineShutsTheCoreDownAndReturns) {
  // A call that outlives the drain: the core's Shutdown is what releases it.
  absl::Notification started;
  core_.set_handler([&](const InferRequest&) -> absl::StatusOr<InferResult> {
    started.Notify();
    while (core_.shutdown_calls() == 0) absl::SleepFor(absl::Milliseconds(5));
    return absl::UnavailableError("server is shutting down");
  });
  grpc::Status status;
  std::thread client = ClassifyInBackground(&status);
  started.WaitForNotification();
  const absl::Time start = absl::Now();
  server_->Shutdown(absl::Milliseconds(200));
  client.join();
  EXPECT_GE(absl::Now() - start, absl::Milliseconds(190));
  EXPECT_LT(absl::Now() - start, absl::Seconds(3));
  EXPECT_FALSE(status.ok());
  // Counted with the status its handler returned, although gRPC had cancelled it.
  EXPECT_EQ(GrpcCalls(kClassificationService, "Classify"), 1);
  EXPECT_EQ(GrpcCalls(kClassificationService, "Classify", "UNAVAILABLE"), 1);
}

// Per-RPC metrics come from the server's gRPC interceptor (the registry's and the
// trainer's, telemetry::MakeGrpcMetricsInterceptorFactory), over a real channel: the
// handlers record nothing, so every count here is 0 without it.
TEST_F(InferenceServiceTest, GrpcMetricsCountEveryCallByItsFinalCode) {
  // Classify: OK twice; INVALID_ARGUMENT for an image the core cannot decode
  // ("status:3": the fake's InvalidArgument) and for an empty one (the handler's).
  for (const char* image : {"ok", "ok", "status:3", ""}) {
    grpc::ClientContext context;
    SetDeadline(&context);
    v1::ClassifyRequest request;
    request.set_image(image);
    v1::ClassifyResponse response;
    const grpc::Status status = classify_->Classify(&context, request, &response);
    EXPECT_EQ(status.error_code(), std::string(image) == "ok" ? grpc::StatusCode::OK
                                                              : grpc::StatusCode::INVALID_ARGUMENT)
        << image;
  }
  {  // ClassifyStream: OK, although an item failed (that is in its response).
    std::vector<v1::ClassifyRequest> requests(2);
    requests[0].set_image("ok");
    requests[1].set_image("status:3");
    grpc::Status status;
    const std::vector<v1::ClassifyResponse> responses = ClassifyStreamAll(requests, &status);
    ASSERT_TRUE(status.ok()) << status.error_message();
    ASSERT_THAT(responses, SizeIs(2));
    EXPECT_EQ(responses[1].error_code(), static_cast<int>(grpc::StatusCode::INVALID_ARGUMENT));
  }
  {  // ClassifyStream cancelled by the client once its handler runs: CANCELLED.
    grpc::ClientContext context;
    SetDeadline(&context);
    auto stream = classify_->ClassifyStream(&context);
    v1::ClassifyRequest request;
    request.set_image("ok");
    ASSERT_TRUE(stream->Write(request));
    v1::ClassifyResponse response;
    ASSERT_TRUE(stream->Read(&response));
    context.TryCancel();
    EXPECT_EQ(stream->Finish().error_code(), grpc::StatusCode::CANCELLED);
  }
  {  // KServe.
    grpc::ClientContext context;
    SetDeadline(&context);
    ::inference::ModelReadyRequest request;
    request.set_name("no-such-model");
    ::inference::ModelReadyResponse response;
    EXPECT_EQ(kserve_->ModelReady(&context, request, &response).error_code(),
              grpc::StatusCode::NOT_FOUND);
  }
  // grpc.health.v1 (gRPC's own callback service) is counted too (OK, SERVING or not).
  EXPECT_NE(HealthStatus(""), -1);
  // The server-side records of the cancelled stream may land after the client saw
  // its status; Shutdown returns once every handler has returned.
  server_->Shutdown(absl::Seconds(5));

  EXPECT_EQ(GrpcCalls(kClassificationService, "Classify", "OK"), 2);
  EXPECT_EQ(GrpcCalls(kClassificationService, "Classify", "INVALID_ARGUMENT"), 2);
  EXPECT_EQ(GrpcCalls(kClassificationService, "Classify"), 4);
  EXPECT_EQ(GrpcCalls(kClassificationService, "ClassifyStream", "OK"), 1);
  EXPECT_EQ(GrpcCalls(kClassificationService, "ClassifyStream", "CANCELLED"), 1);
  EXPECT_EQ(GrpcCalls(kClassificationService, "ClassifyStream"), 2);
  EXPECT_EQ(GrpcCalls(kKServeService, "ModelReady", "NOT_FOUND"), 1);
  EXPECT_EQ(GrpcCalls("grpc.health.v1.Health", "Check", "OK"), 1);
  EXPECT_EQ(GrpcDurationCount(kClassificationService, "Classify"), 4u);
  EXPECT_EQ(GrpcDurationCount(kClassificationService, "ClassifyStream"), 2u);
  // As /metrics serves them (the labels the dashboard sums by).
  const std::string text = prometheus::TextSerializer().Serialize(registry_.Collect());
  EXPECT_THAT(text,
              HasSubstr("skinlesion_grpc_requests_total{code=\"INVALID_ARGUMENT\","
                        "method=\"Classify\",service=\"skinlesion.v1.ClassificationService\"} 2"));
  EXPECT_THAT(
      text,
      HasSubstr("skinlesion_grpc_requests_total{code=\"OK\","
                "method=\"ClassifyStream\",service=\"skinlesion.v1.ClassificationService\"} 1"));
}

// Without a prometheus registry no interceptor is installed; calls are served as usual.
TEST(InferenceServerStartTest, ServesWithoutARegistry) {
  FakeCore core;
  InferenceServerOptions options;
  options.listen_address = "127.0.0.1:0";
  auto server = InferenceServer::Start(options, &core, nullptr);
  ASSERT_TRUE(server.ok()) << server.status();
  auto stub = v1::ClassificationService::NewStub(grpc::CreateChannel(
      absl::StrCat("127.0.0.1:", (*server)->port()), grpc::InsecureChannelCredentials()));
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
  v1::ClassifyRequest request;
  request.set_image("ok");
  v1::ClassifyResponse response;
  EXPECT_TRUE(stub->Classify(&context, request, &response).ok());
  (*server)->Shutdown(absl::Seconds(5));
  core.JoinThreads();
}

}  // namespace
}  // namespace skinlesion::inference
