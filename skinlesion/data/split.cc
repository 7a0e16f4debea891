#include "skinlesion/data/split.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <map>
#include <set>
#include <utility>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/strip.h"
#include "skinlesion/common/classes.h"
#include "skinlesion/common/csv.h"
#include "skinlesion/common/hash.h"
#include "skinlesion/common/rng.h"
#include "skinlesion/common/status.h"

namespace skinlesion::data {
namespace {

constexpr absl::string_view kHeader = "image_id,lesion_id,partition,method,seed";
constexpr absl::string_view kHoldoutPrefix = "holdout:";
constexpr absl::string_view kKFoldPrefix = "kfold:";
constexpr absl::string_view kSourcePrefix = "source:";
constexpr int kMaxFolds = 1000;

// The partitions a method defines, or InvalidArgument for an unknown method.
absl::StatusOr<std::vector<std::string>> PartitionsOf(absl::string_view method) {
  if (absl::StartsWith(method, kHoldoutPrefix) ||
      (absl::StartsWith(method, kSourcePrefix) && method.size() > kSourcePrefix.size()))
    return std::vector<std::string>{"train", "val", "test"};
  int k = 0;
  if (absl::StartsWith(method, kKFoldPrefix) &&
      absl::SimpleAtoi(method.substr(kKFoldPrefix.size()), &k) && k >= 2 && k <= kMaxFolds) {
    std::vector<std::string> folds;
    for (int i = 0; i < k; ++i) folds.push_back(absl::StrCat("fold", i));
    return folds;
  }
  return absl::InvalidArgumentError(absl::StrCat("unknown split method '", method,
                                                 "' (expected holdout:<fractions>, kfold:<k> or source:<name>)"));
}

// A CSV field, quoted when it needs to be.
std::string CsvField(absl::string_view value) {
  if (value.find_first_of(",\"\r\n") == absl::string_view::npos) return std::string(value);
  std::string out = "\"";
  for (char c : value) {
    if (c == '"') out.push_back('"');
    out.push_back(c);
  }
  out.push_back('"');
  return out;
}

struct Lesion {
  absl::string_view id;
  std::vector<int> samples;  // Indices into the catalogue.
  int label = 0;             // Majority label.
};

// Lesions grouped by class (index = class), each class's lesions sorted by id and
// shuffled with Rng(DeriveSeed({seed, class})).
absl::StatusOr<std::vector<std::vector<Lesion>>> ShuffledLesionsByClass(
    const Catalogue& catalogue, uint64_t seed) {
  if (catalogue.samples.empty()) return absl::InvalidArgumentError("the catalogue is empty");
  const int num_classes = catalogue.classes.size();
  std::map<absl::string_view, Lesion> lesions;  // Sorted by id: independent of row order.
  absl::flat_hash_set<absl::string_view> image_seen;
  for (size_t i = 0; i < catalogue.samples.size(); ++i) {
    const Sample& s = catalogue.samples[i];
    if (s.label < 0 || s.label >= num_classes) {
      return absl::InvalidArgumentError(
          absl::StrCat("image ", s.image_id, " has no valid label (", s.label, ")"));
    }
    if (s.image_id.empty() || s.lesion_id.empty()) {
      return absl::InvalidArgumentError(absl::StrCat("sample ", i, " has an empty id"));
    }
    if (!image_seen.insert(s.image_id).second) {
      return absl::InvalidArgumentError(absl::StrCat("image ", s.image_id, " appears twice"));
    }
    Lesion& lesion = lesions[s.lesion_id];
    lesion.id = s.lesion_id;
    lesion.samples.push_back(static_cast<int>(i));
  }
  std::vector<std::vector<Lesion>> by_class(num_classes);
  for (auto& [id, lesion] : lesions) {
    std::vector<int> votes(num_classes, 0);
    for (int i : lesion.samples) ++votes[catalogue.samples[i].label];
    lesion.label = static_cast<int>(std::max_element(votes.begin(), votes.end()) - votes.begin());
    by_class[lesion.label].push_back(std::move(lesion));
  }
  for (int c = 0; c < num_classes; ++c) {
    std::vector<Lesion>& v = by_class[c];
    Rng rng(DeriveSeed({seed, static_cast<uint64_t>(c)}));
    for (size_t i = v.size(); i > 1; --i) std::swap(v[i - 1], v[rng.UniformInt(i)]);
  }
  return by_class;
}

// Splits n into counts proportional to `fractions` (summing to 1) by largest
// remainder; ties go to the earlier partition.
std::vector<int> LargestRemainder(int n, const std::vector<double>& fractions) {
  std::vector<int> counts(fractions.size());
  std::vector<std::pair<double, size_t>> remainders;
  int assigned = 0;
  for (size_t i = 0; i < fractions.size(); ++i) {
    const double quota = n * fractions[i];
    counts[i] = static_cast<int>(std::floor(quota));
    assigned += counts[i];
    remainders.emplace_back(quota - counts[i], i);
  }
  std::stable_sort(remainders.begin(), remainders.end(),
                   [](const auto& a, const auto& b) { return a.first > b.first; });
  for (size_t r = 0; assigned < n; r = (r + 1) % remainders.size()) {
    ++counts[remainders[r].second];
    ++assigned;
  }
  return counts;
}

void AddEntries(const Catalogue& catalogue, const Lesion& lesion, const std::string& partition,
                std::vector<Split::Entry>* out) {
  for (int i : lesion.samples) {
    const Sample& s = catalogue.samples[i];
    out->push_back({s.image_id, s.lesion_id, partition});
  }
}

absl::Status CheckAgainst(const Split& split, const Catalogue& catalogue,
                          absl::string_view partition) {
  const std::vector<std::string> partitions = split.Partitions();
  if (std::find(partitions.begin(), partitions.end(), partition) == partitions.end()) {
    return absl::InvalidArgumentError(absl::StrCat("split ", split.method(), " has no partition '",
                                                   partition, "' (it has ",
                                                   absl::StrJoin(partitions, ", "), ")"));
  }
  absl::flat_hash_map<absl::string_view, const Split::Entry*> by_image;
  by_image.reserve(split.entries().size());
  for (const Split::Entry& e : split.entries()) by_image.emplace(e.image_id, &e);
  size_t matched = 0;
  for (const Sample& s : catalogue.samples) {
    auto it = by_image.find(s.image_id);
    if (it == by_image.end()) {
      return absl::FailedPreconditionError(
          absl::StrCat("image ", s.image_id, " of the catalogue is not in the split"));
    }
    if (it->second->lesion_id != s.lesion_id) {
      return absl::FailedPreconditionError(absl::StrCat("image ", s.image_id, " belongs to lesion ",
                                                        s.lesion_id, " in the catalogue but to ",
                                                        it->second->lesion_id, " in the split"));
    }
    ++matched;
  }
  if (matched != split.entries().size()) {
    absl::flat_hash_set<absl::string_view> in_catalogue;
    for (const Sample& s : catalogue.samples) in_catalogue.insert(s.image_id);
    for (const Split::Entry& e : split.entries()) {
      if (!in_catalogue.contains(e.image_id)) {
        return absl::FailedPreconditionError(
            absl::StrCat("the split names image ", e.image_id, " which is not in the catalogue (",
                         split.entries().size() - matched, " such images)"));
      }
    }
    return absl::FailedPreconditionError("the catalogue has an image twice");
  }
  return absl::OkStatus();
}

absl::StatusOr<std::vector<Sample>> Select(const Split& split, const Catalogue& catalogue,
                                           absl::string_view partition, bool inside) {
  SL_RETURN_IF_ERROR(CheckAgainst(split, catalogue, partition));
  std::vector<Sample> out;
  for (const Sample& s : catalogue.samples) {
    if ((*split.PartitionOf(s.image_id) == partition) == inside) out.push_back(s);
  }
  return out;
}

}  // namespace

absl::StatusOr<Split> Split::Create(std::string method, uint64_t seed, std::vector<Entry> entries) {
  SL_ASSIGN_OR_RETURN(const std::vector<std::string> partitions, PartitionsOf(method));
  std::sort(entries.begin(), entries.end(),
            [](const Entry& a, const Entry& b) { return a.image_id < b.image_id; });
  absl::flat_hash_map<absl::string_view, const Entry*> lesion_partition;
  for (size_t i = 0; i < entries.size(); ++i) {
    const Entry& e = entries[i];
    if (e.image_id.empty() || e.lesion_id.empty()) {
      return absl::InvalidArgumentError("a split entry has an empty image or lesion id");
    }
    if (i > 0 && entries[i - 1].image_id == e.image_id) {
      return absl::InvalidArgumentError(absl::StrCat("image ", e.image_id, " appears twice"));
    }
    if (std::find(partitions.begin(), partitions.end(), e.partition) == partitions.end()) {
      return absl::InvalidArgumentError(absl::StrCat("image ", e.image_id, ": partition '",
                                                     e.partition, "' is not one of ",
                                                     absl::StrJoin(partitions, ", ")));
    }
    auto [it, inserted] = lesion_partition.emplace(e.lesion_id, &e);
    if (!inserted && it->second->partition != e.partition) {
      return absl::InvalidArgumentError(
          absl::StrCat("lesion ", e.lesion_id, " is in two partitions (", it->second->image_id,
                       " in ", it->second->partition, ", ", e.image_id, " in ", e.partition, ")"));
    }
  }
  Split split;
  split.method_ = std::move(method);
  split.seed_ = seed;
  split.entries_ = std::move(entries);
  return split;
}

std::vector<std::string> Split::Partitions() const { return *PartitionsOf(method_); }

const std::string* Split::PartitionOf(absl::string_view image_id) const {
  auto it = std::lower_bound(entries_.begin(), entries_.end(), image_id,
                             [](const Entry& e, absl::string_view id) { return e.image_id < id; });
  return it != entries_.end() && it->image_id == image_id ? &it->partition : nullptr;
}

int Split::Count(absl::string_view partition) const {
  return static_cast<int>(std::count_if(entries_.begin(), entries_.end(),
                                        [&](const Entry& e) { return e.partition == partition; }));
}

std::string Split::ToCsv() const {
  std::string out = absl::StrCat(kHeader, "\n");
  const std::string tail = absl::StrCat(",", CsvField(method_), ",", seed_, "\n");
  for (const Entry& e : entries_) {
    absl::StrAppend(&out, CsvField(e.image_id), ",", CsvField(e.lesion_id), ",",
                    CsvField(e.partition), tail);
  }
  return out;
}

std::string Split::Digest() const { return Sha256Hex(ToCsv()); }

absl::StatusOr<Split> MakeSplit(const Catalogue& catalogue, const SplitOptions& options) {
  const std::vector<double> fractions = {options.train, options.val, options.test};
  double sum = 0;
  for (double f : fractions) {
    if (!(f >= 0.0 && f <= 1.0)) {
      return absl::InvalidArgumentError(absl::StrCat("split fraction ", f, " not in [0, 1]"));
    }
    sum += f;
  }
  if (std::abs(sum - 1.0) > 1e-6) {
    return absl::InvalidArgumentError(absl::StrCat("split fractions ", options.train, " + ",
                                                   options.val, " + ", options.test, " = ", sum,
                                                   ", not 1"));
  }
  SL_ASSIGN_OR_RETURN(const auto by_class, ShuffledLesionsByClass(catalogue, options.seed));
  const std::array<std::string, 3> names = {"train", "val", "test"};
  std::vector<Split::Entry> entries;
  entries.reserve(catalogue.samples.size());
  for (const std::vector<Lesion>& lesions : by_class) {
    const std::vector<int> counts = LargestRemainder(static_cast<int>(lesions.size()), fractions);
    size_t next = 0;
    for (size_t p = 0; p < names.size(); ++p) {
      for (int j = 0; j < counts[p]; ++j)
        AddEntries(catalogue, lesions[next++], names[p], &entries);
    }
  }
  return Split::Create(
      absl::StrCat(kHoldoutPrefix, options.train, "/", options.val, "/", options.test),
      options.seed, std::move(entries));
}

absl::StatusOr<Split> MakeKFold(const Catalogue& catalogue, int k, uint64_t seed) {
  SL_ASSIGN_OR_RETURN(const auto by_class, ShuffledLesionsByClass(catalogue, seed));
  size_t num_lesions = 0;
  for (const auto& lesions : by_class) num_lesions += lesions.size();
  if (k < 2 || k > kMaxFolds || static_cast<size_t>(k) > num_lesions) {
    return absl::InvalidArgumentError(absl::StrCat("k-fold needs 2 <= k <= min(", kMaxFolds,
                                                   ", lesions = ", num_lesions, "), got ", k));
  }
  const std::string method = absl::StrCat(kKFoldPrefix, k);
  SL_ASSIGN_OR_RETURN(const std::vector<std::string> folds, PartitionsOf(method));
  std::vector<Split::Entry> entries;
  entries.reserve(catalogue.samples.size());
  size_t position = 0;  // Continues across classes so remainders spread over the folds.
  for (const std::vector<Lesion>& lesions : by_class) {
    for (const Lesion& lesion : lesions) {
      AddEntries(catalogue, lesion, folds[position++ % k], &entries);
    }
  }
  return Split::Create(method, seed, std::move(entries));
}

absl::StatusOr<Split> MakeSourceHoldout(const Catalogue& catalogue, const std::string& source,
                                        double val_fraction, uint64_t seed) {
  if (source.empty()) return absl::InvalidArgumentError("the held-out source is empty");
  if (!(val_fraction > 0 && val_fraction < 1)) {
    return absl::InvalidArgumentError(absl::StrCat("val fraction ", val_fraction, " not in (0, 1)"));
  }
  SL_ASSIGN_OR_RETURN(const auto by_class, ShuffledLesionsByClass(catalogue, seed));
  std::vector<Split::Entry> entries;
  entries.reserve(catalogue.samples.size());
  int held_out = 0, kept = 0;
  for (const std::vector<Lesion>& lesions : by_class) {
    std::vector<const Lesion*> rest;
    for (const Lesion& lesion : lesions) {
      const bool from_source = std::any_of(lesion.samples.begin(), lesion.samples.end(), [&](int i) {
        return catalogue.samples[i].dataset == source;
      });
      if (from_source) {
        AddEntries(catalogue, lesion, "test", &entries);
        ++held_out;
      } else {
        rest.push_back(&lesion);
      }
    }
    const std::vector<int> counts =
        LargestRemainder(static_cast<int>(rest.size()), {1 - val_fraction, val_fraction});
    for (int j = 0; j < static_cast<int>(rest.size()); ++j) {
      AddEntries(catalogue, *rest[j], j < counts[0] ? "train" : "val", &entries);
      ++kept;
    }
  }
  if (held_out == 0) {
    std::set<std::string> sources;
    for (const Sample& s : catalogue.samples) sources.insert(s.dataset.empty() ? "(none)" : s.dataset);
    return absl::InvalidArgumentError(absl::StrCat("no image comes from source '", source,
                                                   "' (sources: ", absl::StrJoin(sources, ", "), ")"));
  }
  if (kept == 0) {
    return absl::InvalidArgumentError(absl::StrCat("every image comes from source '", source,
                                                   "': nothing is left to train on"));
  }
  return Split::Create(absl::StrCat(kSourcePrefix, source), seed, std::move(entries));
}

absl::Status SaveSplit(const Split& split, const std::string& path) {
  return WriteFileAtomically(path, split.ToCsv());
}

absl::StatusOr<Split> ParseSplit(absl::string_view text, absl::string_view source) {
  SL_ASSIGN_OR_RETURN(const std::vector<CsvRecord> records, ParseTable(text, source));
  if (absl::StrJoin(records.front().fields, ",") != kHeader) {
    return LineError(source, records.front().line, absl::StrCat("header must be ", kHeader));
  }
  if (records.size() < 2) return absl::InvalidArgumentError(absl::StrCat(source, " has no rows"));
  const std::string& method = records[1].fields[3];
  uint64_t seed = 0;
  if (!absl::SimpleAtoi(records[1].fields[4], &seed)) {
    return LineError(source, records[1].line,
                     absl::StrCat("bad seed '", records[1].fields[4], "'"));
  }
  std::vector<Split::Entry> entries;
  entries.reserve(records.size() - 1);
  for (size_t r = 1; r < records.size(); ++r) {
    const std::vector<std::string>& f = records[r].fields;
    if (f[3] != method || f[4] != records[1].fields[4]) {
      return LineError(source, records[r].line, "method and seed differ from the first row");
    }
    entries.push_back({f[0], f[1], f[2]});
  }
  auto split = Split::Create(method, seed, std::move(entries));
  if (!split.ok()) return Annotate(split.status(), source);
  return split;
}

absl::StatusOr<Split> LoadSplit(const std::string& path) {
  SL_ASSIGN_OR_RETURN(const std::string text, ReadFileToString(path, size_t{256} << 20));
  return ParseSplit(text, path);
}

absl::StatusOr<std::vector<Sample>> Apply(const Split& split, const Catalogue& catalogue,
                                          absl::string_view partition) {
  return Select(split, catalogue, partition, /*inside=*/true);
}

absl::StatusOr<std::vector<Sample>> ApplyExcept(const Split& split, const Catalogue& catalogue,
                                                absl::string_view partition) {
  return Select(split, catalogue, partition, /*inside=*/false);
}

int KFoldCount(const Split& split) {
  absl::string_view method = split.method();
  int k = 0;
  if (!absl::ConsumePrefix(&method, "kfold:") || !absl::SimpleAtoi(method, &k)) return 0;
  return k;
}

std::map<std::string, int64_t> PartitionSizes(const Split& split) {
  std::map<std::string, int64_t> sizes;
  for (const Split::Entry& e : split.entries()) ++sizes[e.partition];
  return sizes;
}

int64_t KeptOutRoundImages(const Split& split) {
  if (KFoldCount(split) == 0) return 0;
  int64_t largest = 0;
  for (const auto& [fold, count] : PartitionSizes(split)) largest = std::max(largest, count);
  return static_cast<int64_t>(split.entries().size()) - largest;
}

absl::StatusOr<TrainValTest> ApplyRound(const Split& split, const Catalogue& catalogue, int fold) {
  TrainValTest sets;
  const int k = KFoldCount(split);
  if (fold < 0) {
    if (k > 0) {
      return absl::InvalidArgumentError(absl::StrCat(
          "split ", split.method(), " is k-fold: choose a round with a fold from 0 to ", k - 1));
    }
    SL_ASSIGN_OR_RETURN(sets.train, Apply(split, catalogue, "train"));
    SL_ASSIGN_OR_RETURN(sets.val, Apply(split, catalogue, "val"));
    SL_ASSIGN_OR_RETURN(sets.test, Apply(split, catalogue, "test"));
    return sets;
  }
  if (k == 0) {
    return absl::InvalidArgumentError(absl::StrCat("a fold was given but split ", split.method(),
                                                   " is not k-fold (make one with --kfold)"));
  }
  if (k < 3) {
    return absl::InvalidArgumentError(
        absl::StrCat("a k-fold round needs k >= 3 (test, validation and training folds); split has k = ", k));
  }
  if (fold >= k) {
    return absl::InvalidArgumentError(absl::StrCat("fold ", fold, " is out of range: the split has folds 0 to ", k - 1));
  }
  const std::string test = absl::StrCat("fold", fold);
  const std::string val = absl::StrCat("fold", (fold + 1) % k);
  SL_ASSIGN_OR_RETURN(sets.test, Apply(split, catalogue, test));
  SL_ASSIGN_OR_RETURN(sets.val, Apply(split, catalogue, val));
  SL_ASSIGN_OR_RETURN(const std::vector<Sample> rest, ApplyExcept(split, catalogue, test));
  for (const Sample& s : rest) {
    if (*split.PartitionOf(s.image_id) != val) sets.train.push_back(s);
  }
  return sets;
}

absl::StatusOr<TrainValTest> ApplyAllFolds(const Split& split, const Catalogue& catalogue,
                                           int except_fold) {
  const int k = KFoldCount(split);
  if (k == 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("training on every fold needs a k-fold split; split is ", split.method()));
  }
  TrainValTest sets;
  if (except_fold >= 0) {
    if (except_fold >= k) {
      return absl::InvalidArgumentError(
          absl::StrCat("fold ", except_fold, " is out of range: the split has folds 0 to ", k - 1));
    }
    const std::string test = absl::StrCat("fold", except_fold);
    SL_ASSIGN_OR_RETURN(sets.test, Apply(split, catalogue, test));
    SL_ASSIGN_OR_RETURN(sets.train, ApplyExcept(split, catalogue, test));
    return sets;
  }
  // Checks that the split and the catalogue hold the same images and lesions.
  SL_RETURN_IF_ERROR(Apply(split, catalogue, "fold0").status());
  sets.train = catalogue.samples;
  return sets;
}

}  // namespace skinlesion::data
