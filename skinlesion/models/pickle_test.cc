#include "skinlesion/models/pickle.h"

#include <string>

#include "gtest/gtest.h"
#include "skinlesion/common/csv.h"
#include "skinlesion/testing/testing.h"

namespace skinlesion::pickle {
namespace {

using ::skinlesion::testing::IsOk;
using ::skinlesion::testing::SourcePath;
using ::skinlesion::testing::StatusIs;
using ::testing::HasSubstr;

std::string Corpus(const std::string& name) {
  auto bytes = ReadFileToString(SourcePath("fuzz/corpus/pth_reader/" + name), 1 << 20);
  EXPECT_TRUE(bytes.ok()) << bytes.status();
  return bytes.ok() ? *bytes : "";
}

TEST(PickleTest, ParsesTorchSaveStateDict) {
  auto sd = ParseStateDict(Corpus("tiny_state_dict.pkl"));
  ASSERT_THAT(sd, IsOk());
  EXPECT_EQ(sd->size(), 11u);
  const TensorRef& w = sd->at("linear.weight");
  EXPECT_EQ(w.storage.type, StorageType::kFloat);
  EXPECT_EQ(w.storage.numel, 12);
  EXPECT_EQ(w.size, (std::vector<int64_t>{3, 4}));
  EXPECT_EQ(w.stride, (std::vector<int64_t>{4, 1}));
  const TensorRef& t = sd->at("transposed");
  EXPECT_EQ(t.storage.key, w.storage.key);
  EXPECT_EQ(t.stride, (std::vector<int64_t>{1, 4}));
  EXPECT_EQ(sd->at("row").storage_offset, 4);
  EXPECT_EQ(sd->at("half").storage.type, StorageType::kHalf);
  EXPECT_EQ(sd->at("bf16").storage.type, StorageType::kBFloat16);
  EXPECT_EQ(sd->at("count").size, std::vector<int64_t>{});
  EXPECT_EQ(sd->at("mask").storage.type, StorageType::kBool);
  EXPECT_EQ(sd->at("empty").size, (std::vector<int64_t>{0, 5}));
}

TEST(PickleTest, ParsesProtocol4) {
  auto sd = ParseStateDict(Corpus("protocol4.pkl"));
  ASSERT_THAT(sd, IsOk());
  EXPECT_EQ(sd->size(), 11u);
}

TEST(PickleTest, FindsStateDictInsideCheckpointAndReadsScalars) {
  const std::string bytes = Corpus("tiny_checkpoint.pkl");
  auto doc = Parse(bytes);
  ASSERT_THAT(doc, IsOk());
  const Value& root = doc->values[doc->root];
  ASSERT_EQ(root.kind, Value::Kind::kDict);
  bool saw_big = false, saw_lr = false;
  for (size_t i = 0; i + 1 < root.items.size(); i += 2) {
    const Value& k = doc->values[root.items[i]];
    const Value& v = doc->values[root.items[i + 1]];
    if (k.s == "big") saw_big = v.kind == Value::Kind::kInt && v.i == (int64_t{1} << 40);
    if (k.s == "lr") saw_lr = v.kind == Value::Kind::kFloat && v.f == 0.125;
  }
  EXPECT_TRUE(saw_big);
  EXPECT_TRUE(saw_lr);
  auto sd = ExtractStateDict(*doc);
  ASSERT_THAT(sd, IsOk());
  ASSERT_EQ(sd->size(), 1u);
  EXPECT_TRUE(sd->at("w").requires_grad);  // A Parameter (_rebuild_parameter).
}

TEST(PickleTest, RejectsGlobalsOutsideTheAllowList) {
  EXPECT_THAT(ParseStateDict(Corpus("evil_global.pkl")),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("posix.system")));
  // GLOBAL builtins.eval
  EXPECT_THAT(Parse(std::string("\x80\x02" "cbuiltins\neval\n.", 18)),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("builtins.eval")));
}

TEST(PickleTest, RejectsMalformedInput) {
  EXPECT_THAT(Parse(""), StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("STOP")));
  EXPECT_THAT(Parse(std::string("\x80\x02}q\x00(X\x05\x00\x00\x00" "ab", 13)),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("truncated")));
  EXPECT_THAT(Parse("\x80\x02" "0."), StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("underflow")));
  EXPECT_THAT(Parse("\x80\x02" "h\x05."), StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("memo")));
  EXPECT_THAT(Parse("\x80\x02" "Z."), StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("unsupported opcode")));
  EXPECT_THAT(Parse("\x80\x09N."), StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("protocol")));
  EXPECT_THAT(Parse("\x80\x02NN."), StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("2 values")));
  // A list appended to itself is fine for the parser (values refer by index).
  EXPECT_THAT(Parse(std::string("\x80\x02]q\x00h\x00" "a.", 9)), IsOk());
}

TEST(PickleTest, RejectsTensorsOutsideTheirStorage) {
  std::string bytes = Corpus("tiny_state_dict.pkl");
  auto doc = Parse(bytes);
  ASSERT_THAT(doc, IsOk());
  for (auto& v : doc->values) {
    if (v.kind == Value::Kind::kTensor && v.tensor.size == std::vector<int64_t>{3, 4}) v.tensor.storage_offset = 1;
  }
  EXPECT_THAT(ExtractStateDict(*doc), StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("reaches element")));
}

TEST(PickleTest, NonDictPayloadIsAnError) {
  EXPECT_THAT(ParseStateDict("\x80\x02N."),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("not a dict")));
  // {"a": 1}
  EXPECT_THAT(ParseStateDict(std::string("\x80\x02}X\x01\x00\x00\x00" "aK\x01s.", 13)),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("top-level keys: a")));
}

}  // namespace
}  // namespace skinlesion::pickle
