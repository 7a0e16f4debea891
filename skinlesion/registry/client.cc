#include "skinlesion/registry/client.h"

#include <fcntl.h>
#include <openssl/evp.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>

#include "absl/strings/cord.h"
#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "nlohmann/json.hpp"
#include "skinlesion/common/csv.h"
#include "skinlesion/common/hash.h"
#include "skinlesion/common/logging.h"
#include "skinlesion/common/rng.h"
#include "skinlesion/common/status.h"
#include "skinlesion/registry/registry.h"
#include "skinlesion/rpc/status.h"
#include "skinlesion/telemetry/grpc_channel.h"

namespace skinlesion::registry {

using rpc::FromGrpcStatus;
using rpc::ToGrpcStatus;
namespace fs = std::filesystem;
namespace {

absl::Status CheckVersion(int64_t version) {
  if (version <= 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("invalid version ", version, ": versions are numbered from 1"));
  }
  return absl::OkStatus();
}

// Incremental SHA-256 (OpenSSL EVP).
class Sha256 {
 public:
  Sha256() : ctx_(EVP_MD_CTX_new()) { EVP_DigestInit_ex(ctx_, EVP_sha256(), nullptr); }
  ~Sha256() { EVP_MD_CTX_free(ctx_); }
  Sha256(const Sha256&) = delete;
  Sha256& operator=(const Sha256&) = delete;
  void Update(absl::string_view data) { EVP_DigestUpdate(ctx_, data.data(), data.size()); }
  std::string HexDigest() {
    unsigned char digest[EVP_MAX_MD_SIZE];
    unsigned int n = 0;
    EVP_DigestFinal_ex(ctx_, digest, &n);
    return absl::BytesToHexString(absl::string_view(reinterpret_cast<const char*>(digest), n));
  }

 private:
  EVP_MD_CTX* ctx_;
};

// The payload of a download's DataLoss: what it found damaged (DownloadDamageOf).
constexpr char kDamagePayload[] = "type.skinlesion/skinlesion.registry.DownloadDamage";

absl::Status Damaged(absl::string_view subject, absl::string_view message) {
  absl::Status status = absl::DataLossError(message);
  status.SetPayload(kDamagePayload, absl::Cord(subject));
  return status;
}

// A file expected in a download.
struct ExpectedFile {
  int64_t size = 0;
  std::string sha256;
};

// Removes a directory tree when it goes out of scope (unless released).
class DirGuard {
 public:
  explicit DirGuard(std::string path) : path_(std::move(path)) {}
  ~DirGuard() {
    if (path_.empty()) return;
    std::error_code ec;
    fs::remove_all(path_, ec);
  }
  void Release() { path_.clear(); }

 private:
  std::string path_;
};

// A unique name under <cache_dir>/.tmp/.
std::string TempName(const std::string& cache_dir, const std::string& model, int64_t version) {
  static std::atomic<uint64_t> counter{0};
  const uint64_t salt = DeriveSeed(
      {static_cast<uint64_t>(::getpid()),
       static_cast<uint64_t>(std::chrono::steady_clock::now().time_since_epoch().count()),
       counter.fetch_add(1)});
  return absl::StrCat(cache_dir, "/.tmp/", model, "-", version, "-", ::getpid(), "-", salt);
}

// Moves a directory out of sight, then deletes it.
void RemoveDir(const std::string& cache_dir, const std::string& dir) {
  std::error_code ec;
  fs::create_directories(cache_dir + "/.tmp", ec);
  const std::string doomed = TempName(cache_dir, "removed", 0);
  if (::rename(dir.c_str(), doomed.c_str()) == 0) {
    fs::remove_all(doomed, ec);
  } else {
    fs::remove_all(dir, ec);
  }
}

// Removes what killed fetchers left under <cache_dir>/.tmp/ (entries older than an
// hour: far beyond any live download's deadline by default).
void CollectStaleTemporaries(const std::string& cache_dir) {
  std::error_code ec;
  const auto now = fs::file_time_type::clock::now();
  for (const auto& e : fs::directory_iterator(cache_dir + "/.tmp", ec)) {
    std::error_code age_ec;
    const auto written = fs::last_write_time(e.path(), age_ec);
    if (!age_ec && now - written > std::chrono::hours(1)) {
      SL_LOG(INFO) << "registry cache: removing stale " << e.path().string();
      fs::remove_all(e.path(), age_ec);
    }
  }
}

}  // namespace

std::shared_ptr<grpc::Channel> CreateRegistryChannel(const std::string& target) {
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(8 << 20);
  // A restarted registry is used again within about a second (gRPC's default
  // backoff grows to 120 s).
  telemetry::SetFastReconnect(args);
  return grpc::CreateCustomChannel(target, grpc::InsecureChannelCredentials(), args);
}

absl::Status VerifyVersionDir(const std::string& dir, const std::string& model, int64_t version) {
  auto text = ReadFileToString(dir + "/manifest.json", kMaxManifestBytes);
  if (!text.ok()) return absl::DataLossError(absl::StrCat(dir, ": ", text.status().message()));
  const nlohmann::json manifest = nlohmann::json::parse(*text, nullptr, false);
  if (!manifest.is_object() || !manifest.contains("files") || !manifest["files"].is_array()) {
    return absl::DataLossError(absl::StrCat(dir, "/manifest.json is not a registry manifest"));
  }
  if (manifest.value("model", "") != model || manifest.value("version", int64_t{0}) != version) {
    return absl::DataLossError(
        absl::StrCat(dir, "/manifest.json is not that of ", model, " v", version));
  }
  for (const auto& f : manifest["files"]) {
    if (!f.is_object() || !f.contains("name") || !f["name"].is_string() || !f.contains("size") ||
        !f["size"].is_number_integer() || !f.contains("sha256") || !f["sha256"].is_string()) {
      return absl::DataLossError(absl::StrCat(dir, "/manifest.json has a malformed file entry"));
    }
    const std::string name = f["name"].get<std::string>();
    if (!ValidateFileName(name).ok()) {
      return absl::DataLossError(absl::StrCat(dir, "/manifest.json lists a bad file name"));
    }
    const std::string path = dir + "/" + name;
    std::error_code ec;
    const auto size = fs::file_size(path, ec);
    if (ec) return absl::DataLossError(absl::StrCat(path, " is missing: ", ec.message()));
    if (static_cast<int64_t>(size) != f["size"].get<int64_t>()) {
      return absl::DataLossError(absl::StrCat(path, " has ", size, " bytes, the manifest says ",
                                              f["size"].get<int64_t>()));
    }
    auto digest = Sha256File(path);
    if (!digest.ok()) return absl::DataLossError(digest.status().message());
    if (*digest != f["sha256"].get<std::string>()) {
      return absl::DataLossError(absl::StrCat("checksum mismatch for ", path));
    }
  }
  return absl::OkStatus();
}

std::optional<std::string> DownloadDamageOf(const absl::Status& status) {
  if (status.code() != absl::StatusCode::kDataLoss) return std::nullopt;
  const auto subject = status.GetPayload(kDamagePayload);  // absl::optional<absl::Cord>
  if (!subject.has_value()) return std::nullopt;
  return std::string(*subject);
}

RegistryClient::RegistryClient(std::shared_ptr<grpc::Channel> channel,
                               RegistryClientOptions options)
    : stub_(v1::RegistryService::NewStub(std::move(channel))), options_(std::move(options)) {}

void RegistryClient::Prepare(grpc::ClientContext* context, absl::Duration deadline) const {
  if (deadline != absl::InfiniteDuration()) {
    context->set_deadline(absl::ToChronoTime(absl::Now() + deadline));
  }
  if (!options_.bearer_token.empty()) {
    context->AddMetadata("authorization", "Bearer " + options_.bearer_token);
  }
}

absl::StatusOr<std::vector<std::string>> RegistryClient::ListModels() {
  grpc::ClientContext context;
  Prepare(&context, options_.deadline);
  v1::ListModelsResponse response;
  SL_RETURN_IF_ERROR(FromGrpcStatus(stub_->ListModels(&context, {}, &response)));
  return std::vector<std::string>(response.models().begin(), response.models().end());
}

absl::StatusOr<std::vector<v1::ModelVersion>> RegistryClient::ListVersions(
    const std::string& model) {
  grpc::ClientContext context;
  Prepare(&context, options_.deadline);
  v1::ListVersionsRequest request;
  request.set_model(model);
  v1::ListVersionsResponse response;
  SL_RETURN_IF_ERROR(FromGrpcStatus(stub_->ListVersions(&context, request, &response)));
  return std::vector<v1::ModelVersion>(response.versions().begin(), response.versions().end());
}

absl::StatusOr<v1::ModelVersion> RegistryClient::GetVersion(const std::string& model,
                                                            int64_t version) {
  grpc::ClientContext context;
  Prepare(&context, options_.deadline);
  v1::GetVersionRequest request;
  request.set_model(model);
  request.set_version(version);
  v1::ModelVersion response;
  SL_RETURN_IF_ERROR(FromGrpcStatus(stub_->GetVersion(&context, request, &response)));
  return response;
}

absl::StatusOr<v1::ModelVersion> RegistryClient::GetVersionByAlias(const std::string& model,
                                                                   const std::string& alias) {
  grpc::ClientContext context;
  Prepare(&context, options_.deadline);
  v1::GetVersionRequest request;
  request.set_model(model);
  request.set_alias(alias);
  v1::ModelVersion response;
  SL_RETURN_IF_ERROR(FromGrpcStatus(stub_->GetVersion(&context, request, &response)));
  return response;
}

absl::StatusOr<int64_t> RegistryClient::ResolveAlias(const std::string& model,
                                                     const std::string& alias) {
  SL_ASSIGN_OR_RETURN(const v1::ModelVersion version, GetVersionByAlias(model, alias));
  return version.version();
}

absl::StatusOr<v1::Alias> RegistryClient::SetAlias(const std::string& model,
                                                   const std::string& alias, int64_t version,
                                                   const std::string& reason, bool force) {
  grpc::ClientContext context;
  Prepare(&context, options_.deadline);
  v1::SetAliasRequest request;
  request.set_model(model);
  request.set_alias(alias);
  request.set_version(version);
  request.set_reason(reason);
  request.set_force(force);
  v1::Alias response;
  SL_RETURN_IF_ERROR(FromGrpcStatus(stub_->SetAlias(&context, request, &response)));
  return response;
}

absl::StatusOr<std::vector<v1::AliasChange>> RegistryClient::GetAliasHistory(
    const std::string& model, const std::string& alias) {
  grpc::ClientContext context;
  Prepare(&context, options_.deadline);
  v1::GetAliasHistoryRequest request;
  request.set_model(model);
  request.set_alias(alias);
  v1::GetAliasHistoryResponse response;
  SL_RETURN_IF_ERROR(FromGrpcStatus(stub_->GetAliasHistory(&context, request, &response)));
  return std::vector<v1::AliasChange>(response.changes().begin(), response.changes().end());
}

absl::Status RegistryClient::Watch(const std::string& model,
                                   const std::function<bool(const v1::RegistryEvent&)>& on_event,
                                   const WatchOptions& options) {
  grpc::ClientContext context;
  Prepare(&context, absl::InfiniteDuration());
  {
    absl::MutexLock lock(&mu_);
    watches_.insert(&context);
  }
  struct Unregister {
    RegistryClient* self;
    grpc::ClientContext* context;
    ~Unregister() {
      absl::MutexLock lock(&self->mu_);
      self->watches_.erase(context);
    }
  } unregister{this, &context};

  v1::WatchRequest request;
  request.set_model(model);
  request.set_changes_only(options.changes_only);
  std::unique_ptr<grpc::ClientReader<v1::RegistryEvent>> reader = stub_->Watch(&context, request);
  reader->WaitForInitialMetadata();
  if (options.on_started) options.on_started();
  v1::RegistryEvent event;
  bool stopped = false;
  while (reader->Read(&event)) {
    if (!on_event(event)) {
      stopped = true;
      context.TryCancel();
      break;
    }
  }
  const grpc::Status status = reader->Finish();
  if (stopped) return absl::OkStatus();
  if (status.error_code() == grpc::StatusCode::CANCELLED) {
    return absl::CancelledError("watch cancelled");
  }
  return FromGrpcStatus(status);
}

void RegistryClient::CancelWatches() {
  absl::MutexLock lock(&mu_);
  for (grpc::ClientContext* context : watches_) context->TryCancel();
}

namespace {

// Where ReadDownload puts the files it keeps, one at a time: Open with a kept file's
// first chunk, Append each chunk, Close after its last (before its checksum is
// compared). Of the other files only the framing is checked.
class FileSink {
 public:
  virtual ~FileSink() = default;
  virtual bool Keeps(const std::string& name) const = 0;
  virtual absl::Status Open(const std::string& name) = 0;
  virtual absl::Status Append(absl::string_view data) = 0;
  virtual absl::Status Close() = 0;
};

// Every file into one directory (FetchVersion's temporary directory).
class DirSink : public FileSink {
 public:
  explicit DirSink(std::string dir) : dir_(std::move(dir)) {}
  bool Keeps(const std::string&) const override { return true; }
  absl::Status Open(const std::string& name) override {
    path_ = dir_ + "/" + name;
    out_.open(path_, std::ios::binary | std::ios::trunc);
    if (!out_) {
      return absl::InternalError(absl::StrCat("cannot create ", path_, ": ", std::strerror(errno)));
    }
    written_.push_back(path_);
    return absl::OkStatus();
  }
  absl::Status Append(absl::string_view data) override {
    out_.write(data.data(), static_cast<std::streamsize>(data.size()));
    if (!out_) return absl::InternalError(absl::StrCat("cannot write ", path_));
    return absl::OkStatus();
  }
  absl::Status Close() override {
    out_.close();
    if (!out_) return absl::InternalError(absl::StrCat("cannot write ", path_));
    return absl::OkStatus();
  }
  // The files and the directory, to disk.
  absl::Status Sync() const {
    for (const std::string& path : written_) SL_RETURN_IF_ERROR(FsyncPath(path, false));
    return FsyncPath(dir_, true);
  }

 private:
  const std::string dir_;
  std::string path_;  // The open file.
  std::ofstream out_;
  std::vector<std::string> written_;
};

// The wanted files, in memory (ReadFiles).
class MemorySink : public FileSink {
 public:
  void Want(const std::string& name) { wanted_.insert(name); }
  bool Keeps(const std::string& name) const override { return wanted_.count(name) > 0; }
  absl::Status Open(const std::string& name) override {
    current_ = &files_[name];
    current_->clear();
    return absl::OkStatus();
  }
  absl::Status Append(absl::string_view data) override {
    current_->append(data.data(), data.size());
    return absl::OkStatus();
  }
  absl::Status Close() override {
    current_ = nullptr;
    return absl::OkStatus();
  }
  std::map<std::string, std::string> Take() { return std::move(files_); }

 private:
  std::set<std::string> wanted_;
  std::map<std::string, std::string> files_;
  std::string* current_ = nullptr;
};

// The one reading of a DownloadVersion stream (FetchVersion's Download, ReadFiles):
// every chunk checked against `expected_version`'s listing (manifest.json against its
// manifest_json), the files `sink` keeps hashed, verified and handed to it. With
// `manifest_lists_same_files`, manifest.json's own `files` must be the listing.
// `context` carries the deadline and credentials.
absl::Status ReadDownload(v1::RegistryService::Stub& stub, grpc::ClientContext& context,
                          int chunk_size, const v1::ModelVersion& expected_version,
                          bool manifest_lists_same_files, FileSink& sink) {
  const std::string what = absl::StrCat(expected_version.model(), " v", expected_version.version());
  std::map<std::string, ExpectedFile> expected;
  for (const v1::FileInfo& f : expected_version.files()) {
    if (!ValidateFileName(f.path()).ok() || expected.count(f.path())) {
      return Damaged(what, absl::StrCat("the server lists a bad or repeated file name for ", what));
    }
    expected[f.path()] = {f.size(), f.sha256()};
  }
  // manifest.json must be the manifest GetVersion returned (and, for a cached copy,
  // list the same files).
  const std::string& manifest_text = expected_version.manifest_json();
  expected["manifest.json"] = {static_cast<int64_t>(manifest_text.size()),
                               Sha256Hex(manifest_text)};
  if (manifest_lists_same_files) {
    const nlohmann::json manifest = nlohmann::json::parse(manifest_text, nullptr, false);
    std::map<std::string, ExpectedFile> listed;
    if (manifest.is_object() && manifest.contains("files") && manifest["files"].is_array()) {
      for (const auto& f : manifest["files"]) {
        if (f.is_object()) {
          listed[f.value("name", "")] = {f.value("size", int64_t{-1}), f.value("sha256", "")};
        }
      }
    }
    bool same = listed.size() + 1 == expected.size();
    for (const auto& [name, file] : listed) {
      const auto it = expected.find(name);
      same = same && it != expected.end() && it->second.size == file.size &&
             it->second.sha256 == file.sha256;
    }
    if (!same) {
      return Damaged("manifest.json", absl::StrCat("the manifest of ", what,
                                                   " does not list the files the server lists"));
    }
  }

  v1::DownloadVersionRequest request;
  request.set_model(expected_version.model());
  request.set_version(expected_version.version());
  request.set_chunk_size(chunk_size);
  std::unique_ptr<grpc::ClientReader<v1::FileChunk>> reader =
      stub.DownloadVersion(&context, request);

  struct Current {
    std::string name;
    bool kept = false;  // Handed to the sink and hashed; else only its framing is checked.
    Sha256 sha;
    int64_t written = 0;
  };
  std::unique_ptr<Current> current;
  std::set<std::string> done;
  absl::Status error;
  v1::FileChunk chunk;
  while (error.ok() && reader->Read(&chunk)) {
    const auto it = expected.find(chunk.path());
    if (it == expected.end() || done.count(chunk.path())) {
      error = Damaged(what, absl::StrCat("the server sent an unexpected file '",
                                         absl::CHexEscape(chunk.path()), "' for ", what));
      break;
    }
    if (current != nullptr && current->name != chunk.path()) {
      error = Damaged(current->name, absl::StrCat("the server switched to ", chunk.path(),
                                                  " before finishing ", current->name));
      break;
    }
    if (current == nullptr) {
      current = std::make_unique<Current>();
      current->name = chunk.path();
      current->kept = sink.Keeps(chunk.path());
      if (current->kept) {
        error = sink.Open(chunk.path());
        if (!error.ok()) break;
      }
    }
    const ExpectedFile& want = it->second;
    if (chunk.offset() != current->written ||
        current->written + static_cast<int64_t>(chunk.data().size()) > want.size) {
      error = Damaged(
          chunk.path(),
          absl::StrCat(chunk.path(), " of ", what, " does not match its manifest: chunk at ",
                       chunk.offset(), " of ", chunk.data().size(), " bytes after ",
                       current->written, " bytes, the manifest says ", want.size, " bytes"));
      break;
    }
    current->written += static_cast<int64_t>(chunk.data().size());
    if (current->kept) {
      current->sha.Update(chunk.data());
      error = sink.Append(chunk.data());
      if (!error.ok()) break;
    }
    if (chunk.last()) {
      if (current->kept) {
        const absl::Status closed = sink.Close();
        const std::string digest = current->sha.HexDigest();
        if (current->written != want.size || digest != want.sha256) {
          error = Damaged(chunk.path(),
                          absl::StrCat("checksum mismatch for ", chunk.path(), " of ", what,
                                       ": manifest ", want.size, " bytes sha256 ", want.sha256,
                                       ", received ", current->written, " bytes sha256 ", digest));
          break;
        }
        error = closed;
        if (!error.ok()) break;
      } else if (current->written != want.size) {
        error = Damaged(
            chunk.path(),
            absl::StrCat(chunk.path(), " of ", what, " does not match its manifest: it ended at ",
                         current->written, " bytes, the manifest says ", want.size, " bytes"));
        break;
      }
      done.insert(chunk.path());
      current.reset();
    }
  }
  if (!error.ok()) {
    context.TryCancel();
    reader->Finish();
    return error;
  }
  SL_RETURN_IF_ERROR(FromGrpcStatus(reader->Finish()));
  for (const auto& [name, file] : expected) {
    if (!done.count(name)) {
      return Damaged(name, absl::StrCat("the download of ", what, " ended without ", name));
    }
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status RegistryClient::Download(const v1::ModelVersion& expected, const std::string& dir) {
  grpc::ClientContext context;
  Prepare(&context, options_.download_deadline);
  DirSink sink(dir);
  SL_RETURN_IF_ERROR(ReadDownload(*stub_, context, options_.chunk_size, expected,
                                  /*manifest_lists_same_files=*/true, sink));
  return sink.Sync();
}

absl::StatusOr<std::map<std::string, std::string>> RegistryClient::ReadFiles(
    const v1::ModelVersion& version, const std::function<bool(const v1::FileInfo&)>& wanted) {
  MemorySink sink;
  for (const v1::FileInfo& f : version.files()) {
    if (wanted(f)) sink.Want(f.path());
  }
  grpc::ClientContext context;
  Prepare(&context, options_.download_deadline);
  SL_RETURN_IF_ERROR(ReadDownload(*stub_, context, options_.chunk_size, version,
                                  /*manifest_lists_same_files=*/false, sink));
  return sink.Take();
}

absl::StatusOr<std::string> RegistryClient::FetchVersion(const std::string& model,
                                                         int64_t version) {
  // The names become paths: validate before touching the disk.
  SL_RETURN_IF_ERROR(ValidateName("model", model));
  SL_RETURN_IF_ERROR(CheckVersion(version));
  if (options_.cache_dir.empty()) {
    return absl::FailedPreconditionError("FetchVersion needs RegistryClientOptions::cache_dir");
  }
  const std::string final_dir = absl::StrCat(options_.cache_dir, "/", model, "/", version);
  std::error_code ec;
  absl::StatusOr<v1::ModelVersion> described = absl::UnknownError("not asked");
  if (fs::exists(final_dir, ec)) {
    absl::Status cached = VerifyVersionDir(final_dir, model, version);
    if (cached.ok()) {
      // The same version as the server's? (A registry rebuilt from scratch reuses
      // numbers.) Without an answer the verified copy is used.
      described = GetVersion(model, version);
      if (!described.ok()) {
        SL_LOG(INFO) << "registry cache: using " << final_dir << " unconfirmed ("
                     << described.status().message() << ")";
        return final_dir;
      }
      auto manifest = ReadFileToString(final_dir + "/manifest.json", kMaxManifestBytes);
      if (manifest.ok() && *manifest == described->manifest_json()) return final_dir;
      cached = absl::DataLossError("the server's manifest of this version differs");
    }
    SL_LOG(WARNING) << "registry cache: discarding " << final_dir << ": " << cached.message();
    RemoveDir(options_.cache_dir, final_dir);
  }

  if (!described.ok()) described = GetVersion(model, version);
  if (!described.ok()) return described.status();
  const v1::ModelVersion& expected = *described;
  CollectStaleTemporaries(options_.cache_dir);
  if (expected.model() != model || expected.version() != version) {
    return absl::DataLossError(absl::StrCat("asked for ", model, " v", version,
                                            ", the server described ", expected.model(), " v",
                                            expected.version()));
  }
  const std::string temp = TempName(options_.cache_dir, model, version);
  fs::create_directories(temp, ec);
  if (ec) return absl::InternalError(absl::StrCat("cannot create ", temp, ": ", ec.message()));
  DirGuard guard(temp);
  SL_RETURN_IF_ERROR(Download(expected, temp));

  fs::create_directories(absl::StrCat(options_.cache_dir, "/", model), ec);
  if (ec) {
    return absl::InternalError(
        absl::StrCat("cannot create ", options_.cache_dir, "/", model, ": ", ec.message()));
  }
  if (::rename(temp.c_str(), final_dir.c_str()) != 0) {
    if (errno != ENOTEMPTY && errno != EEXIST) {
      return absl::InternalError(
          absl::StrCat("cannot rename ", temp, " to ", final_dir, ": ", std::strerror(errno)));
    }
    // Another fetcher finished first; its copy is verified like any cached one.
    SL_RETURN_IF_ERROR(VerifyVersionDir(final_dir, model, version));
    return final_dir;
  }
  guard.Release();
  (void)FsyncPath(absl::StrCat(options_.cache_dir, "/", model), true);
  SL_LOG(INFO) << "registry cache: fetched " << model << " v" << version << " into " << final_dir;
  return final_dir;
}

}  // namespace skinlesion::registry
