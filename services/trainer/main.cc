// skinlesion-trainer: runs training jobs from a durable queue and serves them over
// gRPC (skinlesion.v1.TrainerService), together with the model registry it
// publishes to (skinlesion.v1.RegistryService), grpc.health.v1 and reflection.
// See docs/trainer.md.
//
//   skinlesion-trainer --state_dir /var/lib/skinlesion/trainer
//       --registry_root /var/lib/skinlesion/registry [--port 50053]
//       [--cli /usr/bin/skinlesion] [--max_concurrent_jobs 1] [--metrics_port 9103]
//       [--token_file F] [--tls_cert F --tls_key F]
//
// SIGTERM / SIGINT: stop accepting calls, stop the running jobs' children and put
// those jobs back to queued (they resume from their checkpoint on the next start),
// exit 0. kill -9: the children die with the trainer (PR_SET_PDEATHSIG); the next
// start re-queues the running jobs with --resume.
#include <fcntl.h>
#include <signal.h>
#include <sys/file.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
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
#include "skinlesion/common/status.h"
#include "skinlesion/jobs/manager.h"
#include "skinlesion/jobs/metrics.h"
#include "skinlesion/jobs/service.h"
#include "skinlesion/registry/registry.h"
#include "skinlesion/registry/service.h"
#include "skinlesion/telemetry/grpc_metrics.h"
#include "skinlesion/telemetry/metrics_http.h"

ABSL_FLAG(std::string, state_dir, "",
          "Directory of the job database (jobs.db) and the run directories (runs/<job id>); "
          "required");
ABSL_FLAG(std::string, registry_root, "", "Model registry root that jobs publish to; required");
ABSL_FLAG(std::string, address, "0.0.0.0", "Address to listen on");
ABSL_FLAG(int, port, 50053, "Port to listen on (0: any free port, printed on stdout)");
ABSL_FLAG(std::string, cli, "",
          "The skinlesion CLI binary the jobs run (default: $SKINLESION_CLI, else 'skinlesion' "
          "next to this binary)");
ABSL_FLAG(int, max_concurrent_jobs, 1, "Jobs running at once (devices available; 1 on CPU)");
ABSL_FLAG(std::string, device, "auto",
          "--device of the training processes: auto, cpu, cuda, cuda:N");
ABSL_FLAG(int, kill_grace_s, 10, "Seconds between SIGTERM and SIGKILL when stopping a job");
ABSL_FLAG(int, metrics_port, -1, "Prometheus /metrics port (-1: off)");
ABSL_FLAG(std::string, token_file, "",
          "File holding the bearer token that SubmitJob, CancelJob and the registry's "
          "SetAlias require (default: $SKINLESION_TRAINER_TOKEN; none: no auth)");
ABSL_FLAG(std::string, tls_cert, "", "PEM certificate chain: serve TLS (with --tls_key)");
ABSL_FLAG(std::string, tls_key, "", "PEM private key for --tls_cert");
ABSL_FLAG(int, shutdown_grace_s, 3, "Seconds in-flight calls get to finish on SIGTERM");

namespace {

using namespace skinlesion;  // NOLINT

int Fail(const std::string& message) {
  std::fprintf(stderr, "skinlesion-trainer: %s\n", message.c_str());
  return 1;
}

std::string DefaultCli() {
  if (const char* env = std::getenv("SKINLESION_CLI"); env != nullptr && *env != '\0') return env;
  std::error_code ec;
  const auto self = std::filesystem::read_symlink("/proc/self/exe", ec);
  return ec ? "skinlesion" : (self.parent_path() / "skinlesion").string();
}

absl::StatusOr<std::string> ReadSecret(const std::string& path, const char* flag) {
  auto text = ReadFileToString(path, 1 << 20);
  if (!text.ok()) return Annotate(text.status(), "--", flag);
  return std::string(absl::StripAsciiWhitespace(*text));
}

absl::Status Run(const sigset_t& signals) {
  const std::string state_dir = absl::GetFlag(FLAGS_state_dir);
  const std::string registry_root = absl::GetFlag(FLAGS_registry_root);
  if (state_dir.empty()) return absl::InvalidArgumentError("--state_dir is required");
  if (registry_root.empty()) return absl::InvalidArgumentError("--registry_root is required");
  const int port = absl::GetFlag(FLAGS_port);
  if (port < 0 || port > 65535)
    return absl::InvalidArgumentError(absl::StrCat("invalid --port ", port));
  const int metrics_port = absl::GetFlag(FLAGS_metrics_port);
  if (metrics_port < -1 || metrics_port > 65535) {
    return absl::InvalidArgumentError(absl::StrCat("invalid --metrics_port ", metrics_port));
  }
  if (absl::GetFlag(FLAGS_max_concurrent_jobs) < 1) {
    return absl::InvalidArgumentError("--max_concurrent_jobs must be >= 1");
  }
  if (absl::GetFlag(FLAGS_kill_grace_s) < 0)
    return absl::InvalidArgumentError("--kill_grace_s must be >= 0");
  const std::string tls_cert = absl::GetFlag(FLAGS_tls_cert);
  const std::string tls_key = absl::GetFlag(FLAGS_tls_key);
  if (tls_cert.empty() != tls_key.empty()) {
    return absl::InvalidArgumentError("--tls_cert and --tls_key go together");
  }

  std::string token;
  if (const std::string file = absl::GetFlag(FLAGS_token_file); !file.empty()) {
    SL_ASSIGN_OR_RETURN(token, ReadSecret(file, "token_file"));
    if (token.empty())
      return absl::InvalidArgumentError(absl::StrCat("--token_file ", file, " is empty"));
  } else if (const char* env = std::getenv("SKINLESION_TRAINER_TOKEN"); env != nullptr) {
    token = std::string(absl::StripAsciiWhitespace(env));
  }

  std::error_code ec;
  std::filesystem::create_directories(state_dir, ec);
  if (ec) return absl::InternalError(absl::StrCat("cannot create ", state_dir, ": ", ec.message()));
  // One trainer per state directory: two would run the same queued jobs. The lock
  // goes with the process, kill -9 included.
  const std::string lock_path = state_dir + "/trainer.lock";
  const int lock_fd = ::open(lock_path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (lock_fd < 0) return absl::InternalError(absl::StrCat("cannot open ", lock_path));
  if (::flock(lock_fd, LOCK_EX | LOCK_NB) != 0) {
    return absl::FailedPreconditionError(
        absl::StrCat("another skinlesion-trainer is using --state_dir ", state_dir));
  }
  SL_ASSIGN_OR_RETURN(std::unique_ptr<registry::Registry> model_registry,
                      registry::Registry::Create({.root = registry_root}));

  auto prometheus_registry = std::make_shared<prometheus::Registry>();
  jobs::JobMetrics metrics(*prometheus_registry);
  // Not prometheus::Exposer: civetweb's small thread stacks cannot hold LibTorch's
  // static TLS (see skinlesion/telemetry/metrics_http.h).
  std::unique_ptr<telemetry::MetricsHttpServer> metrics_server;
  if (metrics_port >= 0) {
    SL_ASSIGN_OR_RETURN(metrics_server,
                        telemetry::MetricsHttpServer::Start(absl::GetFlag(FLAGS_address),
                                                            metrics_port, prometheus_registry));
    std::printf("skinlesion-trainer metrics on %s:%d/metrics\n",
                absl::GetFlag(FLAGS_address).c_str(), metrics_server->port());
  }

  jobs::JobManager::Options options;
  options.db_path = state_dir + "/jobs.db";
  options.runs_dir = state_dir + "/runs";
  options.cli_path = absl::GetFlag(FLAGS_cli).empty() ? DefaultCli() : absl::GetFlag(FLAGS_cli);
  options.device = absl::GetFlag(FLAGS_device);
  options.max_concurrent_jobs = absl::GetFlag(FLAGS_max_concurrent_jobs);
  options.registry = model_registry.get();
  options.kill_grace = absl::Seconds(absl::GetFlag(FLAGS_kill_grace_s));
  options.metrics = &metrics;
  SL_ASSIGN_OR_RETURN(std::unique_ptr<jobs::JobManager> manager, jobs::JobManager::Create(options));

  const jobs::CallAuthorizer authorizer = jobs::RequireBearerToken(token);
  jobs::TrainerServiceImpl trainer_service(manager.get(), {.mutate_authorizer = authorizer});
  registry::RegistryServiceImpl::Options registry_options;
  if (!token.empty()) registry_options.set_alias_authorizer = authorizer;
  registry::RegistryServiceImpl registry_service(model_registry.get(), registry_options);

  std::shared_ptr<grpc::ServerCredentials> credentials = grpc::InsecureServerCredentials();
  if (!tls_cert.empty()) {
    SL_ASSIGN_OR_RETURN(const std::string cert, ReadFileToString(tls_cert, 1 << 20));
    SL_ASSIGN_OR_RETURN(const std::string key, ReadFileToString(tls_key, 1 << 20));
    grpc::SslServerCredentialsOptions ssl;
    ssl.pem_key_cert_pairs.push_back({key, cert});
    credentials = grpc::SslServerCredentials(ssl);
  }
  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  grpc::ServerBuilder builder;
  int selected_port = 0;
  const std::string address = absl::StrCat(absl::GetFlag(FLAGS_address), ":", port);
  builder.AddListeningPort(address, credentials, &selected_port);
  builder.RegisterService(&trainer_service);
  builder.RegisterService(&registry_service);
  std::vector<std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface>> interceptors;
  interceptors.push_back(telemetry::MakeGrpcMetricsInterceptorFactory(*prometheus_registry));
  builder.experimental().SetInterceptorCreators(std::move(interceptors));
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  if (server == nullptr || selected_port == 0) {
    return absl::UnavailableError(absl::StrCat("cannot listen on ", address));
  }
  server->GetHealthCheckService()->SetServingStatus(true);
  manager->Start();
  std::printf("skinlesion-trainer listening on %s:%d (%s, state %s, registry %s, cli %s%s)\n",
              absl::GetFlag(FLAGS_address).c_str(), selected_port,
              tls_cert.empty() ? "plaintext" : "TLS", state_dir.c_str(), registry_root.c_str(),
              options.cli_path.c_str(), token.empty() ? "" : ", token required");
  std::fflush(stdout);

  int signal_number = 0;
  while (sigwait(&signals, &signal_number) != 0) {
  }
  SL_LOG(INFO) << "skinlesion-trainer: signal " << signal_number << ", shutting down";
  server->GetHealthCheckService()->SetServingStatus(false);
  registry_service.Shutdown();
  manager->Shutdown();  // Children stopped, running jobs back to queued; watchers end.
  server->Shutdown(std::chrono::system_clock::now() +
                   std::chrono::seconds(absl::GetFlag(FLAGS_shutdown_grace_s)));
  server->Wait();
  SL_LOG(INFO) << "skinlesion-trainer: stopped";
  return absl::OkStatus();
}

}  // namespace

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage(
      "Runs training jobs and serves them over gRPC. Usage: skinlesion-trainer --state_dir DIR "
      "--registry_root DIR [--port 50053]");
  const std::vector<char*> rest = absl::ParseCommandLine(argc, argv);
  if (rest.size() > 1) return Fail(absl::StrCat("unexpected argument '", rest[1], "'"));
  // Signals are taken by sigwait(); block them before any thread starts.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);
  const absl::Status status = Run(signals);
  if (!status.ok()) return Fail(std::string(status.message()));
  return 0;
}
