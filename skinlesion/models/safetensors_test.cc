#include "skinlesion/models/safetensors.h"

#include <cstring>

#include <torch/torch.h>

#include "gtest/gtest.h"
#include "skinlesion/testing/testing.h"

namespace skinlesion::models {
namespace {

using ::skinlesion::testing::IsOk;
using ::skinlesion::testing::StatusIs;
using ::skinlesion::testing::TempDir;
using ::testing::HasSubstr;

std::string WithHeader(const std::string& json, const std::string& data = "") {
  std::string out(8, '\0');
  const uint64_t n = json.size();
  std::memcpy(out.data(), &n, 8);
  return out + json + data;
}

TEST(SafetensorsTest, RoundTripsEveryDtype) {
  TensorMap tensors = {
      {"f32", torch::randn({3, 4})},
      {"f64", torch::randn({2}, torch::kDouble)},
      {"f16", torch::randn({5}).to(torch::kHalf)},
      {"bf16", torch::randn({2, 2}).to(torch::kBFloat16)},
      {"i64", torch::arange(6, torch::kLong).reshape({2, 3})},
      {"i32", torch::arange(3, torch::kInt)},
      {"u8", torch::arange(4, torch::kByte)},
      {"bool", torch::tensor({true, false})},
      {"scalar", torch::tensor(3.5)},
      {"empty", torch::zeros({0, 3})},
      {"strided", torch::randn({4, 3}).t()},
  };
  TempDir dir;
  const std::string path = dir.Join("a.safetensors");
  ASSERT_THAT(WriteSafetensors(path, tensors, {{"format", "pt"}}), IsOk());
  auto read = ReadSafetensors(path);
  ASSERT_THAT(read, IsOk());
  EXPECT_EQ(read->metadata.at("format"), "pt");
  ASSERT_EQ(read->tensors.size(), tensors.size());
  for (const auto& [name, t] : tensors) {
    const torch::Tensor& r = read->tensors.at(name);
    EXPECT_EQ(r.scalar_type(), t.scalar_type()) << name;
    EXPECT_EQ(r.sizes(), t.sizes()) << name;
    EXPECT_TRUE(torch::equal(r, t)) << name;
  }
  // The mapping is private: writing to a loaded tensor does not touch the file.
  read->tensors.at("f32").add_(1);
  auto again = ReadSafetensors(path);
  ASSERT_THAT(again, IsOk());
  EXPECT_TRUE(torch::equal(again->tensors.at("f32"), tensors.at("f32")));
  // Tensors outlive the Safetensors object (they keep the mapping).
  torch::Tensor kept = again->tensors.at("i64");
  again = absl::InvalidArgumentError("dropped");
  EXPECT_EQ(kept.sum().item<int64_t>(), 15);
}

TEST(SafetensorsTest, ParsesInMemory) {
  auto bytes = SerializeSafetensors({{"x", torch::ones({2})}});
  ASSERT_THAT(bytes, IsOk());
  EXPECT_EQ((bytes->size() - 8 - 8) % 8, 0u);  // Header padded to 8.
  auto parsed = ParseSafetensors(*bytes);
  ASSERT_THAT(parsed, IsOk());
  EXPECT_TRUE(torch::equal(parsed->tensors.at("x"), torch::ones({2})));
}

TEST(SafetensorsTest, RejectsMalformedFiles) {
  const auto bad = [](const std::string& bytes, const std::string& message) {
    EXPECT_THAT(ParseSafetensors(bytes), StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr(message)))
        << bytes.substr(8);
  };
  bad("abc", "shorter than");
  bad(std::string("\xff\xff\xff\xff\x00\x00\x00\x00{}", 10), "exceeds the file");
  bad(WithHeader("{not json"), "not valid JSON");
  bad(WithHeader("[]"), "not a JSON object");
  bad(WithHeader(R"({"x":{"dtype":"F8","shape":[1],"data_offsets":[0,1]}})", "a"), "unsupported dtype \"F8\"");
  bad(WithHeader(R"({"x":{"shape":[1],"data_offsets":[0,4]}})", "abcd"), "dtype");
  bad(WithHeader(R"({"x":{"dtype":"F32","shape":[-1],"data_offsets":[0,4]}})", "abcd"), "non-negative");
  bad(WithHeader(R"({"x":{"dtype":"F32","shape":[1],"data_offsets":[0,8]}})", "abcd"), "outside the data section");
  bad(WithHeader(R"({"x":{"dtype":"F32","shape":[2],"data_offsets":[0,4]}})", "abcd"), "needs 2 x 4 bytes");
  bad(WithHeader(R"({"x":{"dtype":"F32","shape":[4611686018427387904,4],"data_offsets":[0,4]}})", "abcd"), "overflow");
  bad(WithHeader(R"({"x":{"dtype":"U8","shape":[3],"data_offsets":[0,3]},"y":{"dtype":"U8","shape":[2],"data_offsets":[2,4]}})", "abcd"), "overlap");
  bad(WithHeader(R"({"__metadata__":{"a":1}})"), "__metadata__");
  bad(WithHeader(R"({"x":{"dtype":"F32","shape":[1],"data_offsets":[4,0]}})", "abcd"), "outside");
}

TEST(SafetensorsTest, MissingFileIsNotFound) {
  EXPECT_THAT(ReadSafetensors("/nonexistent/x.safetensors"), StatusIs(absl::StatusCode::kNotFound, HasSubstr("x.safetensors")));
}

}  // namespace
}  // namespace skinlesion::models
