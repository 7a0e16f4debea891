#include "skinlesion/telemetry/grpc_channel.h"

#include "grpc/grpc.h"

namespace skinlesion::telemetry {

void SetFastReconnect(grpc::ChannelArguments& args, const ReconnectBackoff& backoff) {
  args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS,
              static_cast<int>(absl::ToInt64Milliseconds(backoff.initial)));
  args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS,
              static_cast<int>(absl::ToInt64Milliseconds(backoff.max)));
  args.SetInt(GRPC_ARG_MIN_RECONNECT_BACKOFF_MS,
              static_cast<int>(absl::ToInt64Milliseconds(backoff.min)));
}

}  // namespace skinlesion::telemetry
