// RemoteRegistrySource against a real RegistryService on 127.0.0.1 (port picked by
// the kernel): aliases resolved over gRPC, versions fetched into a verified cache.
#include "skinlesion/serving/remote_source.h"

#include <chrono>
#include <memory>
#include <string>

#include "absl/strings/str_cat.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "skinlesion/common/csv.h"
#include "skinlesion/registry/registry.h"
#include "skinlesion/registry/service.h"
#include "skinlesion/testing/testing.h"

namespace skinlesion::serving {
namespace {

using ::skinlesion::testing::IsOk;
using ::skinlesion::testing::StatusIs;
using ::skinlesion::testing::TempDir;
using ::skinlesion::testing::WriteFile;
using ::testing::HasSubstr;
using Code = absl::StatusCode;

constexpr char kModel[] = "ham-resnet";

TEST(RemoteRegistrySourceTest, ResolvesAliasesAndFetchesVerifiedVersions) {
  TempDir dir;
  auto registry = registry::Registry::Create({.root = dir.Join("registry")});
  ASSERT_THAT(registry, IsOk());
  const std::string weights = dir.Join("model.safetensors");
  WriteFile(weights, std::string(50'000, 'w'));
  for (int i = 0; i < 2; ++i) {
    ASSERT_THAT((*registry)->Publish(kModel, {{"model.safetensors", weights}}, {{"architecture", "resnet18"}}),
                IsOk());
  }
  ASSERT_THAT((*registry)->SetAlias(kModel, "production", 2, ""), IsOk());
  registry::RegistryServiceImpl service(registry->get(), {});
  grpc::ServerBuilder builder;
  int port = 0;
  builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port);
  builder.RegisterService(&service);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  ASSERT_NE(server, nullptr);
  ASSERT_GT(port, 0);

  EXPECT_THAT(RemoteRegistrySource::Create("", {.cache_dir = dir.Join("c")}),
              StatusIs(Code::kInvalidArgument, HasSubstr("target")));
  EXPECT_THAT(RemoteRegistrySource::Create("127.0.0.1:1", {}),
              StatusIs(Code::kInvalidArgument, HasSubstr("cache directory")));
  auto source = RemoteRegistrySource::Create(absl::StrCat("127.0.0.1:", port),
                                             {.cache_dir = dir.Join("source-cache")});
  ASSERT_THAT(source, IsOk());
  ModelSource* s = source->get();
  EXPECT_EQ(*s->Resolve(kModel, "production"), 2);
  EXPECT_EQ(*s->Resolve(kModel, "1"), 1);  // A fixed version: not looked up.
  EXPECT_EQ(*s->Resolve(kModel, "42"), 42);
  EXPECT_THAT(s->Resolve(kModel, "0"), StatusIs(Code::kInvalidArgument, HasSubstr("invalid version")));
  EXPECT_THAT(s->Resolve(kModel, "canary"), StatusIs(Code::kNotFound, HasSubstr("canary")));
  auto version_dir = s->Fetch(kModel, 2);
  ASSERT_THAT(version_dir, IsOk());
  EXPECT_EQ(*version_dir, dir.Join("source-cache") + "/ham-resnet/2");
  EXPECT_EQ(ReadFileToString(*version_dir + "/model.safetensors", 1 << 20).value_or(""), std::string(50'000, 'w'));
  EXPECT_THAT(s->Fetch(kModel, 7), StatusIs(Code::kNotFound, HasSubstr("version 7")));

  service.Shutdown();
  server->Shutdown(std::chrono::system_clock::now() + std::chrono::milliseconds(250));
  server->Wait();
}

}  // namespace
}  // namespace skinlesion::serving
