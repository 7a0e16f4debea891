#include "skinlesion/common/json_file.h"

#include <string>

#include "gtest/gtest.h"
#include "skinlesion/testing/testing.h"

namespace skinlesion {
namespace {

using ::skinlesion::testing::StatusIs;
using ::testing::HasSubstr;

class ReadJsonObjectTest : public ::testing::Test {
 protected:
  std::string File(const std::string& name, const std::string& content) {
    const std::string path = dir_.Join(name);
    testing::WriteFile(path, content);
    return path;
  }
  testing::TempDir dir_;
};

TEST_F(ReadJsonObjectTest, ReadsAnObject) {
  const std::string path = File("ok.json", R"({"a": 1, "b": [2, 3]})");
  auto j = ReadJsonObject(path, 1 << 10);
  ASSERT_TRUE(j.ok()) << j.status();
  EXPECT_EQ((*j)["a"], 1);
  EXPECT_EQ((*j)["b"].size(), 2u);
}

TEST_F(ReadJsonObjectTest, BadContentIsDataLossNamingTheFile) {
  const std::string broken = File("broken.json", R"({"a": )");
  EXPECT_THAT(ReadJsonObject(broken, 1 << 10),
              StatusIs(absl::StatusCode::kDataLoss, HasSubstr(broken + " is not valid JSON")));
  const std::string array = File("array.json", "[1, 2]");
  EXPECT_THAT(ReadJsonObject(array, 1 << 10),
              StatusIs(absl::StatusCode::kDataLoss, HasSubstr(array + " is not a JSON object")));
  const std::string empty = File("empty.json", "");
  EXPECT_THAT(ReadJsonObject(empty, 1 << 10),
              StatusIs(absl::StatusCode::kDataLoss, HasSubstr("is not valid JSON")));
}

TEST_F(ReadJsonObjectTest, AUsersFileGetsTheCodeAskedFor) {
  const std::string path = File("number.json", "42");
  EXPECT_THAT(ReadJsonObject(path, 1 << 10, absl::StatusCode::kInvalidArgument),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("is not a JSON object")));
}

TEST_F(ReadJsonObjectTest, MissingAndOversizedFilesKeepTheReadersErrors) {
  EXPECT_THAT(ReadJsonObject(dir_.Join("absent.json"), 1 << 10),
              StatusIs(absl::StatusCode::kNotFound, HasSubstr("absent.json")));
  const std::string big = File("big.json", R"({"pad": ")" + std::string(100, 'x') + R"("})");
  EXPECT_THAT(ReadJsonObject(big, 64),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("over the limit")));
}

// A changed value and a key `before` lacks are listed in `now`'s order; equal values and
// keys not compared are not.
TEST(ChangedKeysTest, ListsTheComparedKeysWhoseValuesDiffer) {
  const nlohmann::json before = {{"lr", 0.001}, {"epochs", 3}, {"threads", 1}};
  const nlohmann::json now = {{"epochs", 3}, {"lr", 0.0003}, {"resize", "resize"}, {"threads", 2}};
  EXPECT_EQ(ChangedKeys(before, now, [](const std::string& key) { return key != "threads"; }),
            (std::vector<std::string>{"lr 0.001 -> 0.0003", "resize null -> \"resize\""}));
  EXPECT_TRUE(ChangedKeys(now, now, [](const std::string&) { return true; }).empty());
}

}  // namespace
}  // namespace skinlesion
