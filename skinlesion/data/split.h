// Lesion-disjoint, class-stratified dataset splits that can be saved and repeated.
//
// HAM10000 has several images of many lesions; an image-level split leaks a lesion's
// siblings into the test set. Splits here assign whole lesions: samples are grouped
// by lesion_id, a lesion's class is the majority label of its images (ties go to
// the lower class index), and each class's lesions, sorted by id and shuffled with
// Rng(DeriveSeed({seed, class})), are cut so the lesion counts per class follow the
// requested fractions (largest-remainder rounding: within one lesion of exact).
// The result depends only on the catalogue's (image_id, lesion_id, label) content
// and the seed, not on row order.
//
// A Split is saved as a CSV file with a header, sorted by image_id:
//   image_id,lesion_id,partition,method,seed
//   ISIC_0024306,HAM_0000550,train,holdout:0.7/0.15/0.15,42
// Digest() is the SHA-256 of exactly that text, so `sha256sum split.csv` matches
// it and a run that records the digest can be repeated exactly.
//
// Example:
//   SL_ASSIGN_OR_RETURN(Split split, MakeSplit(catalogue, {.seed = 42}));
//   SL_RETURN_IF_ERROR(SaveSplit(split, run_dir + "/split.csv"));
//   SL_ASSIGN_OR_RETURN(std::vector<Sample> train, Apply(split, catalogue, "train"));
#ifndef SKINLESION_DATA_SPLIT_H_
#define SKINLESION_DATA_SPLIT_H_

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "skinlesion/data/catalogue.h"

namespace skinlesion::data {

struct SplitOptions {
  // Fractions of each class's lesions; each >= 0, summing to 1 (within 1e-6).
  double train = 0.7;
  double val = 0.15;
  double test = 0.15;
  uint64_t seed = 0;
};

// An assignment of image ids to partitions. Immutable; cheap to copy around by
// const reference. Partitions are "train", "val", "test" (holdout, source) or
// "fold0".."fold<k-1>" (k-fold).
class Split {
 public:
  struct Entry {
    std::string image_id;
    std::string lesion_id;
    std::string partition;
  };

  // Checks and sorts the entries: ids non-empty, no image twice, every partition one
  // of `method`'s, no lesion in two partitions. InvalidArgument otherwise.
  static absl::StatusOr<Split> Create(std::string method, uint64_t seed,
                                      std::vector<Entry> entries);

  // "holdout:<train>/<val>/<test>", "kfold:<k>" or "source:<held-out source>".
  const std::string& method() const { return method_; }
  uint64_t seed() const { return seed_; }
  // Sorted by image_id.
  const std::vector<Entry>& entries() const { return entries_; }
  // The partition names the method defines, in order (some may hold no image).
  std::vector<std::string> Partitions() const;
  // The partition of `image_id`, or nullptr when the split does not name it.
  const std::string* PartitionOf(absl::string_view image_id) const;
  // Number of images in `partition`.
  int Count(absl::string_view partition) const;

  // The canonical CSV text (what SaveSplit writes) and its SHA-256 (hex).
  std::string ToCsv() const;
  std::string Digest() const;

 private:
  Split() = default;
  std::string method_;
  uint64_t seed_ = 0;
  std::vector<Entry> entries_;
};

// Holdout split into train/val/test. InvalidArgument for bad fractions or an empty
// catalogue.
absl::StatusOr<Split> MakeSplit(const Catalogue& catalogue, const SplitOptions& options);

// Stratified, lesion-disjoint k-fold assignment ("fold0".."fold<k-1>"). Within each
// class the shuffled lesions are dealt round-robin, continuing from where the
// previous class stopped, so per class and overall the folds' lesion counts differ
// by at most one. InvalidArgument unless 2 <= k <= number of lesions.
absl::StatusOr<Split> MakeKFold(const Catalogue& catalogue, int k, uint64_t seed);

// Source-held-out split (generalisation to a hospital the model has not seen): every
// lesion with an image from `source` (Sample::dataset, e.g. "rosendahl") is in
// "test"; each class's other lesions go to "train" and "val" (val_fraction of them,
// largest remainder). Method "source:<source>". InvalidArgument when no image comes
// from `source` (naming the sources there are) or every image does.
absl::StatusOr<Split> MakeSourceHoldout(const Catalogue& catalogue, const std::string& source,
                                        double val_fraction, uint64_t seed);

// Writes ToCsv() atomically / reads and validates a split file.
absl::Status SaveSplit(const Split& split, const std::string& path);
absl::StatusOr<Split> LoadSplit(const std::string& path);
// Parses split CSV text; `source` names it in errors.
absl::StatusOr<Split> ParseSplit(absl::string_view text, absl::string_view source = "split");

// The catalogue's samples in `partition`, in catalogue order. FailedPrecondition
// when the split and the catalogue disagree: an image of one missing from the
// other, or an image whose lesion differs. InvalidArgument for a partition the
// split's method does not define.
absl::StatusOr<std::vector<Sample>> Apply(const Split& split, const Catalogue& catalogue,
                                          absl::string_view partition);
// Everything except `partition` (the training set of a k-fold round).
absl::StatusOr<std::vector<Sample>> ApplyExcept(const Split& split, const Catalogue& catalogue,
                                                absl::string_view partition);

// The three sets one training run uses.
struct TrainValTest {
  std::vector<Sample> train, val, test;
};

// The sets of one run on `split`. fold < 0: the split's own "train", "val" and "test"
// (a holdout or source split). fold >= 0: round `fold` of a k-fold split (k >= 3):
// test is fold<fold>, val is fold<(fold + 1) % k> (model selection, calibration and
// the referral threshold are fitted on it) and train is the other k - 2 folds, so the
// k rounds test every lesion once and never see a test lesion in training or
// selection. InvalidArgument for a fold out of range, a fold on a split that is not
// k-fold, or no fold on a k-fold split.
absl::StatusOr<TrainValTest> ApplyRound(const Split& split, const Catalogue& catalogue, int fold);
// Every image of a k-fold split as training images, none for validation or test: the
// model to ship once `skinlesion cv` has measured the recipe on the k rounds (its
// temperature and operating point are then fitted on the rounds' out-of-fold
// predictions). InvalidArgument for a split that is not k-fold.
//
// except_fold >= 0: the same training on every image but fold<except_fold>'s, which is
// the test set (still no validation: the last epoch is the model). That is the shipped
// model's procedure with one fold kept out, so it measures what the model on every
// image gets (with an operating point fitted on the other rounds' out-of-fold answers)
// on images it never saw. InvalidArgument for a fold out of range.
absl::StatusOr<TrainValTest> ApplyAllFolds(const Split& split, const Catalogue& catalogue,
                                           int except_fold = -1);
// "kfold:5" -> 5; 0 for any other method.
int KFoldCount(const Split& split);
// The split's images per partition ("fold0".. of a k-fold split; "train", "val",
// "test" of another).
std::map<std::string, int64_t> PartitionSizes(const Split& split);
// The fewest images a round of ApplyAllFolds(split, catalogue, r) trains on over the
// rounds r: every image of the split but its largest fold's. The epoch size
// (samples_per_epoch) that gives the model on every image the steps of the kept-out
// rounds that measured its procedure. 0 for a split that is not k-fold.
int64_t KeptOutRoundImages(const Split& split);

}  // namespace skinlesion::data

#endif  // SKINLESION_DATA_SPLIT_H_
