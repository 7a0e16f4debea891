// Load generator for `skinlesion-inference`, against the raw in-process forward of
// the same model measured in the same run.
//
// For each architecture: writes a random-weight model directory (CreateModel +
// SaveCheckpoint), starts the server on it (a child process, --model_dir), waits
// until it answers, then for each concurrency runs a closed loop of Classify calls
// (each client sends the next request when the previous one returns) for
// --duration_s after --warmup_s, with a real JPEG fixture. It records throughput,
// latency percentiles and the batch sizes the server's batcher formed. Then it
// stops the server (SIGTERM; its exit code is checked) and times, in this process,
// the model's forward pass alone at batch 1 and at each median batch size the
// batcher formed (the raw ceiling: no decoding, no RPC, no queue), before and
// after the server phase so that drifting machine load hits both.
//
//   inference_load_bench [--server build/services/inference/skinlesion-inference]
//       [--archs resnet50,vit_b_16] [--size 224] [--concurrency 1,8] [--duration_s 10]
//       [--warmup_s 2] [--max_batch_size 8] [--max_queue_delay_ms 5] [--threads 2]
//       [--image tests/fixtures/ham10000/images/ISIC_0024698.jpg]
//
// Each architecture runs once per --precisions entry (server --precision; the raw
// forward in the same numerics, skinlesion/models/numerics.h). Before the rows the
// run measures this machine's fp32 and bf16 GEMM peak (bench/gemm_peak.h).
//
// Prints a markdown table: precision, img/s, p50/p95/p99 latency (ms), median batch,
// raw forward img/s at that batch, server / raw, % of the GEMM peak of the
// precision, and notes: at concurrency 1 the p50 against the raw single-image
// forward, and each precision's served img/s over the first precision's (e.g. bf16
// server / fp32 server). Run from the repository root.
//
//   inference_load_bench --target HOST:PORT [--concurrency 1,8] [--duration_s 10]
//
// only runs the closed loop against a server that is already running and prints one
// "RESULT concurrency=... rps=... p50_ms=..." line per concurrency
// (bench/gateway_bench.sh).
#include <grpcpp/grpcpp.h>
#include <netinet/in.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <torch/torch.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <map>
#include <string>
#include <thread>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "bench/gemm_peak.h"
#include "skinlesion/common/allocator.h"
#include "skinlesion/common/csv.h"
#include "skinlesion/common/precision.h"
#include "skinlesion/models/model_zoo.h"
#include "skinlesion/models/numerics.h"
#include "skinlesion/models/state_dict.h"
#include "skinlesion/v1/classification.grpc.pb.h"

ABSL_FLAG(std::string, server, "build/services/inference/skinlesion-inference", "Server binary");
ABSL_FLAG(std::string, archs, "resnet50,vit_b_16", "Architectures");
ABSL_FLAG(int, size, 224, "Input size");
ABSL_FLAG(std::string, concurrency, "1,8", "Closed-loop client counts");
ABSL_FLAG(double, duration_s, 10, "Measured seconds per concurrency");
ABSL_FLAG(double, warmup_s, 2, "Unmeasured seconds before each measurement");
ABSL_FLAG(int, max_batch_size, 8, "Server --max_batch_size");
ABSL_FLAG(int, max_queue_delay_ms, 5, "Server --max_queue_delay_ms");
ABSL_FLAG(int, threads, 2, "Intra-op threads (server and raw forward)");
ABSL_FLAG(bool, decode_in_worker, true, "Server --decode_in_worker");
ABSL_FLAG(std::string, precisions, "fp32",
          "Server --precision values to run, each against the raw forward in that precision "
          "(e.g. fp32,bf16; the first is the reference of the ratio notes)");
ABSL_FLAG(int, gemm_size, 2048, "Side of the GEMM-peak matmul (0: skip)");
ABSL_FLAG(int, raw_iters, 10, "Timed raw forward passes per batch size (median)");
ABSL_FLAG(std::string, image, "tests/fixtures/ham10000/images/ISIC_0024698.jpg", "Request image");
ABSL_FLAG(std::string, target, "",
          "HOST:PORT of a running server: only the closed-loop Classify load against it (no "
          "model, no server start, no raw forward); prints one RESULT line per concurrency");

namespace {

using Clock = std::chrono::steady_clock;

double Ms(Clock::duration d) { return std::chrono::duration<double, std::milli>(d).count(); }

double Percentile(std::vector<double> v, double q) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  const size_t i = std::min(v.size() - 1, static_cast<size_t>(q * (v.size() - 1) + 0.5));
  return v[i];
}

int FreePort() {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = 0;
  socklen_t len = sizeof(addr);
  if (bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0 ||
      getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
    std::perror("bind");
    std::exit(1);
  }
  close(fd);
  return ntohs(addr.sin_port);
}

pid_t Spawn(const std::vector<std::string>& args) {
  std::vector<char*> argv;
  for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  pid_t pid = 0;
  if (posix_spawn(&pid, argv[0], nullptr, nullptr, argv.data(), environ) != 0) {
    std::fprintf(stderr, "cannot start %s\n", argv[0]);
    std::exit(1);
  }
  return pid;
}

struct LoadResult {
  int concurrency = 0;
  double seconds = 0;
  int64_t ok = 0, failed = 0;
  std::vector<double> latency_ms;
  std::map<int, int64_t> batch_sizes;
  int MedianBatch() const {
    int64_t total = 0, seen = 0;
    for (const auto& [b, n] : batch_sizes) total += n;
    for (const auto& [b, n] : batch_sizes) {
      seen += n;
      if (2 * seen >= total) return b;
    }
    return 1;
  }
};

LoadResult RunLoad(const std::string& target, const std::string& image, int concurrency,
                   double warmup_s, double duration_s) {
  LoadResult r;
  r.concurrency = concurrency;
  std::atomic<bool> measuring{false}, stop{false};
  std::vector<LoadResult> per(concurrency);
  std::vector<std::thread> clients;
  // A few channels: one HTTP/2 connection per two clients.
  std::vector<std::shared_ptr<grpc::Channel>> channels;
  for (int i = 0; i < (concurrency + 1) / 2; ++i) {
    grpc::ChannelArguments args;
    args.SetInt("skinlesion.bench.channel", i);  // Distinct channels, not one shared subchannel.
    args.SetMaxReceiveMessageSize(64 << 20);
    channels.push_back(grpc::CreateCustomChannel(target, grpc::InsecureChannelCredentials(), args));
  }
  for (int c = 0; c < concurrency; ++c) {
    clients.emplace_back([&, c] {
      auto stub = skinlesion::v1::ClassificationService::NewStub(channels[c / 2]);
      skinlesion::v1::ClassifyRequest req;
      req.set_image(image);
      while (!stop.load()) {
        grpc::ClientContext ctx;
        ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
        skinlesion::v1::ClassifyResponse resp;
        const auto t0 = Clock::now();
        const grpc::Status s = stub->Classify(&ctx, req, &resp);
        const double ms = Ms(Clock::now() - t0);
        if (!measuring.load()) continue;
        if (s.ok()) {
          ++per[c].ok;
          per[c].latency_ms.push_back(ms);
          ++per[c].batch_sizes[std::max(1, resp.timing().batch_size())];
        } else {
          ++per[c].failed;
          if (per[c].failed <= 3) std::fprintf(stderr, "request failed: %s\n", s.error_message().c_str());
        }
      }
    });
  }
  std::this_thread::sleep_for(std::chrono::duration<double>(warmup_s));
  measuring = true;
  const auto t0 = Clock::now();
  std::this_thread::sleep_for(std::chrono::duration<double>(duration_s));
  measuring = false;
  r.seconds = std::chrono::duration<double>(Clock::now() - t0).count();
  stop = true;
  for (auto& t : clients) t.join();
  for (const auto& p : per) {
    r.ok += p.ok;
    r.failed += p.failed;
    r.latency_ms.insert(r.latency_ms.end(), p.latency_ms.begin(), p.latency_ms.end());
    for (const auto& [b, n] : p.batch_sizes) r.batch_sizes[b] += n;
  }
  return r;
}

bool WaitReady(const std::string& target, const std::string& image, double timeout_s) {
  auto stub = skinlesion::v1::ClassificationService::NewStub(
      grpc::CreateChannel(target, grpc::InsecureChannelCredentials()));
  const auto until = Clock::now() + std::chrono::duration<double>(timeout_s);
  while (Clock::now() < until) {
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
    skinlesion::v1::ClassifyRequest req;
    req.set_image(image);
    skinlesion::v1::ClassifyResponse resp;
    if (stub->Classify(&ctx, req, &resp).ok()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
  }
  return false;
}

// Median img/s of the model's forward pass alone at `batch` (fp32 input converted
// in the pass, as the server's instance does).
double RawImagesPerSecond(skinlesion::models::Classifier& model, int batch, int size, int iters,
                          const skinlesion::models::Numerics& numerics) {
  torch::InferenceMode guard;
  const torch::Tensor x = torch::randn({batch, 3, size, size});
  skinlesion::models::ForwardLogits(model, x, numerics, torch::kCPU);  // Warm-up.
  std::vector<double> rates;
  for (int i = 0; i < iters; ++i) {
    const auto t0 = Clock::now();
    skinlesion::models::ForwardLogits(model, x, numerics, torch::kCPU);
    rates.push_back(batch / std::chrono::duration<double>(Clock::now() - t0).count());
  }
  return Percentile(rates, 0.5);
}

}  // namespace

int main(int argc, char** argv) {
  // The raw forward runs with the allocator settings the server has.
  const skinlesion::AllocatorTuning& allocator = skinlesion::TuneAllocatorForTensors();
  absl::ParseCommandLine(argc, argv);
  setenv("OMP_WAIT_POLICY", "PASSIVE", 0);  // Also inherited by the server.
  const int size = absl::GetFlag(FLAGS_size);
  const int threads = absl::GetFlag(FLAGS_threads);
  torch::set_num_threads(threads);
  auto image = skinlesion::ReadFileToString(absl::GetFlag(FLAGS_image), 64 << 20);
  if (!image.ok()) {
    std::fprintf(stderr, "%s\n", image.status().ToString().c_str());
    return 1;
  }
  std::vector<int> concurrencies;
  for (absl::string_view c : absl::StrSplit(absl::GetFlag(FLAGS_concurrency), ',', absl::SkipEmpty())) {
    concurrencies.push_back(std::max(1, std::atoi(std::string(c).c_str())));
  }
  if (const std::string target = absl::GetFlag(FLAGS_target); !target.empty()) {
    // A running server (bench/gateway_bench.sh compares it with the gateway in front of it).
    if (!WaitReady(target, *image, 120)) {
      std::fprintf(stderr, "%s did not answer Classify\n", target.c_str());
      return 1;
    }
    for (int c : concurrencies) {
      const LoadResult r =
          RunLoad(target, *image, c, absl::GetFlag(FLAGS_warmup_s), absl::GetFlag(FLAGS_duration_s));
      std::printf("RESULT concurrency=%d requests=%lld failed=%lld rps=%.2f p50_ms=%.3f "
                  "p95_ms=%.3f p99_ms=%.3f median_batch=%d\n",
                  c, static_cast<long long>(r.ok), static_cast<long long>(r.failed), r.ok / r.seconds,
                  Percentile(r.latency_ms, 0.5), Percentile(r.latency_ms, 0.95),
                  Percentile(r.latency_ms, 0.99), r.MedianBatch());
      std::fflush(stdout);
    }
    return 0;
  }
  const std::string tmp = absl::StrCat(std::filesystem::temp_directory_path().string(),
                                       "/inference_load_bench_", getpid());

  skinlesion::bench::GemmPeak peak;
  if (absl::GetFlag(FLAGS_gemm_size) > 0) {
    peak = skinlesion::bench::MeasureGemmPeak(absl::GetFlag(FLAGS_gemm_size));
    std::printf("%s\n\n", peak.Describe(absl::GetFlag(FLAGS_gemm_size)).c_str());
  }
  const std::vector<std::string> precisions =
      absl::StrSplit(absl::GetFlag(FLAGS_precisions), ',', absl::SkipEmpty());
  std::printf("| arch | precision | concurrency | requests | failed | img/s | p50 ms | p95 ms | p99 ms | median batch | raw img/s at that batch | server / raw | %% of GEMM peak |\n");
  std::printf("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n");
  std::vector<std::string> notes;
  for (absl::string_view arch_view : absl::StrSplit(absl::GetFlag(FLAGS_archs), ',', absl::SkipEmpty())) {
    const std::string arch(arch_view);
    const std::string dir = tmp + "/" + arch;
    double gflop_per_image = 0;
    {
      torch::manual_seed(0);
      auto model = skinlesion::models::CreateModel(arch, {.num_classes = 7, .image_size = size});
      if (!model.ok()) {
        std::fprintf(stderr, "%s\n", model.status().ToString().c_str());
        return 1;
      }
      (*model)->eval();
      if (auto s = skinlesion::models::SaveCheckpoint(**model, dir, size); !s.ok()) {
        std::fprintf(stderr, "%s\n", s.ToString().c_str());
        return 1;
      }
      gflop_per_image = skinlesion::models::ComputeModelStats(**model, size).gflops();
    }
    std::map<int, double> first_rate;  // concurrency -> img/s of the first precision
    for (const std::string& precision : precisions) {
      const auto choice = skinlesion::ParsePrecisionChoice(precision);
      if (!choice.ok()) {
        std::fprintf(stderr, "%s\n", choice.status().ToString().c_str());
        return 2;
      }
      // The raw side: the same weights (same seed), converted as the server converts them.
      torch::manual_seed(0);
      auto model = skinlesion::models::CreateModel(arch, {.num_classes = 7, .image_size = size});
      (*model)->eval();
      const skinlesion::models::Numerics numerics =
          skinlesion::models::ChooseNumerics(*choice, **model, torch::kCPU);
      skinlesion::models::PrepareModel(**model, numerics);
      const bool bf16 = numerics.precision == skinlesion::Precision::kBf16;
      // Raw forward before the server phase (batch 1 and the configured maximum).
      std::map<int, std::vector<double>> raw;
      for (int b : {1, absl::GetFlag(FLAGS_max_batch_size)}) {
        raw[b].push_back(RawImagesPerSecond(**model, b, size, absl::GetFlag(FLAGS_raw_iters), numerics));
      }

      const int port = FreePort(), metrics_port = FreePort();
      const std::string target = absl::StrCat("127.0.0.1:", port);
      const pid_t server = Spawn({absl::GetFlag(FLAGS_server), "--model_dir", dir, "--model", arch,
                                  "--port", std::to_string(port), "--metrics_port", std::to_string(metrics_port),
                                  "--max_batch_size", std::to_string(absl::GetFlag(FLAGS_max_batch_size)),
                                  "--max_queue_delay_ms", std::to_string(absl::GetFlag(FLAGS_max_queue_delay_ms)),
                                  "--threads", std::to_string(threads), "--precision", precision,
                                  absl::StrCat("--decode_in_worker=",
                                               absl::GetFlag(FLAGS_decode_in_worker) ? "true" : "false")});
      if (!WaitReady(target, *image, 120)) {
        std::fprintf(stderr, "server for %s did not become ready\n", arch.c_str());
        kill(server, SIGKILL);
        return 1;
      }
      std::vector<LoadResult> results;
      for (int c : concurrencies) {
        std::fprintf(stderr, "%s %s: concurrency %d for %.0f s ...\n", arch.c_str(), precision.c_str(), c,
                     absl::GetFlag(FLAGS_duration_s));
        results.push_back(RunLoad(target, *image, c, absl::GetFlag(FLAGS_warmup_s), absl::GetFlag(FLAGS_duration_s)));
      }
      kill(server, SIGTERM);
      int wstatus = 0;
      waitpid(server, &wstatus, 0);
      const bool clean_exit = WIFEXITED(wstatus) && WEXITSTATUS(wstatus) == 0;

      // Raw forward after the server phase, at every batch size the batcher formed.
      for (const auto& r : results) raw[r.MedianBatch()];
      for (auto& [b, rates] : raw) {
        rates.push_back(RawImagesPerSecond(**model, b, size, absl::GetFlag(FLAGS_raw_iters), numerics));
      }
      auto raw_rate = [&](int b) { return Percentile(raw[b], 0.5); };
      for (const auto& r : results) {
        const double rate = r.ok / r.seconds;
        const int mb = r.MedianBatch();
        const double of_peak = peak.For(bf16) > 0 ? 100.0 * rate * gflop_per_image / peak.For(bf16) : 0;
        std::printf("| %s | %s | %d | %lld | %lld | %.1f | %.1f | %.1f | %.1f | %d | %.1f | %.2fx | %.0f%% |\n",
                    arch.c_str(), numerics.Describe().c_str(), r.concurrency, static_cast<long long>(r.ok),
                    static_cast<long long>(r.failed), rate, Percentile(r.latency_ms, 0.5),
                    Percentile(r.latency_ms, 0.95), Percentile(r.latency_ms, 0.99), mb, raw_rate(mb),
                    rate / raw_rate(mb), of_peak);
        if (r.concurrency == 1) {
          const double raw1_ms = 1000.0 / raw_rate(1);
          notes.push_back(absl::StrFormat("%s %s: concurrency 1 p50 %.1f ms vs raw single-image forward %.1f ms "
                                          "(+%.1f ms; target <= +5 ms)",
                                          arch, precision, Percentile(r.latency_ms, 0.5), raw1_ms,
                                          Percentile(r.latency_ms, 0.5) - raw1_ms));
        }
        if (precision == precisions.front()) {
          first_rate[r.concurrency] = rate;
        } else if (first_rate.count(r.concurrency) && first_rate[r.concurrency] > 0) {
          notes.push_back(absl::StrFormat("%s concurrency %d: %s server / %s server = %.2fx (%lld failed)", arch,
                                          r.concurrency, precision, precisions.front(),
                                          rate / first_rate[r.concurrency], static_cast<long long>(r.failed)));
        }
      }
      notes.push_back(absl::StrFormat("%s %s: server exit after SIGTERM: %s", arch, precision,
                                      clean_exit ? "0 (clean)" : "NOT clean"));
    }
  }
  std::printf("\n");
  for (const auto& n : notes) std::printf("    %s\n", n.c_str());
  std::printf("\nCPU, %d intra-op threads on both sides, OMP_WAIT_POLICY=PASSIVE, %d px, server "
              "--max_batch_size %d --max_queue_delay_ms %d --decode_in_worker=%s; raw = median of %d forward passes "
              "(before and after the server phase) at the batch size the batcher formed.\n",
              threads, size, absl::GetFlag(FLAGS_max_batch_size), absl::GetFlag(FLAGS_max_queue_delay_ms),
              absl::GetFlag(FLAGS_decode_in_worker) ? "true" : "false", absl::GetFlag(FLAGS_raw_iters));
  std::printf("Memory (server and raw forward): %s.\n", allocator.description.c_str());
  std::error_code ec;
  std::filesystem::remove_all(tmp, ec);
  return 0;
}
