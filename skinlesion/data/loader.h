// DataLoader: decodes, augments and normalises samples into batch tensors on
// worker threads, in the order a Sampler gives, with results that never depend on
// the number of workers.
//
// Each sample at position `pos` of epoch `epoch`'s order is loaded as
//   DecodeImageFile(path, decode_limits)                      RGB uint8
//   MakePreset(augmentation, preprocess.size).Apply(img, rng)  rng = Rng(DeriveSeed(
//                                                                {seed, epoch, pos}))
//   PreprocessInto(img, preprocess, <row of the batch tensor>) float CHW
// Workers write straight into the batch tensor's memory; a batch is handed out once
// all its rows are done, batches strictly in order. The randomness is keyed by the
// position in the epoch (not the dataset index), so a sample drawn twice in one
// epoch by a with-replacement sampler gets two different augmentations.
//
// Workers claim single samples, not whole batches, so every worker helps finish the
// batch the consumer waits for; at most `prefetch_batches` batches are in flight
// (being filled or ready) at a time, which bounds memory. The memory of a batch's
// images is reused for a later batch once the caller holds no reference to it
// (tensor, view or storage); a batch, or any view of it, that the caller keeps is
// never overwritten.
//
//   SL_ASSIGN_OR_RETURN(auto loader, DataLoader::Create(
//       train, std::make_unique<ShuffleSampler>(train.size(), seed), options));
//   for (int64_t epoch = 0; epoch < epochs; ++epoch) {
//     SL_RETURN_IF_ERROR(loader->StartEpoch(epoch));
//     while (true) {
//       SL_ASSIGN_OR_RETURN(std::optional<Batch> batch, loader->Next());
//       if (!batch) break;
//       ... batch->images, batch->labels ...
//     }
//   }
//
// Errors of one sample (unreadable or corrupt file, over the decode limits) make
// Next() return that error, naming the image path, for the batch that holds it;
// that batch is dropped and the next call goes on with the following batch.
// A DataLoader is used from one thread at a time (its own workers aside).
#ifndef SKINLESION_DATA_LOADER_H_
#define SKINLESION_DATA_LOADER_H_

#include <ATen/core/Tensor.h>

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "skinlesion/data/catalogue.h"
#include "skinlesion/data/sampler.h"
#include "skinlesion/image/augment.h"
#include "skinlesion/image/decode.h"
#include "skinlesion/image/preprocess.h"

namespace skinlesion::data {

struct Batch {
  at::Tensor images;             // float32 [B, 3, size, size], normalised.
  at::Tensor labels;             // int64 [B].
  std::vector<int64_t> indices;  // Index into the loader's samples of each row.
  int64_t epoch = 0;
  int64_t batch_index = 0;  // 0-based position of the batch in its epoch.
};

struct LoaderOptions {
  // Samples per batch (>= 1). The last batch of an epoch is smaller unless drop_last.
  int batch_size = 32;
  // Worker threads; 0 loads each batch inline in Next().
  int num_workers = 0;
  // Batches being filled or waiting for the consumer at any time (>= 1).
  int prefetch_batches = 2;
  bool drop_last = false;
  uint64_t seed = 0;
  // An augmentation preset of MakePreset(), one of PresetNames().
  std::string augmentation = "none";
  PreprocessOptions preprocess;
  DecodeLimits decode_limits;
};

class DataLoader {
 public:
  // InvalidArgument for bad options (batch_size, num_workers, prefetch_batches,
  // preprocess options, an unknown preset) or a sampler whose size is negative.
  // Sample paths are checked when they are loaded.
  static absl::StatusOr<std::unique_ptr<DataLoader>> Create(std::vector<Sample> samples,
                                                            std::unique_ptr<Sampler> sampler,
                                                            const LoaderOptions& options);
  ~DataLoader();  // Stops and joins the workers; batches already returned stay valid.
  DataLoader(const DataLoader&) = delete;
  DataLoader& operator=(const DataLoader&) = delete;

  // Begins `epoch` (any value >= 0), abandoning what is left of the current one.
  // InvalidArgument when the sampler returns an index outside the samples.
  absl::Status StartEpoch(int64_t epoch);

  // The next batch of the epoch, std::nullopt at its end; FailedPrecondition before
  // the first StartEpoch(); a sample's error as described above.
  absl::StatusOr<std::optional<Batch>> Next();

  // Batches per epoch.
  int64_t num_batches() const;
  const std::vector<Sample>& samples() const { return samples_; }
  const LoaderOptions& options() const { return options_; }

 private:
  struct Slot;  // A batch being filled.

  DataLoader(std::vector<Sample> samples, std::unique_ptr<Sampler> sampler,
             const LoaderOptions& options, Pipeline pipeline);
  // Allocates (or recycles) the tensors of batch `batch_index` of the current epoch.
  // Called with mu_ held.
  std::shared_ptr<Slot> NewSlot(int64_t batch_index);
  // Loads sample `index` (at position `position` of `epoch`) into `out`.
  absl::Status LoadSample(int64_t index, int64_t epoch, int64_t position, float* out) const;
  void WorkerLoop();
  static absl::StatusOr<std::optional<Batch>> Finish(Slot& slot);

  const std::vector<Sample> samples_;
  const std::unique_ptr<Sampler> sampler_;
  const LoaderOptions options_;
  const Pipeline pipeline_;
  const int64_t sample_floats_;  // 3 * size * size.

  std::mutex mu_;
  std::condition_variable work_cv_;  // Workers: work or stop.
  std::condition_variable done_cv_;  // Consumer: a batch completed.
  bool started_ = false;
  bool stop_ = false;
  uint64_t generation_ = 0;  // Bumped by StartEpoch; stale work is discarded.
  int64_t epoch_ = 0;
  std::vector<int64_t> order_;                // This epoch's sample indices.
  int64_t num_positions_ = 0;                 // Positions used (order_.size() minus any dropped).
  int64_t next_claim_ = 0;                    // Next position a worker takes.
  int64_t next_out_ = 0;                      // Next batch Next() returns.
  std::deque<std::shared_ptr<Slot>> window_;  // Batches next_out_, next_out_ + 1, ...
  // Image tensors handed out recently. One the consumer no longer references (no
  // tensor, view or storage reference left but this one) is reused for a new batch:
  // fresh memory costs a page fault per 4 KiB on first write (docs/performance.md).
  std::deque<at::Tensor> recycled_;
  std::vector<std::thread> workers_;
};

}  // namespace skinlesion::data

#endif  // SKINLESION_DATA_LOADER_H_
