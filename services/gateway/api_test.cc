// The gateway's pure pieces: gRPC -> HTTP error mapping, query parsing, the job
// config conversion, the prediction JSON and the rate limiter.
#include "services/gateway/api.h"

#include <iterator>

#include "gtest/gtest.h"
#include "services/gateway/rate_limiter.h"
#include "skinlesion/testing/testing.h"

namespace skinlesion::gateway {
namespace {

using ::skinlesion::testing::StatusIs;
using ::testing::AllOf;
using ::testing::ElementsAre;
using ::testing::HasSubstr;

TEST(MapGrpcStatusTest, EveryCodeHasItsHttpStatus) {
  struct Case {
    grpc::StatusCode code;
    Upstream upstream;
    int http;
    std::string api_code;
    bool retry_after;
  };
  const std::vector<Case> cases = {
      {grpc::StatusCode::INVALID_ARGUMENT, Upstream::kInference, 400, "invalid_image", false},
      {grpc::StatusCode::INVALID_ARGUMENT, Upstream::kTrainer, 400, "bad_request", false},
      {grpc::StatusCode::NOT_FOUND, Upstream::kInference, 404, "not_found", false},
      {grpc::StatusCode::UNAVAILABLE, Upstream::kInference, 503, "inference_unavailable", true},
      {grpc::StatusCode::RESOURCE_EXHAUSTED, Upstream::kInference, 503, "inference_unavailable",
       true},
      {grpc::StatusCode::UNAVAILABLE, Upstream::kRegistry, 503, "service_unavailable", true},
      {grpc::StatusCode::DEADLINE_EXCEEDED, Upstream::kInference, 504, "upstream_timeout", false},
      {grpc::StatusCode::FAILED_PRECONDITION, Upstream::kRegistry, 412, "failed_precondition",
       false},
      {grpc::StatusCode::ALREADY_EXISTS, Upstream::kRegistry, 409, "conflict", false},
      {grpc::StatusCode::PERMISSION_DENIED, Upstream::kTrainer, 403, "forbidden", false},
      {grpc::StatusCode::UNAUTHENTICATED, Upstream::kTrainer, 502, "internal", false},
      {grpc::StatusCode::INTERNAL, Upstream::kInference, 502, "internal", false},
      {grpc::StatusCode::DATA_LOSS, Upstream::kRegistry, 502, "internal", false},
  };
  for (const Case& c : cases) {
    const ApiError e = MapGrpcStatus(c.upstream, grpc::Status(c.code, "detail text"));
    SCOPED_TRACE(GrpcCodeName(c.code));
    EXPECT_EQ(e.status, c.http);
    EXPECT_EQ(e.code, c.api_code);
    EXPECT_EQ(e.retry_after_s > 0, c.retry_after);
    EXPECT_FALSE(e.message.empty());
  }
  // The others name the gRPC code.
  // 5xx name the gRPC code, not the upstream's details; 4xx pass the message on.
  EXPECT_THAT(MapGrpcStatus(Upstream::kInference,
                            grpc::Status(grpc::StatusCode::INTERNAL, "at 10.0.0.7:50051"))
                  .message,
              AllOf(HasSubstr("INTERNAL"), ::testing::Not(HasSubstr("10.0.0.7"))));
  EXPECT_THAT(MapGrpcStatus(Upstream::kInference,
                            grpc::Status(grpc::StatusCode::UNAVAILABLE, "ipv4:10.0.0.7"))
                  .message,
              AllOf(HasSubstr("UNAVAILABLE"), ::testing::Not(HasSubstr("10.0.0.7"))));
  EXPECT_THAT(
      MapGrpcStatus(Upstream::kTrainer, grpc::Status(grpc::StatusCode::NOT_FOUND, "no job j1"))
          .message,
      HasSubstr("no job j1"));
  EXPECT_EQ(GrpcCodeName(grpc::StatusCode::RESOURCE_EXHAUSTED), "RESOURCE_EXHAUSTED");
}

TEST(ApiErrorTest, JsonHasCodeMessageAndProblems) {
  ApiError e = BadRequest("bad");
  EXPECT_EQ(e.ToJson().dump(), R"({"code":"bad_request","message":"bad"})");
  e.problems = {"a", "b"};
  EXPECT_EQ(e.ToJson()["problems"].size(), 2u);
}

TEST(ApiErrorTest, TravelsThroughAStatusUnchanged) {
  ApiError e{.status = 503,
             .code = "service_unavailable",
             .message = "Busy.",
             .retry_after_s = 2,
             .problems = {"a", "b"}};
  const absl::Status status = ToStatus(e);
  EXPECT_THAT(status, StatusIs(absl::StatusCode::kUnavailable, "Busy."));
  const ApiError back = ToApiError(status);
  EXPECT_EQ(back.status, 503);
  EXPECT_EQ(back.code, "service_unavailable");
  EXPECT_EQ(back.message, "Busy.");
  EXPECT_EQ(back.retry_after_s, 2);
  EXPECT_THAT(back.problems, ElementsAre("a", "b"));
  EXPECT_FALSE(ToStatus({.status = 200, .code = "odd", .message = "m"}).ok());

  // Statuses made elsewhere: a parser's InvalidArgument is 400 with its message;
  // anything else is 500 without its details.
  const ApiError parse = ToApiError(absl::InvalidArgumentError("bad top_k"));
  EXPECT_EQ(parse.status, 400);
  EXPECT_EQ(parse.code, "bad_request");
  EXPECT_EQ(parse.message, "bad top_k");
  const ApiError other = ToApiError(absl::InternalError("at /secret/path"));
  EXPECT_EQ(other.status, 500);
  EXPECT_EQ(other.code, "internal");
  EXPECT_EQ(other.message, "Internal error.");
}

TEST(PredictionQueryTest, ParsesAndRejects) {
  auto q = ParsePredictionQuery({});
  ASSERT_TRUE(q.ok());
  EXPECT_FALSE(q->explain);
  EXPECT_EQ(q->top_k, 3);
  EXPECT_EQ(q->model, "");
  q = ParsePredictionQuery({{"explain", "true"}, {"model", "ham10000"}, {"top_k", "5"}});
  ASSERT_TRUE(q.ok()) << q.status();
  EXPECT_TRUE(q->explain);
  EXPECT_EQ(q->model, "ham10000");
  EXPECT_EQ(q->top_k, 5);
  EXPECT_FALSE(ParsePredictionQuery({{"explain", "0"}})->explain);

  for (const QueryParams& bad : std::vector<QueryParams>{{{"top_k", "0"}},
                                                         {{"top_k", "1001"}},
                                                         {{"top_k", "3x"}},
                                                         {{"explain", "maybe"}},
                                                         {{"model", "../etc"}},
                                                         {{"model", ""}},
                                                         {{"model", std::string(65, 'a')}},
                                                         {{"colour", "red"}},
                                                         {{"top_k", "2"}, {"top_k", "3"}}}) {
    EXPECT_THAT(ParsePredictionQuery(bad),
                StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("'")))
        << bad.begin()->first;
  }
}

TEST(JobsQueryTest, States) {
  auto s = ParseJobsQuery({{"state", "running,queued"}});
  ASSERT_TRUE(s.ok());
  EXPECT_THAT(*s, ElementsAre(v1::JOB_STATE_RUNNING, v1::JOB_STATE_QUEUED));
  EXPECT_TRUE(ParseJobsQuery({})->empty());
  EXPECT_FALSE(ParseJobsQuery({{"state", "sleeping"}}).ok());
  EXPECT_FALSE(ParseJobsQuery({{"page", "2"}}).ok());
}

TEST(NamesTest, VersionsAndFiles) {
  EXPECT_EQ(*ParseVersion("12"), 12);
  EXPECT_FALSE(ParseVersion("0").ok());
  EXPECT_FALSE(ParseVersion("-1").ok());
  EXPECT_FALSE(ParseVersion("99999999999999999").ok());
  EXPECT_TRUE(IsValidModelFileName("confusion_matrix.png"));
  EXPECT_TRUE(IsValidModelFileName("metrics.json"));
  EXPECT_TRUE(IsValidModelFileName("MODEL_CARD.md"));
  EXPECT_FALSE(IsValidModelFileName("model.safetensors"));
  EXPECT_FALSE(IsValidModelFileName("..png"));
  EXPECT_FALSE(IsValidModelFileName(".hidden.png"));
  EXPECT_FALSE(IsValidModelFileName("a/b.png"));
}

TEST(JobConfigTest, TypedFieldsAndExtra) {
  auto c = JobConfigFromJson(
      R"({"model_name": "m", "architecture": "resnet18", "imageSize": 32, "epochs": 2,
          "learning_rate": 0.001, "seed": 7, "promote_to_production": true,
          "frozen_epochs": 1, "extra_json": {"threads": 1, "frozen_epochs": 5}})");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->model_name(), "m");
  EXPECT_EQ(c->image_size(), 32);
  EXPECT_EQ(c->epochs(), 2);
  EXPECT_DOUBLE_EQ(c->learning_rate(), 0.001);
  EXPECT_EQ(c->seed(), 7u);
  EXPECT_TRUE(c->promote_to_production());
  const auto extra = nlohmann::json::parse(c->extra_json());
  EXPECT_EQ(extra["frozen_epochs"], 1);  // The top-level key wins.
  EXPECT_EQ(extra["threads"], 1);
  // extra_json as a string holding an object.
  c = JobConfigFromJson(R"({"extra_json": "{\"patience\": 0}"})");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(nlohmann::json::parse(c->extra_json())["patience"], 0);
}

TEST(JobConfigTest, ListsEveryProblem) {
  auto c = JobConfigFromJson(
      R"({"model_name": 5, "epochs": "ten", "image_size": 1e20, "seed": -1,
          "promote_to_production": "yes", "learning_rate": "x", "extra_json": [1]})");
  EXPECT_THAT(
      c, StatusIs(absl::StatusCode::kInvalidArgument,
                  AllOf(HasSubstr("invalid job config: "), HasSubstr("model_name must be a string"),
                        HasSubstr("epochs must be an integer"),
                        HasSubstr("image_size must be an integer"),
                        HasSubstr("seed must be a non-negative integer"),
                        HasSubstr("promote_to_production must be true or false"),
                        HasSubstr("learning_rate must be a number"),
                        HasSubstr("extra_json must be a JSON object"))));
  EXPECT_THAT(JobConfigFromJson("[1,2]"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("must be a JSON object")));
  EXPECT_THAT(JobConfigFromJson("{"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("not valid JSON")));
  EXPECT_THAT(JobConfigFromJson(R"({"epochs": 3000000000})"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("epochs")));
}

TEST(SetAliasBodyTest, Parses) {
  auto b = ParseSetAliasBody(R"({"version": 2, "reason": "better", "force": true})");
  ASSERT_TRUE(b.ok());
  EXPECT_EQ(b->version, 2);
  EXPECT_EQ(b->reason, "better");
  EXPECT_TRUE(b->force);
  EXPECT_FALSE(ParseSetAliasBody(R"({"reason": "x"})").ok());
  EXPECT_FALSE(ParseSetAliasBody(R"({"version": "2"})").ok());
  EXPECT_FALSE(ParseSetAliasBody(R"({"version": 2, "colour": 1})").ok());
  EXPECT_FALSE(ParseSetAliasBody("nope").ok());
}

v1::ClassifyResponse FakeResponse() {
  v1::ClassifyResponse r;
  const char* codes[] = {"akiec", "bcc", "bkl", "df", "mel", "nv", "vasc"};
  const float p[] = {0.01f, 0.02f, 0.03f, 0.04f, 0.1f, 0.75f, 0.05f};
  for (int i = 0; i < static_cast<int>(std::size(codes)); ++i) {
    auto* c = r.add_probabilities();
    c->mutable_lesion_class()->set_index(i);
    c->mutable_lesion_class()->set_code(codes[i]);
    c->mutable_lesion_class()->set_name(std::string("name ") + codes[i]);
    c->mutable_lesion_class()->set_group(i == 0 || i == 1 || i == 4 ? v1::MALIGNANCY_GROUP_MALIGNANT
                                                                    : v1::MALIGNANCY_GROUP_BENIGN);
    c->set_probability(p[i]);
  }
  *r.add_top() = r.probabilities(5);
  *r.add_top() = r.probabilities(4);
  r.set_malignancy_risk(0.13f);
  r.mutable_model()->set_name("ham10000");
  r.mutable_model()->set_version(3);
  r.mutable_model()->set_sha256("abc");
  r.mutable_timing()->set_total_ms(12.5);
  r.mutable_timing()->set_batch_size(2);
  r.mutable_explanation()->set_method("grad-cam");
  r.mutable_explanation()->set_width(2);
  r.mutable_explanation()->set_height(1);
  r.mutable_explanation()->add_heat(0.5f);
  r.mutable_explanation()->add_heat(1.0f);
  return r;
}

TEST(PredictionJsonTest, Fields) {
  const nlohmann::json j = PredictionJson(FakeResponse(), "0011223344556677", 14.25, false);
  EXPECT_EQ(j["prediction_id"], "0011223344556677");
  EXPECT_EQ(j["model"]["name"], "ham10000");
  EXPECT_EQ(j["model"]["version"], 3);
  EXPECT_EQ(j["model"]["sha256"], "abc");
  EXPECT_EQ(j["model"]["test_time_views"], "none") << "an older server that does not say: none";
  ASSERT_EQ(j["probabilities"].size(), 7u);
  EXPECT_EQ(j["probabilities"][4]["class"], "mel");
  EXPECT_EQ(j["probabilities"][4]["malignant"], true);
  EXPECT_EQ(j["probabilities"][5]["malignant"], false);
  EXPECT_EQ(j["probabilities"][5]["label"], "name nv");
  EXPECT_EQ(j["top"].size(), 2u);
  EXPECT_EQ(j["top_class"], "nv");
  EXPECT_NEAR(j["confidence"].get<double>(), 0.75, 1e-6);
  EXPECT_NEAR(j["malignancy_risk"].get<double>(), 0.13, 1e-6);
  EXPECT_EQ(j["refer"], false);
  EXPECT_EQ(j["refer_rule"], "");
  EXPECT_TRUE(j["referral"]["malignancy_risk_threshold"].is_null());  // The version has none.
  EXPECT_TRUE(j["referral"]["sensitivity_confidence"].is_null());
  EXPECT_EQ(j["out_of_distribution"], false);
  EXPECT_DOUBLE_EQ(j["timing"]["inference_ms"].get<double>(), 12.5);
  EXPECT_DOUBLE_EQ(j["timing"]["gateway_ms"].get<double>(), 14.25);
  EXPECT_EQ(j["timing"]["batch_size"], 2);
  EXPECT_FALSE(j.contains("explanation"));  // Not asked for.
  EXPECT_THAT(j["disclaimer"].get<std::string>(), HasSubstr("not a diagnostic device"));

  // A risk referral and a not-a-lesion answer carry their rule, operating point and message.
  v1::ClassifyResponse risky = FakeResponse();
  risky.set_refer(true);
  risky.set_refer_rule("malignancy_risk");
  risky.set_refer_reason("malignancy risk 0.26 >= 0.18 (90% sensitivity point)");
  risky.set_refer_risk_threshold(0.18f);
  risky.set_refer_target_sensitivity(0.9f);
  risky.set_refer_sensitivity_confidence(0.95f);
  risky.set_test_time_views("flips");
  risky.set_out_of_distribution(true);
  risky.set_ood_score(1.5f);
  risky.set_ood_message("This does not look like a dermoscopic photo");
  const nlohmann::json r = PredictionJson(risky, "x", 1, false);
  EXPECT_EQ(r["refer_rule"], "malignancy_risk");
  EXPECT_NEAR(r["referral"]["malignancy_risk_threshold"].get<double>(), 0.18, 1e-6);
  EXPECT_NEAR(r["referral"]["target_sensitivity"].get<double>(), 0.9, 1e-6);
  EXPECT_NEAR(r["referral"]["sensitivity_confidence"].get<double>(), 0.95, 1e-6);
  EXPECT_EQ(r["model"]["test_time_views"], "flips");
  EXPECT_EQ(r["out_of_distribution"], true);
  EXPECT_NEAR(r["ood_score"].get<double>(), 1.5, 1e-6);
  EXPECT_THAT(r["ood_message"].get<std::string>(), HasSubstr("dermoscopic"));

  const nlohmann::json e = PredictionJson(FakeResponse(), "x", 1, true)["explanation"];
  EXPECT_EQ(e["method"], "grad-cam");
  EXPECT_EQ(e["width"], 2);
  EXPECT_EQ(e["height"], 1);
  EXPECT_EQ(e["covers"], "center-square");  // Not said: the model's centred square.
  v1::ClassifyResponse full = FakeResponse();
  full.mutable_explanation()->set_covers("full-image");
  EXPECT_EQ(PredictionJson(full, "x", 1, true)["explanation"]["covers"], "full-image");
  EXPECT_EQ(e["heat"].size(), 2u);
}

// The model card says what a version classifies, or why a server would refuse its
// manifest; the manifest itself is shown either way.
TEST(ModelCardJsonTest, ClassesOrTheManifestsError) {
  using json = nlohmann::json;
  v1::ModelVersion v;
  v.set_model("clinic");
  v.set_version(2);
  v.set_manifest_json(R"({"architecture": "resnet18", "labels": ["benign", "melanoma"],
                          "calibration": {"temperature": 0.5}})");
  json card = ModelCardJson(v, json());
  EXPECT_EQ(card["classes"], json({"benign", "melanoma"}));
  EXPECT_TRUE(card["manifest_error"].is_null());
  EXPECT_EQ(card["temperature"], 0.5);
  v.set_manifest_json(R"({"architecture": "resnet18", "labels": "benign,melanoma"})");
  card = ModelCardJson(v, json());
  EXPECT_TRUE(card["classes"].is_null());
  EXPECT_THAT(card["manifest_error"].get<std::string>(), HasSubstr("\"labels\" must be an array"));
  EXPECT_EQ(card["manifest"]["labels"], "benign,melanoma");
  v.set_manifest_json("not json");
  card = ModelCardJson(v, json());
  EXPECT_THAT(card["manifest_error"].get<std::string>(), HasSubstr("missing \"architecture\""));
}

// A version's headline says what its figures were measured on.
TEST(VersionSummaryJsonTest, SaysWhatTheMetricsWereMeasuredOn) {
  using json = nlohmann::json;
  v1::ModelVersion v;
  v.set_model("ham10000");
  v.set_version(3);
  v.set_manifest_json(R"({"architecture": "resnet18", "image_size": 160,
      "metrics": {"balanced_accuracy": 0.65, "accuracy": 0.7, "n": 5984,
                  "context": {"partition": "out_of_fold", "cv": "runs/cv36"}}})");
  json s = VersionSummaryJson(v);
  EXPECT_EQ(s["metrics"]["balanced_accuracy"], 0.65);
  EXPECT_EQ(s["metrics"]["partition"], "out_of_fold");
  EXPECT_EQ(s["metrics"]["n"], 5984);
  EXPECT_TRUE(s["metrics"]["macro_auc"].is_null());
  // Older reports have no context, or one of the wrong type: unknown, not an error.
  v.set_manifest_json(
      R"({"architecture": "resnet18", "metrics": {"accuracy": 0.7, "context": 3}})");
  s = VersionSummaryJson(v);
  EXPECT_TRUE(s["metrics"]["partition"].is_null());
  EXPECT_TRUE(s["metrics"]["n"].is_null());
  v.set_manifest_json(R"({"architecture": "resnet18"})");
  EXPECT_TRUE(VersionSummaryJson(v)["metrics"].is_null());
}

// A finished job says which alias its version reached and, in its notes, why
// production did not move.
TEST(JobJsonTest, PublishedAliasAndNotes) {
  using json = nlohmann::json;
  v1::Job job;
  job.set_id("job-1");
  job.set_state(v1::JOB_STATE_RUNNING);
  json j = JobJson(job);
  EXPECT_TRUE(j["published_version"].is_null());
  EXPECT_TRUE(j["published_alias"].is_null());
  EXPECT_EQ(j["notes"], json::array());
  job.set_state(v1::JOB_STATE_SUCCEEDED);
  job.mutable_published()->set_version(2);
  job.mutable_published()->set_alias("staging");
  job.add_notes(
      "production not moved: promotion of ham10000 v2 to 'production' blocked by its gates");
  j = JobJson(job);
  EXPECT_EQ(j["published_version"], 2);
  EXPECT_EQ(j["published_alias"], "staging");
  ASSERT_EQ(j["notes"].size(), 1u);
  EXPECT_THAT(j["notes"][0].get<std::string>(), HasSubstr("production not moved"));
}

TEST(RateLimiterTest, BurstThenRate) {
  RateLimiter limiter({.rate = 2, .burst = 3});
  const absl::Time t0 = absl::FromUnixSeconds(1000);
  for (int i = 0; i < 3; ++i) EXPECT_EQ(limiter.Admit("a", t0), absl::ZeroDuration()) << i;
  const absl::Duration wait = limiter.Admit("a", t0);
  EXPECT_GT(wait, absl::ZeroDuration());
  EXPECT_LE(wait, absl::Milliseconds(500));
  EXPECT_EQ(limiter.Admit("b", t0), absl::ZeroDuration());  // Per client.
  EXPECT_EQ(limiter.Admit("a", t0 + absl::Milliseconds(500)), absl::ZeroDuration());
  EXPECT_GT(limiter.Admit("a", t0 + absl::Milliseconds(500)), absl::ZeroDuration());
  RateLimiter off({.rate = 0, .burst = 1});
  for (int i = 0; i < 100; ++i) EXPECT_EQ(off.Admit("a", t0), absl::ZeroDuration());
}

TEST(RateLimiterTest, ForgetsIdleClients) {
  RateLimiter limiter({.rate = 10, .burst = 1, .max_clients = 4});
  const absl::Time t0 = absl::FromUnixSeconds(1000);
  for (int i = 0; i < 4; ++i) limiter.Admit("c" + std::to_string(i), t0);
  limiter.Admit("new", t0 + absl::Seconds(10));
  EXPECT_LE(limiter.clients(), 4u);
}

}  // namespace
}  // namespace skinlesion::gateway
