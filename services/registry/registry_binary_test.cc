// The skinlesion-registry binary: seeds a model directory, serves it over gRPC
// (registry, health, reflection), guards SetAlias with a token, exits 0 on SIGTERM.
#include <fcntl.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <thread>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "grpcpp/grpcpp.h"
#include "grpcpp/impl/codegen/client_unary_call.h"
#include "grpcpp/impl/codegen/sync_stream.h"
#include "gtest/gtest.h"
#include "skinlesion/common/csv.h"
#include "skinlesion/common/hash.h"
#include "skinlesion/registry/client.h"
#include "skinlesion/telemetry/grpc_health.h"
#include "skinlesion/testing/testing.h"

namespace skinlesion::registry {
namespace {

using ::skinlesion::testing::IsOk;
using ::skinlesion::testing::StatusIs;
using ::skinlesion::testing::TempDir;
using ::skinlesion::testing::WriteFile;
using ::testing::HasSubstr;
using ::testing::UnorderedElementsAre;

using Process = ::skinlesion::testing::ChildProcess;

// The port the binary printed, or 0 when it did not within 20 s.
int WaitForPort(const std::string& out_path, Process& process) {
  const std::string kListening = "listening on 127.0.0.1:";
  for (int i = 0; i < 2000; ++i) {
    auto text = ReadFileToString(out_path, 1 << 20);
    const size_t at = text.ok() ? text->find(kListening) : std::string::npos;
    int port = 0;
    if (at != std::string::npos) {
      const size_t begin = at + kListening.size();
      const size_t end = text->find_first_not_of("0123456789", begin);
      if (end != std::string::npos && absl::SimpleAtoi(text->substr(begin, end - begin), &port)) {
        return port;
      }
    }
    if (process.Wait(std::chrono::milliseconds(10)) != -1) return 0;  // Exited.
  }
  return 0;
}

TEST(RegistryBinaryTest, SeedsServesAndStopsOnSigterm) {
  TempDir dir;
  const std::string model_dir = dir.Join("bundled");
  std::filesystem::create_directories(model_dir);
  WriteFile(model_dir + "/model.safetensors", std::string(3000, 'w'));
  WriteFile(model_dir + "/golden_0.jpg", "jpeg bytes");
  WriteFile(model_dir + "/manifest.json", R"({"architecture": "resnet18"})");
  WriteFile(dir.Join("token"), "tok-123\n");
  const std::string out = dir.Join("out.log");
  Process process({SKINLESION_REGISTRY_BINARY, "--root=" + dir.Join("root"), "--address=127.0.0.1",
                   "--port=0", "--seed_model_dir=" + model_dir, "--seed_model=ham10000",
                   "--seed_alias=production", "--set_alias_token_file=" + dir.Join("token"),
                   "--metrics_port=0"},
                  out);
  ASSERT_GT(process.pid(), 0);
  const int port = WaitForPort(out, process);
  ASSERT_GT(port, 0) << *ReadFileToString(out, 1 << 20);
  const std::string target = absl::StrCat("127.0.0.1:", port);
  std::shared_ptr<grpc::Channel> channel = CreateRegistryChannel(target);

  RegistryClient client(channel, {.cache_dir = dir.Join("cache")});
  auto version = client.GetVersionByAlias("ham10000", "production");
  ASSERT_TRUE(version.ok()) << version.status();
  EXPECT_EQ(version->version(), 1);
  std::vector<std::string> files;
  for (const auto& f : version->files()) files.push_back(f.path());
  EXPECT_THAT(files, UnorderedElementsAre("model.safetensors", "golden_0.jpg"));
  auto fetched = client.FetchVersion("ham10000", 1);
  ASSERT_TRUE(fetched.ok()) << fetched.status();
  EXPECT_EQ(*ReadFileToString(*fetched + "/model.safetensors", 1 << 20), std::string(3000, 'w'));

  // SetAlias needs the token from the file.
  EXPECT_THAT(client.SetAlias("ham10000", "staging", 1, "x"),
              StatusIs(absl::StatusCode::kUnauthenticated, HasSubstr("Bearer")));
  RegistryClient admin(channel, {.bearer_token = "tok-123"});
  EXPECT_THAT(admin.SetAlias("ham10000", "staging", 1, "x"), IsOk());

  // grpc.health.v1.Health/Check of the whole server: SERVING.
  {
    int serving = -1;
    const grpc::Status h =
        telemetry::CheckGrpcHealth(channel, "", absl::Seconds(5), &serving);
    ASSERT_TRUE(h.ok()) << h.error_message();
    EXPECT_EQ(serving, telemetry::kHealthServing);
  }
  // Server reflection lists the registry service.
  {
    grpc::ClientContext context;
    std::unique_ptr<grpc::ClientReaderWriter<grpc::ByteBuffer, grpc::ByteBuffer>> stream(
        grpc::internal::ClientReaderWriterFactory<grpc::ByteBuffer, grpc::ByteBuffer>::Create(
            channel.get(),
            grpc::internal::RpcMethod(
                "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
                grpc::internal::RpcMethod::BIDI_STREAMING),
            &context));
    const std::string list_services("\x3a\x00", 2);  // ServerReflectionRequest{list_services: ""}
    grpc::Slice slice(list_services);
    grpc::ByteBuffer request(&slice, 1);
    ASSERT_TRUE(stream->Write(request));
    stream->WritesDone();
    grpc::ByteBuffer response;
    ASSERT_TRUE(stream->Read(&response));
    std::vector<grpc::Slice> slices;
    ASSERT_TRUE(response.Dump(&slices).ok());
    std::string bytes;
    for (const auto& s : slices) bytes.append(reinterpret_cast<const char*>(s.begin()), s.size());
    EXPECT_THAT(bytes, HasSubstr("skinlesion.v1.RegistryService"));
    while (stream->Read(&response)) {
    }
    EXPECT_TRUE(stream->Finish().ok());
  }

  // /metrics counts every call by service, method and code (the interceptor).
  {
    const std::string log = *ReadFileToString(out, 1 << 20);
    const std::string kMetrics = "metrics on 127.0.0.1:";
    const size_t at = log.find(kMetrics);
    ASSERT_NE(at, std::string::npos) << log;
    const size_t begin = at + kMetrics.size();
    const std::string metrics_port = log.substr(begin, log.find('/', begin) - begin);
    FILE* pipe = ::popen(absl::StrCat("curl -sS http://127.0.0.1:", metrics_port, "/metrics").c_str(), "r");
    ASSERT_NE(pipe, nullptr);
    std::string text;
    char buffer[4096];
    for (size_t n; (n = std::fread(buffer, 1, sizeof(buffer), pipe)) > 0;) text.append(buffer, n);
    ASSERT_EQ(::pclose(pipe), 0) << "curl failed: " << text;
    EXPECT_THAT(text, HasSubstr("skinlesion_grpc_requests_total{code=\"UNAUTHENTICATED\","
                                "method=\"SetAlias\",service=\"skinlesion.v1.RegistryService\"} 1"));
    EXPECT_THAT(text, HasSubstr("skinlesion_grpc_requests_total{code=\"OK\",method=\"SetAlias\","
                                "service=\"skinlesion.v1.RegistryService\"} 1"));
    EXPECT_THAT(text, HasSubstr("skinlesion_grpc_request_duration_seconds_bucket"));
  }

  // A Watch stream is open while SIGTERM arrives: it ends, the process exits 0 quickly.
  std::thread watcher([&] {
    RegistryClient watching(channel, {});
    const absl::Status s =
        watching.Watch("ham10000", [](const v1::RegistryEvent&) { return true; }, {});
    EXPECT_THAT(s, StatusIs(absl::StatusCode::kUnavailable, ::testing::_));
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  const auto begin = std::chrono::steady_clock::now();
  ASSERT_EQ(::kill(process.pid(), SIGTERM), 0);
  const int status = process.Wait(std::chrono::seconds(10));
  const auto took = std::chrono::steady_clock::now() - begin;
  if (status == -1) ::kill(process.pid(), SIGKILL);  // Ends the Watch too.
  watcher.join();
  ASSERT_NE(status, -1) << "still running 10 s after SIGTERM";
  ASSERT_TRUE(WIFEXITED(status)) << status;
  EXPECT_EQ(WEXITSTATUS(status), 0) << *ReadFileToString(out, 1 << 20);
  EXPECT_LT(took, std::chrono::seconds(3)) << *ReadFileToString(out, 1 << 20);
}

TEST(RegistryBinaryTest, RestartDoesNotSeedAgainAndBadFlagsFail) {
  TempDir dir;
  const std::string model_dir = dir.Join("bundled");
  std::filesystem::create_directories(model_dir);
  WriteFile(model_dir + "/model.safetensors", "w");
  WriteFile(model_dir + "/manifest.json", "{}");
  for (int run = 0; run < 2; ++run) {
    const std::string out = dir.Join(absl::StrCat("out", run, ".log"));
    Process process(
        {SKINLESION_REGISTRY_BINARY, "--root=" + dir.Join("root"), "--address=127.0.0.1",
         "--port=0", "--seed_model_dir=" + model_dir, "--seed_model=ham10000"},
        out);
    const int port = WaitForPort(out, process);
    ASSERT_GT(port, 0) << *ReadFileToString(out, 1 << 20);
    RegistryClient client(CreateRegistryChannel(absl::StrCat("127.0.0.1:", port)), {});
    auto versions = client.ListVersions("ham10000");
    ASSERT_TRUE(versions.ok()) << versions.status();
    EXPECT_EQ(versions->size(), 1u) << "run " << run;
    ASSERT_EQ(::kill(process.pid(), SIGINT), 0);
    const int status = process.Wait(std::chrono::seconds(10));
    ASSERT_TRUE(status != -1 && WIFEXITED(status) && WEXITSTATUS(status) == 0) << status;
  }
  struct BadRun {
    std::vector<std::string> args;
    const char* message;
  };
  for (const BadRun& bad : std::vector<BadRun>{
           {{}, "--root is required"},
           {{"--root=" + dir.Join("r2"), "--seed_model=x"}, "go together"},
           {{"--root=" + dir.Join("r2"), "--port=70000"}, "invalid --port"},
           {{"--root=" + dir.Join("r2"), "--seed_model_dir=" + dir.Join("none"), "--seed_model=m"},
            "does not exist"},
           {{"--root=" + dir.Join("r2"), "--set_alias_token_file=" + dir.Join("none")},
            "--set_alias_token_file"}}) {
    std::vector<std::string> args = {SKINLESION_REGISTRY_BINARY};
    args.insert(args.end(), bad.args.begin(), bad.args.end());
    const std::string out = dir.Join("bad.log");
    Process process(args, out);
    const int status = process.Wait(std::chrono::seconds(10));
    ASSERT_NE(status, -1);
    EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 1) << status;
    EXPECT_THAT(*ReadFileToString(out, 1 << 20), HasSubstr(bad.message));
  }
}

}  // namespace
}  // namespace skinlesion::registry
