#include "skinlesion/common/classes.h"

#include <set>

#include "gtest/gtest.h"
#include "skinlesion/testing/testing.h"

namespace skinlesion {
namespace {

using ::skinlesion::testing::StatusIs;
using ::testing::HasSubstr;

TEST(ClassesTest, Ham10000IndexOrderIsAlphabeticalByCode) {
  const LabelSet& ham = LabelSet::Ham10000();
  ASSERT_EQ(ham.size(), kHam10000NumClasses);
  const char* expected[] = {"akiec", "bcc", "bkl", "df", "mel", "nv", "vasc"};
  for (int i = 0; i < ham.size(); ++i) {
    EXPECT_EQ(ham.at(i).index, i);
    EXPECT_EQ(ham.at(i).code, expected[i]);
    EXPECT_FALSE(ham.at(i).name.empty());
    EXPECT_NE(ham.at(i).name, ham.at(i).code);
  }
  EXPECT_EQ(ham.ToString(), "akiec, bcc, bkl, df, mel, nv, vasc");
}

TEST(ClassesTest, MalignancyGroups) {
  std::set<std::string> malignant;
  for (const auto& c : LabelSet::Ham10000()) {
    if (c.group == MalignancyGroup::kMalignant) malignant.insert(c.code);
    EXPECT_EQ(LabelSet::Ham10000().IsMalignant(c.index), c.group == MalignancyGroup::kMalignant);
  }
  EXPECT_EQ(malignant, (std::set<std::string>{"akiec", "bcc", "mel"}));
  EXPECT_EQ(LabelSet::Ham10000().malignant_codes(), (std::vector<std::string>{"akiec", "bcc", "mel"}));
  EXPECT_EQ(MalignancyGroupName(MalignancyGroup::kBenign), "benign");
}

TEST(ClassesTest, LookupIsCaseInsensitive) {
  const LabelSet& ham = LabelSet::Ham10000();
  auto mel = ham.Find("MEL");
  ASSERT_TRUE(mel.ok());
  EXPECT_EQ(mel->index, 4);
  EXPECT_EQ(ham.Find(" nv ")->index, 5);
  EXPECT_EQ(ham.IndexOf("Vasc"), 6);
  EXPECT_FALSE(ham.IndexOf("scc").has_value());
  EXPECT_THAT(ham.Find("melanoma"), StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("akiec, bcc")));
  EXPECT_THAT(ham.Find(""), StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("unknown")));
}

TEST(ClassesTest, AModelsOwnLabelSet) {
  // ISIC 2019's eight: scc is known (malignant) with its name.
  auto isic = LabelSet::Create({"akiec", "bcc", "bkl", "df", "mel", "nv", "scc", "vasc"});
  ASSERT_TRUE(isic.ok()) << isic.status();
  EXPECT_EQ(isic->size(), 8);
  EXPECT_EQ(isic->at(6).name, "Squamous cell carcinoma");
  EXPECT_EQ(isic->malignant_codes(), (std::vector<std::string>{"akiec", "bcc", "mel", "scc"}));
  EXPECT_NE(*isic, LabelSet::Ham10000());

  // A clinic's own codes: unknown codes are benign and named by their code, unless the
  // set lists its malignant classes; letter case is normalised.
  auto own = LabelSet::Create({"Benign", "melanoma", "other"});
  ASSERT_TRUE(own.ok()) << own.status();
  EXPECT_EQ(own->at(0).code, "benign");
  EXPECT_EQ(own->at(1).name, "melanoma");
  EXPECT_FALSE(own->HasMalignant());
  auto grouped = LabelSet::Create({"benign", "melanoma", "other"}, std::vector<std::string>{"MELANOMA"});
  ASSERT_TRUE(grouped.ok()) << grouped.status();
  EXPECT_TRUE(grouped->IsMalignant(1));
  EXPECT_FALSE(grouped->IsMalignant(0));
  EXPECT_NE(*grouped, *own);  // Same codes, other grouping.
  // An explicit list replaces the known groups: a binary melanoma model.
  auto binary = LabelSet::Create({"mel", "nv"}, std::vector<std::string>{});
  ASSERT_TRUE(binary.ok());
  EXPECT_FALSE(binary->HasMalignant());
}

TEST(ClassesTest, BadLabelSetsAreRefused) {
  EXPECT_THAT(LabelSet::Create({"mel"}), StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("2 to 1000")));
  EXPECT_THAT(LabelSet::Create({"mel", "MEL"}), StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("twice")));
  EXPECT_THAT(LabelSet::Create({"mel", "no spaces"}),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("'no spaces'")));
  EXPECT_THAT(LabelSet::Create({"mel", ""}), StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("1-32")));
  EXPECT_THAT(LabelSet::Create({"mel", std::string(33, 'a')}), StatusIs(absl::StatusCode::kInvalidArgument, ::testing::_));
  EXPECT_THAT(LabelSet::Create({"mel", "nv"}, std::vector<std::string>{"scc"}),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("malignant class 'scc'")));
  EXPECT_TRUE(CheckClassCode("a-b_9").ok());
  EXPECT_FALSE(CheckClassCode("Mel").ok());  // Codes are lower case once normalised.
}

TEST(ClassesDeathTest, OutOfRangeIndexAborts) {
  EXPECT_DEATH(LabelSet::Ham10000().at(7), "out of range");
}

}  // namespace
}  // namespace skinlesion
