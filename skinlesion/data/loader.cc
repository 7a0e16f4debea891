#include "skinlesion/data/loader.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <exception>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "opencv2/core.hpp"
#include "skinlesion/common/rng.h"
#include "skinlesion/common/status.h"

namespace skinlesion::data {

struct DataLoader::Slot {
  int64_t batch_index = 0;
  at::Tensor images;
  at::Tensor labels;
  std::vector<int64_t> indices;
  int pending = 0;      // Rows not loaded yet.
  absl::Status status;  // Error of the lowest failing row.
  int64_t error_row = -1;
};

absl::StatusOr<std::unique_ptr<DataLoader>> DataLoader::Create(std::vector<Sample> samples,
                                                               std::unique_ptr<Sampler> sampler,
                                                               const LoaderOptions& options) {
  if (options.batch_size < 1) {
    return absl::InvalidArgumentError(absl::StrCat("batch_size ", options.batch_size, " < 1"));
  }
  if (options.num_workers < 0) {
    return absl::InvalidArgumentError(absl::StrCat("num_workers ", options.num_workers, " < 0"));
  }
  if (options.prefetch_batches < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("prefetch_batches ", options.prefetch_batches, " < 1"));
  }
  if (sampler == nullptr || sampler->size() < 0) {
    return absl::InvalidArgumentError("the loader needs a sampler");
  }
  SL_RETURN_IF_ERROR(ValidatePreprocessOptions(options.preprocess));
  SL_ASSIGN_OR_RETURN(Pipeline pipeline, MakePreset(options.augmentation, options.preprocess.size));
  return std::unique_ptr<DataLoader>(
      new DataLoader(std::move(samples), std::move(sampler), options, std::move(pipeline)));
}

DataLoader::DataLoader(std::vector<Sample> samples, std::unique_ptr<Sampler> sampler,
                       const LoaderOptions& options, Pipeline pipeline)
    : samples_(std::move(samples)),
      sampler_(std::move(sampler)),
      options_(options),
      pipeline_(std::move(pipeline)),
      sample_floats_(int64_t{3} * options.preprocess.size * options.preprocess.size) {
  for (int i = 0; i < options_.num_workers; ++i) workers_.emplace_back([this] { WorkerLoop(); });
}

DataLoader::~DataLoader() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  work_cv_.notify_all();
  for (std::thread& t : workers_) t.join();
}

int64_t DataLoader::num_batches() const {
  const int64_t n = sampler_->size();
  const int64_t b = options_.batch_size;
  return options_.drop_last ? n / b : (n + b - 1) / b;
}

absl::Status DataLoader::StartEpoch(int64_t epoch) {
  if (epoch < 0) return absl::InvalidArgumentError(absl::StrCat("epoch ", epoch, " < 0"));
  std::vector<int64_t> order = sampler_->EpochIndices(epoch);
  const int64_t n = static_cast<int64_t>(samples_.size());
  for (int64_t index : order) {
    if (index < 0 || index >= n) {
      return absl::InvalidArgumentError(
          absl::StrCat("sampler index ", index, " outside the ", n, " samples"));
    }
  }
  {
    std::lock_guard<std::mutex> lock(mu_);
    ++generation_;
    started_ = true;
    epoch_ = epoch;
    order_ = std::move(order);
    num_positions_ =
        std::min<int64_t>(static_cast<int64_t>(order_.size()), num_batches() * options_.batch_size);
    next_claim_ = 0;
    next_out_ = 0;
    window_.clear();  // Workers still loading an abandoned row hold their slot alive.
  }
  work_cv_.notify_all();
  return absl::OkStatus();
}

std::shared_ptr<DataLoader::Slot> DataLoader::NewSlot(int64_t batch_index) {
  auto slot = std::make_shared<Slot>();
  slot->batch_index = batch_index;
  const int64_t first = batch_index * options_.batch_size;
  const int64_t rows = std::min<int64_t>(options_.batch_size, num_positions_ - first);
  const int64_t size = options_.preprocess.size;
  const std::vector<int64_t> shape = {rows, 3, size, size};
  for (auto it = recycled_.begin(); it != recycled_.end(); ++it) {
    // Only this reference left: nobody else can take a new one, so reuse is safe.
    if (it->use_count() == 1 && it->storage().use_count() == 1 && it->sizes() == shape) {
      slot->images = std::move(*it);
      recycled_.erase(it);
      break;
    }
  }
  if (!slot->images.defined()) {
    slot->images = at::empty(shape, at::TensorOptions().dtype(at::kFloat));
  }
  slot->labels = at::empty({rows}, at::TensorOptions().dtype(at::kLong));
  slot->indices.assign(order_.begin() + first, order_.begin() + first + rows);
  int64_t* labels = slot->labels.data_ptr<int64_t>();
  for (int64_t r = 0; r < rows; ++r) labels[r] = samples_[slot->indices[r]].label;
  slot->pending = static_cast<int>(rows);
  return slot;
}

absl::Status DataLoader::LoadSample(int64_t index, int64_t epoch, int64_t position,
                                    float* out) const {
  const Sample& sample = samples_[index];
  try {
    auto image = DecodeImageFile(sample.path, options_.decode_limits);
    if (!image.ok()) {
      if (absl::StrContains(image.status().message(), sample.path)) return image.status();
      return Annotate(image.status(), sample.path);
    }
    if (!pipeline_.empty()) {
      Rng rng(DeriveSeed(
          {options_.seed, static_cast<uint64_t>(epoch), static_cast<uint64_t>(position)}));
      pipeline_.Apply(*image, rng);
    }
    PreprocessInto(*image, options_.preprocess, out);
  } catch (const std::exception& e) {  // cv::Exception, std::bad_alloc.
    return absl::InternalError(absl::StrCat(sample.path, ": ", e.what()));
  }
  return absl::OkStatus();
}

void DataLoader::WorkerLoop() {
  std::unique_lock<std::mutex> lock(mu_);
  while (true) {
    if (stop_) return;
    const int64_t limit =
        std::min(num_positions_, (next_out_ + options_.prefetch_batches) * options_.batch_size);
    if (next_claim_ >= limit) {
      work_cv_.wait(lock);
      continue;
    }
    const int64_t position = next_claim_++;
    const int64_t batch_index = position / options_.batch_size;
    const int64_t row = position - batch_index * options_.batch_size;
    // Claims go in order, so the batch is either in the window or the next one.
    const size_t w = static_cast<size_t>(batch_index - next_out_);
    if (w == window_.size()) window_.push_back(NewSlot(batch_index));
    std::shared_ptr<Slot> slot = window_[w];
    const uint64_t generation = generation_;
    const int64_t epoch = epoch_;
    const int64_t index = slot->indices[row];
    float* out = slot->images.data_ptr<float>() + row * sample_floats_;

    lock.unlock();
    absl::Status status = LoadSample(index, epoch, position, out);
    lock.lock();

    if (generation != generation_) continue;  // Abandoned epoch.
    if (!status.ok() && (slot->status.ok() || row < slot->error_row)) {
      slot->status = std::move(status);
      slot->error_row = row;
    }
    if (--slot->pending == 0) done_cv_.notify_all();
  }
}

absl::StatusOr<std::optional<Batch>> DataLoader::Finish(Slot& slot) {
  if (!slot.status.ok()) {
    return Annotate(slot.status, "batch ", slot.batch_index, " row ", slot.error_row);
  }
  return std::optional<Batch>(Batch{std::move(slot.images), std::move(slot.labels),
                                    std::move(slot.indices), 0, slot.batch_index});
}

absl::StatusOr<std::optional<Batch>> DataLoader::Next() {
  std::unique_lock<std::mutex> lock(mu_);
  if (!started_) return absl::FailedPreconditionError("call StartEpoch() before Next()");
  if (next_out_ >= num_batches()) return std::optional<Batch>();
  const int64_t epoch = epoch_;
  std::shared_ptr<Slot> slot;
  if (workers_.empty()) {
    slot = NewSlot(next_out_);
    ++next_out_;
    lock.unlock();
    const int64_t first = slot->batch_index * options_.batch_size;
    float* images = slot->images.data_ptr<float>();
    for (size_t row = 0; row < slot->indices.size() && slot->status.ok(); ++row) {
      slot->status = LoadSample(slot->indices[row], epoch, first + static_cast<int64_t>(row),
                                images + static_cast<int64_t>(row) * sample_floats_);
      slot->error_row = static_cast<int64_t>(row);
    }
  } else {
    done_cv_.wait(lock, [&] { return !window_.empty() && window_.front()->pending == 0; });
    slot = std::move(window_.front());
    window_.pop_front();
    ++next_out_;
    lock.unlock();
    work_cv_.notify_all();  // The window moved on.
  }
  auto batch = Finish(*slot);
  if (batch.ok()) {
    (*batch)->epoch = epoch;
    lock.lock();
    recycled_.push_back((*batch)->images);
    if (recycled_.size() > static_cast<size_t>(options_.prefetch_batches) + 2) {
      recycled_.pop_front();
    }
  }
  return batch;
}

}  // namespace skinlesion::data
