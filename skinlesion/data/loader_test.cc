#include "skinlesion/data/loader.h"

#include <torch/torch.h>

#include <algorithm>
#include <filesystem>
#include <numeric>
#include <set>
#include <vector>

#include "gtest/gtest.h"
#include "skinlesion/common/logging.h"
#include "skinlesion/data/ham10000.h"
#include "skinlesion/image/decode.h"
#include "skinlesion/image/preprocess.h"
#include "skinlesion/testing/testing.h"

namespace skinlesion::data {
namespace {

using ::skinlesion::testing::IsOk;
using ::skinlesion::testing::SourcePath;
using ::skinlesion::testing::StatusIs;
using ::skinlesion::testing::TempDir;
using ::skinlesion::testing::WriteFile;
using ::testing::HasSubstr;

constexpr int kSize = 64;

// The 14 fixture images (two per class).
std::vector<Sample> FixtureSamples(const std::string& image_dir = "") {
  auto catalogue =
      LoadHam10000(SourcePath("tests/fixtures/ham10000/metadata_subset.csv"),
                   image_dir.empty() ? SourcePath("tests/fixtures/ham10000/images") : image_dir);
  SL_CHECK(catalogue.ok()) << catalogue.status();
  SL_CHECK(catalogue->samples.size() == 14) << catalogue->samples.size();
  return catalogue->samples;
}

LoaderOptions Options(int workers, const std::string& augmentation = "medical") {
  LoaderOptions options;
  options.batch_size = 3;
  options.num_workers = workers;
  options.seed = 1234;
  options.augmentation = augmentation;
  options.preprocess.size = kSize;
  return options;
}

std::unique_ptr<DataLoader> MakeLoader(const LoaderOptions& options, bool shuffle = true,
                                       std::vector<Sample> samples = FixtureSamples()) {
  const int64_t n = static_cast<int64_t>(samples.size());
  std::unique_ptr<Sampler> sampler;
  if (shuffle) {
    sampler = std::make_unique<ShuffleSampler>(n, 99);
  } else {
    sampler = std::make_unique<SequentialSampler>(n);
  }
  auto loader = DataLoader::Create(std::move(samples), std::move(sampler), options);
  SL_CHECK(loader.ok()) << loader.status();
  return *std::move(loader);
}

std::vector<Batch> Epoch(DataLoader& loader, int64_t epoch) {
  std::vector<Batch> batches;
  EXPECT_THAT(loader.StartEpoch(epoch), IsOk());
  while (true) {
    auto batch = loader.Next();
    EXPECT_THAT(batch, IsOk());
    if (!batch.ok() || !batch->has_value()) break;
    batches.push_back(**std::move(batch));
  }
  return batches;
}

void ExpectSameBatches(const std::vector<Batch>& a, const std::vector<Batch>& b) {
  ASSERT_EQ(a.size(), b.size());
  for (size_t i = 0; i < a.size(); ++i) {
    EXPECT_EQ(a[i].indices, b[i].indices) << "batch " << i;
    EXPECT_TRUE(torch::equal(a[i].labels, b[i].labels)) << "batch " << i;
    EXPECT_TRUE(torch::equal(a[i].images, b[i].images)) << "batch " << i;
  }
}

TEST(LoaderTest, AnEpochVisitsEverySampleOnceInShapedBatches) {
  for (int workers : {0, 2}) {
    auto loader = MakeLoader(Options(workers));
    EXPECT_EQ(loader->num_batches(), 5);
    const std::vector<Batch> batches = Epoch(*loader, 0);
    ASSERT_EQ(batches.size(), 5u);
    std::vector<int64_t> seen;
    for (size_t b = 0; b < batches.size(); ++b) {
      const Batch& batch = batches[b];
      const int64_t rows = b + 1 < batches.size() ? 3 : 2;  // 14 = 4 * 3 + 2.
      EXPECT_EQ(batch.images.sizes(), (std::vector<int64_t>{rows, 3, kSize, kSize}));
      EXPECT_EQ(batch.images.scalar_type(), torch::kFloat);
      EXPECT_EQ(batch.labels.sizes(), (std::vector<int64_t>{rows}));
      EXPECT_EQ(batch.labels.scalar_type(), torch::kLong);
      EXPECT_EQ(batch.epoch, 0);
      EXPECT_EQ(batch.batch_index, static_cast<int64_t>(b));
      ASSERT_EQ(static_cast<int64_t>(batch.indices.size()), rows);
      for (int64_t r = 0; r < rows; ++r) {
        EXPECT_EQ(batch.labels[r].item<int64_t>(), loader->samples()[batch.indices[r]].label);
      }
      EXPECT_TRUE(torch::isfinite(batch.images).all().item<bool>());
      seen.insert(seen.end(), batch.indices.begin(), batch.indices.end());
    }
    std::vector<int64_t> sorted = seen;
    std::sort(sorted.begin(), sorted.end());
    std::vector<int64_t> all(14);
    std::iota(all.begin(), all.end(), 0);
    EXPECT_EQ(sorted, all) << "workers " << workers;
    EXPECT_NE(seen, all);  // Shuffled.
    // The epoch is over until the next StartEpoch.
    auto after = loader->Next();
    ASSERT_THAT(after, IsOk());
    EXPECT_FALSE(after->has_value());
  }
}

TEST(LoaderTest, DropLastDropsThePartialBatch) {
  LoaderOptions options = Options(1);
  options.drop_last = true;
  auto loader = MakeLoader(options);
  EXPECT_EQ(loader->num_batches(), 4);
  const std::vector<Batch> batches = Epoch(*loader, 0);
  ASSERT_EQ(batches.size(), 4u);
  for (const Batch& b : batches) EXPECT_EQ(b.images.size(0), 3);
}

TEST(LoaderTest, SameSeedGivesIdenticalBatches) {
  auto a = MakeLoader(Options(2));
  auto b = MakeLoader(Options(2));
  ExpectSameBatches(Epoch(*a, 3), Epoch(*b, 3));
  // Repeating an epoch on the same loader too.
  ExpectSameBatches(Epoch(*a, 1), Epoch(*a, 1));
  LoaderOptions other = Options(2);
  other.seed = 4321;
  auto c = MakeLoader(other);
  const std::vector<Batch> x = Epoch(*a, 3), y = Epoch(*c, 3);
  ASSERT_EQ(x.size(), y.size());
  EXPECT_EQ(x[0].indices, y[0].indices);                 // Same sampler ...
  EXPECT_FALSE(torch::equal(x[0].images, y[0].images));  // ... other augmentation.
}

TEST(LoaderTest, WorkerCountDoesNotChangeTheBatches) {
  const std::vector<Batch> inline_batches = Epoch(*MakeLoader(Options(0)), 2);
  ExpectSameBatches(inline_batches, Epoch(*MakeLoader(Options(1)), 2));
  ExpectSameBatches(inline_batches, Epoch(*MakeLoader(Options(2)), 2));
  LoaderOptions many = Options(3);
  many.prefetch_batches = 1;
  ExpectSameBatches(inline_batches, Epoch(*MakeLoader(many), 2));
}

TEST(LoaderTest, EpochsGetDifferentAugmentations) {
  auto loader = MakeLoader(Options(2), /*shuffle=*/false);
  const std::vector<Batch> e0 = Epoch(*loader, 0);
  const std::vector<Batch> e1 = Epoch(*loader, 1);
  ASSERT_EQ(e0.size(), e1.size());
  for (size_t b = 0; b < e0.size(); ++b) {
    EXPECT_EQ(e0[b].indices, e1[b].indices);
    EXPECT_EQ(e1[b].epoch, 1);
    for (int64_t r = 0; r < e0[b].images.size(0); ++r) {
      EXPECT_FALSE(torch::equal(e0[b].images[r], e1[b].images[r])) << b << "/" << r;
    }
  }
  // Without augmentation the epochs are identical.
  auto plain = MakeLoader(Options(2, "none"), /*shuffle=*/false);
  ExpectSameBatches(Epoch(*plain, 0), Epoch(*plain, 1));
}

TEST(LoaderTest, WithoutAugmentationRowsArePreprocessedImages) {
  auto loader = MakeLoader(Options(2, "none"), /*shuffle=*/false);
  const std::vector<Batch> batches = Epoch(*loader, 0);
  ASSERT_FALSE(batches.empty());
  const Batch& batch = batches[1];
  for (int64_t r = 0; r < batch.images.size(0); ++r) {
    const Sample& s = loader->samples()[batch.indices[r]];
    auto rgb = DecodeImageFile(s.path);
    ASSERT_THAT(rgb, IsOk());
    torch::Tensor expected = torch::empty({3, kSize, kSize});
    PreprocessInto(*rgb, loader->options().preprocess, expected.data_ptr<float>());
    EXPECT_TRUE(torch::equal(batch.images[r], expected)) << s.path;
  }
}

TEST(LoaderTest, ACorruptImageIsAnErrorNamingTheFile) {
  TempDir dir;
  for (const auto& e :
       std::filesystem::directory_iterator(SourcePath("tests/fixtures/ham10000/images"))) {
    std::filesystem::copy_file(e.path(), dir.Join(e.path().filename().string()));
  }
  const std::string corrupt = dir.Join("ISIC_0029360.jpg");  // Sample 12 of 14.
  WriteFile(corrupt, "\xFF\xD8\xFF\xE0 this is not really a JPEG");
  for (int workers : {0, 2}) {
    auto loader = MakeLoader(Options(workers), /*shuffle=*/false, FixtureSamples(dir.path()));
    ASSERT_THAT(loader->StartEpoch(0), IsOk());
    int ok_batches = 0, errors = 0;
    while (true) {
      auto batch = loader->Next();
      if (!batch.ok()) {
        ++errors;
        EXPECT_THAT(batch, StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr(corrupt)));
        EXPECT_THAT(batch.status().message(), HasSubstr("batch 4 row 0"));
        continue;
      }
      if (!batch->has_value()) break;
      ++ok_batches;
    }
    EXPECT_EQ(errors, 1) << "workers " << workers;
    EXPECT_EQ(ok_batches, 4) << "workers " << workers;
  }
  // A file that disappeared.
  std::vector<Sample> samples = FixtureSamples(dir.path());
  samples[0].path = dir.Join("gone.jpg");
  auto loader = MakeLoader(Options(1), /*shuffle=*/false, samples);
  ASSERT_THAT(loader->StartEpoch(0), IsOk());
  EXPECT_THAT(loader->Next(), StatusIs(absl::StatusCode::kNotFound, HasSubstr("gone.jpg")));
}

TEST(LoaderTest, RestartingAnEpochMidwayStartsClean) {
  auto loader = MakeLoader(Options(2));
  const std::vector<Batch> full = Epoch(*loader, 5);
  ASSERT_THAT(loader->StartEpoch(5), IsOk());
  ASSERT_THAT(loader->Next(), IsOk());  // Abandon after one batch, workers still busy.
  ExpectSameBatches(full, Epoch(*loader, 5));
}

TEST(LoaderTest, BatchMemoryIsReusedOnlyOnceReleased) {
  for (int workers : {0, 2}) {
    LoaderOptions options = Options(workers);
    options.batch_size = 2;  // 7 batches of the same shape.
    auto loader = MakeLoader(options, /*shuffle=*/false);
    const std::vector<Batch> expected = Epoch(*loader, 0);
    ASSERT_THAT(loader->StartEpoch(0), IsOk());
    // Keep a view of batch 0 and a copy of what it showed; drop everything else.
    torch::Tensor view;
    torch::Tensor first_rows;
    std::set<const void*> buffers;
    int batches = 0;
    while (true) {
      auto batch = loader->Next();
      ASSERT_THAT(batch, IsOk());
      if (!batch->has_value()) break;
      const Batch& b = **batch;
      EXPECT_TRUE(torch::equal(b.images, expected[batches].images)) << batches;
      buffers.insert(b.images.data_ptr());
      if (batches == 0) {
        view = b.images.narrow(0, 0, 2);
        first_rows = view.clone();
      }
      ++batches;
    }
    EXPECT_EQ(batches, 7);
    EXPECT_TRUE(torch::equal(view, first_rows)) << "a held view was overwritten";
    EXPECT_LT(buffers.size(), 7u) << "no buffer was reused, workers " << workers;
  }
}

TEST(LoaderTest, BadUseIsAnError) {
  auto loader = MakeLoader(Options(1));
  EXPECT_THAT(loader->Next(),
              StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("StartEpoch")));
  EXPECT_THAT(loader->StartEpoch(-1), StatusIs(absl::StatusCode::kInvalidArgument, ::testing::_));

  auto make = [](const LoaderOptions& options, int64_t sampler_size = 14) {
    return DataLoader::Create(FixtureSamples(), std::make_unique<SequentialSampler>(sampler_size),
                              options);
  };
  LoaderOptions bad = Options(1);
  bad.augmentation = "heavy";
  EXPECT_THAT(make(bad), StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("heavy")));
  bad = Options(1);
  bad.batch_size = 0;
  EXPECT_THAT(make(bad), StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("batch_size")));
  bad = Options(1);
  bad.num_workers = -1;
  EXPECT_THAT(make(bad), StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("num_workers")));
  bad = Options(1);
  bad.prefetch_batches = 0;
  EXPECT_THAT(make(bad), StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("prefetch")));
  bad = Options(1);
  bad.preprocess.size = 0;
  EXPECT_THAT(make(bad), StatusIs(absl::StatusCode::kInvalidArgument, ::testing::_));

  auto too_big = make(Options(1), 20);  // The sampler reaches past the 14 samples.
  ASSERT_THAT(too_big, IsOk());
  EXPECT_THAT((*too_big)->StartEpoch(0),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("outside the 14 samples")));
}

}  // namespace
}  // namespace skinlesion::data
