#include "skinlesion/common/precision.h"

#include <gtest/gtest.h>

namespace skinlesion {
namespace {

TEST(PrecisionTest, ParsesChoicesAndPins) {
  EXPECT_EQ(*ParsePrecisionChoice("auto"), PrecisionChoice::kAuto);
  EXPECT_EQ(*ParsePrecisionChoice("FP32"), PrecisionChoice::kFp32);
  EXPECT_EQ(*ParsePrecisionChoice("bfloat16"), PrecisionChoice::kBf16);
  const auto bad = ParsePrecisionChoice("fp16");
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(bad.status().message().find("auto, fp32 or bf16"), absl::string_view::npos);
  EXPECT_EQ(*ParsePrecision("bf16"), Precision::kBf16);
  EXPECT_FALSE(ParsePrecision("auto").ok());  // A pin names one precision.
  EXPECT_EQ(PrecisionName(Precision::kBf16), "bf16");
  EXPECT_EQ(PrecisionChoiceName(PrecisionChoice::kAuto), "auto");
}

TEST(PrecisionTest, AutoPicksBf16OnlyWhereItIsFast) {
  PrecisionDecision d = ResolvePrecision(PrecisionChoice::kAuto, {.native_bf16 = true});
  EXPECT_EQ(d.precision, Precision::kBf16);
  EXPECT_NE(d.reason.find("native bf16"), std::string::npos);
  d = ResolvePrecision(PrecisionChoice::kAuto, {.native_bf16 = false});
  EXPECT_EQ(d.precision, Precision::kFp32);
  EXPECT_NE(d.reason.find("no native bf16"), std::string::npos);
  d = ResolvePrecision(PrecisionChoice::kAuto, {.cuda = true});
  EXPECT_EQ(d.precision, Precision::kBf16);
}

TEST(PrecisionTest, AutoFollowsAManifestPinAndAnExplicitChoiceOverridesIt) {
  PrecisionDecision d =
      ResolvePrecision(PrecisionChoice::kAuto, {.native_bf16 = true, .pinned = Precision::kFp32});
  EXPECT_EQ(d.precision, Precision::kFp32);
  EXPECT_NE(d.reason.find("pinned"), std::string::npos);
  d = ResolvePrecision(PrecisionChoice::kBf16, {.native_bf16 = true, .pinned = Precision::kFp32});
  EXPECT_EQ(d.precision, Precision::kBf16);
  EXPECT_NE(d.reason.find("overriding"), std::string::npos);
  d = ResolvePrecision(PrecisionChoice::kBf16, {.native_bf16 = false});
  EXPECT_EQ(d.precision, Precision::kBf16);
  EXPECT_NE(d.reason.find("emulated"), std::string::npos);
  d = ResolvePrecision(PrecisionChoice::kFp32, {.native_bf16 = true});
  EXPECT_EQ(d.precision, Precision::kFp32);
  EXPECT_EQ(d.reason, "fp32 (requested)");
}

}  // namespace
}  // namespace skinlesion
