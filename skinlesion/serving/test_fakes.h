// Test doubles for the serving core: a fake model whose logits encode a tag (by
// default the version number), a gate to hold Run() open, and a registry fixture.
#ifndef SKINLESION_SERVING_TEST_FAKES_H_
#define SKINLESION_SERVING_TEST_FAKES_H_

#include <algorithm>
#include <chrono>
#include <cmath>
#include <functional>
#include <condition_variable>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "nlohmann/json.hpp"
#include "opencv2/core.hpp"
#include "opencv2/imgcodecs.hpp"
#include "prometheus/registry.h"
#include "skinlesion/serving/serving.h"

namespace skinlesion::serving::testing {

// Shared by every FakeInstance a FakeModel's loader creates.
class FakeModel {
 public:
  // Holds every Run() (after it is recorded) until Open().
  void Close() {
    std::lock_guard<std::mutex> lock(mu_);
    closed_ = true;
    held_tag_.reset();
  }
  // Holds only the Run() calls of instances with this tag.
  void CloseTag(float tag) {
    std::lock_guard<std::mutex> lock(mu_);
    closed_ = true;
    held_tag_ = tag;
  }
  void Open() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      closed_ = false;
    }
    cv_.notify_all();
  }
  // Waits until `n` Run() calls have started since the last ResetRuns().
  bool WaitRuns(int n, std::chrono::milliseconds timeout = std::chrono::seconds(10)) {
    std::unique_lock<std::mutex> lock(mu_);
    return cv_.wait_for(lock, timeout, [&] { return static_cast<int>(batch_sizes_.size()) >= n; });
  }
  void ResetRuns() {
    std::lock_guard<std::mutex> lock(mu_);
    batch_sizes_.clear();
  }
  std::vector<int> batch_sizes() const {
    std::lock_guard<std::mutex> lock(mu_);
    return batch_sizes_;
  }
  int loads(int64_t version) const {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = loads_.find(version);
    return it == loads_.end() ? 0 : it->second;
  }

  // Holds every Explain() (after it is counted) until OpenExplain().
  void CloseExplain() {
    std::lock_guard<std::mutex> lock(mu_);
    explain_closed_ = true;
  }
  void OpenExplain() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      explain_closed_ = false;
    }
    cv_.notify_all();
  }
  // Waits until `n` Explain() calls have started.
  bool WaitExplains(int n, std::chrono::milliseconds timeout = std::chrono::seconds(10)) {
    std::unique_lock<std::mutex> lock(mu_);
    return cv_.wait_for(lock, timeout, [&] { return explains_ >= n; });
  }
  int explains() const {
    std::lock_guard<std::mutex> lock(mu_);
    return explains_;
  }

  // Manifest "fake": {"tag": x (logit 0; default: the version), "fail": "msg" (load
  // error), "fail_once": true (only the first load fails)}.
  ModelLoader Loader() {
    return [this](const ModelSpec& spec) -> absl::StatusOr<std::shared_ptr<ModelInstance>> {
      const nlohmann::json fake = spec.document.value("fake", nlohmann::json::object());
      int n;
      {
        std::lock_guard<std::mutex> lock(mu_);
        n = ++loads_[spec.version];
      }
      if (fake.contains("fail") && (!fake.value("fail_once", false) || n == 1)) {
        return absl::InternalError(fake["fail"].get<std::string>());
      }
      const float tag = fake.value("tag", static_cast<float>(spec.version));
      return std::shared_ptr<ModelInstance>(std::make_shared<Instance>(this, tag));
    };
  }

 private:
  class Instance : public ModelInstance {
   public:
    Instance(FakeModel* model, float tag) : model_(model), tag_(tag) {}
    absl::StatusOr<std::vector<float>> Run(const float* input, int n) override {
      {
        std::unique_lock<std::mutex> lock(model_->mu_);
        model_->batch_sizes_.push_back(n);
        model_->cv_.notify_all();
        model_->cv_.wait(lock, [&] {
          return !model_->closed_ || (model_->held_tag_.has_value() && *model_->held_tag_ != tag_);
        });
      }
      std::vector<float> logits(static_cast<size_t>(n) * kHam10000NumClasses, 0.0f);
      for (int i = 0; i < n; ++i) logits[static_cast<size_t>(i) * kHam10000NumClasses] = tag_;
      (void)input;
      return logits;
    }
    // A 2 x 3 map: method "fake:<tag>", heat[0] = target / 10, heat[1] = the first
    // input value clamped to [0, 1], the others 0.5.
    absl::StatusOr<Explanation> Explain(const float* input, int target_class) override {
      {
        std::unique_lock<std::mutex> lock(model_->mu_);
        ++model_->explains_;
        model_->cv_.notify_all();
        model_->cv_.wait(lock, [&] { return !model_->explain_closed_; });
      }
      Explanation e;
      e.method = absl::StrCat("fake:", tag_);
      e.width = 2;
      e.height = 3;
      e.heat.assign(6, 0.5f);
      e.heat[0] = target_class / 10.0f;
      e.heat[1] = std::min(1.0f, std::max(0.0f, input[0]));
      return e;
    }

   private:
    FakeModel* model_;
    float tag_;
  };

  mutable std::mutex mu_;
  std::condition_variable cv_;
  bool closed_ = false;
  std::optional<float> held_tag_;
  std::vector<int> batch_sizes_;
  std::map<int64_t, int> loads_;
  bool explain_closed_ = false;
  int explains_ = 0;
};

// Polls `pred` until it holds or `timeout` (real time: a safety net, not a bound
// a test asserts) has passed.
inline bool WaitUntil(const std::function<bool()>& pred, absl::Duration timeout = absl::Seconds(10)) {
  const absl::Time until = absl::Now() + timeout;
  while (absl::Now() < until) {
    if (pred()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  return pred();
}

// Collects the results of requests (InferAsync callbacks), from any thread.
class Results {
 public:
  std::function<void(absl::StatusOr<InferResult>)> Callback() {
    return [this](absl::StatusOr<InferResult> r) {
      std::lock_guard<std::mutex> lock(mu_);
      results_.push_back(std::move(r));
    };
  }
  bool WaitCount(size_t n) {
    return WaitUntil([&] {
      std::lock_guard<std::mutex> lock(mu_);
      return results_.size() >= n;
    });
  }
  std::vector<absl::StatusOr<InferResult>> Get() {
    std::lock_guard<std::mutex> lock(mu_);
    return results_;
  }

 private:
  std::mutex mu_;
  std::vector<absl::StatusOr<InferResult>> results_;
};

// softmax([tag, 0, ..., 0] / T): the fake model's calibrated probabilities.
inline std::array<float, kHam10000NumClasses> FakeProbabilities(float tag, double temperature = 1.0) {
  std::array<float, kHam10000NumClasses> p{};
  const double e0 = std::exp(tag / temperature);
  const double sum = e0 + (kHam10000NumClasses - 1);
  for (int k = 0; k < kHam10000NumClasses; ++k) p[k] = static_cast<float>((k == 0 ? e0 : 1.0) / sum);
  return p;
}

// A small PNG (gradient) as bytes.
inline std::string PngBytes(int width = 20, int height = 16) {
  cv::Mat rgb(height, width, CV_8UC3);
  for (int y = 0; y < height; ++y) {
    for (int x = 0; x < width; ++x) rgb.at<cv::Vec3b>(y, x) = cv::Vec3b(x * 10, y * 12, 100);
  }
  std::vector<unsigned char> buf;
  cv::imencode(".png", rgb, buf);
  return std::string(buf.begin(), buf.end());
}

// The same gradient as a JPEG (".jpg") or another format OpenCV writes.
inline std::string EncodedBytes(const std::string& ext, int width, int height) {
  cv::Mat rgb(height, width, CV_8UC3);
  for (int y = 0; y < height; ++y) {
    for (int x = 0; x < width; ++x) {
      rgb.at<cv::Vec3b>(y, x) = cv::Vec3b((x * 255) / width, (y * 255) / height, 100);
    }
  }
  std::vector<unsigned char> buf;
  cv::imencode(ext, rgb, buf);
  return std::string(buf.begin(), buf.end());
}

// The value of a series: counter / gauge value, histogram sample count; -1 when absent.
inline double MetricValue(prometheus::Registry& registry, const std::string& name,
                          const std::map<std::string, std::string>& labels) {
  for (const prometheus::MetricFamily& family : registry.Collect()) {
    if (family.name != name) continue;
    for (const prometheus::ClientMetric& metric : family.metric) {
      std::map<std::string, std::string> have;
      for (const auto& l : metric.label) have[l.name] = l.value;
      if (have != labels) continue;
      switch (family.type) {
        case prometheus::MetricType::Counter:
          return metric.counter.value;
        case prometheus::MetricType::Gauge:
          return metric.gauge.value;
        case prometheus::MetricType::Histogram:
          return static_cast<double>(metric.histogram.sample_count);
        default:
          return -1;
      }
    }
  }
  return -1;
}

// Number of series of a family.
inline int SeriesCount(prometheus::Registry& registry, const std::string& name) {
  for (const prometheus::MetricFamily& family : registry.Collect()) {
    if (family.name == name) return static_cast<int>(family.metric.size());
  }
  return 0;
}

}  // namespace skinlesion::serving::testing

#endif  // SKINLESION_SERVING_TEST_FAKES_H_
