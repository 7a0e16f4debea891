#include "skinlesion/rpc/status.h"

#include "gtest/gtest.h"

namespace skinlesion::rpc {
namespace {

TEST(RpcStatusTest, ConversionsKeepCodeAndMessage) {
  EXPECT_TRUE(ToGrpcStatus(absl::OkStatus()).ok());
  const grpc::Status g = ToGrpcStatus(absl::NotFoundError("no model m"));
  EXPECT_EQ(g.error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_EQ(g.error_message(), "no model m");
  EXPECT_EQ(FromGrpcStatus(g), absl::NotFoundError("no model m"));
  EXPECT_EQ(FromGrpcStatus(g, "GetVersion"), absl::NotFoundError("GetVersion: no model m"));
  EXPECT_TRUE(FromGrpcStatus(grpc::Status::OK, "x").ok());
  for (int c = 0; c <= 16; ++c) {
    const absl::Status a(static_cast<absl::StatusCode>(c), c ? "m" : "");
    EXPECT_EQ(FromGrpcStatus(ToGrpcStatus(a)), a) << c;
  }
}

TEST(RpcStatusTest, CodeNames) {
  EXPECT_EQ(GrpcCodeName(grpc::StatusCode::RESOURCE_EXHAUSTED), "RESOURCE_EXHAUSTED");
  EXPECT_EQ(GrpcCodeName(grpc::StatusCode::UNAUTHENTICATED), "UNAUTHENTICATED");
  EXPECT_EQ(GrpcCodeName(static_cast<grpc::StatusCode>(42)), "42");
}

}  // namespace
}  // namespace skinlesion::rpc
