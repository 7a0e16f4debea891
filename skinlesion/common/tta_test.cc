#include "skinlesion/common/tta.h"

#include <gtest/gtest.h>

namespace skinlesion {
namespace {

TEST(TtaTest, ParsesNamesAndCountsViews) {
  for (const Tta tta : {Tta::kNone, Tta::kFlips, Tta::kDihedral}) {
    EXPECT_EQ(*ParseTta(TtaName(tta)), tta);
  }
  EXPECT_EQ(*ParseTta("Dihedral"), Tta::kDihedral);
  EXPECT_EQ(TtaViewCount(Tta::kNone), 1);
  EXPECT_EQ(TtaViewCount(Tta::kFlips), 3);
  EXPECT_EQ(TtaViewCount(Tta::kDihedral), 8);
  const auto bad = ParseTta("rotate");
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(bad.status().message().find("none, flips or dihedral"), absl::string_view::npos);
  EXPECT_NE(bad.status().message().find("\"rotate\""), absl::string_view::npos);
  EXPECT_FALSE(ParseTta("").ok());
}

}  // namespace
}  // namespace skinlesion
