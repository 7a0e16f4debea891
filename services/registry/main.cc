// skinlesion-registry: the model registry served over gRPC
// (skinlesion.v1.RegistryService, grpc.health.v1 and server reflection).
//
//   skinlesion-registry --root /var/lib/skinlesion/registry --port 50052
//       [--seed_model_dir models/bundled --seed_model ham10000 --seed_alias production]
//
// SIGTERM / SIGINT: open Watch streams end (UNAVAILABLE), in-flight calls get a
// few seconds to finish, then the process exits 0.
#include <signal.h>

#include <chrono>
#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "grpcpp/ext/proto_server_reflection_plugin.h"
#include "grpcpp/grpcpp.h"
#include "grpcpp/health_check_service_interface.h"
#include "prometheus/registry.h"
#include "skinlesion/common/csv.h"
#include "skinlesion/common/logging.h"
#include "skinlesion/registry/registry.h"
#include "skinlesion/registry/seed.h"
#include "skinlesion/registry/service.h"
#include "skinlesion/telemetry/grpc_metrics.h"
#include "skinlesion/telemetry/metrics_http.h"

ABSL_FLAG(std::string, root, "", "Registry root directory (created if missing); required");
ABSL_FLAG(std::string, address, "0.0.0.0", "Address to listen on");
ABSL_FLAG(int, port, 50052, "Port to listen on (0: any free port, printed on stdout)");
ABSL_FLAG(int, poll_interval_ms, 200, "How often Watch streams look for changes");
ABSL_FLAG(int, shutdown_grace_s, 3, "Seconds in-flight calls get to finish on SIGTERM");
ABSL_FLAG(std::string, set_alias_token_file, "",
          "If set, SetAlias needs the metadata 'authorization: Bearer <token>' with the "
          "token in this file (surrounding whitespace ignored)");
ABSL_FLAG(std::string, seed_model_dir, "",
          "A model directory (model.safetensors, manifest.json, golden_*.jpg, ...) published "
          "as the first version of --seed_model when that model has no version yet");
ABSL_FLAG(std::string, seed_model, "", "Model name for --seed_model_dir");
ABSL_FLAG(int, metrics_port, -1,
          "Prometheus /metrics port (-1: off; 0: a free port, printed on stdout)");
ABSL_FLAG(std::string, seed_alias, "production", "Alias pointed at the seeded version");

namespace {

int Fail(const std::string& message) {
  std::fprintf(stderr, "skinlesion-registry: %s\n", message.c_str());
  return 1;
}

}  // namespace

int main(int argc, char** argv) {
  using namespace skinlesion::registry;
  absl::SetProgramUsageMessage(
      "Serves a model registry over gRPC. Usage: skinlesion-registry --root DIR");
  const std::vector<char*> rest = absl::ParseCommandLine(argc, argv);
  if (rest.size() > 1) return Fail(absl::StrCat("unexpected argument '", rest[1], "'"));
  const std::string root = absl::GetFlag(FLAGS_root);
  if (root.empty()) return Fail("--root is required");
  const int port = absl::GetFlag(FLAGS_port);
  if (port < 0 || port > 65535) return Fail(absl::StrCat("invalid --port ", port));
  if (absl::GetFlag(FLAGS_poll_interval_ms) < 1) return Fail("--poll_interval_ms must be >= 1");
  const std::string seed_dir = absl::GetFlag(FLAGS_seed_model_dir);
  const std::string seed_model = absl::GetFlag(FLAGS_seed_model);
  if (seed_dir.empty() != seed_model.empty()) {
    return Fail("--seed_model_dir and --seed_model go together");
  }

  // Signals are taken by sigwait() below; block them before gRPC starts threads.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);

  auto registry = Registry::Create({.root = root});
  if (!registry.ok()) return Fail(registry.status().ToString());
  if (!seed_dir.empty()) {
    auto seeded =
        SeedFromDirectory(**registry, seed_dir, seed_model, absl::GetFlag(FLAGS_seed_alias));
    if (!seeded.ok()) return Fail(absl::StrCat("seeding failed: ", seeded.status().ToString()));
  }

  RegistryServiceImpl::Options options;
  options.poll_interval = absl::Milliseconds(absl::GetFlag(FLAGS_poll_interval_ms));
  if (const std::string token_file = absl::GetFlag(FLAGS_set_alias_token_file);
      !token_file.empty()) {
    auto token = skinlesion::ReadFileToString(token_file, 4096);
    if (!token.ok())
      return Fail(absl::StrCat("--set_alias_token_file: ", token.status().ToString()));
    std::string t(absl::StripAsciiWhitespace(*token));
    if (t.empty()) return Fail(absl::StrCat("--set_alias_token_file ", token_file, " is empty"));
    options.set_alias_authorizer = BearerTokenAuthorizer(std::move(t));
  }
  RegistryServiceImpl service(registry->get(), options);

  auto metrics = std::make_shared<prometheus::Registry>();
  std::unique_ptr<skinlesion::telemetry::MetricsHttpServer> metrics_server;
  if (const int metrics_port = absl::GetFlag(FLAGS_metrics_port); metrics_port >= 0) {
    auto started = skinlesion::telemetry::MetricsHttpServer::Start(absl::GetFlag(FLAGS_address),
                                                                   metrics_port, metrics);
    if (!started.ok()) return Fail(started.status().ToString());
    metrics_server = std::move(*started);
    std::printf("skinlesion-registry metrics on %s:%d/metrics\n",
                absl::GetFlag(FLAGS_address).c_str(), metrics_server->port());
  }

  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  grpc::ServerBuilder builder;
  int selected_port = 0;
  const std::string address = absl::StrCat(absl::GetFlag(FLAGS_address), ":", port);
  builder.AddListeningPort(address, grpc::InsecureServerCredentials(), &selected_port);
  builder.RegisterService(&service);
  std::vector<std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface>> interceptors;
  interceptors.push_back(skinlesion::telemetry::MakeGrpcMetricsInterceptorFactory(*metrics));
  builder.experimental().SetInterceptorCreators(std::move(interceptors));
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  if (server == nullptr || selected_port == 0)
    return Fail(absl::StrCat("cannot listen on ", address));
  server->GetHealthCheckService()->SetServingStatus(true);
  std::printf("skinlesion-registry listening on %s:%d (root %s)\n",
              absl::GetFlag(FLAGS_address).c_str(), selected_port, (*registry)->root().c_str());
  std::fflush(stdout);

  int signal_number = 0;
  while (sigwait(&signals, &signal_number) != 0) {
  }
  SL_LOG(INFO) << "skinlesion-registry: signal " << signal_number << ", shutting down";
  server->GetHealthCheckService()->SetServingStatus(false);
  service.Shutdown();
  // Calls in flight get the grace period; grpc's own Shutdown(deadline) would also
  // wait that long for idle client connections, so after them it gets only enough
  // time to flush the last responses.
  if (!service.WaitUntilIdle(absl::Now() + absl::Seconds(absl::GetFlag(FLAGS_shutdown_grace_s)))) {
    SL_LOG(WARNING) << "skinlesion-registry: cancelling the calls still running";
  }
  server->Shutdown(std::chrono::system_clock::now() + std::chrono::milliseconds(250));
  server->Wait();
  SL_LOG(INFO) << "skinlesion-registry: stopped";
  return 0;
}
