#include "skinlesion/common/classes.h"

#include <set>

#include "gtest/gtest.h"
#include "skinlesion/testing/testing.h"

namespace skinlesion {
namespace {

using ::skinlesion::testing::StatusIs;
using ::testing::HasSubstr;

TEST(ClassesTest, IndexOrderIsAlphabeticalByCode) {
  const auto& all = AllClasses();
  ASSERT_EQ(all.size(), 7u);
  const char* expected[] = {"akiec", "bcc", "bkl", "df", "mel", "nv", "vasc"};
  for (int i = 0; i < kNumClasses; ++i) {
    EXPECT_EQ(all[i].index, i);
    EXPECT_EQ(all[i].code, expected[i]);
    EXPECT_FALSE(all[i].name.empty());
  }
}

TEST(ClassesTest, MalignancyGroups) {
  std::set<std::string> malignant;
  for (const auto& c : AllClasses()) {
    if (c.group == MalignancyGroup::kMalignant) malignant.insert(std::string(c.code));
    EXPECT_EQ(IsMalignant(c.index), c.group == MalignancyGroup::kMalignant);
  }
  EXPECT_EQ(malignant, (std::set<std::string>{"akiec", "bcc", "mel"}));
  EXPECT_EQ(MalignancyGroupName(MalignancyGroup::kBenign), "benign");
}

TEST(ClassesTest, LookupIsCaseInsensitive) {
  auto mel = ClassFromCode("MEL");
  ASSERT_TRUE(mel.ok());
  EXPECT_EQ(mel->index, 4);
  EXPECT_EQ(ClassFromCode(" nv ")->index, 5);
  EXPECT_THAT(ClassFromCode("melanoma"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("akiec, bcc")));
  EXPECT_THAT(ClassFromCode(""), StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("unknown")));
}

TEST(ClassesDeathTest, OutOfRangeIndexAborts) {
  EXPECT_DEATH(ClassAt(7), "out of range");
}

}  // namespace
}  // namespace skinlesion
