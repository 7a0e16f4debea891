// A strict RFC 4180 CSV reader for outside data (metadata and ground-truth files).
//
// Quoted fields (with "" escapes and embedded commas or newlines), CRLF or LF line
// ends, a UTF-8 byte-order mark on the first line. Every record keeps the 1-based
// line number it started on so errors can point at the file. Malformed input (an
// unterminated quote, text after a closing quote) is an InvalidArgument error that
// names the line; it never crashes.
#ifndef SKINLESION_COMMON_CSV_H_
#define SKINLESION_COMMON_CSV_H_

#include <cstddef>
#include <string>
#include "absl/strings/string_view.h"
#include <vector>

#include "absl/status/statusor.h"

namespace skinlesion {

struct CsvRecord {
  int line = 0;                      // 1-based line where the record starts.
  std::vector<std::string> fields;
};

struct CsvOptions {
  // Records larger than this many fields are rejected (defends against
  // pathological input). Default 1024.
  size_t max_fields = 1024;
  // Blank lines are skipped (default) rather than returned as one empty field.
  bool skip_blank_lines = true;
};

// Parses the whole text. The first record is the header when the file has one.
absl::StatusOr<std::vector<CsvRecord>> ParseCsv(absl::string_view text,
                                                const CsvOptions& options = {});

// Reads a file (up to `max_bytes`, default 256 MiB) and parses it.
absl::StatusOr<std::vector<CsvRecord>> ReadCsvFile(const std::string& path,
                                                   const CsvOptions& options = {},
                                                   size_t max_bytes = size_t{256} << 20);

// Reads a whole file into memory, refusing files above max_bytes.
absl::StatusOr<std::string> ReadFileToString(const std::string& path, size_t max_bytes);

// Writes every byte of `bytes` to `fd` (retrying short and interrupted writes): 0, or the
// errno of the write that failed.
int WriteAll(int fd, absl::string_view bytes);

// Writes `content` to `path` atomically and durably (temporary file, fsync, rename, fsync of
// the directory): after a crash `path` holds the old content or the new, whole.
absl::Status WriteFileAtomically(const std::string& path, absl::string_view content);

// fsyncs a file, or a directory's entries (`directory` true).
absl::Status FsyncPath(const std::string& path, bool directory);

// Puts the directory `staged` (its files written and fsynced by the caller) in the place of
// `dir`, which may not exist yet, and removes the previous content. Where the filesystem can
// exchange two names in one step (Linux renameat2 RENAME_EXCHANGE), `dir` is whole at every
// moment, old or new, to readers and after a crash; elsewhere it is moved aside first, and
// missing for the moment between two renames. The parent directory is fsynced after.
absl::Status ReplaceDirectory(const std::string& staged, const std::string& dir);

}  // namespace skinlesion

#endif  // SKINLESION_COMMON_CSV_H_
