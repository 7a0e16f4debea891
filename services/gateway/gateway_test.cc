// skinlesion-gateway as a real process in front of real services, called with
// httplib::Client: skinlesion-inference on the bundled model, skinlesion-registry
// seeded with it, skinlesion-trainer (whose jobs run a stand-in CLI that sleeps),
// and in-test fake ClassificationServices for the deadline, retry and shutdown
// cases. Every error code of the REST contract (docs/gateway.md), the headers, the
// metrics and the static website.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <memory>
#include <numeric>
#include <regex>
#include <thread>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "httplib.h"
#include "nlohmann/json.hpp"
#include "skinlesion/testing/testing.h"
#include "skinlesion/v1/classification.grpc.pb.h"

namespace skinlesion::gateway {
namespace {

using ::skinlesion::testing::ChildProcess;
using ::skinlesion::testing::SourcePath;
using ::skinlesion::testing::TempDir;
using ::skinlesion::testing::WriteFile;
using ::testing::HasSubstr;
using json = nlohmann::json;

constexpr char kToken[] = "gateway-test-token-123";

std::string Slurp(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

// Waits for `pattern` (one capture: the port) in the process's log.
int WaitForPort(ChildProcess& process, const std::string& log, const std::string& pattern,
                std::chrono::seconds timeout = std::chrono::seconds(60)) {
  const std::regex re(pattern);
  const auto end = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < end) {
    std::smatch m;
    const std::string text = Slurp(log);
    if (std::regex_search(text, m, re)) return std::stoi(m[1]);
    if (process.Wait(std::chrono::milliseconds(20)) != -1) break;
  }
  ADD_FAILURE() << "no '" << pattern << "' in " << log << ":\n" << Slurp(log);
  return 0;
}

// A port nothing listens on (bound and closed again).
int DeadPort() {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof(addr);
  EXPECT_EQ(::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
  EXPECT_EQ(::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len), 0);
  ::close(fd);
  return ntohs(addr.sin_port);
}

// A TCP connection to 127.0.0.1:port from `source` (any 127/8 address: a distinct
// client address on loopback).
int Connect(int port, const char* source = "127.0.0.1") {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in from{};
  from.sin_family = AF_INET;
  ::inet_pton(AF_INET, source, &from.sin_addr);
  EXPECT_EQ(::bind(fd, reinterpret_cast<sockaddr*>(&from), sizeof(from)), 0) << source;
  sockaddr_in to{};
  to.sin_family = AF_INET;
  to.sin_port = htons(static_cast<uint16_t>(port));
  to.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  EXPECT_EQ(::connect(fd, reinterpret_cast<sockaddr*>(&to), sizeof(to)), 0);
  return fd;
}

void SendText(int fd, const std::string& text) {
  (void)::send(fd, text.data(), text.size(), MSG_NOSIGNAL);
}

// What the server sends until it closes the connection (or `timeout` passes).
std::string ReadUntilClosed(int fd, std::chrono::milliseconds timeout) {
  timeval tv{.tv_sec = static_cast<time_t>(timeout.count() / 1000),
             .tv_usec = static_cast<suseconds_t>((timeout.count() % 1000) * 1000)};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  std::string out;
  const auto end = std::chrono::steady_clock::now() + timeout;
  char buf[4096];
  while (std::chrono::steady_clock::now() < end) {
    const ssize_t n = ::recv(fd, buf, sizeof(buf), 0);
    if (n <= 0) break;
    out.append(buf, static_cast<size_t>(n));
  }
  return out;
}

double SecondsSince(std::chrono::steady_clock::time_point t) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t).count();
}

// A ClassificationService whose behaviour the test sets.
class FakeInference final : public v1::ClassificationService::Service {
 public:
  enum class Mode { kOk, kFailOnceThenOk, kInvalid, kSleep };
  std::atomic<Mode> mode{Mode::kOk};
  std::atomic<int> calls{0};
  std::atomic<int> sleep_ms{0};

  grpc::Status Classify(grpc::ServerContext* context, const v1::ClassifyRequest* request,
                        v1::ClassifyResponse* response) override {
    const int n = ++calls;
    switch (mode.load()) {
      case Mode::kFailOnceThenOk:
        if (n == 1) return {grpc::StatusCode::UNAVAILABLE, "warming up"};
        break;
      case Mode::kInvalid:
        return {grpc::StatusCode::INVALID_ARGUMENT, "cannot decode the image"};
      case Mode::kSleep:
        break;
      case Mode::kOk:
        break;
    }
    if (sleep_ms > 0) {
      const auto end =
          std::chrono::steady_clock::now() + std::chrono::milliseconds(sleep_ms.load());
      while (std::chrono::steady_clock::now() < end && !context->IsCancelled()) {
        std::this_thread::sleep_for(std::chrono::milliseconds(5));
      }
    }
    const char* codes[] = {"akiec", "bcc", "bkl", "df", "mel", "nv", "vasc"};
    for (int i = 0; i < static_cast<int>(std::size(codes)); ++i) {
      auto* p = response->add_probabilities();
      p->mutable_lesion_class()->set_index(i);
      p->mutable_lesion_class()->set_code(codes[i]);
      p->mutable_lesion_class()->set_name(codes[i]);
      p->set_probability(i == 5 ? 0.4f : 0.1f);
    }
    for (int i = 0; i < request->top_k(); ++i) *response->add_top() = response->probabilities(i);
    response->mutable_model()->set_name("fake");
    response->mutable_model()->set_version(9);
    if (request->explain()) {
      response->mutable_explanation()->set_method("grad-cam");
      response->mutable_explanation()->set_width(7);
      response->mutable_explanation()->set_height(7);
      response->mutable_explanation()->set_covers("full-image");
      for (int i = 0; i < 49; ++i) response->mutable_explanation()->add_heat(i / 48.0f);
    }
    return grpc::Status::OK;
  }
};

struct GatewayProcess {
  std::unique_ptr<ChildProcess> process;
  std::string log;
  int port = 0;
  httplib::Client Client() const {
    httplib::Client c("127.0.0.1", port);
    c.set_read_timeout(30, 0);
    return c;
  }
};

class GatewayTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new TempDir();
    // The website: a few files of each type, and a secret beside it.
    const std::string web = dir_->Join("web");
    std::filesystem::create_directories(web + "/js");
    WriteFile(web + "/index.html", "<!doctype html><title>skinlesion test</title>");
    WriteFile(web + "/js/app.js", "console.log('app');");
    WriteFile(web + "/style.css", "body { color: black; }");
    WriteFile(web + "/logo.svg", "<svg xmlns='http://www.w3.org/2000/svg'/>");
    WriteFile(dir_->Join("secret.txt"), "TOP-SECRET-CONTENT");
    WriteFile(dir_->Join("token"), std::string(kToken) + "\n");
    // The trainer's jobs run this instead of `skinlesion train`: it waits to be cancelled.
    WriteFile(dir_->Join("fake-cli.sh"), "#!/bin/sh\nexec sleep 60\n");
    ::chmod(dir_->Join("fake-cli.sh").c_str(), 0755);

    const std::string inference_log = dir_->Join("inference.log");
    inference_ = new ChildProcess(
        {SKINLESION_INFERENCE_BINARY, "--model_dir", SourcePath("models/bundled"), "--host",
         "127.0.0.1", "--port", "0", "--metrics_port", "0", "--threads", "1"},
        inference_log);
    inference_port_ = WaitForPort(*inference_, inference_log, "\\(port ([0-9]+)\\)");

    const std::string registry_log = dir_->Join("registry.log");
    registry_ = new ChildProcess(
        {SKINLESION_REGISTRY_BINARY, "--root", dir_->Join("registry"), "--address", "127.0.0.1",
         "--port", "0", "--seed_model_dir", SourcePath("models/bundled"), "--seed_model",
         "ham10000", "--seed_alias", "production"},
        registry_log);
    registry_port_ = WaitForPort(*registry_, registry_log, "listening on 127\\.0\\.0\\.1:([0-9]+)");

    const std::string trainer_log = dir_->Join("trainer.log");
    trainer_ = new ChildProcess(
        {SKINLESION_TRAINER_BINARY, "--state_dir=" + dir_->Join("trainer"),
         "--registry_root=" + dir_->Join("trainer-registry"), "--cli=" + dir_->Join("fake-cli.sh"),
         "--address=127.0.0.1", "--port=0", "--device=cpu", "--kill_grace_s=2",
         "--token_file=" + dir_->Join("token")},
        trainer_log);
    trainer_port_ = WaitForPort(*trainer_, trainer_log, "listening on 127\\.0\\.0\\.1:([0-9]+)");

    fake_ = new FakeInference();
    grpc::ServerBuilder builder;
    builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &fake_port_);
    builder.RegisterService(fake_);
    fake_server_ = builder.BuildAndStart().release();

    main_ = new GatewayProcess(
        StartGateway("main", {absl::StrCat("--inference_target=127.0.0.1:", inference_port_),
                              absl::StrCat("--registry_target=127.0.0.1:", registry_port_),
                              absl::StrCat("--trainer_target=127.0.0.1:", trainer_port_),
                              "--token_file=" + dir_->Join("token"), "--max_upload_bytes=1048576",
                              "--rate_limit_rps=0"}));
    // Inference loads the model in the background: wait until the gateway says ready.
    auto client = main_->Client();
    const auto end = std::chrono::steady_clock::now() + std::chrono::seconds(90);
    while (std::chrono::steady_clock::now() < end) {
      auto r = client.Get("/readyz");
      if (r && r->status == 200) break;
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
  }

  static void TearDownTestSuite() {
    delete main_;
    if (fake_server_ != nullptr) {
      fake_server_->Shutdown(std::chrono::system_clock::now());
      delete fake_server_;
    }
    delete fake_;
    delete trainer_;
    delete registry_;
    delete inference_;
    delete dir_;
    main_ = nullptr;
    fake_server_ = nullptr;
    fake_ = nullptr;
    trainer_ = registry_ = inference_ = nullptr;
    dir_ = nullptr;
  }

  static GatewayProcess StartGateway(const std::string& name, std::vector<std::string> flags) {
    GatewayProcess g;
    g.log = dir_->Join("gateway-" + name + ".log");
    std::vector<std::string> args = {SKINLESION_GATEWAY_BINARY, "--port=0",
                                     "--web_root=" + dir_->Join("web")};
    args.insert(args.end(), flags.begin(), flags.end());
    g.process = std::make_unique<ChildProcess>(args, g.log);
    g.port = WaitForPort(*g.process, g.log, "^listening on 127\\.0\\.0\\.1:([0-9]+)",
                         std::chrono::seconds(20));
    return g;
  }

  static std::string Jpeg() {
    return Slurp(SourcePath("tests/fixtures/ham10000/images/ISIC_0024698.jpg"));
  }

  static json Body(const httplib::Result& r) {
    if (!r) return json();
    return json::parse(r->body, nullptr, false);
  }

  // The value of a sample line "name{labels} value" of the gateway's /metrics.
  static double MetricValue(const GatewayProcess& g, const std::string& series) {
    auto r = g.Client().Get("/metrics");
    if (!r) return -1;
    for (absl::string_view line : absl::StrSplit(r->body, '\n')) {
      if (absl::StartsWith(line, series + " ")) {
        double v = -1;
        (void)absl::SimpleAtod(line.substr(series.size() + 1), &v);
        return v;
      }
    }
    return -1;
  }

  static void ExpectError(const httplib::Result& r, int status, const std::string& code) {
    ASSERT_TRUE(r) << "no response";
    EXPECT_EQ(r->status, status) << r->body;
    const json body = Body(r);
    ASSERT_TRUE(body.is_object()) << r->body;
    EXPECT_EQ(body.value("code", ""), code) << r->body;
    EXPECT_FALSE(body.value("message", "").empty()) << r->body;
    EXPECT_THAT(r->get_header_value("Content-Type"), HasSubstr("application/json"));
  }

  static TempDir* dir_;
  static ChildProcess* inference_;
  static ChildProcess* registry_;
  static ChildProcess* trainer_;
  static int inference_port_, registry_port_, trainer_port_, fake_port_;
  static FakeInference* fake_;
  static grpc::Server* fake_server_;
  static GatewayProcess* main_;
};

TempDir* GatewayTest::dir_ = nullptr;
ChildProcess* GatewayTest::inference_ = nullptr;
ChildProcess* GatewayTest::registry_ = nullptr;
ChildProcess* GatewayTest::trainer_ = nullptr;
int GatewayTest::inference_port_ = 0;
int GatewayTest::registry_port_ = 0;
int GatewayTest::trainer_port_ = 0;
int GatewayTest::fake_port_ = 0;
FakeInference* GatewayTest::fake_ = nullptr;
grpc::Server* GatewayTest::fake_server_ = nullptr;
GatewayProcess* GatewayTest::main_ = nullptr;

TEST_F(GatewayTest, PredictsMultipartAndRawWithInferencesModel) {
  // What inference itself says it serves.
  auto stub = v1::ClassificationService::NewStub(grpc::CreateChannel(
      absl::StrCat("127.0.0.1:", inference_port_), grpc::InsecureChannelCredentials()));
  grpc::ClientContext context;
  v1::ListServedModelsResponse served;
  ASSERT_TRUE(stub->ListServedModels(&context, {}, &served).ok());
  ASSERT_EQ(served.models_size(), 1);
  const v1::ModelRef& model = served.models(0).model();

  auto client = main_->Client();
  httplib::MultipartFormDataItems items = {{"image", Jpeg(), "lesion.jpg", "image/jpeg"}};
  auto multipart = client.Post("/api/v1/predictions?top_k=2", items);
  auto raw = client.Post("/api/v1/predictions", Jpeg(), "image/jpeg");
  for (const auto* r : {&multipart, &raw}) {
    ASSERT_TRUE(*r);
    ASSERT_EQ((*r)->status, 200) << (*r)->body;
    const json j = Body(*r);
    // The bundled model's classes: HAM10000's, alphabetical.
    const char* codes[] = {"akiec", "bcc", "bkl", "df", "mel", "nv", "vasc"};
    ASSERT_EQ(j["probabilities"].size(), std::size(codes));
    double sum = 0;
    for (size_t i = 0; i < std::size(codes); ++i) {
      EXPECT_EQ(j["probabilities"][i]["class"], codes[i]);
      EXPECT_FALSE(j["probabilities"][i]["label"].get<std::string>().empty());
      sum += j["probabilities"][i]["probability"].get<double>();
    }
    EXPECT_NEAR(sum, 1.0, 1e-3);
    EXPECT_EQ(j["model"]["name"], model.name());
    EXPECT_EQ(j["model"]["version"], model.version());
    EXPECT_EQ(j["model"]["sha256"], model.sha256());
    EXPECT_EQ(j["model"]["sha256"].get<std::string>().size(), 64u);
    EXPECT_EQ(j["prediction_id"].get<std::string>().size(), 16u);
    EXPECT_EQ(j["top_class"], j["top"][0]["class"]);
    EXPECT_DOUBLE_EQ(j["confidence"].get<double>(), j["top"][0]["probability"].get<double>());
    EXPECT_TRUE(j["refer"].is_boolean());
    EXPECT_GE(j["timing"]["gateway_ms"].get<double>(), j["timing"]["inference_ms"].get<double>());
    EXPECT_GE(j["timing"]["batch_size"].get<int>(), 1);
    EXPECT_FALSE(j.contains("explanation"));
    EXPECT_THAT(j["disclaimer"].get<std::string>(), HasSubstr("not a diagnostic device"));
    EXPECT_EQ((*r)->get_header_value("Cache-Control"), "no-store");
  }
  EXPECT_EQ(Body(multipart)["top"].size(), 2u);
  EXPECT_EQ(Body(raw)["top"].size(), 3u);
  // Same image, same answer.
  EXPECT_EQ(Body(multipart)["probabilities"], Body(raw)["probabilities"]);
  // explain=true: inference's heatmap, passed through.
  auto explained = client.Post("/api/v1/predictions?explain=true", items);
  ASSERT_TRUE(explained);
  ASSERT_EQ(explained->status, 200) << explained->body;
  const json e = Body(explained)["explanation"];
  EXPECT_TRUE(e["method"] == "grad-cam" || e["method"] == "attention-rollout") << e["method"];
  EXPECT_TRUE(e["covers"] == "center-square" || e["covers"] == "full-image") << e["covers"];
  ASSERT_GT(e["width"].get<int>(), 0);
  ASSERT_EQ(e["heat"].size(), static_cast<size_t>(e["width"].get<int>() * e["height"].get<int>()));
  for (const json& v : e["heat"]) EXPECT_TRUE(v.get<double>() >= 0 && v.get<double>() <= 1) << v;
  // The access log has the route, never the image or the query.
  const std::string log = Slurp(main_->log);
  EXPECT_THAT(log, HasSubstr("POST /api/v1/predictions 200"));
  EXPECT_THAT(log, ::testing::Not(HasSubstr("top_k")));
}

// Slow and greedy clients: absolute header and body deadlines (408), per-address and total
// connection caps (503 + Retry-After before anything is read), 411 / 413 / 415
// before the body is read, the in-flight body budget (503); meanwhile other
// clients are answered at once.
TEST_F(GatewayTest, SlowAndGreedyClientsCannotStarveIt) {
  GatewayProcess g = StartGateway(
      "guard", {absl::StrCat("--inference_target=127.0.0.1:", fake_port_),
                "--header_timeout_ms=1000", "--body_timeout_ms=1000",
                "--max_connections_per_client=4",
                "--max_connections=8", "--threads=2", "--max_upload_bytes=1048576",
                "--max_inflight_upload_bytes=1114112"});
  using std::chrono::milliseconds;
  const auto start = std::chrono::steady_clock::now();
  // Four slowloris connections from 127.0.0.2: a request line and one header.
  std::vector<int> slow;
  for (int i = 0; i < 4; ++i) {
    slow.push_back(Connect(g.port, "127.0.0.2"));
    SendText(slow.back(), "POST /api/v1/predictions HTTP/1.1\r\nHost: x\r\n");
  }
  std::this_thread::sleep_for(milliseconds(100));  // Their threads have counted them.
  // A fifth from that address is refused at once, before it sends anything.
  {
    const int fd = Connect(g.port, "127.0.0.2");
    const auto t = std::chrono::steady_clock::now();
    const std::string answer = ReadUntilClosed(fd, milliseconds(3000));
    EXPECT_LT(SecondsSince(t), 0.5);
    EXPECT_THAT(answer, HasSubstr("HTTP/1.1 503"));
    EXPECT_THAT(answer, HasSubstr("Retry-After: 1"));
    ::close(fd);
  }
  // Other clients are answered at once meanwhile.
  {
    const auto t = std::chrono::steady_clock::now();
    auto r = g.Client().Get("/healthz");
    ASSERT_TRUE(r);
    EXPECT_EQ(r->status, 200);
    EXPECT_LT(SecondsSince(t), 0.5);
  }
  // The slow ones keep sending header lines; the deadline does not restart: 408.
  for (int fd : slow) SendText(fd, "X-a: b\r\n");
  std::this_thread::sleep_for(milliseconds(400));
  for (int fd : slow) SendText(fd, "X-b: c\r\n");
  for (int fd : slow) {
    EXPECT_THAT(ReadUntilClosed(fd, milliseconds(3000)), HasSubstr("HTTP/1.1 408"));
    ::close(fd);
  }
  EXPECT_LT(SecondsSince(start), 2.5);

  // A body trickled a byte at a time: 408 at the body deadline, not later.
  {
    const int fd = Connect(g.port, "127.0.0.9");
    const auto t = std::chrono::steady_clock::now();
    SendText(fd,
             "POST /api/v1/predictions HTTP/1.1\r\nHost: x\r\nContent-Type: image/jpeg\r\n"
             "Content-Length: 1000\r\n\r\n\xFF\xD8\xFF");
    for (int i = 0; i < 6; ++i) {
      std::this_thread::sleep_for(milliseconds(250));
      SendText(fd, "x");
    }
    const std::string answer = ReadUntilClosed(fd, milliseconds(3000));
    EXPECT_THAT(answer, HasSubstr("HTTP/1.1 408"));
    EXPECT_THAT(answer, HasSubstr("request_timeout"));
    EXPECT_LT(SecondsSince(t), 2.5);
    ::close(fd);
  }
  // A body-less POST without Content-Length: 411 at once (and a chunked one).
  for (const std::string& head :
       {std::string("POST /api/v1/predictions HTTP/1.1\r\nHost: x\r\n\r\n"),
        std::string("POST /api/v1/predictions HTTP/1.1\r\nHost: x\r\nContent-Type: "
                    "image/jpeg\r\nTransfer-Encoding: chunked\r\n\r\n")}) {
    const int fd = Connect(g.port);
    const auto t = std::chrono::steady_clock::now();
    SendText(fd, head);
    const std::string answer = ReadUntilClosed(fd, milliseconds(3000));
    EXPECT_LT(SecondsSince(t), 0.8) << answer;
    EXPECT_THAT(answer, HasSubstr("HTTP/1.1 411"));
    EXPECT_THAT(answer, HasSubstr("length_required"));
    ::close(fd);
  }
  // A 12 KB form: 415, not the HTTP library's 413; a declared body over the limit:
  // 413 before it is sent.
  auto client = g.Client();
  ExpectError(client.Post("/api/v1/predictions", std::string(12000, 'a'),
                          "application/x-www-form-urlencoded"),
              415, "unsupported_media_type");
  ExpectError(client.Put("/api/v1/models/m/aliases/a", "version=2", "application/x-www-form-urlencoded"),
              415, "unsupported_media_type");
  {
    const int fd = Connect(g.port);
    const auto t = std::chrono::steady_clock::now();
    SendText(fd,
             "POST /api/v1/predictions HTTP/1.1\r\nHost: x\r\nContent-Type: image/jpeg\r\n"
             "Content-Length: 50000000\r\n\r\n");
    const std::string answer = ReadUntilClosed(fd, milliseconds(5000));
    EXPECT_LT(SecondsSince(t), 3.0);
    EXPECT_THAT(answer, HasSubstr("HTTP/1.1 413"));
    ::close(fd);
  }
  // The in-flight budget (1088 KiB): a 1 MiB upload being sent holds most of it, so
  // a second 200 KB one is refused with 503 + Retry-After; once the first is done,
  // the second fits.
  {
    const int first = Connect(g.port, "127.0.0.3");
    SendText(first,
             "POST /api/v1/predictions HTTP/1.1\r\nHost: x\r\nContent-Type: image/jpeg\r\n"
             "Content-Length: 1048576\r\n\r\n\xFF\xD8\xFF");
    std::this_thread::sleep_for(milliseconds(200));
    auto refused = client.Post("/api/v1/predictions", std::string(200000, 'x'), "image/jpeg");
    ExpectError(refused, 503, "service_unavailable");
    if (refused) {
      EXPECT_EQ(refused->get_header_value("Retry-After"), "1");
    }
    ::close(first);
    std::this_thread::sleep_for(milliseconds(300));
    ExpectError(client.Post("/api/v1/predictions", std::string(200000, 'x'), "image/jpeg"), 400,
                "invalid_image");
  }
  // Total cap (8): ten connections, two each from five more addresses: at most 8
  // stay open, the others are answered 503 at once by the accept thread (one more
  // when an earlier connection's thread is still finishing).
  {
    std::vector<int> conns;
    for (const char* a : {"127.0.0.4", "127.0.0.5", "127.0.0.6", "127.0.0.7", "127.0.0.8"}) {
      for (int i = 0; i < 2; ++i) conns.push_back(Connect(g.port, a));
    }
    std::this_thread::sleep_for(milliseconds(200));
    int refused = 0;
    for (int c : conns) {
      if (absl::StrContains(ReadUntilClosed(c, milliseconds(100)), "HTTP/1.1 503")) ++refused;
    }
    EXPECT_GE(refused, 2);
    EXPECT_LE(refused, 3);
    for (int c : conns) ::close(c);
  }
  EXPECT_GE(MetricValue(g, "skinlesion_gateway_connections_refused_total{reason=\"header_timeout\"}"),
            4);
  EXPECT_GE(MetricValue(g, "skinlesion_gateway_connections_refused_total{reason=\"per_client\"}"), 1);
  EXPECT_GE(MetricValue(g, "skinlesion_gateway_connections_refused_total{reason=\"body_timeout\"}"),
            1);
  EXPECT_GE(MetricValue(g, "skinlesion_gateway_connections_refused_total{reason=\"connections\"}"),
            1);
  EXPECT_GE(
      MetricValue(g, "skinlesion_gateway_connections_refused_total{reason=\"memory_budget\"}"), 1);
}

TEST_F(GatewayTest, UploadErrors) {
  auto client = main_->Client();
  // 413: over --max_upload_bytes (1 MiB here) by one byte, and far over it.
  std::string big = Jpeg();
  big.resize((1 << 20) + 1, 'x');
  ExpectError(client.Post("/api/v1/predictions", big, "image/jpeg"), 413, "payload_too_large");
  big.resize(3 << 20, 'x');
  ExpectError(client.Post("/api/v1/predictions", big, "image/jpeg"), 413, "payload_too_large");
  // 415: not an image type, raw or in the multipart part.
  ExpectError(client.Post("/api/v1/predictions", Jpeg(), "text/plain"), 415,
              "unsupported_media_type");
  ExpectError(client.Post("/api/v1/predictions",
                          httplib::MultipartFormDataItems{
                              {"image", "%PDF-1.4", "x.pdf", "application/pdf"}}),
              415, "unsupported_media_type");
  // 400: empty, not an image at all, an image that does not decode (inference says so).
  ExpectError(client.Post("/api/v1/predictions", "", "image/png"), 400, "invalid_image");
  ExpectError(client.Post("/api/v1/predictions", std::string(500, 'z'), "image/jpeg"), 400,
              "invalid_image");
  {  // A format we know and refuse is named (the decoder's sniffing rule).
    auto r = client.Post("/api/v1/predictions", std::string("GIF89a") + std::string(100, '\0'),
                         "image/png");
    ASSERT_TRUE(r);
    EXPECT_EQ(r->status, 400);
    EXPECT_THAT(r->body, HasSubstr("(it is GIF)"));
  }
  const int calls_before = static_cast<int>(MetricValue(
      *main_,
      "skinlesion_gateway_upstream_seconds_count{method=\"Classify\",upstream=\"inference\"}"));
  ExpectError(
      client.Post("/api/v1/predictions", "\xFF\xD8\xFF\xE0" + std::string(2000, 'x'), "image/jpeg"),
      400, "invalid_image");
  EXPECT_GT(MetricValue(*main_,
                        "skinlesion_gateway_upstream_errors_total{code=\"INVALID_ARGUMENT\","
                        "upstream=\"inference\"}"),
            0);
  EXPECT_EQ(
      MetricValue(
          *main_,
          "skinlesion_gateway_upstream_seconds_count{method=\"Classify\",upstream=\"inference\"}"),
      calls_before + 1);  // No retry of INVALID_ARGUMENT.
  // 400: multipart without the "image" field; bad parameters.
  ExpectError(client.Post("/api/v1/predictions",
                          httplib::MultipartFormDataItems{{"file", Jpeg(), "a.jpg", "image/jpeg"}}),
              400, "bad_request");
  ExpectError(client.Post("/api/v1/predictions?top_k=1001", Jpeg(), "image/jpeg"), 400, "bad_request");
  ExpectError(client.Post("/api/v1/predictions?explain=perhaps", Jpeg(), "image/jpeg"), 400,
              "bad_request");
  ExpectError(client.Post("/api/v1/predictions?colour=red", Jpeg(), "image/jpeg"), 400,
              "bad_request");
  // 404: an unknown model (inference's NOT_FOUND), unknown routes under /api.
  ExpectError(client.Post("/api/v1/predictions?model=no-such-model", Jpeg(), "image/jpeg"), 404,
              "not_found");
  ExpectError(client.Get("/api/v1/nothing"), 404, "not_found");
  ExpectError(client.Get("/api/v1/predictions"), 404, "not_found");
  ExpectError(client.Delete("/api/v1/models"), 404, "not_found");
}

TEST_F(GatewayTest, HeadersMetricsAndHealth) {
  auto client = main_->Client();
  for (const char* path : {"/healthz", "/", "/api/v1/nothing"}) {
    auto r = client.Get(path);
    ASSERT_TRUE(r);
    EXPECT_EQ(r->get_header_value("Content-Security-Policy"),
              "default-src 'self'; img-src 'self' data: blob:; style-src 'self'; script-src "
              "'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'");
    EXPECT_EQ(r->get_header_value("X-Content-Type-Options"), "nosniff");
    EXPECT_EQ(r->get_header_value("X-Frame-Options"), "DENY");
    EXPECT_EQ(r->get_header_value("Referrer-Policy"), "no-referrer");
    EXPECT_FALSE(r->has_header("Access-Control-Allow-Origin")) << path;
  }
  EXPECT_EQ(client.Get("/api/v1/nothing")->get_header_value("Cache-Control"), "no-store");
  auto health = client.Get("/healthz");
  EXPECT_EQ(health->status, 200);
  EXPECT_EQ(Body(health)["status"], "ok");
  EXPECT_EQ(client.Get("/readyz")->status, 200);

  ASSERT_EQ(client.Post("/api/v1/predictions", Jpeg(), "image/jpeg")->status, 200);
  auto metrics = client.Get("/metrics");
  ASSERT_TRUE(metrics);
  EXPECT_EQ(metrics->status, 200);
  EXPECT_THAT(metrics->get_header_value("Content-Type"), HasSubstr("text/plain"));
  for (const char* family :
       {"skinlesion_gateway_requests_total", "skinlesion_gateway_request_seconds",
        "skinlesion_gateway_upstream_seconds", "skinlesion_gateway_upstream_errors_total",
        "skinlesion_gateway_upstream_retries_total", "skinlesion_gateway_rate_limited_total",
        "skinlesion_gateway_inflight_requests", "skinlesion_gateway_upload_bytes"}) {
    EXPECT_THAT(metrics->body, HasSubstr(absl::StrCat("# TYPE ", family, " "))) << family;
  }
  EXPECT_THAT(metrics->body, HasSubstr("skinlesion_gateway_requests_total{code=\"200\",method="
                                       "\"POST\",route=\"/api/v1/predictions\"}"));
  EXPECT_GE(MetricValue(*main_, "skinlesion_gateway_upload_bytes_count"), 1);
}

TEST_F(GatewayTest, ServesItsOpenApiDocument) {
  auto r = main_->Client().Get("/api/v1/openapi.json");
  ASSERT_TRUE(r);
  ASSERT_EQ(r->status, 200);
  EXPECT_THAT(r->get_header_value("Content-Type"), HasSubstr("application/json"));
  const json doc = Body(r);
  ASSERT_TRUE(doc.is_object()) << r->body.substr(0, 200);
  EXPECT_EQ(doc["openapi"], "3.0.3");
  for (const char* path :
       {"/api/v1/predictions", "/api/v1/models", "/api/v1/models/{name}/versions/{version}",
        "/api/v1/models/{name}/versions/{version}/files/{file}",
        "/api/v1/models/{name}/aliases/{alias}", "/api/v1/jobs", "/api/v1/jobs/{id}",
        "/api/v1/jobs/{id}/cancel", "/healthz", "/readyz", "/metrics"}) {
    EXPECT_TRUE(doc["paths"].contains(path)) << path;
  }
  EXPECT_TRUE(doc["paths"]["/api/v1/predictions"]["post"]["responses"].contains("413"));
}

TEST_F(GatewayTest, ServesTheWebsiteWithoutTraversal) {
  auto client = main_->Client();
  client.set_url_encode(false);
  struct Case {
    const char* path;
    const char* type;
    const char* content;
  };
  for (const Case& c : {Case{"/", "text/html", "skinlesion test"},
                        Case{"/index.html", "text/html", "skinlesion test"},
                        Case{"/js/app.js", "text/javascript", "console.log"},
                        Case{"/style.css", "text/css", "color: black"},
                        Case{"/logo.svg", "image/svg+xml", "<svg"}}) {
    auto r = client.Get(c.path);
    ASSERT_TRUE(r) << c.path;
    EXPECT_EQ(r->status, 200) << c.path;
    EXPECT_THAT(r->get_header_value("Content-Type"), HasSubstr(c.type)) << c.path;
    EXPECT_THAT(r->body, HasSubstr(c.content)) << c.path;
    EXPECT_EQ(r->get_header_value("X-Content-Type-Options"), "nosniff");
  }
  for (const char* path : {"/../secret.txt", "/%2e%2e/secret.txt", "/js/../../secret.txt",
                           "/js/%2E%2E/%2E%2E/secret.txt", "/..%2fsecret.txt", "/missing.html"}) {
    auto r = client.Get(path);
    ASSERT_TRUE(r) << path;
    EXPECT_TRUE(r->status == 400 || r->status == 404) << path << " " << r->status;
    EXPECT_THAT(r->body, ::testing::Not(HasSubstr("TOP-SECRET"))) << path;
  }
}

TEST_F(GatewayTest, ModelsFromTheRegistry) {
  auto client = main_->Client();
  auto list = client.Get("/api/v1/models");
  ASSERT_TRUE(list);
  ASSERT_EQ(list->status, 200) << list->body;
  const json models = Body(list)["models"];
  ASSERT_EQ(models.size(), 1u) << list->body;
  EXPECT_EQ(models[0]["name"], "ham10000");
  EXPECT_EQ(models[0]["aliases"]["production"], 1);
  EXPECT_EQ(models[0]["serving"]["version"], 1);
  EXPECT_EQ(models[0]["serving"]["ready"], true);
  ASSERT_EQ(models[0]["versions"].size(), 1u);
  const json v = models[0]["versions"][0];
  EXPECT_EQ(v["version"], 1);
  EXPECT_EQ(v["architecture"], "resnet18");
  // The registry's version describes the bundled model it was seeded with.
  const json bundled = json::parse(Slurp(SourcePath("models/bundled/manifest.json")));
  EXPECT_EQ(v["image_size"], bundled["image_size"]);
  EXPECT_EQ(v["aliases"], json::array({"production"}));
  EXPECT_TRUE(v["metrics"]["balanced_accuracy"].is_number());
  EXPECT_EQ(v["metrics"]["partition"], bundled["metrics"]["context"]["partition"]);
  EXPECT_EQ(v["metrics"]["n"], bundled["metrics"]["n"]);
  EXPECT_EQ(v["created"].get<std::string>().size() >= 20, true) << v["created"];

  auto card = client.Get("/api/v1/models/ham10000/versions/1");
  ASSERT_EQ(card->status, 200) << card->body;
  const json c = Body(card);
  EXPECT_EQ(c["name"], "ham10000");
  EXPECT_EQ(c["version"], 1);
  EXPECT_TRUE(c["temperature"].is_number());
  EXPECT_EQ(c["manifest"]["architecture"], "resnet18");
  const json metrics_file = json::parse(Slurp(SourcePath("models/bundled/metrics.json")));
  EXPECT_EQ(c["metrics"], metrics_file);
  bool has_confusion = false;
  for (const json& f : c["files"]) {
    if (f["name"] == "confusion_matrix.png") {
      has_confusion = true;
      EXPECT_EQ(f["url"], "/api/v1/models/ham10000/versions/1/files/confusion_matrix.png");
    }
  }
  EXPECT_TRUE(has_confusion) << card->body;

  auto png = client.Get("/api/v1/models/ham10000/versions/1/files/confusion_matrix.png");
  ASSERT_EQ(png->status, 200);
  EXPECT_EQ(png->get_header_value("Content-Type"), "image/png");
  EXPECT_EQ(png->body, Slurp(SourcePath("models/bundled/confusion_matrix.png")));

  ExpectError(client.Get("/api/v1/models/ham10000/versions/1/files/model.safetensors"), 404,
              "not_found");
  ExpectError(client.Get("/api/v1/models/ham10000/versions/1/files/nothing.png"), 404, "not_found");
  ExpectError(client.Get("/api/v1/models/ham10000/versions/7"), 404, "not_found");
  ExpectError(client.Get("/api/v1/models/unknown/versions/1"), 404, "not_found");
  ExpectError(client.Get("/api/v1/models/ham10000/versions/0"), 400, "bad_request");
}

// A version file the registry sends altered (same size, one bit): 502 naming the file,
// counted as the registry's DATA_LOSS, and nothing damaged is kept.
TEST_F(GatewayTest, ADamagedRegistryCopyIs502) {
  const std::string png = dir_->Join("registry") + "/ham10000/versions/1/confusion_matrix.png";
  const std::string intact = Slurp(png);
  ASSERT_FALSE(intact.empty());
  struct Restore {
    const std::string& path;
    const std::string& content;
    ~Restore() { WriteFile(path, content); }
  } restore{png, intact};
  std::string altered = intact;
  altered[altered.size() / 2] ^= 0x01;
  WriteFile(png, altered);
  // A gateway of its own: nothing of the version in its cache yet.
  GatewayProcess g =
      StartGateway("damaged", {absl::StrCat("--inference_target=127.0.0.1:", inference_port_),
                               absl::StrCat("--registry_target=127.0.0.1:", registry_port_),
                               "--rate_limit_rps=0"});
  auto client = g.Client();
  const std::string url = "/api/v1/models/ham10000/versions/1/files/confusion_matrix.png";
  auto damaged = client.Get(url);
  ExpectError(damaged, 502, "internal");
  EXPECT_EQ(Body(damaged)["message"], "The registry sent a damaged copy of confusion_matrix.png.");
  // The card's metrics.json comes with the same download.
  auto card = client.Get("/api/v1/models/ham10000/versions/1");
  ExpectError(card, 502, "internal");
  EXPECT_EQ(Body(card)["message"], "The registry sent a damaged copy of confusion_matrix.png.");
  EXPECT_EQ(MetricValue(g,
                        "skinlesion_gateway_upstream_errors_total{code=\"DATA_LOSS\","
                        "upstream=\"registry\"}"),
            2);
  // Once the registry's copy is intact again it is served.
  WriteFile(png, intact);
  auto fixed = client.Get(url);
  ASSERT_TRUE(fixed);
  EXPECT_EQ(fixed->status, 200);
  EXPECT_EQ(fixed->body, intact);
}

TEST_F(GatewayTest, AliasNeedsTheToken) {
  auto client = main_->Client();
  const std::string body = R"({"version": 1, "reason": "gateway test"})";
  ExpectError(client.Put("/api/v1/models/ham10000/aliases/staging", body, "application/json"), 401,
              "unauthorized");
  ExpectError(client.Put("/api/v1/models/ham10000/aliases/staging",
                         {{"Authorization", "Bearer wrong-token"}}, body, "application/json"),
              401, "unauthorized");
  const httplib::Headers auth = {{"Authorization", absl::StrCat("Bearer ", kToken)}};
  ExpectError(client.Put("/api/v1/models/ham10000/aliases/staging", auth, "{}", "application/json"),
              400, "bad_request");
  ExpectError(client.Put("/api/v1/models/ham10000/aliases/staging", auth, R"({"version": 5})",
                         "application/json"),
              404, "not_found");
  auto r = client.Put("/api/v1/models/ham10000/aliases/staging", auth, body, "application/json");
  ASSERT_TRUE(r);
  ASSERT_EQ(r->status, 200) << r->body;
  EXPECT_EQ(Body(r), json({{"name", "ham10000"}, {"alias", "staging"}, {"version", 1}}));
  auto list = client.Get("/api/v1/models");
  EXPECT_EQ(Body(list)["models"][0]["aliases"]["staging"], 1);
  // The token never reaches the log.
  EXPECT_THAT(Slurp(main_->log), ::testing::Not(HasSubstr(kToken)));
}

TEST_F(GatewayTest, JobsThroughTheTrainer) {
  auto client = main_->Client();
  const std::string fix = SourcePath("tests/fixtures/ham10000");
  const json config = {{"model_name", "gateway-test"},
                       {"architecture", "resnet18"},
                       {"data_dir", fix + "/images"},
                       {"metadata_file", fix + "/metadata_subset.csv"},
                       {"image_size", 32},
                       {"epochs", 1},
                       {"batch_size", 4},
                       {"frozen_epochs", 0}};
  const httplib::Headers auth = {{"Authorization", absl::StrCat("Bearer ", kToken)}};
  ExpectError(client.Post("/api/v1/jobs", config.dump(), "application/json"), 401, "unauthorized");
  ExpectError(client.Post("/api/v1/jobs", {{"Authorization", "Bearer nope"}}, config.dump(),
                          "application/json"),
              401, "unauthorized");
  // Every problem, from the gateway's conversion and from the trainer's validation.
  auto bad =
      client.Post("/api/v1/jobs", auth, R"({"epochs": "ten", "seed": -3})", "application/json");
  ExpectError(bad, 400, "bad_request");
  EXPECT_EQ(Body(bad)["problems"].size(), 2u) << bad->body;
  json invalid = config;
  invalid["architecture"] = "resnet9000";
  invalid["data_dir"] = "/nonexistent/images";
  invalid["batch_size"] = -1;
  bad = client.Post("/api/v1/jobs", auth, invalid.dump(), "application/json");
  ExpectError(bad, 400, "bad_request");
  EXPECT_THAT(bad->body, HasSubstr("unknown architecture 'resnet9000'"));
  EXPECT_THAT(bad->body, HasSubstr("is not a directory"));
  EXPECT_THAT(bad->body, HasSubstr("batch_size must be >= 1"));
  EXPECT_GE(Body(bad)["problems"].size(), 3u);

  auto created = client.Post("/api/v1/jobs", auth, config.dump(), "application/json");
  ASSERT_TRUE(created);
  ASSERT_EQ(created->status, 201) << created->body;
  const std::string id = Body(created)["job_id"];
  ASSERT_FALSE(id.empty());

  auto list = client.Get("/api/v1/jobs");
  ASSERT_EQ(list->status, 200) << list->body;
  bool found = false;
  const json jobs = Body(list)["jobs"];
  for (const json& j : jobs) {
    if (j["job_id"] == id) {
      found = true;
      EXPECT_EQ(j["name"], "gateway-test");
      EXPECT_TRUE(j["state"] == "queued" || j["state"] == "running") << j;
      for (const char* key : {"created", "started", "finished", "phase", "epoch", "epochs", "step",
                              "steps", "loss", "val_balanced_accuracy", "throughput", "eta_s",
                              "published_version", "published_alias", "notes", "error"}) {
        EXPECT_TRUE(j.contains(key)) << key;
      }
    }
  }
  EXPECT_TRUE(found) << list->body;
  auto succeeded = client.Get("/api/v1/jobs?state=succeeded");
  ASSERT_EQ(succeeded->status, 200);
  EXPECT_TRUE(Body(succeeded)["jobs"].empty());
  ExpectError(client.Get("/api/v1/jobs?state=sleeping"), 400, "bad_request");

  auto one = client.Get("/api/v1/jobs/" + id);
  ASSERT_EQ(one->status, 200) << one->body;
  EXPECT_EQ(Body(one)["job_id"], id);
  EXPECT_TRUE(Body(one)["events"].is_array());
  ExpectError(client.Get("/api/v1/jobs/job-that-does-not-exist"), 404, "not_found");

  ExpectError(client.Post("/api/v1/jobs/" + id + "/cancel", "", "application/json"), 401,
              "unauthorized");
  auto cancelled = client.Post("/api/v1/jobs/" + id + "/cancel", auth, "", "application/json");
  ASSERT_EQ(cancelled->status, 200) << cancelled->body;
  EXPECT_EQ(Body(cancelled)["state"], "cancelled");
  ExpectError(client.Post("/api/v1/jobs/" + id + "/cancel", auth, "", "application/json"), 412,
              "failed_precondition");
  auto after = client.Get("/api/v1/jobs/" + id);
  EXPECT_EQ(Body(after)["state"], "cancelled");
}

TEST_F(GatewayTest, InferenceDownRateLimitAndUnconfiguredUpstreams) {
  GatewayProcess g = StartGateway(
      "down", {absl::StrCat("--inference_target=127.0.0.1:", DeadPort()), "--rate_limit_rps=0.2",
               "--rate_limit_burst=3", "--inference_timeout_ms=2000"});
  auto client = g.Client();
  auto r = client.Post("/api/v1/predictions", Jpeg(), "image/jpeg");
  ExpectError(r, 503, "inference_unavailable");
  EXPECT_EQ(r->get_header_value("Retry-After"), "1");
  auto ready = client.Get("/readyz");
  ASSERT_TRUE(ready);
  EXPECT_EQ(ready->status, 503);
  EXPECT_TRUE(ready->has_header("Retry-After"));
  // No registry / trainer configured: 503 with a message that says so.
  auto models = client.Get("/api/v1/models");
  ExpectError(models, 503, "service_unavailable");
  EXPECT_THAT(Body(models)["message"].get<std::string>(), HasSubstr("registry"));
  ExpectError(client.Get("/api/v1/jobs"), 503, "service_unavailable");
  // The burst (3) is spent: 429 with Retry-After; /healthz is not limited.
  auto limited = client.Get("/api/v1/jobs");
  ExpectError(limited, 429, "rate_limited");
  ASSERT_TRUE(limited->has_header("Retry-After"));
  EXPECT_GE(std::stoi(limited->get_header_value("Retry-After")), 1);
  EXPECT_EQ(client.Get("/healthz")->status, 200);
  EXPECT_EQ(MetricValue(g, "skinlesion_gateway_rate_limited_total"), 1);
  EXPECT_GE(
      MetricValue(
          g,
          "skinlesion_gateway_upstream_errors_total{code=\"UNAVAILABLE\",upstream=\"inference\"}"),
      1);
}

TEST_F(GatewayTest, DeadlineRetriesExplanationCorsAndGracefulStop) {
  GatewayProcess g =
      StartGateway("fake", {absl::StrCat("--inference_target=127.0.0.1:", fake_port_),
                            "--inference_timeout_ms=1000", "--rate_limit_rps=0",
                            "--cors_origin=https://clinic.example"});
  auto client = g.Client();
  const std::string retries = "skinlesion_gateway_upstream_retries_total{upstream=\"inference\"}";

  // UNAVAILABLE once, then OK: exactly one retry, 200.
  fake_->calls = 0;
  fake_->mode = FakeInference::Mode::kFailOnceThenOk;
  EXPECT_EQ(MetricValue(g, retries), 0);
  auto r = client.Post("/api/v1/predictions", Jpeg(), "image/jpeg");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200) << r->body;
  EXPECT_EQ(fake_->calls.load(), 2);
  EXPECT_EQ(MetricValue(g, retries), 1);

  // INVALID_ARGUMENT: never retried.
  fake_->calls = 0;
  fake_->mode = FakeInference::Mode::kInvalid;
  ExpectError(client.Post("/api/v1/predictions", Jpeg(), "image/jpeg"), 400, "invalid_image");
  EXPECT_EQ(fake_->calls.load(), 1);
  EXPECT_EQ(MetricValue(g, retries), 1);

  // Slower than --inference_timeout_ms: 504.
  fake_->mode = FakeInference::Mode::kSleep;
  fake_->sleep_ms = 4000;
  ExpectError(client.Post("/api/v1/predictions", Jpeg(), "image/jpeg"), 504, "upstream_timeout");

  // The explanation is passed through and mapped.
  fake_->mode = FakeInference::Mode::kOk;
  fake_->sleep_ms = 0;
  r = client.Post("/api/v1/predictions?explain=true", Jpeg(), "image/png");
  ASSERT_EQ(r->status, 200) << r->body;
  const json e = Body(r)["explanation"];
  EXPECT_EQ(e["method"], "grad-cam");
  EXPECT_EQ(e["width"], 7);
  EXPECT_EQ(e["height"], 7);
  EXPECT_EQ(e["heat"].size(), 49u);
  EXPECT_EQ(e["covers"], "full-image");
  // CORS only because --cors_origin is given.
  EXPECT_EQ(r->get_header_value("Access-Control-Allow-Origin"), "https://clinic.example");
  auto preflight = client.Options("/api/v1/predictions");
  ASSERT_TRUE(preflight);
  EXPECT_EQ(preflight->status, 204);
  EXPECT_THAT(preflight->get_header_value("Access-Control-Allow-Headers"),
              HasSubstr("Authorization"));

  // SIGTERM while a request is in flight: it is answered, then the process exits 0.
  fake_->sleep_ms = 500;
  fake_->calls = 0;
  std::thread request([&] {
    auto c = g.Client();
    auto slow = c.Post("/api/v1/predictions", Jpeg(), "image/jpeg");
    ASSERT_TRUE(slow);
    EXPECT_EQ(slow->status, 200);
  });
  // Once the request has reached inference (it is in flight in the gateway).
  for (int i = 0; i < 500 && fake_->calls.load() == 0; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  ASSERT_EQ(fake_->calls.load(), 1);
  ASSERT_EQ(::kill(g.process->pid(), SIGTERM), 0);
  request.join();
  const int status = g.process->Wait(std::chrono::seconds(10));
  ASSERT_NE(status, -1) << Slurp(g.log);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << Slurp(g.log);
  fake_->sleep_ms = 0;
}

TEST_F(GatewayTest, BadFlagsFailAtStart) {
  for (const std::vector<std::string>& flags : std::vector<std::vector<std::string>>{
           {"--web_root=" + dir_->Join("no-such-dir"), "--inference_target=127.0.0.1:1"},
           {"--web_root=" + dir_->Join("web")},
           {"--web_root=" + dir_->Join("web"), "--inference_target=127.0.0.1:1", "--channels=0"},
           {"--web_root=" + dir_->Join("web"), "--inference_target=127.0.0.1:1",
            "--token_file=" + dir_->Join("no-token")}}) {
    const std::string log = dir_->Join("bad-flags.log");
    std::vector<std::string> args = {SKINLESION_GATEWAY_BINARY, "--port=0"};
    args.insert(args.end(), flags.begin(), flags.end());
    ChildProcess p(args, log);
    const int status = p.Wait(std::chrono::seconds(10));
    ASSERT_NE(status, -1);
    EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 1) << Slurp(log);
    EXPECT_THAT(Slurp(log), HasSubstr("skinlesion-gateway: "));
  }
}

}  // namespace
}  // namespace skinlesion::gateway
