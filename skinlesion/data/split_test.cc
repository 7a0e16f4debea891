#include "skinlesion/data/split.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <map>
#include <set>
#include <string>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "gtest/gtest.h"
#include "skinlesion/common/classes.h"
#include "skinlesion/common/csv.h"
#include "skinlesion/common/hash.h"
#include "skinlesion/common/logging.h"
#include "skinlesion/data/ham10000.h"
#include "skinlesion/testing/testing.h"

namespace skinlesion::data {
namespace {

using ::skinlesion::testing::IsOk;
using ::skinlesion::testing::SourcePath;
using ::skinlesion::testing::StatusIs;
using ::skinlesion::testing::TempDir;
using ::skinlesion::testing::WriteFile;
using ::testing::AllOf;
using ::testing::HasSubstr;

// The real HAM10000 metadata: 10,015 images of 7,470 lesions.
const Catalogue& RealCatalogue() {
  static const Catalogue* catalogue = [] {
    auto c = LoadHam10000(SourcePath("tests/fixtures/ham10000/HAM10000_metadata.csv"), "",
                          {.require_images = false});
    SL_CHECK(c.ok()) << c.status();
    return new Catalogue(*std::move(c));
  }();
  return *catalogue;
}

// partition -> lesions, and lesion -> its (majority) class.
struct LesionView {
  std::map<std::string, std::set<std::string>> lesions_of;
  std::map<std::string, int> class_of;
};

LesionView View(const Split& split, const Catalogue& catalogue) {
  LesionView view;
  std::map<std::string, std::array<int, kHam10000NumClasses>> votes;
  for (const Sample& s : catalogue.samples) {
    const std::string* p = split.PartitionOf(s.image_id);
    SL_CHECK(p != nullptr) << s.image_id;
    view.lesions_of[*p].insert(s.lesion_id);
    ++votes[s.lesion_id][s.label];
  }
  for (const auto& [lesion, v] : votes) {
    view.class_of[lesion] = static_cast<int>(std::max_element(v.begin(), v.end()) - v.begin());
  }
  return view;
}

// Each lesion is in exactly one partition and every image is assigned once.
void ExpectLesionDisjointAndComplete(const Split& split, const Catalogue& catalogue) {
  ASSERT_EQ(split.entries().size(), catalogue.samples.size());
  std::map<std::string, std::string> partition_of_lesion;
  std::set<std::string> images;
  for (const Sample& s : catalogue.samples) {
    const std::string* p = split.PartitionOf(s.image_id);
    ASSERT_NE(p, nullptr) << s.image_id;
    EXPECT_TRUE(images.insert(s.image_id).second);
    auto [it, inserted] = partition_of_lesion.emplace(s.lesion_id, *p);
    EXPECT_EQ(it->second, *p) << "lesion " << s.lesion_id << " in two partitions";
  }
  EXPECT_EQ(partition_of_lesion.size(), 7470u);
}

TEST(SplitTest, HoldoutOnRealMetadataIsLesionDisjointAndStratified) {
  const Catalogue& catalogue = RealCatalogue();
  auto split = MakeSplit(catalogue, {.seed = 42});
  ASSERT_THAT(split, IsOk());
  EXPECT_EQ(split->method(), "holdout:0.7/0.15/0.15");
  EXPECT_EQ(split->seed(), 42u);
  ExpectLesionDisjointAndComplete(*split, catalogue);

  const LesionView view = View(*split, catalogue);
  std::array<int, kHam10000NumClasses> lesions_per_class{};
  for (const auto& [lesion, c] : view.class_of) ++lesions_per_class[c];
  const std::map<std::string, double> fractions = {{"train", 0.7}, {"val", 0.15}, {"test", 0.15}};
  for (const auto& [partition, fraction] : fractions) {
    std::array<int, kHam10000NumClasses> counts{};
    for (const std::string& lesion : view.lesions_of.at(partition))
      ++counts[view.class_of.at(lesion)];
    for (int c = 0; c < kHam10000NumClasses; ++c) {
      EXPECT_LE(std::abs(counts[c] - fraction * lesions_per_class[c]), 1.0)
          << partition << " " << LabelSet::Ham10000().at(c).code << ": " << counts[c] << " of "
          << lesions_per_class[c];
    }
    // Images follow too (lesions have 1-6 images, so only roughly).
    const double image_fraction = static_cast<double>(split->Count(partition)) /
                                  static_cast<double>(catalogue.samples.size());
    EXPECT_NEAR(image_fraction, fraction, 0.02) << partition;
  }
  EXPECT_EQ(split->Count("train") + split->Count("val") + split->Count("test"), 10015);
}

TEST(SplitTest, SameSeedSameSplitOtherSeedOtherSplit) {
  const Catalogue& catalogue = RealCatalogue();
  auto a = MakeSplit(catalogue, {.seed = 7});
  auto b = MakeSplit(catalogue, {.seed = 7});
  auto c = MakeSplit(catalogue, {.seed = 8});
  ASSERT_THAT(a, IsOk());
  ASSERT_THAT(b, IsOk());
  ASSERT_THAT(c, IsOk());
  EXPECT_EQ(a->Digest(), b->Digest());
  int moved = 0;
  for (size_t i = 0; i < a->entries().size(); ++i) {
    ASSERT_EQ(a->entries()[i].image_id, c->entries()[i].image_id);
    moved += a->entries()[i].partition != c->entries()[i].partition;
  }
  EXPECT_GT(moved, 1000);  // About half of the images change partition.

  // The row order of the catalogue does not matter.
  Catalogue reversed = catalogue;
  std::reverse(reversed.samples.begin(), reversed.samples.end());
  auto r = MakeSplit(reversed, {.seed = 7});
  ASSERT_THAT(r, IsOk());
  EXPECT_EQ(r->Digest(), a->Digest());
}

TEST(SplitTest, SaveLoadRoundTripKeepsTheDigest) {
  const Catalogue& catalogue = RealCatalogue();
  auto split = MakeSplit(catalogue, {.train = 0.8, .val = 0.1, .test = 0.1, .seed = 3});
  ASSERT_THAT(split, IsOk());
  TempDir dir;
  const std::string path = dir.Join("split.csv");
  ASSERT_THAT(SaveSplit(*split, path), IsOk());
  auto loaded = LoadSplit(path);
  ASSERT_THAT(loaded, IsOk());
  EXPECT_EQ(loaded->Digest(), split->Digest());
  EXPECT_EQ(loaded->method(), "holdout:0.8/0.1/0.1");
  EXPECT_EQ(loaded->seed(), 3u);
  // The digest is the file's own SHA-256.
  auto file_digest = Sha256File(path);
  ASSERT_THAT(file_digest, IsOk());
  EXPECT_EQ(*file_digest, split->Digest());
  auto text = ReadFileToString(path, 1 << 20);
  ASSERT_THAT(text, IsOk());
  EXPECT_TRUE(text->starts_with("image_id,lesion_id,partition,method,seed\n"));
}

TEST(SplitTest, KFoldFoldsAreDisjointStratifiedAndCoverEverything) {
  const Catalogue& catalogue = RealCatalogue();
  auto split = MakeKFold(catalogue, 5, 11);
  ASSERT_THAT(split, IsOk());
  EXPECT_EQ(split->method(), "kfold:5");
  EXPECT_EQ(split->Partitions(),
            (std::vector<std::string>{"fold0", "fold1", "fold2", "fold3", "fold4"}));
  ExpectLesionDisjointAndComplete(*split, catalogue);
  const LesionView view = View(*split, catalogue);
  std::array<int, kHam10000NumClasses> lesions_per_class{};
  for (const auto& [lesion, c] : view.class_of) ++lesions_per_class[c];
  int total_images = 0;
  size_t min_lesions = SIZE_MAX, max_lesions = 0;
  for (const std::string& fold : split->Partitions()) {
    const std::set<std::string>& lesions = view.lesions_of.at(fold);
    min_lesions = std::min(min_lesions, lesions.size());
    max_lesions = std::max(max_lesions, lesions.size());
    std::array<int, kHam10000NumClasses> counts{};
    for (const std::string& lesion : lesions) ++counts[view.class_of.at(lesion)];
    for (int c = 0; c < kHam10000NumClasses; ++c) {
      EXPECT_LE(std::abs(counts[c] - lesions_per_class[c] / 5.0), 1.0) << fold << " " << c;
    }
    total_images += split->Count(fold);
  }
  EXPECT_EQ(total_images, 10015);
  EXPECT_LE(max_lesions - min_lesions, 1u);

  // A fold's complement is everything else.
  auto test = Apply(*split, catalogue, "fold2");
  auto train = ApplyExcept(*split, catalogue, "fold2");
  ASSERT_THAT(test, IsOk());
  ASSERT_THAT(train, IsOk());
  EXPECT_EQ(test->size() + train->size(), catalogue.samples.size());

  auto again = MakeKFold(catalogue, 5, 11);
  ASSERT_THAT(again, IsOk());
  EXPECT_EQ(again->Digest(), split->Digest());
}

// Each round of a k-fold split tests one fold, selects on the next and trains on the
// rest: lesion-disjoint sets, every lesion tested exactly once over the k rounds.
TEST(SplitTest, KFoldRoundsTestEachLesionOnceAndKeepSetsDisjoint) {
  const Catalogue& catalogue = RealCatalogue();
  auto split = MakeKFold(catalogue, 4, 3);
  ASSERT_THAT(split, IsOk());
  EXPECT_EQ(KFoldCount(*split), 4);
  std::map<std::string, int> times_tested;
  for (int fold = 0; fold < 4; ++fold) {
    auto sets = ApplyRound(*split, catalogue, fold);
    ASSERT_THAT(sets, IsOk());
    EXPECT_EQ(sets->train.size() + sets->val.size() + sets->test.size(), catalogue.samples.size());
    std::map<std::string, std::string> set_of_lesion;
    for (const auto& [name, samples] : {std::pair{"train", &sets->train}, std::pair{"val", &sets->val},
                                        std::pair{"test", &sets->test}}) {
      for (const Sample& s : *samples) {
        auto [it, inserted] = set_of_lesion.emplace(s.lesion_id, name);
        EXPECT_EQ(it->second, name) << "lesion " << s.lesion_id << " in two sets of round " << fold;
      }
    }
    for (const Sample& s : sets->test) {
      EXPECT_EQ(*split->PartitionOf(s.image_id), absl::StrCat("fold", fold));
      ++times_tested[s.image_id];
    }
    for (const Sample& s : sets->val) {
      EXPECT_EQ(*split->PartitionOf(s.image_id), absl::StrCat("fold", (fold + 1) % 4));
    }
  }
  EXPECT_EQ(times_tested.size(), catalogue.samples.size());
  for (const auto& [image, n] : times_tested) EXPECT_EQ(n, 1) << image;
  // The kept-out rounds' epoch: the smallest training set of ApplyAllFolds's rounds.
  size_t fewest = catalogue.samples.size();
  for (int fold = 0; fold < 4; ++fold) {
    auto sets = ApplyAllFolds(*split, catalogue, fold);
    ASSERT_THAT(sets, IsOk());
    fewest = std::min(fewest, sets->train.size());
  }
  EXPECT_LT(fewest, catalogue.samples.size());
  EXPECT_EQ(KeptOutRoundImages(*split), static_cast<int64_t>(fewest));
  const std::map<std::string, int64_t> sizes = PartitionSizes(*split);
  ASSERT_EQ(sizes.size(), 4u);
  int64_t total = 0;
  for (int fold = 0; fold < 4; ++fold) total += sizes.at(absl::StrCat("fold", fold));
  EXPECT_EQ(total, static_cast<int64_t>(catalogue.samples.size()));
}

TEST(SplitTest, RoundsAreRefusedWhereTheyMakeNoSense) {
  const Catalogue& catalogue = RealCatalogue();
  auto kfold = MakeKFold(catalogue, 5, 3);
  auto two = MakeKFold(catalogue, 2, 3);
  auto holdout = MakeSplit(catalogue, {.seed = 3});
  ASSERT_THAT(kfold, IsOk());
  ASSERT_THAT(two, IsOk());
  ASSERT_THAT(holdout, IsOk());
  EXPECT_EQ(KFoldCount(*holdout), 0);
  EXPECT_EQ(KeptOutRoundImages(*holdout), 0);
  EXPECT_THAT(ApplyRound(*kfold, catalogue, -1),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("from 0 to 4")));
  EXPECT_THAT(ApplyRound(*kfold, catalogue, 5),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("out of range")));
  EXPECT_THAT(ApplyRound(*two, catalogue, 0),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("k >= 3")));
  EXPECT_THAT(ApplyRound(*holdout, catalogue, 1),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("not k-fold")));
  auto sets = ApplyRound(*holdout, catalogue, -1);
  ASSERT_THAT(sets, IsOk());
  EXPECT_EQ(static_cast<int>(sets->test.size()), holdout->Count("test"));
  EXPECT_EQ(static_cast<int>(sets->val.size()), holdout->Count("val"));
}

// The model to ship after the rounds trains on every image of the k-fold split.
TEST(SplitTest, AllFoldsTrainOnEveryImage) {
  const Catalogue& catalogue = RealCatalogue();
  auto kfold = MakeKFold(catalogue, 5, 3);
  auto holdout = MakeSplit(catalogue, {.seed = 3});
  ASSERT_THAT(kfold, IsOk());
  ASSERT_THAT(holdout, IsOk());
  auto sets = ApplyAllFolds(*kfold, catalogue);
  ASSERT_THAT(sets, IsOk());
  EXPECT_EQ(sets->train.size(), catalogue.samples.size());
  EXPECT_TRUE(sets->val.empty());
  EXPECT_TRUE(sets->test.empty());
  std::set<std::string> images;
  for (const Sample& s : sets->train) images.insert(s.image_id);
  EXPECT_EQ(images.size(), catalogue.samples.size());
  EXPECT_THAT(ApplyAllFolds(*holdout, catalogue),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("needs a k-fold split")));
  Catalogue fewer = catalogue;
  fewer.samples.pop_back();
  EXPECT_THAT(ApplyAllFolds(*kfold, fewer),
              StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("not in the catalogue")));
}

// Every image but one fold's (the shipped model's procedure, measured): that fold is the
// test set, whole; the rest trains; nothing validates.
TEST(SplitTest, AllFoldsButOneTestsOnThatFold) {
  const Catalogue& catalogue = RealCatalogue();
  auto kfold = MakeKFold(catalogue, 5, 11);
  ASSERT_THAT(kfold, IsOk());
  for (int fold : {0, 4}) {
    auto sets = ApplyAllFolds(*kfold, catalogue, fold);
    ASSERT_THAT(sets, IsOk());
    EXPECT_TRUE(sets->val.empty());
    EXPECT_EQ(sets->test.size(), static_cast<size_t>(kfold->Count(absl::StrCat("fold", fold))));
    EXPECT_EQ(sets->train.size() + sets->test.size(), catalogue.samples.size());
    for (const Sample& s : sets->test)
      EXPECT_EQ(*kfold->PartitionOf(s.image_id), absl::StrCat("fold", fold));
    std::set<std::string> test_lesions;
    for (const Sample& s : sets->test) test_lesions.insert(s.lesion_id);
    for (const Sample& s : sets->train) {
      EXPECT_NE(*kfold->PartitionOf(s.image_id), absl::StrCat("fold", fold)) << s.image_id;
      EXPECT_EQ(test_lesions.count(s.lesion_id), 0u) << s.lesion_id;
    }
  }
  EXPECT_THAT(ApplyAllFolds(*kfold, catalogue, 5),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("out of range")));
}

// Train without one hospital, test on it: every test image comes from the held-out
// source, none of the training or validation images does, lesions stay whole.
TEST(SplitTest, SourceHoldoutTestsOnlyTheHeldOutSource) {
  const Catalogue& catalogue = RealCatalogue();
  auto split = MakeSourceHoldout(catalogue, "rosendahl", 0.15, 7);
  ASSERT_THAT(split, IsOk());
  EXPECT_EQ(split->method(), "source:rosendahl");
  ExpectLesionDisjointAndComplete(*split, catalogue);
  int test = 0, train = 0, val = 0;
  for (const Sample& s : catalogue.samples) {
    const std::string& p = *split->PartitionOf(s.image_id);
    if (p == "test") {
      ++test;
      EXPECT_EQ(s.dataset, "rosendahl") << s.image_id;
    } else {
      EXPECT_NE(s.dataset, "rosendahl") << s.image_id;
      (p == "train" ? train : val) += 1;
    }
  }
  EXPECT_EQ(test, 2259);
  EXPECT_NEAR(static_cast<double>(val) / (train + val), 0.15, 0.01);
  // Round trip: the method survives the CSV.
  auto parsed = ParseSplit(split->ToCsv());
  ASSERT_THAT(parsed, IsOk());
  EXPECT_EQ(parsed->Digest(), split->Digest());
  EXPECT_THAT(MakeSourceHoldout(catalogue, "mars_clinic", 0.15, 7),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       AllOf(HasSubstr("mars_clinic"), HasSubstr("rosendahl, vidir_modern"))));
  EXPECT_THAT(MakeSourceHoldout(catalogue, "rosendahl", 1.0, 7),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("val fraction")));
}

TEST(SplitTest, ApplyReturnsThePartitionInCatalogueOrder) {
  const Catalogue& catalogue = RealCatalogue();
  auto split = MakeSplit(catalogue, {.seed = 1});
  ASSERT_THAT(split, IsOk());
  size_t total = 0;
  for (const char* p : {"train", "val", "test"}) {
    auto samples = Apply(*split, catalogue, p);
    ASSERT_THAT(samples, IsOk());
    EXPECT_EQ(samples->size(), static_cast<size_t>(split->Count(p)));
    for (const Sample& s : *samples) EXPECT_EQ(*split->PartitionOf(s.image_id), p);
    total += samples->size();
  }
  EXPECT_EQ(total, catalogue.samples.size());
  auto train = Apply(*split, catalogue, "train");
  EXPECT_TRUE(std::is_sorted(train->begin(), train->end(), [&](const Sample& a, const Sample& b) {
    auto pos = [&](const Sample& s) {
      return std::find_if(catalogue.samples.begin(), catalogue.samples.end(),
                          [&](const Sample& x) { return x.image_id == s.image_id; }) -
             catalogue.samples.begin();
    };
    return pos(a) < pos(b);
  }));
  EXPECT_THAT(Apply(*split, catalogue, "fold0"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("no partition 'fold0'")));
}

TEST(SplitTest, ApplyRejectsACatalogueThatDoesNotMatch) {
  const Catalogue& catalogue = RealCatalogue();
  auto split = MakeSplit(catalogue, {.seed = 1});
  ASSERT_THAT(split, IsOk());

  Catalogue fewer = catalogue;
  const std::string dropped = fewer.samples[100].image_id;
  fewer.samples.erase(fewer.samples.begin() + 100);
  EXPECT_THAT(Apply(*split, fewer, "train"),
              StatusIs(absl::StatusCode::kFailedPrecondition,
                       HasSubstr("the split names image " + dropped)));

  Catalogue more = catalogue;
  more.samples.push_back(more.samples.front());
  more.samples.back().image_id = "ISIC_9999999";
  EXPECT_THAT(Apply(*split, more, "train"),
              StatusIs(absl::StatusCode::kFailedPrecondition,
                       HasSubstr("image ISIC_9999999 of the catalogue is not in the split")));

  Catalogue moved = catalogue;
  moved.samples[5].lesion_id = "HAM_other";
  EXPECT_THAT(Apply(*split, moved, "val"),
              StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("belongs to lesion")));
}

TEST(SplitTest, SmallCataloguesAndBadOptions) {
  Catalogue catalogue;
  // Lesion L1 has 2 mel images and 1 nv image: it counts as mel.
  auto sample = [](const char* image, const char* lesion, int label) {
    Sample s;
    s.image_id = image;
    s.lesion_id = lesion;
    s.label = label;
    return s;
  };
  catalogue.samples = {sample("a", "L1", 4), sample("b", "L1", 4), sample("c", "L1", 5),
                       sample("d", "L2", 5)};
  auto split = MakeSplit(catalogue, {.train = 0.5, .val = 0.0, .test = 0.5, .seed = 0});
  ASSERT_THAT(split, IsOk());
  // One lesion per class; largest remainder gives each class's lesion to train.
  EXPECT_EQ(split->Count("train"), 4);
  EXPECT_EQ(split->Count("val"), 0);

  EXPECT_THAT(MakeSplit(catalogue, {.train = 0.5, .val = 0.2, .test = 0.2}),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("not 1")));
  EXPECT_THAT(MakeSplit(catalogue, {.train = 1.5, .val = -0.5, .test = 0}),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("not in [0, 1]")));
  EXPECT_THAT(MakeSplit(Catalogue{}, {}),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("empty")));
  EXPECT_THAT(MakeKFold(catalogue, 3, 0),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("lesions = 2")));
  EXPECT_THAT(MakeKFold(catalogue, 1, 0),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("k-fold")));
  Catalogue duplicate = catalogue;
  duplicate.samples[1].image_id = "a";
  EXPECT_THAT(MakeSplit(duplicate, {}),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("image a appears twice")));
}

TEST(SplitTest, LoadRejectsBrokenFiles) {
  const std::string header = "image_id,lesion_id,partition,method,seed\n";
  struct Case {
    std::string text;
    std::string message;
  };
  const Case cases[] = {
      {"image,partition\na,train\n", "header must be"},
      {header, "has no rows"},
      {header + "a,L1,train,holdout:0.7/0.15/0.15,x\n", "bad seed"},
      {header + "a,L1,train,holdout:0.7/0.15/0.15,1\nb,L2,val,holdout:0.7/0.15/0.15,2\n",
       "line 3: method and seed differ"},
      {header + "a,L1,train,kfold:3,1\n", "partition 'train' is not one of fold0, fold1, fold2"},
      {header + "a,L1,train,random,1\n", "unknown split method 'random'"},
      {header + "a,L1,train,holdout:x,1\nb,L1,test,holdout:x,1\n",
       "lesion L1 is in two partitions"},
      {header + "a,L1,train,holdout:x,1\na,L2,test,holdout:x,1\n", "image a appears twice"},
      {header + "a,L1,train,holdout:x\n", "line 2: expected 5 fields, found 4"},
  };
  TempDir dir;
  for (const Case& c : cases) {
    WriteFile(dir.Join("split.csv"), c.text);
    EXPECT_THAT(LoadSplit(dir.Join("split.csv")),
                StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr(c.message)))
        << c.text;
  }
  EXPECT_THAT(LoadSplit(dir.Join("missing.csv")),
              StatusIs(absl::StatusCode::kNotFound, HasSubstr("missing.csv")));

  // Ids that need quoting survive a round trip.
  auto split = Split::Create("kfold:2", 5, {{"a,1", "L \"x\"", "fold1"}, {"b", "L2", "fold0"}});
  ASSERT_THAT(split, IsOk());
  auto parsed = ParseSplit(split->ToCsv());
  ASSERT_THAT(parsed, IsOk());
  EXPECT_EQ(parsed->Digest(), split->Digest());
  EXPECT_EQ(*parsed->PartitionOf("a,1"), "fold1");
}

}  // namespace
}  // namespace skinlesion::data
