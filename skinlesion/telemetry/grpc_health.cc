#include "skinlesion/telemetry/grpc_health.h"

#include <cstdint>
#include <string>
#include <vector>

#include "google/protobuf/io/coded_stream.h"
#include "google/protobuf/io/zero_copy_stream_impl_lite.h"
#include "google/protobuf/wire_format_lite.h"
#include "grpcpp/generic/generic_stub.h"
#include "grpcpp/support/byte_buffer.h"

namespace skinlesion::telemetry {

using google::protobuf::internal::WireFormatLite;

grpc::Status CheckGrpcHealth(const std::shared_ptr<grpc::Channel>& channel,
                             absl::string_view service, absl::Duration timeout,
                             int* serving_status) {
  // HealthCheckRequest{service = 1}; an empty service encodes to no bytes.
  std::string request_bytes;
  if (!service.empty()) {
    google::protobuf::io::StringOutputStream stream(&request_bytes);
    google::protobuf::io::CodedOutputStream out(&stream);
    WireFormatLite::WriteString(1, std::string(service), &out);
  }
  grpc::Slice slice(request_bytes);
  grpc::ByteBuffer request(&slice, 1), response;

  grpc::GenericStub stub(channel);
  grpc::CompletionQueue cq;
  grpc::ClientContext context;
  context.set_deadline(absl::ToChronoTime(absl::Now() + timeout));
  auto call = stub.PrepareUnaryCall(&context, "/grpc.health.v1.Health/Check", request, &cq);
  call->StartCall();
  grpc::Status status;
  call->Finish(&response, &status, reinterpret_cast<void*>(1));
  void* tag = nullptr;
  bool ok = false;
  cq.Next(&tag, &ok);
  cq.Shutdown();
  while (cq.Next(&tag, &ok)) {
  }
  if (!status.ok()) return status;

  std::vector<grpc::Slice> slices;
  std::string bytes;
  if (response.Dump(&slices).ok()) {
    for (const auto& s : slices) bytes.append(reinterpret_cast<const char*>(s.begin()), s.size());
  }
  // HealthCheckResponse{status = 1 (varint)}; other fields skipped.
  *serving_status = kHealthUnknown;
  google::protobuf::io::CodedInputStream in(reinterpret_cast<const uint8_t*>(bytes.data()),
                                            static_cast<int>(bytes.size()));
  while (true) {
    const uint32_t tag_number = in.ReadTag();
    if (tag_number == 0) break;
    if (tag_number == WireFormatLite::MakeTag(1, WireFormatLite::WIRETYPE_VARINT)) {
      uint32_t value = 0;
      if (!in.ReadVarint32(&value)) break;
      *serving_status = static_cast<int>(value);
    } else if (!WireFormatLite::SkipField(&in, tag_number)) {
      break;
    }
  }
  return grpc::Status::OK;
}

}  // namespace skinlesion::telemetry
