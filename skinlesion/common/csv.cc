#include "skinlesion/common/csv.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <system_error>

#include "absl/strings/str_cat.h"
#include "skinlesion/common/status.h"

namespace skinlesion {

absl::StatusOr<std::vector<CsvRecord>> ParseCsv(absl::string_view text,
                                                const CsvOptions& options) {
  if (text.size() >= 3 && static_cast<unsigned char>(text[0]) == 0xEF &&
      static_cast<unsigned char>(text[1]) == 0xBB && static_cast<unsigned char>(text[2]) == 0xBF) {
    text.remove_prefix(3);
  }
  std::vector<CsvRecord> records;
  size_t i = 0;
  int line = 1;
  const size_t n = text.size();
  while (i < n) {
    CsvRecord record;
    record.line = line;
    std::string field;
    bool record_done = false;
    while (!record_done) {
      field.clear();
      if (i < n && text[i] == '"') {
        // Quoted field.
        ++i;
        bool closed = false;
        while (i < n) {
          const char c = text[i];
          if (c == '"') {
            if (i + 1 < n && text[i + 1] == '"') {
              field.push_back('"');
              i += 2;
            } else {
              ++i;
              closed = true;
              break;
            }
          } else {
            if (c == '\n') ++line;
            field.push_back(c);
            ++i;
          }
        }
        if (!closed) {
          return absl::InvalidArgumentError(
              absl::StrCat("line ", record.line, ": unterminated quoted field"));
        }
        if (i < n && text[i] == '\r') ++i;
        if (i < n && text[i] != ',' && text[i] != '\n') {
          return absl::InvalidArgumentError(
              absl::StrCat("line ", line, ": unexpected character after closing quote"));
        }
      } else {
        while (i < n && text[i] != ',' && text[i] != '\n') {
          if (text[i] == '"') {
            return absl::InvalidArgumentError(
                absl::StrCat("line ", line, ": quote inside an unquoted field"));
          }
          field.push_back(text[i]);
          ++i;
        }
        if (!field.empty() && field.back() == '\r') field.pop_back();
      }
      record.fields.push_back(field);
      if (record.fields.size() > options.max_fields) {
        return absl::InvalidArgumentError(absl::StrCat("line ", record.line, ": more than ",
                                                       options.max_fields, " fields"));
      }
      if (i >= n) {
        record_done = true;
      } else if (text[i] == ',') {
        ++i;
        if (i >= n) record.fields.emplace_back();  // Trailing comma at end of input.
        record_done = i >= n;
      } else {  // '\n'
        ++i;
        ++line;
        record_done = true;
      }
    }
    const bool blank = record.fields.size() == 1 && record.fields[0].empty();
    if (!(blank && options.skip_blank_lines)) records.push_back(std::move(record));
  }
  return records;
}

absl::StatusOr<std::string> ReadFileToString(const std::string& path, size_t max_bytes) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    return absl::NotFoundError(absl::StrCat("cannot open ", path, ": ", std::strerror(errno)));
  }
  in.seekg(0, std::ios::end);
  const std::streamoff size = in.tellg();
  if (size < 0) return absl::InternalError(absl::StrCat("cannot size ", path));
  if (static_cast<size_t>(size) > max_bytes) {
    return absl::InvalidArgumentError(
        absl::StrCat(path, " is ", size, " bytes, over the limit of ", max_bytes));
  }
  in.seekg(0);
  std::string data(static_cast<size_t>(size), '\0');
  in.read(data.data(), size);
  if (!in) return absl::DataLossError(absl::StrCat("short read of ", path));
  return data;
}

absl::StatusOr<std::vector<CsvRecord>> ReadCsvFile(const std::string& path,
                                                   const CsvOptions& options, size_t max_bytes) {
  auto text = ReadFileToString(path, max_bytes);
  if (!text.ok()) return text.status();
  auto records = ParseCsv(*text, options);
  if (!records.ok()) {
    return absl::Status(records.status().code(),
                        absl::StrCat(path, ": ", records.status().message()));
  }
  return records;
}

int WriteAll(int fd, absl::string_view bytes) {
  while (!bytes.empty()) {
    const ssize_t w = ::write(fd, bytes.data(), bytes.size());
    if (w < 0) {
      if (errno == EINTR) continue;
      return errno;
    }
    bytes.remove_prefix(static_cast<size_t>(w));
  }
  return 0;
}

namespace {

std::string ParentOf(const std::string& path) {
  const std::string parent = std::filesystem::path(path).parent_path().string();
  return parent.empty() ? "." : parent;
}

// Swaps the names of two existing entries in one step: 0, or -1 with errno (EINVAL or ENOSYS
// where the filesystem or the C library cannot).
int ExchangeNames(const std::string& a, const std::string& b) {
#ifdef RENAME_EXCHANGE
  return ::renameat2(AT_FDCWD, a.c_str(), AT_FDCWD, b.c_str(), RENAME_EXCHANGE);
#else
  errno = ENOSYS;
  return -1;
#endif
}

}  // namespace

absl::Status WriteFileAtomically(const std::string& path, absl::string_view content) {
  const std::string tmp = absl::StrCat(path, ".tmp.", ::getpid());
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) {
    return absl::PermissionDeniedError(
        absl::StrCat("cannot create ", tmp, ": ", std::strerror(errno)));
  }
  if (const int err = WriteAll(fd, content); err != 0) {
    ::close(fd);
    ::unlink(tmp.c_str());
    return absl::InternalError(absl::StrCat("write ", tmp, ": ", std::strerror(err)));
  }
  if (::fsync(fd) != 0 || ::close(fd) != 0) {
    ::unlink(tmp.c_str());
    return absl::InternalError(absl::StrCat("sync ", tmp, ": ", std::strerror(errno)));
  }
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    const int err = errno;
    ::unlink(tmp.c_str());
    return absl::InternalError(absl::StrCat("rename to ", path, ": ", std::strerror(err)));
  }
  return FsyncPath(ParentOf(path), /*directory=*/true);
}

absl::Status FsyncPath(const std::string& path, bool directory) {
  const int fd = ::open(path.c_str(), (directory ? O_RDONLY | O_DIRECTORY : O_RDONLY) | O_CLOEXEC);
  if (fd < 0) return absl::InternalError(absl::StrCat("open ", path, ": ", std::strerror(errno)));
  const int rc = ::fsync(fd);
  const int err = errno;
  ::close(fd);
  if (rc != 0) return absl::InternalError(absl::StrCat("fsync ", path, ": ", std::strerror(err)));
  return absl::OkStatus();
}

absl::Status ReplaceDirectory(const std::string& staged, const std::string& dir) {
  namespace fs = std::filesystem;
  std::error_code ec;
  if (!fs::is_directory(staged, ec)) {
    return absl::NotFoundError(absl::StrCat("no directory ", staged, " to put in place of ", dir));
  }
  SL_RETURN_IF_ERROR(FsyncPath(staged, /*directory=*/true));
  const auto failed = [&](absl::string_view what, int err) {
    return absl::InternalError(
        absl::StrCat("cannot ", what, " ", staged, " and ", dir, ": ", std::strerror(err)));
  };
  if (!fs::exists(dir, ec)) {
    if (::rename(staged.c_str(), dir.c_str()) != 0) return failed("rename", errno);
  } else if (ExchangeNames(staged, dir) == 0) {
    fs::remove_all(staged, ec);  // The previous content, now under the staged name.
  } else if (errno == EINVAL || errno == ENOSYS || errno == ENOTSUP) {
    // No exchange on this filesystem: aside, in, and the previous content removed.
    const std::string old = dir + ".old";
    fs::remove_all(old, ec);
    if (::rename(dir.c_str(), old.c_str()) != 0) return failed("move aside for", errno);
    if (::rename(staged.c_str(), dir.c_str()) != 0) {
      const int err = errno;
      (void)::rename(old.c_str(), dir.c_str());
      return failed("rename", err);
    }
    fs::remove_all(old, ec);
  } else {
    return failed("exchange", errno);
  }
  return FsyncPath(ParentOf(dir), /*directory=*/true);
}

}  // namespace skinlesion
