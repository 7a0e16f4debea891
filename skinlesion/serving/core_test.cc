#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <functional>
#include <future>
#include <mutex>
#include <set>
#include <thread>
#include <vector>

#include "gtest/gtest.h"
#include "prometheus/registry.h"
#include "skinlesion/common/hash.h"
#include "skinlesion/registry/registry.h"
#include "skinlesion/serving/clock.h"
#include "skinlesion/serving/serving.h"
#include "skinlesion/serving/sources.h"
#include "skinlesion/serving/telemetry.h"
#include "skinlesion/serving/test_fakes.h"
#include "skinlesion/testing/testing.h"

namespace skinlesion::serving {
namespace {

using ::skinlesion::serving::testing::EncodedBytes;
using ::skinlesion::serving::testing::FakeModel;
using ::skinlesion::serving::testing::FakeProbabilities;
using ::skinlesion::serving::testing::MetricValue;
using ::skinlesion::serving::testing::PngBytes;
using ::skinlesion::serving::testing::Results;
using ::skinlesion::serving::testing::SeriesCount;
using ::skinlesion::serving::testing::WaitUntil;
using ::skinlesion::testing::IsOk;
using ::skinlesion::testing::StatusIs;
using ::skinlesion::testing::TempDir;
using ::skinlesion::testing::WriteFile;
using ::testing::HasSubstr;
using Result = absl::StatusOr<InferResult>;

constexpr char kModel[] = "ham";
constexpr int kSize = 4;  // Fake models take [3, 4, 4] inputs.

class CoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    root_ = dir_.Join("registry");
    auto r = registry::Registry::Create({.root = root_});
    ASSERT_TRUE(r.ok()) << r.status();
    registry_ = std::move(*r);
    weights_ = dir_.Join("weights.bin");
    WriteFile(weights_, "fake weights");
    options_.models = {{.name = kModel, .alias = "production"}};
    options_.poll_interval = absl::Milliseconds(5);
    options_.warmup_runs = 1;
    options_.batching.max_queue_delay = absl::Milliseconds(1);
  }

  void TearDown() override {
    fake_.Open();
    if (core_ != nullptr) core_->Shutdown(absl::Seconds(5));
  }

  int64_t Publish(const nlohmann::json& extra = nlohmann::json::object(),
                  std::map<std::string, std::string> files = {}) {
    nlohmann::json manifest = {{"architecture", "fake"}, {"image_size", kSize}};
    manifest.update(extra);
    files["model.safetensors"] = weights_;
    auto v = registry_->Publish(kModel, files, manifest);
    EXPECT_TRUE(v.ok()) << v.status();
    return v.value_or(-1);
  }

  void Alias(int64_t version) {
    ASSERT_THAT(registry_->SetAlias(kModel, "production", version, "test"), IsOk());
  }

  void Start() {
    auto source = LocalRegistrySource::Create(root_);
    ASSERT_TRUE(source.ok()) << source.status();
    auto core = ServingCore::Create(options_, std::move(*source), fake_.Loader(), &metrics_);
    ASSERT_TRUE(core.ok()) << core.status();
    core_ = std::move(*core);
  }

  void StartReady() {
    Start();
    ASSERT_TRUE(WaitUntil([&] { return core_->Ready(); })) << core_->Models()[0].last_error;
    fake_.ResetRuns();
  }

  // Time goes only as the test advances clock_ (clock.h): the batching delay,
  // deadlines and queue times are exact. The alias follower still loads at once,
  // then waits an hour (of clock_) for its next poll.
  void UseFakeClock() {
    options_.clock = &clock_;
    options_.poll_interval = absl::Hours(1);
  }
  // With UseFakeClock(): the batch worker waits for its delay (beside the follower).
  bool WorkerWaits() { return clock_.AwaitTimedWaiters(2); }

  int64_t ServingVersion() { return core_->Models()[0].spec.version; }

  bool WaitServing(int64_t version) {
    return WaitUntil([&] { return core_->Ready() && ServingVersion() == version; });
  }

  bool WaitError(const std::string& part) {
    return WaitUntil([&] { return core_->Models()[0].last_error.find(part) != std::string::npos; });
  }

  static InferRequest Tensor(float value = 0.5f) {
    InferRequest r;
    r.model = kModel;
    r.tensor.assign(3 * kSize * kSize, value);
    return r;
  }

  double Requests(const std::string& outcome, const std::string& version = "1") {
    return MetricValue(prom_, "skinlesion_inference_requests_total",
                       {{"model", kModel}, {"version", version}, {"outcome", outcome}});
  }
  double Reloads(const std::string& result) {
    return MetricValue(prom_, "skinlesion_model_reloads_total",
                       {{"model", kModel}, {"result", result}});
  }

  TempDir dir_;
  std::string root_;
  std::string weights_;
  std::unique_ptr<registry::Registry> registry_;
  ServingOptions options_;
  FakeClock clock_;  // Outlives core_.
  FakeModel fake_;
  prometheus::Registry prom_;
  ServingMetrics metrics_{prom_};
  std::unique_ptr<ServingCore> core_;
};

TEST_F(CoreTest, ServesTheAliasedVersion) {
  Alias(Publish({{"calibration", {{"temperature", 2.0}}}}));
  StartReady();
  const Result r = core_->Infer(Tensor());
  ASSERT_THAT(r, IsOk());
  EXPECT_EQ(r->model, kModel);
  EXPECT_EQ(r->version, 1);
  EXPECT_EQ(r->sha256, Sha256Hex("fake weights"));
  EXPECT_FLOAT_EQ(r->logits[0], 1.0f);
  const auto expected = FakeProbabilities(1.0f, 2.0);
  for (int k = 0; k < kHam10000NumClasses; ++k) EXPECT_NEAR(r->probabilities[k], expected[k], 1e-6);
  EXPECT_EQ(r->top_class, 0);
  EXPECT_FLOAT_EQ(r->confidence, expected[0]);
  EXPECT_NEAR(r->malignancy_risk, expected[0] + expected[1] + expected[4],
              1e-6);      // akiec, bcc, mel
  EXPECT_TRUE(r->refer);  // 0.2 < 0.5
  EXPECT_THAT(r->refer_reason, HasSubstr("top probability"));
  EXPECT_EQ(r->batch_size, 1);
  EXPECT_GE(r->total_ms, r->queue_ms);

  // An empty model name means the first served model; an explicit current version works.
  InferRequest req = Tensor();
  req.model = "";
  req.version = 1;
  EXPECT_THAT(core_->Infer(req), IsOk());

  const auto models = core_->Models();
  ASSERT_EQ(models.size(), 1u);
  EXPECT_TRUE(models[0].ready);
  EXPECT_EQ(models[0].alias, "production");
  EXPECT_EQ(models[0].loaded_versions, std::vector<int64_t>{1});
  EXPECT_EQ(models[0].spec.temperature, 2.0);
  EXPECT_EQ(Requests("ok"), 2);
  EXPECT_EQ(Reloads("success"), 1);
  EXPECT_EQ(
      MetricValue(prom_, "skinlesion_model_version_info",
                  {{"model", kModel}, {"version", "1"}, {"sha256", Sha256Hex("fake weights")}, {"precision", "fp32"}}),
      1);
  EXPECT_EQ(MetricValue(prom_, "skinlesion_model_load_seconds", {{"model", kModel}}), 1);
  EXPECT_EQ(MetricValue(prom_, "skinlesion_inference_request_seconds", {{"model", kModel}}), 2);
  EXPECT_EQ(MetricValue(prom_, "skinlesion_inference_queue_seconds", {{"model", kModel}}), 2);
  EXPECT_EQ(MetricValue(prom_, "skinlesion_inference_batch_size", {{"model", kModel}}), 2);
  EXPECT_EQ(MetricValue(prom_, "skinlesion_inference_queue_depth", {{"model", kModel}}), 0);
}

TEST_F(CoreTest, EncodedImagesAreDecodedAndPreprocessed) {
  Alias(Publish());
  StartReady();
  InferRequest req;
  req.encoded_image = PngBytes();
  const Result r = core_->Infer(req);
  ASSERT_THAT(r, IsOk());
  EXPECT_EQ(r->version, 1);
}

// Both places an encoded image can be decoded give the same answers; an image that
// fails to decode is answered alone and the rest of its batch still runs.
TEST_F(CoreTest, ACorruptImageFailsAloneInEitherDecodePlace) {
  Alias(Publish());
  for (const bool in_worker : {true, false}) {
    SCOPED_TRACE(in_worker ? "decode_in_worker" : "decode on the calling thread");
    if (core_ != nullptr) core_->Shutdown(absl::Seconds(5));
    core_.reset();
    options_.batching.decode_in_worker = in_worker;
    options_.batching.max_batch_size = 4;
    options_.batching.max_queue_delay = absl::Milliseconds(300);
    UseFakeClock();
    StartReady();
    Results results;
    for (int i = 0; i < 4; ++i) {
      InferRequest req;
      // A JPEG cut in half: its header reads fine, so it is queued like the others
      // and fails only when decoded (in the worker or on the calling thread).
      const std::string jpeg = EncodedBytes(".jpg", 64, 64);
      req.encoded_image = i == 1 ? jpeg.substr(0, jpeg.size() / 2) : PngBytes();
      core_->InferAsync(req, results.Callback());
    }
    clock_.Advance(absl::Milliseconds(300));  // Only a batch of 3 waits for it.
    ASSERT_TRUE(results.WaitCount(4));
    int ok = 0;
    for (const Result& r : results.Get()) {
      if (r.ok()) {
        ++ok;
        EXPECT_EQ(r->batch_size, 3);
      } else {
        EXPECT_THAT(r, StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("image")));
      }
    }
    EXPECT_EQ(ok, 3);
    // The three good images ran as one batch.
    EXPECT_EQ(fake_.batch_sizes(), std::vector<int>{3});
  }
}

// The batch worker decodes a queued image while it waits for the batch to fill
// (the decode overlaps the queue delay), or just before the forward pass when the
// batch is due at once; the caller decodes when decode_in_worker is off.
TEST_F(CoreTest, WhereImagesAreDecodedIsMeasured) {
  Alias(Publish());
  const auto decodes = [&](const std::string& stage) {
    const double n = MetricValue(prom_, "skinlesion_inference_decode_seconds",
                                 {{"model", kModel}, {"stage", stage}});
    return n < 0 ? 0.0 : n;  // -1: no series yet.
  };
  struct Case {
    bool in_worker;
    absl::Duration delay;
    std::string stage;
  };
  double expected_ahead = 0, expected_in_batch = 0, expected_caller = 0;
  for (const Case& c : {Case{true, absl::Milliseconds(300), "ahead"},
                        Case{true, absl::ZeroDuration(), "in_batch"},
                        Case{false, absl::Milliseconds(300), "caller"}}) {
    SCOPED_TRACE(c.stage);
    if (core_ != nullptr) core_->Shutdown(absl::Seconds(5));
    core_.reset();
    options_.batching.decode_in_worker = c.in_worker;
    options_.batching.max_batch_size = 4;
    options_.batching.max_queue_delay = c.delay;
    UseFakeClock();
    StartReady();
    InferRequest req;
    req.encoded_image = PngBytes();
    Results results;
    core_->InferAsync(req, results.Callback());
    if (c.delay > absl::ZeroDuration()) {
      ASSERT_TRUE(WorkerWaits());  // Having decoded ahead, if it decodes.
      clock_.Advance(c.delay);
    }
    ASSERT_TRUE(results.WaitCount(1));
    ASSERT_THAT(results.Get()[0], IsOk());
    (c.stage == "ahead" ? expected_ahead : c.stage == "in_batch" ? expected_in_batch
                                                                 : expected_caller) += 1;
    EXPECT_EQ(decodes("ahead"), expected_ahead);
    EXPECT_EQ(decodes("in_batch"), expected_in_batch);
    EXPECT_EQ(decodes("caller"), expected_caller);
  }
}

TEST_F(CoreTest, WarmupRunsFullAndSingleBatches) {
  options_.batching.max_batch_size = 4;
  options_.warmup_runs = 2;
  Alias(Publish());
  Start();
  ASSERT_TRUE(WaitUntil([&] { return core_->Ready(); }));
  EXPECT_EQ(fake_.batch_sizes(), (std::vector<int>{4, 1, 4, 1}));
}

TEST_F(CoreTest, FormsBatchesUpToTheMaximum) {
  options_.batching.max_batch_size = 4;
  options_.batching.max_queue_delay = absl::Milliseconds(50);
  UseFakeClock();
  Alias(Publish());
  StartReady();
  Results results;
  // The clock stands still: only full batches run, whenever the worker looks.
  for (int i = 0; i < 16; ++i) core_->InferAsync(Tensor(), results.Callback());
  ASSERT_TRUE(results.WaitCount(16));
  for (const Result& r : results.Get()) {
    ASSERT_THAT(r, IsOk());
    EXPECT_EQ(r->batch_size, 4);
    EXPECT_EQ(r->queue_ms, 0.0);
  }
  EXPECT_EQ(fake_.batch_sizes(), (std::vector<int>{4, 4, 4, 4}));
  EXPECT_EQ(MetricValue(prom_, "skinlesion_inference_batch_size", {{"model", kModel}}), 4);
}

TEST_F(CoreTest, SingleRequestWaitsAtMostTheQueueDelay) {
  options_.batching.max_batch_size = 8;
  options_.batching.max_queue_delay = absl::Milliseconds(30);
  UseFakeClock();
  Alias(Publish());
  StartReady();
  Results results;
  core_->InferAsync(Tensor(), results.Callback());
  clock_.Advance(absl::Milliseconds(29));
  EXPECT_TRUE(results.Get().empty());
  clock_.Advance(absl::Milliseconds(1));  // The batch never fills: the full delay.
  ASSERT_TRUE(results.WaitCount(1));
  const Result r = results.Get()[0];
  ASSERT_THAT(r, IsOk());
  EXPECT_EQ(r->batch_size, 1);
  EXPECT_EQ(r->queue_ms, 30.0);
  EXPECT_EQ(r->total_ms, 30.0);
}

// Sequential traffic (one request at a time, concurrency 1): after
// skip_delay_after_lone_arrivals requests that found the batcher idle, a lone request
// waits a tenth of the delay. Grouped requests (InferRequest::grouped) never take the
// shortcut; one arrival beside a running batch brings the delay back.
TEST_F(CoreTest, LoneSequentialRequestsStopWaitingForCompany) {
  options_.batching.max_batch_size = 8;
  options_.batching.max_queue_delay = absl::Milliseconds(1000);
  options_.batching.skip_delay_after_lone_arrivals = 2;
  UseFakeClock();
  Alias(Publish());
  StartReady();
  Results sequential;
  // Sends one request, advances the clock by `wait`, returns its queue time.
  const auto queue_ms_after = [&](absl::Duration wait) {
    const size_t n = sequential.Get().size();
    core_->InferAsync(Tensor(), sequential.Callback());
    clock_.Advance(wait);
    EXPECT_TRUE(sequential.WaitCount(n + 1));
    const Result r = sequential.Get()[n];
    EXPECT_THAT(r, IsOk());
    EXPECT_EQ(r.ok() ? r->batch_size : 0, 1);
    return r.ok() ? r->queue_ms : -1.0;
  };
  EXPECT_EQ(queue_ms_after(absl::Milliseconds(1000)), 1000.0) << "no history yet: it waits";
  EXPECT_EQ(queue_ms_after(absl::Milliseconds(100)), 100.0) << "a tenth of the delay";
  EXPECT_EQ(queue_ms_after(absl::Milliseconds(100)), 100.0);

  // Requests submitted together after the lone streak (one KServe call's items,
  // marked grouped) share a batch, however late the second one is enqueued.
  fake_.ResetRuns();
  Results burst;
  for (int i = 0; i < 3; ++i) {
    InferRequest item = Tensor();
    item.grouped = true;
    core_->InferAsync(item, burst.Callback());
    if (i == 0) clock_.Advance(absl::Milliseconds(200));  // > a tenth
  }
  EXPECT_TRUE(burst.Get().empty());
  clock_.Advance(absl::Milliseconds(800));
  ASSERT_TRUE(burst.WaitCount(3));
  EXPECT_EQ(fake_.batch_sizes(), std::vector<int>{3});

  // Concurrent arrivals: A runs alone (the grouped burst broke the streak: after the
  // full delay) and is held; B and C arrive beside it, so they wait for company (the
  // full delay) and run together.
  fake_.Close();
  fake_.ResetRuns();
  Results results;
  core_->InferAsync(Tensor(), results.Callback());
  clock_.Advance(absl::Milliseconds(1000));
  ASSERT_TRUE(fake_.WaitRuns(1));
  core_->InferAsync(Tensor(), results.Callback());
  core_->InferAsync(Tensor(), results.Callback());
  fake_.Open();
  ASSERT_TRUE(results.WaitCount(1));
  clock_.Advance(absl::Milliseconds(999));
  EXPECT_EQ(results.Get().size(), 1u);
  clock_.Advance(absl::Milliseconds(1));
  ASSERT_TRUE(results.WaitCount(3));
  for (const Result& r : results.Get()) EXPECT_THAT(r, IsOk());
  EXPECT_EQ(fake_.batch_sizes(), (std::vector<int>{1, 2}));
  // And the next sequential request waits the full delay again (the streak was reset).
  EXPECT_EQ(queue_ms_after(absl::Milliseconds(1000)), 1000.0);
}

TEST_F(CoreTest, FullQueueIsResourceExhausted) {
  options_.batching.max_batch_size = 1;
  options_.batching.max_queue_size = 2;
  Alias(Publish());
  StartReady();
  fake_.Close();
  Results results;
  core_->InferAsync(Tensor(), results.Callback());
  ASSERT_TRUE(fake_.WaitRuns(1));  // Running, out of the queue.
  core_->InferAsync(Tensor(), results.Callback());
  core_->InferAsync(Tensor(), results.Callback());
  EXPECT_THAT(core_->Infer(Tensor()),
              StatusIs(absl::StatusCode::kResourceExhausted, HasSubstr("queue full (2 requests)")));
  EXPECT_EQ(MetricValue(prom_, "skinlesion_inference_queue_depth", {{"model", kModel}}), 2);
  fake_.Open();
  ASSERT_TRUE(results.WaitCount(3));
  for (const Result& r : results.Get()) EXPECT_THAT(r, IsOk());
  EXPECT_EQ(Requests("resource_exhausted"), 1);
  EXPECT_EQ(Requests("ok"), 3);
}

TEST_F(CoreTest, ExpiredDeadlinesAreDroppedBeforeCompute) {
  options_.batching.max_batch_size = 1;
  UseFakeClock();
  Alias(Publish());
  StartReady();
  InferRequest late = Tensor();
  late.deadline = clock_.Now() - absl::Milliseconds(1);
  EXPECT_THAT(core_->Infer(late),
              StatusIs(absl::StatusCode::kDeadlineExceeded, HasSubstr("before")));
  EXPECT_TRUE(fake_.batch_sizes().empty());

  // Expires while queued behind a running batch.
  fake_.Close();
  Results results;
  core_->InferAsync(Tensor(), results.Callback());
  ASSERT_TRUE(fake_.WaitRuns(1));
  InferRequest queued = Tensor();
  queued.deadline = clock_.Now() + absl::Milliseconds(20);
  core_->InferAsync(queued, results.Callback());
  clock_.Advance(absl::Milliseconds(20));
  fake_.Open();
  ASSERT_TRUE(results.WaitCount(2));
  const auto got = results.Get();
  EXPECT_THAT(got[0], IsOk());
  EXPECT_THAT(got[1], StatusIs(absl::StatusCode::kDeadlineExceeded,
                               HasSubstr("deadline passed after 20ms in the queue of ham")));
  EXPECT_EQ(fake_.batch_sizes(), std::vector<int>{1});  // Only the first request ran.
  EXPECT_EQ(Requests("deadline_exceeded"), 2);
}

TEST_F(CoreTest, BadRequestsAreRejected) {
  Alias(Publish());
  StartReady();
  InferRequest bad_bytes;
  bad_bytes.encoded_image = "this is not an image";
  EXPECT_THAT(core_->Infer(bad_bytes),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("image")));

  InferRequest wrong_size = Tensor();
  wrong_size.tensor.resize(10);
  EXPECT_THAT(core_->Infer(wrong_size),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("expects [3, 4, 4] = 48")));

  InferRequest both = Tensor();
  both.encoded_image = PngBytes();
  EXPECT_THAT(core_->Infer(both),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("not both")));
  InferRequest neither;
  EXPECT_THAT(core_->Infer(neither),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("no input")));
  InferRequest nan = Tensor();
  nan.tensor[5] = std::nanf("");
  EXPECT_THAT(core_->Infer(nan),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("not finite")));

  InferRequest unknown_model = Tensor();
  unknown_model.model = "nope";
  EXPECT_THAT(
      core_->Infer(unknown_model),
      StatusIs(absl::StatusCode::kNotFound, HasSubstr("unknown model \"nope\" (serving: ham)")));
  InferRequest unknown_version = Tensor();
  unknown_version.version = 7;
  EXPECT_THAT(core_->Infer(unknown_version),
              StatusIs(absl::StatusCode::kNotFound,
                       HasSubstr("version 7 of model ham is not loaded (loaded: 1)")));

  EXPECT_TRUE(fake_.batch_sizes().empty());
  EXPECT_EQ(Requests("invalid_argument"), 5);
  EXPECT_EQ(Requests("not_found", ""), 1);  // The unknown version.
  // An unknown model is counted without the client's name (label cardinality).
  EXPECT_EQ(MetricValue(prom_, "skinlesion_inference_requests_total",
                        {{"model", ""}, {"version", ""}, {"outcome", "not_found"}}),
            1);
}

// Images over the heavy-decode size are decoded on the calling thread (never by the
// batch worker) and measured as "heavy"; the rest as before.
TEST_F(CoreTest, HeavyImagesAreDecodedOnTheCallingThread) {
  options_.heavy_decode_pixels = 200;           // PngBytes(): 20x16 = 320 pixels.
  options_.batching.max_queue_delay = absl::Milliseconds(300);  // Decode "ahead".
  Alias(Publish());
  StartReady();
  const auto decodes = [&](const std::string& stage) {
    const double n = MetricValue(prom_, "skinlesion_inference_decode_seconds",
                                 {{"model", kModel}, {"stage", stage}});
    return n < 0 ? 0.0 : n;
  };
  InferRequest heavy;
  heavy.encoded_image = PngBytes();
  ASSERT_THAT(core_->Infer(heavy), IsOk());
  EXPECT_EQ(decodes("heavy"), 1);
  EXPECT_EQ(decodes("ahead") + decodes("in_batch"), 0);
  InferRequest light;
  light.encoded_image = PngBytes(12, 12);  // 144 pixels.
  ASSERT_THAT(core_->Infer(light), IsOk());
  EXPECT_EQ(decodes("heavy"), 1);
  EXPECT_EQ(decodes("ahead") + decodes("in_batch"), 1);
  // Bytes count too: a small image with a large encoding is heavy.
  options_.heavy_decode_bytes = 10;
  core_->Shutdown(absl::Seconds(5));
  core_.reset();
  StartReady();
  ASSERT_THAT(core_->Infer(light), IsOk());
  EXPECT_EQ(decodes("heavy"), 2);
}

// The decode budget is set from the model's input: a PNG over it is refused from
// its header; a JPEG of the same size decodes at reduced scale within it and gets
// an answer.
TEST_F(CoreTest, DecodeBudgetFollowsTheModelInput) {
  options_.decode_budget_factor = 40;  // 40 * 4^2 = 640 pixels.
  options_.min_decode_budget_pixels = 0;
  Alias(Publish());
  StartReady();
  InferRequest png;
  png.encoded_image = EncodedBytes(".png", 200, 160);
  EXPECT_THAT(core_->Infer(png), StatusIs(absl::StatusCode::kInvalidArgument,
                                          HasSubstr("decode budget of 640")));
  EXPECT_TRUE(fake_.batch_sizes().empty());
  // 200x160 JPEG for a 4 px model: reduced while the shorter side stays >= 4 * 4,
  // 1/8 -> 25x20 = 500 pixels.
  InferRequest jpeg;
  jpeg.encoded_image = EncodedBytes(".jpg", 200, 160);
  ASSERT_THAT(core_->Infer(jpeg), IsOk());
  // Explanations decode under the same budget.
  ExplainRequest explain;
  explain.model = kModel;
  explain.encoded_image = png.encoded_image;
  EXPECT_THAT(core_->Explain(explain), StatusIs(absl::StatusCode::kInvalidArgument,
                                                HasSubstr("decode budget")));
  // No budget: the PNG decodes.
  options_.decode_budget_factor = 0;
  core_->Shutdown(absl::Seconds(5));
  core_.reset();
  StartReady();
  EXPECT_THAT(core_->Infer(png), IsOk());
}

TEST_F(CoreTest, OversizedImagesAreInvalidArgument) {
  options_.max_image_pixels = 100;  // The PNG has 320.
  Alias(Publish());
  StartReady();
  InferRequest big;
  big.encoded_image = PngBytes();
  EXPECT_THAT(core_->Infer(big), StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("pixels")));
}

TEST_F(CoreTest, UnavailableUntilAVersionIsLoaded) {
  Publish();
  Start();  // No alias yet.
  // The series alerts take increase() of exist at 0 before any event, so the first
  // failure is an increase (a series born at 1 would not be).
  EXPECT_EQ(Reloads("failure"), 0);
  EXPECT_EQ(Reloads("success"), 0);
  EXPECT_EQ(Requests("internal", ""), 0);
  ASSERT_TRUE(WaitError("resolving ham@production"));
  EXPECT_FALSE(core_->Ready());
  EXPECT_THAT(core_->Infer(Tensor()),
              StatusIs(absl::StatusCode::kUnavailable, HasSubstr("no version loaded yet")));
  EXPECT_EQ(Requests("unavailable", ""), 1);
  Alias(1);
  EXPECT_TRUE(WaitServing(1));
  EXPECT_EQ(core_->Models()[0].last_error, "");
  // And for the version now serving, every outcome.
  for (const char* outcome : {"ok", "invalid_argument", "not_found", "resource_exhausted",
                              "deadline_exceeded", "unavailable", "internal"}) {
    EXPECT_EQ(Requests(outcome), 0) << outcome;
  }
}

TEST_F(CoreTest, PlainNumberAliasPinsAVersion) {
  options_.models = {{.name = kModel, .alias = "2"}};
  Publish();
  Publish();
  Alias(1);
  StartReady();
  EXPECT_EQ(ServingVersion(), 2);
}

TEST_F(CoreTest, CreateRejectsBadOptions) {
  auto source = LocalRegistrySource::Create(root_);
  ASSERT_TRUE(source.ok());
  ServingOptions bad = options_;
  bad.models.push_back(bad.models[0]);
  bad.batching.max_batch_size = 0;
  bad.poll_interval = absl::ZeroDuration();
  auto core = ServingCore::Create(bad, std::move(*source), fake_.Loader());
  EXPECT_THAT(core,
              StatusIs(absl::StatusCode::kInvalidArgument,
                       ::testing::AllOf(HasSubstr("listed twice"), HasSubstr("max_batch_size"),
                                        HasSubstr("poll_interval"))));
  ServingOptions none;
  EXPECT_THAT(ServingCore::Create(none, nullptr, fake_.Loader()),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("no models")));
  EXPECT_THAT(ServingCore::Create(options_, nullptr, fake_.Loader()),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("no model source")));
}

// 20 alias moves under continuous load: no request fails, each is answered by a
// version that was live while it ran, and the last version ends up serving.
TEST_F(CoreTest, HotReloadUnderLoad) {
  options_.batching.max_batch_size = 4;
  options_.batching.instances = 2;
  options_.poll_interval = absl::Milliseconds(2);
  Alias(Publish());
  StartReady();

  std::atomic<int64_t> confirmed{1};  // Serving (swap observed) before a request starts.
  std::atomic<int64_t> aliased{1};    // Newest alias target: no response may be newer.
  std::atomic<bool> stop{false};
  std::atomic<int> ok{0};
  std::mutex mu;
  std::vector<std::string> failures;
  std::set<int64_t> seen;
  std::vector<std::thread> clients;
  for (int t = 0; t < 3; ++t) {
    clients.emplace_back([&] {
      while (!stop.load()) {
        const int64_t lo = confirmed.load();
        const Result r = core_->Infer(Tensor());
        const int64_t hi = aliased.load();
        std::lock_guard<std::mutex> lock(mu);
        if (!r.ok()) {
          failures.push_back(r.status().ToString());
        } else if (r->version < lo || r->version > hi ||
                   r->logits[0] != static_cast<float>(r->version)) {
          failures.push_back(absl::StrCat("version ", r->version, " (logit ", r->logits[0],
                                          ") outside [", lo, ", ", hi, "]"));
        } else {
          ++ok;
          seen.insert(r->version);
        }
      }
    });
  }
  for (int move = 0; move < 20; ++move) {
    const int64_t v = Publish();
    aliased.store(v);
    Alias(v);
    ASSERT_TRUE(WaitServing(v)) << "v" << v << " not swapped in: " << core_->Models()[0].last_error;
    confirmed.store(v);
    std::this_thread::sleep_for(std::chrono::milliseconds(3));
  }
  stop.store(true);
  for (std::thread& t : clients) t.join();
  EXPECT_TRUE(failures.empty()) << failures.size() << " failures, first: " << failures.front();
  EXPECT_GT(ok.load(), 20);
  EXPECT_GE(seen.size(), 3u);
  EXPECT_EQ(ServingVersion(), 21);
  const Result last = core_->Infer(Tensor());
  ASSERT_THAT(last, IsOk());
  EXPECT_EQ(last->version, 21);
  EXPECT_EQ(Reloads("success"), 21);
  EXPECT_EQ(Reloads("failure"), 0);  // Exported at 0 from the start, never incremented.
  // Only the serving version has a version_info series.
  EXPECT_EQ(SeriesCount(prom_, "skinlesion_model_version_info"), 1);
  EXPECT_EQ(
      MetricValue(prom_, "skinlesion_model_version_info",
                  {{"model", kModel}, {"version", "21"}, {"sha256", Sha256Hex("fake weights")}, {"precision", "fp32"}}),
      1);
}

TEST_F(CoreTest, BrokenVersionsAreNotSwappedIn) {
  options_.retry_failed_after_polls = 1000000;
  const std::string golden = dir_.Join("golden.png");
  WriteFile(golden, PngBytes());
  Alias(Publish());
  StartReady();

  auto expect_old_serves = [&](const std::string& error_part, int64_t failed, int failures) {
    ASSERT_TRUE(WaitError(error_part)) << core_->Models()[0].last_error;
    const ServedModelStatus status = core_->Models()[0];
    EXPECT_EQ(status.failed_version, failed);
    EXPECT_EQ(status.spec.version, 1);
    EXPECT_TRUE(status.ready);
    const Result r = core_->Infer(Tensor());
    ASSERT_THAT(r, IsOk());
    EXPECT_EQ(r->version, 1);
    EXPECT_EQ(Reloads("failure"), failures);
  };

  // The loader fails; it is not retried on every poll.
  Alias(Publish({{"fake", {{"fail", "boom: cannot load"}}}}));
  expect_old_serves("boom: cannot load", 2, 1);
  std::this_thread::sleep_for(std::chrono::milliseconds(60));  // ~12 polls.
  EXPECT_EQ(fake_.loads(2), 1);
  EXPECT_EQ(Reloads("failure"), 1);

  // Golden set mismatch.
  nlohmann::json wrong = {
      {"tolerance", 1e-3},
      {"items", {{{"file", "golden_0.png"}, {"probabilities", {1, 0, 0, 0, 0, 0, 0}}}}}};
  Alias(Publish({{"golden_set", wrong}}, {{"golden_0.png", golden}}));
  expect_old_serves("golden set mismatch on golden_0.png", 3, 2);

  // A file changed after publishing: Verify fails with DataLoss.
  const int64_t tampered = Publish();
  WriteFile(absl::StrCat(root_, "/", kModel, "/versions/", tampered, "/model.safetensors"),
            "evil weights");
  Alias(tampered);
  expect_old_serves("checksum mismatch", 4, 3);
  EXPECT_THAT(core_->Models()[0].last_error, HasSubstr("DATA_LOSS"));

  // A malformed manifest field.
  Alias(Publish({{"calibration", {{"temperature", -1}}}}));
  expect_old_serves("calibration.temperature", 5, 4);

  // A good version after all that is swapped in and clears the error.
  Alias(Publish());
  ASSERT_TRUE(WaitServing(6));
  EXPECT_EQ(core_->Models()[0].last_error, "");
  EXPECT_EQ(Reloads("success"), 2);
  EXPECT_EQ(Reloads("failure"), 4);
}

// Every successful prediction counts as one answer (not a lesion / referred by rule /
// not referred) of its version, and the serving version's expected shares come from its
// manifest; a swap replaces them.
TEST_F(CoreTest, CountsAnswersAndExportsTheVersionsExpectedShares) {
  auto answers = [&](const std::string& answer, const std::string& version) {
    return MetricValue(prom_, "skinlesion_inference_answers_total",
                       {{"model", kModel}, {"version", version}, {"answer", answer}});
  };
  auto expected = [&](const std::string& answer, const std::string& version) {
    return MetricValue(prom_, "skinlesion_model_expected_answer_share",
                       {{"model", kModel}, {"version", version}, {"answer", answer}});
  };
  // v1: [10, 0, ...]: akiec at 0.9996, no threshold: not referred; energy -10 is under
  // its out-of-distribution threshold 0.
  Alias(Publish({{"fake", {{"tag", 10.0}}},
                 {"refer", {{"validation", {{"refer_rate", 0.3}}}}},
                 {"ood", {{"method", "energy"}, {"threshold", 0.0}, {"reject_rate", 0.02}}}}));
  StartReady();
  EXPECT_EQ(answers("no_referral", "1"), 0);  // Declared before the first answer.
  for (int i = 0; i < 3; ++i) ASSERT_THAT(core_->Infer(Tensor()), IsOk());
  EXPECT_EQ(answers("no_referral", "1"), 3);
  EXPECT_EQ(answers("refer_malignancy_risk", "1"), 0);
  EXPECT_DOUBLE_EQ(expected("refer", "1"), 0.3);
  EXPECT_DOUBLE_EQ(expected("not_a_lesion", "1"), 0.02);
  // A failed request is not an answer.
  InferRequest bad = Tensor();
  bad.tensor.pop_back();
  EXPECT_FALSE(core_->Infer(bad).ok());
  EXPECT_EQ(answers("no_referral", "1") + answers("refer_low_confidence", "1"), 3);

  // v2: akiec is malignant: its risk 0.9996 is above the threshold 0.5.
  Alias(Publish({{"fake", {{"tag", 10.0}}},
                 {"refer",
                  {{"malignancy_risk_threshold", 0.5},
                   {"target_sensitivity", 0.9},
                   {"validation", {{"refer_rate", 0.4}}}}}}));
  ASSERT_TRUE(WaitServing(2)) << core_->Models()[0].last_error;
  ASSERT_THAT(core_->Infer(Tensor()), IsOk());
  EXPECT_EQ(answers("refer_malignancy_risk", "2"), 1);
  EXPECT_DOUBLE_EQ(expected("refer", "2"), 0.4);
  // v1's expected shares are gone; v2 has no out-of-distribution threshold, so none.
  EXPECT_EQ(expected("refer", "1"), -1);  // -1: no such series.
  EXPECT_EQ(expected("not_a_lesion", "2"), -1);

  // v3: [1, 0, ...] tops at 0.31 < 0.5: referred as uncertain; v4: energy above its
  // threshold: not a lesion, whatever the referral.
  Alias(Publish({{"fake", {{"tag", 1.0}}}}));
  ASSERT_TRUE(WaitServing(3)) << core_->Models()[0].last_error;
  ASSERT_THAT(core_->Infer(Tensor()), IsOk());
  EXPECT_EQ(answers("refer_low_confidence", "3"), 1);
  Alias(Publish({{"fake", {{"tag", 10.0}}},
                 {"ood", {{"method", "energy"}, {"threshold", -20.0}, {"reject_rate", 0.01}}}}));
  ASSERT_TRUE(WaitServing(4)) << core_->Models()[0].last_error;
  ASSERT_THAT(core_->Infer(Tensor()), IsOk());
  EXPECT_EQ(answers("not_a_lesion", "4"), 1);
  EXPECT_EQ(answers("no_referral", "4"), 0);
}

TEST(AnswerLabelTest, NotALesionFirstThenTheReferralRule) {
  EXPECT_EQ(AnswerLabel(true, true, ReferRule::kMalignancyRisk), "not_a_lesion");
  EXPECT_EQ(AnswerLabel(false, true, ReferRule::kMalignancyRisk), "refer_malignancy_risk");
  EXPECT_EQ(AnswerLabel(false, true, ReferRule::kLowConfidence), "refer_low_confidence");
  EXPECT_EQ(AnswerLabel(false, true, ReferRule::kCloseCall), "refer_close_call");
  EXPECT_EQ(AnswerLabel(false, false, ReferRule::kNone), "no_referral");
}

TEST_F(CoreTest, FailedVersionIsRetriedAfterBackoff) {
  options_.retry_failed_after_polls = 3;
  Alias(Publish());
  StartReady();
  Alias(Publish({{"fake", {{"fail", "transient"}, {"fail_once", true}}}}));
  ASSERT_TRUE(WaitServing(2)) << core_->Models()[0].last_error;
  EXPECT_EQ(fake_.loads(2), 2);
  EXPECT_EQ(Reloads("failure"), 1);
  EXPECT_EQ(Reloads("success"), 2);
}

TEST_F(CoreTest, GoldenSetMatchAllowsTheSwap) {
  const std::string golden = dir_.Join("golden.png");
  WriteFile(golden, PngBytes());
  Alias(Publish());
  StartReady();
  const auto p = FakeProbabilities(2.0f, 1.5);
  nlohmann::json set = {{"tolerance", 1e-4},
                        {"items", {{{"file", "golden_0.png"}, {"probabilities", p}}}}};
  Alias(Publish({{"golden_set", set}, {"calibration", {{"temperature", 1.5}}}},
                {{"golden_0.png", golden}}));
  ASSERT_TRUE(WaitServing(2)) << core_->Models()[0].last_error;
}

// Requests admitted on a version finish on it, even when a swap happens while they
// are running or queued; batches never mix versions; the old version stays loaded
// (and selectable by number) until no request holds it.
TEST_F(CoreTest, InFlightRequestsFinishOnTheirVersion) {
  options_.batching.max_batch_size = 4;
  options_.batching.instances = 1;
  Alias(Publish());
  StartReady();
  fake_.CloseTag(1);  // v1's Run is held; v2's warm-up is not.
  Results results;
  core_->InferAsync(Tensor(), results.Callback());  // v1, held in Run.
  ASSERT_TRUE(fake_.WaitRuns(1));
  core_->InferAsync(Tensor(), results.Callback());  // Queued on v1.
  Alias(Publish());
  ASSERT_TRUE(WaitServing(2));
  // v1 is still held by the requests: selectable by number.
  EXPECT_EQ(core_->Models()[0].loaded_versions, (std::vector<int64_t>{1, 2}));
  InferRequest pinned = Tensor();
  pinned.version = 1;
  core_->InferAsync(Tensor(), results.Callback());  // Queued on v2.
  core_->InferAsync(pinned, results.Callback());    // Queued on v1.
  fake_.Open();
  ASSERT_TRUE(results.WaitCount(4));
  std::map<int64_t, int> by_version;
  for (const Result& r : results.Get()) {
    ASSERT_THAT(r, IsOk());
    EXPECT_EQ(r->logits[0], static_cast<float>(r->version));
    ++by_version[r->version];
  }
  // Runs after the held one: the two queued v1 requests together, then v2 alone
  // (it was queued between them but batches never mix versions). Warm-ups of v2
  // (4 and 1) ran while v1 was held.
  const std::vector<int> sizes = fake_.batch_sizes();
  ASSERT_GE(sizes.size(), 2u);
  EXPECT_EQ(sizes[sizes.size() - 2], 2);
  EXPECT_EQ(sizes.back(), 1);
  EXPECT_EQ(by_version[1], 3);
  EXPECT_EQ(by_version[2], 1);
  // Nothing holds v1 any more: unloaded.
  ASSERT_TRUE(
      WaitUntil([&] { return core_->Models()[0].loaded_versions == std::vector<int64_t>{2}; }));
  EXPECT_THAT(core_->Infer(pinned),
              StatusIs(absl::StatusCode::kNotFound, HasSubstr("(loaded: 2)")));
}

TEST_F(CoreTest, ShutdownDrainsQueuedRequestsThenRejects) {
  options_.batching.max_batch_size = 1;
  Alias(Publish());
  StartReady();
  fake_.Close();
  Results results;
  for (int i = 0; i < 3; ++i) core_->InferAsync(Tensor(), results.Callback());
  ASSERT_TRUE(fake_.WaitRuns(1));
  std::thread shutdown([&] { core_->Shutdown(absl::Seconds(10)); });
  // A request that is never queued (wrong size) tells when shutdown has begun.
  InferRequest probe = Tensor();
  probe.tensor.resize(1);
  ASSERT_TRUE(WaitUntil(
      [&] { return core_->Infer(probe).status().code() == absl::StatusCode::kUnavailable; }));
  EXPECT_THAT(core_->Infer(Tensor()),
              StatusIs(absl::StatusCode::kUnavailable, HasSubstr("shutting down")));
  fake_.Open();
  shutdown.join();
  ASSERT_TRUE(results.WaitCount(3));
  for (const Result& r : results.Get()) EXPECT_THAT(r, IsOk());
  EXPECT_THAT(core_->Infer(Tensor()), StatusIs(absl::StatusCode::kUnavailable, ::testing::_));
}

TEST_F(CoreTest, ShutdownFailsWhatTheDrainTimeLeaves) {
  options_.batching.max_batch_size = 1;
  UseFakeClock();
  Alias(Publish());
  StartReady();
  fake_.Close();
  Results results;
  for (int i = 0; i < 3; ++i) core_->InferAsync(Tensor(), results.Callback());
  ASSERT_TRUE(fake_.WaitRuns(1));
  std::thread shutdown([&] { core_->Shutdown(absl::Milliseconds(20)); });
  // A request that is never queued (wrong size) tells when shutdown has begun (and
  // its drain deadline is set).
  InferRequest probe = Tensor();
  probe.tensor.resize(1);
  ASSERT_TRUE(WaitUntil(
      [&] { return core_->Infer(probe).status().code() == absl::StatusCode::kUnavailable; }));
  clock_.Advance(absl::Milliseconds(19));
  EXPECT_TRUE(results.Get().empty());
  clock_.Advance(absl::Milliseconds(1));
  ASSERT_TRUE(results.WaitCount(2));  // While the running one is still held.
  for (const Result& r : results.Get()) {
    EXPECT_THAT(r, StatusIs(absl::StatusCode::kUnavailable, HasSubstr("shut down before")));
  }
  fake_.Open();
  shutdown.join();
  ASSERT_TRUE(results.WaitCount(3));
  EXPECT_THAT(results.Get()[2], IsOk());  // The running one.
}

ExplainRequest ExplainTensor(int target, int64_t version = 0, float value = 0.5f) {
  ExplainRequest r;
  r.model = kModel;
  r.version = version;
  r.target_class = target;
  r.tensor.assign(3 * kSize * kSize, value);
  return r;
}

TEST_F(CoreTest, ExplainRunsOnTheRequestedVersion) {
  Alias(Publish());
  StartReady();
  absl::StatusOr<Explanation> e = core_->Explain(ExplainTensor(3, 1, 0.25f));
  ASSERT_THAT(e, IsOk());
  EXPECT_EQ(e->method, "fake:1");
  EXPECT_EQ(e->width, 2);
  EXPECT_EQ(e->height, 3);
  ASSERT_EQ(e->heat.size(), 6u);
  EXPECT_FLOAT_EQ(e->heat[0], 0.3f);   // The target reached the instance.
  EXPECT_FLOAT_EQ(e->heat[1], 0.25f);  // So did the tensor.
  EXPECT_EQ(e->covers, "center-square");

  // Encoded images go through the serving decode + preprocess path.
  ExplainRequest image = ExplainTensor(0);
  image.tensor.clear();
  image.encoded_image = PngBytes();
  EXPECT_THAT(core_->Explain(image), IsOk());
  EXPECT_TRUE(fake_.batch_sizes().empty());  // Never through the batcher.

  // A request holds v1 while v2 takes over: the prediction's version still explains.
  fake_.CloseTag(1);
  Results results;
  core_->InferAsync(Tensor(), results.Callback());
  ASSERT_TRUE(fake_.WaitRuns(1));
  Alias(Publish({{"preprocessing", {{"size", kSize}, {"resize", "resize"}}}}));
  ASSERT_TRUE(WaitServing(2)) << core_->Models()[0].last_error;
  e = core_->Explain(ExplainTensor(1, 1));
  ASSERT_THAT(e, IsOk());
  EXPECT_EQ(e->method, "fake:1");
  e = core_->Explain(ExplainTensor(1));  // 0: the current version.
  ASSERT_THAT(e, IsOk());
  EXPECT_EQ(e->method, "fake:2");
  EXPECT_EQ(e->covers, "full-image");
  fake_.Open();
  ASSERT_TRUE(results.WaitCount(1));
  ASSERT_TRUE(WaitUntil([&] { return core_->Models()[0].loaded_versions.size() == 1; }));
  EXPECT_THAT(core_->Explain(ExplainTensor(1, 1)),
              StatusIs(absl::StatusCode::kNotFound, HasSubstr("version 1 of model ham is not loaded")));
  EXPECT_EQ(MetricValue(prom_, "skinlesion_inference_explanations_total",
                        {{"model", kModel}, {"outcome", "ok"}}),
            4);
  EXPECT_EQ(MetricValue(prom_, "skinlesion_inference_explanations_total",
                        {{"model", kModel}, {"outcome", "not_found"}}),
            1);
  EXPECT_EQ(MetricValue(prom_, "skinlesion_inference_explain_seconds", {{"model", kModel}}), 4);
  // Explanations are not inference requests.
  EXPECT_EQ(Requests("ok"), 1);
}

TEST_F(CoreTest, BadExplainRequestsAreRejected) {
  Alias(Publish());
  StartReady();
  EXPECT_THAT(core_->Explain(ExplainTensor(7)),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("target class 7")));
  EXPECT_THAT(core_->Explain(ExplainTensor(-1)), StatusIs(absl::StatusCode::kInvalidArgument, ::testing::_));
  ExplainRequest r = ExplainTensor(0);
  r.tensor.pop_back();
  EXPECT_THAT(core_->Explain(r), StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("floats")));
  r = ExplainTensor(0, 0, std::nanf(""));
  EXPECT_THAT(core_->Explain(r), StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("finite")));
  r = ExplainTensor(0);
  r.encoded_image = PngBytes();
  EXPECT_THAT(core_->Explain(r), StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("not both")));
  r = ExplainTensor(0);
  r.tensor.clear();
  EXPECT_THAT(core_->Explain(r), StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("no input")));
  r.encoded_image = "not an image";
  EXPECT_THAT(core_->Explain(r), StatusIs(absl::StatusCode::kInvalidArgument, ::testing::_));
  r = ExplainTensor(0);
  r.model = "nope";
  EXPECT_THAT(core_->Explain(r), StatusIs(absl::StatusCode::kNotFound, HasSubstr("nope")));
  EXPECT_THAT(core_->Explain(ExplainTensor(0, 9)), StatusIs(absl::StatusCode::kNotFound, ::testing::_));
  r = ExplainTensor(0);
  r.deadline = absl::Now() - absl::Seconds(1);
  EXPECT_THAT(core_->Explain(r), StatusIs(absl::StatusCode::kDeadlineExceeded, ::testing::_));
  EXPECT_EQ(fake_.explains(), 0);
}

// At most max_concurrent_explanations run per model; the others wait for a slot
// until their deadline.
TEST_F(CoreTest, ExplanationsAreLimitedPerModel) {
  options_.max_concurrent_explanations = 2;
  options_.batching.max_queue_delay = absl::ZeroDuration();  // Infer() below: no waiting.
  UseFakeClock();
  Alias(Publish());
  StartReady();
  fake_.CloseExplain();
  std::vector<std::future<absl::StatusOr<Explanation>>> running;
  for (int i = 0; i < 2; ++i) {
    running.push_back(
        std::async(std::launch::async, [this, i] { return core_->Explain(ExplainTensor(i)); }));
  }
  ASSERT_TRUE(fake_.WaitExplains(2));
  ExplainRequest late = ExplainTensor(5);
  late.deadline = clock_.Now() + absl::Milliseconds(100);
  auto late_result = std::async(std::launch::async, [&] { return core_->Explain(late); });
  ASSERT_TRUE(clock_.AwaitTimedWaiters(2));  // It waits for a slot (beside the follower).
  clock_.Advance(absl::Milliseconds(99));
  EXPECT_EQ(late_result.wait_for(std::chrono::seconds(0)), std::future_status::timeout);
  clock_.Advance(absl::Milliseconds(1));
  EXPECT_THAT(late_result.get(),
              StatusIs(absl::StatusCode::kDeadlineExceeded, HasSubstr("explanation slot")));
  EXPECT_EQ(fake_.explains(), 2);  // It never reached the instance.
  // Inference is not blocked by explanations.
  EXPECT_THAT(core_->Infer(Tensor()), IsOk());

  // A waiter with time left gets the slot once one frees.
  ExplainRequest patient = ExplainTensor(6);
  patient.deadline = clock_.Now() + absl::Seconds(30);
  auto waiting = std::async(std::launch::async, [&] { return core_->Explain(patient); });
  EXPECT_EQ(waiting.wait_for(std::chrono::milliseconds(50)), std::future_status::timeout);
  fake_.OpenExplain();
  for (auto& f : running) EXPECT_THAT(f.get(), IsOk());
  absl::StatusOr<Explanation> e = waiting.get();
  ASSERT_THAT(e, IsOk());
  EXPECT_FLOAT_EQ(e->heat[0], 0.6f);
  EXPECT_EQ(MetricValue(prom_, "skinlesion_inference_explanations_total",
                        {{"model", kModel}, {"outcome", "deadline_exceeded"}}),
            1);
  options_.max_concurrent_explanations = 0;
  EXPECT_THAT(ServingCore::Create(options_, nullptr, fake_.Loader()),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("max_concurrent_explanations must be >= 1")));
}

}  // namespace
}  // namespace skinlesion::serving
