// Channel arguments shared by the clients of the project's own gRPC services.
#ifndef SKINLESION_TELEMETRY_GRPC_CHANNEL_H_
#define SKINLESION_TELEMETRY_GRPC_CHANNEL_H_

#include "absl/time/time.h"
#include "grpcpp/support/channel_arguments.h"

namespace skinlesion::telemetry {

struct ReconnectBackoff {
  absl::Duration initial = absl::Milliseconds(100);  // First wait after a failed connect.
  absl::Duration max = absl::Seconds(1);             // The wait never grows past this.
  // gRPC's MIN_RECONNECT_BACKOFF: the least time between two attempts after the
  // first (measured), which is also the least time an attempt is given to connect
  // (gRPC's default: 20 s). 1 s: a connect to a busy, starting backend is not cut
  // short.
  absl::Duration min = absl::Seconds(1);
};

// Reconnect backoff for a channel to a service that restarts (a crashed or
// redeployed pod): gRPC's default waits 1 s after the first failure and grows to
// 120 s, so a backend that is back can stay unused for tens of seconds. With these
// (attempts after 0.1 s, then every second), a restarted backend is
// used again within about `max` of being up.
void SetFastReconnect(grpc::ChannelArguments& args, const ReconnectBackoff& backoff = {});

}  // namespace skinlesion::telemetry

#endif  // SKINLESION_TELEMETRY_GRPC_CHANNEL_H_
