// The lower-case names of training job states ("queued", "running", "succeeded",
// "failed", "cancelled"; "unspecified" for anything else): the job database, the
// trainer's metrics and the gateway's REST API all use these. Header-only, so
// LibTorch-free and SQLite-free users (the gateway) need only the protos (CMake
// target skinlesion_rpc_job_state).
#ifndef SKINLESION_RPC_JOB_STATE_H_
#define SKINLESION_RPC_JOB_STATE_H_

#include "skinlesion/v1/training.pb.h"

namespace skinlesion::rpc {

inline const char* JobStateName(v1::JobState state) {
  switch (state) {
    case v1::JOB_STATE_QUEUED:
      return "queued";
    case v1::JOB_STATE_RUNNING:
      return "running";
    case v1::JOB_STATE_SUCCEEDED:
      return "succeeded";
    case v1::JOB_STATE_FAILED:
      return "failed";
    case v1::JOB_STATE_CANCELLED:
      return "cancelled";
    default:
      return "unspecified";
  }
}

}  // namespace skinlesion::rpc

#endif  // SKINLESION_RPC_JOB_STATE_H_
