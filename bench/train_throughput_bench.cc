// Training-step throughput of the model zoo against Python torchvision on the same
// machine, in the same run.
//
// One step = zero_grad, forward in training mode, cross-entropy (label smoothing
// 0.1) on random labels, backward, AdamW step (lr 1e-4, weight decay 0.05, all
// parameters): what Train() does per batch, without data loading (C++: FusedAdamW
// and gradients cleared to undefined, as Train(); --cpp_optimizer torch for
// torch::optim::AdamW; bench/optimizer_bench compares the two alone). Input N(0, 1)
// [batch, 3, size, size]; torch::manual_seed(0); torch::set_num_threads(--threads)
// on both sides; same LibTorch (Debian's 1.13) under both.
//
// The reference is bench/reference/train_step_bench.py --serve, run by --python
// (/usr/bin/python3: torch 1.13 / torchvision 0.14) as a co-process. The two sides
// take steps in lock-step -- C++, Python, Python, C++, C++, Python, ... (the order
// alternates) -- so both see the same machine load at nearly the same moment: on a
// shared, loaded machine the ratio of each pair of steps is far steadier than two
// separate timing runs. --warmup pairs are dropped, then --iters pairs are timed.
//
// On a machine shared with other busy processes, run it with OMP_WAIT_POLICY=PASSIVE
// (inherited by the Python side): with libgomp's default spin-then-sleep barriers a
// 2-thread step there takes 2-30x longer and varies wildly (see
// bench/reference/README.md).
//
// Prints a markdown table: img/s of the median step per side, the median over pairs
// of the per-pair ratio C++/Python (> 1: C++ faster), the fastest step per side,
// the median process CPU time per step, and the medians of the phases (forward,
// backward, optimizer).
//
// --eval times eval-mode forward passes instead (model.eval(), inference mode, no
// loss), the same way: the lock-step counterpart of models_bench's eval rows.
//
// --precision sets the C++ side's numerics (skinlesion/models/numerics.h): eval
// mode converts the weights (bf16; CNNs channels-last), training runs bf16 autocast
// with fp32 master weights (CNNs channels-last), as serving and Train() do.
// --python_precision sets the reference's: fp32 (plain torchvision) or bf16
// (eval: module.bfloat16(); training: torch.autocast("cpu", torch.bfloat16)).
// Before the rows the run measures this machine's fp32 and bf16 GEMM peak
// (bench/gemm_peak.h); each row also says what fraction of the peak of its
// precision the C++ step reaches (model FLOPs from models::ComputeModelStats,
// training = 3x forward). SKINLESION_CPU_DISABLE=avx512_bf16,amx_bf16 makes a
// bf16 machine choose as one without native bf16 would (`--precision auto`).
//
//   train_throughput_bench [--archs resnet18,resnet50,efficientnet_b0,vit_b_16]
//       [--size 224] [--batch 8] [--threads 2] [--warmup 5] [--iters 10]
//       [--eval] [--channels_last [--reference_nchw]] [--precision fp32|bf16|auto]
//       [--python_precision fp32|bf16] [--op_profile N] [--python /usr/bin/python3]
//       [--reference bench/reference/train_step_bench.py] [--no_reference]
#include <ATen/record_function.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <torch/torch.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <iostream>
#include <map>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "bench/gemm_peak.h"
#include "skinlesion/common/allocator.h"
#include "skinlesion/common/precision.h"
#include "skinlesion/models/model_zoo.h"
#include "skinlesion/models/numerics.h"
#include "skinlesion/train/fused_adamw.h"

ABSL_FLAG(std::string, archs, "resnet18,resnet50,efficientnet_b0,vit_b_16",
          "Comma-separated architectures (models::ListArchitectures names)");
ABSL_FLAG(int64_t, size, 224, "Image side in pixels");
ABSL_FLAG(std::string, cpp_optimizer, "fused",
          "C++ side's optimizer: fused (skinlesion::train::FusedAdamW and gradients cleared to "
          "undefined, as Train() does) or torch (torch::optim::AdamW and zero_grad())");
ABSL_FLAG(int64_t, batch, 8, "Batch size");
ABSL_FLAG(int, threads, 2, "Intra-op threads (torch::set_num_threads), both sides");
ABSL_FLAG(int, warmup, 5, "Untimed steps (pairs) first");
ABSL_FLAG(int, iters, 10, "Timed steps (pairs); medians are reported");
ABSL_FLAG(int, op_profile, 0,
          "After the timed steps, profile this many more steps per side and print the aten ops "
          "with their call counts and self time (RecordFunction in C++, torch.autograd.profiler "
          "in Python)");
ABSL_FLAG(int, op_rows, 30, "Rows of the --op_profile table (the most expensive ops)");
ABSL_FLAG(bool, eval, false,
          "Time eval-mode forward passes (inference mode, both sides) instead of training steps");
ABSL_FLAG(bool, channels_last, false, "Model and input in channels-last memory format, both sides");
ABSL_FLAG(bool, reference_nchw, false,
          "With --channels_last: keep the Python reference contiguous (NCHW), so the ratio says "
          "what channels-last gains over the plain step (same LibTorch on both sides)");
ABSL_FLAG(std::string, precision, "fp32",
          "C++ side: fp32, bf16 or auto (skinlesion/common/precision.h); bf16 CNNs run channels-last");
ABSL_FLAG(std::string, python_precision, "fp32",
          "Python side: fp32 or bf16 (eval: module.bfloat16(); training: CPU autocast)");
ABSL_FLAG(int, gemm_size, 2048, "Side of the square matmul that measures the GEMM peak (0: skip)");
ABSL_FLAG(std::string, python, "/usr/bin/python3", "Python with torch + torchvision");
ABSL_FLAG(std::string, reference, "bench/reference/train_step_bench.py",
          "The Python reference script");
ABSL_FLAG(bool, no_reference, false, "Only time the C++ models");

namespace {

// One training step's times: whole step (wall, process CPU) and its phases (wall):
// zero_grad + forward + loss, backward, optimizer step.
struct OpStats {
  int64_t calls = 0;
  double self_ms = 0;
};
using OpTable = std::map<std::string, OpStats>;

struct Step {
  double wall_ms = 0, cpu_ms = 0, forward_ms = 0, backward_ms = 0, optimizer_ms = 0;
  OpTable ops;  // Profiled steps only.
};

// Op-level profile of the C++ side: a global RecordFunction callback keeps a
// per-thread stack of open ops to split each op's time into self and children.
class OpProfiler {
 public:
  OpProfiler() {
    handle_ = at::addGlobalCallback(
        at::RecordFunctionCallback(&OnStart, &OnEnd)
            .scopes({at::RecordScope::FUNCTION, at::RecordScope::BACKWARD_FUNCTION}));
  }
  ~OpProfiler() { at::removeCallback(handle_); }
  OpProfiler(const OpProfiler&) = delete;
  OpProfiler& operator=(const OpProfiler&) = delete;

  // The ops recorded since the last call, names prefixed with "<phase>/".
  static void TakeInto(const std::string& phase, OpTable& out) {
    std::lock_guard<std::mutex> lock(mu_);
    for (const auto& [name, s] : table_) out[phase + "/" + name] = s;
    table_.clear();
  }

 private:
  using Clock = std::chrono::steady_clock;
  struct Frame {
    std::string name;
    Clock::time_point start;
    double child_ms = 0;
  };

  static std::unique_ptr<at::ObserverContext> OnStart(const at::RecordFunction& fn) {
    stack_.push_back({fn.name(), Clock::now(), 0});
    return nullptr;
  }
  static void OnEnd(const at::RecordFunction& fn, at::ObserverContext*) {
    if (stack_.empty()) return;
    Frame f = std::move(stack_.back());
    stack_.pop_back();
    const double ms = std::chrono::duration<double, std::milli>(Clock::now() - f.start).count();
    if (!stack_.empty()) stack_.back().child_ms += ms;
    std::lock_guard<std::mutex> lock(mu_);
    OpStats& s = table_[f.name];
    ++s.calls;
    s.self_ms += ms - f.child_ms;
  }

  at::CallbackHandle handle_;
  static thread_local std::vector<Frame> stack_;
  static std::mutex mu_;
  static OpTable table_;
};
thread_local std::vector<OpProfiler::Frame> OpProfiler::stack_;
std::mutex OpProfiler::mu_;
OpTable OpProfiler::table_;

double Median(std::vector<double> v) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

template <typename F>
double MedianOf(const std::vector<Step>& steps, F&& field) {
  std::vector<double> v;
  for (const Step& s : steps) v.push_back(field(s));
  return Median(v);
}

double ProcessCpuMs() {
  timespec ts{};
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return static_cast<double>(ts.tv_sec) * 1e3 + static_cast<double>(ts.tv_nsec) * 1e-6;
}

// The C++ side: a model-zoo model and an AdamW optimiser.
class CppStepper {
 public:
  static std::unique_ptr<CppStepper> Create(const std::string& arch, int64_t size, int64_t batch,
                                            bool channels_last, bool eval_mode,
                                            skinlesion::PrecisionChoice precision) {
    torch::manual_seed(0);
    skinlesion::models::ModelOptions options;
    options.image_size = size;
    auto created = skinlesion::models::CreateModel(arch, options);
    if (!created.ok()) {
      std::cerr << arch << ": " << created.status() << "\n";
      return nullptr;
    }
    skinlesion::models::Numerics numerics =
        skinlesion::models::ChooseNumerics(precision, **created, torch::kCPU);
    numerics.channels_last = numerics.channels_last || channels_last;
    auto stepper =
        std::unique_ptr<CppStepper>(new CppStepper(*created, size, batch, numerics, eval_mode));
    stepper->eval_mode_ = eval_mode;
    if (eval_mode) {
      stepper->model_->eval();
      skinlesion::models::PrepareModel(*stepper->model_, numerics);
      stepper->x_ = skinlesion::models::PrepareInput(stepper->x_, numerics, torch::kCPU);
    }
    return stepper;
  }

  const skinlesion::models::Numerics& numerics() const { return numerics_; }

  Step Run(bool profile = false) {
    std::optional<OpProfiler> profiler;
    if (profile) profiler.emplace();
    using Ms = std::chrono::duration<double, std::milli>;
    const auto start = std::chrono::steady_clock::now();
    const double cpu_start = ProcessCpuMs();
    if (eval_mode_) {  // --eval: one inference-mode forward pass, nothing else.
      Step s;
      {
        torch::InferenceMode guard;
        model_->forward(x_);
      }
      if (profile) OpProfiler::TakeInto("forward", s.ops);
      s.wall_ms = s.forward_ms = Ms(std::chrono::steady_clock::now() - start).count();
      s.cpu_ms = ProcessCpuMs() - cpu_start;
      return s;
    }
    namespace F = torch::nn::functional;
    if (fused_) {
      skinlesion::train::ClearGradients(*optimizer_);
    } else {
      optimizer_->zero_grad();
    }
    torch::Tensor logits;
    {
      skinlesion::models::AutocastGuard autocast(
          /*cuda=*/false, /*fp16=*/false, numerics_.precision == skinlesion::Precision::kBf16);
      logits = model_->forward(x_);
    }
    torch::Tensor loss =
        F::cross_entropy(logits.to(torch::kFloat32), y_, F::CrossEntropyFuncOptions().label_smoothing(0.1));
    Step s;
    if (profile) OpProfiler::TakeInto("forward", s.ops);
    const auto t1 = std::chrono::steady_clock::now();
    loss.backward();
    if (profile) OpProfiler::TakeInto("backward", s.ops);
    const auto t2 = std::chrono::steady_clock::now();
    optimizer_->step();
    if (profile) OpProfiler::TakeInto("optimizer", s.ops);
    const auto end = std::chrono::steady_clock::now();
    s.wall_ms = Ms(end - start).count();
    s.cpu_ms = ProcessCpuMs() - cpu_start;
    s.forward_ms = Ms(t1 - start).count();
    s.backward_ms = Ms(t2 - t1).count();
    s.optimizer_ms = Ms(end - t2).count();
    return s;
  }

 private:
  // Training: fp32 master weights, NHWC for channels-last (as Train() does).
  static std::vector<torch::Tensor> Prepare(skinlesion::models::Classifier& model,
                                            const skinlesion::models::Numerics& numerics,
                                            bool eval_mode) {
    model.train();
    if (numerics.channels_last && !eval_mode) skinlesion::models::ToChannelsLast(model);
    return model.parameters();
  }

  // Train() uses FusedAdamW and clears gradients to undefined; --cpp_optimizer=torch
  // measures torch::optim::AdamW with zero_grad() instead.
  static std::unique_ptr<torch::optim::AdamW> MakeOptimizer(std::vector<torch::Tensor> params,
                                                            bool fused) {
    const auto options = torch::optim::AdamWOptions(1e-4).weight_decay(0.05);
    if (fused) return std::make_unique<skinlesion::train::FusedAdamW>(std::move(params), options);
    return std::make_unique<torch::optim::AdamW>(std::move(params), options);
  }

  CppStepper(std::shared_ptr<skinlesion::models::Classifier> model, int64_t size, int64_t batch,
             const skinlesion::models::Numerics& numerics, bool eval_mode)
      : model_(std::move(model)),
        numerics_(numerics),
        fused_(absl::GetFlag(FLAGS_cpp_optimizer) == "fused"),
        optimizer_(MakeOptimizer(Prepare(*model_, numerics, eval_mode), fused_)),
        x_(torch::randn({batch, 3, size, size})),
        y_(torch::randint(0, 7, {batch}, torch::kLong)) {
    if (numerics.channels_last) x_ = x_.contiguous(torch::MemoryFormat::ChannelsLast);
  }

  std::shared_ptr<skinlesion::models::Classifier> model_;
  skinlesion::models::Numerics numerics_;
  bool fused_;
  std::unique_ptr<torch::optim::AdamW> optimizer_;
  torch::Tensor x_, y_;
  bool eval_mode_ = false;
};

// The Python side: train_step_bench.py --serve as a co-process on two pipes.
class PythonStepper {
 public:
  static std::unique_ptr<PythonStepper> Start(const std::vector<std::string>& argv) {
    int to_child[2], from_child[2];
    if (pipe2(to_child, O_CLOEXEC) != 0) return nullptr;
    if (pipe2(from_child, O_CLOEXEC) != 0) {
      close(to_child[0]);
      close(to_child[1]);
      return nullptr;
    }
    // Built before fork(): the child of a multi-threaded process must not allocate.
    std::vector<char*> args;
    for (const std::string& a : argv) args.push_back(const_cast<char*>(a.c_str()));
    args.push_back(nullptr);
    const pid_t pid = fork();
    if (pid < 0) {
      for (int fd : {to_child[0], to_child[1], from_child[0], from_child[1]}) close(fd);
      return nullptr;
    }
    if (pid == 0) {
      dup2(to_child[0], STDIN_FILENO);
      dup2(from_child[1], STDOUT_FILENO);
      execv(args[0], args.data());
      _exit(127);
    }
    close(to_child[0]);
    close(from_child[1]);
    auto p = std::unique_ptr<PythonStepper>(new PythonStepper());
    p->pid_ = pid;
    p->in_ = fdopen(to_child[1], "w");
    p->out_ = fdopen(from_child[0], "r");
    const std::optional<nlohmann::json> ready = p->ReadJson();
    if (!ready || !ready->value("ready", false)) {
      std::cerr << "the Python reference did not start\n";
      return nullptr;
    }
    p->threads_ = ready->value("threads", 0);
    return p;
  }

  ~PythonStepper() {
    if (in_ != nullptr) {
      std::fputs("quit\n", in_);
      std::fclose(in_);
    }
    if (out_ != nullptr) std::fclose(out_);
    if (pid_ > 0) waitpid(pid_, nullptr, 0);
  }

  int threads() const { return threads_; }

  std::optional<Step> Run(bool profile = false) {
    if (std::fputs(profile ? "profile\n" : "step\n", in_) < 0 || std::fflush(in_) != 0)
      return std::nullopt;
    const std::optional<nlohmann::json> j = ReadJson();
    if (!j || !j->contains("wall_ms")) return std::nullopt;
    Step s;
    s.wall_ms = j->value("wall_ms", 0.0);
    s.cpu_ms = j->value("cpu_ms", 0.0);
    s.forward_ms = j->value("forward_ms", 0.0);
    s.backward_ms = j->value("backward_ms", 0.0);
    s.optimizer_ms = j->value("optimizer_ms", 0.0);
    if (j->contains("ops") && (*j)["ops"].is_object()) {
      for (const auto& [name, v] : (*j)["ops"].items()) {
        if (!v.is_array() || v.size() != 2) continue;
        s.ops[name] = OpStats{v[0].get<int64_t>(), v[1].get<double>()};
      }
    }
    return s;
  }

 private:
  PythonStepper() = default;

  std::optional<nlohmann::json> ReadJson() {
    std::string line;
    line.reserve(1 << 12);
    int c;
    while ((c = std::fgetc(out_)) != EOF && c != '\n') line.push_back(static_cast<char>(c));
    if (line.empty()) return std::nullopt;
    nlohmann::json j = nlohmann::json::parse(line, nullptr, false);
    if (j.is_discarded() || !j.is_object()) return std::nullopt;
    return j;
  }

  pid_t pid_ = -1;
  FILE* in_ = nullptr;
  FILE* out_ = nullptr;
  int threads_ = 0;
};

struct Row {
  std::string arch;
  bool ok = false;
  std::string numerics;     // C++ side: "bf16, channels-last".
  bool bf16 = false;
  double gflop_per_step = 0;  // Model FLOPs of one step (training: 3x forward).
  std::vector<Step> cpp, python;
  std::vector<double> pair_ratios;  // Python wall / C++ wall per pair = C++/Python speed.
  OpTable cpp_ops, python_ops;      // Summed over the --op_profile steps.
  int profiled = 0;
};

void AddOps(OpTable& to, const OpTable& from) {
  for (const auto& [name, s] : from) {
    to[name].calls += s.calls;
    to[name].self_ms += s.self_ms;
  }
}

Row BenchArch(const std::string& arch, int64_t size, int64_t batch, int threads, int warmup,
              int iters, bool channels_last, bool reference) {
  Row row;
  row.arch = arch;
  const bool eval_mode = absl::GetFlag(FLAGS_eval);
  const auto precision = skinlesion::ParsePrecisionChoice(absl::GetFlag(FLAGS_precision));
  if (!precision.ok()) {
    std::cerr << precision.status() << "\n";
    return row;
  }
  std::unique_ptr<CppStepper> cpp =
      CppStepper::Create(arch, size, batch, channels_last, eval_mode, *precision);
  if (cpp == nullptr) return row;
  row.numerics = cpp->numerics().Describe();
  row.bf16 = cpp->numerics().precision == skinlesion::Precision::kBf16;
  {
    skinlesion::models::ModelOptions options;
    options.image_size = size;
    const auto stats = skinlesion::models::ComputeModelStats(arch, options);
    if (stats.ok()) {
      row.gflop_per_step = stats->gflops() * static_cast<double>(batch) * (eval_mode ? 1.0 : 3.0);
    }
  }
  std::unique_ptr<PythonStepper> python;
  if (reference) {
    std::vector<std::string> argv = {absl::GetFlag(FLAGS_python),
                                     absl::GetFlag(FLAGS_reference),
                                     "--serve",
                                     "--archs",
                                     arch,
                                     "--size",
                                     absl::StrCat(size),
                                     "--batch",
                                     absl::StrCat(batch),
                                     "--threads",
                                     absl::StrCat(threads)};
    if (channels_last && !absl::GetFlag(FLAGS_reference_nchw)) argv.push_back("--channels_last");
    if (eval_mode) argv.push_back("--eval");
    argv.push_back("--precision");
    argv.push_back(absl::GetFlag(FLAGS_python_precision));
    python = PythonStepper::Start(argv);
    if (python == nullptr) return row;
    if (python->threads() != threads) {
      std::cerr << "warning: the reference runs with " << python->threads() << " threads\n";
    }
  }
  for (int i = 0; i < warmup + iters; ++i) {
    Step c;
    std::optional<Step> p;
    if (i % 2 == 0 || !python) {  // Alternate who goes first.
      c = cpp->Run();
      if (python) p = python->Run();
    } else {
      p = python->Run();
      c = cpp->Run();
    }
    if (python && !p) {
      std::cerr << arch << ": the Python reference stopped answering\n";
      return row;
    }
    std::fprintf(stderr, "%s step %d/%d: C++ %.1f ms%s%s\n", arch.c_str(), i + 1, warmup + iters,
                 c.wall_ms, p ? absl::StrFormat(", Python %.1f ms", p->wall_ms).c_str() : "",
                 i < warmup ? " (warm-up)" : "");
    if (i < warmup) continue;
    row.cpp.push_back(c);
    if (p) {
      row.python.push_back(*p);
      row.pair_ratios.push_back(p->wall_ms / c.wall_ms);
    }
  }
  for (int i = 0; i < absl::GetFlag(FLAGS_op_profile); ++i) {
    AddOps(row.cpp_ops, cpp->Run(/*profile=*/true).ops);
    if (python) {
      const std::optional<Step> p = python->Run(/*profile=*/true);
      if (!p) return row;
      AddOps(row.python_ops, p->ops);
    }
    ++row.profiled;
  }
  row.ok = true;
  return row;
}

// The aten ops of the profiled steps by phase, per step: calls and self ms on both
// sides, the --op_rows most expensive (by the larger side), then the totals.
void PrintOps(const Row& r) {
  std::vector<std::string> names;
  for (const OpTable* t : {&r.cpp_ops, &r.python_ops}) {
    for (const auto& [name, s] : *t) {
      const size_t slash = name.find('/');
      if (slash != std::string::npos && name.compare(slash + 1, 6, "aten::") == 0 &&
          std::find(names.begin(), names.end(), name) == names.end()) {
        names.push_back(name);
      }
    }
  }
  auto get = [](const OpTable& t, const std::string& name) {
    auto it = t.find(name);
    return it == t.end() ? OpStats{} : it->second;
  };
  std::sort(names.begin(), names.end(), [&](const std::string& a, const std::string& b) {
    return std::max(get(r.cpp_ops, a).self_ms, get(r.python_ops, a).self_ms) >
           std::max(get(r.cpp_ops, b).self_ms, get(r.python_ops, b).self_ms);
  });
  const double n = r.profiled;
  std::printf(
      "\n%s: aten ops per step by phase (mean of %d profiled steps per side; self wall ms on "
      "the calling thread)\n\n",
      r.arch.c_str(), r.profiled);
  std::printf(
      "| phase/op | C++ calls | Python calls | C++ self ms | Python self ms "
      "|\n|---|---|---|---|---|\n");
  OpStats cpp_total, python_total;
  for (size_t i = 0; i < names.size(); ++i) {
    const OpStats c = get(r.cpp_ops, names[i]), p = get(r.python_ops, names[i]);
    cpp_total.calls += c.calls;
    cpp_total.self_ms += c.self_ms;
    python_total.calls += p.calls;
    python_total.self_ms += p.self_ms;
    if (i < static_cast<size_t>(absl::GetFlag(FLAGS_op_rows))) {
      std::printf("| %s | %.0f | %.0f | %.1f | %.1f |\n", names[i].c_str(), c.calls / n,
                  p.calls / n, c.self_ms / n, p.self_ms / n);
    }
  }
  std::printf("| all %zu aten ops | %.0f | %.0f | %.1f | %.1f |\n", names.size(),
              cpp_total.calls / n, python_total.calls / n, cpp_total.self_ms / n,
              python_total.self_ms / n);
}

std::string Ips(int64_t batch, double ms) {
  return absl::StrFormat("%.1f", 1000.0 * static_cast<double>(batch) / ms);
}

}  // namespace

int main(int argc, char** argv) {
  // As the CLI and the services run (skinlesion/common/allocator.h); the Python side
  // is a separate process with glibc's defaults, as its users run it.
  const skinlesion::AllocatorTuning& allocator = skinlesion::TuneAllocatorForTensors();
  absl::ParseCommandLine(argc, argv);
  signal(SIGPIPE, SIG_IGN);
  const int threads = absl::GetFlag(FLAGS_threads);
  const int64_t size = absl::GetFlag(FLAGS_size);
  const int64_t batch = absl::GetFlag(FLAGS_batch);
  const int warmup = absl::GetFlag(FLAGS_warmup);
  const int iters = absl::GetFlag(FLAGS_iters);
  const bool channels_last = absl::GetFlag(FLAGS_channels_last);
  const bool reference = !absl::GetFlag(FLAGS_no_reference);
  if (threads < 1 || size < 16 || batch < 1 || warmup < 0 || iters < 1) {
    std::cerr << "need --threads >= 1, --size >= 16, --batch >= 1, --warmup >= 0, --iters >= 1\n";
    return 2;
  }
  torch::set_num_threads(threads);
  skinlesion::bench::GemmPeak peak;
  const int gemm_size = absl::GetFlag(FLAGS_gemm_size);
  if (gemm_size > 0) {
    peak = skinlesion::bench::MeasureGemmPeak(gemm_size);
    std::printf("%s\n\n", peak.Describe(gemm_size).c_str());
  }

  const std::vector<std::string> archs =
      absl::StrSplit(absl::GetFlag(FLAGS_archs), ',', absl::SkipEmpty());
  std::vector<Row> rows;
  for (const std::string& arch : archs) {
    rows.push_back(BenchArch(arch, size, batch, threads, warmup, iters, channels_last, reference));
  }

  auto wall = [](const Step& s) { return s.wall_ms; };
  auto dash_or = [&](bool have, const std::string& s) {
    return reference && have ? s : std::string("-");
  };
  const std::string python_precision = absl::GetFlag(FLAGS_python_precision);
  std::printf(
      "| arch | size | batch | C++ numerics | Python | C++ img/s | Python img/s | C++/Python | "
      "C++ %% of GEMM peak | C++ best img/s | Python best img/s | C++ CPU s/step | Python CPU "
      "s/step |\n");
  std::printf("|---|---|---|---|---|---|---|---|---|---|---|---|---|\n");
  int failures = 0;
  for (const Row& r : rows) {
    if (!r.ok) {
      ++failures;
      std::printf("| %s | %lld | %lld | failed | | | | | | | | | |\n", r.arch.c_str(),
                  static_cast<long long>(size), static_cast<long long>(batch));
      continue;
    }
    const bool py = !r.python.empty();
    auto best = [&](const std::vector<Step>& v) {
      double m = v.empty() ? 0 : v[0].wall_ms;
      for (const Step& s : v) m = std::min(m, s.wall_ms);
      return m;
    };
    const double peak_gflops = peak.For(r.bf16);
    const std::string of_peak =
        peak_gflops > 0 && r.gflop_per_step > 0
            ? absl::StrFormat("%.0f%%", 100.0 * r.gflop_per_step /
                                            (MedianOf(r.cpp, wall) / 1000.0) / peak_gflops)
            : std::string("-");
    std::printf("| %s | %lld | %lld | %s | %s | %s | %s | %s | %s | %s | %s | %.2f | %s |\n",
                r.arch.c_str(), static_cast<long long>(size), static_cast<long long>(batch),
                r.numerics.c_str(), python_precision.c_str(),
                Ips(batch, MedianOf(r.cpp, wall)).c_str(),
                dash_or(py, Ips(batch, MedianOf(r.python, wall))).c_str(),
                dash_or(py, absl::StrFormat("%.2f", Median(r.pair_ratios))).c_str(), of_peak.c_str(),
                Ips(batch, best(r.cpp)).c_str(), dash_or(py, Ips(batch, best(r.python))).c_str(),
                MedianOf(r.cpp, [](const Step& s) { return s.cpu_ms; }) / 1000.0,
                dash_or(py, absl::StrFormat(
                                "%.2f", MedianOf(r.python, [](const Step& s) { return s.cpu_ms; }) /
                                            1000.0))
                    .c_str());
  }
  std::printf(
      "\nPhases, median wall ms per step: forward = zero_grad + forward + loss; backward; AdamW "
      "step.\n\n");
  std::printf(
      "| arch | C++ forward | Python forward | C++ backward | Python backward | C++ optimizer | "
      "Python optimizer |\n");
  std::printf("|---|---|---|---|---|---|---|\n");
  for (const Row& r : rows) {
    if (!r.ok) continue;
    const bool py = !r.python.empty();
    auto cell = [&](const std::vector<Step>& v, double Step::*field) {
      return v.empty()
                 ? std::string("-")
                 : absl::StrFormat("%.1f", MedianOf(v, [&](const Step& s) { return s.*field; }));
    };
    std::printf("| %s | %s | %s | %s | %s | %s | %s |\n", r.arch.c_str(),
                cell(r.cpp, &Step::forward_ms).c_str(),
                dash_or(py, cell(r.python, &Step::forward_ms)).c_str(),
                cell(r.cpp, &Step::backward_ms).c_str(),
                dash_or(py, cell(r.python, &Step::backward_ms)).c_str(),
                cell(r.cpp, &Step::optimizer_ms).c_str(),
                dash_or(py, cell(r.python, &Step::optimizer_ms)).c_str());
  }
  for (const Row& r : rows) {
    if (!r.ok || r.profiled == 0) continue;
    PrintOps(r);
  }
  const char* wait_policy = std::getenv("OMP_WAIT_POLICY");
  std::printf(
      "\n%s, CPU, %d threads, OMP_WAIT_POLICY=%s, %s (--channels_last), %d timed "
      "lock-step "
      "pairs after %d warm-up; img/s from the median step, best = fastest step, C++/Python = "
      "median "
      "over pairs of the per-pair speed ratio (> 1: C++ faster), CPU = median process CPU time per "
      "step.\n",
      absl::GetFlag(FLAGS_eval) ? "Eval-mode forward (inference mode)"
                                : "Training step (fwd + bwd + AdamW)",
      threads, wait_policy != nullptr ? wait_policy : "(unset)",
      channels_last
          ? (absl::GetFlag(FLAGS_reference_nchw) ? "C++ channels-last, Python contiguous (NCHW)"
                                                 : "channels-last")
          : "contiguous (NCHW)",
      iters, warmup);
  std::printf("Memory, C++ side: %s; Python side: glibc's defaults.\n",
              allocator.description.c_str());
  return failures == 0 ? 0 : 1;
}
