// skinlesion-inference: batched gRPC predictions with hot reload.
//
//   skinlesion-inference --registry /var/lib/skinlesion/registry --model ham10000
//   skinlesion-inference --registry_target registry:50052 --model ham10000 --alias production
//   skinlesion-inference --model_dir models/bundled --model ham10000
//
// Serves skinlesion.v1.ClassificationService and the KServe v2 GRPCInferenceService
// on --port, grpc.health.v1 and reflection beside them, Prometheus text on
// http://HOST:--metrics_port/metrics. SIGTERM / SIGINT: health NOT_SERVING, stop
// accepting, drain for up to --drain_timeout_s, exit 0. docs/inference.md.
#include <pthread.h>
#include <signal.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "prometheus/registry.h"
#include "skinlesion/common/allocator.h"
#include "skinlesion/common/cpu_features.h"
#include "skinlesion/common/logging.h"
#include "skinlesion/common/precision.h"
#include "skinlesion/common/status.h"
#include "skinlesion/inference/inference_server.h"
#include "skinlesion/serving/remote_source.h"
#include "skinlesion/serving/serving.h"
#include "skinlesion/serving/sources.h"
#include "skinlesion/serving/telemetry.h"
#include "skinlesion/serving/torch_instance.h"
#include "skinlesion/telemetry/metrics_http.h"

ABSL_FLAG(std::string, host, "0.0.0.0", "Address the gRPC and metrics servers listen on");
ABSL_FLAG(int, port, 50051, "gRPC port");
ABSL_FLAG(int, metrics_port, 9091, "Prometheus /metrics port (-1: no metrics endpoint)");
ABSL_FLAG(std::string, registry, "", "Local model registry directory to serve from");
ABSL_FLAG(std::string, registry_target, "",
          "Remote RegistryService HOST:PORT to serve from (versions cached in --cache_dir; "
          "bearer token from $SKINLESION_REGISTRY_TOKEN if set)");
ABSL_FLAG(std::string, cache_dir, "/tmp/skinlesion-inference-cache",
          "Where versions fetched from --registry_target are kept (verified)");
ABSL_FLAG(std::string, model_dir, "",
          "Serve one plain model directory (model.safetensors + manifest.json) as version 1");
ABSL_FLAG(std::string, model, "ham10000", "Served model name (the registry model)");
ABSL_FLAG(std::string, alias, "production",
          "Registry alias followed (hot reload when it moves); a number pins that version");
ABSL_FLAG(int, max_batch_size, 8, "Largest batch the batcher forms");
ABSL_FLAG(int, max_queue_delay_ms, 5, "How long the oldest request may wait for a fuller batch");
ABSL_FLAG(int, max_queue, 256, "Requests waiting per model beyond which RESOURCE_EXHAUSTED");
ABSL_FLAG(int, instances, 1, "Threads running batches concurrently");
ABSL_FLAG(bool, decode_in_worker, true,
          "Decode images in the batch worker before each forward pass (true) or on the "
          "request threads before queueing (false; better with cores to spare)");
ABSL_FLAG(int, max_concurrent_explanations, 1,
          "Explanation heatmaps (explain=true) computed at once per model; others wait "
          "within their deadline");
ABSL_FLAG(int, decode_budget_factor, 256,
          "Decoded pixels one image may cost, as a multiple of the model's input (size^2), "
          "after large JPEGs are decoded at reduced scale; over it: INVALID_ARGUMENT from the "
          "header alone (0: no budget beyond the 50 Mpx limit)");
ABSL_FLAG(int64_t, min_decode_budget_pixels, 16'000'000,
          "The decode budget is never below this many pixels");
ABSL_FLAG(int64_t, heavy_decode_pixels, 2'000'000,
          "Images decoding to more pixels than this (after JPEG reduction), claiming 8x more in "
          "their header, or over --heavy_decode_bytes are decoded on the request thread under a "
          "slot (--max_concurrent_heavy_decodes), never by the batch worker");
ABSL_FLAG(int64_t, heavy_decode_bytes, 4 << 20, "See --heavy_decode_pixels");
ABSL_FLAG(int, max_concurrent_heavy_decodes, 1, "Heavy image decodes at once");
ABSL_FLAG(int, max_waiting_heavy_decodes, 4,
          "Heavy image decodes waiting for a slot beyond which RESOURCE_EXHAUSTED");
ABSL_FLAG(int, max_heavy_decodes_per_client, 1,
          "Heavy image decodes one client (the gateway's x-skinlesion-client, else the gRPC "
          "peer) may have running or waiting; beyond: RESOURCE_EXHAUSTED");
ABSL_FLAG(int, threads, 0, "LibTorch intra-op threads (0: LibTorch's default)");
ABSL_FLAG(int, skip_delay_after_lone_arrivals, 3,
          "A request arriving to an idle batcher after this many such arrivals waits a tenth of "
          "--max_queue_delay_ms for company instead of all of it (0: always the full delay)");
ABSL_FLAG(int, drain_timeout_s, 10, "On SIGTERM, how long calls in flight may take to finish");
ABSL_FLAG(std::string, device, "cpu", "LibTorch device: cpu, cuda, cuda:N");
ABSL_FLAG(std::string, precision, "auto",
          "Numerics of the served models: auto (bf16 on CUDA or a CPU with native bf16, else "
          "fp32; a manifest's \"precision\" pin wins), fp32, bf16 (override any pin)");
ABSL_FLAG(int, max_message_mb, 64, "Largest gRPC request / response in MiB");
ABSL_FLAG(int, poll_interval_s, 2, "How often the alias is re-resolved (hot reload)");

namespace skinlesion {
namespace {

#ifndef SKINLESION_VERSION
#define SKINLESION_VERSION "0.0.0"
#endif

absl::Status CheckFlags() {
  const int sources = !absl::GetFlag(FLAGS_registry).empty() +
                      !absl::GetFlag(FLAGS_registry_target).empty() +
                      !absl::GetFlag(FLAGS_model_dir).empty();
  if (sources != 1) {
    return absl::InvalidArgumentError(
        "give exactly one of --registry DIR, --registry_target HOST:PORT, --model_dir DIR");
  }
  if (absl::GetFlag(FLAGS_model).empty()) return absl::InvalidArgumentError("--model is empty");
  auto positive = [](const char* name, int value) -> absl::Status {
    if (value >= 1) return absl::OkStatus();
    return absl::InvalidArgumentError(absl::StrCat("--", name, " must be >= 1, got ", value));
  };
  SL_RETURN_IF_ERROR(positive("max_batch_size", absl::GetFlag(FLAGS_max_batch_size)));
  SL_RETURN_IF_ERROR(positive("max_queue", absl::GetFlag(FLAGS_max_queue)));
  SL_RETURN_IF_ERROR(positive("instances", absl::GetFlag(FLAGS_instances)));
  SL_RETURN_IF_ERROR(
      positive("max_concurrent_explanations", absl::GetFlag(FLAGS_max_concurrent_explanations)));
  SL_RETURN_IF_ERROR(positive("max_message_mb", absl::GetFlag(FLAGS_max_message_mb)));
  SL_RETURN_IF_ERROR(positive("poll_interval_s", absl::GetFlag(FLAGS_poll_interval_s)));
  if (absl::GetFlag(FLAGS_max_message_mb) > 1024) {
    return absl::InvalidArgumentError("--max_message_mb must be <= 1024");
  }
  for (const auto& [name, value] :
       {std::pair<const char*, int>{"max_queue_delay_ms", absl::GetFlag(FLAGS_max_queue_delay_ms)},
        {"threads", absl::GetFlag(FLAGS_threads)},
        {"drain_timeout_s", absl::GetFlag(FLAGS_drain_timeout_s)}}) {
    if (value < 0) {
      return absl::InvalidArgumentError(absl::StrCat("--", name, " must be >= 0, got ", value));
    }
  }
  const int port = absl::GetFlag(FLAGS_port), metrics_port = absl::GetFlag(FLAGS_metrics_port);
  if (port < 0 || port > 65535) {
    return absl::InvalidArgumentError(absl::StrCat("--port must be in 0..65535, got ", port));
  }
  if (metrics_port < -1 || metrics_port > 65535) {
    return absl::InvalidArgumentError(
        absl::StrCat("--metrics_port must be in 0..65535 (or -1: off), got ", metrics_port));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<serving::ModelSource>> MakeSource() {
  if (!absl::GetFlag(FLAGS_registry).empty()) {
    SL_ASSIGN_OR_RETURN(auto source,
                        serving::LocalRegistrySource::Create(absl::GetFlag(FLAGS_registry)));
    return std::unique_ptr<serving::ModelSource>(std::move(source));
  }
  if (!absl::GetFlag(FLAGS_registry_target).empty()) {
    registry::RegistryClientOptions options;
    options.cache_dir = absl::GetFlag(FLAGS_cache_dir);
    if (const char* token = std::getenv("SKINLESION_REGISTRY_TOKEN"); token != nullptr) {
      options.bearer_token = token;
    }
    SL_ASSIGN_OR_RETURN(auto source, serving::RemoteRegistrySource::Create(
                                         absl::GetFlag(FLAGS_registry_target), options));
    return std::unique_ptr<serving::ModelSource>(std::move(source));
  }
  SL_ASSIGN_OR_RETURN(auto source, serving::DirectorySource::Create(absl::GetFlag(FLAGS_model_dir),
                                                                    absl::GetFlag(FLAGS_model)));
  return std::unique_ptr<serving::ModelSource>(std::move(source));
}

absl::Status Run(const sigset_t& signals) {
  SL_RETURN_IF_ERROR(CheckFlags());
  SL_ASSIGN_OR_RETURN(const PrecisionChoice precision,
                      ParsePrecisionChoice(absl::GetFlag(FLAGS_precision)));
  {
    const CpuFeatures& cpu = CpuFeaturesForThisProcess();
    SL_LOG(INFO) << "CPU " << cpu.model_name << ", flags: " << cpu.FlagList() << "; --precision "
                 << PrecisionChoiceName(precision);
    SL_LOG(INFO) << "memory: " << TuneAllocatorForTensors().description;
  }
  SL_ASSIGN_OR_RETURN(std::unique_ptr<serving::ModelSource> source, MakeSource());

  auto registry = std::make_shared<prometheus::Registry>();
  serving::ServingMetrics metrics(*registry);
  std::unique_ptr<telemetry::MetricsHttpServer> metrics_server;
  const std::string host = absl::GetFlag(FLAGS_host);
  if (absl::GetFlag(FLAGS_metrics_port) >= 0) {
    SL_ASSIGN_OR_RETURN(metrics_server, telemetry::MetricsHttpServer::Start(
                                            host, absl::GetFlag(FLAGS_metrics_port), registry));
    SL_LOG(INFO) << "metrics on http://" << host << ":" << metrics_server->port() << "/metrics";
  }

  serving::ServingOptions options;
  options.models = {{.name = absl::GetFlag(FLAGS_model), .alias = absl::GetFlag(FLAGS_alias)}};
  options.batching.max_batch_size = absl::GetFlag(FLAGS_max_batch_size);
  options.batching.max_queue_delay = absl::Milliseconds(absl::GetFlag(FLAGS_max_queue_delay_ms));
  options.batching.max_queue_size = absl::GetFlag(FLAGS_max_queue);
  options.batching.instances = absl::GetFlag(FLAGS_instances);
  options.batching.decode_in_worker = absl::GetFlag(FLAGS_decode_in_worker);
  options.batching.skip_delay_after_lone_arrivals =
      absl::GetFlag(FLAGS_skip_delay_after_lone_arrivals);
  options.max_concurrent_explanations = absl::GetFlag(FLAGS_max_concurrent_explanations);
  options.decode_budget_factor = absl::GetFlag(FLAGS_decode_budget_factor);
  options.min_decode_budget_pixels = absl::GetFlag(FLAGS_min_decode_budget_pixels);
  options.heavy_decode_pixels = absl::GetFlag(FLAGS_heavy_decode_pixels);
  options.heavy_decode_bytes = absl::GetFlag(FLAGS_heavy_decode_bytes);
  options.max_concurrent_heavy_decodes = absl::GetFlag(FLAGS_max_concurrent_heavy_decodes);
  options.max_waiting_heavy_decodes = absl::GetFlag(FLAGS_max_waiting_heavy_decodes);
  options.max_heavy_decodes_per_client = absl::GetFlag(FLAGS_max_heavy_decodes_per_client);
  options.poll_interval = absl::Seconds(absl::GetFlag(FLAGS_poll_interval_s));
  SL_ASSIGN_OR_RETURN(std::unique_ptr<serving::ServingCore> core,
                      serving::ServingCore::Create(
                          options, std::move(source),
                          serving::MakeTorchLoader({.device = absl::GetFlag(FLAGS_device),
                                                    .threads = absl::GetFlag(FLAGS_threads),
                                                    .precision = precision}),
                          &metrics));

  inference::InferenceServerOptions server_options;
  server_options.listen_address = absl::StrCat(host, ":", absl::GetFlag(FLAGS_port));
  server_options.server_version = SKINLESION_VERSION;
  server_options.max_message_bytes = absl::GetFlag(FLAGS_max_message_mb) << 20;
  absl::StatusOr<std::unique_ptr<inference::InferenceServer>> server =
      inference::InferenceServer::Start(server_options, core.get(), registry.get());
  if (!server.ok()) {
    core->Shutdown(absl::ZeroDuration());
    return server.status();
  }
  // On stdout like the other services (port 0 picks a free one): what scripts and
  // tests wait for.
  std::printf("skinlesion-inference listening on %s:%d\n", host.c_str(), (*server)->port());
  if (metrics_server != nullptr) {
    std::printf("skinlesion-inference metrics on %s:%d/metrics\n", host.c_str(),
                metrics_server->port());
  }
  std::fflush(stdout);

  // The signals are blocked in every thread (main() did it before any thread
  // started); this thread takes them synchronously.
  int signal_number = 0;
  while (sigwait(&signals, &signal_number) != 0) {
  }
  SL_LOG(INFO) << "received " << (signal_number == SIGTERM ? "SIGTERM" : "SIGINT")
               << ": draining for up to " << absl::GetFlag(FLAGS_drain_timeout_s) << " s";
  (*server)->Shutdown(absl::Seconds(absl::GetFlag(FLAGS_drain_timeout_s)));
  server->reset();
  core.reset();
  SL_LOG(INFO) << "stopped";
  return absl::OkStatus();
}

}  // namespace
}  // namespace skinlesion

int main(int argc, char** argv) {
  // libgomp reads its wait policy when it loads; an idle server's OpenMP workers
  // would otherwise spin and steal the CPU from everything else on the machine.
  if (std::getenv("OMP_WAIT_POLICY") == nullptr) {
    setenv("OMP_WAIT_POLICY", "PASSIVE", 1);
    execv("/proc/self/exe", argv);  // Only returns on failure: carry on as is.
  }
  skinlesion::TuneAllocatorForTensors();  // Before any tensor exists.
  absl::SetProgramUsageMessage(
      "skinlesion-inference (--registry DIR | --registry_target HOST:PORT | --model_dir DIR) "
      "[--model NAME] [--port 50051] [--metrics_port 9091] ...");
  const std::vector<char*> positional = absl::ParseCommandLine(argc, argv);
  if (positional.size() > 1) {
    std::fprintf(stderr, "skinlesion-inference: unexpected argument '%s'\n", positional[1]);
    return 2;
  }
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);  // Before any thread exists.

  const absl::Status status = skinlesion::Run(signals);
  if (!status.ok()) {
    std::fprintf(stderr, "skinlesion-inference: %s\n", status.ToString().c_str());
    return 1;
  }
  return 0;
}
