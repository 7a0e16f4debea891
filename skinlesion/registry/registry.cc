#include "skinlesion/registry/registry.h"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <optional>
#include <utility>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "skinlesion/common/classes.h"
#include "skinlesion/common/csv.h"
#include "skinlesion/common/hash.h"
#include "skinlesion/common/json_file.h"
#include "skinlesion/common/logging.h"
#include "skinlesion/common/rng.h"
#include "skinlesion/common/status.h"
#include "skinlesion/manifest/manifest.h"

namespace skinlesion::registry {
namespace fs = std::filesystem;
namespace {

constexpr size_t kMaxNameLength = 64;

std::string NowRfc3339() {
  const auto now = std::chrono::system_clock::now();
  const std::time_t t = std::chrono::system_clock::to_time_t(now);
  const auto ms =
      std::chrono::duration_cast<std::chrono::milliseconds>(now.time_since_epoch()).count() % 1000;
  tm utc;
  gmtime_r(&t, &utc);
  char buf[96];
  std::snprintf(buf, sizeof(buf), "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", utc.tm_year + 1900,
                utc.tm_mon + 1, utc.tm_mday, utc.tm_hour, utc.tm_min, utc.tm_sec,
                static_cast<int>(ms));
  return buf;
}

absl::Status ErrnoStatus(absl::string_view what, const std::string& path) {
  return absl::InternalError(absl::StrCat(what, " ", path, ": ", std::strerror(errno)));
}

// Copies src to dst while hashing; fsyncs dst.
absl::StatusOr<FileEntry> CopyAndHash(const std::string& src, const std::string& dst,
                                      const std::string& name) {
  std::ifstream in(src, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot open ", src, ": ", std::strerror(errno)));
  {
    std::ofstream out(dst, std::ios::binary | std::ios::trunc);
    if (!out) return ErrnoStatus("create", dst);
    // `out << rdbuf` sets failbit when it inserts nothing: an empty file is fine.
    if (in.peek() != std::ifstream::traits_type::eof()) out << in.rdbuf();
    if (!out.good()) return ErrnoStatus("write", dst);
  }
  SL_RETURN_IF_ERROR(FsyncPath(dst, false));
  FileEntry entry;
  entry.name = name;
  std::error_code ec;
  entry.size = static_cast<int64_t>(fs::file_size(dst, ec));
  SL_ASSIGN_OR_RETURN(entry.sha256, Sha256File(dst));
  return entry;
}

// An exclusive flock on <model>/.lock for alias writers.
class FileLock {
 public:
  static absl::StatusOr<FileLock> Acquire(const std::string& path) {
    const int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0) return ErrnoStatus("open lock", path);
    while (::flock(fd, LOCK_EX) != 0) {
      if (errno != EINTR) {
        ::close(fd);
        return ErrnoStatus("flock", path);
      }
    }
    return FileLock(fd);
  }
  FileLock(FileLock&& other) noexcept : fd_(std::exchange(other.fd_, -1)) {}
  ~FileLock() {
    if (fd_ >= 0) ::close(fd_);  // Closing releases the flock.
  }

 private:
  explicit FileLock(int fd) : fd_(fd) {}
  int fd_;
};

bool ParseVersionDirName(const std::string& name, int64_t* version) {
  return !name.empty() && std::all_of(name.begin(), name.end(), ::isdigit) &&
         absl::SimpleAtoi(name, version) && *version > 0;
}

// What a manifest's metrics were measured on, as its report's context records it: the
// partition ("test", "val", "fold2", "out_of_fold") and the split's digest. nullopt for
// a manifest that does not record both (older reports, hand-written manifests).
std::optional<std::pair<std::string, std::string>> MeasuredOn(const nlohmann::json& manifest) {
  if (!manifest.is_object() || !manifest.contains("metrics")) return std::nullopt;
  const nlohmann::json& metrics = manifest["metrics"];
  if (!metrics.is_object() || !metrics.contains("context")) return std::nullopt;
  const nlohmann::json& context = metrics["context"];
  if (!context.is_object() || !context.contains("partition") || !context.contains("split_digest") ||
      !context["partition"].is_string() || !context["split_digest"].is_string()) {
    return std::nullopt;
  }
  return std::make_pair(context["partition"].get<std::string>(),
                        context["split_digest"].get<std::string>());
}

std::string DescribeMeasuredOn(const std::pair<std::string, std::string>& on) {
  return absl::StrCat("'", on.first, "' of split ", on.second.substr(0, 12));
}

}  // namespace

absl::Status ValidateName(absl::string_view kind, absl::string_view name) {
  auto bad = [&](absl::string_view why) {
    return absl::InvalidArgumentError(absl::StrCat("invalid ", kind, " name '", name, "': ", why));
  };
  if (name.empty()) return bad("empty");
  if (name.size() > kMaxNameLength) return bad(absl::StrCat("longer than ", kMaxNameLength));
  if (!std::isalnum(static_cast<unsigned char>(name[0]))) return bad("must start with a letter or digit");
  for (char c : name) {
    const bool ok = (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '.' || c == '_' || c == '-';
    if (!ok) return bad("only a-z, 0-9, '.', '_' and '-' are allowed");
  }
  if (name.find("..") != absl::string_view::npos) return bad("'..' is not allowed");
  return absl::OkStatus();
}

absl::Status ValidateFileName(absl::string_view name) {
  if (name.empty() || name.size() > 128 || name == "manifest.json" || name[0] == '.') {
    return absl::InvalidArgumentError(absl::StrCat("invalid file name '", name, "'"));
  }
  for (char c : name) {
    if (!std::isalnum(static_cast<unsigned char>(c)) && c != '.' && c != '_' && c != '-') {
      return absl::InvalidArgumentError(absl::StrCat("invalid file name '", name, "'"));
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<Registry>> Registry::Create(const Options& options) {
  if (options.root.empty()) return absl::InvalidArgumentError("registry root is empty");
  std::error_code ec;
  fs::create_directories(options.root, ec);
  if (ec) {
    return absl::PermissionDeniedError(
        absl::StrCat("cannot create registry root ", options.root, ": ", ec.message()));
  }
  return std::unique_ptr<Registry>(new Registry(fs::absolute(options.root).string()));
}

std::string Registry::ModelDir(absl::string_view model) const {
  return absl::StrCat(root_, "/", model);
}

std::string Registry::VersionDir(absl::string_view model, int64_t version) const {
  return absl::StrCat(root_, "/", model, "/versions/", version);
}

absl::StatusOr<int64_t> Registry::Publish(absl::string_view model,
                                          const std::map<std::string, std::string>& files,
                                          const nlohmann::json& manifest) {
  SL_RETURN_IF_ERROR(ValidateName("model", model));
  if (!manifest.is_object()) return absl::InvalidArgumentError("manifest must be a JSON object");
  if (files.empty()) return absl::InvalidArgumentError("a version needs at least one file");
  for (const auto& [name, src] : files) SL_RETURN_IF_ERROR(ValidateFileName(name));

  const std::string model_dir = ModelDir(model);
  std::error_code ec;
  fs::create_directories(model_dir + "/versions", ec);
  fs::create_directories(model_dir + "/.staging", ec);
  if (ec) return absl::InternalError(absl::StrCat("cannot create ", model_dir, ": ", ec.message()));

  Rng rng(DeriveSeed({static_cast<uint64_t>(::getpid()),
                      static_cast<uint64_t>(
                          std::chrono::steady_clock::now().time_since_epoch().count())}));
  const std::string staging = absl::StrCat(model_dir, "/.staging/", ::getpid(), "-", rng.NextU64());
  fs::create_directory(staging, ec);
  if (ec) return absl::InternalError(absl::StrCat("cannot create ", staging, ": ", ec.message()));
  auto cleanup = [&] { fs::remove_all(staging, ec); };

  nlohmann::json full = manifest;
  full["model"] = std::string(model);
  full["created"] = NowRfc3339();
  nlohmann::json file_list = nlohmann::json::array();
  for (const auto& [name, src] : files) {
    auto entry = CopyAndHash(src, staging + "/" + name, name);
    if (!entry.ok()) {
      cleanup();
      return entry.status();
    }
    file_list.push_back({{"name", entry->name}, {"size", entry->size}, {"sha256", entry->sha256}});
  }
  full["files"] = file_list;

  // Claim the next free number by renaming the finished directory into place.
  for (int attempt = 0; attempt < 1000; ++attempt) {
    auto versions = ListVersions(model);
    const int64_t next = (versions.ok() && !versions->empty() ? versions->back() : 0) + 1;
    full["version"] = next;
    if (auto s = WriteFileAtomically(staging + "/manifest.json", full.dump(2) + "\n"); !s.ok()) {
      cleanup();
      return s;
    }
    if (auto s = FsyncPath(staging, true); !s.ok()) {
      cleanup();
      return s;
    }
    const std::string target = VersionDir(model, next);
    if (::rename(staging.c_str(), target.c_str()) == 0) {
      (void)FsyncPath(model_dir + "/versions", true);
      SL_LOG(INFO) << "registry: published " << model << " v" << next;
      return next;
    }
    if (errno != ENOTEMPTY && errno != EEXIST) {
      const absl::Status s = ErrnoStatus("rename to", target);
      cleanup();
      return s;
    }
    // Another publisher took `next`; try again with the new maximum.
  }
  cleanup();
  return absl::AbortedError("could not claim a version number after 1000 attempts");
}

std::vector<std::string> Registry::ListModels() const {
  std::vector<std::string> models;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(root_, ec)) {
    const std::string name = e.path().filename().string();
    if (e.is_directory() && ValidateName("model", name).ok() &&
        fs::exists(e.path() / "versions")) {
      models.push_back(name);
    }
  }
  std::sort(models.begin(), models.end());
  return models;
}

absl::StatusOr<std::vector<int64_t>> Registry::ListVersions(absl::string_view model) const {
  SL_RETURN_IF_ERROR(ValidateName("model", model));
  const std::string dir = ModelDir(model) + "/versions";
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) {
    return absl::NotFoundError(absl::StrCat("model '", model, "' not found"));
  }
  std::vector<int64_t> versions;
  for (const auto& e : fs::directory_iterator(dir, ec)) {
    int64_t v = 0;
    if (ParseVersionDirName(e.path().filename().string(), &v)) versions.push_back(v);
  }
  std::sort(versions.begin(), versions.end());
  return versions;
}

absl::StatusOr<VersionInfo> Registry::GetVersion(absl::string_view model, int64_t version) const {
  SL_RETURN_IF_ERROR(ValidateName("model", model));
  if (version <= 0) return absl::InvalidArgumentError(absl::StrCat("invalid version ", version));
  VersionInfo info;
  info.model = std::string(model);
  info.version = version;
  info.path = VersionDir(model, version);
  std::error_code ec;
  if (!fs::is_directory(info.path, ec)) {
    return absl::NotFoundError(absl::StrCat("model '", model, "' version ", version, " not found"));
  }
  SL_ASSIGN_OR_RETURN(info.manifest,
                      ReadJsonObject(info.path + "/manifest.json", kMaxManifestBytes));
  try {
    for (const auto& f : info.manifest.at("files")) {
      info.files.push_back({f.at("name").get<std::string>(), f.at("size").get<int64_t>(),
                            f.at("sha256").get<std::string>()});
    }
  } catch (const nlohmann::json::exception& e) {
    return absl::DataLossError(
        absl::StrCat("manifest of ", model, " v", version, " is malformed: ", e.what()));
  }
  auto aliases = Aliases(model);
  if (aliases.ok()) {
    for (const auto& [name, v] : *aliases) {
      if (v == version) info.aliases.push_back(name);
    }
  }
  return info;
}

absl::StatusOr<std::map<std::string, int64_t>> Registry::Aliases(absl::string_view model) const {
  SL_RETURN_IF_ERROR(ValidateName("model", model));
  const std::string path = ModelDir(model) + "/aliases.json";
  std::map<std::string, int64_t> aliases;
  std::error_code ec;
  if (!fs::exists(path, ec)) return aliases;
  SL_ASSIGN_OR_RETURN(const nlohmann::json j, ReadJsonObject(path, kMaxManifestBytes));
  for (const auto& [name, v] : j.items()) {
    if (!v.is_number_integer()) return absl::DataLossError(absl::StrCat(path, ": bad alias ", name));
    aliases[name] = v.get<int64_t>();
  }
  return aliases;
}

absl::StatusOr<VersionInfo> Registry::GetAlias(absl::string_view model,
                                               absl::string_view alias) const {
  SL_RETURN_IF_ERROR(ValidateName("alias", alias));
  SL_ASSIGN_OR_RETURN(const auto aliases, Aliases(model));
  const auto it = aliases.find(std::string(alias));
  if (it == aliases.end()) {
    return absl::NotFoundError(absl::StrCat("alias '", alias, "' of model '", model, "' is not set"));
  }
  return GetVersion(model, it->second);
}

absl::Status Registry::Verify(absl::string_view model, int64_t version) const {
  SL_ASSIGN_OR_RETURN(const VersionInfo info, GetVersion(model, version));
  for (const FileEntry& f : info.files) {
    const std::string path = info.path + "/" + f.name;
    auto digest = Sha256File(path);
    if (!digest.ok()) {
      return absl::DataLossError(absl::StrCat(model, " v", version, ": ", digest.status().message()));
    }
    if (*digest != f.sha256) {
      return absl::DataLossError(absl::StrCat(model, " v", version, ": checksum mismatch for ",
                                              f.name, " (manifest ", f.sha256, ", file ", *digest,
                                              ")"));
    }
  }
  return absl::OkStatus();
}

absl::Status Registry::SetAlias(absl::string_view model, absl::string_view alias, int64_t version,
                                absl::string_view reason, bool force) {
  SL_RETURN_IF_ERROR(ValidateName("alias", alias));
  SL_ASSIGN_OR_RETURN(const VersionInfo target, GetVersion(model, version));
  SL_ASSIGN_OR_RETURN(FileLock lock, FileLock::Acquire(ModelDir(model) + "/.lock"));
  SL_ASSIGN_OR_RETURN(auto aliases, Aliases(model));
  const auto it = aliases.find(std::string(alias));
  const int64_t from = it == aliases.end() ? 0 : it->second;

  if (!force && from != 0 && from != version && target.manifest.contains("promotion_gates")) {
    SL_ASSIGN_OR_RETURN(const VersionInfo current, GetVersion(model, from));
    std::vector<std::string> failures;
    // Metrics of models with other classes do not compare: a person decides (force).
    const absl::StatusOr<LabelSet> mine = ParseManifestLabels(target.manifest, "the new version's manifest");
    const absl::StatusOr<LabelSet> theirs = ParseManifestLabels(current.manifest, absl::StrCat("v", from, "'s manifest"));
    if (!mine.ok() || !theirs.ok()) {
      failures.push_back(absl::StrCat("its classes cannot be compared: ",
                                      (mine.ok() ? theirs.status() : mine.status()).message()));
    } else if (mine->codes() != theirs->codes()) {
      failures.push_back(absl::StrCat("its classes [", mine->ToString(), "] differ from v", from, "'s [",
                                      theirs->ToString(), "] (metrics do not compare; promote with force and a reason)"));
    }
    const nlohmann::json& gates = target.manifest["promotion_gates"];
    // Figures measured on different images (another split, or validation against test
    // or cross-validated figures) do not compare: a gate passing or failing on them
    // would decide by the images, not the model. A person decides (force).
    const auto mine_on = MeasuredOn(target.manifest);
    const auto theirs_on = MeasuredOn(current.manifest);
    const bool comparable = !mine_on || !theirs_on || *mine_on == *theirs_on;
    if (!comparable) {
      failures.push_back(
          absl::StrCat("its metrics were measured on ", DescribeMeasuredOn(*mine_on), ", v", from,
                       "'s on ", DescribeMeasuredOn(*theirs_on),
                       ": different images do not compare (promote with force and a reason)"));
    }
    if (comparable && gates.contains("metrics") && gates["metrics"].is_array()) {
      for (const auto& m : gates["metrics"]) {
        if (!m.is_string()) continue;
        const std::string name = m.get<std::string>();
        const nlohmann::json* mine = target.manifest.contains("metrics") &&
                                             target.manifest["metrics"].contains(name)
                                         ? &target.manifest["metrics"][name]
                                         : nullptr;
        const nlohmann::json* theirs = current.manifest.contains("metrics") &&
                                               current.manifest["metrics"].contains(name)
                                           ? &current.manifest["metrics"][name]
                                           : nullptr;
        if (mine == nullptr || !mine->is_number()) {
          failures.push_back(absl::StrCat(name, " missing from v", version));
        } else if (theirs != nullptr && theirs->is_number() &&
                   mine->get<double>() < theirs->get<double>()) {
          failures.push_back(absl::StrCat(name, " ", mine->get<double>(), " < ",
                                          theirs->get<double>(), " of v", from));
        }
      }
    }
    if (!failures.empty()) {
      return absl::FailedPreconditionError(absl::StrCat(
          "promotion of ", model, " v", version, " to '", alias,
          "' blocked by its gates: ", absl::StrJoin(failures, "; ")));
    }
  }

  aliases[std::string(alias)] = version;
  nlohmann::json j = nlohmann::json::object();
  for (const auto& [name, v] : aliases) j[name] = v;
  const nlohmann::json change = {{"time", NowRfc3339()}, {"alias", std::string(alias)},
                                 {"from", from},         {"to", version},
                                 {"reason", std::string(reason)}, {"forced", force}};
  // History first: a crash between the two leaves a record of an intended move,
  // never an unrecorded one.
  const std::string history = ModelDir(model) + "/alias_history.jsonl";
  {
    const int fd = ::open(history.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (fd < 0) return ErrnoStatus("open", history);
    const std::string line = change.dump() + "\n";
    const bool ok = ::write(fd, line.data(), line.size()) == static_cast<ssize_t>(line.size()) &&
                    ::fsync(fd) == 0;
    ::close(fd);
    if (!ok) return ErrnoStatus("append", history);
  }
  SL_RETURN_IF_ERROR(WriteFileAtomically(ModelDir(model) + "/aliases.json", j.dump(2) + "\n"));
  SL_LOG(INFO) << "registry: " << model << " alias '" << alias << "' " << from << " -> " << version
               << (force ? " (forced)" : "");
  return absl::OkStatus();
}

absl::StatusOr<std::vector<AliasChange>> Registry::AliasHistory(absl::string_view model) const {
  SL_RETURN_IF_ERROR(ValidateName("model", model));
  std::vector<AliasChange> changes;
  std::ifstream in(ModelDir(model) + "/alias_history.jsonl");
  std::string line;
  while (std::getline(in, line)) {
    const nlohmann::json j = nlohmann::json::parse(line, nullptr, false);
    if (j.is_discarded() || !j.is_object()) continue;  // A torn last line after a crash.
    changes.push_back({j.value("time", ""), j.value("alias", ""), j.value("from", int64_t{0}),
                       j.value("to", int64_t{0}), j.value("reason", ""), j.value("forced", false)});
  }
  return changes;
}

absl::StatusOr<std::vector<int64_t>> Registry::ApplyRetention(absl::string_view model, int keep) {
  if (keep < 1) return absl::InvalidArgumentError("retention must keep at least 1 version");
  SL_ASSIGN_OR_RETURN(FileLock lock, FileLock::Acquire(ModelDir(model) + "/.lock"));
  SL_ASSIGN_OR_RETURN(const auto versions, ListVersions(model));
  SL_ASSIGN_OR_RETURN(const auto aliases, Aliases(model));
  std::vector<int64_t> removed;
  const int64_t n = static_cast<int64_t>(versions.size());
  for (int64_t i = 0; i + keep < n; ++i) {
    const int64_t v = versions[i];
    const bool aliased = std::any_of(aliases.begin(), aliases.end(),
                                     [v](const auto& a) { return a.second == v; });
    if (aliased) continue;
    // Rename away first so readers never see a half-deleted version.
    const std::string doomed = absl::StrCat(ModelDir(model), "/.staging/deleting-", v);
    if (::rename(VersionDir(model, v).c_str(), doomed.c_str()) != 0) {
      return ErrnoStatus("retire", VersionDir(model, v));
    }
    std::error_code ec;
    fs::remove_all(doomed, ec);
    removed.push_back(v);
  }
  return removed;
}

absl::Status Registry::CollectGarbage(absl::string_view model, int min_age_s) {
  SL_RETURN_IF_ERROR(ValidateName("model", model));
  const std::string staging = ModelDir(model) + "/.staging";
  std::error_code ec;
  const auto now = fs::file_time_type::clock::now();
  for (const auto& e : fs::directory_iterator(staging, ec)) {
    const auto age = now - fs::last_write_time(e.path(), ec);
    if (age >= std::chrono::seconds(min_age_s)) fs::remove_all(e.path(), ec);
  }
  return absl::OkStatus();
}

absl::StatusOr<std::string> Registry::StateToken(absl::string_view model) const {
  SL_ASSIGN_OR_RETURN(const auto versions, ListVersions(model));
  SL_ASSIGN_OR_RETURN(const auto aliases, Aliases(model));
  std::string token = absl::StrJoin(versions, ",");
  for (const auto& [name, v] : aliases) absl::StrAppend(&token, ";", name, "=", v);
  // The history's length too: a move to the version an alias already has changes
  // no alias, but it is a move.
  std::error_code ec;
  const auto history_bytes = fs::file_size(ModelDir(model) + "/alias_history.jsonl", ec);
  absl::StrAppend(&token, ";history=", ec ? 0 : history_bytes);
  return token;
}

}  // namespace skinlesion::registry
