// RegistryService and RegistryClient over real gRPC: an
// in-process server on 127.0.0.1 (port picked by the kernel) and real stubs.
#include "skinlesion/registry/service.h"

#include <atomic>
#include <chrono>
#include <filesystem>
#include <future>
#include <thread>

#include "absl/cleanup/cleanup.h"
#include "absl/strings/escaping.h"
#include "gtest/gtest.h"
#include "skinlesion/common/csv.h"
#include "skinlesion/common/hash.h"
#include "skinlesion/common/rng.h"
#include "skinlesion/registry/client.h"
#include "skinlesion/rpc/status.h"
#include "skinlesion/testing/testing.h"

namespace skinlesion::registry {

using rpc::FromGrpcStatus;
using rpc::ToGrpcStatus;
namespace {

namespace fs = std::filesystem;
using ::skinlesion::testing::IsOk;
using ::skinlesion::testing::StatusIs;
using ::skinlesion::testing::TempDir;
using ::skinlesion::testing::WriteFile;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;
using ::testing::UnorderedElementsAre;
using Code = absl::StatusCode;

constexpr char kModel[] = "ham-resnet";

std::string RandomBytes(size_t n, uint64_t seed) {
  Rng rng(seed);
  std::string s(n, '\0');
  for (char& c : s) c = static_cast<char>(rng.NextU64() & 0xff);
  return s;
}

std::string ReadAll(const std::string& path) {
  auto s = ReadFileToString(path, size_t{64} << 20);
  EXPECT_TRUE(s.ok()) << s.status();
  return s.value_or("");
}

class RegistryServiceTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto r = Registry::Create({.root = dir_.Join("registry")});
    ASSERT_TRUE(r.ok()) << r.status();
    registry_ = std::move(*r);
    weights_ = dir_.Join("model.safetensors");
    weights_content_ = RandomBytes(50'000, 7);  // 13 chunks of 4 KiB.
    WriteFile(weights_, weights_content_);
    golden_ = dir_.Join("golden_0.jpg");
    WriteFile(golden_, "not really a jpeg");
  }

  void TearDown() override { StopServer(); }

  void StartServer(RegistryServiceImpl::Options options = {}) {
    if (options.poll_interval == absl::Milliseconds(200)) {
      options.poll_interval = absl::Milliseconds(20);
    }
    service_ = std::make_unique<RegistryServiceImpl>(registry_.get(), std::move(options));
    grpc::ServerBuilder builder;
    builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port_);
    builder.RegisterService(service_.get());
    server_ = builder.BuildAndStart();
    ASSERT_NE(server_, nullptr);
    ASSERT_GT(port_, 0);
    channel_ = CreateRegistryChannel(absl::StrCat("127.0.0.1:", port_));
    stub_ = v1::RegistryService::NewStub(channel_);
  }

  void StopServer() {
    if (server_ == nullptr) return;
    service_->Shutdown();
    EXPECT_TRUE(service_->WaitUntilIdle(absl::Now() + absl::Seconds(2)));
    server_->Shutdown(std::chrono::system_clock::now() + std::chrono::milliseconds(250));
    server_->Wait();
    server_.reset();
  }

  RegistryClient MakeClient(RegistryClientOptions options = {}) {
    if (options.cache_dir.empty()) options.cache_dir = dir_.Join("cache");
    return RegistryClient(channel_, options);
  }

  int64_t Publish(double balanced_accuracy, double melanoma_recall,
                  const std::string& model = kModel) {
    nlohmann::json manifest = {
        {"architecture", "resnet18"},
        {"metrics",
         {{"balanced_accuracy", balanced_accuracy}, {"melanoma_recall", melanoma_recall}}},
        {"promotion_gates", {{"metrics", {"balanced_accuracy", "melanoma_recall"}}}}};
    auto v = registry_->Publish(model, {{"model.safetensors", weights_}, {"golden_0.jpg", golden_}},
                                manifest);
    EXPECT_TRUE(v.ok()) << v.status();
    return v.value_or(-1);
  }

  std::string VersionFile(int64_t version, const std::string& name) const {
    return absl::StrCat(registry_->root(), "/", kModel, "/versions/", version, "/", name);
  }

  TempDir dir_;
  std::unique_ptr<Registry> registry_;
  std::string weights_, weights_content_, golden_;
  std::unique_ptr<RegistryServiceImpl> service_;
  std::unique_ptr<grpc::Server> server_;
  int port_ = 0;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<v1::RegistryService::Stub> stub_;
};

TEST_F(RegistryServiceTest, ListModelsVersionsAndGetVersion) {
  Publish(0.5, 0.5);
  Publish(0.6, 0.6);
  Publish(0.5, 0.5, "isic-vit");
  ASSERT_THAT(registry_->SetAlias(kModel, "production", 2, "first"), IsOk());
  StartServer();
  RegistryClient client = MakeClient();

  auto models = client.ListModels();
  ASSERT_TRUE(models.ok()) << models.status();
  EXPECT_THAT(*models, ElementsAre("ham-resnet", "isic-vit"));

  auto versions = client.ListVersions(kModel);
  ASSERT_TRUE(versions.ok()) << versions.status();
  ASSERT_EQ(versions->size(), 2u);
  EXPECT_EQ((*versions)[0].version(), 1);
  EXPECT_EQ((*versions)[1].version(), 2);
  EXPECT_THAT((*versions)[0].aliases(), IsEmpty());
  EXPECT_THAT((*versions)[1].aliases(), ElementsAre("production"));

  auto v1 = client.GetVersion(kModel, 1);
  ASSERT_TRUE(v1.ok()) << v1.status();
  EXPECT_EQ(v1->model(), kModel);
  EXPECT_GT(v1->created().seconds(), 1'600'000'000);
  EXPECT_EQ(v1->manifest_json(), ReadAll(VersionFile(1, "manifest.json")));
  const nlohmann::json manifest = nlohmann::json::parse(v1->manifest_json());
  EXPECT_EQ(manifest["architecture"], "resnet18");
  ASSERT_EQ(v1->files_size(), 2);
  std::map<std::string, v1::FileInfo> files;
  for (const auto& f : v1->files()) files[f.path()] = f;
  EXPECT_EQ(files["model.safetensors"].size(), 50'000);
  EXPECT_EQ(files["model.safetensors"].sha256(), Sha256Hex(weights_content_));
  EXPECT_EQ(files["golden_0.jpg"].sha256(), Sha256Hex("not really a jpeg"));

  auto by_alias = client.GetVersionByAlias(kModel, "production");
  ASSERT_TRUE(by_alias.ok()) << by_alias.status();
  EXPECT_EQ(by_alias->version(), 2);
  EXPECT_THAT(by_alias->aliases(), ElementsAre("production"));
  EXPECT_EQ(*client.ResolveAlias(kModel, "production"), 2);
}

TEST_F(RegistryServiceTest, BadNamesAreInvalidArgumentInEveryRpc) {
  Publish(0.5, 0.5);
  ASSERT_THAT(registry_->SetAlias(kModel, "production", 1, ""), IsOk());
  StartServer();
  RegistryClient client = MakeClient();
  const std::vector<std::string> bad = {"../etc",
                                        "a/b",
                                        "UPPER",
                                        ".hidden",
                                        "a..b",
                                        "x y",
                                        std::string(65, 'a'),
                                        std::string("nul\0x", 5)};
  for (const std::string& name : bad) {
    SCOPED_TRACE(absl::CHexEscape(name));
    EXPECT_THAT(client.ListVersions(name),
                StatusIs(Code::kInvalidArgument, HasSubstr("model name")));
    EXPECT_THAT(client.GetVersion(name, 1),
                StatusIs(Code::kInvalidArgument, HasSubstr("model name")));
    EXPECT_THAT(client.GetVersionByAlias(name, "production"),
                StatusIs(Code::kInvalidArgument, HasSubstr("model name")));
    EXPECT_THAT(client.GetVersionByAlias(kModel, name),
                StatusIs(Code::kInvalidArgument, HasSubstr("alias name")));
    EXPECT_THAT(client.SetAlias(name, "production", 1, ""),
                StatusIs(Code::kInvalidArgument, HasSubstr("model name")));
    EXPECT_THAT(client.SetAlias(kModel, name, 1, ""),
                StatusIs(Code::kInvalidArgument, HasSubstr("alias name")));
    EXPECT_THAT(client.GetAliasHistory(name),
                StatusIs(Code::kInvalidArgument, HasSubstr("model name")));
    EXPECT_THAT(client.GetAliasHistory(kModel, name),
                StatusIs(Code::kInvalidArgument, HasSubstr("alias name")));
    EXPECT_THAT(client.Watch(name, [](const v1::RegistryEvent&) { return true; }, {}),
                StatusIs(Code::kInvalidArgument, HasSubstr("model name")));
    EXPECT_THAT(client.FetchVersion(name, 1),
                StatusIs(Code::kInvalidArgument, HasSubstr("model name")));
    // The server checks too (the client above refuses before calling it).
    grpc::ClientContext context;
    v1::DownloadVersionRequest request;
    request.set_model(name);
    request.set_version(1);
    auto reader = stub_->DownloadVersion(&context, request);
    v1::FileChunk chunk;
    EXPECT_FALSE(reader->Read(&chunk));
    EXPECT_THAT(FromGrpcStatus(reader->Finish()),
                StatusIs(Code::kInvalidArgument, HasSubstr("model name")));
  }
  // Empty names: the model is required everywhere but Watch (empty: every model).
  EXPECT_THAT(client.ListVersions(""), StatusIs(Code::kInvalidArgument, HasSubstr("empty")));
  EXPECT_THAT(client.GetVersion("", 1), StatusIs(Code::kInvalidArgument, HasSubstr("empty")));
  EXPECT_THAT(client.GetVersionByAlias(kModel, ""),
              StatusIs(Code::kInvalidArgument, HasSubstr("empty")));
  EXPECT_THAT(client.SetAlias(kModel, "", 1, ""),
              StatusIs(Code::kInvalidArgument, HasSubstr("empty")));
  EXPECT_THAT(client.GetAliasHistory(""), StatusIs(Code::kInvalidArgument, HasSubstr("empty")));
  // Bad versions, a missing selector, a negative chunk size.
  EXPECT_THAT(client.GetVersion(kModel, 0),
              StatusIs(Code::kInvalidArgument, HasSubstr("invalid version 0")));
  EXPECT_THAT(client.GetVersion(kModel, -3),
              StatusIs(Code::kInvalidArgument, HasSubstr("invalid version -3")));
  EXPECT_THAT(client.SetAlias(kModel, "production", 0, ""),
              StatusIs(Code::kInvalidArgument, HasSubstr("invalid version 0")));
  EXPECT_THAT(client.FetchVersion(kModel, 0),
              StatusIs(Code::kInvalidArgument, HasSubstr("invalid version 0")));
  EXPECT_THAT(client.SetAlias(kModel, "production", 1, std::string(5000, 'r')),
              StatusIs(Code::kInvalidArgument, HasSubstr("reason")));
  {
    grpc::ClientContext context;
    v1::GetVersionRequest request;
    request.set_model(kModel);
    v1::ModelVersion response;
    EXPECT_THAT(FromGrpcStatus(stub_->GetVersion(&context, request, &response)),
                StatusIs(Code::kInvalidArgument, HasSubstr("a version or an alias")));
  }
  for (auto [version, chunk_size, message] :
       {std::tuple<int64_t, int, const char*>{0, 0, "invalid version 0"},
        {1, -5, "invalid chunk_size -5"}}) {
    grpc::ClientContext context;
    v1::DownloadVersionRequest request;
    request.set_model(kModel);
    request.set_version(version);
    request.set_chunk_size(chunk_size);
    auto reader = stub_->DownloadVersion(&context, request);
    v1::FileChunk chunk;
    EXPECT_FALSE(reader->Read(&chunk));
    EXPECT_THAT(FromGrpcStatus(reader->Finish()),
                StatusIs(Code::kInvalidArgument, HasSubstr(message)));
  }
  // Nothing was changed by any of it, and the server still answers.
  EXPECT_EQ(*client.ResolveAlias(kModel, "production"), 1);
  EXPECT_EQ(client.GetAliasHistory(kModel)->size(), 1u);
}

TEST_F(RegistryServiceTest, MissingThingsAreNotFound) {
  Publish(0.5, 0.5);
  StartServer();
  RegistryClient client = MakeClient();
  EXPECT_THAT(client.ListVersions("nope"),
              StatusIs(Code::kNotFound, HasSubstr("'nope' not found")));
  EXPECT_THAT(client.GetVersion("nope", 1), StatusIs(Code::kNotFound, HasSubstr("nope")));
  EXPECT_THAT(client.GetVersion(kModel, 9), StatusIs(Code::kNotFound, HasSubstr("version 9")));
  EXPECT_THAT(client.GetVersionByAlias("nope", "production"),
              StatusIs(Code::kNotFound, HasSubstr("nope")));
  EXPECT_THAT(client.ResolveAlias(kModel, "production"),
              StatusIs(Code::kNotFound, HasSubstr("alias 'production'")));
  EXPECT_THAT(client.SetAlias(kModel, "production", 9, ""),
              StatusIs(Code::kNotFound, HasSubstr("version 9")));
  EXPECT_THAT(client.SetAlias("nope", "production", 1, ""),
              StatusIs(Code::kNotFound, HasSubstr("nope")));
  EXPECT_THAT(client.GetAliasHistory("nope"), StatusIs(Code::kNotFound, HasSubstr("nope")));
  EXPECT_THAT(client.Watch("nope", [](const v1::RegistryEvent&) { return true; }, {}),
              StatusIs(Code::kNotFound, HasSubstr("nope")));
  EXPECT_THAT(client.FetchVersion(kModel, 9), StatusIs(Code::kNotFound, HasSubstr("version 9")));
  grpc::ClientContext context;
  v1::DownloadVersionRequest request;
  request.set_model(kModel);
  request.set_version(9);
  auto reader = stub_->DownloadVersion(&context, request);
  v1::FileChunk chunk;
  EXPECT_FALSE(reader->Read(&chunk));
  EXPECT_THAT(FromGrpcStatus(reader->Finish()), StatusIs(Code::kNotFound, HasSubstr("version 9")));
  // A model with no history yet: an empty history, not an error.
  auto history = client.GetAliasHistory(kModel, "production");
  ASSERT_TRUE(history.ok()) << history.status();
  EXPECT_THAT(*history, IsEmpty());
}

TEST_F(RegistryServiceTest, PromotionGatesAndForcedMoves) {
  Publish(0.70, 0.60);
  Publish(0.75, 0.55);  // Better balanced accuracy, worse melanoma recall.
  StartServer();
  RegistryClient client = MakeClient();
  auto alias = client.SetAlias(kModel, "production", 1, "first");
  ASSERT_TRUE(alias.ok()) << alias.status();
  EXPECT_EQ(alias->model(), kModel);
  EXPECT_EQ(alias->name(), "production");
  EXPECT_EQ(alias->version(), 1);
  EXPECT_THAT(client.SetAlias(kModel, "production", 2, "try"),
              StatusIs(Code::kFailedPrecondition, HasSubstr("melanoma_recall 0.55 < 0.6 of v1")));
  EXPECT_EQ(*client.ResolveAlias(kModel, "production"), 1);
  ASSERT_THAT(client.SetAlias(kModel, "production", 2, "hotfix", /*force=*/true), IsOk());
  ASSERT_THAT(client.SetAlias(kModel, "staging", 2, "nightly"), IsOk());
  EXPECT_EQ(*client.ResolveAlias(kModel, "production"), 2);

  auto history = client.GetAliasHistory(kModel, "production");
  ASSERT_TRUE(history.ok()) << history.status();
  ASSERT_EQ(history->size(), 2u);
  EXPECT_EQ((*history)[0].from_version(), 0);
  EXPECT_EQ((*history)[0].to_version(), 1);
  EXPECT_FALSE((*history)[0].forced());
  EXPECT_EQ((*history)[1].model(), kModel);
  EXPECT_EQ((*history)[1].alias(), "production");
  EXPECT_EQ((*history)[1].from_version(), 1);
  EXPECT_EQ((*history)[1].to_version(), 2);
  EXPECT_EQ((*history)[1].reason(), "hotfix");
  EXPECT_TRUE((*history)[1].forced());
  EXPECT_GT((*history)[1].time().seconds(), 1'600'000'000);
  EXPECT_EQ(client.GetAliasHistory(kModel)->size(), 3u);
}

TEST_F(RegistryServiceTest, AuthorizerGuardsSetAlias) {
  Publish(0.5, 0.5);
  std::string seen;
  StartServer({.set_alias_authorizer = [&seen](grpc::ServerContext* context) {
    const auto it = context->client_metadata().find("authorization");
    seen = it == context->client_metadata().end()
               ? "<none>"
               : std::string(it->second.data(), it->second.size());
    return grpc::Status(grpc::StatusCode::PERMISSION_DENIED, "promotions are frozen");
  }});
  RegistryClient client = MakeClient({.bearer_token = "s3cret"});
  EXPECT_THAT(client.SetAlias(kModel, "production", 1, ""),
              StatusIs(Code::kPermissionDenied, HasSubstr("promotions are frozen")));
  EXPECT_EQ(seen, "Bearer s3cret");
  EXPECT_THAT(client.ResolveAlias(kModel, "production"),
              StatusIs(Code::kNotFound, HasSubstr("production")));
  EXPECT_THAT(client.GetVersion(kModel, 1), IsOk());  // Reads are not guarded.
}

TEST_F(RegistryServiceTest, BearerTokenAuthorizer) {
  Publish(0.5, 0.5);
  StartServer({.set_alias_authorizer = BearerTokenAuthorizer("s3cret")});
  EXPECT_THAT(MakeClient().SetAlias(kModel, "production", 1, ""),
              StatusIs(Code::kUnauthenticated, HasSubstr("missing")));
  EXPECT_THAT(MakeClient({.bearer_token = "s3cret-not"}).SetAlias(kModel, "production", 1, ""),
              StatusIs(Code::kPermissionDenied, HasSubstr("invalid bearer token")));
  EXPECT_THAT(MakeClient({.bearer_token = "s3cre"}).SetAlias(kModel, "production", 1, ""),
              StatusIs(Code::kPermissionDenied, HasSubstr("invalid bearer token")));
  {
    grpc::ClientContext context;
    context.AddMetadata("authorization", "Basic czNjcmV0");
    v1::SetAliasRequest request;
    request.set_model(kModel);
    request.set_alias("production");
    request.set_version(1);
    v1::Alias response;
    EXPECT_THAT(FromGrpcStatus(stub_->SetAlias(&context, request, &response)),
                StatusIs(Code::kUnauthenticated, HasSubstr("not a bearer token")));
  }
  EXPECT_THAT(registry_->GetAlias(kModel, "production"),
              StatusIs(Code::kNotFound, HasSubstr("production")));
  EXPECT_THAT(MakeClient({.bearer_token = "s3cret"}).SetAlias(kModel, "production", 1, "ok"),
              IsOk());
  EXPECT_EQ(registry_->GetAlias(kModel, "production")->version, 1);
}

// DownloadVersion as a raw stream: chunking, clamping, manifest.json included.
TEST_F(RegistryServiceTest, DownloadVersionChunks) {
  const std::string big = RandomBytes(5 << 20, 3);  // Above the 4 MiB maximum chunk.
  WriteFile(weights_, big);
  Publish(0.5, 0.5);
  StartServer();
  struct Case {
    int requested;
    int expected;
  };
  for (const Case c : {Case{1, kMinChunkSize}, Case{0, kDefaultChunkSize},
                       Case{100 << 20, kMaxChunkSize}, Case{65536, 65536}}) {
    SCOPED_TRACE(c.requested);
    grpc::ClientContext context;
    v1::DownloadVersionRequest request;
    request.set_model(kModel);
    request.set_version(1);
    request.set_chunk_size(c.requested);
    auto reader = stub_->DownloadVersion(&context, request);
    std::map<std::string, std::string> files;
    std::map<std::string, int> chunks;
    std::map<std::string, int> lasts;
    size_t largest = 0;
    v1::FileChunk chunk;
    while (reader->Read(&chunk)) {
      EXPECT_EQ(chunk.offset(), static_cast<int64_t>(files[chunk.path()].size()));
      EXPECT_EQ(lasts[chunk.path()], 0) << "data after the last chunk of " << chunk.path();
      files[chunk.path()] += chunk.data();
      chunks[chunk.path()]++;
      lasts[chunk.path()] += chunk.last();
      largest = std::max(largest, chunk.data().size());
    }
    ASSERT_THAT(FromGrpcStatus(reader->Finish()), IsOk());
    EXPECT_EQ(largest, static_cast<size_t>(c.expected));
    EXPECT_EQ(chunks["model.safetensors"],
              static_cast<int>((big.size() + c.expected - 1) / c.expected));
    EXPECT_EQ(files["model.safetensors"], big);
    EXPECT_EQ(files["golden_0.jpg"], "not really a jpeg");
    EXPECT_EQ(files["manifest.json"], ReadAll(VersionFile(1, "manifest.json")));
    EXPECT_EQ(files.size(), 3u);
    for (const auto& [path, n] : lasts) EXPECT_EQ(n, 1) << path;
  }
}

TEST_F(RegistryServiceTest, FetchVersionRoundTripAndCache) {
  Publish(0.5, 0.5);
  StartServer();
  RegistryClient client = MakeClient({.chunk_size = 4096});
  auto dir = client.FetchVersion(kModel, 1);
  ASSERT_TRUE(dir.ok()) << dir.status();
  EXPECT_EQ(*dir, dir_.Join("cache") + "/ham-resnet/1");
  EXPECT_EQ(ReadAll(*dir + "/model.safetensors"), weights_content_);
  EXPECT_EQ(ReadAll(*dir + "/golden_0.jpg"), "not really a jpeg");
  EXPECT_EQ(ReadAll(*dir + "/manifest.json"), ReadAll(VersionFile(1, "manifest.json")));
  EXPECT_THAT(VerifyVersionDir(*dir, kModel, 1), IsOk());
  EXPECT_TRUE(fs::is_empty(dir_.Join("cache") + "/.tmp"));

  // The cached copy is verified and reused without the server.
  StopServer();
  auto again = client.FetchVersion(kModel, 1);
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_EQ(*again, *dir);
  // A damaged cached copy is discarded, never reused; the server is needed again.
  WriteFile(*dir + "/golden_0.jpg", "not really a jpeG");  // Same size.
  EXPECT_THAT(client.FetchVersion(kModel, 1), StatusIs(Code::kUnavailable, ::testing::_));
  EXPECT_FALSE(fs::exists(*dir));
  StartServer();
  RegistryClient client2 = MakeClient({.chunk_size = 4096});
  auto fresh = client2.FetchVersion(kModel, 1);
  ASSERT_TRUE(fresh.ok()) << fresh.status();
  EXPECT_EQ(ReadAll(*fresh + "/golden_0.jpg"), "not really a jpeg");
  EXPECT_THAT(client2.FetchVersion(kModel, 1), IsOk());  // Confirmed by the server: kept.
  EXPECT_EQ(ReadAll(*fresh + "/golden_0.jpg"), "not really a jpeg");

  // The registry is rebuilt from scratch and its v1 is another model: the cached,
  // intact, but different v1 is replaced.
  StopServer();
  fs::remove_all(registry_->root());
  WriteFile(golden_, "another golden image");
  Publish(0.5, 0.5);
  StartServer();
  RegistryClient client3 = MakeClient({.chunk_size = 4096});
  auto replaced = client3.FetchVersion(kModel, 1);
  ASSERT_TRUE(replaced.ok()) << replaced.status();
  EXPECT_EQ(ReadAll(*replaced + "/golden_0.jpg"), "another golden image");
  EXPECT_EQ(ReadAll(*replaced + "/manifest.json"), ReadAll(VersionFile(1, "manifest.json")));
}

TEST_F(RegistryServiceTest, TamperedServerFileIsDataLossAndLeavesNoCache) {
  Publish(0.5, 0.5);
  // One byte changed after publishing; size unchanged.
  std::string tampered = weights_content_;
  tampered[30'000] ^= 0x01;
  WriteFile(VersionFile(1, "model.safetensors"), tampered);
  StartServer();
  RegistryClient client = MakeClient({.chunk_size = 4096});
  EXPECT_THAT(client.FetchVersion(kModel, 1),
              StatusIs(Code::kDataLoss, HasSubstr("checksum mismatch for model.safetensors")));
  EXPECT_FALSE(fs::exists(dir_.Join("cache") + "/ham-resnet/1"));
  EXPECT_TRUE(fs::is_empty(dir_.Join("cache") + "/.tmp"));

  // A longer file is stopped as soon as it passes its size.
  WriteFile(VersionFile(1, "model.safetensors"), weights_content_ + "extra");
  EXPECT_THAT(client.FetchVersion(kModel, 1),
              StatusIs(Code::kDataLoss, HasSubstr("does not match its manifest")));
  // A missing file.
  fs::remove(VersionFile(1, "model.safetensors"));
  EXPECT_THAT(client.FetchVersion(kModel, 1), StatusIs(Code::kDataLoss, HasSubstr("missing")));
  EXPECT_FALSE(fs::exists(dir_.Join("cache") + "/ham-resnet/1"));
  EXPECT_TRUE(fs::is_empty(dir_.Join("cache") + "/.tmp"));
}

// ReadFiles against the real service: the wanted files in memory, byte-exact; the
// others read past; nothing on disk.
TEST_F(RegistryServiceTest, ReadFilesKeepsWantedFilesInMemory) {
  Publish(0.5, 0.5);
  StartServer();
  RegistryClient client(channel_, {.chunk_size = 4096});  // No cache_dir: none needed.
  auto described = client.GetVersion(kModel, 1);
  ASSERT_TRUE(described.ok()) << described.status();
  const auto golden_only = [](const v1::FileInfo& f) { return f.path() == "golden_0.jpg"; };
  auto files = client.ReadFiles(*described, golden_only);
  ASSERT_TRUE(files.ok()) << files.status();
  EXPECT_EQ(*files, (std::map<std::string, std::string>{{"golden_0.jpg", "not really a jpeg"}}));
  auto all = client.ReadFiles(*described, [](const v1::FileInfo&) { return true; });
  ASSERT_TRUE(all.ok()) << all.status();
  EXPECT_EQ(all->size(), 2u);
  EXPECT_EQ(all->at("model.safetensors"), weights_content_);  // 13 chunks.

  // A wanted file altered on the server (same size): DataLoss, naming it.
  WriteFile(VersionFile(1, "golden_0.jpg"), "not really a jpeG");
  auto damaged = client.ReadFiles(*described, golden_only);
  EXPECT_THAT(damaged, StatusIs(Code::kDataLoss, HasSubstr("checksum mismatch for golden_0.jpg")));
  EXPECT_EQ(DownloadDamageOf(damaged.status()), "golden_0.jpg");
  WriteFile(VersionFile(1, "golden_0.jpg"), "not really a jpeg");
  // The weights are not hashed when not wanted, but must keep their size.
  std::string tampered = weights_content_;
  tampered[30'000] ^= 0x01;
  WriteFile(VersionFile(1, "model.safetensors"), tampered);
  EXPECT_THAT(client.ReadFiles(*described, golden_only), IsOk());
  WriteFile(VersionFile(1, "model.safetensors"), weights_content_ + "extra");
  auto longer = client.ReadFiles(*described, golden_only);
  EXPECT_THAT(longer, StatusIs(Code::kDataLoss, HasSubstr("model.safetensors of ham-resnet v1 "
                                                          "does not match its manifest")));
  EXPECT_EQ(DownloadDamageOf(longer.status()), "model.safetensors");
  // The server's own error (it cannot read a file) is returned as it is.
  fs::remove(VersionFile(1, "model.safetensors"));
  auto missing = client.ReadFiles(*described, golden_only);
  EXPECT_THAT(missing, StatusIs(Code::kDataLoss, HasSubstr("missing from the registry")));
  EXPECT_EQ(DownloadDamageOf(missing.status()), std::nullopt);
  EXPECT_FALSE(fs::exists(dir_.Join("cache")));
}

TEST_F(RegistryServiceTest, FetchEmptyFileAndStaleTemporaries) {
  WriteFile(dir_.Join("empty.bin"), "");
  auto v = registry_->Publish(kModel, {{"empty.bin", dir_.Join("empty.bin")}}, {{"k", 1}});
  ASSERT_TRUE(v.ok()) << v.status();
  // Left by a killed fetcher two hours ago, and by one that is running now.
  const std::string stale = dir_.Join("cache") + "/.tmp/ham-resnet-1-99-1";
  const std::string live = dir_.Join("cache") + "/.tmp/ham-resnet-1-98-1";
  fs::create_directories(stale);
  fs::create_directories(live);
  WriteFile(stale + "/model.safetensors", "partial");
  fs::last_write_time(stale, fs::file_time_type::clock::now() - std::chrono::hours(2));
  StartServer();
  RegistryClient client = MakeClient();
  auto dir = client.FetchVersion(kModel, *v);
  ASSERT_TRUE(dir.ok()) << dir.status();
  EXPECT_EQ(fs::file_size(*dir + "/empty.bin"), 0u);
  EXPECT_FALSE(fs::exists(stale));
  EXPECT_TRUE(fs::exists(live));
}

TEST_F(RegistryServiceTest, ConcurrentFetchesOfOneVersion) {
  Publish(0.5, 0.5);
  StartServer();
  RegistryClient client = MakeClient({.chunk_size = 4096});
  std::vector<std::future<absl::StatusOr<std::string>>> fetches;
  for (int i = 0; i < 4; ++i) {
    fetches.push_back(
        std::async(std::launch::async, [&] { return client.FetchVersion(kModel, 1); }));
  }
  for (auto& f : fetches) {
    auto dir = f.get();
    ASSERT_TRUE(dir.ok()) << dir.status();
    EXPECT_EQ(ReadAll(*dir + "/model.safetensors"), weights_content_);
  }
  EXPECT_TRUE(fs::is_empty(dir_.Join("cache") + "/.tmp"));
}

// Collects the events of a Watch running on its own thread.
class EventLog {
 public:
  void Add(const v1::RegistryEvent& event) {
    std::lock_guard<std::mutex> lock(mu_);
    events_.push_back(event);
    cv_.notify_all();
  }
  // Waits until `n` events arrived (up to 5 s); returns them.
  std::vector<v1::RegistryEvent> WaitFor(size_t n) {
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait_for(lock, std::chrono::seconds(5), [&] { return events_.size() >= n; });
    return events_;
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<v1::RegistryEvent> events_;
};

TEST_F(RegistryServiceTest, WatchSendsStateThenPublishAndAliasEvents) {
  Publish(0.70, 0.60);
  ASSERT_THAT(registry_->SetAlias(kModel, "production", 1, "first"), IsOk());
  StartServer();
  RegistryClient client = MakeClient();
  EventLog log;
  std::promise<void> started;
  auto watch = std::async(std::launch::async, [&] {
    return client.Watch(
        kModel,
        [&](const v1::RegistryEvent& event) {
          log.Add(event);
          return !(event.has_alias_changed() && event.alias_changed().to_version() == 2);
        },
        {.on_started = [&] { started.set_value(); }});
  });
  started.get_future().wait();
  // A failing expectation below must not leave the Watch (and the test) hanging.
  absl::Cleanup cancel = [&] { client.CancelWatches(); };
  auto events = log.WaitFor(2);
  ASSERT_EQ(events.size(), 2u);
  EXPECT_TRUE(events[0].snapshot());
  EXPECT_EQ(events[0].version_published().version(), 1);
  EXPECT_TRUE(events[1].snapshot());
  EXPECT_EQ(events[1].alias_changed().alias(), "production");
  EXPECT_EQ(events[1].alias_changed().to_version(), 1);
  EXPECT_EQ(events[1].alias_changed().reason(), "first");

  Publish(0.80, 0.65);
  events = log.WaitFor(3);
  ASSERT_EQ(events.size(), 3u);
  EXPECT_FALSE(events[2].snapshot());
  EXPECT_EQ(events[2].version_published().model(), kModel);
  EXPECT_EQ(events[2].version_published().version(), 2);
  EXPECT_EQ(events[2].version_published().files_size(), 2);
  ASSERT_THAT(registry_->SetAlias(kModel, "production", 2, "better", /*force=*/true), IsOk());
  events = log.WaitFor(4);
  ASSERT_EQ(events.size(), 4u);
  const v1::AliasChange& change = events[3].alias_changed();
  EXPECT_EQ(change.model(), kModel);
  EXPECT_EQ(change.alias(), "production");
  EXPECT_EQ(change.from_version(), 1);
  EXPECT_EQ(change.to_version(), 2);
  EXPECT_EQ(change.reason(), "better");
  EXPECT_TRUE(change.forced());
  ASSERT_EQ(watch.wait_for(std::chrono::seconds(5)), std::future_status::ready);
  EXPECT_THAT(watch.get(), IsOk());  // The callback said stop.
}

TEST_F(RegistryServiceTest, WatchEveryModelChangesOnly) {
  Publish(0.5, 0.5);
  StartServer();
  RegistryClient client = MakeClient();
  EventLog log;
  std::promise<void> started;
  auto watch = std::async(std::launch::async, [&] {
    return client.Watch("",
                        [&](const v1::RegistryEvent& event) {
                          log.Add(event);
                          return true;
                        },
                        {.changes_only = true, .on_started = [&] { started.set_value(); }});
  });
  started.get_future().wait();
  // A failing expectation below must not leave the Watch (and the test) hanging.
  absl::Cleanup cancel = [&] { client.CancelWatches(); };
  Publish(0.5, 0.5, "isic-vit");  // A model that did not exist.
  ASSERT_THAT(registry_->SetAlias(kModel, "staging", 1, "s"), IsOk());
  ASSERT_EQ(log.WaitFor(2).size(), 2u);
  // Onto the version it already has, seen by a later poll: still a move.
  ASSERT_THAT(registry_->SetAlias(kModel, "staging", 1, "again"), IsOk());
  auto events = log.WaitFor(3);
  ASSERT_EQ(events.size(), 3u);
  std::vector<std::string> seen;
  for (const auto& e : events) {
    EXPECT_FALSE(e.snapshot());
    seen.push_back(
        e.has_version_published()
            ? absl::StrCat(e.version_published().model(), " v", e.version_published().version())
            : absl::StrCat(e.alias_changed().model(), " ", e.alias_changed().alias(), " ",
                           e.alias_changed().reason()));
  }
  EXPECT_THAT(seen, UnorderedElementsAre("isic-vit v1", "ham-resnet staging s",
                                         "ham-resnet staging again"));
  client.CancelWatches();
  ASSERT_EQ(watch.wait_for(std::chrono::seconds(5)), std::future_status::ready);
  EXPECT_THAT(watch.get(), StatusIs(Code::kCancelled, HasSubstr("cancelled")));
  // Nothing else was sent (v1 of ham-resnet existed before the call).
  EXPECT_EQ(log.WaitFor(0).size(), 3u);
}

// A Watch that starts while a move is half done (its history record written,
// aliases.json not yet) reports that move once it completes, in both modes.
TEST_F(RegistryServiceTest, WatchCatchesAMoveInProgress) {
  Publish(0.70, 0.60);
  Publish(0.80, 0.65);
  ASSERT_THAT(registry_->SetAlias(kModel, "production", 1, "first"), IsOk());
  const std::string model_dir = absl::StrCat(registry_->root(), "/", kModel);
  const std::string aliases_before = ReadAll(model_dir + "/aliases.json");
  ASSERT_THAT(registry_->SetAlias(kModel, "production", 2, "second"), IsOk());
  const std::string aliases_after = ReadAll(model_dir + "/aliases.json");
  WriteFile(model_dir + "/aliases.json", aliases_before);  // Back to mid-move.
  StartServer();
  for (const bool changes_only : {false, true}) {
    SCOPED_TRACE(changes_only);
    WriteFile(model_dir + "/aliases.json", aliases_before);
    RegistryClient client = MakeClient();
    EventLog log;
    std::promise<void> started;
    auto watch = std::async(std::launch::async, [&] {
      return client.Watch(
          kModel,
          [&](const v1::RegistryEvent& event) {
            log.Add(event);
            return !(event.has_alias_changed() && !event.snapshot());
          },
          {.changes_only = changes_only, .on_started = [&] { started.set_value(); }});
    });
    started.get_future().wait();
    // A failing expectation below must not leave the Watch (and the test) hanging.
    absl::Cleanup cancel = [&] { client.CancelWatches(); };
    const size_t snapshot_events = changes_only ? 0 : 3;  // v1, v2, production -> 1.
    auto events = log.WaitFor(snapshot_events);
    ASSERT_EQ(events.size(), snapshot_events);
    if (!changes_only) {
      EXPECT_EQ(events[2].alias_changed().to_version(), 1);
      EXPECT_EQ(events[2].alias_changed().reason(), "first");
    }
    WriteFile(model_dir + "/aliases.json", aliases_after);  // The move completes.
    events = log.WaitFor(snapshot_events + 1);
    ASSERT_EQ(events.size(), snapshot_events + 1);
    EXPECT_FALSE(events.back().snapshot());
    EXPECT_EQ(events.back().alias_changed().from_version(), 1);
    EXPECT_EQ(events.back().alias_changed().to_version(), 2);
    EXPECT_EQ(events.back().alias_changed().reason(), "second");
    ASSERT_EQ(watch.wait_for(std::chrono::seconds(5)), std::future_status::ready);
    EXPECT_THAT(watch.get(), IsOk());
  }
}

TEST_F(RegistryServiceTest, WatchEndsWhenTheClientCancels) {
  Publish(0.5, 0.5);
  StartServer();
  grpc::ClientContext context;
  v1::WatchRequest request;
  request.set_model(kModel);
  auto reader = stub_->Watch(&context, request);
  v1::RegistryEvent event;
  ASSERT_TRUE(reader->Read(&event));
  context.TryCancel();
  while (reader->Read(&event)) {
  }
  EXPECT_EQ(reader->Finish().error_code(), grpc::StatusCode::CANCELLED);
  // The server-side handler has returned: a shutdown without a deadline and without
  // the service's Shutdown() does not wait for it.
  auto shutdown = std::async(std::launch::async, [&] { server_->Shutdown(); });
  EXPECT_EQ(shutdown.wait_for(std::chrono::seconds(5)), std::future_status::ready);
}

TEST_F(RegistryServiceTest, WatchEndsOnServerShutdown) {
  Publish(0.5, 0.5);
  StartServer({.poll_interval = absl::Seconds(30)});  // Shutdown must not wait for a poll.
  RegistryClient client = MakeClient();
  std::promise<void> started;
  auto watch = std::async(std::launch::async, [&] {
    return client.Watch(kModel, [](const v1::RegistryEvent&) { return true; },
                        {.on_started = [&] { started.set_value(); }});
  });
  started.get_future().wait();
  // A failing expectation below must not leave the Watch (and the test) hanging.
  absl::Cleanup cancel = [&] { client.CancelWatches(); };
  EXPECT_FALSE(service_->WaitUntilIdle(absl::Now() + absl::Milliseconds(50)));  // The Watch.
  const auto begin = std::chrono::steady_clock::now();
  StopServer();
  EXPECT_LT(std::chrono::steady_clock::now() - begin, std::chrono::seconds(1));
  ASSERT_EQ(watch.wait_for(std::chrono::seconds(5)), std::future_status::ready);
  EXPECT_THAT(watch.get(), StatusIs(Code::kUnavailable, HasSubstr("shutting down")));
}

}  // namespace
}  // namespace skinlesion::registry
