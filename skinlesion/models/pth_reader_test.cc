#include "skinlesion/models/pth_reader.h"

#include <torch/torch.h>

#include "gtest/gtest.h"
#include "skinlesion/testing/testing.h"

namespace skinlesion::models {
namespace {

using ::skinlesion::testing::IsOk;
using ::skinlesion::testing::SourcePath;
using ::skinlesion::testing::StatusIs;
using ::skinlesion::testing::TempDir;
using ::testing::HasSubstr;

TEST(PthReaderTest, ReadsEveryDtypeAndView) {
  for (const char* file : {"tiny_state_dict.pth", "protocol4_state_dict.pth"}) {
    SCOPED_TRACE(file);
    auto sd = ReadPth(SourcePath(std::string("skinlesion/models/testdata/") + file));
    ASSERT_THAT(sd, IsOk());
    const torch::Tensor base = torch::arange(12, torch::kFloat).reshape({3, 4});
    EXPECT_TRUE(torch::equal(sd->at("linear.weight"), base));
    EXPECT_TRUE(torch::equal(sd->at("linear.bias"), torch::tensor({0.5f, -1.5f, 2.25f})));
    EXPECT_TRUE(torch::equal(sd->at("transposed"), base.t()));
    EXPECT_TRUE(torch::equal(sd->at("row"), base[1]));
    EXPECT_EQ(sd->at("half").scalar_type(), torch::kHalf);
    EXPECT_TRUE(torch::equal(sd->at("half").to(torch::kFloat), torch::tensor({1.0f, -2.0f, 0.25f})));
    EXPECT_EQ(sd->at("bf16").scalar_type(), torch::kBFloat16);
    EXPECT_EQ(sd->at("double").scalar_type(), torch::kDouble);
    EXPECT_EQ(sd->at("count").dim(), 0);
    EXPECT_EQ(sd->at("count").item<int64_t>(), 7);
    EXPECT_TRUE(torch::equal(sd->at("mask"), torch::tensor({true, false})));
    EXPECT_EQ(sd->at("bytes")[1].item<int64_t>(), 255);
    EXPECT_EQ(sd->at("empty").sizes(), (std::vector<int64_t>{0, 5}));
  }
}

TEST(PthReaderTest, ReadsTheStateDictOfACheckpoint) {
  auto sd = ReadPth(SourcePath("skinlesion/models/testdata/tiny_checkpoint.pth"));
  ASSERT_THAT(sd, IsOk());
  ASSERT_EQ(sd->size(), 1u);
  EXPECT_TRUE(torch::equal(sd->at("w"), torch::ones({2, 2})));
}

TEST(PthReaderTest, RejectsNonArchives) {
  TempDir dir;
  ::skinlesion::testing::WriteFile(dir.Join("legacy.pth"), std::string("\x80\x02\x8a\x0a", 4));
  EXPECT_THAT(ReadPth(dir.Join("legacy.pth")), StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("legacy")));
  ::skinlesion::testing::WriteFile(dir.Join("broken.pth"), "PK\x03\x04 truncated zip");
  EXPECT_THAT(ReadPth(dir.Join("broken.pth")), StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("broken.pth")));
  EXPECT_THAT(ReadPth(dir.Join("missing.pth")), StatusIs(absl::StatusCode::kNotFound, HasSubstr("missing.pth")));
}

}  // namespace
}  // namespace skinlesion::models
