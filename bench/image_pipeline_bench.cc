// Image pipeline throughput: the DataLoader (decode + `none` or `medical`
// augmentation + preprocess to 224 + normalise into batch tensors) with 1 and 2
// workers, against a plain reference loop of cv::imread + cv::resize on one thread,
// all in the same run on the same images. Prints a markdown table of medians, with
// the CPUs the process actually got (CPU time / wall time): on a shared machine a
// second worker can only help when a second core is free.
//
//   image_pipeline_bench [--data=../shared/data/ham10000] [--images=1000]
//                        [--repeats=5] [--batch_size=32] [--size=224]
//
// Exits 0 with "skipped: no data" when the dataset is absent (a fresh clone).
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iterator>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/string_view.h"
#include "opencv2/core.hpp"
#include "opencv2/imgcodecs.hpp"
#include "opencv2/imgproc.hpp"
#include "skinlesion/common/rng.h"
#include "skinlesion/data/ham10000.h"
#include "skinlesion/data/loader.h"
#include "skinlesion/data/sampler.h"
#include "skinlesion/image/augment.h"
#include "skinlesion/image/decode.h"
#include "skinlesion/image/preprocess.h"

namespace {

using Clock = std::chrono::steady_clock;
namespace data = skinlesion::data;

struct Flags {
  std::string data = "../shared/data/ham10000";
  int images = 1000;
  int repeats = 5;
  int batch_size = 32;
  int size = 224;
};

bool ParseFlags(int argc, char** argv, Flags* flags) {
  for (int i = 1; i < argc; ++i) {
    const absl::string_view arg = argv[i];
    auto value = [&](absl::string_view name) -> const char* {
      return arg.substr(0, name.size()) == name ? argv[i] + name.size() : nullptr;
    };
    if (const char* v = value("--data=")) {
      flags->data = v;
    } else if (const char* v = value("--images=")) {
      if (!absl::SimpleAtoi(v, &flags->images) || flags->images < 1) return false;
    } else if (const char* v = value("--repeats=")) {
      if (!absl::SimpleAtoi(v, &flags->repeats) || flags->repeats < 1) return false;
    } else if (const char* v = value("--batch_size=")) {
      if (!absl::SimpleAtoi(v, &flags->batch_size) || flags->batch_size < 1) return false;
    } else if (const char* v = value("--size=")) {
      if (!absl::SimpleAtoi(v, &flags->size) || flags->size < 1) return false;
    } else {
      return false;
    }
  }
  return true;
}

// The 1-minute load average (other processes compete for the cores).
std::string LoadAverage() {
  std::ifstream in("/proc/loadavg");
  std::string one_minute;
  in >> one_minute;
  return one_minute.empty() ? "?" : one_minute;
}

double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 == 1 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

struct Row {
  std::string pipeline;
  std::string threads;
  std::function<double(int64_t repeat)> run;  // One repeat; returns images per second.
  std::vector<double> rates = {};
  std::vector<double> cpus = {};  // Process CPU time / wall time of each repeat.
};

// CPU time of the whole process (all threads), seconds.
double ProcessCpuSeconds() {
  timespec ts;
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return static_cast<double>(ts.tv_sec) + 1e-9 * static_cast<double>(ts.tv_nsec);
}

[[noreturn]] void Die(const absl::Status& status) {
  std::fprintf(stderr, "%s\n", status.ToString().c_str());
  std::exit(1);
}

double Rate(size_t images, Clock::time_point start) {
  return static_cast<double>(images) / std::chrono::duration<double>(Clock::now() - start).count();
}

// The reference: cv::imread + cv::resize to size x size, one thread.
double ReferenceRate(const std::vector<data::Sample>& samples, int size) {
  const auto start = Clock::now();
  for (const data::Sample& s : samples) {
    cv::Mat bgr = cv::imread(s.path, cv::IMREAD_COLOR);
    if (bgr.empty()) Die(absl::DataLossError("cannot read " + s.path));
    cv::Mat resized;
    cv::resize(bgr, resized, cv::Size(size, size), 0, 0, cv::INTER_LINEAR);
  }
  return Rate(samples.size(), start);
}

// What a loader worker does per sample, as a plain loop on one thread into one
// reused buffer: the loader's own cost is the difference to the 1-worker loader.
double LoopRate(const std::vector<data::Sample>& samples, const data::LoaderOptions& options,
                const skinlesion::Pipeline& pipeline, int64_t epoch) {
  std::vector<float> out(size_t{3} * options.preprocess.size * options.preprocess.size);
  const auto start = Clock::now();
  for (size_t i = 0; i < samples.size(); ++i) {
    auto image = skinlesion::DecodeImageFile(samples[i].path, options.decode_limits);
    if (!image.ok()) Die(image.status());
    skinlesion::Rng rng(skinlesion::DeriveSeed({options.seed, static_cast<uint64_t>(epoch), i}));
    pipeline.Apply(*image, rng);
    skinlesion::PreprocessInto(*image, options.preprocess, out.data());
  }
  return Rate(samples.size(), start);
}

// One epoch of the loader.
double LoaderRate(data::DataLoader& loader, int64_t epoch) {
  const auto start = Clock::now();
  if (auto status = loader.StartEpoch(epoch); !status.ok()) Die(status);
  int64_t images = 0;
  while (true) {
    auto batch = loader.Next();
    if (!batch.ok()) Die(batch.status());
    if (!batch->has_value()) break;
    images += (*batch)->images.size(0);
  }
  return Rate(static_cast<size_t>(images), start);
}

}  // namespace

// How much parallel throughput the machine gives right now: the same fixed
// arithmetic on 1 thread and on 2 threads at once (each doing the same work);
// 2.0 means two real cores, 1.0 means the two threads shared one core's worth.
double ParallelCapacity() {
  auto spin = [] {
    volatile double sink = 0;
    double x = 0;
    for (long i = 0; i < 300000000L; ++i) x += static_cast<double>(i) * 0.5;
    sink = x;
    (void)sink;
  };
  const auto t0 = std::chrono::steady_clock::now();
  spin();
  const double one = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  const auto t1 = std::chrono::steady_clock::now();
  std::thread a(spin), b(spin);
  a.join();
  b.join();
  const double two = std::chrono::duration<double>(std::chrono::steady_clock::now() - t1).count();
  return 2.0 * one / two;
}

int main(int argc, char** argv) {
  Flags flags;
  if (!ParseFlags(argc, argv, &flags)) {
    std::fprintf(stderr,
                 "usage: %s [--data=DIR] [--images=N] [--repeats=N] [--batch_size=N] "
                 "[--size=N]\n",
                 argv[0]);
    return 2;
  }
  const std::string metadata = flags.data + "/HAM10000_metadata.csv";
  if (!std::filesystem::exists(metadata)) {
    std::printf("skipped: no data (%s not found)\n", metadata.c_str());
    return 0;
  }
  // One thread inside OpenCV everywhere: the reference is single-threaded by
  // definition and the loader gets its parallelism from its own workers.
  cv::setNumThreads(1);

  auto catalogue = data::LoadHam10000(metadata, flags.data);
  if (!catalogue.ok()) Die(catalogue.status());
  std::vector<data::Sample> samples = catalogue->samples;
  if (samples.size() > static_cast<size_t>(flags.images)) samples.resize(flags.images);
  // Warm the page cache so every measurement reads from memory.
  for (const data::Sample& s : samples) {
    std::ifstream in(s.path, std::ios::binary);
    std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  }

  std::vector<Row> rows;
  rows.push_back({"reference: cv::imread + cv::resize", "1",
                  [&](int64_t) { return ReferenceRate(samples, flags.size); }});
  std::vector<std::unique_ptr<data::DataLoader>> loaders;
  for (const char* preset : {"none", "medical"}) {
    data::LoaderOptions options;
    options.batch_size = flags.batch_size;
    options.seed = 1;
    options.augmentation = preset;
    options.preprocess.size = flags.size;
    auto pipeline = skinlesion::MakePreset(preset, flags.size);
    if (!pipeline.ok()) Die(pipeline.status());
    rows.push_back({absl::StrFormat("loop: decode + %s + preprocess", preset), "1",
                    [&samples, options, p = *pipeline](int64_t repeat) {
                      return LoopRate(samples, options, p, repeat);
                    }});
    for (int workers : {1, 2}) {
      options.num_workers = workers;
      options.prefetch_batches = 2 * workers;
      auto loader = data::DataLoader::Create(
          samples, std::make_unique<data::SequentialSampler>(samples.size()), options);
      if (!loader.ok()) Die(loader.status());
      data::DataLoader* l = loader->get();
      loaders.push_back(*std::move(loader));
      rows.push_back({absl::StrFormat("DataLoader: decode + %s + preprocess", preset),
                      absl::StrCat(workers, workers == 1 ? " worker" : " workers"),
                      [l](int64_t repeat) { return LoaderRate(*l, repeat); }});
    }
  }
  // Repeats go round the configurations so drifts in machine load hit all alike.
  const std::string load_before = LoadAverage();
  for (int r = 0; r < flags.repeats; ++r) {
    for (Row& row : rows) {
      const double cpu = ProcessCpuSeconds();
      const auto start = Clock::now();
      row.rates.push_back(row.run(r));
      row.cpus.push_back((ProcessCpuSeconds() - cpu) /
                         std::chrono::duration<double>(Clock::now() - start).count());
    }
  }

  const double reference = Median(rows.front().rates);
  std::printf(
      "%d images of %s at %dx%d, batch %d, %d repeats; %u hardware threads, load average "
      "%s before, %s after\n\n",
      static_cast<int>(samples.size()), flags.data.c_str(), flags.size, flags.size,
      flags.batch_size, flags.repeats, std::thread::hardware_concurrency(), load_before.c_str(),
      LoadAverage().c_str());
  std::printf(
      "| pipeline | threads | img/s (median) | min | max | vs reference | CPUs used | img per "
      "CPU-s |\n");
  std::printf("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n");
  for (const Row& row : rows) {
    const double median = Median(row.rates);
    std::vector<double> per_cpu;  // Images per CPU-second: the work, whatever the share.
    for (size_t r = 0; r < row.rates.size(); ++r) per_cpu.push_back(row.rates[r] / row.cpus[r]);
    std::printf("| %s | %s | %.0f | %.0f | %.0f | %.2fx | %.2f | %.0f |\n", row.pipeline.c_str(),
                row.threads.c_str(), median, *std::min_element(row.rates.begin(), row.rates.end()),
                *std::max_element(row.rates.begin(), row.rates.end()), median / reference,
                Median(row.cpus), Median(per_cpu));
  }
  const double capacity = ParallelCapacity();
  for (size_t i = 2; i + 1 < rows.size(); i += 3) {
    const double scaling = Median(rows[i + 1].rates) / Median(rows[i].rates);
    std::printf("\n%s: 2 workers / 1 worker = %.2fx (%.0f%% of the machine's parallel capacity), "
                "1 worker / loop = %.2fx",
                rows[i].pipeline.c_str(), scaling, 100 * scaling / capacity,
                Median(rows[i].rates) / Median(rows[i - 1].rates));
  }
  std::printf("\nparallel capacity now: %.2fx (2 threads of pure arithmetic vs 1; 2.00 = two free cores)\n",
              capacity);
  return 0;
}
