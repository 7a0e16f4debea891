#include "skinlesion/common/csv.h"

#include <fcntl.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <filesystem>
#include <string>
#include <thread>
#include <vector>

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

bool CanExchangeNames(const std::string& dir) {
  const std::string a = dir + "/probe_a", b = dir + "/probe_b";
  std::filesystem::create_directory(a);
  std::filesystem::create_directory(b);
  const bool can = ::renameat2(AT_FDCWD, a.c_str(), AT_FDCWD, b.c_str(), RENAME_EXCHANGE) == 0;
  std::filesystem::remove(a);
  std::filesystem::remove(b);
  return can;
}

std::string Slurp(const std::string& path) {
  auto r = ReadFileToString(path, 1 << 20);
  return r.ok() ? *r : "<" + std::string(r.status().message()) + ">";
}

TEST(ReplaceDirectoryTest, PutsTheStagedDirectoryInPlaceAndLeavesNoCopy) {
  skinlesion::testing::TempDir tmp;
  const std::string dir = tmp.Join("last"), staged = tmp.Join("last.tmp");
  std::filesystem::create_directory(staged);
  ASSERT_TRUE(WriteFileAtomically(staged + "/state.json", "first").ok());
  ASSERT_TRUE(ReplaceDirectory(staged, dir).ok());  // Nothing there yet.
  EXPECT_EQ(Slurp(dir + "/state.json"), "first");
  std::filesystem::create_directory(staged);
  ASSERT_TRUE(WriteFileAtomically(staged + "/state.json", "second").ok());
  ASSERT_TRUE(ReplaceDirectory(staged, dir).ok());
  EXPECT_EQ(Slurp(dir + "/state.json"), "second");
  std::vector<std::string> left;
  for (const auto& e : std::filesystem::directory_iterator(tmp.path()))
    left.push_back(e.path().filename().string());
  EXPECT_THAT(left, ElementsAre("last"));
  EXPECT_THAT(ReplaceDirectory(staged, dir),
              StatusIs(absl::StatusCode::kNotFound, HasSubstr("last.tmp")));
  EXPECT_EQ(Slurp(dir + "/state.json"), "second");
}

// A reader (a resume, a copy of the run) never finds the directory missing while it is
// replaced; with a rename aside and a rename in, a reader polling this loop did.
TEST(ReplaceDirectoryTest, TheDirectoryIsNeverMissing) {
  skinlesion::testing::TempDir tmp;
  if (!CanExchangeNames(tmp.path())) GTEST_SKIP() << "this filesystem cannot exchange names";
  const std::string dir = tmp.Join("last"), staged = tmp.Join("last.tmp");
  std::filesystem::create_directory(dir);
  ASSERT_TRUE(WriteFileAtomically(dir + "/state.json", "0").ok());
  std::atomic<bool> done{false};
  std::atomic<int> missing{0}, looks{0};
  std::thread reader([&] {
    while (!done.load()) {
      if (::access((dir + "/state.json").c_str(), F_OK) != 0) ++missing;
      ++looks;
    }
  });
  for (int i = 1; i <= 300; ++i) {
    std::filesystem::create_directory(staged);
    ASSERT_TRUE(WriteFileAtomically(staged + "/state.json", std::to_string(i)).ok());
    ASSERT_TRUE(ReplaceDirectory(staged, dir).ok());
  }
  done = true;
  reader.join();
  EXPECT_EQ(missing.load(), 0) << "of " << looks.load() << " looks";
  EXPECT_EQ(Slurp(dir + "/state.json"), "300");
}

TEST(FsyncPathTest, FilesAndDirectoriesOrAnError) {
  skinlesion::testing::TempDir tmp;
  ASSERT_TRUE(WriteFileAtomically(tmp.Join("f"), "x").ok());
  EXPECT_TRUE(FsyncPath(tmp.Join("f"), false).ok());
  EXPECT_TRUE(FsyncPath(tmp.path(), true).ok());
  EXPECT_THAT(FsyncPath(tmp.Join("absent"), false),
              StatusIs(absl::StatusCode::kInternal, HasSubstr("absent")));
  EXPECT_THAT(FsyncPath(tmp.Join("f"), true),
              StatusIs(absl::StatusCode::kInternal, HasSubstr("Not a directory")));
}

}  // namespace
}  // namespace skinlesion
