#include "skinlesion/common/csv.h"

#include "gtest/gtest.h"
#include "skinlesion/testing/testing.h"

namespace skinlesion {
namespace {

using ::skinlesion::testing::StatusIs;
using ::testing::ElementsAre;
using ::testing::HasSubstr;

TEST(CsvTest, PlainRecordsWithLineNumbers) {
  auto r = ParseCsv("a,b,c\n1,2,3\r\n\n4,,6\n");
  ASSERT_TRUE(r.ok()) << r.status();
  ASSERT_EQ(r->size(), 3u);
  EXPECT_THAT((*r)[0].fields, ElementsAre("a", "b", "c"));
  EXPECT_THAT((*r)[1].fields, ElementsAre("1", "2", "3"));
  EXPECT_EQ((*r)[1].line, 2);
  EXPECT_THAT((*r)[2].fields, ElementsAre("4", "", "6"));
  EXPECT_EQ((*r)[2].line, 4);
}

TEST(CsvTest, QuotedFieldsWithCommasQuotesAndNewlines) {
  auto r = ParseCsv("\xEF\xBB\xBFx,y\n\"a,b\",\"say \"\"hi\"\"\"\n\"two\nlines\",z\nlast,1");
  ASSERT_TRUE(r.ok()) << r.status();
  ASSERT_EQ(r->size(), 4u);
  EXPECT_THAT((*r)[0].fields, ElementsAre("x", "y"));
  EXPECT_THAT((*r)[1].fields, ElementsAre("a,b", "say \"hi\""));
  EXPECT_THAT((*r)[2].fields, ElementsAre("two\nlines", "z"));
  EXPECT_EQ((*r)[3].line, 5);
  EXPECT_THAT((*r)[3].fields, ElementsAre("last", "1"));
}

TEST(CsvTest, TrailingCommaGivesEmptyField) {
  auto r = ParseCsv("a,");
  ASSERT_TRUE(r.ok());
  EXPECT_THAT((*r)[0].fields, ElementsAre("a", ""));
}

TEST(CsvTest, MalformedInputNamesTheLine) {
  EXPECT_THAT(ParseCsv("a\n\"open,b\n"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("line 2: unterminated")));
  EXPECT_THAT(ParseCsv("a\nb\n\"x\"y\n"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("line 3")));
  EXPECT_THAT(ParseCsv("ab\"c\n"), StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("quote")));
  CsvOptions small;
  small.max_fields = 2;
  EXPECT_THAT(ParseCsv("1,2,3\n", small),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("more than 2")));
}

TEST(CsvTest, FilesAndAtomicWrites) {
  skinlesion::testing::TempDir dir;
  const std::string path = dir.Join("f.csv");
  ASSERT_TRUE(WriteFileAtomically(path, "h\n1\n").ok());
  auto r = ReadCsvFile(path);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->size(), 2u);
  EXPECT_THAT(ReadCsvFile(dir.Join("missing.csv")),
              StatusIs(absl::StatusCode::kNotFound, HasSubstr("missing.csv")));
  EXPECT_THAT(ReadFileToString(path, 2),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("over the limit")));
}

}  // namespace
}  // namespace skinlesion
