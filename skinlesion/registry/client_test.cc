// RegistryClient's reading of DownloadVersion (FetchVersion and ReadFiles share it)
// against a scripted RegistryService: the chunks it sends are the test's, so wrong
// offsets, interleaved, unexpected, repeated, missing, altered and cut files can be
// sent on purpose.
#include "skinlesion/registry/client.h"

#include <filesystem>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "skinlesion/common/csv.h"
#include "skinlesion/common/hash.h"
#include "skinlesion/common/rng.h"
#include "skinlesion/testing/testing.h"

namespace skinlesion::registry {
namespace {

using ::skinlesion::testing::IsOk;
using ::skinlesion::testing::StatusIs;
using ::skinlesion::testing::TempDir;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::Key;
using ::testing::Optional;
using Code = absl::StatusCode;

constexpr char kScriptedModel[] = "ham-model";
constexpr int kScriptedChunk = 4096;

// Answers GetVersion with `version` and DownloadVersion with `chunks`, then `end`.
// Set before the calls that read them.
class ScriptedRegistry : public v1::RegistryService::Service {
 public:
  grpc::Status GetVersion(grpc::ServerContext*, const v1::GetVersionRequest*,
                          v1::ModelVersion* response) override {
    *response = version;
    return grpc::Status::OK;
  }
  grpc::Status DownloadVersion(grpc::ServerContext*, const v1::DownloadVersionRequest*,
                               grpc::ServerWriter<v1::FileChunk>* writer) override {
    for (const v1::FileChunk& chunk : chunks) {
      if (!writer->Write(chunk)) return grpc::Status(grpc::StatusCode::CANCELLED, "gone");
    }
    return end;
  }

  v1::ModelVersion version;
  std::vector<v1::FileChunk> chunks;
  grpc::Status end = grpc::Status::OK;
};

// `content` as the registry sends it: chunks of 4 KiB, the last one marked.
std::vector<v1::FileChunk> ChunksOf(const std::string& path, const std::string& content) {
  std::vector<v1::FileChunk> chunks;
  size_t offset = 0;
  do {
    v1::FileChunk chunk;
    chunk.set_path(path);
    chunk.set_offset(static_cast<int64_t>(offset));
    chunk.set_data(content.substr(offset, kScriptedChunk));
    offset += chunk.data().size();
    chunk.set_last(offset >= content.size());
    chunks.push_back(std::move(chunk));
  } while (offset < content.size());
  return chunks;
}

std::string NoiseBytes(size_t n, uint64_t seed) {
  Rng rng(seed);
  std::string s(n, '\0');
  for (char& c : s) c = static_cast<char>(rng.NextU64() & 0xff);
  return s;
}

class ClientDownloadTest : public ::testing::Test {
 protected:
  void SetUp() override {
    files_ = {{"model.safetensors", NoiseBytes(10'000, 11)},  // 3 chunks.
              {"model_card.md", "# A model card\n"},
              {"metrics.json", R"({"balanced_accuracy": 0.5})"}};
    fake_.version.set_model(kScriptedModel);
    fake_.version.set_version(1);
    nlohmann::json listed = nlohmann::json::array();
    for (const auto& [name, content] : files_) {
      v1::FileInfo* info = fake_.version.add_files();
      info->set_path(name);
      info->set_size(static_cast<int64_t>(content.size()));
      info->set_sha256(Sha256Hex(content));
      listed.push_back({{"name", name}, {"size", info->size()}, {"sha256", info->sha256()}});
    }
    fake_.version.set_manifest_json(
        nlohmann::json({{"model", kScriptedModel}, {"version", 1}, {"files", listed}}).dump());
    // The registry's order: the listed files, then manifest.json.
    for (const auto& [name, content] : files_) Send(name, content);
    Send("manifest.json", fake_.version.manifest_json());

    grpc::ServerBuilder builder;
    int port = 0;
    builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port);
    builder.RegisterService(&fake_);
    server_ = builder.BuildAndStart();
    ASSERT_NE(server_, nullptr);
    channel_ = CreateRegistryChannel(absl::StrCat("127.0.0.1:", port));
  }

  void TearDown() override {
    if (server_ != nullptr) {
      server_->Shutdown(std::chrono::system_clock::now() + std::chrono::milliseconds(250));
      server_->Wait();
    }
  }

  void Send(const std::string& path, const std::string& content) {
    for (v1::FileChunk& c : ChunksOf(path, content)) fake_.chunks.push_back(std::move(c));
  }
  // The index of the `n`th chunk of `path` in the script.
  size_t ChunkIndex(const std::string& path, int n = 0) const {
    for (size_t i = 0; i < fake_.chunks.size(); ++i) {
      if (fake_.chunks[i].path() == path && n-- == 0) return i;
    }
    ADD_FAILURE() << "no chunk " << n << " of " << path;
    return 0;
  }

  // The model card and metrics (what the gateway reads), not the weights.
  absl::StatusOr<std::map<std::string, std::string>> ReadCardFiles() {
    RegistryClient client(channel_, {.chunk_size = kScriptedChunk});
    return client.ReadFiles(fake_.version, [](const v1::FileInfo& f) {
      return f.path() == "model_card.md" || f.path() == "metrics.json";
    });
  }
  absl::StatusOr<std::string> Fetch() {
    RegistryClient client(channel_, {.cache_dir = cache_.path(), .chunk_size = kScriptedChunk});
    return client.FetchVersion(kScriptedModel, 1);
  }

  std::map<std::string, std::string> files_;
  ScriptedRegistry fake_;
  std::unique_ptr<grpc::Server> server_;
  std::shared_ptr<grpc::Channel> channel_;
  TempDir cache_;
};

TEST_F(ClientDownloadTest, ReadFilesKeepsTheWantedFilesByteExact) {
  auto files = ReadCardFiles();
  ASSERT_THAT(files, IsOk());
  EXPECT_THAT(*files, ElementsAre(Key("metrics.json"), Key("model_card.md")));
  EXPECT_EQ(files->at("metrics.json"), files_["metrics.json"]);
  EXPECT_EQ(files->at("model_card.md"), files_["model_card.md"]);

  // Everything listed; manifest.json is never returned (it is manifest_json).
  RegistryClient client(channel_, {.chunk_size = kScriptedChunk});
  auto all = client.ReadFiles(fake_.version, [](const v1::FileInfo&) { return true; });
  ASSERT_THAT(all, IsOk());
  EXPECT_EQ(*all, files_);
  // Nothing wanted: the stream is still read and checked.
  auto none = client.ReadFiles(fake_.version, [](const v1::FileInfo&) { return false; });
  ASSERT_THAT(none, IsOk());
  EXPECT_TRUE(none->empty());

  // The same stream fetched to disk.
  auto dir = Fetch();
  ASSERT_THAT(dir, IsOk());
  for (const auto& [name, content] : files_) {
    EXPECT_EQ(ReadFileToString(*dir + "/" + name, 1 << 20).value_or(""), content) << name;
  }
  EXPECT_THAT(VerifyVersionDir(*dir, kScriptedModel, 1), IsOk());
}

TEST_F(ClientDownloadTest, AnAlteredWantedFileIsDataLoss) {
  // Same size, one byte changed in the middle of the card.
  fake_.chunks[ChunkIndex("model_card.md")].mutable_data()->at(4) ^= 0x20;
  auto files = ReadCardFiles();
  EXPECT_THAT(files, StatusIs(Code::kDataLoss,
                              HasSubstr("checksum mismatch for model_card.md of ham-model v1")));
  EXPECT_THAT(DownloadDamageOf(files.status()), Optional(std::string("model_card.md")));
  EXPECT_THAT(Fetch(), StatusIs(Code::kDataLoss, HasSubstr("checksum mismatch for model_card.md")));
}

TEST_F(ClientDownloadTest, AnUnwantedFileIsReadPastUnhashedButItsFramingIsChecked) {
  // The same size, other bytes: ReadFiles does not hash what it does not keep;
  // FetchVersion keeps (and so checks) everything.
  fake_.chunks[ChunkIndex("model.safetensors", 1)].mutable_data()->at(7) ^= 0x01;
  EXPECT_THAT(ReadCardFiles(), IsOk());
  EXPECT_THAT(Fetch(), StatusIs(Code::kDataLoss, HasSubstr("checksum mismatch for "
                                                           "model.safetensors")));

  // Cut short: its last chunk dropped and the one before marked last.
  fake_.chunks[ChunkIndex("model.safetensors", 1)].mutable_data()->at(7) ^= 0x01;
  fake_.chunks.erase(fake_.chunks.begin() + static_cast<long>(ChunkIndex("model.safetensors", 2)));
  fake_.chunks[ChunkIndex("model.safetensors", 1)].set_last(true);
  auto files = ReadCardFiles();
  EXPECT_THAT(files, StatusIs(Code::kDataLoss,
                              HasSubstr("model.safetensors of ham-model v1 does not match its "
                                        "manifest: it ended at 8192 bytes, the manifest says "
                                        "10000 bytes")));
  EXPECT_THAT(DownloadDamageOf(files.status()), Optional(std::string("model.safetensors")));
  EXPECT_THAT(Fetch(), StatusIs(Code::kDataLoss, HasSubstr("checksum mismatch for "
                                                           "model.safetensors")));
}

// Streams that are wrong in their framing: DataLoss from both readings, with what
// was damaged.
TEST_F(ClientDownloadTest, BrokenFramingIsDataLoss) {
  const std::vector<v1::FileChunk> good = fake_.chunks;
  struct Case {
    const char* name;
    std::function<void(std::vector<v1::FileChunk>&)> damage;
    const char* message;
    const char* damaged;
  };
  const std::vector<Case> cases = {
      {"wrong offset in an unwanted file",
       [&](auto& c) { c[ChunkIndex("model.safetensors", 1)].set_offset(4095); },
       "model.safetensors of ham-model v1 does not match its manifest: chunk at 4095 of 4096 "
       "bytes after 4096 bytes",
       "model.safetensors"},
      {"wrong offset in a wanted file",
       [&](auto& c) { c[ChunkIndex("metrics.json")].set_offset(1); },
       "metrics.json of ham-model v1 does not match its manifest: chunk at 1", "metrics.json"},
      {"a longer unwanted file",
       [&](auto& c) { c[ChunkIndex("model.safetensors", 2)].mutable_data()->append("x"); },
       "model.safetensors of ham-model v1 does not match its manifest", "model.safetensors"},
      {"an unexpected file",
       [&](auto& c) {
         v1::FileChunk extra;
         extra.set_path("extra.bin");
         extra.set_data("?");
         extra.set_last(true);
         c.insert(c.begin() + static_cast<long>(ChunkIndex("metrics.json")), extra);
       },
       "the server sent an unexpected file 'extra.bin' for ham-model v1", "ham-model v1"},
      {"a file sent twice", [&](auto& c) { c.push_back(c[ChunkIndex("model_card.md")]); },
       "the server sent an unexpected file 'model_card.md' for ham-model v1", "ham-model v1"},
      {"interleaved files",
       [&](auto& c) {
         std::swap(c[ChunkIndex("model.safetensors", 1)], c[ChunkIndex("model_card.md")]);
       },
       "the server switched to model_card.md before finishing model.safetensors",
       "model.safetensors"},
      {"a missing file",
       [&](auto& c) { c.erase(c.begin() + static_cast<long>(ChunkIndex("model_card.md"))); },
       "the download of ham-model v1 ended without model_card.md", "model_card.md"},
      {"the manifest missing", [&](auto& c) { c.pop_back(); },
       "the download of ham-model v1 ended without manifest.json", "manifest.json"},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.name);
    fake_.chunks = good;
    c.damage(fake_.chunks);
    auto files = ReadCardFiles();
    EXPECT_THAT(files, StatusIs(Code::kDataLoss, HasSubstr(c.message)));
    EXPECT_THAT(DownloadDamageOf(files.status()), Optional(std::string(c.damaged)));
    EXPECT_THAT(Fetch(), StatusIs(Code::kDataLoss, HasSubstr(c.message)));
    EXPECT_TRUE(std::filesystem::is_empty(cache_.path() + "/.tmp"));
  }
}

TEST_F(ClientDownloadTest, TheServersErrorsAreReturnedAsTheyAre) {
  // Mid-stream (the registry's error for a file it cannot read).
  fake_.chunks.resize(ChunkIndex("model.safetensors", 1));
  fake_.end = grpc::Status(grpc::StatusCode::DATA_LOSS,
                           "ham-model v1: file model.safetensors is missing from the registry");
  auto files = ReadCardFiles();
  EXPECT_THAT(files, StatusIs(Code::kDataLoss, HasSubstr("is missing from the registry")));
  EXPECT_EQ(DownloadDamageOf(files.status()), std::nullopt);  // The server's own error.
  fake_.end = grpc::Status(grpc::StatusCode::UNAVAILABLE, "going away");
  EXPECT_THAT(ReadCardFiles(), StatusIs(Code::kUnavailable, "going away"));
  EXPECT_EQ(DownloadDamageOf(absl::DataLossError("no payload")), std::nullopt);
}

// ReadFiles checks against GetVersion's listing alone; FetchVersion also needs the
// manifest to list the same files (its cached copy is re-verified by the manifest).
TEST_F(ClientDownloadTest, OnlyFetchVersionNeedsTheManifestToListTheSameFiles) {
  nlohmann::json manifest = nlohmann::json::parse(fake_.version.manifest_json());
  manifest["files"].erase(0);  // One listed file left out of the manifest.
  fake_.version.set_manifest_json(manifest.dump());
  fake_.chunks.erase(fake_.chunks.begin() + static_cast<long>(ChunkIndex("manifest.json")),
                     fake_.chunks.end());
  Send("manifest.json", fake_.version.manifest_json());

  auto files = ReadCardFiles();
  ASSERT_THAT(files, IsOk());
  EXPECT_EQ(files->at("model_card.md"), files_["model_card.md"]);
  auto fetched = Fetch();
  EXPECT_THAT(fetched, StatusIs(Code::kDataLoss,
                                HasSubstr("the manifest of ham-model v1 does not list the files "
                                          "the server lists")));
  EXPECT_THAT(DownloadDamageOf(fetched.status()), Optional(std::string("manifest.json")));
}

TEST_F(ClientDownloadTest, ABadListingIsDataLoss) {
  fake_.version.mutable_files(0)->set_path("../escape.bin");
  auto files = ReadCardFiles();
  EXPECT_THAT(files,
              StatusIs(Code::kDataLoss, HasSubstr("the server lists a bad or repeated file name")));
  EXPECT_THAT(DownloadDamageOf(files.status()), Optional(std::string("ham-model v1")));
}

}  // namespace
}  // namespace skinlesion::registry
