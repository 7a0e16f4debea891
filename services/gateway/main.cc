// skinlesion-gateway: REST API v1 + the website in front of skinlesion-inference
// (and the registry and trainer), over gRPC. docs/gateway.md.
//
//   skinlesion-gateway --inference_target 127.0.0.1:50051 [--port 8080]
//       [--registry_target HOST:PORT] [--trainer_target HOST:PORT] [--web_root web]
//       [--token_file F (else $SKINLESION_GATEWAY_TOKEN)]
//
// Prints "listening on HOST:PORT" on stdout once it accepts connections.
// SIGTERM / SIGINT: stop accepting, finish the requests in flight, exit 0.
#include <malloc.h>
#include <pthread.h>
#include <signal.h>

#include <cstdio>
#include <cstdlib>
#include <string>
#include <thread>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "services/gateway/gateway.h"
#include "skinlesion/common/csv.h"
#include "skinlesion/common/logging.h"

ABSL_FLAG(std::string, host, "127.0.0.1", "Address to listen on");
ABSL_FLAG(int, port, 8080, "HTTP port (0: any free port, printed on stdout)");
ABSL_FLAG(std::string, inference_target, "", "skinlesion-inference HOST:PORT (required)");
ABSL_FLAG(std::string, registry_target, "",
          "RegistryService HOST:PORT for the models routes (empty: they answer 503)");
ABSL_FLAG(std::string, trainer_target, "",
          "TrainerService HOST:PORT for the jobs routes (empty: they answer 503)");
ABSL_FLAG(std::string, web_root, "",
          "Website directory (default: the repository's web/ found from the binary or the "
          "working directory)");
ABSL_FLAG(std::string, token_file, "",
          "File holding the bearer token of PUT alias, POST jobs and cancel (default: "
          "$SKINLESION_GATEWAY_TOKEN; none: those routes are disabled)");
ABSL_FLAG(std::string, trainer_token_file, "",
          "Token sent to the trainer and the registry's SetAlias (default: the gateway token)");
ABSL_FLAG(int64_t, max_upload_bytes, 10485760, "Largest image upload (413 above)");
ABSL_FLAG(int, inference_timeout_ms, 10000, "Deadline of a prediction's inference call(s)");
ABSL_FLAG(int, upstream_timeout_ms, 10000, "Deadline of registry and trainer calls");
ABSL_FLAG(int, channels, 4, "gRPC channels to inference (round robin)");
ABSL_FLAG(int, retries, 2, "Retries of an inference call that failed with UNAVAILABLE");
ABSL_FLAG(double, rate_limit_rps, 20, "Per-client-IP request rate on /api (0: off)");
ABSL_FLAG(int, rate_limit_burst, 40, "Per-client-IP burst on /api");
ABSL_FLAG(std::string, cors_origin, "", "Access-Control-Allow-Origin value (empty: no CORS)");
ABSL_FLAG(int, threads, 16, "Connection threads kept ready (more start on demand)");
ABSL_FLAG(int, max_connections, 512, "Open connections in total (over it: 503 and close)");
ABSL_FLAG(int, max_connections_per_client, 64,
          "Open connections per client address (over it: 503 and close; 0: no cap)");
ABSL_FLAG(int, header_timeout_ms, 10000,
          "Deadline for a request's line and headers, from its first byte (408 after)");
ABSL_FLAG(int, body_timeout_ms, 60000, "Deadline for a request's body, from its headers");
ABSL_FLAG(int64_t, max_inflight_upload_bytes, 64 << 20,
          "Content-Length of all requests being read or handled at once (over it: 503)");

#ifndef SKINLESION_SOURCE_DIR
#define SKINLESION_SOURCE_DIR ""
#endif

namespace {

using namespace skinlesion;  // NOLINT

int Fail(const std::string& message) {
  std::fprintf(stderr, "skinlesion-gateway: %s\n", message.c_str());
  return 1;
}

absl::StatusOr<std::string> ReadToken(const std::string& path) {
  auto text = ReadFileToString(path, 4096);
  if (!text.ok()) return text.status();
  std::string token(absl::StripAsciiWhitespace(*text));
  if (token.empty()) return absl::InvalidArgumentError(absl::StrCat(path, " is empty"));
  return token;
}

}  // namespace

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage(
      "REST gateway and website. Usage: skinlesion-gateway --inference_target HOST:PORT "
      "[--port 8080] [--registry_target HOST:PORT] [--trainer_target HOST:PORT]");
  const std::vector<char*> rest = absl::ParseCommandLine(argc, argv);
  if (rest.size() > 1) return Fail(absl::StrCat("unexpected argument '", rest[1], "'"));

  gateway::GatewayOptions options;
  options.host = absl::GetFlag(FLAGS_host);
  options.port = absl::GetFlag(FLAGS_port);
  options.inference_target = absl::GetFlag(FLAGS_inference_target);
  options.registry_target = absl::GetFlag(FLAGS_registry_target);
  options.trainer_target = absl::GetFlag(FLAGS_trainer_target);
  options.web_root = absl::GetFlag(FLAGS_web_root);
  if (options.web_root.empty()) {
    options.web_root = gateway::FindDefaultWebRoot(SKINLESION_SOURCE_DIR);
    if (options.web_root.empty()) {
      return Fail(
          "no website directory found (a web/ beside the binary's repository, ./web); "
          "give --web_root DIR");
    }
  }
  if (const std::string f = absl::GetFlag(FLAGS_token_file); !f.empty()) {
    auto token = ReadToken(f);
    if (!token.ok()) return Fail(absl::StrCat("--token_file: ", token.status().message()));
    options.token = *token;
  } else if (const char* env = std::getenv("SKINLESION_GATEWAY_TOKEN"); env != nullptr) {
    options.token = std::string(absl::StripAsciiWhitespace(env));
  }
  options.upstream_token = options.token;
  if (const std::string f = absl::GetFlag(FLAGS_trainer_token_file); !f.empty()) {
    auto token = ReadToken(f);
    if (!token.ok()) return Fail(absl::StrCat("--trainer_token_file: ", token.status().message()));
    options.upstream_token = *token;
  }
  const int64_t max_upload = absl::GetFlag(FLAGS_max_upload_bytes);
  if (max_upload < 1) return Fail("--max_upload_bytes must be >= 1");
  options.max_upload_bytes = static_cast<size_t>(max_upload);
  options.inference_timeout = absl::Milliseconds(absl::GetFlag(FLAGS_inference_timeout_ms));
  options.upstream_timeout = absl::Milliseconds(absl::GetFlag(FLAGS_upstream_timeout_ms));
  if (options.upstream_timeout <= absl::ZeroDuration())
    return Fail("--upstream_timeout_ms must be >= 1");
  options.channels = absl::GetFlag(FLAGS_channels);
  options.retries = absl::GetFlag(FLAGS_retries);
  options.rate_limit_rps = absl::GetFlag(FLAGS_rate_limit_rps);
  options.rate_limit_burst = absl::GetFlag(FLAGS_rate_limit_burst);
  options.cors_origin = absl::GetFlag(FLAGS_cors_origin);
  options.threads = absl::GetFlag(FLAGS_threads);
  options.max_connections = absl::GetFlag(FLAGS_max_connections);
  options.max_connections_per_client = absl::GetFlag(FLAGS_max_connections_per_client);
  options.header_timeout = absl::Milliseconds(absl::GetFlag(FLAGS_header_timeout_ms));
  options.body_timeout = absl::Milliseconds(absl::GetFlag(FLAGS_body_timeout_ms));
  const int64_t inflight = absl::GetFlag(FLAGS_max_inflight_upload_bytes);
  if (inflight < 1) return Fail("--max_inflight_upload_bytes must be >= 1");
  options.max_inflight_upload_bytes = static_cast<size_t>(inflight);

  // Signals are taken by sigwait() below: block them before any thread starts.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);
  signal(SIGPIPE, SIG_IGN);  // A client that goes away mid-response is not fatal.
  // Large blocks (uploads, their gRPC copies) come from mmap and go back to the
  // system when freed, instead of glibc raising the threshold after the first free
  // and keeping a burst's peak in its heaps.
  mallopt(M_MMAP_THRESHOLD, 256 << 10);

  auto created = gateway::Gateway::Create(options);
  if (!created.ok()) return Fail(std::string(created.status().message()));
  gateway::Gateway& gw = **created;
  if (absl::Status s = gw.Bind(); !s.ok()) return Fail(std::string(s.message()));

  absl::Status serve_status;
  std::thread server([&] { serve_status = gw.Serve(); });
  std::printf("listening on %s:%d\n", options.host.c_str(), gw.port());
  std::fflush(stdout);
  SL_LOG(INFO) << "skinlesion-gateway: inference " << options.inference_target << ", registry "
               << (options.registry_target.empty() ? "(none)" : options.registry_target)
               << ", trainer "
               << (options.trainer_target.empty() ? "(none)" : options.trainer_target)
               << ", web root " << options.web_root
               << (options.token.empty() ? ", no token (changes disabled)" : ", token set");

  int signal_number = 0;
  while (sigwait(&signals, &signal_number) != 0) {
  }
  SL_LOG(INFO) << "skinlesion-gateway: " << (signal_number == SIGTERM ? "SIGTERM" : "SIGINT")
               << ", finishing the requests in flight";
  gw.Stop();
  server.join();
  if (!serve_status.ok()) return Fail(std::string(serve_status.message()));
  SL_LOG(INFO) << "skinlesion-gateway: stopped";
  return 0;
}
